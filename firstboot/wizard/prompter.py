"""Where answers come from: a person at a terminal, or a replay file.

:class:`Prompter` is the only code that touches the input and output streams;
it reads secrets with the terminal's echo switched off (like ``getpass``, but
over the streams it was given, so tests can drive it through a pty or with
plain text). The two answer sources put the same :class:`Question` through the
same validator: :class:`InteractiveAnswers` asks again after a bad answer,
:class:`ReplayAnswers` stops at the first one with ``error: <step>: <reason>``.
"""

from __future__ import annotations

import contextlib
import os
import termios
from collections.abc import Iterator, Mapping
from typing import Protocol, TextIO, TypeVar

from lockgate.errors import BadInput

from .questions import InvalidAnswer, Question

T = TypeVar("T")

MAX_ATTEMPTS = 10  # a bounded re-prompt loop: after this many bad answers, give up


class Prompter:
    """Line-based questions over a pair of text streams."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def ask(self, prompt: str) -> str:
        """One line of input without its line ending; EOFError when the input ends."""
        self.stdout.write(prompt + ": ")
        self.stdout.flush()
        return self._readline()

    def ask_secret(self, prompt: str) -> str:
        """Like :meth:`ask`, with echo off when the input is a terminal."""
        with self._echo_off():
            # The prompt goes out only once echo is off, so whoever answers it
            # (a person or a pty test) can never have the answer echoed.
            self.stdout.write(prompt + ": ")
            self.stdout.flush()
            try:
                return self._readline()
            finally:
                self.stdout.write("\n")  # the user's return key was not echoed either
                self.stdout.flush()

    def _readline(self) -> str:
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.removesuffix("\n").removesuffix("\r")

    @contextlib.contextmanager
    def _echo_off(self) -> Iterator[None]:
        try:
            fd = self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1  # an in-memory stream: nothing to switch off
        if fd < 0 or not os.isatty(fd):
            yield
            return
        saved = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~termios.ECHO
        # TCSADRAIN, not TCSAFLUSH: type-ahead is kept, so a fast answer is not lost.
        termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class AnswerSource(Protocol):
    interactive: bool

    def say(self, text: str = "") -> None: ...

    def pause(self, text: str) -> None: ...

    def answer(self, question: Question[T]) -> T: ...


class InteractiveAnswers:
    """Ask a person; explain and ask again after an answer the validator rejects."""

    interactive = True

    def __init__(self, prompter: Prompter) -> None:
        self.prompter = prompter

    def say(self, text: str = "") -> None:
        self.prompter.say(text)

    def pause(self, text: str) -> None:
        self.prompter.ask(text)

    def answer(self, question: Question[T]) -> T:
        for _ in range(MAX_ATTEMPTS):
            text = self._read(question)
            if text is None:
                continue
            try:
                return question.parse(text)
            except InvalidAnswer as exc:
                self.prompter.say(f"  {exc} - please try again.")
        raise BadInput(f"{question.step}: too many invalid answers; nothing changed")

    def _read(self, question: Question[T]) -> str | None:
        """The raw answer, or None when the user asked for help or mistyped a secret."""
        if question.secret:
            first = self.prompter.ask_secret(question.prompt)
            try:
                question.parse(first)  # complain before asking to re-enter a bad password
            except InvalidAnswer as exc:
                self.prompter.say(f"  {exc} - please try again.")
                return None
            if self.prompter.ask_secret("Re-enter to confirm") != first:
                self.prompter.say("  the two entries do not match - please try again.")
                return None
            return first
        text = self.prompter.ask(question.prompt)
        word, _, arg = text.strip().partition(" ")
        if question.help is not None and word.lower() == "help":
            self.prompter.say(question.help(arg))
            return None
        if not text.strip() and question.default is not None:
            return question.default
        return text


class ReplayAnswers:
    """Answers from a replay file; the first bad or missing one ends the run."""

    interactive = False

    def __init__(self, answers: Mapping[str, str]) -> None:
        self.answers = dict(answers)

    def say(self, text: str = "") -> None:
        """Unattended: the explanations meant for a person are not printed."""

    def pause(self, text: str) -> None:
        """Unattended: nobody to wait for."""

    def answer(self, question: Question[T]) -> T:
        text = self.answers.get(question.key)
        if text is None:
            if question.default is None:
                raise BadInput(f"{question.step}: the replay file has no '{question.key}=' line")
            text = question.default
        try:
            return question.parse(text)
        except InvalidAnswer as exc:
            raise BadInput(f"{question.step}: {exc}") from None
