"""Test-suite wide rules: say plainly what is skipped and why.

Markers (pyproject.toml): ``root`` needs root (network namespaces, real
services), ``qemu`` boots a VM, ``slow`` takes more than ~30 s. Nothing is
skipped silently: every skip carries its reason, and ``-ra`` prints them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    has_qemu = shutil.which("qemu-system-x86_64") is not None
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (run make test as root)"))
        if "qemu" in item.keywords and not has_qemu:
            item.add_marker(pytest.mark.skip(reason="qemu-system-x86_64 not installed"))
        if "qemu" in item.keywords and os.environ.get("LOCKGATE_SKIP_QEMU"):
            item.add_marker(pytest.mark.skip(reason="LOCKGATE_SKIP_QEMU is set"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# Runs here are not an appliance: the traffic manager gets an accepted licence without
# limits (runtime/licence.py). Tests of the licence itself remove this from the
# environment of what they start.
os.environ["LOCKGATE_LICENCE_DEV"] = "1"
