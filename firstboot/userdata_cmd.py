"""``lockgate firstboot parse``: show what user-data would configure.

Reads the text from the argument, ``@FILE`` or stdin (``-``), parses it
exactly as first boot does, and prints the normalized settings: a readable
listing, or with ``--json`` the contract's JSON object. Secrets print as
``<redacted>`` unless ``--show-secrets``. Invalid user-data exits 2 with
``error: <key>: <reason>`` and prints nothing on stdout.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from lockgate.errors import BadInput
from lockgate.firstboot import userdata

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@click.command("parse")
@click.argument("text", required=False, metavar="[TEXT|@FILE|-]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the contract keys).")
@click.option("--show-secrets", is_flag=True, help="Print password and owner_secret as given.")
def parse(text: str | None, as_json: bool, show_secrets: bool) -> None:
    """Parse user-data and print the settings it gives.

    TEXT is the user-data itself; @FILE reads a file; - or nothing reads
    stdin. gzip, base64 and #cloud-config input are recognised.
    """
    settings, warnings = userdata.parse(_read_input(text))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    data = settings.to_json(show_secrets=show_secrets)
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(_listing(data), nl=False)


def _read_input(text: str | None) -> bytes:
    if text is None or text == "-":
        if text is None and sys.stdin.isatty():
            raise BadInput("give the user-data as TEXT, @FILE or - (stdin)")
        # One byte over the limit is enough for the parser to say "too large".
        return sys.stdin.buffer.read(userdata.MAX_SIZE + 1)
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, "rb") as handle:
                return handle.read(userdata.MAX_SIZE + 1)
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    # argv arrives decoded with surrogateescape; give the parser the real bytes.
    return os.fsencode(text)


def _listing(data: dict[str, Any]) -> str:
    lines = []
    for key, value in data.items():
        if key == "unknown":
            lines += [f"unknown {name}: {_plain(item)}" for name, item in value.items()]
        elif key == "cfn" and value is not None:
            lines.append(f"cfn: stack={value['stack']} resource={value['resource']} region={value['region']}")
        else:
            lines.append(f"{key}: {_plain(value)}")
    return "".join(line + "\n" for line in lines)


def _plain(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    # Unknown keys' values are not checked; keep escape sequences off the terminal.
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))

