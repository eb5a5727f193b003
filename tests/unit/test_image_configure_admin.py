"""The image's admin login: account, sudo, PATH links, /etc/shadow made at boot, sshd settings."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lockgate.firstboot.apply import access
from lockgate.image.build.configure import configure_admin
from lockgate.image.build.context import Context
from lockgate.image.build.profile import load_profile
from lockgate.image.build.templates import render

REPO = Path(__file__).resolve().parents[2]
SHADOW = "root:*:20000:0:99999:7:::\nadmin:!:20000:0:99999:7:::\n"


def _rootfs(tmp_path: Path) -> Context:
    context = Context(load_profile(REPO / "image/profiles/appliance.yaml"), "9.9.9", 0, ("raw",),
                      tmp_path / "out", tmp_path / "cache")
    root = context.rootfs
    for folder in ("etc/sudoers.d", "usr/sbin", "usr/local/bin", "opt/lockgate/bin"):
        (root / folder).mkdir(parents=True)
    # The account exists already (a rebuilt tree), so no chroot useradd runs here.
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "admin:x:1000:1000:lockgate administrator:/var/lib/lockgate/home/admin:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nadm:x:4:admin\nadmin:x:1000:\n")
    (root / "etc/shadow").write_text(SHADOW)
    for command in ("grub-set-default", "grub-reboot"):
        (root / "usr/sbin" / command).write_text("#!/bin/sh\n")
    (root / "opt/lockgate/bin/rollback-helper").write_text("#!/bin/sh\n")
    return context


def test_admin_account_sudo_path_and_shadow_link(tmp_path: Path) -> None:
    context = _rootfs(tmp_path)
    root = context.rootfs
    configure_admin(context)
    configure_admin(context)  # a second run (cached tree) changes nothing
    sudoers = root / "etc/sudoers.d/lockgate-admin"
    assert "admin ALL=(root) NOPASSWD: ALL" in sudoers.read_text().splitlines()
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440
    for command, target in (("grub-set-default", "/usr/sbin/grub-set-default"),
                            ("grub-reboot", "/usr/sbin/grub-reboot"),
                            ("rollback-helper", "/opt/lockgate/bin/rollback-helper")):
        assert os.readlink(root / "usr/local/bin" / command) == target
    assert not (root / "usr/local/bin/upgrade").exists()  # not in this tree: no dangling link
    # /etc/shadow is made at every boot; the image keeps its own entries as the base.
    assert os.readlink(root / "etc/shadow") == "/run/lockgate/shadow"
    assert (root / "etc/shadow.base").read_text() == SHADOW
    tmpfiles = (root / "etc/tmpfiles.d/lockgate-admin.conf").read_text()
    assert "d /var/lib/lockgate/home/admin 0700 admin admin -" in tmpfiles
    # What first boot then writes from the base: root locked, admin's password hash.
    from lockgate.firstboot.apply.admin import set_admin_password

    set_admin_password(root, "admin", "Image-Pw-1")
    shadow = (root / "run/lockgate/shadow").read_text().splitlines()
    assert shadow[0] == "root:*:20000:0:99999:7:::"
    assert shadow[1].startswith("admin:$6$")


def test_sshd_settings_keys_only_from_the_data_partition() -> None:
    text = render("sshd-lockgate.conf.j2", ssh_root="/var/lib/lockgate/ssh", account="admin",
                  keys_dir=str(access.KEYS_DIR))
    settings = {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines()
                if line.strip() and not line.startswith("#")}
    assert settings["AuthorizedKeysFile"] == "/var/lib/lockgate/ssh-keys/%u .ssh/authorized_keys"
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "no"
    assert settings["AllowUsers"] == "admin"


def test_the_profile_installs_sudo() -> None:
    profile = load_profile(REPO / "image/profiles/appliance.yaml")
    assert {"sudo", "openssh-server"} <= set(profile.packages)
