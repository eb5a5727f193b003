"""The exact QEMU command lines ``lockgate image boot`` runs (no QEMU started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.image.boot import metadata
from lockgate.image.boot.qemu import (
    Accel,
    Firmware,
    Forward,
    GuestFwd,
    VmSpec,
    build_argv,
    choose_accel,
)

HEAD = ["qemu-system-x86_64", "-name", "lockgate", "-machine", "q35,graphics=off"]
COMMON = ["-m", "1024", "-smp", "2", "-nodefaults", "-display", "none", "-vga", "none",
          "-no-user-config"]
TAIL = ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
        "-qmp", "unix:/w/qmp.sock,server=on,wait=off",
        "-device", "i6300esb", "-action", "watchdog=reset"]
FWDS = (Forward(41000, 9070), Forward(41001, 9090))


def test_bios_nocloud(tmp_path: Path) -> None:
    route = metadata.route_for(metadata.Cloud.NOCLOUD, None, Path("/w/cidata.img"))
    spec = VmSpec(disk=Path("/w/overlay.qcow2"), forwards=FWDS, smbios=route.smbios,
                  extra_disks=route.extra_disks, net=route.net, guestfwds=route.guestfwds,
                  qmp_socket=Path("/w/qmp.sock"))
    assert build_argv(spec) == [*HEAD, "-accel", "tcg,thread=multi", *COMMON,
        "-drive", "file=/w/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-drive", "file=/w/cidata.img,if=virtio,format=raw,readonly=on",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:41000-:9070,"
                   "hostfwd=tcp:127.0.0.1:41001-:9090",
        "-device", "virtio-net-pci,netdev=net0,romfile=", "-device", "virtio-rng-pci",
        "-smbios", "type=1,manufacturer=QEMU,product=lockgate local VM",
        *TAIL]


def test_uefi_ec2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "which", lambda name: None)  # the Python bridge, not socat
    route = metadata.route_for(metadata.Cloud.EC2, 35000, None)
    spec = VmSpec(disk=Path("/w/overlay.qcow2"), firmware=Firmware.UEFI,
                  ovmf_vars=Path("/w/OVMF_VARS.fd"), forwards=FWDS, smbios=route.smbios,
                  net=route.net, guestfwds=route.guestfwds, uuid=route.uuid,
                  qmp_socket=Path("/w/qmp.sock"))
    bridge = f"{metadata.sys.executable} -I -S {metadata.BRIDGE} 35000"
    assert build_argv(spec) == [*HEAD, "-accel", "tcg,thread=multi", *COMMON,
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/w/OVMF_VARS.fd",
        "-drive", "file=/w/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-netdev", "user,id=net0,net=168.0.0.0/7,hostfwd=tcp:127.0.0.1:41000-:9070,"
                   "hostfwd=tcp:127.0.0.1:41001-:9090,"
                   f"guestfwd=tcp:169.254.169.254:80-cmd:{bridge}",
        "-device", "virtio-net-pci,netdev=net0,romfile=", "-device", "virtio-rng-pci",
        "-smbios", "type=0,vendor=Amazon EC2",
        "-smbios", "type=1,manufacturer=Amazon EC2,product=t3.small",
        "-uuid", "ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8",
        *TAIL]


def test_azure_forwards_imds_and_wire_server_and_sets_the_asset_tag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "which", lambda name: "/usr/bin/socat")
    route = metadata.route_for(metadata.Cloud.AZURE, 35001, None)
    assert route.guestfwds == (
        GuestFwd("169.254.169.254", 80, "/usr/bin/socat STDIO TCP:127.0.0.1:35001"),
        GuestFwd("168.63.129.16", 80, "/usr/bin/socat STDIO TCP:127.0.0.1:35001"))
    assert "type=3,manufacturer=Microsoft Corporation,asset=7783-7084-3265-9085-8269-3286-77" \
        in route.smbios
    assert route.host_address == "168.0.2.2"


def test_gce_dmi_product() -> None:
    route = metadata.route_for(metadata.Cloud.GCE, 1, None)
    assert "type=1,manufacturer=Google,product=Google Compute Engine" in route.smbios


def test_persisted_raw_disk_and_kvm() -> None:
    spec = VmSpec(disk=Path("/img/disk.raw"), disk_format="raw", accel=Accel.KVM, memory_mib=2048)
    argv = build_argv(spec)
    assert argv[5:9] == ["-accel", "kvm", "-cpu", "host"]
    assert "file=/img/disk.raw,if=virtio,format=raw,discard=unmap" in argv  # no unsafe cache
    assert argv[argv.index("-m") + 1] == "2048"
    assert "-qmp" not in argv


def test_refuses_unresolved_accel_and_uefi_without_vars() -> None:
    with pytest.raises(ValueError, match="choose_accel"):
        build_argv(VmSpec(disk=Path("d"), accel=Accel.AUTO))
    with pytest.raises(ValueError, match="OVMF"):
        build_argv(VmSpec(disk=Path("d"), firmware=Firmware.UEFI))


def test_guestfwd_command_with_comma_is_refused() -> None:
    spec = VmSpec(disk=Path("d"), guestfwds=(GuestFwd("169.254.169.254", 80, "a,b"),))
    with pytest.raises(ValueError, match="must not contain"):
        build_argv(spec)


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu vme {flags}\n")
    return path


def test_auto_picks_tcg_on_nested_kvm_and_says_why(tmp_path: Path) -> None:
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    accel, why = choose_accel(Accel.AUTO, kvm_device=kvm, cpuinfo=_cpuinfo(tmp_path, "vmx hypervisor"))
    assert accel is Accel.TCG and "nested" in why
    accel, why = choose_accel(Accel.AUTO, kvm_device=kvm, cpuinfo=_cpuinfo(tmp_path, "vmx"))
    assert accel is Accel.KVM
    accel, why = choose_accel(Accel.AUTO, kvm_device=tmp_path / "absent", cpuinfo=_cpuinfo(tmp_path, ""))
    assert accel is Accel.TCG and "missing" in why
    assert choose_accel(Accel.TCG)[0] is Accel.TCG
    with pytest.raises(Exception, match="--accel kvm"):
        choose_accel(Accel.KVM, kvm_device=tmp_path / "absent")
