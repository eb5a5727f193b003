"""z-expand-logs-partition on real GPT image files (sfdisk, mkfs.ext4, resize2fs; no loop devices)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lockgate.firstboot import expand as ex

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t, path="/usr/sbin:/sbin:/usr/bin:/bin") for t in ("sfdisk", "mkfs.ext4",
                                                                           "resize2fs")),
    reason="needs sfdisk, mkfs.ext4 and resize2fs (fdisk, e2fsprogs)")

MIB = 1024 * 1024
LAYOUT = """label: gpt
label-id: 11111111-2222-3333-4444-555555555555
size=1M, type=21686148-6449-6E6F-744E-656564454649, name=bios
size=8M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=20M, name=root-a
size=20M, name=root-b
size=40M, name=data
"""


def sh(*argv: str | Path, stdin: str | None = None) -> str:
    return subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True,
                          check=True).stdout


def table(disk: Path) -> list[dict[str, object]]:
    parts: list[dict[str, object]] = json.loads(sh("sfdisk", "--json", disk))["partitiontable"]["partitions"]
    return parts


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A 100 MiB GPT image with an ext4 data partition, then grown to 300 MiB."""
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.truncate(100 * MIB)
    sh("sfdisk", "-q", path, stdin=LAYOUT)
    data = table(path)[-1]
    offset = int(str(data["start"])) * 512
    size_k = int(str(data["size"])) * 512 // 1024
    sh("mkfs.ext4", "-q", "-F", "-L", "data", "-E", f"offset={offset}", path, f"{size_k}k")
    with path.open("r+b") as fh:
        fh.truncate(300 * MIB)
    return path


def ext4_magic_at(path: Path, offset: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset + 1024 + 56)
        return fh.read(2)


def test_grows_only_the_data_partition_to_the_end(disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = table(disk)
    assert ex.expand(str(disk), auto=True) == 0
    after = table(disk)
    assert after[:-1] == before[:-1]  # bios, esp and both root slots untouched
    data = after[-1]
    assert data["name"] == "data" and data["uuid"] == before[-1]["uuid"]
    assert data["start"] == before[-1]["start"]
    end_bytes = (int(str(data["start"])) + int(str(data["size"]))) * 512
    assert 299 * MIB - 64 * 1024 <= end_bytes <= 300 * MIB - 33 * 512
    assert end_bytes % MIB == 0  # stays 1 MiB aligned
    assert ext4_magic_at(disk, int(str(data["start"])) * 512) == b"\x53\xef"  # filesystem intact
    sh("sfdisk", "--verify", disk)  # backup GPT moved to the new end, table consistent
    assert "from 40 MiB to 2" in capsys.readouterr().out
    # A second run has nothing left to do.
    assert ex.expand(str(disk), auto=True) == 0
    assert table(disk) == after
    assert "nothing to do" in capsys.readouterr().out


def test_dry_run_changes_nothing(disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = disk.read_bytes()
    assert ex.expand(str(disk), dry_run=True) == 0
    assert disk.read_bytes() == before
    assert "would grow" in capsys.readouterr().out


def test_auto_ignores_a_small_gain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.truncate(100 * MIB)
    sh("sfdisk", "-q", path, stdin=LAYOUT)
    with path.open("r+b") as fh:
        fh.truncate(102 * MIB)  # ~12 MiB free after data: under the 16 MiB minimum
    before = path.read_bytes()
    assert ex.expand(str(path), auto=True) == 0
    assert path.read_bytes() == before
    assert "nothing to do" in capsys.readouterr().out
    # Without --auto the same disk is grown: the threshold is only for the boot unit.
    assert ex.expand(str(path)) == 0
    assert int(str(table(path)[-1]["size"])) > 40 * MIB // 512


def test_refuses_when_data_is_not_last(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.truncate(64 * MIB)
    sh("sfdisk", "-q", path, stdin="label: gpt\nsize=8M, name=data\nsize=8M, name=other\n")
    with pytest.raises(ex.LockgateError, match="not the last one"):
        ex.plan(str(path))


def test_resize2fs_grows_an_ext4_file(tmp_path: Path) -> None:
    fs = tmp_path / "data.ext4"
    sh("mkfs.ext4", "-q", "-F", fs, "32M")
    with fs.open("r+b") as fh:
        fh.truncate(96 * MIB)
    ex.grow_filesystem(str(fs))
    info = sh("dumpe2fs", "-h", fs)
    blocks = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("Block count")))
    block_size = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("Block size")))
    assert blocks * block_size == 96 * MIB


def test_device_for_mount_reads_mountinfo(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 254:3 / / ro,relatime shared:1 - ext4 /dev/vda3 ro\n"
        "30 22 254:5 / /var/lib/lockgate rw,relatime shared:9 - ext4 /dev/vda5 rw\n")
    assert ex.device_for_mount(Path("/var/lib/lockgate"), mountinfo) == "/dev/vda5"
    with pytest.raises(ex.LockgateError, match="nothing is mounted"):
        ex.device_for_mount(Path("/srv"), mountinfo)


def test_command_line_dry_run(disk: Path) -> None:
    proc = subprocess.run(["z-expand-logs-partition", "--auto", "--dry-run", "--disk", str(disk)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{Path(__file__).resolve().parents[2] / '.venv/bin'}:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "would grow" in proc.stdout


def test_refuses_a_disk_without_a_data_partition(tmp_path: Path) -> None:
    """--disk pointed at the wrong disk must not grow whatever partition is last."""
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.truncate(64 * MIB)
    sh("sfdisk", "-q", path, stdin="label: gpt\nsize=8M, name=boot\nsize=8M, name=other\n")
    with path.open("r+b") as fh:
        fh.truncate(128 * MIB)
    before = path.read_bytes()
    with pytest.raises(ex.LockgateError, match="no partition named 'data'"):
        ex.expand(str(path))
    assert path.read_bytes() == before


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        ex.main(argv)
    code = exited.value.code
    return int(code) if code is not None else 0


def test_command_line_dry_run_changes_nothing(disk: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    before = table(disk)
    assert _main(["--disk", str(disk), "--dry-run"]) == 0
    assert table(disk) == before
    assert "would grow" in capsys.readouterr().out
    assert _main(["--disk", str(disk), "--auto"]) == 0
    assert table(disk) != before


def test_command_line_usage_errors_are_one_line_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert _main(["--help"]) == 0
    assert "--dry-run" in capsys.readouterr().out


def test_command_line_a_missing_disk_is_an_error_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["--disk", str(tmp_path / "absent.raw")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
