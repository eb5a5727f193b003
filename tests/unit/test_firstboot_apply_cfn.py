"""The cfn step runs the real program found on PATH; here a fake cfn-init records its argv."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lockgate.firstboot.apply.base import ApplyContext, Outcome
from lockgate.firstboot.apply.cfn import apply_cfn
from lockgate.firstboot.apply.console import Console
from lockgate.firstboot.settings import CfnSettings, Settings

CFN = Settings(cfn=CfnSettings(stack="web-stack", resource="LaunchConfig", region="eu-west-1"))


def fake_cfn_init(bin_dir: Path, record: Path, exit_code: int = 0) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "cfn-init"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"sys.stderr.write('cfn-init: metadata for LaunchConfig not found\\n')\n"
        f"sys.exit({exit_code})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def ctx(root: Path) -> ApplyContext:
    return ApplyContext(root, Console(str(root / "console")))


def test_runs_cfn_init_with_the_exact_arguments(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "argv.json"
    fake_cfn_init(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = apply_cfn(ctx(tmp_path), CFN)
    assert result.result is Outcome.OK, result.message
    assert json.loads(record.read_text()) == [
        "-s", "web-stack", "-r", "LaunchConfig", "--region", "eu-west-1"]


def test_failing_cfn_init_is_a_warning_with_its_reason(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cfn_init(tmp_path / "bin", tmp_path / "argv.json", exit_code=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    result = apply_cfn(ctx(tmp_path), CFN)
    assert result.result is Outcome.WARNING
    assert "exit code 3" in result.message and "LaunchConfig not found" in result.message


def test_missing_cfn_init_is_a_warning_not_a_failure(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    import lockgate.proc

    if lockgate.proc.which("cfn-init") is not None:
        pytest.skip("a real cfn-init is installed in an sbin folder on this machine")
    result = apply_cfn(ctx(tmp_path), CFN)
    assert result.result is Outcome.WARNING
    assert "cfn-init not found" in result.message


def test_no_cfn_settings_skips(tmp_path: Path) -> None:
    assert apply_cfn(ctx(tmp_path), Settings()).result is Outcome.SKIPPED
