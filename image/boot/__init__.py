"""``lockgate image boot``: run an appliance image in QEMU the way a cloud would.

Modules: :mod:`qemu` (the command line and the one QEMU child process),
:mod:`console` (serial log, markers, quiet watchdog), :mod:`metadata`
(the cloud emulator where the guest looks for it), :mod:`overlay`
(throw-away disks), :mod:`vm` (the ``booted()`` context manager tying them
together) and :mod:`cli` (the command).
"""

from __future__ import annotations

from lockgate.image.boot.console import BootError, FirstbootDone, RuntimeServing
from lockgate.image.boot.vm import Vm, booted

__all__ = ["BootError", "FirstbootDone", "RuntimeServing", "Vm", "booted"]
