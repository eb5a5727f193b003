"""``lockgate system …`` commands and the appliance's own names for them.

``upgrade``, ``rollback`` and ``rollback-helper`` (the reference product's
command names) are the same click commands as ``lockgate system upgrade`` etc.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from lockgate.cli import run_command
from lockgate.errors import BadInput, Failure
from lockgate.paths import RELEASE_FILE, STATE_DIR, TRUSTED_KEYS_DIR, StatePaths
from lockgate.proc import run
from lockgate.runtime.system import boot
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import PublicKey, load_dir, load_public
from lockgate.runtime.system.slots import Machine, running_version

MiB = 1024 * 1024


def trusted_keys(given: tuple[Path, ...], keys_dir: Path) -> list[PublicKey]:
    """``--trusted-key`` files plus, on the appliance, the keys baked into the image."""
    return [*(load_public(p) for p in given), *load_dir(keys_dir)]


trusted_key_option = click.option(
    "--trusted-key", "trusted", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
    help="A public key (PEM) bundles may be signed with (repeatable).")
keys_dir_option = click.option(
    "--keys-dir", type=click.Path(path_type=Path, file_okay=False), default=TRUSTED_KEYS_DIR,
    show_default=True, help="Baked-in trusted keys (*.pub), used when the folder exists.")
allow_unsigned_option = click.option(
    "--allow-unsigned", is_flag=True,
    help=f"Developer switch: accept an unsigned bundle, only with {bundles.ALLOW_UNSIGNED_ENV}=1 "
         "in the environment too.")


@click.group("bundle")
def bundle_group() -> None:
    """Inspect upgrade bundles."""


@bundle_group.command("verify")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@trusted_key_option
@keys_dir_option
@allow_unsigned_option
@click.option("--architecture", default=None,
              help="The architecture the bundle must be for (default: this machine's).")
def verify(file: Path, trusted: tuple[Path, ...], keys_dir: Path, allow_unsigned: bool,
           architecture: str | None) -> None:
    """Check a bundle's signature, architecture and every byte; print what is in it."""
    started = time.monotonic()
    keys = trusted_keys(trusted, keys_dir)
    bundle, signer = bundles.verify(
        file, keys, architecture=architecture or bundles.machine_architecture(),
        allow_unsigned=bundles.unsigned_allowed(allow_unsigned))
    rootfs = bundle.rootfs
    assert rootfs.uncompressed_size is not None
    cmdline = bundles.read_member(bundle, bundles.CMDLINE).decode(errors="replace").strip()
    click.echo(f"bundle:       {file}\n"
               f"version:      {bundle.version}\n"
               f"architecture: {bundle.architecture}\n"
               f"signed by:    {signer}\n"
               f"kernel:       {bundle.manifest.get('kernel') or '?'}\n"
               f"cmdline:      {cmdline}\n"
               f"rootfs:       {rootfs.uncompressed_size / MiB:.1f} MiB "
               f"({rootfs.size / MiB:.1f} MiB zstd), fs UUID {bundle.fs_uuid}\n"
               f"sha256:       {rootfs.uncompressed_sha256}\n"
               f"verified in {time.monotonic() - started:.1f} s: good")


# ------------------------------------------------------------------ on the appliance

def machine_options(func: Callable[..., None]) -> Callable[..., None]:
    """Where the disk, ESP and data partition are; hidden, for tests on image files."""
    options = [
        click.option("--disk", type=click.Path(path_type=Path), default=None, hidden=True),
        click.option("--esp", type=click.Path(path_type=Path), default=boot.ESP_MOUNT,
                     hidden=True),
        click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR,
                     hidden=True),
        click.option("--cmdline", "cmdline_path", type=click.Path(path_type=Path),
                     default=boot.CMDLINE, hidden=True),
        click.option("--release", type=click.Path(path_type=Path), default=RELEASE_FILE,
                     hidden=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_machine(disk: Path | None, esp: Path, state_dir: Path, cmdline_path: Path,
                 release: Path, keys_dir: Path = TRUSTED_KEYS_DIR) -> Machine:
    if disk is None:
        found = Machine.detect()
        disk = found.disk
        by_partuuid: Path | None = found.by_partuuid
    else:
        by_partuuid = None  # an image file: write at the partition's offset
    return Machine(disk=disk, esp=esp, state=StatePaths(state_dir), cmdline=cmdline_path,
                   release=release, keys_dir=keys_dir, by_partuuid=by_partuuid)


def reboot(what: str) -> None:
    click.echo(f"rebooting into {what} ...")
    run(["systemctl", "reboot"])


@click.command("upgrade")
@click.argument("bundle")
@click.option("--no-restart", is_flag=True, help="Install and schedule the trial boot, but "
                                                  "do not reboot now.")
@click.option("--allow-downgrade", is_flag=True, help="Install a version older than the "
                                                       "running one.")
@trusted_key_option
@keys_dir_option
@allow_unsigned_option
@machine_options
def upgrade(bundle: str, no_restart: bool, allow_downgrade: bool, trusted: tuple[Path, ...],
            keys_dir: Path, allow_unsigned: bool, disk: Path | None, esp: Path, state_dir: Path,
            cmdline_path: Path, release: Path) -> None:
    """Install a signed upgrade bundle (FILE or URL) into the inactive slot and boot it once."""
    from lockgate.runtime.system.upgrade import install

    machine = make_machine(disk, esp, state_dir, cmdline_path, release, keys_dir)
    source, downloaded = fetch_bundle(bundle, machine)
    try:
        result = install(machine, source, trusted_keys(trusted, keys_dir),
                         allow_unsigned=bundles.unsigned_allowed(allow_unsigned),
                         allow_downgrade=allow_downgrade, say=lambda s: click.echo(s),
                         tty=sys.stdout.isatty())
    finally:
        if downloaded:
            source.unlink(missing_ok=True)
    click.echo(f"upgrade to {result.version} ready in {result.total_s:.1f} s")
    if no_restart:
        click.echo(f"--no-restart: reboot when convenient; the next boot tries {result.entry} once")
        return
    reboot(result.entry)


MAX_BUNDLE = 8 * 1024 * MiB


def fetch_bundle(source: str, machine: Machine) -> tuple[Path, bool]:
    """A local bundle file; a URL is first downloaded onto the data partition (streamed,
    never in memory). Returns the file and whether it is a download to delete after."""
    if "://" not in source:
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"{source}: no such file")
        return path, False
    from lockgate.files import make_dirs
    from lockgate.http import UrlError, download

    folder = machine.state.base / "upgrade"
    make_dirs(folder, 0o700)
    target = folder / "download.upgrade"

    def room(length: int | None) -> None:
        free = shutil.disk_usage(folder).free
        if length is not None and length + 16 * MiB > free:
            raise Failure(f"{source}: {length / MiB:.0f} MiB to download; the data partition "
                          f"has {free / MiB:.0f} MiB free")

    click.echo(f"downloading {source} ...")
    started = time.monotonic()
    try:
        with target.open("wb") as out:
            size = download(source, out, max_bytes=MAX_BUNDLE, on_length=room)
            out.flush()
            os.fsync(out.fileno())
    except UrlError as exc:
        target.unlink(missing_ok=True)
        raise Failure(str(exc)) from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - started
    click.echo(f"downloaded {size / MiB:.1f} MiB in {seconds:.1f} s")
    return target, True


WARNING = ("Please note that the older version will not gain any of the configuration "
           "changes made since upgrading.")


@click.command("rollback")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; switch to the other version.")
@click.option("--version", "wanted", default=None, help="The version to switch to.")
@click.option("--no-restart", is_flag=True, help="Switch the default but do not reboot now.")
@machine_options
def rollback(yes: bool, wanted: str | None, no_restart: bool, disk: Path | None, esp: Path,
             state_dir: Path, cmdline_path: Path, release: Path) -> None:
    """Switch to another installed version (the one before the last upgrade) and reboot."""
    from lockgate.runtime.system import rollback as rb

    machine = make_machine(disk, esp, state_dir, cmdline_path, release)
    versions = rb.installed_versions(machine)
    click.echo("This program allows you to roll back to a previously installed version of "
               f"the software. {WARNING}")
    if not yes:
        answer = click.prompt("Do you want to continue? Y/N", default="N", show_default=True)
        if answer.strip().lower() not in ("y", "yes"):
            click.echo("nothing changed")
            return
    target = rb.choose(versions, wanted)
    if not yes and wanted is None:
        click.echo("Which version would you like to use?")
        for i, item in enumerate(versions, 1):
            click.echo(f"{i}) {item.version}{' (current version)' if item.running else ''}")
        default = versions.index(target) + 1
        number = click.prompt("Select a version", type=click.IntRange(1, len(versions)),
                              default=default)
        target = versions[number - 1]
    if target.running:
        click.echo(f"{target.version} is already running; nothing to do")
        return
    if target.healthy is False:
        click.echo(f"warning: {target.version} failed its last health check", err=True)
    rb.switch(machine, target)
    click.echo(f"{target.entry} is now the default")
    if no_restart:
        return
    reboot(target.entry)


@click.command("rollback-helper")
@click.option("--list-versions", "list_versions", is_flag=True,
              help="Print the installed versions, one per line.")
@click.option("--json", "as_json", is_flag=True,
              help="slot, version, default, running, healthy, installed time as JSON.")
@machine_options
def rollback_helper(list_versions: bool, as_json: bool, disk: Path | None, esp: Path,
                    state_dir: Path, cmdline_path: Path, release: Path) -> None:
    """Installed versions, for scripts."""
    from lockgate.runtime.system import rollback as rb

    if not (list_versions or as_json):
        raise BadInput("give --list-versions or --json")
    versions = rb.installed_versions(make_machine(disk, esp, state_dir, cmdline_path, release))
    if as_json:
        click.echo(json.dumps([v.as_json() for v in versions], indent=2))
        return
    for item in versions:
        click.echo(item.version)


@click.command("activate")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, hidden=True)
@click.option("--release", type=click.Path(path_type=Path), default=RELEASE_FILE, hidden=True)
def activate(state_dir: Path, release: Path) -> None:
    """At boot: point the configuration at the running version's own (lockgate-activate)."""
    from lockgate.runtime.system import configs

    machine = Machine(disk=Path("/dev/null"), state=StatePaths(state_dir), release=release)
    version = running_version(machine)
    if version is None:
        raise Failure(f"{release}: no version recorded; the configuration stays where it is")
    for line in configs.activate(machine.state, version):
        click.echo(f"lockgate-activate: {line}")


def upgrade_main() -> None:
    run_command(upgrade, None, "upgrade")


def rollback_main() -> None:
    run_command(rollback, None, "rollback")


def rollback_helper_main() -> None:
    run_command(rollback_helper, None, "rollback-helper")
