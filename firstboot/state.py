"""Once per instance: which instance this data partition was configured for.

``StatePaths.firstboot`` holds one record per instance id,
``instances/<id>.json``, and ``current``, the id of the instance the
appliance last booted as. A reboot of the same instance finds its record
and applies nothing; a new instance id (an image cloned into a new VM, an
AMI launched again) has none, so user-data is applied again. When the
metadata service cannot be reached the last known id (``current``) is used:
an outage is not a new instance.

Records are written atomically (temp file, fsync, rename) so a power cut
leaves the old record or the new one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write, make_dirs
from lockgate.firstboot.apply.base import StepResult
from lockgate.paths import StatePaths

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


@dataclass
class InstanceRecord:
    instance_id: str
    platform: str
    applied: bool  # False: user-data was invalid, so the next boot tries again
    state: str  # the status "state" after applying
    first_boot: str  # ISO time of the first boot as this instance
    applied_at: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    damaged: str | None = None  # why the stored record could not be read (not saved)

    def to_json(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "platform": self.platform,
                "applied": self.applied, "state": self.state, "first_boot": self.first_boot,
                "applied_at": self.applied_at, "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        return cls(instance_id=data["instance_id"], platform=data["platform"],
                   applied=bool(data["applied"]), state=data["state"],
                   first_boot=data["first_boot"], applied_at=data.get("applied_at"),
                   steps=[StepResult.from_json(s) for s in data.get("steps", [])])


def record_name(instance_id: str) -> str:
    """A file name for ``instance_id``; odd ids get a hash so no id can escape the folder."""
    if _SAFE.fullmatch(instance_id) and instance_id not in (".", ".."):
        return f"{instance_id}.json"
    return f"sha256-{hashlib.sha256(instance_id.encode()).hexdigest()}.json"


class InstanceState:
    def __init__(self, root: Path) -> None:
        self.dir = StatePaths.under_root(root).firstboot
        self.instances = self.dir / "instances"
        self.current_file = self.dir / "current"

    def current(self) -> str | None:
        """The instance id this appliance last booted as, if any."""
        try:
            text = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        except ValueError:  # not UTF-8: damaged; an outage then finds no instance
            return None
        return text or None

    def get(self, instance_id: str) -> InstanceRecord | None:
        path = self.instances / record_name(instance_id)
        try:
            data = json.loads(path.read_text())
            record = InstanceRecord.from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Damaged (a disk problem; writes are atomic). Count it as applied: applying
            # this instance's user-data again would undo what was changed since (a new
            # password), and a crash here would fail every boot from now on.
            return InstanceRecord(instance_id, "unknown", applied=True, state="unknown",
                                  first_boot="", damaged=f"{type(exc).__name__}: {exc}")
        return record if record.instance_id == instance_id else None

    def is_applied(self, instance_id: str) -> bool:
        record = self.get(instance_id)
        return record is not None and record.applied

    def save(self, record: InstanceRecord) -> None:
        """Write ``record`` and make its instance the current one."""
        text = json.dumps(record.to_json(), indent=2) + "\n"
        make_dirs(self.dir, 0o700)
        atomic_write(self.instances / record_name(record.instance_id), text.encode(), 0o600)
        atomic_write(self.current_file, f"{record.instance_id}\n".encode(), 0o600)
