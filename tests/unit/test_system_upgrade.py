"""``upgrade``, ``rollback`` and ``rollback-helper`` against a real GPT disk-image file.

The "appliance" is a sparse file partitioned by sfdisk (root-a, root-b,
data), a folder standing in for the mounted ESP (grubenv and slot entries
written by lockgate.runtime.system.boot, as on the appliance), a folder for
the data partition, a kernel command line file and the slot's release file.
Slots are written through the disk file at their GPT offsets, exactly as the
appliance writes them when udev has no by-partuuid link.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.image.formats.upgrade import write_bundle
from lockgate.paths import StatePaths
from lockgate.runtime.system import boot, slots
from lockgate.runtime.system import bundle as bundles
from lockgate.runtime.system.keys import generate, load_private, load_public
from lockgate.runtime.system.rest import PREFIX, Reply, SystemApi
from lockgate.runtime.system.upgrade import install, version_key

MiB = 1024 * 1024
SLOT_SIZE = 20 * MiB
FS_SIZE = 16 * MiB
CMDLINE = "ro console=ttyS0,115200 panic=10"
PATH_ENV = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}


def run(*argv: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          env=PATH_ENV, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys and bundles of several versions, made once (the same code the build uses)."""
    work = tmp_path_factory.mktemp("assets")
    generate(work / "site")
    generate(work / "stranger")
    out: dict[str, Path] = {"key": work / "site.key", "pub": work / "site.pub",
                            "stranger": work / "stranger.key"}
    for version in ("0.9.0", "1.0.0", "2.0.0", "3.0.0"):
        tree = work / f"tree-{version}"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/issue").write_text(f"lockgate {version}\n")
        (tree / "payload.bin").write_bytes(os.urandom(MiB))
        image = work / f"root-{version}.ext4"
        with image.open("wb") as f:
            f.truncate(FS_SIZE)
        assert run("mkfs.ext4", "-q", "-F", "-d", tree, image).returncode == 0
        out[f"fs-{version}"] = image
        out[version] = make_bundle(work, version, image, out["key"])
    out["unsigned"] = make_bundle(work, "2.0.0", out["fs-2.0.0"], None, name="unsigned")
    out["stranger-signed"] = make_bundle(work, "2.0.0", out["fs-2.0.0"], out["stranger"],
                                         name="stranger")
    out["arm64"] = make_bundle(work, "2.0.0", out["fs-2.0.0"], out["key"], name="arm",
                               architecture="arm64")
    data = bytearray(out["2.0.0"].read_bytes())
    rootfs = bundles.read_header(out["2.0.0"]).rootfs
    data[rootfs.offset + rootfs.size // 2] ^= 0x04
    out["tampered"] = work / "tampered.upgrade"
    out["tampered"].write_bytes(bytes(data))
    out["truncated"] = work / "truncated.upgrade"
    out["truncated"].write_bytes(bytes(data[: len(data) * 2 // 3]))
    out["notbundle"] = work / "notbundle.upgrade"
    out["notbundle"].write_bytes(b"PK\x03\x04" + bytes(1000))
    out["badhash"] = resigned_with_wrong_rootfs_hash(out["2.0.0"], out["key"], work)
    return out


def make_bundle(work: Path, version: str, image: Path, key: Path | None, *, name: str = "",
                architecture: str = "amd64") -> Path:
    target = work / f"{name or 'lockgate'}-{version}.upgrade"
    write_bundle(target, version=version, rootfs=image, fs_uuid=fs_uuid(version),
                 kernel="6.1.0-test", kernel_cmdline=CMDLINE, source_date_epoch=1700000000,
                 signing_key=load_private(key) if key else None, architecture=architecture)
    return target


def fs_uuid(version: str) -> str:
    return f"00000000-0000-4000-8000-{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def resigned_with_wrong_rootfs_hash(good: Path, key: Path, work: Path) -> Path:
    """A bundle whose signed block hashes promise other root filesystem bytes than it
    carries (a build gone wrong): only the check of each block as it streams catches it."""
    bundle = bundles.read_header(good)
    data = good.read_bytes()
    blocks_member = bundle.member(bundles.BLOCKS)
    blocks = bytearray(data[blocks_member.offset:blocks_member.offset + blocks_member.size])
    blocks[3 * bundles.DIGEST] ^= 0xFF  # block 3 (after three good ones) is "wrong"
    manifest = json.loads(bundle.manifest_bytes)
    for member in manifest["members"]:
        if member["name"] == bundles.BLOCKS:
            member["sha256"] = hashlib.sha256(bytes(blocks)).hexdigest()
    text = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    signature = load_private(key).sign(text)
    payload = (data[bundle.members[0].offset:blocks_member.offset] + bytes(blocks)
               + data[blocks_member.offset + blocks_member.size:])
    target = work / "badhash.upgrade"
    target.write_bytes(bundles.HEADER.pack(bundles.MAGIC, len(text), len(signature)) + text
                       + signature + payload)
    return target


class Appliance:
    """A disk-image file, an ESP folder, a data-partition folder, /proc/cmdline, release."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.disk = root / "disk.raw"
        with self.disk.open("wb") as f:
            f.truncate(64 * MiB)
        script = ("label: gpt\n"
                  f"size={SLOT_SIZE // 512}, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root-a\n"
                  f"size={SLOT_SIZE // 512}, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root-b\n"
                  "type=0fc63daf-8483-4772-8e79-3d69d8477de4, name=data\n")
        proc = run("sfdisk", "--quiet", self.disk, input=script)
        assert proc.returncode == 0, proc.stderr
        self.esp = root / "esp"
        self.state = StatePaths(root / "state")
        self.cmdline = root / "cmdline"
        self.release = root / "release.json"
        parts = {p.name: p for p in slots.read_gpt(self.disk)}
        self.a, self.b = parts["root-a"], parts["root-b"]
        # Slot A holds the factory version 1.0.0; slot B old bytes we can recognise.
        self.write_partition(self.a, b"A" * SLOT_SIZE)
        self.write_partition(self.b, b"\xab" * SLOT_SIZE)
        boot.install_entry(self.esp, "a", "1.0.0", fs_uuid("1.0.0"), self.a.partuuid, CMDLINE)
        boot.write_env(boot.grubenv_path(self.esp), {"saved_entry": "lockgate-1.0.0"})
        self.boot_into("a", "1.0.0")
        (self.state.config).mkdir(parents=True, mode=0o700)
        (self.state.config / "users.json").write_text('{"admin": "v1"}')
        (self.state.runtime).mkdir(mode=0o700)
        (self.state.runtime / "pools.json").write_text('{"web": ["10.0.0.1:80"]}')

    def boot_into(self, slot: str, version: str) -> None:
        part = self.a if slot == "a" else self.b
        self.cmdline.write_text(f"BOOT_IMAGE=/boot/vmlinuz root=PARTUUID={part.partuuid} "
                                f"{CMDLINE} lockgate.entry=lockgate-{version} lockgate.slot={slot}"
                                " lockgate.trial=\n")
        self.release.write_text(json.dumps({"version": version, "architecture": "amd64"}))

    def write_partition(self, part: slots.Partition, data: bytes) -> None:
        with self.disk.open("r+b") as f:
            f.seek(part.offset)
            f.write(data)

    def read_partition(self, part: slots.Partition, size: int = SLOT_SIZE) -> bytes:
        with self.disk.open("rb") as f:
            f.seek(part.offset)
            return f.read(size)

    @property
    def machine(self) -> slots.Machine:
        return slots.Machine(disk=self.disk, esp=self.esp, state=self.state,
                             cmdline=self.cmdline, release=self.release,
                             keys_dir=self.root / "no-keys", by_partuuid=None)

    @property
    def env(self) -> dict[str, str]:
        return boot.read_env(boot.grubenv_path(self.esp))

    def flags(self) -> list[str]:
        return ["--disk", str(self.disk), "--esp", str(self.esp), "--state-dir",
                str(self.state.base), "--cmdline", str(self.cmdline), "--release",
                str(self.release)]

    def cli(self, command: str, *args: str | Path,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--keys-dir", str(self.root / "no-keys")] if command == "upgrade" else []
        env = {k: v for k, v in PATH_ENV.items() if k != bundles.ALLOW_UNSIGNED_ENV}
        env["LOCKGATE_BOOT_LOCK"] = str(self.root / "grubenv.lock")
        return subprocess.run([sys.executable, "-m", "lockgate", "system", command,
                               *map(str, args), *self.flags(), *extra],
                              capture_output=True, text=True, timeout=120, env=env, input=stdin)


@pytest.fixture
def appliance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Appliance:
    monkeypatch.setenv("LOCKGATE_BOOT_LOCK", str(tmp_path / "grubenv.lock"))
    return Appliance(tmp_path)


def trusted(assets: dict[str, Path]) -> list[object]:
    return [load_public(assets["pub"])]


def test_upgrade_writes_the_inactive_slot_its_entry_and_a_one_time_trial(
        appliance: Appliance, assets: dict[str, Path]) -> None:
    lines: list[str] = []
    result = install(appliance.machine, assets["2.0.0"], [load_public(assets["pub"])],
                     architecture="amd64", say=lines.append)
    assert (result.version, result.slot, result.entry) == ("2.0.0", "b", "lockgate-2.0.0")
    # The slot holds the root filesystem, byte for byte; slot A is untouched.
    assert appliance.read_partition(appliance.b, FS_SIZE) == assets["fs-2.0.0"].read_bytes()
    assert appliance.read_partition(appliance.a) == b"A" * SLOT_SIZE
    entry = (appliance.esp / "grub/slot-b.cfg").read_text()
    assert '--id "lockgate-2.0.0"' in entry
    assert f"root=PARTUUID={appliance.b.partuuid}" in entry and fs_uuid("2.0.0") in entry
    # One-time trial: next_entry, the default stays on the running version.
    assert appliance.env == {"saved_entry": "lockgate-1.0.0", "next_entry": "lockgate-2.0.0"}
    trial = boot.read_trial_record(appliance.state.base)
    assert trial is not None and trial["entry"] == "lockgate-2.0.0"
    record = json.loads((appliance.state.slots / "b.json").read_text())
    assert record["state"] == "installed" and record["version"] == "2.0.0"
    # Each version its own configuration: 1.0.0's moved into versions/, copied for 2.0.0.
    assert appliance.state.config.is_symlink()
    assert os.readlink(appliance.state.config) == "versions/1.0.0/config"
    assert json.loads((appliance.state.versions / "2.0.0/config/users.json").read_text()) == \
        {"admin": "v1"}
    assert (appliance.state.versions / "2.0.0/runtime/pools.json").exists()
    # Progress with percentages and throughput.
    assert any("writing slot b: 100%" in line and "MiB/s" in line for line in lines), lines


REFUSALS = {
    "unsigned": "unsigned bundle refused",
    "stranger-signed": "not a trusted key",
    "tampered": "changed after it was made",
    "truncated": "truncated",
    "arm64": "built for arm64",
    "notbundle": "not a lockgate upgrade bundle",
    "0.9.0": "refusing a downgrade",
    "1.0.0": "already running",
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refused_bundle_writes_nothing(appliance: Appliance, assets: dict[str, Path],
                                         name: str) -> None:
    env_before = boot.grubenv_path(appliance.esp).read_bytes()
    proc = appliance.cli("upgrade", assets[name], "--no-restart", "--trusted-key", assets["pub"])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert REFUSALS[name] in errors[0]
    assert appliance.read_partition(appliance.b) == b"\xab" * SLOT_SIZE
    assert boot.grubenv_path(appliance.esp).read_bytes() == env_before
    assert not (appliance.esp / "grub/slot-b.cfg").exists()
    assert not appliance.state.slots.exists() and not appliance.state.versions.exists()


def test_a_downgrade_is_installed_when_asked_for(appliance: Appliance,
                                                 assets: dict[str, Path]) -> None:
    proc = appliance.cli("upgrade", assets["0.9.0"], "--no-restart", "--allow-downgrade",
                         "--trusted-key", assets["pub"])
    assert proc.returncode == 0, proc.stderr
    assert appliance.env["next_entry"] == "lockgate-0.9.0"


def test_a_wrong_hash_while_writing_leaves_the_slot_invalid_and_unbootable(
        appliance: Appliance, assets: dict[str, Path]) -> None:
    proc = appliance.cli("upgrade", assets["badhash"], "--no-restart", "--trusted-key",
                         assets["pub"])
    assert proc.returncode == 1
    assert "block 3 (at 3 MiB) does not match its signed hash" in proc.stderr
    record = json.loads((appliance.state.slots / "b.json").read_text())
    assert record["state"] == "invalid" and "block 3" in record["reason"]
    assert not (appliance.esp / "grub/slot-b.cfg").exists()
    assert appliance.env == {"saved_entry": "lockgate-1.0.0"}
    helper = appliance.cli("rollback-helper", "--list-versions")
    assert helper.stdout.split() == ["1.0.0"]


def test_a_third_install_replaces_the_slot_not_running(appliance: Appliance,
                                                       assets: dict[str, Path]) -> None:
    keys = [load_public(assets["pub"])]
    install(appliance.machine, assets["2.0.0"], keys, architecture="amd64", say=lambda s: None)
    # The trial of 2.0.0 boots and is committed (what the boot side does).
    appliance.boot_into("b", "2.0.0")
    boot.set_default("lockgate-2.0.0", env_path=boot.grubenv_path(appliance.esp))
    from lockgate.runtime.system import configs

    configs.activate(appliance.state, "2.0.0")
    (appliance.state.config / "users.json").write_text('{"admin": "v2"}')
    result = install(appliance.machine, assets["3.0.0"], keys, architecture="amd64",
                     say=lambda s: None)
    assert result.slot == "a"
    assert appliance.read_partition(appliance.a, FS_SIZE) == assets["fs-3.0.0"].read_bytes()
    assert appliance.read_partition(appliance.b, FS_SIZE) == assets["fs-2.0.0"].read_bytes()
    assert boot.installed_entries(appliance.esp) == {"a": "lockgate-3.0.0", "b": "lockgate-2.0.0"}
    # Only one previous version is kept, with its configuration.
    assert sorted(p.name for p in appliance.state.versions.iterdir()) == ["2.0.0", "3.0.0"]
    assert "v2" in (appliance.state.versions / "3.0.0/config/users.json").read_text()
    helper = appliance.cli("rollback-helper", "--list-versions")
    assert helper.returncode == 0, helper.stderr
    assert helper.stdout.split() == ["3.0.0", "2.0.0"]


def test_rollback_helper_json_and_rollback_switch_the_default(appliance: Appliance,
                                                              assets: dict[str, Path]) -> None:
    install(appliance.machine, assets["2.0.0"], [load_public(assets["pub"])],
            architecture="amd64", say=lambda s: None)
    appliance.boot_into("b", "2.0.0")
    boot.set_default("lockgate-2.0.0", env_path=boot.grubenv_path(appliance.esp))
    listed = json.loads(appliance.cli("rollback-helper", "--json").stdout)
    by_version = {item["version"]: item for item in listed}
    assert by_version["2.0.0"] | {"installed": None} == {
        "slot": "b", "version": "2.0.0", "default": True, "running": True, "healthy": True,
        "installed": None, "entry": "lockgate-2.0.0"}
    assert by_version["2.0.0"]["installed"].endswith("Z")
    assert by_version["1.0.0"]["slot"] == "a" and not by_version["1.0.0"]["default"]
    assert not by_version["1.0.0"]["running"]
    assert by_version["1.0.0"]["healthy"] is True  # the default the trial started from
    # Interactive: warned, asked, "N" changes nothing.
    no = appliance.cli("rollback", "--no-restart", stdin="n\n")
    assert "will not gain any of the configuration" in no.stdout
    assert "Y/N [N]" in no.stdout and "nothing changed" in no.stdout
    assert appliance.env["saved_entry"] == "lockgate-2.0.0"
    yes = appliance.cli("rollback", "--no-restart", stdin="y\n\n")
    assert yes.returncode == 0, yes.stderr
    assert "1) 1.0.0" in yes.stdout and "2) 2.0.0 (current version)" in yes.stdout
    assert appliance.env["saved_entry"] == "lockgate-1.0.0"
    # --yes for scripts; back to 2.0.0 by name.
    again = appliance.cli("rollback", "--yes", "--no-restart", "--version", "2.0.0")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout  # 2.0.0 runs: nothing to switch


def test_activate_moves_the_configuration_under_the_running_version(
        appliance: Appliance) -> None:
    proc = subprocess.run([sys.executable, "-m", "lockgate", "system", "activate", "--state-dir",
                           str(appliance.state.base), "--release", str(appliance.release)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(appliance.state.config) == "versions/1.0.0/config"
    assert json.loads((appliance.state.config / "users.json").read_text()) == {"admin": "v1"}
    # A version booted without its own copy (grub-set-default by hand) starts from a copy.
    appliance.release.write_text(json.dumps({"version": "5.0.0"}))
    proc = subprocess.run([sys.executable, "-m", "lockgate", "system", "activate", "--state-dir",
                           str(appliance.state.base), "--release", str(appliance.release)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(appliance.state.config) == "versions/5.0.0/config"
    assert (appliance.state.versions / "1.0.0/config/users.json").exists()
    assert (appliance.state.config / "users.json").exists()


def test_versions_order_as_people_read_them() -> None:
    assert version_key("0.10.0") > version_key("0.9.1")
    assert version_key("1.0") > version_key("1.0~rc1")
    assert version_key("2.0.0-e2e") > version_key("2.0.0")
    assert version_key("2.0.0") > version_key("1.99")


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A real HTTP server on a loopback port the kernel picks, serving ``folder``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_upgrade_from_a_url_downloads_onto_the_data_partition_first(
        appliance: Appliance, assets: dict[str, Path]) -> None:
    with serving(assets["2.0.0"].parent) as base:
        missing = appliance.cli("upgrade", f"{base}/nothing.upgrade", "--no-restart",
                                "--trusted-key", assets["pub"])
        assert missing.returncode == 1 and "HTTP 404" in one_line(missing)
        assert appliance.read_partition(appliance.b) == b"\xab" * SLOT_SIZE
        proc = appliance.cli("upgrade", f"{base}/{assets['2.0.0'].name}", "--no-restart",
                             "--trusted-key", assets["pub"])
    assert proc.returncode == 0, proc.stderr
    assert "downloaded" in proc.stdout
    assert appliance.read_partition(appliance.b, FS_SIZE) == assets["fs-2.0.0"].read_bytes()
    assert not (appliance.state.base / "upgrade/download.upgrade").exists()


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------ REST handlers

def rest_api(appliance: Appliance, assets: dict[str, Path]) -> tuple[SystemApi, list[str]]:
    reboots: list[str] = []
    api = SystemApi(lambda: appliance.machine, lambda: [load_public(assets["pub"])],
                    reboots.append)
    return api, reboots


def upload(api: SystemApi, bundle: Path, query: str) -> tuple[Reply, list[int]]:
    """Feed the bundle in 64 KiB pieces as the HTTP server would; the file on the data
    partition grows with each piece (the body is never gathered in memory)."""
    sink = api.upload({"content-length": str(bundle.stat().st_size)})
    sizes = []
    with bundle.open("rb") as f:
        while chunk := f.read(65536):
            sink.write(chunk)
            sizes.append(sink.path.stat().st_size)
    return asyncio.run(api.install_upload(sink, query)), sizes


def test_rest_upload_installs_a_bundle_streamed_to_the_data_partition(
        appliance: Appliance, assets: dict[str, Path]) -> None:
    api, reboots = rest_api(appliance, assets)
    reply, sizes = upload(api, assets["2.0.0"], "restart=false")
    assert sizes[0] == 65536 and sizes == sorted(sizes)
    assert reply.status == 200, reply.document
    assert isinstance(reply.document, dict) and reply.document["version"] == "2.0.0"
    assert appliance.read_partition(appliance.b, FS_SIZE) == assets["fs-2.0.0"].read_bytes()
    assert appliance.env["next_entry"] == "lockgate-2.0.0"
    assert not (appliance.state.base / "upgrade/upload.upgrade").exists()
    assert reboots == []


def test_rest_refuses_a_tampered_upload_and_writes_nothing(appliance: Appliance,
                                                          assets: dict[str, Path]) -> None:
    api, reboots = rest_api(appliance, assets)
    reply, _ = upload(api, assets["tampered"], "")
    assert reply.status == 422
    assert isinstance(reply.document, dict) and "changed after" in reply.document["error_text"]
    assert appliance.read_partition(appliance.b) == b"\xab" * SLOT_SIZE
    assert not (appliance.state.base / "upgrade/upload.upgrade").exists()
    assert reboots == []


def test_rest_lists_switches_and_rolls_back(appliance: Appliance,
                                           assets: dict[str, Path]) -> None:
    install(appliance.machine, assets["2.0.0"], [load_public(assets["pub"])],
            architecture="amd64", say=lambda s: None)
    api, reboots = rest_api(appliance, assets)

    async def scenario() -> list[Reply]:
        listed = await api.handle("GET", f"{PREFIX}/versions", b"")
        missing = await api.handle("PUT", f"{PREFIX}/versions/default",
                                   b'{"version": "7.0.0", "restart": false}')
        switched = await api.handle("PUT", f"{PREFIX}/versions/default",
                                    b'{"version": "2.0.0", "restart": false}')
        back = await api.handle("POST", f"{PREFIX}/rollback", b"")
        await asyncio.sleep(1.3)  # the reboot follows the reply
        return [listed, missing, switched, back]

    listed, missing, switched, back = asyncio.run(scenario())
    assert isinstance(listed.document, list)
    assert [v["version"] for v in listed.document] == ["1.0.0", "2.0.0"]
    assert missing.status == 422
    assert switched.status == 200
    # Rolling back from 1.0.0 (running) goes to the other installed version, 2.0.0.
    assert back.status == 200 and isinstance(back.document, dict)
    assert back.document["version"] == "2.0.0"
    assert appliance.env["saved_entry"] == "lockgate-2.0.0"
    assert reboots == ["lockgate-2.0.0"]


def test_the_slot_writer_writes_zero_runs_as_zeros_where_the_device_cannot_zero_them(
        tmp_path: Path) -> None:
    """BLKZEROOUT fails on a regular file (ENOTTY): the run of zero blocks must then be
    written as zeros, in place, between the data blocks around it."""
    from lockgate.runtime.system.upgrade import SlotWriter

    target = tmp_path / "slot"
    target.write_bytes(b"\xab" * (8 * 4096 + 100))
    base = 100  # the slot starts 100 bytes into the file
    data = [os.urandom(4096), bytes(4096), bytes(4096), bytes(4096), os.urandom(4096),
            bytes(4096), os.urandom(4096), bytes(4096)]
    fd = os.open(target, os.O_WRONLY)
    try:
        writer = SlotWriter(fd, base, block_device=True)
        for i, block in enumerate(data):
            writer(i * 4096, block, not any(block))
        writer.flush()
    finally:
        os.close(fd)
    assert target.read_bytes() == b"\xab" * base + b"".join(data)
