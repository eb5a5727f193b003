"""The ``lockgate`` command: a thin root group that only adds the parts.

Each part's group is imported when it is used, so ``lockgate firstboot run``
on the appliance's boot path never imports the image builder.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from lockgate import __version__
from lockgate.errors import Failure, LockgateError

PARTS = {
    "image": ("lockgate.image.cli", "Build, boot and check appliance images."),
    "firstboot": ("lockgate.firstboot.cli", "Configure the appliance from cloud user-data."),
    "runtime": ("lockgate.runtime.cli", "Run and manage the traffic manager."),
    "system": ("lockgate.runtime.system_cli", "Upgrade and roll back between root slots."),
}


def installed(name: str) -> bool:
    """Whether this installation carries the part: the appliance's wheel leaves the
    build-host-only ``lockgate.image`` out. Finds the package without importing it."""
    package = PARTS[name][0].rsplit(".", 1)[0]
    return importlib.util.find_spec(package) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in PARTS if installed(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in PARTS:
            return None
        if not installed(cmd_name):
            raise Failure(f"'lockgate {cmd_name}' is build-host only: this installation (the "
                          f"appliance) does not carry {PARTS[cmd_name][0].rsplit('.', 1)[0]}. "
                          "Run it where lockgate is installed from its source checkout.")
        module = importlib.import_module(PARTS[cmd_name][0])
        command: click.Command = module.group
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, PARTS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lockgate")
@click.option("-v", "--verbose", count=True, help="Show more detail (-vv: every program run).")
def root(verbose: int) -> None:
    """lockgate: immutable A/B traffic-manager appliances for the clouds."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


def run_command(command: click.Command, argv: list[str] | None, prog_name: str) -> None:
    """Run a click command the lockgate way: errors as one ``error:`` line, then exit.

    Exit codes: 0 success, 1 failure, 2 bad input or usage, 130 interrupted.
    """
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except LockgateError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # bad flags or commands: one line, exit 2
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    run_command(root, argv, "lockgate")
