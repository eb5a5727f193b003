"""Turn the Debian tree into the appliance: read-only root, first-boot identity.

Nothing that identifies one machine is baked in: /etc/machine-id is empty
(systemd makes one at boot), SSH host keys are generated on the data
partition at first boot, root's password stays locked. The ``admin`` login
account is in the image; its password and SSH keys are put in place at every
boot by first boot (lockgate.firstboot.apply.access). Everything that
changes at run time lives on the data partition (see lockgate.paths).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from lockgate.firstboot.apply import services
from lockgate.firstboot.apply.access import ACCOUNT as ADMIN
from lockgate.firstboot.apply.access import KEYS_DIR, SHADOW_BASE, SHADOW_NAME
from lockgate.image import gpt
from lockgate.image.build.context import Context
from lockgate.image.build.install import VENV
from lockgate.image.build.templates import render, systemd_escape_path
from lockgate.paths import RUN_DIR, STATE_DIR
from lockgate.proc import run

SSH_ROOT = STATE_DIR / "ssh"  # ssh-keygen -A -f SSH_ROOT writes SSH_ROOT/etc/ssh/*
ADMIN_HOME = STATE_DIR / "home" / ADMIN
ADMIN_GROUPS = ("adm", "systemd-journal")  # read the logs and the journal without sudo
ADMIN_COMMANDS = ("grub-set-default", "grub-reboot", "grub-editenv", "upgrade", "rollback",
                  "rollback-helper", "upgrade-cluster")
OWN_UNITS = ("lockgate-expand-data.service", "lockgate-ssh-keygen.service")
PACKAGE_UNIT_DIRS = ("firstboot/units", "runtime/units")
# Folders systemd's own services write to (logind's linger, timesyncd's clock,
# the random seed), bound from the data partition: folder -> data sub-folder.
STATE_BINDS = (("/var/lib/systemd", "os/var-lib-systemd"),)
# systemd's hardware watchdog: a PID 1 silent this long resets the machine; a
# reboot that hangs this long too.
WATCHDOG_RUNTIME = "60s"
WATCHDOG_REBOOT = "2min"
# lockgate-expand-data runs only when this much lies unused after the data partition
# (sysfs counts 512-byte sectors): below z-expand-logs-partition --auto's 16 MiB, less
# the GPT backup and 1 MiB alignment it keeps, so it never skips a worthwhile grow.
EXPAND_MIN_FREE = 14 * 1024 * 1024


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_text(text)
    target.chmod(mode)


def _symlink(root: Path, path: str, points_to: str) -> None:
    link = root / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(points_to)


def _empty_dir(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _site_packages(root: Path) -> Path:
    found = sorted((root / VENV.relative_to("/") / "lib").glob("python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages under {root}{VENV}")
    return found[-1]


def configure_identity(context: Context) -> None:
    root = context.rootfs
    hostname = context.profile.hostname
    _write(root, "/etc/hostname", hostname + "\n")
    _write(root, "/etc/hosts", render("hosts.j2", hostname=hostname))
    # Empty, not absent: systemd then treats the boot as a first boot and,
    # on the read-only root, keeps the generated id on a tmpfs over this file.
    _write(root, "/etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _symlink(root, "/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
    if context.profile.stock:
        return
    # firstboot's timezone step writes these on the data partition.
    _symlink(root, "/etc/localtime", str(STATE_DIR / "config/localtime"))
    _symlink(root, "/etc/timezone", str(STATE_DIR / "config/timezone"))


def configure_boot_files(context: Context) -> None:
    root = context.rootfs
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise FileNotFoundError(f"expected one kernel in {root}/boot, found {len(kernels)}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    context.kernel_version = version
    _symlink(root, "/boot/vmlinuz", f"vmlinuz-{version}")
    _symlink(root, "/boot/initrd.img", f"initrd.img-{version}")
    for name in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        stale = root / name
        if stale.is_symlink():
            stale.unlink()
    (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    # Debian's grub-editenv, grub-set-default and grub-reboot use /boot/grub/grubenv.
    _symlink(root, "/boot/grub", "efi/grub")
    if context.profile.stock:
        return
    # A hung user space (say, a trial boot of a new version) resets the machine.
    _write(root, "/etc/systemd/system.conf.d/lockgate-watchdog.conf",
           render("watchdog.conf.j2", runtime_sec=WATCHDOG_RUNTIME, reboot_sec=WATCHDOG_REBOOT))
    _write(root, "/etc/modules-load.d/lockgate-watchdog.conf", render("modules-watchdog.conf.j2"))


def configure_mounts(context: Context) -> None:
    root = context.rootfs
    _write(root, "/etc/fstab", render("fstab.j2", esp=gpt.ESP, data=gpt.DATA,
                                       state_dir=str(STATE_DIR), binds=STATE_BINDS))
    (root / STATE_DIR.relative_to("/")).mkdir(parents=True, exist_ok=True)
    # /var/log moves to the data partition: keep its contents for build_data_tree.
    saved_log = context.work_dir / "var-log"
    if saved_log.exists():
        shutil.rmtree(saved_log)
    shutil.copytree(root / "var/log", saved_log, symlinks=True)
    _empty_dir(root / "var/log")
    _empty_dir(root / "tmp")
    _empty_dir(root / "var/tmp")
    _empty_dir(root / "var/lib/apt/lists")
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    (root / "var/cache/debconf/templates.dat-old").unlink(missing_ok=True)
    (root / "var/cache/debconf/config.dat-old").unlink(missing_ok=True)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)


def configure_network(context: Context) -> None:
    root = context.rootfs
    _write(root, "/etc/systemd/network/80-dhcp.network", render("80-dhcp.network.j2"))
    if context.profile.stock:
        return
    _write(root, "/etc/systemd/system/systemd-networkd-wait-online.service.d/lockgate.conf",
           render("wait-online.conf.j2"))
    if (root / "usr/sbin/sshd").exists():
        _write(root, "/etc/ssh/sshd_config.d/lockgate.conf",
               render("sshd-lockgate.conf.j2", ssh_root=str(SSH_ROOT), account=ADMIN,
                      keys_dir=str(KEYS_DIR)))


def install_units(context: Context) -> None:
    """Our own units plus the ones lockgate's packages ship; enable the profile's list."""
    root = context.rootfs
    unit_dir = root / "etc/systemd/system"
    data_dev = f"dev-disk-by\\x2dpartlabel-{systemd_escape_path(gpt.DATA)}"
    values = {"state_dir": str(STATE_DIR), "ssh_root": str(SSH_ROOT),
              "data_device": f"/dev/disk/by-partlabel/{gpt.DATA}",
              "data_device_unit": f"{data_dev}.device",
              "data_fsck_unit": f"systemd-fsck@{data_dev}.service",
              "state_mount_unit": f"{systemd_escape_path(str(STATE_DIR))}.mount",
              "min_free_sectors": EXPAND_MIN_FREE // 512}
    if not context.profile.stock:
        for name in OWN_UNITS:
            _write(root, f"/etc/systemd/system/{name}", render(f"{name}.j2", **values))
        site = _site_packages(root) / "lockgate"
        for folder in PACKAGE_UNIT_DIRS:
            for shipped in sorted((site / folder).glob("*.service")):
                shutil.copyfile(shipped, unit_dir / shipped.name)
                (unit_dir / shipped.name).chmod(0o644)
    for unit in context.profile.units:
        template = unit.split("@")[0] + "@.service" if "@" in unit else None
        known = [unit_dir / unit, root / "lib/systemd/system" / unit,
                 root / "usr/lib/systemd/system" / unit]
        if template:
            known += [root / "lib/systemd/system" / template]
        if not any(p.exists() for p in known):
            click.echo(f"    warning: unit {unit} is not in the image; not enabled", err=True)
            continue
        run(["chroot", root, "systemctl", "enable", "--quiet", unit], env=context.env)
    for unit in context.profile.units_disabled:
        # Package maintenance timers would only fail on the read-only root.
        run(["chroot", root, "systemctl", "disable", "--quiet", unit], env=context.env,
            check=False)
        run(["chroot", root, "systemctl", "mask", "--quiet", unit], env=context.env)


def configure_admin(context: Context) -> None:
    """The ``admin`` login (console and SSH; see lockgate.firstboot.apply.access): an
    account whose home is on the data partition, sudo, the appliance's commands on its
    PATH, and /etc/shadow made at every boot from the image's entries plus its password."""
    root = context.rootfs
    passwd = (root / "etc/passwd").read_text()
    if not any(line.startswith(f"{ADMIN}:") for line in passwd.splitlines()):
        present = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
        groups = ",".join(g for g in ADMIN_GROUPS if g in present)
        run(["chroot", root, "useradd", "--no-create-home", "--home-dir", str(ADMIN_HOME),
             "--shell", "/bin/bash", "--user-group", "--comment", "lockgate administrator",
             *(["--groups", groups] if groups else []), ADMIN], env=context.env)
    _write(root, "/etc/tmpfiles.d/lockgate-admin.conf",
           render("tmpfiles-admin.conf.j2", state_dir=str(STATE_DIR), home=str(ADMIN_HOME),
                  account=ADMIN))
    if (root / "etc/sudoers.d").is_dir():
        _write(root, "/etc/sudoers.d/lockgate-admin", render("sudoers-admin.j2", account=ADMIN),
               0o440)
    else:
        click.echo("    warning: sudo is not in the image; admin cannot act as root", err=True)
    # The reference product's commands on every PATH (login shells, "ssh host CMD", sudo's
    # secure_path): Debian keeps GRUB's in /usr/sbin, lockgate's are in its venv.
    for command in ADMIN_COMMANDS:
        for folder in ("usr/sbin", "usr/bin", str(VENV / "bin").lstrip("/")):
            if (root / folder / command).exists():
                if not (root / "usr/local/bin" / command).exists():
                    _symlink(root, f"/usr/local/bin/{command}", f"/{folder}/{command}")
                break
    shadow = root / "etc/shadow"
    if not shadow.is_symlink():
        base = root / str(SHADOW_BASE).lstrip("/")
        os.replace(shadow, base)
        _symlink(root, "/etc/shadow", str(RUN_DIR / SHADOW_NAME))


def configure_services(context: Context) -> None:
    """NTP server and SSH intrusion prevention follow files on the data partition
    (lockgate.firstboot.apply.services)."""
    root = context.rootfs
    _symlink(root, "/etc/systemd/timesyncd.conf.d/lockgate.conf",
             str(STATE_DIR / services.TIMESYNCD_FILE))
    if (root / "usr/sbin/sshguard").exists():
        _write(root, "/etc/systemd/system/sshguard.service.d/lockgate.conf",
               render("sshguard-lockgate.conf.j2", state_dir=str(STATE_DIR),
                      marker=str(STATE_DIR / "config" / services.NO_SSHGUARD_FILE)))


def configure_system(context: Context) -> None:
    """The appliance; for a stock profile only what any image of this pipeline needs
    (identity, kernel links, the A/B mounts, DHCP, the profile's units): Debian as its
    packages set it up, with nothing of lockgate's, the baseline of the boot benchmark."""
    configure_identity(context)
    configure_boot_files(context)
    configure_mounts(context)
    configure_network(context)
    install_units(context)
    if not context.profile.stock:
        configure_admin(context)
        configure_services(context)
    build_data_tree(context)


def build_data_tree(context: Context) -> Path:
    """What the data partition starts with: the image's /var/log and empty state folders."""
    tree = context.data_tree
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(mode=0o755)
    source_log = context.work_dir / "var-log"
    if source_log.exists():
        shutil.copytree(source_log, tree / "log", symlinks=True)
    else:
        (tree / "log").mkdir()
    (tree / "log/journal").mkdir(exist_ok=True)
    os.chmod(tree / "log/journal", 0o2755)
    for folder, sub_dir in STATE_BINDS:
        shutil.copytree(context.rootfs / folder.lstrip("/"), tree / sub_dir, symlinks=True)
    for sub in ("config", "firstboot"):
        (tree / sub).mkdir(mode=0o700, exist_ok=True)
    timesyncd = tree / services.TIMESYNCD_FILE  # never a dangling drop-in link
    timesyncd.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    timesyncd.write_text(services.timesyncd_text(None))
    return tree
