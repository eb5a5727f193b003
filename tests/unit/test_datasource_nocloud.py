"""NoCloud from a seed directory and from a real CIDATA FAT image (mtools, no mount)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.firstboot.datasources.base import DatasourceError
from lockgate.firstboot.datasources.nocloud import NoCloudSource, parse_meta_data
from lockgate.image.cloudemu import make_cidata_image
from lockgate.proc import which

pytestmark = pytest.mark.timeout(30)

USER_DATA = b"password=Secret123 accept_license=y timezone=Europe/London"
needs_mtools = pytest.mark.skipif(not (which("mcopy") and which("mkfs.vfat")),
                                  reason="mtools and dosfstools are needed")


def test_seed_directory(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_bytes(USER_DATA)
    (seed / "meta-data").write_text("instance-id: iid-local01\nlocal-hostname: lg1\n")
    src = NoCloudSource([tmp_path / "absent", seed], dev_root=tmp_path / "dev")
    assert src.detect()
    data = src.fetch()
    assert (data.platform, data.instance_id, data.user_data) == ("nocloud", "iid-local01",
                                                                 USER_DATA)
    assert data.metadata == {"seed": str(seed), "local-hostname": "lg1"}


def test_seed_without_meta_data_uses_the_default_instance_id(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(b"")
    data = NoCloudSource([tmp_path], dev_root=tmp_path / "dev").fetch()
    assert data.instance_id == "iid-dsnocloud"
    assert data.user_data is None


def test_nothing_there_is_not_detected(tmp_path: Path) -> None:
    src = NoCloudSource([tmp_path / "seed"], dev_root=tmp_path / "dev")
    assert not src.detect()
    with pytest.raises(DatasourceError, match="no NoCloud seed"):
        src.fetch()


@needs_mtools
def test_cidata_image_found_by_label_and_read_without_mounting(tmp_path: Path) -> None:
    image = make_cidata_image(tmp_path / "seed.img", USER_DATA,
                              "instance-id: iid-fat-42\nlocal-hostname: from-fat\n")
    assert image.read_bytes()[0x2B:0x36] == b"CIDATA     "  # FAT16/12 volume label field
    by_label = tmp_path / "dev/disk/by-label"
    by_label.mkdir(parents=True)
    (by_label / "CIDATA").symlink_to(image)
    src = NoCloudSource([tmp_path / "no-seed"], dev_root=tmp_path / "dev")
    assert src.detect()
    data = src.fetch(timeout=10)
    assert data.instance_id == "iid-fat-42"
    assert data.user_data == USER_DATA
    assert data.metadata["local-hostname"] == "from-fat"
    assert data.metadata["seed"].endswith("by-label/CIDATA")


@needs_mtools
def test_cidata_image_with_binary_user_data_and_default_meta_data(tmp_path: Path) -> None:
    import gzip

    blob = gzip.compress(USER_DATA * 200)
    image = make_cidata_image(tmp_path / "seed.img", blob)
    data = NoCloudSource([], device=image).fetch(timeout=10)
    assert data.user_data == blob
    assert data.instance_id == "iid-lockgate-local"


def test_a_volume_that_is_not_fat_is_a_clear_error(tmp_path: Path) -> None:
    if not which("mdir"):
        pytest.skip("mtools needed")
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(DatasourceError, match="cannot read the CIDATA volume"):
        NoCloudSource([], device=junk).fetch(timeout=10)


def test_meta_data_parser() -> None:
    assert parse_meta_data("instance-id: iid-1\n# c\nlocal-hostname: 'h'\n") == {
        "instance-id": "iid-1", "local-hostname": "h"}
    assert parse_meta_data('{"instance-id": "iid-json"}') == {"instance-id": "iid-json"}
    nested = "instance-id: iid-2\npublic-keys:\n  - ssh-ed25519 AAAA\n"
    assert parse_meta_data(nested) == {"instance-id": "iid-2"}
    with pytest.raises(DatasourceError, match="not valid YAML"):
        parse_meta_data("instance-id: [unclosed\n  x: {")


def test_meta_data_quoted_values_keep_a_hash_after_a_space() -> None:
    # A real YAML parser: " #" inside quotes is part of the value, outside it a comment.
    text = ("instance-id: 'iid #7'\nlocal-hostname: \"web #2\"  # trailing comment\n"
            "owner: plain # comment\n")
    assert parse_meta_data(text) == {"instance-id": "iid #7", "local-hostname": "web #2",
                                     "owner": "plain"}


def test_meta_data_scalars_are_text_and_empty_values_dropped() -> None:
    assert parse_meta_data("instance-id: iid-3\nlocal-hostname:\nn: 5\n") == {
        "instance-id": "iid-3", "n": "5"}
    assert parse_meta_data("") == {}
    with pytest.raises(DatasourceError, match="not a YAML mapping"):
        parse_meta_data("- a\n- b\n")


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5vY2xvdWRrZXlub2Nsb3Vka2V5bm9jbG91ZGtleQ nc@x"


@pytest.mark.parametrize("keys", [
    f"public-keys:\n  - {KEY}\n",
    f"public-keys: '{KEY}'\n",
    f"public-keys:\n  mine: {KEY}\n",
    f"public_keys:\n  - {KEY}\n  - {KEY}\n",
])
def test_public_keys_in_meta_data(tmp_path: Path, keys: str) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    (tmp_path / "meta-data").write_text(f"instance-id: iid-k\nlocal-hostname: nc-1\n{keys}")
    data = NoCloudSource([tmp_path], dev_root=tmp_path / "dev").fetch()
    assert data.public_keys == (KEY,)
    assert data.metadata["local-hostname"] == "nc-1"
