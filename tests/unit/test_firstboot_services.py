"""NTP server and SSH intrusion prevention: the files the image's services follow."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lockgate.firstboot.apply import services
from lockgate.image.build.configure import configure_services
from lockgate.image.build.context import Context
from lockgate.image.build.profile import load_profile
from lockgate.image.build.templates import render

REPO = Path(__file__).resolve().parents[2]


def test_ntp_server_drop_in(tmp_path: Path) -> None:
    path = services.set_ntp_server(tmp_path, "ntp.example.net")
    assert path == tmp_path / "var/lib/lockgate/os/timesyncd.conf"
    assert path.read_text().splitlines()[1:] == ["[Time]", "NTP=ntp.example.net"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # read by the systemd-timesync user
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    services.set_ntp_server(tmp_path, None)  # back to Debian's pool
    assert "NTP=" not in path.read_text()
    with pytest.raises(ValueError, match="host name or an IP address"):
        services.timesyncd_text("bad server\nNTP=evil")


def test_ssh_intrusion_prevention_marker(tmp_path: Path) -> None:
    marker = tmp_path / "var/lib/lockgate/config/no-ssh-intrusion-prevention"
    services.set_ssh_intrusion_prevention(tmp_path, False)
    assert marker.is_file()
    services.set_ssh_intrusion_prevention(tmp_path, True)
    assert not marker.exists()


def test_image_points_the_services_at_the_data_partition(tmp_path: Path) -> None:
    context = Context(load_profile(REPO / "image/profiles/appliance.yaml"), "9.9.9", 0, ("raw",),
                      tmp_path / "out", tmp_path / "cache")
    root = context.rootfs
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/sshguard").write_text("")
    configure_services(context)
    link = root / "etc/systemd/timesyncd.conf.d/lockgate.conf"
    assert os.readlink(link) == "/var/lib/lockgate/os/timesyncd.conf"
    drop_in = (root / "etc/systemd/system/sshguard.service.d/lockgate.conf").read_text()
    assert "ConditionPathExists=!/var/lib/lockgate/config/no-ssh-intrusion-prevention" in drop_in
    assert {"sshguard", "nftables", "systemd-timesyncd"} <= set(context.profile.packages)
    assert "RequiresMountsFor=/var/lib/lockgate" in drop_in.splitlines()
    assert "ConditionPathExists=!/m" in render("sshguard-lockgate.conf.j2", marker="/m",
                                                state_dir="/s").splitlines()


def test_the_wizards_recorded_choices_are_applied_every_boot(tmp_path: Path) -> None:
    config = tmp_path / "var/lib/lockgate/config"
    config.mkdir(parents=True)
    (config / "time.json").write_text('{"ntp_server": "time.example.org"}')
    (config / "security.json").write_text('{"ssh_intrusion_prevention": false}')
    assert services.apply_recorded(tmp_path) == []
    drop_in = tmp_path / "var/lib/lockgate/os/timesyncd.conf"
    assert "NTP=time.example.org" in drop_in.read_text()
    assert (config / "no-ssh-intrusion-prevention").is_file()
    (config / "time.json").write_text('{"ntp_server": null}')
    (config / "security.json").write_text("{broken")
    problems = services.apply_recorded(tmp_path)
    assert "NTP=" not in drop_in.read_text()
    assert len(problems) == 1 and "security.json: unreadable" in problems[0]
    assert services.apply_recorded(tmp_path / "nothing-recorded") == []
