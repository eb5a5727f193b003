"""``lockgate image boot``: prove an image boots the way a cloud would run it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from lockgate.errors import BadInput
from lockgate.image.boot.metadata import Cloud
from lockgate.image.boot.qemu import Accel, Firmware, choose_accel
from lockgate.image.boot.vm import Vm, booted, parse_forward


def read_user_data(value: str | None) -> bytes | None:
    """``TEXT`` or ``@FILE`` (``@-``: standard input)."""
    if value is None:
        return None
    if value.startswith("@"):
        name = value[1:]
        if name == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise BadInput(f"--user-data {value}: cannot read {name}: {exc.strerror}") from exc
    return value.encode()


def read_ssh_key(path: Path | None) -> str | None:
    """The one OpenSSH public key in ``path`` (``id_ed25519.pub`` and the like)."""
    if path is None:
        return None
    from lockgate.firstboot.apply.access import clean_keys

    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise BadInput(f"--ssh-key {path}: cannot read: {exc.strerror}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    good, _ = clean_keys(lines)
    if len(lines) != 1 or len(good) != 1:
        raise BadInput(f"--ssh-key {path}: expected one OpenSSH public key line "
                       "(TYPE BASE64 [comment]), e.g. ~/.ssh/id_ed25519.pub; not a private key")
    return good[0]


QCOW2_MAGIC = b"QFI\xfb"


def check_disk(image: Path) -> None:
    """Refuse a file that is no disk image before QEMU starts: booting one would only
    end when the quiet watchdog fires, minutes later. A raw disk (and a fixed VHD)
    starts with a boot sector (the GPT's protective MBR ends in 55 AA); a qcow2 file
    with its magic. Folders and missing paths are left to ``resolve_image``."""
    if not image.is_file():
        return
    try:
        with image.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise BadInput(f"{image}: cannot read: {exc.strerror}") from None
    if head[:4] != QCOW2_MAGIC and head[510:512] != b"\x55\xaa":
        raise BadInput(f"{image}: not a disk image (no boot sector or qcow2 header); give a "
                       "built .raw/.qcow2 image or the build folder")


SSH_PORT = 22


def _milestone(name: str, elapsed: float) -> None:
    click.echo(f"[{elapsed:6.1f} s] {name}")


@click.command("boot")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--cloud", type=click.Choice([c.value for c in Cloud]), default="ec2",
              show_default=True, help="Which cloud's metadata service to emulate.")
@click.option("--user-data", "user_data", metavar="TEXT|@FILE",
              help="User-data for the instance (none: the appliance asks to be configured).")
@click.option("--firmware", type=click.Choice([f.value for f in Firmware]), default="bios",
              show_default=True)
@click.option("--forward", "forwards", multiple=True, metavar="HOST:GUEST",
              help="Forward 127.0.0.1:HOST to the guest's TCP port (HOST 0: any free port).")
@click.option("--ssh-key", "ssh_key_file", type=click.Path(path_type=Path), metavar="PUB",
              help="Serve this public key the way the cloud serves SSH keys; log in as admin "
                   "(guest port 22 is forwarded to a free port unless --forward says otherwise).")
@click.option("--memory", "memory_mib", type=click.IntRange(256, 65536), default=1024,
              show_default=True, help="Guest memory in MiB.")
@click.option("--persist", is_flag=True,
              help="Write to the image itself instead of a throw-away overlay.")
@click.option("--accel", type=click.Choice([a.value for a in Accel]), default="auto",
              show_default=True)
@click.option("--console-log", type=click.Path(path_type=Path),
              help="Where to write the serial console (default: build/boot/console-*.log).")
@click.option("--timeout", type=click.FloatRange(1), default=900, show_default=True,
              help="Seconds allowed from QEMU start until the appliance serves.")
@click.option("--quiet-timeout", type=click.FloatRange(1), default=120, show_default=True,
              help="Fail when the console prints nothing new for this many seconds while booting.")
@click.option("--exit-after-ready", is_flag=True, help="Shut down once ready (for scripts).")
def boot(image: Path, cloud: str, user_data: str | None, firmware: str, forwards: tuple[str, ...],
         ssh_key_file: Path | None, memory_mib: int, persist: bool, accel: str,
         console_log: Path | None, timeout: float, quiet_timeout: float,
         exit_after_ready: bool) -> None:
    """Boot IMAGE (disk.raw or its build folder) in QEMU with an emulated cloud."""
    check_disk(image)
    data = read_user_data(user_data)
    ssh_key = read_ssh_key(ssh_key_file)
    pairs = [parse_forward(f) for f in forwards]
    if ssh_key and not any(guest == SSH_PORT for _, guest in pairs):
        pairs.append((0, SSH_PORT))
    chosen, reason = choose_accel(Accel(accel))
    click.echo(f"accelerator: {reason}")
    click.echo(f"firmware: {firmware}, cloud: {cloud}")
    vm: Vm | None = None
    previous = _raise_on_signals()
    try:
        with booted(image, cloud=cloud, user_data=data, firmware=firmware, forwards=pairs,
                    memory_mib=memory_mib, persist=persist, accel=chosen,
                    console_log=console_log, quiet_timeout=quiet_timeout,
                    on_milestone=_milestone, ssh_key=ssh_key) as vm:
            click.echo(f"console log: {vm.console_log}")
            if persist:
                click.echo(f"writing to {image} itself (--persist)")
            _wait_ready(vm, timeout)
            if exit_after_ready:
                click.echo("shutting down (--exit-after-ready)")
            else:
                click.echo("running; Ctrl-C (or SIGTERM) shuts the VM down")
                if vm.wait_exit() is not None:
                    click.echo("the guest powered off")
    except _Interrupted:
        click.echo("shutting down ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if vm is not None:
        click.echo(f"stopped ({vm.shutdown()})")


def _wait_ready(vm: Vm, timeout: float) -> None:
    done, serving = vm.wait_ready(timeout)
    click.echo(f"ready in {vm.elapsed:.1f} s (first boot: {done.state}, "
               f"instance {done.instance}, source {done.source})")
    click.echo(f"Admin UI:  {vm.url(9090)}/")
    click.echo(f"REST API:  {vm.url(9070)}/")
    click.echo(f"certificate SHA-1 fingerprint: {serving.fingerprint}")
    if done.state == "needs-initial-configuration":
        click.echo("not configured yet: the console log shows how to finish "
                   "(the initial-config wizard on the Admin UI, or z-initial-config)")
    for guest, host in sorted(vm.ports.items()):
        if guest not in (9070, 9090):
            click.echo(f"forwarded: 127.0.0.1:{host} -> guest port {guest}")
    if SSH_PORT in vm.ports:
        click.echo(f"SSH:       ssh -p {vm.ports[SSH_PORT]} admin@127.0.0.1 "
                   f"(host name {vm.route.hostname or '-'})")


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: leave the ``with`` block so the VM is shut down and cleaned up."""


def _raise_on_signals() -> dict[signal.Signals, Any]:
    """The first SIGINT/SIGTERM interrupts the wait; later ones are ignored while shutting down.

    Returns the previous handlers, to put back when the command ends.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return previous
