"""`lockgate image boot` refuses a file that is no disk image before starting QEMU
(it used to boot it and wait for the quiet watchdog: minutes for a typo)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lockgate.errors import BadInput
from lockgate.image.boot.cli import check_disk

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))


@pytest.mark.parametrize("content", [b"name: lockgate\n", b"", b"\0" * 4096])
def test_boot_refuses_a_file_that_is_no_disk_image(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "profile.yaml"
    image.write_bytes(content)
    began = time.monotonic()
    proc = subprocess.run([LOCKGATE, "image", "boot", str(image), "--exit-after-ready"],
                          capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {image}: not a disk image (no boot sector or qcow2 header); give a built "
        ".raw/.qcow2 image or the build folder"]
    assert "console log" not in proc.stdout  # QEMU never started
    assert time.monotonic() - began < 30


def test_boot_sector_and_qcow2_pass(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 4096)
    check_disk(raw)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "16M"], check=True,
                   timeout=60)
    check_disk(qcow2)
    check_disk(tmp_path)  # a folder is resolved later, from its manifest
    check_disk(tmp_path / "missing.raw")  # "no such image" is resolve_image's to say
    short = tmp_path / "short.raw"
    short.write_bytes(b"\x55\xaa")
    with pytest.raises(BadInput):
        check_disk(short)
