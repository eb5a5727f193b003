"""Admin UI forms come from the REST schema, and the event log stays bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.runtime.admin import events as events_module
from lockgate.runtime.admin.events import EventLog
from lockgate.runtime.admin.forms import Table, document_from_form, form_layout, input_name
from lockgate.runtime.config.schema import KINDS, SCHEMA, ConfigError, fill_document


@pytest.mark.parametrize("kind", KINDS)
def test_every_schema_field_has_an_input_and_defaults_round_trip(kind: str) -> None:
    layout = form_layout(kind, None)
    assert [section for section, _ in layout] == list(SCHEMA[kind])
    form: dict[str, str] = {"name": "x"}
    for section, items in layout:
        names = {item.name for item in items}
        assert names == {f"{section}.{key}" for key in SCHEMA[kind][section]}
        for item in items:
            if isinstance(item, Table):
                continue  # blank rows: nothing to add
            if item.kind == "bool":
                if item.value:
                    form[item.name] = "on"
            elif item.value is not None:
                form[item.name] = str(item.value)
    document = document_from_form(kind, form)
    required = [f"{s}.{k}" for s, fields in SCHEMA[kind].items()
                for k, f in fields.items() if f.required]
    if required:  # a blank required field is left out, so the schema names it
        with pytest.raises(ConfigError, match="required"):
            fill_document(kind, "x", document)
    else:
        assert fill_document(kind, "x", document) == fill_document(kind, "x",
                                                                    {"properties": {}})


def test_pool_form_becomes_the_rest_document() -> None:
    form = {
        "basic.nodes_table[0].node": "10.0.0.1:80", "basic.nodes_table[0].weight": "5",
        "basic.nodes_table[0].state": "draining",
        "basic.nodes_table[1].node": "", "basic.nodes_table[1].weight": "",
        "basic.nodes_table[1].state": "",
        "basic.monitors": "ping, http-check", "basic.node_fail_time": "2.5",
        "basic.max_connections_per_node": "ten", "load_balancing.algorithm": "ip_hash",
    }
    doc = document_from_form("pools", form)
    basic = doc["properties"]["basic"]
    assert basic["nodes_table"] == [{"node": "10.0.0.1:80", "weight": 5, "state": "draining"}]
    assert basic["monitors"] == ["ping", "http-check"]
    assert basic["node_fail_time"] == 2.5
    assert basic["passive_monitoring"] is False  # an unticked box
    assert basic["max_connections_per_node"] == "ten"  # left as typed: the schema says why
    with pytest.raises(ConfigError) as caught:
        fill_document("pools", "web", doc)
    assert input_name("pools", "web", caught.value.field) == "basic.max_connections_per_node"


def test_error_paths_name_their_inputs() -> None:
    assert input_name("pools", "w", "pools.w.basic.nodes_table[2].weight") == \
        "basic.nodes_table[2].weight"
    assert input_name("virtual_servers", "v", "virtual_servers.v.basic.listen_on_hosts[1]") == \
        "basic.listen_on_hosts"
    assert input_name("virtual_servers", "v", "virtual_servers.v.basic.port") == "basic.port"


def test_choices_are_the_schemas() -> None:
    (_, items), *_ = [s for s in form_layout("pools", None) if s[0] == "load_balancing"]
    assert "weighted_round_robin" in items[0].choices


def test_event_log_is_bounded_and_notes_health_changes(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "KEEP", 5)
    log = EventLog(tmp_path)
    for i in range(12):
        log.add("config", f"change {i}")
    lines = log.path.read_text().splitlines()
    assert 5 <= len(lines) < 10 and json.loads(lines[-1])["text"] == "change 11"
    log.observe({"pools": {"web": {"nodes": {"a:80": {"state": "alive"}}}}})
    log.observe({"pools": {"web": {"nodes": {"a:80": {"state": "dead"}}}}})
    log.observe({"pools": {"web": {"nodes": {"a:80": {"state": "dead"}}}}})
    recent = log.recent()
    assert recent[0]["kind"] == "health" and recent[0]["text"] == "pool web: node a:80 alive -> dead"
    assert sum(e["kind"] == "health" for e in recent) == 1


def test_the_runtime_starts_without_importing_jinja2() -> None:
    """Jinja2 loads with the first page rendered, not when the management plane starts."""
    import subprocess
    import sys

    code = ("import sys, lockgate.runtime.api, lockgate.runtime.admin, "
            "lockgate.runtime.admin.wizard, lockgate.runtime.serve\n"
            "print('jinja2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_the_event_log_watches_health_by_itself(tmp_path: Path) -> None:
    """EventLog.watch records each change once, forgets removed nodes, and survives a
    snapshot that fails to read."""
    import asyncio

    log = EventLog(tmp_path)
    states = iter(["alive", "alive", "dead", "dead", None, "gone", "alive", "dead"])
    finished = asyncio.Event()

    def snapshot() -> dict[str, object]:
        state = next(states, "end")
        if state is None:
            raise ValueError("a half-written status file")
        if state == "end":
            finished.set()
            return {}
        if state == "gone":
            return {"pools": {}}
        return {"pools": {"web": {"nodes": {"a:80": {"state": state}}}}}

    async def main() -> None:
        task = asyncio.create_task(log.watch(snapshot, interval=0.001))
        await asyncio.wait_for(finished.wait(), 10)
        task.cancel()

    asyncio.run(main())
    assert [e["text"] for e in reversed(log.recent()) if e["kind"] == "health"] == [
        "pool web: node a:80 alive -> dead", "pool web: node a:80 alive -> dead"]
