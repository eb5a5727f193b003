"""lockgate.image"""
