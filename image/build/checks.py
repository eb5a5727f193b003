"""Checks that stop the build: initramfs drivers present, no secrets baked in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lockgate.errors import die
from lockgate.proc import output

# A PEM private key block: the header line then (optional PEM headers and) base64.
# Programs that merely mention the header (ssh, gnutls) have no base64 after it.
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n"
                         rb"(?:[A-Za-z-]+: [^\n]*\n)*\r?\n?[A-Za-z0-9+/=]{40,}")
KEY_SCAN_SKIP_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")
MAX_SCAN_SIZE = 4 * 1024 * 1024


def module_names(paths: list[str]) -> set[str]:
    """Kernel module names from paths such as .../virtio_blk.ko(.xz) ('-' and '_' agree)."""
    names = set()
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            if name.endswith(suffix):
                names.add(name[: -len(suffix)].replace("-", "_"))
    return names


def missing_drivers(root: Path, kernel: str, wanted: tuple[str, ...]) -> list[str]:
    initrd = root / "boot" / f"initrd.img-{kernel}"
    listing = output(["lsinitramfs", initrd]).splitlines()
    builtin_file = root / "lib/modules" / kernel / "modules.builtin"
    builtin = builtin_file.read_text().splitlines() if builtin_file.exists() else []
    present = module_names(listing) | module_names(builtin)
    return [d for d in wanted if d.replace("-", "_") not in present]


def verify_initramfs(root: Path, kernel: str, wanted: tuple[str, ...]) -> None:
    missing = missing_drivers(root, kernel, wanted)
    if missing:
        raise die(f"initramfs for {kernel} lacks drivers {', '.join(missing)}; the image would "
                  "not find its disk or network on some clouds")


@dataclass(frozen=True)
class Finding:
    path: str
    reason: str


def _shadow_findings(root: Path) -> list[Finding]:
    found = []
    for name in ("etc/shadow", "etc/gshadow"):
        path = root / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 1 and fields[1] not in ("", "*", "!", "!*") and \
                    not fields[1].startswith("!") and not fields[1].startswith("*"):
                found.append(Finding(f"/{name}", f"account {fields[0]} has a password hash"))
    return found


def scan_secrets(root: Path) -> list[Finding]:
    """Private keys, SSH host keys, a machine id, password hashes."""
    found = _shadow_findings(root)
    machine_id = root / "etc/machine-id"
    if machine_id.exists() and machine_id.read_text().strip() not in ("", "uninitialized"):
        found.append(Finding("/etc/machine-id", "holds a machine id"))
    for path in root.glob("etc/ssh/ssh_host_*"):
        found.append(Finding("/" + str(path.relative_to(root)), "an SSH host key"))
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = "/" + str(path.relative_to(root))
        if rel.startswith(("/usr/lib/modules", "/lib/modules", "/boot/")) or \
                path.name.endswith(KEY_SCAN_SKIP_SUFFIXES):
            continue
        try:
            if path.stat().st_size > MAX_SCAN_SIZE:
                continue
            data = path.read_bytes()
        except OSError as exc:
            found.append(Finding(rel, f"cannot be read ({exc.strerror})"))
            continue
        # Compiled programs carry self-test vectors (gnutls has a GOST test key);
        # a key that belongs to one appliance would be a file of its own.
        if data.startswith(b"\x7fELF"):
            continue
        if PRIVATE_KEY.search(data):
            found.append(Finding(rel, "contains a private key"))
    return found


def refuse_secrets(root: Path) -> None:
    findings = scan_secrets(root)
    if findings:
        first = findings[0]
        raise die(f"the image would contain a secret: {first.path}: {first.reason}"
                  + (f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""))
