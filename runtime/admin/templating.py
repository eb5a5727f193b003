"""Jinja2 rendering for the Admin UI, imported only when a page is rendered.

Autoescaping is on for every template: a value is HTML-escaped unless a
template says otherwise, so an object name with markup in it shows as text.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def environment() -> Any:
    import jinja2  # lazy: the runtime starts without it; the first page pays ~20 ms once

    return jinja2.Environment(
        loader=jinja2.PackageLoader("lockgate.runtime.admin", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)


def render(template: str, context: dict[str, Any]) -> str:
    return str(environment().get_template(template).render(**context))
