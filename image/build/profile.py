"""The image profile: a YAML file parsed once into frozen dataclasses.

Every error names the field and what to write instead, so a typo in the
profile ends in one sentence rather than a traceback deep in the build.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lockgate.errors import BadInput

MiB = 1024 * 1024
GiB = 1024 * MiB

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": MiB, "GiB": GiB, "TiB": 1024 * GiB}
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|target|mount|path)$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
_RELEASES = ("bookworm",)
_KIND_NAMES = {str: "a string", int: "a number", list: "a list", dict: "a mapping"}


class Firmware(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    HYBRID = "hybrid"

    @property
    def bios(self) -> bool:
        return self in (Firmware.BIOS, Firmware.HYBRID)

    @property
    def uefi(self) -> bool:
        return self in (Firmware.UEFI, Firmware.HYBRID)


class Variant(enum.StrEnum):
    MINBASE = "minbase"
    APT = "apt"


@dataclass(frozen=True)
class DiskSizes:
    size: int  # whole disk, bytes
    bios_boot: int
    esp: int
    root: int  # each root slot

    @property
    def data(self) -> int:
        """What is left for the data partition (GPT headers take 1 MiB at each end)."""
        return self.size - 2 * MiB - self.bios_boot - self.esp - 2 * self.root


@dataclass(frozen=True)
class LockgateSource:
    source: Path  # the checkout whose wheel is installed
    constraints: Path  # pins for the runtime dependencies
    requirements: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    path: Path
    name: str
    release: str
    mirror: str
    security_mirror: str  # "" for none
    variant: Variant
    hostname: str
    firmware: Firmware
    packages: tuple[str, ...]
    kernel_cmdline: str
    initramfs_drivers: tuple[str, ...]
    disk: DiskSizes
    lockgate: LockgateSource
    units: tuple[str, ...]
    units_disabled: tuple[str, ...]
    # Debian alone: the same pipeline and packages without lockgate's venv, units and
    # configuration (image/profiles/stock.yaml), the baseline `make bench` boots against.
    stock: bool = False

    def rootfs_key(self) -> str:
        """Cache key of the package layer: only what changes the debootstrapped tree."""
        fields = {"release": self.release, "mirror": self.mirror,
                  "security_mirror": self.security_mirror, "variant": str(self.variant),
                  "packages": sorted(self.packages), "drivers": sorted(self.initramfs_drivers),
                  "layer": 2}
        return _digest(fields)

    def digest(self) -> str:
        """Hash of the whole profile (paths excluded), used to derive fixed UUIDs."""
        data = asdict(self)
        data.pop("path")
        data["lockgate"] = {"requirements": list(self.lockgate.requirements)}
        if not self.stock:  # the appliance's UUIDs stay what they were before this field
            data.pop("stock")
        return _digest(data)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_size(field: str, value: object) -> int:
    """``"64MiB"``, ``"2GiB"`` or a number of bytes; always whole MiB."""
    if isinstance(value, bool):
        raise BadInput(f"profile: {field}: expected a size such as 64MiB or 2GiB, got {value!r}")
    match = _SIZE.match(str(value))
    if not match:
        raise BadInput(f"profile: {field}: expected a size such as 64MiB or 2GiB, got {value!r}")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size <= 0 or size % MiB:
        raise BadInput(f"profile: {field}: {value!r} is not a positive whole number of MiB")
    return size


class _Fields:
    """Pops keys from one mapping and reports unknown or wrongly typed ones by name."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise BadInput(f"profile: {where or 'top level'}: expected a mapping of keys")
        self.data = dict(data)
        self.where = where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: object = None) -> Any:
        if key not in self.data:
            if default is None:
                raise BadInput(f"profile: {self.name(key)}: missing; it is required")
            return default
        value = self.data.pop(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            wanted = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise BadInput(f"profile: {self.name(key)}: expected {wanted}, "
                           f"got {type(value).__name__} {value!r}")
        return value

    def strings(self, key: str, pattern: re.Pattern[str], what: str,
                default: list[str] | None = None) -> tuple[str, ...]:
        items = self.get(key, list, default)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not pattern.match(item):
                raise BadInput(f"profile: {self.name(key)}[{i}]: {item!r} is not {what}")
        if len(set(items)) != len(items):
            raise BadInput(f"profile: {self.name(key)}: lists an entry twice")
        return tuple(items)

    def done(self) -> None:
        if self.data:
            unknown = ", ".join(self.name(str(k)) for k in sorted(self.data, key=str))
            raise BadInput(f"profile: {unknown}: unknown key; check the spelling")


def _choice(field: str, value: str, enum_type: type[enum.StrEnum]) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = " | ".join(m.value for m in enum_type)
        raise BadInput(f"profile: {field}: {value!r} is not one of {allowed}") from None


def parse_profile(data: object, path: Path) -> Profile:
    top = _Fields(data, "")
    base = path.parent
    name = top.get("name", str)
    release = top.get("release", str, "bookworm")
    if release not in _RELEASES:
        raise BadInput(f"profile: release: {release!r} is not supported; use one of "
                       + ", ".join(_RELEASES))
    mirror = top.get("mirror", str, "http://deb.debian.org/debian")
    if not re.match(r"^(https?|file)://\S+$", mirror):
        raise BadInput(f"profile: mirror: {mirror!r} is not an http(s):// or file:// URL")
    security = top.get("security_mirror", str, "http://deb.debian.org/debian-security")
    if security and not re.match(r"^(https?|file)://\S+$", security):
        raise BadInput(f"profile: security_mirror: {security!r} is not an http(s):// or file:// "
                       "URL (or \"\" for none)")
    variant = _choice("variant", top.get("variant", str, "minbase"), Variant)
    hostname = top.get("hostname", str, "lockgate")
    if not _HOSTNAME.match(hostname):
        raise BadInput(f"profile: hostname: {hostname!r} is not a valid host name")
    firmware = _choice("firmware", top.get("firmware", str, "hybrid"), Firmware)
    packages = top.strings("packages", _PACKAGE, "a Debian package name")
    for needed in ("linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "python3"):
        if not any(p == needed or (p.startswith("linux-image-") and needed.startswith("linux-"))
                   for p in packages):
            raise BadInput(f"profile: packages: must include {needed}")
    cmdline = top.get("kernel_cmdline", str, "ro console=tty0 console=ttyS0,115200")
    if "root=" in cmdline:
        raise BadInput("profile: kernel_cmdline: must not set root=; the build adds the slot's "
                       "root=PARTUUID=")
    if "ro" not in cmdline.split():
        raise BadInput("profile: kernel_cmdline: must contain ro (the root slots are read-only)")
    drivers = top.strings("initramfs_drivers", _MODULE, "a kernel module name", [])

    disk_fields = _Fields(top.get("disk", dict, {}), "disk")
    disk = DiskSizes(
        size=parse_size("disk.size", disk_fields.get("size", (str, int), "2GiB")),
        bios_boot=parse_size("disk.bios_boot", disk_fields.get("bios_boot", (str, int), "1MiB")),
        esp=parse_size("disk.esp", disk_fields.get("esp", (str, int), "64MiB")),
        root=parse_size("disk.root", disk_fields.get("root", (str, int), "800MiB")),
    )
    disk_fields.done()
    if disk.esp < 33 * MiB:
        raise BadInput("profile: disk.esp: must be at least 33MiB (FAT32 minimum)")
    if disk.root < 256 * MiB:
        raise BadInput("profile: disk.root: must be at least 256MiB")
    if disk.data < 64 * MiB:
        raise BadInput(f"profile: disk.size: {disk.size // MiB} MiB leaves "
                       f"{max(disk.data, 0) // MiB} MiB for data; need at least 64 MiB more "
                       "than bios_boot + esp + 2 x root")

    lg = _Fields(top.get("lockgate", dict, {}), "lockgate")
    source = (base / lg.get("source", str, "../..")).resolve()
    constraints = (base / lg.get("constraints", str, "../../constraints.txt")).resolve()
    requirements = lg.strings("requirements", re.compile(r"^[A-Za-z0-9_.-]+$"),
                              "a Python distribution name",
                              ["click", "PyYAML", "cryptography", "uvloop", "httptools", "tzdata"])
    lg.done()
    if not (source / "pyproject.toml").is_file():
        raise BadInput(f"profile: lockgate.source: {source} has no pyproject.toml; point it at "
                       "a lockgate checkout")
    if not constraints.is_file():
        raise BadInput(f"profile: lockgate.constraints: {constraints} does not exist")

    units_fields = _Fields(top.get("units", dict, {}), "units")
    units = units_fields.strings("enable", _UNIT, "a systemd unit name", [])
    disabled = units_fields.strings("disable", _UNIT, "a systemd unit name", [])
    both = sorted(set(units) & set(disabled))
    if both:
        raise BadInput(f"profile: units: {both[0]} is both enabled and disabled")
    units_fields.done()
    stock = top.get("stock", bool, False)
    top.done()
    return Profile(path=path, name=name, release=release, mirror=mirror,
                   security_mirror=security, variant=variant,
                   hostname=hostname, firmware=firmware, packages=packages,
                   kernel_cmdline=cmdline, initramfs_drivers=drivers, disk=disk,
                   lockgate=LockgateSource(source, constraints, requirements), units=units,
                   units_disabled=disabled, stock=stock)


def load_profile(path: Path) -> Profile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"profile {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"profile {path}: not valid YAML{where}") from None
    return parse_profile(data, path.resolve())
