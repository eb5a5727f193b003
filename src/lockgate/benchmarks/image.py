"""Image: sizes per format, warm rebuild time, VM start -> first proxied 200.

Run with ``--only image`` or by default when ``build/manifest.json`` exists.

* Cold build: not re-run (minutes of mmdebstrap); ``lockgate image build``
  prints its timings but does not record them, so the bench says so.
* Warm rebuild: touch one lockgate source file, run ``lockgate image build``
  again with the manifest's version and formats (the cached package layer in
  ``cache/`` is reused, as in a developer's loop) into a scratch folder beside
  the build, per-step times from its ``NAME done in X s`` lines. Needs root.
* Boot: ``python -m lockgate.demo --image DIR --exit-after-ready`` boots the
  freshly rebuilt image (the checkout being measured; the existing build when
  the rebuild is skipped) with emulated EC2 user-data, configures a pool and
  a virtual server over REST and waits for the first proxied 200; it prints
  both times. Under TCG they are absolute figures from an emulated machine:
  compare them only with boots measured the same way (BENCHMARKING.md).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.benchmarks.report import fmt, rounded, say, table
from lockgate.benchmarks.servers import lockgate_argv, start_long_lived
from lockgate.errors import Failure

REPO = Path(__file__).resolve().parents[3]
TOUCHED = REPO / "src/lockgate/__init__.py"  # a source file every build installs
MIB = 1024 * 1024
_STEP = re.compile(r"^\s+(\w+) done in ([0-9.]+) s$", re.M)
_DEMO = re.compile(r"VM start -> ready ([0-9.]+) s, -> first proxied 200 ([0-9.]+) s")
_ACCEL = re.compile(r"accelerator: ([^:\n]+)", re.M)  # "TCG (software emulation)"


@dataclass(frozen=True)
class Artifact:
    format: str
    path: str
    size: int  # apparent size (what a cloud upload moves for raw/fixed VHD)
    allocated: int | None  # blocks really used on disk (sparse files), None if missing


@dataclass
class ImageResult:
    build_dir: Path
    version: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    cold_build: str = ("not recorded: `lockgate image build` prints its timings but does not "
                       "save them, and a cold build is not re-run here")
    rebuild_s: float | None = None
    rebuild_steps: dict[str, float] = field(default_factory=dict)
    rebuild_note: str = ""
    boot_ready_s: float | None = None
    boot_first_200_s: float | None = None
    boot_accel: str = ""
    boot_note: str = ""
    source: str = ""  # whose artifacts were measured and booted


def parse_build_steps(text: str) -> dict[str, float]:
    """``{step: seconds}`` from ``lockgate image build`` output."""
    return {name: float(sec) for name, sec in _STEP.findall(text)}


def parse_demo_times(text: str) -> tuple[float, float] | None:
    match = _DEMO.search(text)
    return (float(match.group(1)), float(match.group(2))) if match else None


def read_artifacts(build_dir: Path, manifest: dict[str, Any]) -> list[Artifact]:
    out = []
    for item in manifest.get("artifacts") or []:
        path = build_dir / item["path"]
        try:
            allocated: int | None = path.stat().st_blocks * 512
        except FileNotFoundError:
            allocated = None
        out.append(Artifact(item["format"], item["path"], int(item["size"]), allocated))
    return out


def load_manifest(build_dir: Path) -> dict[str, Any]:
    path = build_dir / "manifest.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise Failure(f"{path}: no image build yet; run `lockgate image build` (as root) "
                      "first, or leave out --only image") from None
    except json.JSONDecodeError as exc:
        raise Failure(f"{path}: not valid JSON ({exc}); rebuild the image") from None
    return data


def _progress(prefix: str, keep: tuple[str, ...]) -> Any:
    def show(line: str) -> None:
        # Only step/milestone lines: the demo prints its generated admin password.
        if line.lstrip().startswith(keep) and "password" not in line:
            say(f"  {prefix}: {line.strip()}")
    return show


def warm_rebuild(result: ImageResult, manifest: dict[str, Any], out: Path,
                 timeout: float) -> bool:
    """Rebuild into ``out``, a scratch folder beside the build (removed after).

    The build keeps nothing warm in its output folder (the root tree is
    unpacked afresh every time); what makes a rebuild warm is the shared
    ``cache/`` (package layer, .debs, wheels), which this run uses. Building
    elsewhere leaves the artifacts others may be booting untouched.
    """
    if os.geteuid() != 0:
        result.rebuild_note = "skipped: the image build needs root"
        return False
    formats = ",".join(a.format for a in result.artifacts) or "raw"
    TOUCHED.touch()
    say(f"warm rebuild after touching {TOUCHED.relative_to(REPO)} (formats {formats}) ...")
    began = time.monotonic()
    child = start_long_lived("image build", [
        *lockgate_argv(), "image", "build", "--version", str(manifest.get("version", "")),
        "--formats", formats, "--out", str(out)], cwd=REPO, keep_lines=400,
        on_line=_progress("build", ("==>",)))
    code = child.wait_exit(timeout)
    elapsed = time.monotonic() - began
    if code != 0:
        raise Failure(f"lockgate image build failed with exit code {code}: {child.tail()}")
    result.rebuild_s = elapsed
    result.rebuild_steps = parse_build_steps(child.output())
    return True


def boot_to_first_200(result: ImageResult, image: Path, timeout: float) -> None:
    demo = REPO / "src/lockgate/demo.py"
    if not demo.exists():
        result.boot_note = "not available yet: lockgate.demo is missing"
        return
    say("booting the image (QEMU) until the first proxied 200 ...")
    child = start_long_lived("demo", [
        sys.executable, "-m", "lockgate.demo", "--image", str(image),
        "--exit-after-ready", "--timeout", str(int(timeout))], cwd=REPO, keep_lines=400,
        on_line=_progress("boot", ("==>", "[")))
    try:
        code = child.wait_exit(timeout + 120)
    finally:
        child.stop()
    text = child.output()
    times = parse_demo_times(text)
    accel = _ACCEL.search(text)
    result.boot_accel = accel.group(1).strip() if accel else ""
    if code != 0 or times is None:
        last = [line for line in text.splitlines() if "password" not in line][-3:]
        result.boot_note = f"boot failed (exit {code}): {' | '.join(last)}"
        return
    result.boot_ready_s, result.boot_first_200_s = times


def run_image(build_dir: Path, *, rebuild: bool = True, boot: bool = True,
              timeout: float = 1800.0) -> ImageResult:
    """Sizes; then the warm rebuild and a boot of what it built (the code being measured),
    or of the existing build when the rebuild is skipped."""
    manifest = load_manifest(build_dir)
    result = ImageResult(build_dir, str(manifest.get("version", "")),
                         read_artifacts(build_dir, manifest), source=str(build_dir))
    with tempfile.TemporaryDirectory(dir=build_dir, prefix=".bench-rebuild-") as scratch:
        image = build_dir
        if rebuild:
            if warm_rebuild(result, manifest, Path(scratch), timeout):
                image = Path(scratch)
                result.artifacts = read_artifacts(image, load_manifest(image))
                result.source = "the warm rebuild of this checkout"
        else:
            result.rebuild_note = "skipped (--image-skip rebuild)"
        if boot:
            boot_to_first_200(result, image, timeout=900.0)
        else:
            result.boot_note = "skipped (--image-skip boot)"
    return result


def summary(result: ImageResult) -> dict[str, Any]:
    return {"image": {
        "version": result.version,
        "sizes_mib": {a.format: round(a.size / MIB, 1) for a in result.artifacts},
        "allocated_mib": {a.format: None if a.allocated is None else round(a.allocated / MIB, 1)
                          for a in result.artifacts},
        "cold_build_s": None, "cold_build_note": result.cold_build,
        "warm_rebuild_s": rounded(result.rebuild_s, 1),
        "warm_rebuild_steps_s": result.rebuild_steps,
        "boot_ready_s": rounded(result.boot_ready_s, 1),
        "boot_first_200_s": rounded(result.boot_first_200_s, 1),
        "boot_accel": result.boot_accel,
        "measured": result.source,
        "notes": [n for n in (result.rebuild_note, result.boot_note) if n],
    }}


def tables(result: ImageResult) -> Iterator[str]:
    rows = [[a.format, a.path, f"{a.size / MIB:,.1f}",
             fmt(None if a.allocated is None else a.allocated / MIB, ",.1f", "missing")]
            for a in result.artifacts]
    yield table(["format", "file", "size MiB", "on disk MiB"], rows,
                f"Image {result.version}: artifacts of {result.source} (sizes and boot)")
    yield f"Cold build: {result.cold_build}."
    if result.rebuild_s is not None:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in result.rebuild_steps.items())
        yield f"Warm rebuild (after touching a lockgate source file): {result.rebuild_s:.1f} s"
        yield f"  steps (s): {steps or 'not printed'}"
    else:
        yield f"Warm rebuild: {result.rebuild_note}"
    if result.boot_first_200_s is not None:
        yield (f"VM start -> appliance ready {result.boot_ready_s:.1f} s, -> first proxied "
               f"200 {result.boot_first_200_s:.1f} s ({result.boot_accel or 'accelerator ?'}; "
               "absolute figures under emulation, see docs/benchmarks.md)")
    else:
        yield f"VM start -> first proxied 200: {result.boot_note}"
