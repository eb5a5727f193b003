"""Configuration objects as HTML forms, built from the REST API's own schema.

There is no second copy of the rules: the form's fields are
:data:`lockgate.runtime.config.schema.SCHEMA`'s, a submitted form becomes the
same ``{"properties": ...}`` document a REST client would PUT (text turned into
numbers, booleans and lists by the field's kind only), and the REST API's PUT
handler checks and stores it. Its ``error_info.field`` (``pools.web.basic.
nodes_table[1].node``) names the input the message is shown next to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lockgate.runtime.config.schema import SCHEMA, Field

BLANK_ROWS = 2  # empty rows offered under a table (nodes, SNI) to add entries
KIND_TITLES = {"virtual_servers": "Virtual servers", "pools": "Pools", "monitors": "Monitors",
               "traffic_ip_groups": "Traffic IP groups"}
_INDEXED = re.compile(r"\[\d+\]$")


def _kind_of(field: Field) -> str:
    """bool, int, number, choice, list, records or text -- from the check's own maker."""
    if isinstance(field.default, bool):
        return "bool"
    maker = getattr(field.check, "__qualname__", "").split(".<locals>")[0]
    return {"_int": "int", "_number": "number", "_choice": "choice", "_list": "list"}.get(
        maker, "text")


def _choices(field: Field) -> tuple[str, ...]:
    for cell in field.check.__closure__ or ():
        if isinstance(cell.cell_contents, tuple):
            return tuple(str(c) for c in cell.cell_contents)
    return ()


def _record_fields(field: Field) -> dict[str, Field] | None:
    """For a list of records (nodes_table, sni): the record's fields."""
    for cell in field.check.__closure__ or ():
        inner = cell.cell_contents
        for sub in getattr(inner, "__closure__", None) or ():
            if isinstance(sub.cell_contents, dict):
                return sub.cell_contents
    return None


@dataclass
class Input:
    name: str  # section.field or section.field[i].sub: the REST API's field path
    label: str
    kind: str
    value: Any
    choices: tuple[str, ...] = ()


@dataclass
class Table:
    name: str
    label: str
    columns: list[str]
    rows: list[list[Input]]


def form_layout(kind: str, properties: dict[str, Any] | None) -> list[tuple[str, list[Any]]]:
    """[(section, [Input | Table])] for ``kind``, holding ``properties`` (or the defaults)."""
    layout = []
    for section, fields in SCHEMA[kind].items():
        given = (properties or {}).get(section, {})
        items: list[Any] = []
        for key, field in fields.items():
            name = f"{section}.{key}"
            value = given.get(key, field.default)
            records = _record_fields(field) if _kind_of(field) == "list" else None
            if records is not None:
                rows = []
                for i, row in enumerate([*(value or []), *[{}] * BLANK_ROWS]):
                    rows.append([Input(f"{name}[{i}].{sub}", sub, _kind_of(spec),
                                       row.get(sub, spec.default if row else None),
                                       _choices(spec)) for sub, spec in records.items()])
                items.append(Table(name, key, list(records), rows))
                continue
            kind_ = _kind_of(field)
            if kind_ == "list":
                value = ", ".join(str(v) for v in value or [])
            items.append(Input(name, key, kind_, value, _choices(field)))
        layout.append((section, items))
    return layout


def _convert(kind: str, text: str) -> Any:
    """Form text as the JSON value the schema expects; left as text when it is not one,
    so the schema's own message names the mistake."""
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text
    if kind == "list":
        return [part for part in re.split(r"[,\s]+", text) if part]
    return text


def document_from_form(kind: str, form: dict[str, str]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for section, fields in SCHEMA[kind].items():
        out: dict[str, Any] = {}
        for key, field in fields.items():
            name = f"{section}.{key}"
            field_kind = _kind_of(field)
            records = _record_fields(field) if field_kind == "list" else None
            if records is not None:
                rows = []
                for i in range(1000):
                    cells = {sub: form.get(f"{name}[{i}].{sub}") for sub in records}
                    if all(v is None for v in cells.values()):
                        break
                    if not any((v or "").strip() for v in cells.values()):
                        continue  # an empty row: nothing to add
                    rows.append({sub: _convert(_kind_of(records[sub]), v or "")
                                 for sub, v in cells.items() if (v or "").strip()})
                out[key] = rows
            elif field_kind == "bool":
                out[key] = form.get(name) == "on"
            elif name in form:
                if field.default is None and not form[name].strip():
                    continue  # a required field left blank: the schema says "required"
                out[key] = _convert(field_kind, form[name])
        properties[section] = out
    return {"properties": properties}


def input_name(kind: str, name: str, field_path: str) -> str:
    """The form input an error's field path names (a list item names its list's input)."""
    prefix = f"{kind}.{name}."
    path = field_path.removeprefix(prefix)
    section, _, rest = path.partition(".")
    key = re.split(r"[\[.]", rest, maxsplit=1)[0]
    spec = SCHEMA.get(kind, {}).get(section, {}).get(key)
    if spec is not None and _record_fields(spec) is None and _INDEXED.search(path):
        return _INDEXED.sub("", path)
    return path
