"""Cloud metadata emulators: real HTTP servers that follow the platforms' APIs.

Used by the datasource tests and by ``lockgate image boot`` to give a QEMU
guest a cloud to find. Each emulator runs in a background thread on
``host:port`` (port 0 picks a free one) and is a context manager::

    from lockgate.image.cloudemu import Ec2Imds, Faults

    with Ec2Imds(user_data=b"password=secret accept_license=y", imdsv1=False) as imds:
        print(imds.url)             # http://127.0.0.1:41234 -> give to the datasource
        imds.set_faults(fail_first=3)   # next three requests answer 503
        ...
        imds.requests               # every request seen (method, path, headers, status)

* :class:`Ec2Imds` (``ec2.py``): IMDSv2 token PUT/TTL, token check, ``imdsv1=False``
  answers 401 without a token; meta-data/instance-id, placement/region,
  local-ipv4, hostname; user-data (404 when ``user_data=None``).
* :class:`GceMetadata` (``gce.py``): 403 without ``Metadata-Flavor: Google``;
  instance/id, instance/hostname, instance/attributes/user-data.
* :class:`AzureEmulator` (``azure.py``): IMDS ``/metadata/instance`` JSON
  (compute.vmId, compute.userData base64) and the wire server goal state /
  health report on the same port; ``health_reports`` records what was
  reported. :func:`write_ovf_env` / :func:`ovf_env_xml` make provisioning media
  content with CustomData.
* :func:`make_cidata_image` (``nocloud.py``): a FAT image labelled CIDATA with
  user-data and meta-data, built with mkfs.vfat + mcopy (no root).

Fault knobs (:class:`Faults`, on every emulator, changeable while running with
``set_faults(**knobs)``): ``fail_first`` N replies 503 (``fail_status``),
``drop_first`` N connections closed without a reply, ``delay`` seconds per reply
(``delay_first`` limits it to N replies), ``token_max_uses`` (EC2 token then
401), ``token_forbidden`` (EC2 token PUT 403), ``no_user_data`` (404 / empty).

Serving a QEMU guest: bind the emulator to a loopback port and forward the
guest's metadata address(es) to it with slirp, e.g.
``-netdev user,net=168.0.0.0/7,guestfwd=tcp:169.254.169.254:80-cmd:socat STDIO TCP:127.0.0.1:PORT``
(guestfwd addresses must lie inside slirp's network; ``cmd:`` runs one bridge
per guest connection, which is what ``lockgate.image.boot`` does; a ``tcp:``
chardev would be one shared stream). The emulators close every connection
after one reply (HTTP/1.0). One Azure emulator serves both IMDS and the wire
server, so forward 169.254.169.254 and 168.63.129.16 to the same port. The
guest's ``detect()`` needs DMI strings, set with ``-smbios``:
``type=1,manufacturer=Amazon EC2`` (EC2), ``type=1,product=Google Compute Engine``
(GCE), ``type=3,asset=7783-7084-3265-9085-8269-3286-77`` (Azure).
"""

from __future__ import annotations

from lockgate.image.cloudemu.azure import AzureEmulator, HealthReport, ovf_env_xml, write_ovf_env
from lockgate.image.cloudemu.base import Emulator, Faults, RecordedRequest
from lockgate.image.cloudemu.ec2 import Ec2Imds
from lockgate.image.cloudemu.gce import GceMetadata
from lockgate.image.cloudemu.nocloud import make_cidata_image

__all__ = [
    "AzureEmulator",
    "Ec2Imds",
    "Emulator",
    "Faults",
    "GceMetadata",
    "HealthReport",
    "RecordedRequest",
    "make_cidata_image",
    "ovf_env_xml",
    "write_ovf_env",
]
