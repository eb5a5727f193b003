"""stdio <-> TCP bridge that QEMU starts for each guest connection to a metadata address.

slirp's ``guestfwd=tcp:ADDR:PORT-cmd:...`` runs this with the guest's
connection on stdin/stdout (and stderr: so nothing may be printed). It
connects to the emulator on ``127.0.0.1:PORT`` and copies bytes both ways,
passing half-closes on. Kept to the standard library's fastest imports and
started with ``python -I -S`` because QEMU starts one per connection.
"""

import os
import selectors
import socket
import sys


def main() -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # stderr is the guest's socket: never write to it
    upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
    upstream.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "guest")
    sel.register(upstream, selectors.EVENT_READ, "emulator")
    open_ends = 2
    while open_ends:
        events = sel.select(timeout=60)
        if not events:
            return 1  # both sides silent for a minute: give up rather than linger
        for key, _ in events:
            if key.data == "guest":
                data = os.read(0, 65536)
                if data:
                    _send_all(upstream, data)
                else:
                    sel.unregister(0)
                    upstream.shutdown(socket.SHUT_WR)
                    open_ends -= 1
            else:
                try:
                    data = upstream.recv(65536)
                except BlockingIOError:
                    continue
                if data:
                    _write_all(1, data)
                else:
                    sel.unregister(upstream)
                    open_ends -= 1
                    if open_ends:
                        return 0  # emulator finished its reply: closing ends the guest's side
    return 0


def _send_all(sock: socket.socket, data: bytes) -> None:
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    sys.exit(main())
