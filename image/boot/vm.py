"""``booted()``: one appliance VM for the length of a ``with`` block.

Ties the parts together: overlay and firmware variables in a work folder,
the cloud's metadata where the guest looks, the QEMU process, the serial
console reader. Leaving the block shuts the guest down (ACPI power button,
bounded wait, then quit/kill), stops the emulator and deletes the work
folder, so the built image stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockgate.errors import BadInput
from lockgate.image.boot.console import (
    FIRSTBOOT_RE,
    RUNTIME_RE,
    BootError,
    Console,
    FirstbootDone,
    RuntimeServing,
    parse_firstboot,
    parse_runtime,
)
from lockgate.image.boot.metadata import Cloud, MetadataRoute, serve_metadata
from lockgate.image.boot.overlay import (
    append_kernel_cmdline,
    copy_ovmf_vars,
    image_format,
    make_overlay,
    resolve_image,
)
from lockgate.image.boot.qemu import (
    Accel,
    Firmware,
    Forward,
    QemuProcess,
    VmSpec,
    build_argv,
    choose_accel,
    free_port,
)

DEFAULT_GUEST_PORTS = (9070, 9090)  # REST API, Admin UI


@dataclass
class Vm:
    """A running VM: its console, forwarded ports and how to stop it."""

    process: QemuProcess
    console: Console
    spec: VmSpec
    route: MetadataRoute
    accel_reason: str
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> host port on 127.0.0.1
    _stopped: str | None = None

    @property
    def console_text(self) -> str:
        return self.console.text

    @property
    def console_log(self) -> Path:
        return self.console.log_path

    @property
    def elapsed(self) -> float:
        """Seconds since QEMU started."""
        return time.monotonic() - self.process.started

    @property
    def host_address(self) -> str:
        """The host as the guest sees it (for a pool node served on the host's loopback)."""
        return self.route.host_address

    def url(self, guest_port: int, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[guest_port]}"

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, *,
                 start: int = 0, what: str | None = None) -> re.Match[str]:
        return self.console.wait_for(pattern, timeout, start=start, what=what)

    def type(self, text: str) -> None:
        """Type ``text`` on the serial console (``\\r`` ends a line, as a terminal's Enter)."""
        self.process.type(text.encode())

    def wait_firstboot(self, timeout: float) -> FirstbootDone:
        match = self.wait_for(FIRSTBOOT_RE, timeout, what="the first-boot marker (lockgate-firstboot: done)")
        done = parse_firstboot(match.group(0))
        assert done is not None
        return done

    def wait_serving(self, timeout: float) -> RuntimeServing:
        match = self.wait_for(RUNTIME_RE, timeout, what="the runtime marker (lockgate-runtime: serving)")
        serving = parse_runtime(match.group(0))
        assert serving is not None
        return serving

    def wait_ready(self, timeout: float) -> tuple[FirstbootDone, RuntimeServing]:
        """Both markers: first boot finished and the runtime serving."""
        deadline = time.monotonic() + timeout
        done = self.wait_firstboot(timeout)
        serving = self.wait_serving(max(1.0, deadline - time.monotonic()))
        return done, serving

    def wait_exit(self, timeout: float | None = None) -> int | None:
        """Block until QEMU exits (the guest powered off); None when ``timeout`` passed."""
        try:
            return self.process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown(self, powerdown_timeout: float = 30.0) -> str:
        if self._stopped is None:
            self._stopped = self.process.stop(self.spec.qmp_socket, powerdown_timeout)
            self.console.join()
        return self._stopped


def parse_forward(text: str) -> tuple[int, int]:
    """``HOST:GUEST`` (``0`` or empty HOST: any free port) -> (host, guest)."""
    host, sep, guest = text.partition(":")
    if not sep:
        host, guest = "0", text
    try:
        host_port, guest_port = int(host or 0), int(guest)
    except ValueError as exc:
        raise BadInput(f"--forward {text}: expected HOST:GUEST port numbers") from exc
    for port in (host_port, guest_port):
        if not 0 <= port <= 65535:
            raise BadInput(f"--forward {text}: {port} is not a port number")
    if guest_port == 0:
        raise BadInput(f"--forward {text}: the guest port cannot be 0")
    return host_port, guest_port


def default_console_log(cloud: Cloud, firmware: Firmware) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("build") / "boot" / f"console-{cloud}-{firmware}-{stamp}.log"


@contextlib.contextmanager
def booted(
    image: Path | str,
    *,
    cloud: Cloud | str = Cloud.EC2,
    user_data: bytes | str | None = None,
    firmware: Firmware | str = Firmware.BIOS,
    forwards: Sequence[tuple[int, int]] = (),
    memory_mib: int = 1024,
    persist: bool = False,
    accel: Accel | str = Accel.AUTO,
    console_log: Path | None = None,
    quiet_timeout: float = 120.0,
    instance_id: str | None = None,
    disk_size: int | None = None,
    on_milestone: Callable[[str, float], None] | None = None,
    powerdown_timeout: float = 30.0,
    kernel_cmdline_extra: str | None = None,
    ssh_key: str | None = None,
) -> Iterator[Vm]:
    """Boot ``image`` (a disk file or a build folder) and yield the running :class:`Vm`.

    ``forwards``: extra (host, guest) TCP ports on 127.0.0.1 (host 0: a free
    port); 9070 and 9090 are always forwarded. ``disk_size`` grows the overlay
    (bytes) so first boot can expand the data partition. ``kernel_cmdline_extra``
    is appended to the kernel command line of this boot only (written into the
    overlay's ESP; e.g. ``systemd.mask=lockgate.service`` for a bare-boot baseline).
    ``ssh_key`` (an OpenSSH public key line) is served by the cloud's metadata the way
    that cloud serves SSH keys; forward guest port 22 to log in as ``admin``.
    """
    cloud, firmware = Cloud(cloud), Firmware(firmware)
    chosen, reason = choose_accel(Accel(accel))
    disk = resolve_image(Path(image))
    data = user_data.encode() if isinstance(user_data, str) else user_data
    if kernel_cmdline_extra is not None and persist:
        raise BadInput("an extra kernel command line is for throw-away boots; "
                       "it cannot be combined with persist")
    log_path = console_log or default_console_log(cloud, firmware)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The console shows a generated admin password when there is no user-data:
    # the log is for its owner only.
    log_path.unlink(missing_ok=True)
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    workdir = Path(tempfile.mkdtemp(prefix="lockgate-boot-"))
    try:
        if persist:
            vm_disk, disk_format = disk, image_format(disk)
        else:
            vm_disk, disk_format = make_overlay(disk, workdir, disk_size), "qcow2"
            if kernel_cmdline_extra is not None:
                append_kernel_cmdline(disk, vm_disk, workdir, kernel_cmdline_extra)
        ovmf_vars = copy_ovmf_vars(workdir) if firmware is Firmware.UEFI else None
        ports = {guest: 0 for guest in DEFAULT_GUEST_PORTS}
        for host, guest in forwards:
            ports[guest] = host
        ports = {guest: host or free_port() for guest, host in ports.items()}
        with serve_metadata(cloud, data, workdir, instance_id, ssh_key) as route:
            spec = VmSpec(
                disk=vm_disk, disk_format=disk_format, firmware=firmware, ovmf_vars=ovmf_vars,
                accel=chosen, memory_mib=memory_mib, net=route.net,
                forwards=tuple(Forward(h, g) for g, h in sorted(ports.items())),
                guestfwds=route.guestfwds, smbios=route.smbios, extra_disks=route.extra_disks,
                qmp_socket=workdir / "qmp.sock", uuid=route.uuid)
            process = QemuProcess(build_argv(spec), workdir / "qemu.stderr")
            console = Console(process.stdout_fd, log_path, quiet_timeout=quiet_timeout,
                              on_milestone=on_milestone, started=process.started)
            vm = Vm(process, console, spec, route, reason, ports)
            try:
                _check_started(vm)
                yield vm
            except BootError:
                # A failed or interrupted boot: a guest that may not even have an OS
                # running would ignore the power button, so don't wait long for it.
                vm.shutdown(min(powerdown_timeout, 2.0))
                raise
            finally:
                vm.shutdown(powerdown_timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_started(vm: Vm, grace: float = 2.0) -> None:
    """Turn an immediate QEMU failure (bad option, port in use) into a clear error."""
    try:
        code = vm.process.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # still running after the grace period: it started
        return
    raise BootError(f"QEMU exited at once (code {code}): {vm.process.stderr_tail()}")
