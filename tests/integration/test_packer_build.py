"""`packer build` of the templates for real: AWS against moto, local with a real image build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import emulators
import pytest
from test_publish_aws import make_build

REPO = Path(__file__).resolve().parents[2]
LOCKGATE = str(Path(sys.executable).with_name("lockgate"))
CACHE = Path(os.environ.get("LOCKGATE_IMAGE_CACHE", REPO / "cache"))

pytestmark = pytest.mark.skipif(shutil.which("packer") is None,
                                reason="packer not installed (scripts/apt-packages.txt)")


def packer_build(template: str, *variables: str, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    args = ["packer", "build", "-color=false"]
    for variable in variables:
        args += ["-var", variable]
    full = {**os.environ, "CHECKPOINT_DISABLE": "1", **(env or {})}
    return subprocess.run([*args, str(REPO / "packer" / f"{template}.pkr.hcl")],
                          capture_output=True, text=True, env=full, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with emulators.moto_server() as url:
        yield url


def test_aws_template_publishes_a_build_to_moto(tmp_path: Path, moto: str) -> None:
    build = make_build(tmp_path, version="4.0.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(emulators.AWS_TEST_ENV, AWS_ENDPOINT_URL=moto)
    done = packer_build("aws", f"lockgate={LOCKGATE}", f"manifest={build['manifest']}",
                        "region=us-east-1", "share_with=111122223333", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ami = next(line.split()[-1] for line in done.stdout.splitlines() if "us-east-1 ami-" in line)
    ec2 = boto3.client("ec2", endpoint_url=moto, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    [image] = ec2.describe_images(ImageIds=[ami])["Images"]
    assert {"Key": "lockgate:version", "Value": "4.0.0"} in image["Tags"]
    permissions = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    assert permissions["LaunchPermissions"] == [{"UserId": "111122223333"}]


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(2400)  # two builds; cold (no cache/ yet) each takes minutes
def test_local_template_builds_what_lockgate_image_build_builds(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """packer build packer/local.pkr.hcl and `lockgate image build` with the same inputs
    (a frozen copy of the checkout, the warm cache) give the same manifest: same files,
    same sha256s."""
    snapshot = tmp_path_factory.mktemp("checkout") / "lockgate"
    skip = {".git", ".venv", "build", "cache", "__pycache__", ".mypy_cache", ".pytest_cache",
            ".ruff_cache", "node_modules"}
    shutil.copytree(REPO, snapshot, ignore=lambda _d, names: {n for n in names if n in skip})
    profile = snapshot / "image/profiles/appliance.yaml"
    out = tmp_path_factory.mktemp("packer-out")
    env = {"SOURCE_DATE_EPOCH": "1750000000"}
    done = packer_build("local", f"lockgate={LOCKGATE}", "version=0.0.1-packer",
                        f"profile={profile}", f"out={out}", f"cache_dir={CACHE}", env=env,
                        timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    direct = tmp_path_factory.mktemp("direct-out")
    built = subprocess.run([LOCKGATE, "image", "build", "--version", "0.0.1-packer",
                            "--profile", str(profile), "--out", str(direct),
                            "--cache-dir", str(CACHE)],
                           capture_output=True, text=True, timeout=1200, check=False,
                           env={**os.environ, **env})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    by_packer = json.loads((out / "manifest.json").read_text())
    by_lockgate = json.loads((direct / "manifest.json").read_text())
    assert by_packer["artifacts"] == by_lockgate["artifacts"]
    assert by_packer == by_lockgate
