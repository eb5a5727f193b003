"""``lockgate image boot`` input errors (no QEMU started) and user-data sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lockgate.errors import BadInput
from lockgate.image.boot.cli import boot, read_user_data
from lockgate.image.boot.overlay import resolve_image
from lockgate.image.boot.vm import parse_forward


def test_parse_forward() -> None:
    assert parse_forward("8080:80") == (8080, 80)
    assert parse_forward(":443") == (0, 443)
    assert parse_forward("9000") == (0, 9000)
    for bad in ("a:b", "1:70000", "5:0"):
        with pytest.raises(BadInput, match="--forward"):
            parse_forward(bad)


def test_user_data_text_file_and_missing_file(tmp_path: Path) -> None:
    assert read_user_data(None) is None
    assert read_user_data("password=x") == b"password=x"
    f = tmp_path / "ud"
    f.write_bytes(b"\x1f\x8b gzip bytes")
    assert read_user_data(f"@{f}") == b"\x1f\x8b gzip bytes"
    with pytest.raises(BadInput, match="cannot read"):
        read_user_data(f"@{tmp_path / 'absent'}")


def test_resolve_image_prefers_the_manifest_raw_artifact(tmp_path: Path) -> None:
    (tmp_path / "lockgate-1.raw").write_bytes(b"")
    (tmp_path / "other.raw").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(
        '{"artifacts": [{"format": "vhd", "path": "x.vhd"}, {"format": "raw", "path": "lockgate-1.raw"}]}')
    assert resolve_image(tmp_path) == tmp_path / "lockgate-1.raw"
    with pytest.raises(BadInput, match="run `lockgate image build`"):
        resolve_image(tmp_path / "nothing-here")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match="no raw disk image"):
        resolve_image(empty)


def test_cli_reports_bad_input_with_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(boot, [str(tmp_path / "missing.raw"), "--accel", "tcg"])
    assert result.exit_code == 2
    assert "no such image" in result.output
    result = runner.invoke(boot, [str(tmp_path), "--forward", "x:y"])
    assert result.exit_code == 2 and "--forward x:y" in result.output
    result = runner.invoke(boot, [str(tmp_path), "--cloud", "openstack"])
    assert result.exit_code == 2


def test_ssh_key_file_must_be_one_public_key(tmp_path: Path) -> None:
    from lockgate.image.boot.cli import read_ssh_key

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJvb3RjbGlrZXlib290Y2xpa2V5Ym9vdGNsaWtleQ me@h"
    pub = tmp_path / "id.pub"
    pub.write_text(key + "\n")
    assert read_ssh_key(pub) == key
    assert read_ssh_key(None) is None
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
                       "-----END OPENSSH PRIVATE KEY-----\n")
    for bad in (private, tmp_path / "absent.pub"):
        with pytest.raises(BadInput, match="--ssh-key"):
            read_ssh_key(bad)
    runner = CliRunner()
    result = runner.invoke(boot, [str(tmp_path), "--ssh-key", str(private)])
    assert result.exit_code == 2 and "one OpenSSH public key" in result.output
