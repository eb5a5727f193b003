"""Image: sizes, build times (last build, warm rebuild, cold on request), boot vs bare boot.

Run with ``--only image`` or by default when ``build/manifest.json`` exists.

* Build times: ``lockgate image build`` writes each step's time, and whether
  a cache served it, to ``<out>/build-times.json``; the last build's file is
  reported as it is.
* Cold build (``--image-cold``, off by default: minutes of mmdebstrap): a
  build into a scratch folder with a scratch, empty cache folder.
* Warm rebuild: edit a comment in one lockgate source file (in a copy of the
  checkout), run ``lockgate image build`` from it with the manifest's version
  and formats (the cached package layer in ``cache/`` is reused, as in a
  developer's loop) into a scratch folder beside the build. Needs root.
* Boot: ``python -m lockgate.demo --image DIR --exit-after-ready`` boots the
  freshly rebuilt image (the existing build when the rebuild is skipped) with
  emulated EC2 user-data, configures a pool and a virtual server over REST
  and waits for the first proxied 200. Beside it, in the same round: a stock
  Debian image built by the same pipeline from the same packages minus
  lockgate's (``image/profiles/stock.yaml``, built into a scratch folder) until
  its login prompt, the baseline of issue 12's goal (REST ready at most 3 s
  after stock Debian reaches userspace: ``boot_ready_over_stock_s``); and the
  appliance image with lockgate's two main units masked on the kernel command
  line until its login prompt (the "bare" boot: the image's own base). Same
  firmware, same accelerator. Lockgate's cost is the difference
  (BENCHMARKING.md: boots are timed against a boot measured in the same run,
  never as absolute figures). Each round boots the three one after the other,
  taking turns going first; the medians of the per-round differences are
  reported, and a per-step table (console milestones) of stock vs lockgate.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockgate.benchmarks.report import fmt, median, rounded, say, table
from lockgate.benchmarks.servers import lockgate_argv, start_long_lived
from lockgate.errors import Failure, LockgateError
from lockgate.image.manifest import TIMES_FILE, TIMES_FORMAT

REPO = Path(__file__).resolve().parents[3]
EDITED = "src/lockgate/__init__.py"  # a source file every build installs
MIB = 1024 * 1024
BARE_UNITS = ("lockgate-firstboot.service", "lockgate.service")
BARE_CMDLINE = " ".join(f"systemd.mask={unit}" for unit in BARE_UNITS)
BARE_MARKER = r"[\w.-]+ login:"  # serial getty on ttyS0: userspace is up (any host name)
STOCK_PROFILE = REPO / "image/profiles/stock.yaml"
BUILD_LOCK = REPO / "cache/.build.lock"  # image builds on this machine take turns
LOGIN = "login prompt"
READY = "REST ready"
FIRST_200 = "first proxied 200"
# Console milestones (lockgate.image.boot.console.MILESTONES) then the bench's own, in
# boot order: the rows of the per-step table.
STEPS = ("firmware", "GRUB", "Linux kernel", "systemd", LOGIN, "first boot done",
         "runtime serving", READY, FIRST_200)
_MILESTONE = re.compile(r"^\s*\[\s*([0-9.]+) s\] (.+?)\s*$", re.M)
FIRMWARE = "bios"  # the demo's default; the bare boot must use the same
COLD_OFF = ("off (minutes of mmdebstrap); `--image-cold` builds into a scratch folder with an "
            "empty scratch cache")
_STEP = re.compile(r"^\s+(\w+) done in ([0-9.]+) s$", re.M)
_DEMO = re.compile(r"VM start -> ready ([0-9.]+) s, -> first proxied 200 ([0-9.]+) s")
_ACCEL = re.compile(r"accelerator: ([^:\n]+)", re.M)  # "TCG (software emulation)"


@dataclass(frozen=True)
class Artifact:
    format: str
    path: str
    size: int  # apparent size (what a cloud upload moves for raw/fixed VHD)
    allocated: int | None  # blocks really used on disk (sparse files), None if missing


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float
    cached: bool | None  # None: no cache serves this step


@dataclass(frozen=True)
class BuildTimes:
    """One build's ``build-times.json``."""

    started: str
    total_s: float
    cold: bool  # every cacheable step ran without its cache
    complete: bool
    steps: tuple[StepTime, ...]

    def steps_s(self) -> dict[str, float]:
        return {s.name: s.seconds for s in self.steps}

    def cached(self) -> dict[str, bool]:
        return {s.name: s.cached for s in self.steps if s.cached is not None}


@dataclass
class BootRound:
    """One round: a stock Debian boot, a bare boot and a lockgate boot, back to back."""

    first: str = "bare"  # which booted first
    bare_s: float | None = None
    bare_accel: str = ""
    bare_note: str = ""
    ready_s: float | None = None
    first_200_s: float | None = None
    accel: str = ""
    note: str = ""
    stock_s: float | None = None  # stock Debian: QEMU start -> login prompt
    stock_accel: str = ""
    stock_note: str = ""
    steps: dict[str, float] = field(default_factory=dict)  # lockgate: milestone -> s
    stock_steps: dict[str, float] = field(default_factory=dict)

    def over_bare(self, total: float | None) -> float | None:
        """A lockgate boot figure minus this round's bare boot, if both ran alike."""
        if self.bare_accel and self.accel and self.bare_accel != self.accel:
            return None
        return difference(total, self.bare_s)

    def over_stock(self, total: float | None) -> float | None:
        """A lockgate boot figure minus this round's stock Debian boot, if both ran alike."""
        if self.stock_accel and self.accel and self.stock_accel != self.accel:
            return None
        return difference(total, self.stock_s)


@dataclass
class ImageResult:
    build_dir: Path
    version: str = ""
    artifacts: list[Artifact] = field(default_factory=list)
    last_build: BuildTimes | None = None
    last_build_note: str = ""
    cold: BuildTimes | None = None
    cold_note: str = COLD_OFF
    rebuild_s: float | None = None
    rebuild_steps: dict[str, float] = field(default_factory=dict)
    rebuild_cached: dict[str, bool] = field(default_factory=dict)  # which steps a cache served
    rebuild_note: str = ""
    boots: list[BootRound] = field(default_factory=list)
    boot_note: str = ""
    stock_note: str = ""  # why there is no stock Debian image to boot
    source: str = ""  # whose artifacts were measured and booted

    def median_of(self, name: str) -> float | None:
        return median(getattr(r, name) for r in self.boots)

    def median_over_bare(self, name: str) -> float | None:
        """Median over rounds of (lockgate figure - bare boot); None if any round lacks one."""
        diffs = [r.over_bare(getattr(r, name)) for r in self.boots]
        if not diffs or any(d is None for d in diffs):
            return None
        return median(diffs)

    def median_over_stock(self, name: str) -> float | None:
        """Median over rounds of (lockgate figure - stock Debian boot); None if any lacks one."""
        diffs = [r.over_stock(getattr(r, name)) for r in self.boots]
        if not diffs or any(d is None for d in diffs):
            return None
        return median(diffs)

    def step_medians(self, which: str) -> dict[str, float]:
        """Per milestone, the median over the rounds that reached it (``steps``/``stock_steps``)."""
        out: dict[str, float] = {}
        for step in STEPS:
            value = median(getattr(r, which).get(step) for r in self.boots)
            if value is not None:
                out[step] = value
        return out

    @property
    def accel(self) -> str:
        return next((r.accel or r.bare_accel for r in self.boots if r.accel or r.bare_accel), "")


def difference(total: float | None, bare: float | None) -> float | None:
    return None if total is None or bare is None else total - bare


def parse_build_steps(text: str) -> dict[str, float]:
    """``{step: seconds}`` from ``lockgate image build`` output."""
    return {name: float(sec) for name, sec in _STEP.findall(text)}


def parse_build_times(data: Any) -> BuildTimes:
    """Check and read a ``build-times.json`` object; ValueError says what is wrong."""
    if not isinstance(data, dict) or data.get("format") != TIMES_FORMAT:
        raise ValueError(f"not a {TIMES_FORMAT} record")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        raise ValueError("steps: expected a list")
    steps = []
    for i, item in enumerate(raw_steps):
        if not isinstance(item, dict):
            raise ValueError(f"steps[{i}]: expected an object")
        name, seconds, cached = item.get("name"), item.get("seconds"), item.get("cached")
        if not isinstance(name, str) or not name:
            raise ValueError(f"steps[{i}].name: expected a step name")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"steps[{i}].seconds: expected a number >= 0")
        if cached is not None and not isinstance(cached, bool):
            raise ValueError(f"steps[{i}].cached: expected true, false or null")
        steps.append(StepTime(name, float(seconds), cached))
    total = data.get("total_s")
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        raise ValueError("total_s: expected a number")
    return BuildTimes(str(data.get("started", "")), float(total), data.get("cold") is True,
                      data.get("complete") is True, tuple(steps))


def load_build_times(out: Path) -> BuildTimes:
    """``out/build-times.json``; Failure with the reason when it is missing or broken."""
    path = out / TIMES_FILE
    try:
        return parse_build_times(json.loads(path.read_text()))
    except FileNotFoundError:
        raise Failure(f"{path}: not recorded (a build older than build-times.json; "
                      "rebuild to record it)") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise Failure(f"{path}: unreadable ({exc})") from None


def parse_demo_times(text: str) -> tuple[float, float] | None:
    match = _DEMO.search(text)
    return (float(match.group(1)), float(match.group(2))) if match else None


def parse_milestones(text: str) -> dict[str, float]:
    """``{milestone: seconds}`` from the demo's ``    [  9.9 s] Linux kernel`` lines (first
    of each)."""
    found: dict[str, float] = {}
    for seconds, name in _MILESTONE.findall(text):
        found.setdefault(name, float(seconds))
    return found


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


def _build(manifest: dict[str, Any], formats: str, out: Path, timeout: float,
           extra: tuple[str, ...] = ()) -> tuple[float, str]:
    """One ``lockgate image build`` child; (wall seconds, its output). Builds on this
    machine take turns (``flock cache/.build.lock``); the wait is not timed."""
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        began = time.monotonic()
        child = start_long_lived("image build", [
            *lockgate_argv(), "image", "build", "--version", str(manifest.get("version", "")),
            "--formats", formats, "--out", str(out), *extra], cwd=REPO, keep_lines=400,
            on_line=_progress("build", ("==>",)))
        code = child.wait_exit(timeout)
        elapsed = time.monotonic() - began
    if code != 0:
        raise Failure(f"lockgate image build failed with exit code {code}: {child.tail()}")
    return elapsed, child.output()


def _formats(result: ImageResult) -> str:
    return ",".join(a.format for a in result.artifacts) or "raw"


def cold_build(result: ImageResult, manifest: dict[str, Any], scratch: Path,
               timeout: float) -> None:
    """Build with an empty scratch cache: every package downloaded and installed again."""
    if os.geteuid() != 0:
        result.cold_note = "skipped: the image build needs root"
        return
    out, cache = scratch / "out", scratch / "cache"
    cache.mkdir(parents=True)
    say(f"cold build: empty cache {cache} (formats {_formats(result)}; minutes) ...")
    try:
        _build(manifest, _formats(result), out, timeout, ("--cache-dir", str(cache)))
        result.cold = load_build_times(out)
        result.cold_note = ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # ~1 GiB of packages and trees


# Left out of the checkout copied for the warm rebuild: at the top, VCS data, the venv and
# build outputs; at any depth, caches and compiled leftovers.
_COPY_SKIP_TOP = {".git", ".venv", "build", "cache"}
_COPY_SKIP = {"__pycache__", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def edited_checkout(dest: Path) -> Path:
    """A copy of this checkout at ``dest`` with a comment added to EDITED, never built before
    (it names the time): a code change, as a developer makes one, that leaves the shared
    checkout alone. Returns the copy's appliance profile (its lockgate source is the copy)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO.resolve()
        return {n for n in names if n in _COPY_SKIP or (top and n in _COPY_SKIP_TOP)
                or n.endswith((".so", ".egg-info"))}

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    with (dest / EDITED).open("a") as f:
        f.write(f"# bench: warm rebuild at {time.time_ns()}\n")
    return dest / "image/profiles/appliance.yaml"


def warm_rebuild(result: ImageResult, manifest: dict[str, Any], out: Path,
                 timeout: float) -> bool:
    """Rebuild into ``out``, a scratch folder beside the build (removed after), from a copy
    of the checkout with one comment edited (:func:`edited_checkout`): lockgate's wheel,
    the root tree, the disk and every format are made again, as after a code change.

    The build keeps nothing warm in its output folder (the root tree is
    unpacked afresh every time); what makes a rebuild warm is the shared
    ``cache/`` (package layer, .debs, wheels, the wheel's build tree), which this
    run uses. Building elsewhere leaves the artifacts others may be booting untouched.
    """
    if os.geteuid() != 0:
        result.rebuild_note = "skipped: the image build needs root"
        return False
    profile = edited_checkout(out / "checkout")
    say(f"warm rebuild after editing a comment in {EDITED} (a copy of the checkout; formats "
        f"{_formats(result)}) ...")
    elapsed, text = _build(manifest, _formats(result), out, timeout, ("--profile", str(profile)))
    result.rebuild_s = elapsed
    try:
        times = load_build_times(out)
        result.rebuild_steps, result.rebuild_cached = times.steps_s(), times.cached()
    except Failure:  # a build without build-times.json still prints its step times
        result.rebuild_steps = parse_build_steps(text)
    return True


def stock_build(result: ImageResult, manifest: dict[str, Any], out: Path,
                timeout: float) -> Path | None:
    """Build the stock Debian image (same pipeline, same packages, no lockgate) into ``out``."""
    if os.geteuid() != 0:
        result.stock_note = "no stock Debian image: the image build needs root"
        return None
    say(f"stock Debian build ({STOCK_PROFILE.relative_to(REPO)}) for the boot baseline ...")
    try:
        _build(manifest, "raw", out, timeout, ("--profile", str(STOCK_PROFILE)))
    except LockgateError as exc:
        result.stock_note = f"no stock Debian image: {exc}"
        return None
    return out


def stock_boot(result: ImageResult, boot: BootRound, image: Path | None,
               timeout: float) -> None:
    """QEMU start -> login prompt of stock Debian, with the console's milestones."""
    from lockgate.image.boot import booted
    from lockgate.image.boot.qemu import Accel, choose_accel

    if image is None:
        boot.stock_note = result.stock_note
        return
    chosen, reason = choose_accel(Accel.AUTO)

    def seen(name: str, t: float) -> None:
        boot.stock_steps.setdefault(name, t)
        say(f"  stock: [{t:6.1f} s] {name}")

    log = result.build_dir / "boot" / f"bench-stock-{time.strftime('%Y%m%d-%H%M%S')}.log"
    say("stock Debian boot until the login prompt ...")
    try:
        with booted(image, cloud="ec2", firmware=FIRMWARE, accel=chosen, console_log=log,
                    on_milestone=seen) as vm:
            vm.wait_for(BARE_MARKER, timeout, what="the login prompt")
            boot.stock_s = vm.elapsed
            boot.stock_steps[LOGIN] = vm.elapsed
    except LockgateError as exc:  # the other boots of the round still run and are reported
        boot.stock_note = f"stock boot failed: {exc}"
    boot.stock_accel = reason.split(":")[0].strip()


def bare_boot(result: ImageResult, boot: BootRound, image: Path, timeout: float) -> None:
    """QEMU start -> login prompt with lockgate's units masked: the baseline."""
    from lockgate.image.boot import booted  # imported late: only the image part needs it
    from lockgate.image.boot.qemu import Accel, choose_accel

    chosen, reason = choose_accel(Accel.AUTO)  # as the demo chooses it
    log = result.build_dir / "boot" / f"bench-bare-{time.strftime('%Y%m%d-%H%M%S')}.log"
    say(f"bare boot (kernel command line: {BARE_CMDLINE}) until the login prompt ...")
    try:
        with booted(image, cloud="ec2", firmware=FIRMWARE, accel=chosen, console_log=log,
                    kernel_cmdline_extra=BARE_CMDLINE,
                    on_milestone=lambda name, t: say(f"  bare: [{t:6.1f} s] {name}")) as vm:
            vm.wait_for(BARE_MARKER, timeout, what="the login prompt")
            boot.bare_s = vm.elapsed
            # Masked units must really have stayed off, or this is no baseline.
            if re.search(r"lockgate-firstboot: done|lockgate-runtime: serving", vm.console_text):
                boot.bare_s = None
                boot.bare_note = f"lockgate units ran despite the mask; see {log}"
    except LockgateError as exc:  # BootError too; the lockgate boot still runs and is reported
        boot.bare_note = f"bare boot failed: {exc}"
    boot.bare_accel = reason.split(":")[0].strip()


def boot_to_first_200(boot: BootRound, image: Path, timeout: float) -> None:
    say("booting the image (QEMU) until the first proxied 200 ...")
    child = start_long_lived("demo", [
        sys.executable, "-m", "lockgate.demo", "--image", str(image), "--firmware", FIRMWARE,
        "--exit-after-ready", "--timeout", str(int(timeout))], cwd=REPO, keep_lines=400,
        on_line=_progress("boot", ("==>", "[")))
    try:
        code = child.wait_exit(timeout + 120)
    finally:
        child.stop()
    text = child.output()
    times = parse_demo_times(text)
    accel = _ACCEL.search(text)
    boot.accel = accel.group(1).strip() if accel else ""
    if code != 0 or times is None:
        last = [line for line in text.splitlines() if "password" not in line][-3:]
        boot.note = f"boot failed (exit {code}): {' | '.join(last)}"
        return
    boot.ready_s, boot.first_200_s = times
    boot.steps = parse_milestones(text)
    boot.steps.update({READY: times[0], FIRST_200: times[1]})


ORDER = ("stock", "lockgate", "bare")


def round_order(index: int) -> tuple[str, ...]:
    """Round ``index``'s boots: each round starts with the next of ORDER."""
    return ORDER[index % 3:] + ORDER[:index % 3]


def boot_rounds(result: ImageResult, image: Path, rounds: int,
                stock: Path | None = None) -> None:
    """Stock, lockgate and bare boots one after the other (never two VMs at once),
    each round starting with the next one."""
    if not (REPO / "src/lockgate/demo.py").exists():
        result.boot_note = "not available yet: lockgate.demo is missing"
        return
    for index in range(rounds):
        order = round_order(index)
        boot = BootRound(first=order[0])
        result.boots.append(boot)
        say(f"boot round {index + 1}/{rounds} ({' -> '.join(order)})")
        for which in order:
            if which == "stock":
                stock_boot(result, boot, stock, timeout=600.0)
            elif which == "bare":
                bare_boot(result, boot, image, timeout=600.0)
            else:
                boot_to_first_200(boot, image, timeout=900.0)


def run_image(build_dir: Path, *, rebuild: bool = True, boot: bool = True, cold: bool = False,
              boot_rounds_n: int = 2, timeout: float = 1800.0) -> ImageResult:
    """Sizes and the last build's times; optionally a cold build; the warm rebuild; then
    a bare boot and a lockgate boot, back to back, of what it built (the code being
    measured), or of the existing build when the rebuild is skipped."""
    manifest = load_manifest(build_dir)
    result = ImageResult(build_dir, str(manifest.get("version", "")),
                         read_artifacts(build_dir, manifest), source=str(build_dir))
    try:
        result.last_build = load_build_times(build_dir)
    except Failure as exc:
        result.last_build_note = str(exc)
    if cold:
        cold_build(result, manifest, Path(tempfile.mkdtemp(dir=build_dir, prefix=".bench-cold-")),
                   timeout)
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
            with tempfile.TemporaryDirectory(dir=build_dir, prefix=".bench-stock-") as stock:
                built = stock_build(result, manifest, Path(stock), timeout)
                boot_rounds(result, image, boot_rounds_n, built)
        else:
            result.boot_note = "skipped (--image-skip boot)"
    return result


def _times_json(times: BuildTimes | None) -> dict[str, Any] | None:
    if times is None:
        return None
    return {"started": times.started, "total_s": rounded(times.total_s, 1), "cold": times.cold,
            "complete": times.complete, "steps_s": times.steps_s(), "cached": times.cached()}


def summary(result: ImageResult) -> dict[str, Any]:
    notes = [result.last_build_note, result.rebuild_note, result.boot_note, result.stock_note]
    for i, r in enumerate(result.boots, 1):
        notes += [f"round {i}: {n}" for n in (r.stock_note, r.bare_note, r.note)
                  if n and n != result.stock_note]
    return {"image": {
        "version": result.version,
        "sizes_mib": {a.format: round(a.size / MIB, 1) for a in result.artifacts},
        "allocated_mib": {a.format: None if a.allocated is None else round(a.allocated / MIB, 1)
                          for a in result.artifacts},
        "last_build": _times_json(result.last_build),
        "cold_build_s": rounded(result.cold.total_s if result.cold else None, 1),
        "cold_build_steps_s": result.cold.steps_s() if result.cold else {},
        "cold_build_note": result.cold_note,
        "warm_rebuild_s": rounded(result.rebuild_s, 1),
        "warm_rebuild_steps_s": result.rebuild_steps,
        "warm_rebuild_cached": result.rebuild_cached,
        # Medians over the boot rounds; *_over_bare_s: median of per-round differences.
        "bare_boot_s": rounded(result.median_of("bare_s"), 1),
        "boot_ready_s": rounded(result.median_of("ready_s"), 1),
        "boot_first_200_s": rounded(result.median_of("first_200_s"), 1),
        "boot_ready_over_bare_s": rounded(result.median_over_bare("ready_s"), 1),
        "boot_first_200_over_bare_s": rounded(result.median_over_bare("first_200_s"), 1),
        # Issue 12's goal: REST ready at most 3 s after stock Debian reaches userspace.
        "stock_boot_s": rounded(result.median_of("stock_s"), 1),
        "boot_ready_over_stock_s": rounded(result.median_over_stock("ready_s"), 1),
        "boot_first_200_over_stock_s": rounded(result.median_over_stock("first_200_s"), 1),
        "boot_steps_s": {"stock": {k: round(v, 1) for k, v in
                                   result.step_medians("stock_steps").items()},
                         "lockgate": {k: round(v, 1) for k, v in
                                      result.step_medians("steps").items()}},
        "boot_rounds": [{"first": r.first, "stock_s": rounded(r.stock_s, 1),
                         "bare_s": rounded(r.bare_s, 1),
                         "ready_s": rounded(r.ready_s, 1),
                         "first_200_s": rounded(r.first_200_s, 1)} for r in result.boots],
        "boot_accel": result.accel,
        "measured": result.source,
        "notes": [n for n in notes if n],
    }}


def _steps_line(steps: dict[str, float], cached: dict[str, bool] | None = None) -> str:
    cached = cached or {}
    return ", ".join(f"{k} {v:.1f}" + (" (cached)" if cached.get(k) else "")
                     for k, v in steps.items()) or "not recorded"


def tables(result: ImageResult) -> Iterator[str]:
    rows = [[a.format, a.path, f"{a.size / MIB:,.1f}",
             fmt(None if a.allocated is None else a.allocated / MIB, ",.1f", "missing")]
            for a in result.artifacts]
    yield table(["format", "file", "size MiB", "on disk MiB"], rows,
                f"Image {result.version}: artifacts of {result.source} (sizes and boot)")
    last = result.last_build
    if last is not None:
        kind = "cold (nothing cached)" if last.cold else "with cache"
        yield (f"Last build ({result.build_dir / TIMES_FILE}, {last.started}): "
               f"{last.total_s:.1f} s, {kind}" + ("" if last.complete else ", FAILED"))
        yield f"  steps (s): {_steps_line(last.steps_s(), last.cached())}"
    else:
        yield f"Last build: {result.last_build_note}"
    if result.cold is not None:
        yield f"Cold build (empty cache): {result.cold.total_s:.1f} s"
        yield f"  steps (s): {_steps_line(result.cold.steps_s())}"
    else:
        yield f"Cold build: {result.cold_note}."
    if result.rebuild_s is not None:
        yield f"Warm rebuild (after editing a lockgate source file): {result.rebuild_s:.1f} s"
        yield f"  steps (s): {_steps_line(result.rebuild_steps, result.rebuild_cached)}"
    else:
        yield f"Warm rebuild: {result.rebuild_note}"
    if not result.boots:
        yield f"Boot: {result.boot_note}"
        return
    rows = []
    for i, r in enumerate(result.boots, 1):
        rows.append([f"{i} ({r.first} first)", fmt(r.stock_s, ".1f"), fmt(r.bare_s, ".1f"),
                     fmt(r.ready_s, ".1f"), fmt(r.first_200_s, ".1f"),
                     fmt(r.over_stock(r.ready_s), "+.1f"), fmt(r.over_bare(r.ready_s), "+.1f"),
                     fmt(r.over_bare(r.first_200_s), "+.1f"),
                     "; ".join(n for n in (r.stock_note, r.bare_note, r.note) if n)])
    rows.append(["median", fmt(result.median_of("stock_s"), ".1f"),
                 fmt(result.median_of("bare_s"), ".1f"),
                 fmt(result.median_of("ready_s"), ".1f"),
                 fmt(result.median_of("first_200_s"), ".1f"),
                 fmt(result.median_over_stock("ready_s"), "+.1f"),
                 fmt(result.median_over_bare("ready_s"), "+.1f"),
                 fmt(result.median_over_bare("first_200_s"), "+.1f"), ""])
    yield table(["round", "stock -> login s", "bare -> login s", "-> ready s",
                 "-> first 200 s", "ready over stock s", "ready over bare s",
                 "first 200 over bare s", "note"], rows,
                f"Boot ({FIRMWARE}, {result.accel or 'accelerator ?'}; one VM at a time): stock "
                "= Debian from the same pipeline and packages without lockgate, bare = "
                "lockgate's image with its units masked, both until the login prompt; judge "
                "lockgate by the differences (goal: ready over stock <= +3 s)")
    stock, ours = result.step_medians("stock_steps"), result.step_medians("steps")
    step_rows = [[step, fmt(stock.get(step), ".1f"), fmt(ours.get(step), ".1f"),
                  fmt(difference(ours.get(step), stock.get(step)), "+.1f"),
                  fmt(difference(ours.get(step), stock.get(LOGIN)), "+.1f")]
                 for step in STEPS if step in stock or step in ours]
    yield table(["step (QEMU start ->)", "stock s", "lockgate s", "difference s",
                 "lockgate - stock login s"], step_rows,
                "Boot per step (medians over the rounds; console milestones)")
