"""On the appliance: upgrade bundles, the two root slots, upgrade and rollback.

``bundle`` reads and verifies signed upgrade bundles (the build host writes
them with ``lockgate.image.formats.upgrade``; the appliance has no
``lockgate.image``), ``slots`` finds root-a/root-b and their records,
``upgrade`` and ``rollback`` do the work, ``boot`` talks to GRUB's
environment on the ESP.
"""
