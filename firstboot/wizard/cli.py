"""Command-line faces of the wizard: ``z-initial-config`` / ``lockgate firstboot wizard``
and ``z-reset-password`` / ``lockgate firstboot reset-password``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lockgate.errors import Failure, LockgateError

from .finish import apply_all, user_data_lines
from .flow import (
    STEPS,
    Interrupted,
    Stopped,
    collect_answers,
    make_context,
    summary_lines,
)
from .prompter import (
    AnswerSource,
    InteractiveAnswers,
    Prompter,
    ReplayAnswers,
)
from .questions import parse_yes_no
from .replay import is_readable_by_others, read_replay, write_replay
from .reset import reset_password

ABORTED = "aborted, nothing changed"

root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Configure the appliance tree under DIR (for images and tests).",
)


def confirm(prompter: Prompter) -> bool:
    for _ in range(10):  # bounded: a person answers y or n well before this
        answer = prompter.ask("Apply these settings now? [y/N]")
        if not answer.strip():
            return False
        try:
            return parse_yes_no(answer)
        except ValueError:
            prompter.say("  answer y or n.")
    return False


@click.command("wizard")
@root_option
@click.option("--record-to", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the answers as a replay file (mode 0600: it holds the password).")
@click.option("--replay-from", type=click.Path(dir_okay=False, path_type=Path),
              help="Run unattended with the answers in FILE; no prompts.")
@click.option("--yes", "-y", "assume_yes", is_flag=True,
              help="Apply without asking for confirmation after the summary.")
def wizard_cmd(root: Path, record_to: Path | None, replay_from: Path | None,
               assume_yes: bool) -> None:
    """Initial configuration of the appliance: admin password, licence, time, security."""
    prompter = Prompter(sys.stdin, sys.stdout)
    source: AnswerSource
    if replay_from is not None:
        source = ReplayAnswers(read_replay(replay_from))
        if is_readable_by_others(replay_from):
            click.echo(f"warning: {replay_from} holds a password and others can read it; "
                       f"chmod 600 it", err=True)
    else:
        source = InteractiveAnswers(prompter)
    try:
        answers = collect_answers(source, make_context(root))
        prompter.say()
        prompter.say(f"--- Step {STEPS} of {STEPS}: Summary ---")
        for line in summary_lines(answers):
            prompter.say(line)
        prompter.say()
        if source.interactive and not assume_yes and not confirm(prompter):
            raise Stopped(ABORTED)
    except KeyboardInterrupt:
        prompter.say()
        raise Interrupted(ABORTED) from None
    except EOFError:
        prompter.say()
        raise Stopped(ABORTED) from None

    if record_to is not None:
        try:
            write_replay(record_to, answers)
        except OSError as exc:
            raise Failure(f"cannot write replay file {record_to}: {exc.strerror}; "
                          "nothing changed") from None
        prompter.say(f"Answers recorded to {record_to} (mode 0600: it contains the admin password).")
    prompter.say("Applying settings:")
    apply_all(root, answers, prompter.say)
    prompter.say("Initial configuration finished.")
    for line in user_data_lines(root, answers, show_password=source.interactive):
        prompter.say(line)


@click.command("reset-password")
@root_option
@click.option("--user", default=None, help="Whose password to set (asked for; default admin).")
@click.option("--password-stdin", is_flag=True,
              help="Read the new password from the first line of stdin (for scripts).")
def reset_password_cmd(root: Path, user: str | None, password_stdin: bool) -> None:
    """Set a user's password (default: admin) in the appliance's users.json."""
    try:
        name = reset_password(root, user, password_stdin)
    except KeyboardInterrupt:
        click.echo()
        raise Interrupted(ABORTED) from None
    except EOFError:
        click.echo()
        raise Stopped(ABORTED) from None
    except (OSError, ValueError) as exc:  # unwritable, or a users.json that is not ours
        raise Failure(f"cannot update the users file under {root}: {exc}") from None
    click.echo(f"Password for user '{name}' changed.")


def run_standalone(command: click.Command, prog_name: str, argv: list[str] | None) -> None:
    """Run one command as its own program, with the errors ``lockgate`` itself shows."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except LockgateError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(ABORTED, err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """``z-initial-config``."""
    run_standalone(wizard_cmd, "z-initial-config", argv)


def reset_password_main(argv: list[str] | None = None) -> None:
    """``z-reset-password``."""
    run_standalone(reset_password_cmd, "z-reset-password", argv)


