"""The QEMU command line (pure: :func:`build_argv`) and the one QEMU child process.

Everything about a VM is one frozen :class:`VmSpec`; :func:`build_argv`
turns it into argv without touching the machine, so tests assert the exact
command. :class:`QemuProcess` is the only place a QEMU process is started
(``subprocess.Popen``: QEMU is long-lived, so :func:`lockgate.proc.run`
does not fit); its stdout is the guest's serial console.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lockgate.errors import BadInput, Failure

log = logging.getLogger("lockgate.image.boot")

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
# Intel 6300ESB watchdog; on expiry QEMU resets the machine (its default, said
# explicitly). Debian's cloud kernel has no driver for it: the image's softdog
# covers a hung user space there (docs/boot.md, "Trial boots").
WATCHDOG_ARGS = ["-device", "i6300esb", "-action", "watchdog=reset"]


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class Accel(StrEnum):
    AUTO = "auto"
    TCG = "tcg"
    KVM = "kvm"


@dataclass(frozen=True)
class Forward:
    """``hostfwd``: 127.0.0.1:host_port on the host -> guest_port in the guest (TCP)."""

    host_port: int
    guest_port: int


@dataclass(frozen=True)
class GuestFwd:
    """``guestfwd``: guest connections to address:port run ``command`` (one per connection)."""

    address: str
    port: int
    command: str


@dataclass(frozen=True)
class VmSpec:
    disk: Path  # the overlay (qcow2) or, with persist, the image itself (raw)
    disk_format: str = "qcow2"
    firmware: Firmware = Firmware.BIOS
    ovmf_vars: Path | None = None  # a writable copy, UEFI only
    accel: Accel = Accel.TCG  # resolved: TCG or KVM, never AUTO
    memory_mib: int = 1024
    smp: int = 2
    net: str | None = None  # slirp network, e.g. "168.0.0.0/7"; None: QEMU's 10.0.2.0/24
    forwards: tuple[Forward, ...] = ()
    guestfwds: tuple[GuestFwd, ...] = ()
    smbios: tuple[str, ...] = ()  # "-smbios" values, e.g. "type=1,manufacturer=Amazon EC2"
    extra_disks: tuple[Path, ...] = ()  # read-only raw disks, e.g. the NoCloud CIDATA image
    qmp_socket: Path | None = None
    uuid: str | None = None  # SMBIOS system UUID (EC2's start with "ec2")
    # A hardware watchdog that resets the VM when the guest stops petting it
    # (a hung trial boot comes back on the default version).
    watchdog: bool = True
    extra_args: tuple[str, ...] = field(default=())


def build_argv(spec: VmSpec, qemu: str = QEMU) -> list[str]:
    """The full QEMU command line for ``spec``. Serial console on stdout, no graphics."""
    if spec.accel is Accel.AUTO:
        raise ValueError("resolve the accelerator with choose_accel() first")
    # graphics=off: SeaBIOS also writes to the serial port (what -nographic does)
    argv = [qemu, "-name", "lockgate", "-machine", "q35,graphics=off"]
    if spec.accel is Accel.KVM:
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg,thread=multi"]
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.smp), "-nodefaults",
             "-display", "none", "-vga", "none", "-no-user-config"]
    if spec.firmware is Firmware.UEFI:
        if spec.ovmf_vars is None:
            raise ValueError("UEFI needs a writable copy of the OVMF variables")
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={spec.ovmf_vars}"]
    cache = ",cache=unsafe" if spec.disk_format == "qcow2" else ""  # overlays are thrown away
    argv += ["-drive", f"file={spec.disk},if=virtio,format={spec.disk_format}{cache},discard=unmap"]
    for extra in spec.extra_disks:
        argv += ["-drive", f"file={extra},if=virtio,format=raw,readonly=on"]
    argv += ["-netdev", _netdev(spec), "-device", "virtio-net-pci,netdev=net0,romfile=",
             "-device", "virtio-rng-pci"]
    for value in spec.smbios:
        argv += ["-smbios", value]
    if spec.uuid:
        argv += ["-uuid", spec.uuid]
    argv += ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"]
    if spec.qmp_socket is not None:
        argv += ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    if spec.watchdog:
        argv += WATCHDOG_ARGS
    argv += list(spec.extra_args)
    return argv


def _netdev(spec: VmSpec) -> str:
    parts = ["user", "id=net0"]
    if spec.net:
        parts.append(f"net={spec.net}")
    for fwd in spec.forwards:
        parts.append(f"hostfwd=tcp:127.0.0.1:{fwd.host_port}-:{fwd.guest_port}")
    for gfwd in spec.guestfwds:
        if "," in gfwd.command:
            raise ValueError(f"guestfwd command must not contain ',': {gfwd.command}")
        parts.append(f"guestfwd=tcp:{gfwd.address}:{gfwd.port}-cmd:{gfwd.command}")
    return ",".join(parts)


def choose_accel(requested: Accel, *, kvm_device: Path = Path("/dev/kvm"),
                 cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[Accel, str]:
    """Resolve ``auto`` to TCG or KVM and say why, in words for the screen."""
    if requested is Accel.TCG:
        return Accel.TCG, "TCG (software emulation), as requested"
    kvm_usable = kvm_device.exists() and os.access(kvm_device, os.R_OK | os.W_OK)
    if requested is Accel.KVM:
        if not kvm_usable:
            raise BadInput(f"--accel kvm: {kvm_device} is missing or not accessible; use --accel tcg")
        return Accel.KVM, "KVM, as requested"
    if not kvm_usable:
        return Accel.TCG, f"TCG (software emulation): {kvm_device} is missing or not accessible"
    flags = _cpu_flags(cpuinfo)
    if "hypervisor" in flags:
        # Found by trying (docs/boot.md): this host's /dev/kvm is nested and the stock
        # Debian kernel hangs under it after "Probing EDD", while firmware and GRUB run.
        return Accel.TCG, ("TCG (software emulation): this host is itself a VM, so /dev/kvm "
                           "is nested KVM, under which stock kernels hang here; "
                           "--accel kvm tries it anyway")
    return Accel.KVM, f"KVM: {kvm_device} is usable on bare metal"


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QemuProcess:
    """The QEMU child. ``stdout`` carries the serial console and ``stdin`` is its
    keyboard (:meth:`type`); stderr is kept for errors."""

    def __init__(self, argv: list[str], stderr_path: Path) -> None:
        self.argv = argv
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        log.debug("starting: %s", " ".join(argv))
        self.started = time.monotonic()
        try:
            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, start_new_session=True)
        except FileNotFoundError as exc:
            self._stderr.close()
            raise Failure(f"{argv[0]}: not found; install qemu-system-x86") from exc

    @property
    def stdout_fd(self) -> int:
        assert self.popen.stdout is not None
        return self.popen.stdout.fileno()

    def poll(self) -> int | None:
        return self.popen.poll()

    def type(self, data: bytes) -> None:
        """Send ``data`` to the guest's serial console, as keys typed on it."""
        stdin = self.popen.stdin
        if stdin is None or stdin.closed or self.popen.poll() is not None:
            raise Failure("the VM has stopped: nothing can be typed on its console")
        try:
            stdin.write(data)
            stdin.flush()
        except BrokenPipeError as exc:
            raise Failure("the VM has stopped: nothing can be typed on its console") from exc

    def stderr_tail(self, lines: int = 5) -> str:
        self._stderr.flush()
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, qmp_socket: Path | None, powerdown_timeout: float = 60.0) -> str:
        """Shut the guest down: ACPI power button, bounded wait, then quit, then kill.

        Returns how it ended ("powered off", "quit", "killed", "already exited").
        """
        how = "already exited"
        if self.popen.poll() is None:
            how = "killed"
            if qmp_socket is not None and qmp_socket.exists():
                try:
                    qmp_command(qmp_socket, "system_powerdown")
                    self.popen.wait(timeout=powerdown_timeout)
                    how = "powered off"
                except (OSError, subprocess.TimeoutExpired, Failure) as exc:
                    log.info("guest did not power off (%s); asking QEMU to quit", exc)
                    with contextlib.suppress(OSError, Failure):
                        qmp_command(qmp_socket, "quit")
                    try:
                        self.popen.wait(timeout=10)
                        how = "quit"
                    except subprocess.TimeoutExpired:
                        pass
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()
        return how


def qmp_command(path: Path, command: str, timeout: float = 10.0) -> dict[str, object]:
    """Run one QMP command over the monitor socket and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        stream = sock.makefile("rwb")
        _qmp_read(stream)  # greeting
        for execute in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": execute}).encode() + b"\n")
            stream.flush()
            reply = _qmp_read(stream)
            if "error" in reply:
                raise Failure(f"QMP {execute}: {reply['error']}")
        return reply


def _qmp_read(stream: object) -> dict[str, object]:
    """Read replies until one that is not an asynchronous event (bounded by the socket timeout)."""
    for _ in range(100):
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            raise Failure("QMP: QEMU closed the monitor connection")
        message: dict[str, object] = json.loads(line)
        if "event" not in message:
            return message
    raise Failure("QMP: no reply among 100 events")
