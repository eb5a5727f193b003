"""Ratios, medians, plain-text tables and the final JSON line.

The ratios are paired: each round compares lockgate with HAProxy measured
minutes apart on the same machine, and the reported figure is the median of
the per-round ratios. A comparison in which either side failed requests is
not a ratio at all (``None``): a proxy answering errors fast must not look good.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def say(message: str) -> None:
    """Progress on stderr; stdout is for the tables and the JSON line."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the known values; None when there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def paired_median_ratio(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    """Median over rounds of ``a / b``; None if any round has no valid ratio.

    Strict on purpose: a round whose ratio is unknown (errors, a missing side)
    is not silently dropped in favour of the rounds that look fine.
    """
    ratios = [ratio(a, b) for a, b in pairs]
    if not ratios or any(r is None for r in ratios):
        return None
    return median(ratios)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def fmt(value: float | None, spec: str = ".2f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], title: str = "") -> str:
    """A fixed-width table: first column left-aligned, the rest right-aligned."""
    body = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in body]
    return "\n".join(out)


def json_line(summary: dict[str, Any]) -> str:
    """The last line of ``make bench``: one JSON object, no newlines inside."""
    text = json.dumps(summary, sort_keys=False, separators=(",", ":"), allow_nan=False)
    assert "\n" not in text
    return text
