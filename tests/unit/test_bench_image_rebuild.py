"""The image bench's warm rebuild builds from an edited copy of the checkout."""

from __future__ import annotations

from pathlib import Path

from lockgate.benchmarks.image import EDITED, REPO, edited_checkout
from lockgate.image.build.context import Context
from lockgate.image.build.install import _skip_outputs, source_key
from lockgate.image.build.profile import load_profile


def _wheel_key(profile_path: Path, tmp_path: Path) -> str:
    profile = load_profile(profile_path)
    ctx = Context(profile=profile, version="1.0", source_date_epoch=1700000000, formats=("raw",),
                  out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    return source_key(profile.lockgate.source, _skip_outputs(ctx))


def test_edited_copy_is_a_code_change_the_checkout_does_not_see(tmp_path: Path) -> None:
    before = (REPO / EDITED).read_bytes()
    profile = edited_checkout(tmp_path / "copy")
    assert load_profile(profile).lockgate.source == (tmp_path / "copy").resolve()
    edited = (tmp_path / "copy" / EDITED).read_bytes()
    assert edited.startswith(before) and edited.count(b"\n") == before.count(b"\n") + 1
    assert (REPO / EDITED).read_bytes() == before
    for skipped in (".git", ".venv", "build", "cache"):
        assert not (tmp_path / "copy" / skipped).exists(), skipped
    assert (tmp_path / "copy/image/build/pipeline.py").is_file()  # only the top build/ is left
    # lockgate's wheel is made anew: its key differs from the checkout's.
    assert _wheel_key(profile, tmp_path) != _wheel_key(REPO / "image/profiles/appliance.yaml",
                                                       tmp_path)
    # Each edit is new (it names the time), so no earlier wheel serves it.
    again = edited_checkout(tmp_path / "again")
    assert (tmp_path / "again" / EDITED).read_bytes() != edited
    assert again.is_file()
