"""End-to-end fixtures: the real appliance image, built once per test session.

``LOCKGATE_E2E_IMAGE`` (a disk file or build folder) skips the build. Else the
session builds ``build/`` with ``lockgate image build --formats raw`` (cached
layers are reused); that needs root, and the tests are skipped with that
reason when not root.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 45 * 60


@pytest.fixture(scope="session")
def appliance_image() -> Iterator[Path]:
    given = os.environ.get("LOCKGATE_E2E_IMAGE")
    if given:
        yield Path(given)
        return
    if os.geteuid() != 0:
        pytest.skip("building the appliance image needs root (mmdebstrap, chroot); "
                    "set LOCKGATE_E2E_IMAGE to use a built image")
    out = REPO / "build"
    out.mkdir(exist_ok=True)
    # A second test session in the same checkout would rebuild build/ under this
    # one's VMs (their overlays sit on it): the second waits for the first.
    with (out / ".e2e.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another test session's image and boots ({lock.name})",
                  file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield _build(out)


def _build(out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate", "image", "build", "--formats", "raw", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        pytest.fail(f"lockgate image build failed (exit {proc.returncode}):\n{tail}")
    return out


@pytest.fixture
def console_log(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Each boot's serial console, kept under build/e2e-logs for a failed run's reader."""
    logs = REPO / "build" / "e2e-logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{request.node.name}.log"
