"""detect() from fake sysfs/dev trees, get_source()/discover(), and the file: source."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.firstboot.datasources import discover, get_source
from lockgate.firstboot.datasources.azure import AZURE_ASSET_TAG, AzureSource
from lockgate.firstboot.datasources.base import DatasourceError
from lockgate.firstboot.datasources.ec2 import Ec2Source
from lockgate.firstboot.datasources.file import FileSource
from lockgate.firstboot.datasources.gce import GceSource
from lockgate.firstboot.datasources.nocloud import NoCloudSource


def fake_sysfs(root: Path, **dmi: str) -> Path:
    folder = root / "sys/class/dmi/id"
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in dmi.items():
        (folder / key).write_text(value + "\n")
    return root / "sys"


def detected(sysfs: Path, dev: Path) -> str | None:
    try:
        return discover(sysfs_root=sysfs, dev_root=dev,
                        nocloud={"seed_dirs": [dev.parent / "seed"]}).name
    except DatasourceError:
        return None


@pytest.mark.parametrize(("dmi", "expected"), [
    ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, "ec2"),
    ({"sys_vendor": "Xen", "product_uuid": "EC2A1B2C-0000-1111-2222-333344445555"}, "ec2"),
    ({"bios_vendor": "Amazon EC2"}, "ec2"),
    ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "gce"),
    ({"product_name": "Google Compute Engine"}, "gce"),
    ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine",
      "chassis_asset_tag": AZURE_ASSET_TAG}, "azure"),
    ({"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"}, None),
    ({"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)",
      "product_uuid": "a0b1c2d3-0000-0000-0000-000000000000"}, None),
    ({}, None),
])
def test_detect_from_dmi(tmp_path: Path, dmi: dict[str, str], expected: str | None) -> None:
    assert detected(fake_sysfs(tmp_path, **dmi), tmp_path / "dev") == expected


def test_xen_hypervisor_uuid_means_ec2(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path)
    (sysfs / "hypervisor").mkdir()
    (sysfs / "hypervisor/uuid").write_text("ec2e1916-9099-7caf-fd21-012345abcdef\n")
    assert Ec2Source(sysfs_root=sysfs).detect()


def test_nocloud_wins_over_the_cloud_it_runs_on(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, sys_vendor="Amazon EC2")
    by_label = tmp_path / "dev/disk/by-label"
    by_label.mkdir(parents=True)
    (by_label / "cidata").write_bytes(b"")
    assert detected(sysfs, tmp_path / "dev") == "nocloud"


def test_nothing_detected_says_use_source(tmp_path: Path) -> None:
    with pytest.raises(DatasourceError, match="no cloud platform detected; use --source"):
        discover(sysfs_root=fake_sysfs(tmp_path), dev_root=tmp_path / "dev",
                 nocloud={"seed_dirs": []})


def test_get_source_by_name(tmp_path: Path) -> None:
    assert isinstance(get_source("ec2"), Ec2Source)
    assert isinstance(get_source("gce"), GceSource)
    assert isinstance(get_source("azure"), AzureSource)
    assert isinstance(get_source("nocloud"), NoCloudSource)
    src = get_source("ec2", ec2={"base_url": "http://127.0.0.1:9/"})
    assert isinstance(src, Ec2Source) and src.base_url == "http://127.0.0.1:9"
    default_ec2 = get_source("ec2")
    assert isinstance(default_ec2, Ec2Source)
    assert default_ec2.base_url == "http://169.254.169.254"
    gce = get_source("gce")
    assert isinstance(gce, GceSource)
    assert gce.base_urls == ["http://metadata.google.internal", "http://169.254.169.254"]
    file_src = get_source(f"file:{tmp_path}/ud")
    assert isinstance(file_src, FileSource) and file_src.path == tmp_path / "ud"
    with pytest.raises(ValueError, match="unknown source 'openstack'"):
        get_source("openstack")
    with pytest.raises(ValueError, match="needs a path"):
        get_source("file:")


def test_get_source_auto_discovers(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, product_name="Google Compute Engine")
    src = get_source("auto", sysfs_root=sysfs, dev_root=tmp_path / "dev",
                     nocloud={"seed_dirs": []})
    assert src.name == "gce"


def test_file_source_hashes_path_and_content(tmp_path: Path) -> None:
    path = tmp_path / "ud.txt"
    path.write_bytes(b"password=abc accept_license=y")
    first = FileSource(path).fetch()
    assert first.platform == "file"
    assert first.user_data == b"password=abc accept_license=y"
    assert first.instance_id.startswith("file-") and len(first.instance_id) == 21
    assert FileSource(path).fetch().instance_id == first.instance_id
    path.write_bytes(b"password=changed accept_license=y")
    assert FileSource(path).fetch().instance_id != first.instance_id


def test_file_source_takes_instance_id_from_meta_data_beside_it(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(b"password=abc")
    (tmp_path / "meta-data").write_text("instance-id: iid-beside\n")
    assert FileSource(tmp_path / "user-data").fetch().instance_id == "iid-beside"


def test_file_source_missing_file(tmp_path: Path) -> None:
    src = FileSource(tmp_path / "nope")
    assert not src.detect()
    with pytest.raises(DatasourceError, match="user-data file not found"):
        src.fetch()


def test_datasource_modules_stay_import_light() -> None:
    import subprocess
    import sys

    code = ("import sys, lockgate.firstboot.datasources as d;"
            "[d.get_source(n) for n in ('ec2','gce','azure','nocloud')];"
            "heavy=[m for m in ('yaml','cryptography','requests','click','jinja2')"
            " if m in sys.modules];print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=20).stdout.strip()
    assert out == ""
