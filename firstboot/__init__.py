"""lockgate.firstboot"""
