"""``lockgate image publish aws|gce|azure``.

Every subcommand reads the manifest (``--manifest``, default build/manifest.json)
and hands it, ``dry_run`` and its own options as keyword arguments to
``lockgate.image.publish.<cloud>.publish``, imported inside the command so the
cloud SDKs load only when a publish runs. Credentials come from each SDK's own
settings (environment, profiles, instance identity), never from a flag.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lockgate.errors import Failure
from lockgate.image.publish.common import DEFAULT_MANIFEST, load_manifest

SDK_TOPS = {"boto3", "botocore", "s3transfer", "google", "azure"}


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--dry-run", is_flag=True,
                           help="Print every API call it would make, with its key arguments, "
                                "and make none.")(command)
    command = click.option("--manifest", "manifest_path", type=click.Path(path_type=Path),
                           default=DEFAULT_MANIFEST, show_default=True,
                           help="The build's manifest.json (artifacts are found beside it).")(command)
    return command


def _run(cloud: str, manifest_path: Path, dry_run: bool, **options: Any) -> None:
    manifest = load_manifest(manifest_path)
    module = importlib.import_module(f"lockgate.image.publish.{cloud}")
    try:
        module.publish(manifest, dry_run=dry_run, **options)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SDK_TOPS:
            raise
        raise Failure(f"{exc.name} is not installed: the cloud SDKs come with "
                      "`pip install 'lockgate[publish]'`") from None


def _regions(value: str | None) -> list[str]:
    return [r.strip() for r in (value or "").split(",") if r.strip()]


@click.group("publish")
def publish() -> None:
    """Publish a built image to AWS, GCE or Azure as a launchable image."""


@publish.command("aws")
@_common
@click.option("--region", default=None,
              help="Region to publish in (default: boto3's, e.g. AWS_REGION or the profile's).")
@click.option("--name", default=None,
              help="AMI name (default: <name>-<version>-<first 12 hex of the manifest's sha256>).")
@click.option("--via-s3", is_flag=True,
              help="Upload the VMDK to S3 and import_snapshot it instead of the EBS direct APIs.")
@click.option("--bucket", default=None, help="S3 bucket for --via-s3 (it must exist).")
@click.option("--copy-to-regions", default=None, metavar="R1,R2",
              help="Also copy the AMI to these regions.")
@click.option("--share-with", "share_with", multiple=True, metavar="ACCOUNT",
              help="Grant this AWS account id launch permission (repeatable).")
@click.option("--public", is_flag=True, help="Make the AMI public (launch permission group all).")
@click.option("--workers", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Parallel block uploads.")
def aws(manifest_path: Path, dry_run: bool, region: str | None, name: str | None, via_s3: bool,
        bucket: str | None, copy_to_regions: str | None, share_with: tuple[str, ...],
        public: bool, workers: int) -> None:
    """Register an AMI: the raw disk straight into an EBS snapshot (or --via-s3)."""
    if via_s3 and not bucket:
        raise click.BadParameter("--via-s3 needs --bucket", param_hint="--bucket")
    for account in share_with:
        if not (account.isdigit() and len(account) == 12):
            raise click.BadParameter(f"{account!r}: an AWS account id is 12 digits",
                                     param_hint="--share-with")
    _run("aws", manifest_path, dry_run, region=region, name=name, via_s3=via_s3, bucket=bucket,
         copy_to_regions=_regions(copy_to_regions), share_with=list(share_with), public=public,
         workers=workers)


@publish.command("gce")
@_common
@click.option("--project", default=lambda: os.environ.get("GOOGLE_CLOUD_PROJECT")
              or os.environ.get("CLOUDSDK_CORE_PROJECT"),
              help="GCP project (default: GOOGLE_CLOUD_PROJECT or CLOUDSDK_CORE_PROJECT).")
@click.option("--bucket", default=None, help="GCS bucket the image tarball is uploaded to.")
@click.option("--name", default=None,
              help="Image name (default: <name>-<version>-<first 12 hex of the manifest's sha256>).")
@click.option("--family", default="lockgate", show_default=True, help="Image family.")
@click.option("--compute-endpoint", default=None,
              help="Compute API endpoint (default: Google's; for tests and private endpoints).")
@click.option("--storage-endpoint", default=None,
              help="Cloud Storage endpoint (default: Google's or STORAGE_EMULATOR_HOST).")
@click.option("--sev-capable", is_flag=True,
              help="Claim the SEV_CAPABLE guest OS feature (UEFI images only).")
def gce(manifest_path: Path, dry_run: bool, **options: Any) -> None:
    """Create a GCE image from the oldgnu tar.gz uploaded to a bucket."""
    _run("gce", manifest_path, dry_run, **options)


@publish.command("azure")
@_common
@click.option("--subscription", default=lambda: os.environ.get("AZURE_SUBSCRIPTION_ID"),
              help="Subscription id (default: AZURE_SUBSCRIPTION_ID).")
@click.option("--resource-group", default=None, help="Resource group of the image.")
@click.option("--location", default=None, help="Azure region, e.g. westeurope.")
@click.option("--storage-account", default=None, help="Storage account the VHD is uploaded to.")
@click.option("--container", default="images", show_default=True, help="Blob container.")
@click.option("--name", default=None,
              help="Image name (default: <name>-<version>-<first 12 hex of the manifest's sha256>).")
@click.option("--gallery", default=None,
              help="Azure Compute Gallery: publish an image version there instead of a managed image.")
@click.option("--gallery-image", default=None, help="Image definition in --gallery.")
@click.option("--arm-endpoint", default=None,
              help="Resource Manager endpoint (default: Azure's; for tests and sovereign clouds).")
@click.option("--blob-endpoint", default=None,
              help="Blob endpoint URL (default: https://<storage-account>.blob.core.windows.net).")
@click.option("--workers", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Parallel page uploads.")
def azure(manifest_path: Path, dry_run: bool, **options: Any) -> None:
    """Create an Azure managed image (or gallery image version) from the fixed VHD."""
    _run("azure", manifest_path, dry_run, **options)
