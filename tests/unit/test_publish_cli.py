"""`lockgate image publish`: options, errors and what it imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockgate.cli import root

HEAVY = ("boto3", "botocore", "google", "azure")


def loaded_after(*argv: str) -> set[str]:
    code = ("import sys, json\nfrom lockgate.cli import main\n"
            f"sys.argv = ['lockgate', *{list(argv)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("argv", [("image", "--help"), ("image", "publish", "--help"),
                                  ("image", "publish", "aws", "--help"),
                                  ("image", "publish", "gce", "--help"),
                                  ("image", "publish", "azure", "--help")])
def test_help_imports_no_cloud_sdk(argv: tuple[str, ...]) -> None:
    assert not loaded_after(*argv) & set(HEAVY)


def test_aws_dry_run_with_a_region_loads_no_sdk(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    loaded = loaded_after("image", "publish", "aws", "--manifest", str(manifest), "--dry-run",
                          "--region", "eu-west-1")
    assert not loaded & set(HEAVY)


def test_every_cloud_has_manifest_and_dry_run() -> None:
    runner = CliRunner()
    for cloud in ("aws", "gce", "azure"):
        result = runner.invoke(root, ["image", "publish", cloud, "--help"])
        assert result.exit_code == 0, result.output
        assert "--manifest" in result.output and "--dry-run" in result.output
        assert "build/manifest.json" in result.output


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(root, ["image", "publish", "aws", "--manifest", str(tmp_path / "m.json"),
                                   "--dry-run"])
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines()[-1].startswith("error: ")
    assert "no such manifest" in missing.output
    no_bucket = runner.invoke(root, ["image", "publish", "aws", "--via-s3"])
    assert no_bucket.exit_code == 2 and "--via-s3 needs --bucket" in no_bucket.output
    bad_account = runner.invoke(root, ["image", "publish", "aws", "--share-with", "12345"])
    assert bad_account.exit_code == 2 and "12 digits" in bad_account.output


def write_manifest(folder: Path) -> Path:
    disk = folder / "d.raw"
    disk.write_bytes(b"\0" * 4096)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"version": "1", "firmware": "bios", "disk": {"size": 4096},
                                    "artifacts": [{"format": "raw", "path": "d.raw", "size": 4096,
                                                   "sha256": "0" * 64}]}))
    return manifest


def test_aws_dry_run_needs_no_credentials_and_names_the_region(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    env: dict[str, str | None] = {
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
        "AWS_REGION": None, "AWS_DEFAULT_REGION": None, "AWS_PROFILE": None}
    runner = CliRunner()
    no_region = runner.invoke(root, ["image", "publish", "aws", "--manifest", str(manifest),
                                     "--dry-run"], env=env)
    assert no_region.exit_code == 2 and "no AWS region" in no_region.output
    done = runner.invoke(root, ["image", "publish", "aws", "--manifest", str(manifest),
                                "--dry-run", "--region", "eu-central-1"], env=env)
    assert done.exit_code == 0, done.output
    assert "BootMode='legacy-bios'" in done.output
    bad_profile = runner.invoke(root, ["image", "publish", "aws", "--manifest", str(manifest)],
                                env={**env, "AWS_PROFILE": "nosuch"})
    assert bad_profile.exit_code == 2
    assert bad_profile.output.strip().splitlines()[-1].startswith("error: AWS configuration:")
