"""Editing a copy of the appliance disk for the slot tests: no mounts, no loop devices.

Root filesystems are changed with debugfs (in place, ``disk?offset=N``), the
ESP with mtools, slot B is slot A's ext4 copied with a new UUID. Test-only
units go into the test's copy of a slot, never into the image or the product:
they are how a test runs commands on the appliance (its serial console has no
login for the harness).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from lockgate.image.grub import slot_entry

MIB = 1024 * 1024
MTOOLS = {"MTOOLS_SKIP_CHECK": "1"}
TOOLS = ("sfdisk", "e2fsck", "tune2fs", "debugfs", "mtype", "mcopy", "grub-editenv", "blkid")


def sh(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 300,
       check: bool = True) -> str:
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{argv[0]} {argv[1:3]} failed: {proc.stderr.strip()}"
    return proc.stdout


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    table = json.loads(sh("sfdisk", "--json", disk))["partitiontable"]
    return {str(p["name"]): p for p in table["partitions"]}


def copy_bytes(src: Path, src_offset: int, dst: Path, dst_offset: int, length: int) -> None:
    sh("dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=skip_bytes,count_bytes",
       "oflag=seek_bytes", f"skip={src_offset}", f"seek={dst_offset}", f"count={length}",
       "conv=notrunc,sparse", "status=none")


@dataclass
class SlotB:
    version: str
    fs_uuid: str
    partuuid: str
    cmdline: str  # the profile's words, as slot A's entry has them


class SlotDisk:
    """A copy of the built disk being prepared for a test boot."""

    def __init__(self, disk: Path, work: Path) -> None:
        self.disk, self.work = disk, work
        self.parts = partitions(disk)

    def start(self, name: str) -> int:
        return int(str(self.parts[name]["start"])) * 512

    def size(self, name: str) -> int:
        return int(str(self.parts[name]["size"])) * 512

    @property
    def esp_ref(self) -> str:
        return f"{self.disk}@@{self.start('ESP')}"

    def esp_read(self, path: str) -> str:
        return sh("mtype", "-i", self.esp_ref, f"::/{path}", env=MTOOLS)

    def esp_write(self, path: str, text: str) -> None:
        local = self.work / Path(path).name
        local.write_text(text)
        sh("mcopy", "-o", "-i", self.esp_ref, local, f"::/{path}", env=MTOOLS)

    def grubenv(self) -> str:
        local = self.work / "grubenv.read"
        sh("mcopy", "-o", "-i", self.esp_ref, "::/grub/grubenv", local, env=MTOOLS)
        assert local.stat().st_size == 1024
        return sh("grub-editenv", local, "list")

    def slot_a_entry(self) -> tuple[str, str]:
        """(version, kernel command line words of the profile) from slot A's entry."""
        text = self.esp_read("grub/slot-a.cfg")
        version = re.search(r'--id "lockgate-([^"]+)"', text)
        linux = re.search(r"linux /boot/vmlinuz root=PARTUUID=\S+ (.*)", text)
        assert version and linux, text
        words = [w for w in linux[1].split() if not w.startswith("lockgate.")]
        return version[1], " ".join(words)

    # --- root filesystems (debugfs) ---------------------------------------------

    def debugfs(self, target: str | Path, *requests: str) -> None:
        script = self.work / "debugfs.cmds"
        script.write_text("\n".join(requests) + "\n")
        sh("debugfs", "-w", "-f", script, target)

    def put_files(self, target: str | Path, files: dict[str, tuple[str, int]],
                  links: dict[str, str] | None = None) -> None:
        """Write ``path -> (text, mode)`` (parents made) and symlinks into an ext4."""
        requests = []
        for n, (path, (text, mode)) in enumerate(sorted(files.items())):
            local = self.work / f"put-{n}"
            local.write_text(text)
            local.chmod(mode)
            parts = Path(path).parent.parts[1:]
            for i in range(1, len(parts) + 1):
                requests.append(f"mkdir /{'/'.join(parts[:i])}")  # fails harmlessly if there
            requests += [f"rm {path}", f"write {local} {path}"]
        for link, points_to in (links or {}).items():
            requests += [f"rm {link}", f"symlink {link} {points_to}"]
        self.debugfs(target, *requests)

    def slot_a_target(self) -> str:
        return f"{self.disk}?offset={self.start('root-a')}"

    def enable_unit(self, target: str | Path, name: str, text: str,
                    extra: dict[str, tuple[str, int]] | None = None) -> None:
        self.put_files(target, {f"/etc/systemd/system/{name}": (text, 0o644), **(extra or {})},
                       {f"/etc/systemd/system/multi-user.target.wants/{name}":
                        f"/etc/systemd/system/{name}"})

    def make_slot_b(self, version: str, files: dict[str, tuple[str, int]] | None = None,
                    cmdline_extra: str = "") -> SlotB:
        """Slot A's ext4 copied into slot B with a new UUID, ``files`` added, B's entry written."""
        assert self.size("root-a") == self.size("root-b")
        fs = self.work / "root-b.ext4"
        copy_bytes(self.disk, self.start("root-a"), fs, 0, self.size("root-a"))
        new_uuid = str(uuid.uuid4())
        sh("e2fsck", "-fy", fs)
        sh("tune2fs", "-U", new_uuid, fs)
        assert sh("blkid", "-o", "value", "-s", "UUID", fs).strip() == new_uuid
        if files:
            self.put_files(fs, files)
        copy_bytes(fs, 0, self.disk, self.start("root-b"), self.size("root-b"))
        fs.unlink()
        _, cmdline = self.slot_a_entry()
        slot = SlotB(version, new_uuid, str(self.parts["root-b"]["uuid"]).lower(), cmdline)
        self.esp_write("grub/slot-b.cfg",
                       slot_entry("b", version, slot.fs_uuid, slot.partuuid,
                                  f"{cmdline} {cmdline_extra}".strip()))
        return slot


def step_unit(description: str) -> str:
    """A test-only oneshot that runs /usr/local/sbin/lockgate-e2e-step once per boot,
    after first boot and the boot check are done, with its output on the console."""
    return (f"# TEST ONLY: written into a test's copy of the image by tests/e2e.\n"
            f"[Unit]\nDescription={description}\n"
            "After=lockgate-firstboot.service lockgate-boot-commit.service\n"
            "RequiresMountsFor=/var/lib/lockgate /boot/efi\n"
            "[Service]\nType=oneshot\nExecStart=/usr/local/sbin/lockgate-e2e-step\n"
            "StandardOutput=journal+console\nStandardError=journal+console\n"
            "[Install]\nWantedBy=multi-user.target\n")


#: Shell prelude for step scripts: wait (bounded) until the boot check has finished.
STEP_PRELUDE = """#!/bin/sh
# TEST ONLY: written into a test's copy of the image by tests/e2e.
set -e
timeout 300 sh -c 'while systemctl -q is-active lockgate-boot-commit.service; do sleep 1; done'
stage_file=/var/lib/lockgate/e2e-stage
stage=$(cat "$stage_file" 2>/dev/null || echo 0)
next() { echo "$1" > "$stage_file"; sync; }
"""
