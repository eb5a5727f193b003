"""What every apply step returns, and the small file helpers they share.

A step never raises for a problem it can describe: it returns a
:class:`StepResult` so the service records it and carries on with the next
step. Files are written atomically (temp file, fsync, rename, fsync of the
directory) so a power cut during first boot leaves the old file or the new
one, never half of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lockgate.firstboot.apply.console import Console


class Outcome(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    name: str
    result: Outcome
    message: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "result": str(self.result), "message": self.message}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> StepResult:
        return cls(data["name"], Outcome(data["result"]), data["message"])


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` with ``mode``; missing parents get 0755 (they are /var, /run ...)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        wanted = mode if directory == path else 0o755
        os.mkdir(directory, wanted)
        os.chmod(directory, wanted)  # mkdir's mode is filtered by the umask


def atomic_write(path: Path, data: bytes, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Replace ``path`` with ``data``; the file never exists with a wider ``mode``."""
    make_dirs(path.parent, dir_mode)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # os.open's mode is filtered by the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target``, replacing whatever ``link`` was, in one rename."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def redact(text: str, secrets: list[str | None]) -> str:
    """Remove secret values from a message before it reaches a log, status or console."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


@dataclass
class ApplyContext:
    """What a step may need besides the settings: where, which instance, the console."""

    root: Path
    console: Console
    instance_id: str | None = None
    platform: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0  # per network request a step makes
