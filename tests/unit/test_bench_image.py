"""The image bench's pure logic: build-times.json (as the real pipeline writes it) and
the boot-minus-bare-boot arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from lockgate.benchmarks import image
from lockgate.errors import Failure
from lockgate.image.build import pipeline
from lockgate.image.build.context import Context
from lockgate.image.build.profile import load_profile

REPO = Path(__file__).resolve().parents[2]


def _context(tmp_path: Path) -> Context:
    return Context(load_profile(REPO / "image/profiles/appliance.yaml"), "9.9.9", 0, ("raw",),
                   tmp_path / "out", tmp_path / "cache")


def _noop(context: Context, state: pipeline.State) -> None:
    pass


def test_pipeline_writes_times_the_bench_reads_with_cache_hits(tmp_path: Path) -> None:
    context = _context(tmp_path)
    # The package layer is "cached" (its tarball exists); the wheels are not.
    tarball = pipeline.rootfs.rootfs_tarball(context)
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"")
    steps = [("build_rootfs", _noop), ("install_lockgate", _noop), ("make_disk", _noop)]
    pipeline.run_pipeline(context, steps)
    times = image.load_build_times(context.out_dir)
    assert [s.name for s in times.steps] == ["build_rootfs", "install_lockgate", "make_disk"]
    assert times.cached() == {"build_rootfs": True, "install_lockgate": False}
    assert times.complete and not times.cold
    assert all(s.seconds >= 0 for s in times.steps)
    # Kept out of the manifest path: nothing else was written beside it.
    assert sorted(p.name for p in context.out_dir.iterdir()) == ["build-times.json", "work"]


def test_empty_cache_is_cold_and_a_failed_step_still_leaves_its_times(tmp_path: Path) -> None:
    context = _context(tmp_path)

    def broken(context: Context, state: pipeline.State) -> None:
        raise click.ClickException("mmdebstrap failed")

    with pytest.raises(click.ClickException):
        pipeline.run_pipeline(context, [("build_rootfs", _noop), ("install_lockgate", broken)])
    data = json.loads((context.out_dir / "build-times.json").read_text())
    times = image.parse_build_times(data)
    assert not times.complete
    assert times.cold  # the one cacheable step that finished ran without its cache
    assert times.steps_s().keys() == {"build_rootfs"}


def test_a_new_build_removes_the_previous_builds_times_first(tmp_path: Path) -> None:
    context = _context(tmp_path)
    pipeline.run_pipeline(context, [("make_disk", _noop)])

    def check(context: Context, state: pipeline.State) -> None:
        assert not (context.out_dir / "build-times.json").exists()

    pipeline.run_pipeline(context, [("check", check)])
    assert image.load_build_times(context.out_dir).steps_s().keys() == {"check"}


@pytest.mark.parametrize(("data", "message"), [
    ([], "not a lockgate-build-times/1 record"),
    ({"format": "other"}, "not a lockgate-build-times/1 record"),
    ({"format": image.TIMES_FORMAT, "total_s": 1}, "steps: expected a list"),
    ({"format": image.TIMES_FORMAT, "total_s": 1, "steps": [{"name": "x", "seconds": -1}]},
     r"steps\[0\].seconds"),
    ({"format": image.TIMES_FORMAT, "total_s": 1, "steps": [{"name": "x", "seconds": True}]},
     r"steps\[0\].seconds"),
    ({"format": image.TIMES_FORMAT, "total_s": 1,
      "steps": [{"name": "x", "seconds": 1, "cached": "yes"}]}, r"steps\[0\].cached"),
    ({"format": image.TIMES_FORMAT, "steps": []}, "total_s"),
])
def test_bad_times_records_are_refused(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image.parse_build_times(data)


def test_missing_or_broken_times_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="not recorded"):
        image.load_build_times(tmp_path)
    (tmp_path / "build-times.json").write_text("{")
    with pytest.raises(Failure, match="unreadable"):
        image.load_build_times(tmp_path)


def test_boot_is_reported_as_the_difference_to_the_bare_boot() -> None:
    result = image.ImageResult(Path("build"), bare_s=11.5, boot_ready_s=30.0,
                               boot_first_200_s=31.25, bare_accel="TCG (software emulation)",
                               boot_accel="TCG (software emulation)")
    data = image.summary(result)["image"]
    assert data["bare_boot_s"] == 11.5
    assert data["boot_first_200_over_bare_s"] == pytest.approx(19.8)  # 19.75 rounded
    assert data["boot_ready_over_bare_s"] == 18.5
    assert "+19.8" in "\n".join(image.tables(result))


def test_no_difference_without_a_bare_boot_or_across_accelerators() -> None:
    assert image.difference(30.0, None) is None
    assert image.difference(None, 10.0) is None
    mixed = image.ImageResult(Path("build"), bare_s=10.0, boot_first_200_s=30.0,
                              bare_accel="KVM", boot_accel="TCG (software emulation)")
    assert image.summary(mixed)["image"]["boot_first_200_over_bare_s"] is None


def test_cold_build_is_off_by_default_and_the_table_says_how_to_turn_it_on() -> None:
    result = image.ImageResult(Path("build"))
    text = "\n".join(image.tables(result))
    assert "--image-cold" in text
    data = image.summary(result)["image"]
    assert data["cold_build_s"] is None and "--image-cold" in data["cold_build_note"]


def test_bare_boot_masks_both_lockgate_units() -> None:
    assert image.BARE_CMDLINE.split() == ["systemd.mask=lockgate-firstboot.service",
                                         "systemd.mask=lockgate.service"]
