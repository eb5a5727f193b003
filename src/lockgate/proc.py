"""The one place lockgate runs external programs.

Every program (mmdebstrap, sfdisk, qemu-img, cfn-init, haproxy ...) goes
through :func:`run` so logging, environment, timeouts and error messages are
handled the same way everywhere. Arguments are logged, never the environment
or standard input, so secrets passed through those stay out of logs.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from lockgate.errors import Failure

log = logging.getLogger("lockgate.run")

Arg = str | os.PathLike[str]


class RunError(Failure):
    """A program exited non-zero, timed out or was not found."""

    def __init__(self, argv: Sequence[Arg], message: str, returncode: int | None = None,
                 stderr: str = "") -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


def which(program: str) -> str | None:
    """Find ``program`` on PATH, also looking in the sbin folders root uses."""
    path = os.environ.get("PATH", os.defpath)
    extra = ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(program, path=path + extra)


def run(
    argv: Sequence[Arg],
    *,
    check: bool = True,
    capture: bool = False,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process.

    ``env`` entries are added to the current environment. With
    ``capture=True`` stdout and stderr are returned as bytes; otherwise they
    go to the terminal, except stderr is always captured on failure for the
    error message. ``check=False`` returns non-zero exits instead of raising.
    """
    args = [os.fspath(a) for a in argv]
    program = args[0]
    resolved = program if os.sep in program else which(program)
    if resolved is None:
        raise RunError(args, f"{program}: not found; install it (see scripts/apt-packages.txt)")
    args[0] = resolved
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if not quiet:
        log.debug("run: %s", shlex.join(args))
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            args,
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RunError(args, f"{Path(program).name}: no result after {timeout:g} s") from exc
    if not capture and proc.stderr and proc.returncode == 0 and not quiet:
        log.debug("%s: %s", Path(program).name, proc.stderr.decode(errors="replace").strip())
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        tail = "\n".join(err.splitlines()[-15:])
        raise RunError(
            args,
            f"{Path(program).name} failed with exit code {proc.returncode}"
            + (f":\n{tail}" if tail else ""),
            proc.returncode,
            err,
        )
    return proc


def spawn(argv: Sequence[Arg], *, env: Mapping[str, str] | None = None,
          quiet: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv`` with pipes on stdin, stdout and stderr, for streaming through it
    (``zstd -dc`` of an upgrade bundle that must never be held in memory). Resolved
    and logged like :func:`run`; the caller reads, writes and waits."""
    args = [os.fspath(a) for a in argv]
    resolved = args[0] if os.sep in args[0] else which(args[0])
    if resolved is None:
        raise RunError(args, f"{args[0]}: not found; install it (see scripts/apt-packages.txt)")
    args[0] = resolved
    if not quiet:
        log.debug("spawn: %s", shlex.join(args))
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def output(argv: Sequence[Arg], **kwargs: object) -> str:
    """Run ``argv`` and return its stdout as text (stripped)."""
    proc = run(argv, capture=True, **kwargs)  # type: ignore[arg-type]
    return proc.stdout.decode(errors="replace").strip()
