"""``file:PATH``: user-data from a local file (tests, image builds, manual runs).

Instance id: the ``instance-id`` of a NoCloud-style ``meta-data`` file in the
same directory, when there is one; otherwise ``file-`` and the first 16 hex
digits of SHA-256 over the absolute path, a NUL byte and the first 4 KiB of
the content. So the same file keeps its id across boots, and editing its
beginning (where the keys are) makes it a new instance whose user-data is
applied again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

from lockgate.firstboot.datasources.base import DatasourceError, InstanceData, NothingToReport

PREFIX_BYTES = 4096


class FileSource(NothingToReport):
    name: ClassVar[str] = "file"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def detect(self) -> bool:
        return self.path.is_file()

    def _instance_id(self, content: bytes) -> str:
        meta = self.path.parent / "meta-data"
        if meta.is_file() and meta.resolve() != self.path.resolve():
            from lockgate.firstboot.datasources.nocloud import parse_meta_data

            found = parse_meta_data(meta.read_text(errors="replace")).get("instance-id")
            if found:
                return found
        digest = hashlib.sha256(str(self.path.absolute()).encode() + b"\0"
                                + content[:PREFIX_BYTES])
        return "file-" + digest.hexdigest()[:16]

    def fetch(self, timeout: float = 60.0) -> InstanceData:
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            raise DatasourceError(f"{self.path}: user-data file not found") from None
        except OSError as exc:
            raise DatasourceError(f"{self.path}: cannot read user-data: {exc.strerror}") from None
        return InstanceData("file", self._instance_id(content), content or None,
                            {"path": str(self.path)})
