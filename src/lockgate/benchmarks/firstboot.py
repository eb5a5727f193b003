"""First boot: ``lockgate firstboot run --source ec2`` end to end against the EC2 emulator.

Each run gets a fresh ``--root`` so every run is a real first boot (fetch,
parse, apply, status file). Three figures per run: the wall time of the whole
command (Python start-up included: what a boot waits for), the status file's
``duration_s`` (in-process: metadata fetch + parse + apply) and the
``parse+apply took`` line the service prints. cloud-init cannot be run here as
a peer (it needs a booted system it owns), so its published 1.4–3.3 s is
printed as the reference figure.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockgate import proc
from lockgate.benchmarks.report import fmt, median, rounded, table
from lockgate.benchmarks.servers import lockgate_argv
from lockgate.errors import Failure

GOAL_S = 0.3
CLOUD_INIT_REFERENCE_S = (1.4, 3.3)
USER_DATA = b"password=Bench-Firstboot-7 accept_license=Yes timezone=Europe/Berlin"
_PARSE_APPLY = re.compile(r"parse\+apply took ([0-9.]+) s")


@dataclass(frozen=True)
class FirstbootRun:
    wall_s: float
    in_process_s: float
    parse_apply_s: float | None
    state: str


def parse_apply_seconds(stdout: str) -> float | None:
    match = _PARSE_APPLY.search(stdout)
    return float(match.group(1)) if match else None


def run_firstboot(runs: int = 5) -> list[FirstbootRun]:
    from lockgate.image.cloudemu import Ec2Imds

    results = []
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-fb-") as tmp, \
            Ec2Imds(user_data=USER_DATA, imdsv1=False) as imds:
        for i in range(runs):
            root = Path(tmp) / f"root-{i}"
            began = time.monotonic()
            out = proc.output([*lockgate_argv(), "firstboot", "run", "--source", "ec2",
                               "--root", str(root), "--console", str(Path(tmp) / f"console-{i}"),
                               "--timeout", "10"],
                              env={"LOCKGATE_EC2_URL": imds.url}, timeout=120)
            wall = time.monotonic() - began
            status = json.loads((root / "run/lockgate/firstboot.json").read_text())
            if status.get("state") != "configured":
                raise Failure(f"first boot run {i + 1} ended in state {status.get('state')!r}, "
                              f"not 'configured': {status.get('warnings')}")
            results.append(FirstbootRun(wall, float(status["duration_s"]),
                                        parse_apply_seconds(out), status["state"]))
    return results


def summary(runs: list[FirstbootRun]) -> dict[str, Any]:
    return {
        "firstboot_s": rounded(median(r.wall_s for r in runs)),
        "firstboot_in_process_s": rounded(median(r.in_process_s for r in runs)),
        "firstboot_parse_apply_s": rounded(median(r.parse_apply_s for r in runs)),
        "firstboot_runs": len(runs),
        "firstboot_goal_s": GOAL_S,
        "cloud_init_reference_s": list(CLOUD_INIT_REFERENCE_S),
    }


def tables(runs: list[FirstbootRun], data: dict[str, Any]) -> Iterator[str]:
    def verdict(value: float | None) -> str:
        if value is None:
            return "—"
        return "meets goal" if value <= GOAL_S else "over goal"

    rows = [
        ["whole command (wall, incl. Python start-up)", fmt(data["firstboot_s"], ".3f"),
         verdict(data["firstboot_s"])],
        ["in process: fetch+parse+apply (status duration_s)",
         fmt(data["firstboot_in_process_s"], ".3f"), verdict(data["firstboot_in_process_s"])],
        ["in process: parse+apply only", fmt(data["firstboot_parse_apply_s"], ".3f"),
         verdict(data["firstboot_parse_apply_s"])],
    ]
    yield table(["lockgate firstboot run --source ec2 (emulator)", "median s", f"≤ {GOAL_S} s"],
                rows, f"First boot: median of {len(runs)} runs, each on a fresh --root, "
                      "EC2 metadata from lockgate.image.cloudemu on loopback (IMDSv2)")
    low, high = CLOUD_INIT_REFERENCE_S
    yield (f"Reference: cloud-init's published {low}–{high} s for the same kind of work "
           "(not run here: it cannot run as a peer outside a system it boots).")
