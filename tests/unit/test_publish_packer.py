"""packer/*.pkr.hcl with Debian's packer 1.6.6: they validate, and map variables to lockgate.

`packer build` runs for real; `lockgate` is replaced (the `lockgate` variable) by a
script that records its arguments, so these tests build and publish nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.image.build.profile import load_profile

REPO = Path(__file__).resolve().parents[2]
PACKER = REPO / "packer"
TEMPLATES = ("aws", "gce", "azure", "local")

pytestmark = pytest.mark.skipif(shutil.which("packer") is None,
                                reason="packer not installed (scripts/apt-packages.txt)")


def packer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1", **(env or {})}
    return subprocess.run(["packer", *args], capture_output=True, text=True, env=full,
                          timeout=120, check=False, cwd=REPO)


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `lockgate` that appends its argv (as JSON) to a log."""
    log = tmp_path / "argv.log"
    script = tmp_path / "lockgate"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    script.chmod(0o755)
    return script, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_validates_with_debian_packer(template: str) -> None:
    path = PACKER / f"{template}.pkr.hcl"
    assert "required_plugins {" not in path.read_text()  # 1.6.6 refuses the block
    done = packer("validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    fmt = packer("fmt", "-check", str(path))
    assert fmt.returncode == 0, f"packer fmt would change {path.name}"


def test_aws_template_builds_then_publishes_with_every_variable(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, log = recorder
    done = packer("build", "-var", f"lockgate={script}", "-var", "version=1.2.3",
                  "-var", "formats=raw,vmdk", "-var", f"out={tmp_path}/out",
                  "-var", f"cache_dir={tmp_path}/cache", "-var", "region=eu-west-1",
                  "-var", "via_s3=true", "-var", "bucket=imgs",
                  "-var", "copy_to_regions=us-east-1,us-west-2",
                  "-var", "share_with=111122223333,444455556666", "-var", "public=true",
                  "-var", "dry_run=true", str(PACKER / "aws.pkr.hcl"))
    assert done.returncode == 0, done.stdout + done.stderr
    build, publish = calls(log)
    assert build == ["image", "build", "--formats", "raw,vmdk", "--out", f"{tmp_path}/out",
                     "--cache-dir", f"{tmp_path}/cache", "--version", "1.2.3"]
    assert publish == ["image", "publish", "aws", "--manifest", f"{tmp_path}/out/manifest.json",
                       "--dry-run", "--region", "eu-west-1", "--via-s3", "--bucket", "imgs",
                       "--copy-to-regions", "us-east-1,us-west-2",
                       "--share-with", "111122223333", "--share-with", "444455556666", "--public"]


def test_defaults_leave_lockgate_defaults_and_a_manifest_skips_the_build(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, log = recorder
    for template in ("gce", "azure"):
        done = packer("build", "-var", f"lockgate={script}", "-var", "manifest=/b/manifest.json",
                      str(PACKER / f"{template}.pkr.hcl"))
        assert done.returncode == 0, done.stdout + done.stderr
    assert calls(log) == [["image", "publish", "gce", "--manifest", "/b/manifest.json",
                           "--family", "lockgate"],
                          ["image", "publish", "azure", "--manifest", "/b/manifest.json"]]


def test_gce_and_azure_variables_become_their_flags(tmp_path: Path,
                                                    recorder: tuple[Path, Path]) -> None:
    script, log = recorder
    gce = packer("build", "-var", f"lockgate={script}", "-var", f"out={tmp_path}",
                 "-var", "project=p1", "-var", "bucket=b1", "-var", "family=lg", "-var", "name=img1",
                 str(PACKER / "gce.pkr.hcl"))
    azure = packer("build", "-var", f"lockgate={script}", "-var", f"out={tmp_path}",
                   "-var", "subscription=s1", "-var", "resource_group=rg", "-var", "location=westeurope",
                   "-var", "storage_account=sa", "-var", "gallery=g", "-var", "gallery_image=gi",
                   str(PACKER / "azure.pkr.hcl"))
    assert gce.returncode == 0 and azure.returncode == 0, gce.stdout + azure.stdout
    runs = calls(log)
    assert runs[0][:4] == ["image", "build", "--formats", "gce"]
    assert runs[1] == ["image", "publish", "gce", "--manifest", f"{tmp_path}/manifest.json",
                       "--name", "img1", "--project", "p1", "--bucket", "b1", "--family", "lg"]
    assert runs[2][:4] == ["image", "build", "--formats", "vhd"]
    assert runs[3] == ["image", "publish", "azure", "--manifest", f"{tmp_path}/manifest.json",
                       "--subscription", "s1", "--resource-group", "rg", "--location", "westeurope",
                       "--storage-account", "sa", "--gallery", "g", "--gallery-image", "gi"]


def test_firmware_variable_builds_from_a_profile_with_that_firmware(
        tmp_path: Path, recorder: tuple[Path, Path]) -> None:
    script, log = recorder
    done = packer("build", "-var", f"lockgate={script}", "-var", f"out={tmp_path}/out",
                  "-var", "firmware=uefi", str(PACKER / "local.pkr.hcl"))
    assert done.returncode == 0, done.stdout + done.stderr
    [build] = calls(log)
    variant = Path(build[build.index("--profile") + 1])
    assert variant == tmp_path / "out/packer-profile-uefi.yaml"
    profile = load_profile(variant)
    assert str(profile.firmware) == "uefi"
    assert profile.lockgate.source == REPO
    default = load_profile(REPO / "image/profiles/appliance.yaml")
    assert profile.packages == default.packages
