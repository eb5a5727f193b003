"""``make bench``: ``python -m lockgate.bench [--only runtime,firstboot,image] ...``.

Prints readable tables on stdout (progress on stderr) and, as the LAST stdout
line, one JSON object with the headline figures (``http_ratio``, ``tcp_ratio``,
``p99_ratio``, ``http_cpu_ratio``, ``tcp_cpu_ratio``, the ``_2w`` variants,
``rss_per_10k_idle_mib``, ``firstboot_s``, image numbers when run, ``publish_*``
upload and dry-run figures, ``upgrade_apply_s``/``_ratio``, ``bundle_mib``, ``powercut_runs``/``_good_boots`` and ``rollback_boots``, ``replication_ms``, ``failover_*`` and ``keepalived_*`` (same run, when installed) in network
namespaces).
How and why it measures the way it does: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from lockgate.benchmarks.report import json_line
from lockgate.cli import run_command
from lockgate.errors import BadInput, Failure

PARTS = ("runtime", "firstboot", "image", "upgrade", "publish", "cluster")
REPO = Path(__file__).resolve().parents[2]


def default_parts(build_dir: Path) -> list[str]:
    """All but image and upgrade, which run only when a build is there (they are slow)."""
    parts = ["runtime", "firstboot"]
    if (build_dir / "manifest.json").is_file():
        parts += ["image", "upgrade"]
    return [*parts, "publish", "cluster"]


def parse_only(value: str | None, build_dir: Path) -> list[str]:
    if not value:
        return default_parts(build_dir)
    chosen = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise BadInput(f"--only {value}: choose from {', '.join(PARTS)} (comma-separated)")
    return [p for p in PARTS if p in chosen]


def machine() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--only", "only", metavar="PARTS",
              help="Comma-separated: runtime, firstboot, image, upgrade, publish, cluster "
                   "[default: all, image and upgrade only when build/manifest.json exists].")
@click.option("--duration", type=click.FloatRange(1, 600), default=None,
              help="Seconds per measured case [default: 10; --quick: 3].")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="How many times the whole runtime comparison runs (median reported).")
@click.option("--quick", is_flag=True,
              help="Short cases (3 s, 1 s warm-up, short idle waits): a sanity run.")
@click.option("--warmup", type=click.FloatRange(1, 60), default=None,
              help="Warm-up seconds before each case [default: 2; --quick: 1].")
@click.option("--idle-connections", type=click.IntRange(0, 50_000), default=2000,
              show_default=True, help="Idle connections opened for the RSS figure (0: skip).")
@click.option("--max-idle-wait", type=click.FloatRange(0, 600), default=None,
              help="Longest wait for an idle machine before each case [default: 30; "
                   "--quick: 5].")
@click.option("--workers", "worker_counts", default="1,2", show_default=True,
              help="Worker/thread counts to compare (1 is pinned, others are not).")
@click.option("--image-skip", default="", metavar="rebuild,boot",
              help="Leave out the image's warm rebuild and/or its VM boots (lockgate's and "
                   "the bare-boot baseline it is measured against).")
@click.option("--image-cold", is_flag=True,
              help="Also time a cold image build (scratch output and empty scratch cache; "
                   "minutes of mmdebstrap, root).")
@click.option("--image-boot-rounds", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Rounds of (bare boot, lockgate boot), taking turns going first; medians "
                   "reported.")
@click.option("--failover-rounds", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Kills and link-downs measured for the traffic-IP failover medians.")
@click.option("--failover-soak", type=click.FloatRange(0, 3600), default=600.0,
              show_default=True,
              help="Seconds of proxy load on every member counting false takeovers (0: skip).")
@click.option("--build-dir", type=click.Path(path_type=Path, file_okay=False),
              default=REPO / "build", show_default=True, help="Where the image build lives.")
def main(only: str | None, duration: float | None, rounds: int, quick: bool,
         warmup: float | None, idle_connections: int, max_idle_wait: float | None,
         worker_counts: str, image_skip: str, image_cold: bool, image_boot_rounds: int,
         failover_rounds: int, failover_soak: float, build_dir: Path) -> None:
    """Benchmark lockgate: proxy vs HAProxy, first boot, image build and boot."""
    # The traffic managers started here are not an appliance: an accepted licence without
    # the Community Edition's 10 Mb/s (docs/runtime-config.md "Licence"); inherited.
    os.environ["LOCKGATE_LICENCE_DEV"] = "1"
    parts = parse_only(only, build_dir)
    counts = _counts(worker_counts)  # bad options fail before anything runs
    skipped = _image_skips(image_skip)
    data: dict[str, Any] = {"machine": machine(), "parts": parts}
    began = time.monotonic()
    if "runtime" in parts:
        data.update(_runtime(duration, rounds, quick, warmup, idle_connections, max_idle_wait,
                             counts))
    if "firstboot" in parts:
        data.update(_firstboot())
    if "image" in parts:
        data.update(_image(build_dir, skipped, image_cold, image_boot_rounds))
    if "upgrade" in parts:  # after the image's boots: never two VMs at once
        data.update(_upgrade(build_dir))
    if "publish" in parts:
        data.update(_publish(build_dir))
    if "cluster" in parts:
        data.update(_cluster(failover_rounds, failover_soak))
    data["bench_s"] = round(time.monotonic() - began, 1)
    click.echo("")
    click.echo(json_line(data))


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadInput(f"--workers {text}: expected numbers like 1,2") from None
    if not counts or any(c < 1 or c > 64 for c in counts):
        raise BadInput(f"--workers {text}: each count must be 1..64")
    return counts


def _runtime(duration: float | None, rounds: int, quick: bool, warmup: float | None,
             idle_connections: int, max_idle_wait: float | None,
             worker_counts: tuple[int, ...]) -> dict[str, Any]:
    from lockgate.benchmarks import runtime
    from lockgate.benchmarks.servers import missing_tools

    missing = missing_tools()
    if missing:
        raise Failure("the runtime benchmark needs: " + "; ".join(missing))
    opts = runtime.RuntimeOptions(
        duration_s=duration or (3.0 if quick else 10.0),
        warmup_s=warmup or (1.0 if quick else 2.0),
        rounds=rounds, idle_connections=idle_connections,
        max_idle_wait_s=max_idle_wait if max_idle_wait is not None else (5.0 if quick else 30.0),
        worker_counts=worker_counts,
    )
    report = runtime.run_runtime(opts)
    data = runtime.summary(report)
    for block in runtime.tables(report, data):
        click.echo(block)
    click.echo("")
    return data


def _firstboot() -> dict[str, Any]:
    from lockgate.benchmarks import firstboot

    runs = firstboot.run_firstboot()
    data = firstboot.summary(runs)
    for block in firstboot.tables(runs, data):
        click.echo(block)
    click.echo("")
    return data


def _image_skips(text: str) -> set[str]:
    skipped = {s.strip() for s in text.split(",") if s.strip()}
    if skipped - {"rebuild", "boot"}:
        raise BadInput(f"--image-skip {text}: choose from rebuild, boot")
    return skipped


def _image(build_dir: Path, skipped: set[str], cold: bool, boot_rounds: int) -> dict[str, Any]:
    from lockgate.benchmarks import image

    result = image.run_image(build_dir, rebuild="rebuild" not in skipped,
                             boot="boot" not in skipped, cold=cold, boot_rounds_n=boot_rounds)
    for block in image.tables(result):
        click.echo(block)
    click.echo("")
    return image.summary(result)


def _upgrade(build_dir: Path) -> dict[str, Any]:
    from lockgate.benchmarks import upgrade

    data = upgrade.run_upgrade(build_dir)
    click.echo(f"upgrade: {data}")
    click.echo("")
    return data


def _publish(build_dir: Path) -> dict[str, Any]:
    from lockgate.benchmarks import publish, publish_emulators

    aws = publish.run_publish(build_dir)
    others = publish_emulators.run_publish_emulators(build_dir)
    for block in (*publish.tables(aws), *publish_emulators.tables(others)):
        click.echo(block)
    click.echo("")
    return {**publish.summary(aws), **publish_emulators.summary(others)}


def _cluster(failover_rounds: int, failover_soak: float) -> dict[str, Any]:
    from lockgate.benchmarks import cluster, failover

    data = cluster.run_cluster()
    click.echo(f"cluster replication: {data}")
    found = failover.run_failover(failover_rounds, failover_soak)
    for block in failover.tables(found):
        click.echo(block)
    click.echo("")
    return {**data, **found}


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C so every server, VM and build this run started is stopped.
    raise KeyboardInterrupt


def run(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    run_command(main, argv, "python -m lockgate.bench")


if __name__ == "__main__":
    run()
