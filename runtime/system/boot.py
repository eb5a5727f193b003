"""The appliance's side of GRUB: the environment block, slot menu entries, trial boots.

Layout on the appliance: the ESP is mounted at ``/boot/efi`` and ``/boot/grub``
is a symlink to ``efi/grub``, so this module, Debian's ``grub-editenv``,
``grub-set-default`` and ``grub-reboot`` and GRUB itself all use one file,
``grub/grubenv`` on the ESP:

* ``saved_entry`` is the version that boots by default (``grub-set-default``);
* ``next_entry`` is a one-shot trial (``grub-reboot``): ``grub.cfg`` clears it
  with ``save_env`` *before* booting it and passes ``lockgate.trial=1`` on the
  kernel command line, so a trial that panics, hangs (watchdog) or is found
  unhealthy reboots into ``saved_entry``.

Each slot's menu entry (``grub/slot-<slot>.cfg``) is written by
:func:`slot_entry`, at build time (``lockgate.image.grub`` imports it) and by
the upgrade tools on the appliance, so both write the same text. Every entry
names itself on the kernel command line (``lockgate.entry=lockgate-<version>
lockgate.slot=<slot>``): the running system reads its own entry id from
``/proc/cmdline``.

Trial bookkeeping lives on the data partition (``boot/trial.json``), shared by
both versions: :func:`schedule_trial` records the trial before the reboot, so
even a trial that never reaches user space (a kernel that panics) is seen
as rolled back by the next boot (``lockgate.runtime.system.health``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lockgate.files import atomic_write
from lockgate.paths import STATE_DIR

ESP_MOUNT = Path("/boot/efi")
ENV_SIZE = 1024
ENV_HEADER = "# GRUB Environment Block\n"
ENTRY_PREFIX = "lockgate-"
SLOTS = ("a", "b")
CMDLINE = Path("/proc/cmdline")
#: Kernel command line words every slot entry carries (read back by boot_state).
ENTRY_PARAM = "lockgate.entry"
SLOT_PARAM = "lockgate.slot"
TRIAL_PARAM = "lockgate.trial"
# Characters GRUB would misread inside a quoted word or a menu entry line.
GRUB_UNSAFE = frozenset('"\n\\$;{}')
# A GRUB environment value must not hold these either (grub-editenv escapes them;
# GRUB's script reads them back differently): refuse instead of escaping.
ENV_UNSAFE = frozenset("\n\\")


def trial_record_path(state_dir: Path = STATE_DIR) -> Path:
    """The data partition's record of the last trial boot (JSON)."""
    return state_dir / "boot" / "trial.json"


def grubenv_path(esp: Path = ESP_MOUNT) -> Path:
    """The appliance's grubenv: on the ESP, also reached as ``/boot/grub/grubenv``."""
    return esp / "grub" / "grubenv"


def entry_id(version: str) -> str:
    return f"{ENTRY_PREFIX}{version}"


def version_of(entry: str) -> str | None:
    return entry[len(ENTRY_PREFIX):] if entry.startswith(ENTRY_PREFIX) else None


def _check_grub_word(name: str, value: str) -> None:
    if not value or any(c in GRUB_UNSAFE for c in value) or any(c.isspace() for c in value):
        raise ValueError(f"{name} {value!r} is empty or has characters GRUB would misread")


# ---------------------------------------------------------------- environment block

def encode_env(values: Mapping[str, str]) -> bytes:
    """A GRUB environment block: exactly 1024 bytes, padded with '#' (as grub-editenv)."""
    lines = []
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ValueError(f"grubenv: {key!r} is not a GRUB variable name")
        if any(c in ENV_UNSAFE for c in value):
            raise ValueError(f"grubenv: the value of {key} has a newline or backslash")
        lines.append(f"{key}={value}\n")
    data = (ENV_HEADER + "".join(lines)).encode()
    if len(data) > ENV_SIZE:
        raise ValueError(f"grubenv: the values take {len(data)} bytes; the block holds {ENV_SIZE}")
    return data + b"#" * (ENV_SIZE - len(data))


def decode_env(data: bytes) -> dict[str, str]:
    """Parse a block as GRUB does: the header, then ``key=value`` lines; '#' lines skipped."""
    if not data.startswith(ENV_HEADER.encode()):
        raise ValueError("not a GRUB environment block (no '# GRUB Environment Block' header)")
    values: dict[str, str] = {}
    for raw in data[len(ENV_HEADER):].split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        # grub-editenv writes '\\' and '\n' escaped with a backslash.
        values[key] = re.sub(r"\\(.)", r"\1", value)
    return values


def read_env(path: Path) -> dict[str, str]:
    """The variables in the grubenv at ``path``."""
    return decode_env(path.read_bytes())


def write_env(path: Path, values: Mapping[str, str]) -> None:
    """Replace the block's contents in place: same 1024 bytes, same clusters, then fsync.

    GRUB's ``save_env`` writes the file through the sectors it found when
    reading it, so the file must keep its blocks: a rename or a truncate (which
    frees and re-allocates FAT clusters) could move it. An in-place rewrite of
    one 1024-byte block is what ``grub-editenv`` amounts to, and on FAT it is
    as atomic as that filesystem allows.
    """
    data = encode_env(values)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    if size != ENV_SIZE:
        # A missing or damaged block is made afresh (GRUB will find it on the next boot).
        atomic_write(path, data, mode=None)  # the ESP is FAT
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _env_lock(path: Path) -> Iterator[None]:
    """Serialise lockgate's own read-modify-write cycles (commit service vs. upgrade)."""
    lock = Path(os.environ.get("LOCKGATE_BOOT_LOCK", "/run/lockgate/grubenv.lock"))
    if not lock.parent.is_dir():
        lock = Path(tempfile.gettempdir()) / "lockgate-grubenv.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_env(path: Path, set_values: Mapping[str, str] | None = None,
               unset: Iterable[str] = ()) -> dict[str, str]:
    """Set and unset variables, keeping every other one (as grub-editenv does)."""
    with _env_lock(path):
        try:
            values = read_env(path)
        except FileNotFoundError:
            values = {}
        for key in unset:
            values.pop(key, None)
        values.update(set_values or {})
        write_env(path, values)
        return values


# ---------------------------------------------------------------- menu entries

def slot_entry(slot: str, version: str, fs_uuid: str, partuuid: str, cmdline: str) -> str:
    """The GRUB menu entry file for one root slot (``grub/slot-<slot>.cfg`` on the ESP).

    Plain Python rather than a template so the appliance (which has neither
    Jinja2 nor ``lockgate.image``) writes exactly what the build writes. The
    kernel and initrd come from the slot's own ext4 filesystem, found by its
    UUID. ``lockgate_slot_id`` tells ``grub.cfg`` which entry this file added
    (GRUB 2.06's ``fallback`` takes only entry numbers).
    """
    if slot not in SLOTS:
        raise ValueError(f"slot entry: slot {slot!r} is not one of {', '.join(SLOTS)}")
    for name, value in (("version", version), ("fs_uuid", fs_uuid), ("partuuid", partuuid)):
        _check_grub_word(f"slot entry: {name}", value)
    if any(c in GRUB_UNSAFE for c in cmdline):
        raise ValueError(f"slot entry: cmdline {cmdline!r} has characters GRUB would misread")
    entry = entry_id(version)
    own = f"{ENTRY_PARAM}={entry} {SLOT_PARAM}={slot} {TRIAL_PARAM}=${{lockgate_trial}}"
    words = " ".join(w for w in cmdline.split()
                     if not w.startswith((f"{ENTRY_PARAM}=", f"{SLOT_PARAM}=", f"{TRIAL_PARAM}=")))
    return (f"# Root slot {slot}: lockgate {version}. The kernel and initrd come from the\n"
            "# slot's own ext4 filesystem, so each slot boots the kernel it was built with.\n"
            f'set lockgate_slot_id="{entry}"\n'
            f'menuentry "lockgate {version} (slot {slot})" --id "{entry}" {{\n'
            f"    search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
            f'    echo "Loading lockgate {version} from root slot {slot} ..."\n'
            f"    linux /boot/vmlinuz root=PARTUUID={partuuid} {words} {own}\n"
            "    initrd /boot/initrd.img\n"
            "}\n")


def install_entry(esp: Path, slot: str, version: str, fs_uuid: str, partuuid: str,
                  cmdline: str) -> None:
    """Write ``grub/slot-<slot>.cfg`` on the ESP mounted at ``esp`` (replaced by a rename)."""
    text = slot_entry(slot, version, fs_uuid, partuuid, cmdline)
    atomic_write(esp / "grub" / f"slot-{slot}.cfg", text.encode(), mode=None)


def installed_entries(esp: Path = ESP_MOUNT) -> dict[str, str]:
    """slot -> entry id, read from the slot files on the ESP."""
    found = {}
    for slot in SLOTS:
        try:
            text = (esp / "grub" / f"slot-{slot}.cfg").read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            continue
        match = re.search(r'--id "([^"]+)"', text)
        if match:
            found[slot] = match[1]
    return found


# ---------------------------------------------------------------- default and trial

def _check_entry(entry: str) -> None:
    _check_grub_word("entry id", entry)
    if not entry.startswith(ENTRY_PREFIX):
        raise ValueError(f"entry id {entry!r} does not start with {ENTRY_PREFIX!r}")


def schedule_trial(entry: str, *, env_path: Path | None = None,
                   state_dir: Path = STATE_DIR) -> None:
    """Boot ``entry`` once on the next reboot (``next_entry``, as ``grub-reboot`` does).

    The trial is recorded on the data partition first, so the boot after it
    knows a trial happened even when the trial never reached user space.
    """
    _check_entry(entry)
    path = env_path or grubenv_path()
    previous = read_env(path).get("saved_entry", "") if path.exists() else ""
    write_trial_record(state_dir, {"entry": entry, "previous": previous, "state": "scheduled",
                                   "scheduled_at": _now()})
    update_env(path, {"next_entry": entry})


def set_default(entry: str, *, env_path: Path | None = None) -> None:
    """Make ``entry`` the default (``saved_entry``, as ``grub-set-default`` does).

    Like Debian's grub-set-default it also drops a pending ``next_entry``
    and the legacy ``prev_saved_entry``.
    """
    _check_entry(entry)
    update_env(env_path or grubenv_path(), {"saved_entry": entry},
               unset=("next_entry", "prev_saved_entry"))


def parse_cmdline(text: str) -> dict[str, str]:
    """``key=value`` words of a kernel command line (bare words map to '')."""
    params = {}
    for word in text.split():
        key, _, value = word.partition("=")
        params[key] = value
    return params


def boot_state(*, env_path: Path | None = None, cmdline_path: Path = CMDLINE) -> dict[str, Any]:
    """What GRUB will boot next and what is running now.

    ``running_entry`` / ``running_slot`` come from the kernel command line
    (``None`` on a system not booted by lockgate's GRUB); ``trial`` is true when
    this boot consumed a ``next_entry``.
    """
    path = env_path or grubenv_path()
    try:
        env = read_env(path)
        env_error = None
    except (OSError, ValueError) as exc:
        env, env_error = {}, f"{path}: {exc}"
    try:
        params = parse_cmdline(cmdline_path.read_text())
    except OSError:
        params = {}
    running = params.get(ENTRY_PARAM) or None
    return {
        "saved_entry": env.get("saved_entry") or None,
        "next_entry": env.get("next_entry") or None,
        "running_entry": running,
        "running_version": version_of(running) if running else None,
        "running_slot": params.get(SLOT_PARAM) or None,
        "trial": params.get(TRIAL_PARAM) == "1",
        "grubenv": str(path),
        "grubenv_error": env_error,
    }


# ---------------------------------------------------------------- trial record

def read_trial_record(state_dir: Path = STATE_DIR) -> dict[str, Any] | None:
    try:
        data = json.loads(trial_record_path(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_trial_record(state_dir: Path, record: Mapping[str, Any]) -> None:
    atomic_write(trial_record_path(state_dir),
                 (json.dumps(dict(record), indent=2, sort_keys=True) + "\n").encode(), mode=0o644,
                 dir_mode=0o755)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
