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
    steps: list[tuple[str, pipeline.Step]] = [
        ("build_rootfs", _noop), ("install_lockgate", _noop), ("make_disk", _noop)]
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


TCG = "TCG (software emulation)"


def test_boot_is_reported_as_the_median_of_per_round_differences_to_the_bare_boot() -> None:
    rounds = [image.BootRound("bare", bare_s=11.5, bare_accel=TCG, ready_s=30.0,
                              first_200_s=31.25, accel=TCG),
              # A slow round for both (a busy machine): the paired difference stays sane.
              image.BootRound("lockgate", bare_s=20.0, bare_accel=TCG, ready_s=36.0,
                              first_200_s=37.0, accel=TCG)]
    result = image.ImageResult(Path("build"), boots=rounds)
    data = image.summary(result)["image"]
    assert data["bare_boot_s"] == pytest.approx(15.8)  # median of 11.5 and 20.0
    assert data["boot_first_200_s"] == pytest.approx(34.1)
    # Median of the per-round differences 19.75 and 17.0.
    assert data["boot_first_200_over_bare_s"] == pytest.approx(18.4)
    assert data["boot_ready_over_bare_s"] == pytest.approx(17.2)
    assert [r["first"] for r in data["boot_rounds"]] == ["bare", "lockgate"]
    assert data["boot_accel"] == TCG
    text = "\n".join(image.tables(result))
    assert "+19.8" in text and "+17.0" in text and "+18.4" in text


def test_paired_differences_are_not_the_difference_of_medians() -> None:
    rounds = [image.BootRound(bare_s=b, first_200_s=t) for b, t in
              ((10.0, 40.0), (30.0, 45.0), (20.0, 20.0))]
    result = image.ImageResult(Path("build"), boots=rounds)
    assert result.median_over_bare("first_200_s") == 15.0  # diffs 30, 15, 0
    assert image.difference(result.median_of("first_200_s"), result.median_of("bare_s")) == 20.0


def test_no_difference_without_a_bare_boot_or_across_accelerators() -> None:
    assert image.difference(30.0, None) is None
    assert image.difference(None, 10.0) is None
    mixed = image.BootRound(bare_s=10.0, bare_accel="KVM", first_200_s=30.0, accel=TCG)
    assert mixed.over_bare(mixed.first_200_s) is None
    # One round without a bare figure makes the whole median unknown, not the other round's.
    result = image.ImageResult(Path("build"), boots=[
        image.BootRound(bare_s=10.0, first_200_s=30.0),
        image.BootRound(bare_s=None, first_200_s=31.0, bare_note="bare boot failed: quiet")])
    data = image.summary(result)["image"]
    assert data["boot_first_200_over_bare_s"] is None
    assert "round 2: bare boot failed: quiet" in data["notes"]


def test_cold_build_is_off_by_default_and_the_table_says_how_to_turn_it_on() -> None:
    result = image.ImageResult(Path("build"))
    text = "\n".join(image.tables(result))
    assert "--image-cold" in text
    data = image.summary(result)["image"]
    assert data["cold_build_s"] is None and "--image-cold" in data["cold_build_note"]


def test_bare_boot_masks_both_lockgate_units() -> None:
    assert image.BARE_CMDLINE.split() == ["systemd.mask=lockgate-firstboot.service",
                                         "systemd.mask=lockgate.service"]
