"""The image bench against stock Debian: per-round differences, the per-step table, and
the milestones read from the demo's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.benchmarks import image

TCG = "TCG (software emulation)"
DEMO_OUTPUT = """==> booting build (bios, emulated EC2) - accelerator: TCG (software emulation): x
    [   0.2 s] firmware
    [   0.3 s] GRUB
    [   4.6 s] Linux kernel
    [  11.0 s] systemd
    [  25.5 s] first boot done
    [  31.0 s] runtime serving
==> appliance ready in 31.4 s (first boot: configured)
  VM start -> ready 31.4 s, -> first proxied 200 33.0 s
"""


def test_milestones_come_from_the_demo_lines() -> None:
    assert image.parse_milestones(DEMO_OUTPUT) == {
        "firmware": 0.2, "GRUB": 0.3, "Linux kernel": 4.6, "systemd": 11.0,
        "first boot done": 25.5, "runtime serving": 31.0}


def _round(stock: float, ready: float, first: str = "stock") -> image.BootRound:
    return image.BootRound(first, bare_s=stock + 2, bare_accel=TCG, ready_s=ready,
                           first_200_s=ready + 1.5, accel=TCG, stock_s=stock, stock_accel=TCG,
                           steps={"Linux kernel": 4.5, "systemd": 10.0, image.READY: ready},
                           stock_steps={"Linux kernel": 4.4, "systemd": 9.0,
                                        image.LOGIN: stock})


def test_ready_over_stock_is_the_median_of_paired_differences() -> None:
    result = image.ImageResult(Path("build"), boots=[
        _round(15.0, 19.0), _round(25.0, 26.0, "lockgate"), _round(20.0, 30.0, "bare")])
    data = image.summary(result)["image"]
    assert data["stock_boot_s"] == pytest.approx(20.0)
    assert data["boot_ready_over_stock_s"] == pytest.approx(4.0)  # diffs 4, 1, 10
    assert data["boot_first_200_over_stock_s"] == pytest.approx(5.5)
    assert data["boot_steps_s"]["stock"] == {"Linux kernel": 4.4, "systemd": 9.0,
                                             image.LOGIN: 20.0}
    assert data["boot_steps_s"]["lockgate"][image.READY] == pytest.approx(26.0)
    assert [r["stock_s"] for r in data["boot_rounds"]] == [15.0, 25.0, 20.0]
    text = "\n".join(image.tables(result))
    assert "ready over stock s" in text and "+4.0" in text
    # The per-step table: the kernel starts 0.1 s later than stock's, systemd 1.0 s.
    step_lines = text.split("Boot per step", 1)[1]
    assert "+0.1" in step_lines and "+1.0" in step_lines
    assert image.READY in step_lines


def test_no_stock_figure_means_no_difference_and_a_note() -> None:
    missing = image.BootRound(ready_s=30.0, accel=TCG, stock_note="stock boot failed: quiet")
    result = image.ImageResult(Path("build"), boots=[_round(15.0, 19.0), missing])
    data = image.summary(result)["image"]
    assert data["boot_ready_over_stock_s"] is None
    assert "round 2: stock boot failed: quiet" in data["notes"]
    across = image.BootRound(ready_s=30.0, accel=TCG, stock_s=10.0, stock_accel="KVM")
    assert across.over_stock(across.ready_s) is None


def test_rounds_take_turns_going_first() -> None:
    assert [image.round_order(i) for i in range(4)] == [
        ("stock", "lockgate", "bare"), ("lockgate", "bare", "stock"),
        ("bare", "stock", "lockgate"), ("stock", "lockgate", "bare")]
