"""Cloud API emulators as child processes, for the publish tests.

Each emulator listens on a port the kernel picks and says which on its first
matching output line; ``emulator()`` starts it, waits (bounded) for that line and
stops it afterwards. The child's stdin is a pipe it watches where it can (moto):
if the test run dies, the pipe closes and the emulator exits by itself.

What each emulator does not check is in /work/shared/CLOUD-EMULATORS.md and
docs/publish.md; the tests' small local fakes cover those calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

START_TIMEOUT_S = 60.0

# Dummy credentials for the emulators: the SDKs refuse to sign without some, and the
# test must not depend on (or leak) whatever the runner has in ~/.aws or its env.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Running:
    process: subprocess.Popen[str]
    match: re.Match[str]
    lines: list[str]  # everything it printed (for failure messages)

    @property
    def url(self) -> str:
        return self.match.group("url")


@contextlib.contextmanager
def emulator(argv: Sequence[str], ready: str, *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, timeout: float = START_TIMEOUT_S) -> Iterator[Running]:
    """Run ``argv`` until the block ends; ``ready`` is a regex with a group ``url``."""
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=full_env, cwd=cwd)
    assert process.stdout is not None
    lines: list[str] = []
    found: list[re.Match[str]] = []
    seen = threading.Event()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # drained to the end, so the child never blocks on a full pipe
            lines.append(line.rstrip("\n"))
            if not found and (m := re.search(ready, line)):
                found.append(m)
                seen.set()
        seen.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        if not seen.wait(timeout) or not found:
            raise RuntimeError(f"{argv[0]} did not start in {timeout:g} s (exit {process.poll()}):\n"
                               + "\n".join(lines[-30:]))
        yield Running(process, found[0], lines)
    finally:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        thread.join(10)


# moto's own moto_server takes a fixed port; its threaded server binds port 0 and tells.
_MOTO = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"moto listening on http://{host}:{port}", flush=True)
sys.stdin.read()  # until the test closes the pipe (or dies)
server.stop()
"""


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode (EC2, EBS direct, S3 ...); yields its endpoint URL."""
    with emulator([sys.executable, "-c", _MOTO], r"moto listening on (?P<url>http://\S+)",
                  env=AWS_TEST_ENV) as running:
        yield running.url
