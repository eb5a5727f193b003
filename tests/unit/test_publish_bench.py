"""lockgate.benchmarks.publish: the figures it reads are the ones publish prints."""

from __future__ import annotations

import json
from pathlib import Path

from lockgate.benchmarks import publish as bench
from lockgate.image.publish.common import Summary, load_manifest


def test_the_bench_reads_the_upload_summary_publish_prints() -> None:
    line = Summary("ebs snapshot", 2048 * 2**20, 2048 * 2**20, 428 * 2**20, 7.7, 4096, 3240).line()
    match = bench._SUMMARY.search(f"uploading …\n{line}\n")
    assert match is not None, line
    assert match.groups() == ("428.0", "2048.0", "7.7", "55.6", "3240", "4096")


def test_summary_keys() -> None:
    upload = bench.AwsUpload("synthetic", 256, 64, 1.0, 64.0, 384, 512, 3.0)
    data = bench.summary(bench.PublishResult(upload, None, {"aws": 0.4, "gce": 0.9, "azure": None}))
    assert data == {"publish_dry_run_s_aws": 0.4, "publish_dry_run_s_gce": 0.9,
                    "publish_dry_run_s_azure": None, "publish_dry_run_s": 0.9,
                    "publish_aws_mib_s": 64.0, "publish_aws_zero_share": 0.75,
                    "publish_aws_sent_mib": 64.0}
    json.dumps(data, allow_nan=False)


def test_synthetic_build_has_every_artifact_a_dry_run_needs(tmp_path: Path) -> None:
    manifest = load_manifest(bench.synthetic_build(tmp_path, size=8 * 2**20))
    for fmt in ("raw", "vhd", "gce"):
        assert manifest.artifact(fmt).is_file()
