"""``lockgate firstboot``: configure the appliance from cloud user-data.

Each command lives beside the code it drives; this group only names them and
imports a command's module when that command runs, so ``lockgate firstboot run``
on the boot's critical path does not load the console wizard (issue 12).
"""

from __future__ import annotations

from collections.abc import Callable

import click


# Plain import statements (not importlib.import_module), so ``-X importtime`` sees them.
def _parse() -> click.Command:
    from lockgate.firstboot.userdata_cmd import parse

    return parse


def _run() -> click.Command:
    from lockgate.firstboot.service import run

    return run


def _status() -> click.Command:
    from lockgate.firstboot.service import status

    return status


def _wizard() -> click.Command:
    from lockgate.firstboot.wizard.cli import wizard_cmd

    return wizard_cmd


def _reset_password() -> click.Command:
    from lockgate.firstboot.wizard.cli import reset_password_cmd

    return reset_password_cmd


# name -> (loader, one-line help for the group's --help)
COMMANDS: dict[str, tuple[Callable[[], click.Command], str]] = {
    "parse": (_parse, "Parse user-data and print the settings it gives."),
    "run": (_run, "Configure this appliance from its cloud user-data (once per instance)."),
    "status": (_status, "Show what first boot did on this boot."),
    "wizard": (_wizard, "Initial configuration of the appliance on the console "
                        "(z-initial-config)."),
    "reset-password": (_reset_password,
                       "Set a user's password (default: admin) (z-reset-password)."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        return entry[0]() if entry else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group("firstboot", cls=_LazyGroup)
def group() -> None:
    """Configure the appliance from cloud user-data."""
