"""``make demo``: build the appliance, boot it like EC2 would, put traffic through it.

Steps: build the image (cached layers) -> a small web server on the host's
loopback -> boot with EC2 user-data (a generated admin password) -> PUT a
pool (the host's web server as the guest sees it) and an HTTP virtual server
through the REST API -> wait for the first proxied 200 -> print the Admin UI
URL, the certificate fingerprint, the user-data that clones or clusters this
appliance and a curl line -> keep running until Ctrl-C (or, with
``--exit-after-ready`` or no terminal on stdin, shut down).

``--no-user-data`` boots the appliance as a user who launched it without
user-data meets it: the demo prints the web wizard's URL with the one-time
token the console shows, checks that it answers, and configures nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from lockgate.errors import LockgateError

VS_PORT = 8080  # the demo virtual server's port in the guest
BACKEND_BODY = b"hello from the lockgate demo backend\n"


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BACKEND_BODY)))
        self.end_headers()
        self.wfile.write(BACKEND_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's own output says what matters


def start_backend() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     name="demo-backend", daemon=True).start()
    return server


def build_image(out: Path) -> Path:
    from lockgate.proc import run

    if os.geteuid() != 0:
        raise LockgateError("building the image needs root (mmdebstrap, chroot); "
                            "run `make demo` as root or pass --image")
    step("building the image (cached layers are reused)")
    run([sys.executable, "-m", "lockgate", "image", "build", "--formats", "raw", "--out", out])
    return out


_print_lock = threading.Lock()  # console milestones print from the console reader's thread


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def step(text: str) -> None:
    say(f"==> {text}")


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stop


def show_wizard(vm: Any) -> None:
    """The unconfigured appliance: its wizard URL (as this host reaches it) and token."""
    from lockgate.http import read_url
    from lockgate.image.boot import probe
    from lockgate.image.boot.console import WIZARD_RE

    line = vm.wait_for(WIZARD_RE, 30, what="the wizard's URL (lockgate-runtime: "
                                          "initial configuration)")
    fp = probe.fingerprint(vm, 9090)
    url = f"{vm.url(9090)}/wizard?token={line['token']}"
    # Look without spending the token: the wizard binds it to a cookie on first use.
    resp = read_url(f"{vm.url(9090)}/login", timeout=10, deadline=60, pin_sha1=fp)
    if resp.status >= 500:
        raise LockgateError(f"the Admin UI answered {resp.status}")
    say("\n".join([
        "",
        "  This appliance has no configuration: finish it in the browser.",
        f"  Initial-configuration wizard:  {url}",
        f"  (the console shows it as {line['url']})",
        f"  SHA-1 fingerprint to check:    {fp}",
        "  The token works once; the console wizard z-initial-config is the other way.",
        "",
    ]))


def cluster_host(metadata_hostname: str | None, admin_url: str | None) -> str:
    """The ``cluster_host`` a peer is given: the host name the appliance itself uses, which
    first boot takes from the cloud's metadata (``host_name_for``, the appliance's own rule)
    and which z-initial-config's clone/cluster user-data prints; the address only when the
    cloud gives no usable name."""
    from lockgate.firstboot.apply.access import host_name_for

    name = host_name_for(metadata_hostname) if metadata_hostname else None
    if name:
        return name
    return (admin_url or "https://<appliance-ip>:9090").split("//")[1].rsplit(":", 1)[0]


def demo(image: Path, *, firmware: str, accel: str, exit_after_ready: bool,
         timeout: float, with_user_data: bool = True) -> None:
    from lockgate.http import read_url
    from lockgate.image.boot import probe
    from lockgate.image.boot.qemu import Accel, choose_accel
    from lockgate.image.boot.vm import booted
    from lockgate.passwords import random_password

    password = random_password()
    user_data: str | None = f"password={password} accept_license=y" if with_user_data else None
    chosen, reason = choose_accel(Accel(accel))
    backend = start_backend()
    backend_port = int(backend.server_address[1])
    step(f"backend web server on 127.0.0.1:{backend_port}")
    step(f"booting {image} ({firmware}, emulated EC2) - accelerator: {reason}")
    say("    user-data: password=<generated, shown at the end> accept_license=y"
        if with_user_data else "    user-data: none (the appliance asks for its configuration)")
    try:
        with booted(image, cloud="ec2", user_data=user_data, firmware=firmware,
                    forwards=[(0, VS_PORT)], accel=chosen,
                    on_milestone=lambda name, t: say(f"    [{t:6.1f} s] {name}")
                    ) as vm:
            say(f"    console log: {vm.console_log}")
            done, serving = vm.wait_ready(timeout)
            t_ready = vm.elapsed
            step(f"appliance ready in {t_ready:.1f} s (first boot: {done.state})")
            if not with_user_data:
                show_wizard(vm)
                if not exit_after_ready:
                    step("running; press Ctrl-C to shut the VM down")
                    vm.wait_exit()
                return
            fp = serving.fingerprint or probe.fingerprint(vm)
            node = f"{vm.host_address}:{backend_port}"
            step(f"configuring pool 'demo' -> {node} and virtual server 'demo' (http :{VS_PORT})")
            for kind, body in (
                ("pools", {"properties": {"basic": {"nodes_table": [{"node": node}]}}}),
                ("virtual_servers", {"properties": {"basic": {
                    "protocol": "http", "port": VS_PORT, "pool": "demo"}}}),
            ):
                resp = probe.rest(vm, "PUT", f"config/active/{kind}/demo", user="admin",
                                  password=password, pin=fp, body=body)
                if resp.status not in (200, 201):
                    raise LockgateError(f"REST PUT {kind}/demo answered {resp.status}: "
                                        f"{resp.text()[:300]}")
            proxied = f"http://127.0.0.1:{vm.ports[VS_PORT]}/"
            resp = read_url(proxied, timeout=5, deadline=120, retry_on=(502, 503, 504, OSError))
            if resp.status != 200:
                raise LockgateError(f"{proxied} answered {resp.status}, not 200")
            t_proxied = vm.elapsed
            host = cluster_host(vm.route.hostname, serving.admin)
            say("\n".join([
                "",
                f"  Admin UI:            {vm.url(9090)}/   (user admin, password {password})",
                f"  REST API:            {vm.url(9070)}/api/tm/1.0/",
                f"  SHA-1 fingerprint:   {fp}",
                f"  through the proxy:   curl -sS {proxied}",
                f"  VM start -> ready {t_ready:.1f} s, -> first proxied 200 {t_proxied:.1f} s",
                "  user-data for another appliance that joins this one's cluster:",
                f"    password={password} accept_license=y cluster_host={host}:9090 "
                f"cluster_fingerprint={fp}",
                "  user-data for a stand-alone clone: password=<new> accept_license=y",
                "",
            ]))
            if exit_after_ready:
                step("shutting down (--exit-after-ready)")
                return
            step("running; press Ctrl-C to shut the VM down")
            vm.wait_exit()
    except _Stop:
        step("stopped")
    finally:
        backend.shutdown()
        backend.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lockgate.demo", description=__doc__)
    parser.add_argument("--image", type=Path,
                        help="use this image (file or build folder) instead of building")
    parser.add_argument("--out", type=Path, default=Path("build"), help="build output folder")
    parser.add_argument("--firmware", choices=["bios", "uefi"], default="bios")
    parser.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed from VM start until the appliance serves")
    parser.add_argument("--no-user-data", action="store_true",
                        help="boot without user-data and print the web wizard's URL and token")
    parser.add_argument("--exit-after-ready", action="store_true",
                        help="shut down after the first proxied 200 (automated runs)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    started = time.monotonic()
    try:
        image = args.image or build_image(args.out)
        # With no terminal to press Ctrl-C in (CI, a script, `make demo < /dev/null`),
        # show the results and shut down instead of waiting forever.
        unattended = not sys.stdin.isatty()
        if unattended and not args.exit_after_ready:
            step("stdin is not a terminal: the VM shuts down once it has served a request")
        demo(image, firmware=args.firmware, accel=args.accel,
             exit_after_ready=args.exit_after_ready or unattended, timeout=args.timeout,
             with_user_data=not args.no_user_data)
    except _Stop:
        step("interrupted")
        sys.exit(130)
    except LockgateError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    step(f"demo finished after {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
