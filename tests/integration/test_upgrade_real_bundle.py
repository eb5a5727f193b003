"""An upgrade bundle of the real appliance root filesystem, when an image is already built.

Uses ``LOCKGATE_E2E_IMAGE`` or the newest ``build/**/lockgate-*.raw``; skipped
(with that reason) when there is none — building one is the e2e session's job.
Slot A is read out of the raw disk through the same GPT reader the appliance
uses, bundled and signed with a throw-away key, checked against the qcow2 of
the same disk (goal: bundle <= 1.3 x qcow2), verified, and installed into slot
B of a copy of the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lockgate.image.formats.upgrade import write_bundle
from lockgate.paths import StatePaths
from lockgate.runtime.system import boot, slots
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import generate, load_private, load_public
from lockgate.runtime.system.upgrade import install

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def built_image() -> Path | None:
    given = os.environ.get("LOCKGATE_E2E_IMAGE")
    if given:
        path = Path(given)
        if path.is_dir():
            found = sorted(path.glob("lockgate-*.raw"))
            return found[-1] if found else None
        return path
    found = sorted((REPO / "build").glob("**/lockgate-*.raw"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def copy_range(src: Path, offset: int, length: int, dst: Path) -> None:
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=skip_bytes,count_bytes",
                    f"skip={offset}", f"count={length}", "conv=sparse", "status=none"],
                   check=True, timeout=300)


def sha256(path: Path, offset: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        left = length if length is not None else path.stat().st_size
        while left:
            chunk = f.read(min(4 * MiB, left))
            assert chunk
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def test_the_real_root_filesystem_bundles_small_verifies_and_installs(tmp_path: Path) -> None:
    image = built_image()
    if image is None or not image.exists():
        pytest.skip("no built appliance image (build/**/lockgate-*.raw or LOCKGATE_E2E_IMAGE); "
                    "the e2e session builds one")
    parts = {p.name: p for p in slots.read_gpt(image)}
    a = parts["root-a"]
    rootfs = tmp_path / "root-a.ext4"
    copy_range(image, a.offset, a.size, rootfs)
    generate(tmp_path / "k")
    bundle_path = tmp_path / "lockgate-9.9.9.upgrade"
    started = time.monotonic()
    write_bundle(bundle_path, version="9.9.9", rootfs=rootfs,
                 fs_uuid="99999999-9999-4999-8999-999999999999", kernel="test",
                 kernel_cmdline="ro console=tty0 console=ttyS0,115200 panic=10",
                 source_date_epoch=1700000000, signing_key=load_private(tmp_path / "k.key"),
                 work_dir=tmp_path)
    write_s = time.monotonic() - started
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c", "-o",
                    "compression_type=zlib", str(image), str(qcow2)], check=True, timeout=600)
    ratio = bundle_path.stat().st_size / qcow2.stat().st_size
    print(f"bundle {bundle_path.stat().st_size / MiB:.1f} MiB, qcow2 "
          f"{qcow2.stat().st_size / MiB:.1f} MiB, ratio {ratio:.2f}, written in {write_s:.1f} s")
    assert ratio <= 1.3

    keys = [load_public(tmp_path / "k.pub")]
    started = time.monotonic()
    bundles.verify(bundle_path, keys, architecture=bundles.machine_architecture())
    print(f"verified in {time.monotonic() - started:.1f} s")

    disk = tmp_path / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True, timeout=300)
    esp, state = tmp_path / "esp", StatePaths(tmp_path / "state")
    state.base.mkdir()
    boot.install_entry(esp, "a", "1.0.0", "11111111-1111-4111-8111-111111111111", a.partuuid,
                       "ro")
    boot.write_env(boot.grubenv_path(esp), {"saved_entry": "lockgate-1.0.0"})
    cmdline, release = tmp_path / "cmdline", tmp_path / "release.json"
    cmdline.write_text(f"root=PARTUUID={a.partuuid} ro lockgate.entry=lockgate-1.0.0\n")
    release.write_text(json.dumps({"version": "1.0.0"}))
    machine = slots.Machine(disk=disk, esp=esp, state=state, cmdline=cmdline, release=release,
                            by_partuuid=None)
    os.environ.setdefault("LOCKGATE_BOOT_LOCK", str(tmp_path / "lock"))
    result = install(machine, bundle_path, keys, say=print)
    print(f"applied {result.size / MiB:.0f} MiB in {result.write_s:.1f} s")
    b = parts["root-b"]
    assert sha256(disk, b.offset, a.size) == sha256(rootfs)
    assert boot.read_env(boot.grubenv_path(esp))["next_entry"] == "lockgate-9.9.9"
