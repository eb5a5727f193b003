"""What every apply step returns.

A step never raises for a problem it can describe: it returns a
:class:`StepResult` so the service records it and carries on with the next
step. Files are written with :mod:`lockgate.files` (temp file, fsync, rename,
fsync of the directory) so a power cut during first boot leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

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
