"""The chosen cloud's metadata service, where the guest looks for it.

Route (docs/boot.md): QEMU user networking with ``net=168.0.0.0/7``, a
network that holds both 169.254.169.254 (EC2/GCE/Azure IMDS) and
168.63.129.16 (Azure wire server), because slirp only accepts ``guestfwd``
addresses inside its own network. Each guest connection to those addresses
runs a small stdio<->TCP bridge (socat when installed, else
:mod:`lockgate.image.boot.bridge`) to the emulator listening on a loopback
port. NoCloud needs no network: a CIDATA FAT image is attached as a disk.
DMI strings (``-smbios``) make the guest's ``detect()`` pick the cloud.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from lockgate.image.boot.qemu import AZURE_ASSET_TAG, GuestFwd
from lockgate.image.cloudemu.base import Emulator
from lockgate.proc import which

IMDS_ADDRESS = "169.254.169.254"
AZURE_WIRE_ADDRESS = "168.63.129.16"
METADATA_NET = "168.0.0.0/7"
HOST_ADDRESS = "168.0.2.2"  # the host as the guest sees it: QEMU puts it at net | 0.0.2.2
DEFAULT_HOST_ADDRESS = "10.0.2.2"  # the same on QEMU's default network
NOCLOUD_HOSTNAME = "lockgate-nocloud"  # not the image's own name, so a boot shows it took
BRIDGE = Path(__file__).with_name("bridge.py")


class Cloud(StrEnum):
    EC2 = "ec2"
    GCE = "gce"
    AZURE = "azure"
    NOCLOUD = "nocloud"


# Strings the guest reads from /sys/class/dmi/id (see firstboot/datasources/*.detect()).
SMBIOS: dict[Cloud, tuple[str, ...]] = {
    Cloud.EC2: ("type=0,vendor=Amazon EC2",
                "type=1,manufacturer=Amazon EC2,product=t3.small"),
    Cloud.GCE: ("type=0,vendor=Google",
                "type=1,manufacturer=Google,product=Google Compute Engine"),
    Cloud.AZURE: ("type=1,manufacturer=Microsoft Corporation,product=Virtual Machine",
                  f"type=3,manufacturer=Microsoft Corporation,asset={AZURE_ASSET_TAG}"),
    Cloud.NOCLOUD: ("type=1,manufacturer=QEMU,product=lockgate local VM",),
}
# EC2 system UUIDs start with "ec2"; a fixed one keeps argv reproducible.
EC2_UUID = "ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8"


@dataclass(frozen=True)
class MetadataRoute:
    """What the VM needs so the guest finds its metadata."""

    net: str | None
    guestfwds: tuple[GuestFwd, ...]
    smbios: tuple[str, ...]
    uuid: str | None
    extra_disks: tuple[Path, ...]
    host_address: str  # the host as seen from the guest (for pool nodes on the host)
    hostname: str | None = None  # the host name the cloud's metadata gives the guest


def bridge_command(port: int) -> str:
    """The per-connection command QEMU runs for a guest connection (no commas allowed)."""
    socat = which("socat")
    if socat:
        return f"{socat} STDIO TCP:127.0.0.1:{port}"
    return f"{sys.executable} -I -S {BRIDGE} {port}"


def route_for(cloud: Cloud, emulator_port: int | None, cidata: Path | None) -> MetadataRoute:
    """Pure: the network, forwards, DMI strings and disks for ``cloud``."""
    smbios = SMBIOS[cloud]
    uuid = EC2_UUID if cloud is Cloud.EC2 else None
    if cloud is Cloud.NOCLOUD:
        disks = (cidata,) if cidata is not None else ()
        return MetadataRoute(None, (), smbios, uuid, disks, DEFAULT_HOST_ADDRESS)
    if emulator_port is None:
        raise ValueError(f"{cloud}: an emulator port is needed")
    command = bridge_command(emulator_port)
    fwds = [GuestFwd(IMDS_ADDRESS, 80, command)]
    if cloud is Cloud.AZURE:
        fwds.append(GuestFwd(AZURE_WIRE_ADDRESS, 80, command))  # one emulator serves both
    return MetadataRoute(METADATA_NET, tuple(fwds), smbios, uuid, (), HOST_ADDRESS)


@contextlib.contextmanager
def serve_metadata(cloud: Cloud, user_data: bytes | None, workdir: Path,
                   instance_id: str | None = None,
                   ssh_key: str | None = None) -> Iterator[MetadataRoute]:
    """Start the emulator for ``cloud`` (or write the CIDATA image) for the VM's lifetime.

    ``ssh_key`` (one OpenSSH public key line) is served the way that cloud serves SSH
    keys: EC2's launch key pair (``public-keys/0/openssh-key``), a GCE ``ssh-keys``
    instance attribute line ``admin:<key>``, Azure's ``compute.publicKeys``, NoCloud's
    ``public-keys`` in meta-data."""
    keys = [ssh_key] if ssh_key else []
    if cloud is Cloud.NOCLOUD:
        from lockgate.image.cloudemu.nocloud import default_meta_data, make_cidata_image

        meta = default_meta_data(instance_id or "iid-lockgate-local", NOCLOUD_HOSTNAME, keys)
        seed = make_cidata_image(workdir / "cidata.img", user_data or b"", meta)
        yield replace(route_for(cloud, None, seed), hostname=NOCLOUD_HOSTNAME)
        return
    emulator, hostname = _emulator(cloud, user_data, instance_id, keys)
    with emulator:
        yield replace(route_for(cloud, emulator.port, None), hostname=hostname)


def _emulator(cloud: Cloud, user_data: bytes | None, instance_id: str | None,
              keys: list[str]) -> tuple[Emulator, str]:
    ident: dict[str, Any] = {}  # the emulator's own default unless given
    if cloud is Cloud.EC2:
        from lockgate.image.cloudemu.ec2 import Ec2Imds

        if instance_id:
            ident["instance_id"] = instance_id
        ec2 = Ec2Imds(user_data=user_data, ssh_keys=keys, **ident)
        return ec2, ec2.hostname
    if cloud is Cloud.GCE:
        from lockgate.image.cloudemu.gce import GceMetadata

        if instance_id:
            ident["instance_id"] = instance_id
        attributes = {"ssh-keys": "".join(f"admin:{key}\n" for key in keys)} if keys else {}
        gce = GceMetadata(user_data=user_data, attributes=attributes, **ident)
        return gce, gce.hostname
    from lockgate.image.cloudemu.azure import AzureEmulator

    if instance_id:
        ident["vm_id"] = instance_id
    azure = AzureEmulator(user_data=user_data, public_keys=keys, **ident)
    return azure, azure.vm_name
