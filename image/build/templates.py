"""Render the jinja2 templates in image/templates (strict: a missing value is an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True,
                          autoescape=False)


def render(name: str, **values: Any) -> str:
    return _env.get_template(name).render(**values)


def systemd_escape_path(path: str) -> str:
    """``systemd-escape --path``: /var/lib/lockgate -> var-lib-lockgate."""
    parts = path.strip("/").split("/")
    out = []
    for part in parts:
        escaped = "".join(c if c.isalnum() or c in "_." else f"\\x{ord(c):02x}" for c in part)
        if escaped.startswith("."):
            escaped = "\\x2e" + escaped[1:]
        out.append(escaped)
    return "-".join(out)
