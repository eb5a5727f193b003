"""The secret scan and the initramfs driver check, on small synthetic trees."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from lockgate.errors import Failure
from lockgate.image.build import checks

FAKE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
            "-----END OPENSSH PRIVATE KEY-----\n")


def clean_tree(root: Path) -> Path:
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/machine-id").write_text("")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nadmin:!:19000::::::\n"
                                     "nobody:!*:19000::::::\n")
    (root / "usr/bin").mkdir(parents=True)
    # Programs that only mention the PEM header are not keys.
    (root / "usr/bin/tool").write_bytes(b"\x7fELF...-----BEGIN PRIVATE KEY-----\n")
    (root / "usr/share").mkdir(parents=True)
    (root / "usr/share/notes.txt").write_text("print('-----BEGIN RSA PRIVATE KEY-----')\n")
    return root


def test_clean_tree_passes(tmp_path: Path) -> None:
    root = clean_tree(tmp_path)
    assert checks.scan_secrets(root) == []
    checks.refuse_secrets(root)


@pytest.mark.parametrize(("path", "content", "reason"), [
    ("etc/ssh/ssh_host_ed25519_key", "x", "an SSH host key"),
    ("etc/machine-id", "0123456789abcdef0123456789abcdef\n", "holds a machine id"),
    ("etc/shadow", "root:$y$j9T$abc$def:19000:0:99999:7:::\n", "account root has a password hash"),
    ("opt/app/tls/key.pem", FAKE_KEY, "contains a private key"),
    ("root/.ssh/id_rsa", FAKE_KEY.replace("OPENSSH", "RSA"), "contains a private key"),
])
def test_each_kind_of_secret_is_found(tmp_path: Path, path: str, content: str,
                                      reason: str) -> None:
    root = clean_tree(tmp_path)
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    findings = checks.scan_secrets(root)
    assert [(f.path, f.reason) for f in findings] == [("/" + path, reason)]
    with pytest.raises(Failure, match=f"the image would contain a secret: /{path}"):
        checks.refuse_secrets(root)


def test_module_names() -> None:
    paths = ["usr/lib/modules/6.1/kernel/drivers/net/ethernet/amazon/ena/ena.ko",
             "usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko.xz",
             "kernel/drivers/nvme/host/nvme-core.ko", "usr/lib/modules/6.1/modules.dep"]
    assert checks.module_names(paths) == {"ena", "hv_vmbus", "nvme_core"}


def test_missing_drivers_reads_a_real_initramfs(tmp_path: Path) -> None:
    """An initramfs made with cpio, listed by the real lsinitramfs."""
    kernel = "6.1.0-test"
    tree = tmp_path / "initrd"
    mod_dir = tree / "usr/lib/modules" / kernel / "kernel/drivers"
    mod_dir.mkdir(parents=True)
    (mod_dir / "virtio_blk.ko").write_bytes(b"")
    (mod_dir / "gve.ko").write_bytes(b"")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "lib/modules" / kernel).mkdir(parents=True)
    (root / "lib/modules" / kernel / "modules.builtin").write_text(
        "kernel/drivers/nvme/host/nvme.ko\n")
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tree, input=files,
                          capture_output=True, check=True).stdout
    (root / "boot" / f"initrd.img-{kernel}").write_bytes(gzip.compress(cpio, mtime=0))
    missing = checks.missing_drivers(root, kernel, ("nvme", "virtio_blk", "gve", "hv_netvsc"))
    assert missing == ["hv_netvsc"]
    with pytest.raises(Failure, match="lacks drivers hv_netvsc"):
        checks.verify_initramfs(root, kernel, ("gve", "hv_netvsc"))
