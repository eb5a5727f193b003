"""The example configuration the README points at is a valid one."""

from __future__ import annotations

from pathlib import Path

from lockgate.runtime.config import ConfigStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "runtime.yaml"


def test_example_runtime_config_imports_into_the_store(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    assert store.import_file(EXAMPLE) is not None
    config = store.load()
    assert store.list("virtual_servers") == ["web"]
    assert store.get("pools", "web")["properties"]["basic"]["monitors"] == ["ping"]
    assert config is not None
