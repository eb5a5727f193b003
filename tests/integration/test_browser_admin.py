"""The wizard and the Admin UI in a real browser: Debian's headless Chromium, driven by
Selenium through Debian's chromedriver (nothing is downloaded).

One runtime (``lockgate runtime serve`` on an unconfigured state dir, as a user
starts it) and one browser serve the whole story, in order: the console line's
token claims the wizard, every step is answered, Finish configures the
appliance, the admin logs in, builds a pool (a real loopback HTTP server) and
a virtual server through the forms, traffic flows through it, a node's weight
changed in the UI is what the REST API says. Negative paths on the way: no
token, wrong password, a form without its CSRF token, a second claim, markup
in a name, a session cookie replayed after logout. Screenshots of every step
and page go to ``build/screenshots/`` with ``page-metrics.json`` (bytes and
server time of each page over loopback).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import shutil
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_api_support import basic, write_users
from test_api_system import appliance, bundles, serving  # noqa: F401 (fixtures)
from test_runtime_support import backends, free_port

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (scripts/apt-packages.txt)")

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
PASSWORD = "browser pass 42"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", "--disable-dev-shm-usage", "--window-size=1280,1000")
PAGE_BUDGET = 100 * 1024


class Serve:
    """``lockgate runtime serve`` with the management plane on loopback ports."""

    def __init__(self, tmp: Path) -> None:
        self.state_dir = tmp / "root/var/lib/lockgate"  # the appliance's layout
        self.state_dir.mkdir(parents=True)
        self.admin_port, self.rest_port, control = free_port(), free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lockgate", "runtime", "serve", "--state-dir",
             str(self.state_dir), "--workers", "1", "--grace", "1", "--management-host",
             "127.0.0.1", "--admin-port", str(self.admin_port), "--rest-port",
             str(self.rest_port), "--control-port", str(control)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or []),
                         daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout or []:
            self.lines.put(line.rstrip("\n"))

    def output_until_serving(self, timeout: float = 30) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith("lockgate-runtime: serving"):
                return seen
        raise AssertionError(f"no serving line: {seen} {''.join(self.stderr)[-2000:]}")

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.state_dir / "tls" / "admin.crt")
            if (self.state_dir / "tls" / "admin.crt").exists() else None)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # loopback only; the fingerprint is checked below
        return context

    def request(self, port: int, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.context(),
                                           timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    srv = Serve(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def click_to(driver: Any, button: str, text: str) -> None:
    """Click and wait for the next page: a click may return before it has loaded."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, button).click()
    wait_for(lambda: text in driver.page_source, what=repr(text))


def fill(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.NAME, name)
    element.clear()
    element.send_keys(value)


def test_wizard_then_admin_ui_in_chromium(serve: Serve, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    lines = serve.output_until_serving()
    wizard_lines = [ln for ln in lines if "/wizard?token=" in ln]
    assert len(wizard_lines) == 1, lines
    url = wizard_lines[0].split(": ", 2)[-1].strip()
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.port == serve.admin_port
    base = f"https://127.0.0.1:{serve.admin_port}"

    # Without the token nobody claims the wizard.
    d.get(base + "/wizard")
    assert "Open the wizard with the address printed" in d.page_source
    d.get(base + "/wizard?token=" + "x" * 32)
    assert "Open the wizard with the address printed" in d.page_source

    # The wizard, step by step.
    d.get(f"{base}{parts.path}?{parts.query}")
    assert "step 1 of 7" in d.page_source
    shot(d, "wizard-1-welcome")
    click_to(d, "next", "step 2 of 7")
    fill(d, "password", PASSWORD)
    fill(d, "confirm", PASSWORD + "x")
    click_to(d, "next", "the two passwords differ")
    assert d.find_element(By.ID, "error-confirm").text == "the two passwords differ"
    fill(d, "password", PASSWORD)
    fill(d, "confirm", PASSWORD)
    shot(d, "wizard-2-password")
    click_to(d, "next", "step 3 of 7")
    d.find_element(By.NAME, "accept_license").click()
    shot(d, "wizard-3-licence")
    click_to(d, "next", "step 4 of 7")
    fill(d, "timezone", "Europe/Berlin")
    fill(d, "ntp_server", "ntp.example.net")
    shot(d, "wizard-4-time")
    click_to(d, "next", "step 5 of 7")
    shot(d, "wizard-5-security")  # left ticked: sshguard on
    click_to(d, "next", "step 6 of 7")
    shot(d, "wizard-6-licence-key")
    click_to(d, "next", "step 7 of 7")
    user_data = d.find_element(By.ID, "user-data").text
    assert "cluster_host=" in user_data and "cluster_fingerprint=" in user_data
    assert PASSWORD not in user_data and "<redacted>" in user_data
    shot(d, "wizard-7-summary")
    d.find_element(By.NAME, "action").click()  # Back
    wait_for(lambda: "step 6 of 7" in d.page_source, what="step 6 again")
    click_to(d, "next", "step 7 of 7")
    d.find_element(By.ID, "finish").click()
    wait_for(lambda: d.find_elements(By.ID, "wizard-finished"), 30, "the wizard to finish")
    shot(d, "wizard-8-finished")
    config = serve.state_dir / "config"
    assert json.loads((config / "time.json").read_text()) == {"ntp_server": "ntp.example.net"}
    assert json.loads((config / "security.json").read_text()) == {
        "ssh_intrusion_prevention": True}

    # A second claim, with the same token, once configured: gone.
    d.get(url.replace(f"{parts.hostname}:", "127.0.0.1:", 1))
    assert d.find_elements(By.ID, "wizard-done")

    # Log in: first with a wrong password.
    d.get(base + "/login")
    fill(d, "username", "admin")
    fill(d, "password", "not the password")
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: "Wrong user name or password" in d.page_source, what="the refusal")
    fill(d, "username", "admin")
    fill(d, "password", PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: d.find_elements(By.ID, "logout"), what="the status page")

    with backends("node-a") as (node,):
        # A pool pointing at a real loopback HTTP server, through the form.
        d.get(base + "/config/pools/new")
        fill(d, "name", "web")
        fill(d, "basic.nodes_table[0].node", node.address)
        fill(d, "basic.nodes_table[0].weight", "1")
        shot(d, "admin-pool-new")
        d.find_element(By.ID, "save").click()
        wait_for(lambda: d.find_elements(By.ID, "objects"), what="the pool list")
        vs_port = free_port()
        d.get(base + "/config/virtual_servers/new")
        fill(d, "name", "site")
        fill(d, "basic.port", str(vs_port))
        fill(d, "basic.pool", "web")
        fill(d, "basic.listen_on_hosts", "127.0.0.1")
        d.find_element(By.ID, "save").click()
        wait_for(lambda: d.find_elements(By.ID, "objects"), what="the virtual server list")

        # Traffic flows through it.
        def get_through() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", vs_port, timeout=5)
            try:
                conn.request("GET", "/")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_for(get_through, 15, "traffic through the new virtual server")
        assert node.hits >= 1

        # Change the node's weight in the UI; the REST API says the same.
        d.get(base + "/config/pools/web")
        fill(d, "basic.nodes_table[0].weight", "7")
        shot(d, "admin-pool-edit")
        d.find_element(By.ID, "save").click()
        wait_for(lambda: d.find_elements(By.ID, "objects"), what="the pool list")
        status, _, body = serve.request(serve.rest_port, "GET",
                                        "/api/tm/1.0/config/active/pools/web",
                                        headers={"Authorization": basic("admin", PASSWORD)})
        assert status == 200
        assert json.loads(body)["properties"]["basic"]["nodes_table"][0]["weight"] == 7

        # The status page's chart refreshes by itself (its script runs under the CSP).
        for _ in range(3):
            get_through()
        d.get(base + "/")
        wait_for(lambda: d.find_element(By.ID, "rate").text != "-", 15, "the traffic chart")
        assert d.find_element(By.ID, "traffic").get_attribute("data-samples")
        shot(d, "admin-status")
        d.get(base + "/config/virtual_servers")
        assert "site" in d.find_element(By.ID, "objects").text
        shot(d, "admin-virtual-servers")
        d.get(base + "/config/pools")
        assert "(7, " in d.find_element(By.ID, "objects").text
        shot(d, "admin-pools")

    # Markup in a name is shown as text, never as markup.
    d.get(base + "/config/monitors/new")
    fill(d, "name", "<b id=injected>x</b>")
    d.find_element(By.ID, "save").click()
    errors = wait_for(lambda: d.find_element(By.ID, "errors").text, what="the form's errors")
    assert "expected an object name" in errors
    assert not d.find_elements(By.ID, "injected")
    shot(d, "admin-monitor-error")
    for page in ("monitors", "traffic_ip_groups"):
        d.get(f"{base}/config/{page}")
        shot(d, f"admin-{page.replace('_', '-')}")
    d.get(base + "/events")
    events = d.find_element(By.ID, "events").text
    assert "admin logged in" in events and "failed login" in events
    assert "admin changed pools web" in events
    shot(d, "admin-events")
    d.get(base + "/system")
    assert d.find_element(By.ID, "versions").text
    assert "this traffic manager" in d.find_element(By.ID, "members").text  # cluster service
    shot(d, "admin-system")

    # A form posted without its CSRF token is refused, even with a live session.
    cookie = d.get_cookie("lockgate_session")
    assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    session = f"lockgate_session={cookie['value']}"
    form = {"Cookie": session, "Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = serve.request(serve.admin_port, "POST", "/config/pools/web/delete", "",
                                 form)
    assert status == 403
    measure_pages(serve, session)

    # Logout; the old cookie replayed afterwards opens nothing.
    d.find_element(By.ID, "logout").click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "form.login"), what="the login page")
    status, headers, _ = serve.request(serve.admin_port, "GET", "/", headers={"Cookie": session})
    assert status == 303 and headers["location"] == "/login"
    status, _, _ = serve.request(serve.admin_port, "POST", "/config/pools/web/delete",
                                 "csrf=x", form)
    assert status == 303  # to the login page: nothing deleted
    status, _, _ = serve.request(serve.rest_port, "GET", "/api/tm/1.0/config/active/pools/web",
                                 headers={"Authorization": basic("admin", PASSWORD)})
    assert status == 200


def measure_pages(serve: Serve, session: str) -> None:
    """Every page's size (budget 100 KB) and time to answer on loopback (median of 5)."""
    pages = ["/", "/config/virtual_servers", "/config/pools", "/config/pools/web",
             "/config/pools/new", "/config/monitors", "/config/traffic_ip_groups", "/events",
             "/system", "/status.json", "/style.css", "/chart.js", "/system.js", "/login"]
    metrics: dict[str, dict[str, float]] = {}
    for page in pages:
        times, size = [], 0
        for _ in range(5):
            conn = http.client.HTTPSConnection("127.0.0.1", serve.admin_port,
                                               context=serve.context(), timeout=15)
            conn.connect()  # the TLS handshake is not the page's time
            started = time.perf_counter()
            conn.request("GET", page, headers={"Cookie": session})
            reply = conn.getresponse()
            body = reply.read()
            times.append((time.perf_counter() - started) * 1000)
            conn.close()
            assert reply.status == 200, (page, reply.status)
            size = len(body)
        metrics[page] = {"bytes": size, "median_ms": round(statistics.median(times), 2),
                         "max_ms": round(max(times), 2)}
        assert size < PAGE_BUDGET, (page, size)
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "page-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    slow = {p: m for p, m in metrics.items() if m["median_ms"] >= 50}
    # 50 ms is the goal on an idle host; a shared CI host gets 4x before this fails.
    assert all(m["median_ms"] < 200 for m in metrics.values()), slow



def test_system_page_upgrade_and_switch_in_chromium(
        tmp_path: Path, browser: Any, appliance: Any, bundles: dict[str, Path]  # noqa: F811
        ) -> None:
    """The System page on an A/B appliance (the disk-image appliance of the REST tests): a
    bad bundle's reason shown by system.js, a good one streamed into slot B, then the
    version made GRUB's default through the confirmation step."""
    from selenium.webdriver.common.by import By

    from lockgate.runtime.system.keys import load_public
    from lockgate.runtime.system.rest import SystemApi

    state = tmp_path / "mgmt"
    write_users(state, {"admin": PASSWORD})
    reboots: list[str] = []
    system = SystemApi(lambda: appliance.machine, lambda: [load_public(bundles["pub"])],
                       reboots.append)
    junk = tmp_path / "junk.upgrade"
    junk.write_bytes(b"not a bundle" * 1000)
    with serving(state, system) as srv:
        d = browser
        base = f"https://127.0.0.1:{srv.admin_port}"
        d.get(base + "/login")
        fill(d, "username", "admin")
        fill(d, "password", PASSWORD)
        d.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_for(lambda: d.find_elements(By.ID, "logout"), what="the status page")
        d.get(base + "/system")
        assert "1.0.0" in d.find_element(By.ID, "slots").text

        def upload(path: Path) -> str:
            d.find_element(By.ID, "bundle").send_keys(str(path))
            confirm = d.find_element(By.ID, "upload-confirm")
            if not confirm.is_selected():
                confirm.click()
            d.find_element(By.ID, "upload-button").click()
            return str(wait_for(lambda: (lambda t: t if t.startswith(("Refused", "Installed"))
                                         else "")(d.find_element(By.ID, "upload-status").text),
                                timeout=60, what="the upload's outcome"))

        refused = upload(junk)
        assert refused.startswith("Refused: ") and "bundle" in refused, refused
        assert "error" in d.find_element(By.ID, "upload-status").get_attribute("class")
        installed = upload(bundles["2.0.0"])
        assert installed.startswith("Installed 2.0.0 into slot b"), installed
        shot(d, "admin-system-upgraded")
        assert appliance.env["next_entry"] == "lockgate-2.0.0" and reboots == []

        d.get(base + "/system")
        d.find_element(By.CSS_SELECTOR, 'form[action="/system/switch"] button').click()
        wait_for(lambda: d.find_elements(By.ID, "confirm"), what="the confirmation step")
        d.find_element(By.NAME, "restart").click()  # untick: no reboot in a test
        shot(d, "admin-system-confirm")
        click_to(d, "confirm-yes", "is now the default boot entry")
        assert appliance.env["saved_entry"] == "lockgate-2.0.0" and reboots == []
        shot(d, "admin-system-switched")
        cookie = {"Cookie": f"lockgate_session={d.get_cookie('lockgate_session')['value']}"}
        assert "installed 2.0.0 into slot b" in srv.request(
            "GET", "/events", port=srv.admin_port, headers=cookie).body.decode()

        # The page with both slots and its actions: weight and time on loopback.
        times, size = [], 0
        for _ in range(5):
            conn = srv.connect(srv.admin_port)
            conn.connect()  # the TLS handshake is not the page's time
            started = time.perf_counter()
            conn.request("GET", "/system", headers=cookie)
            reply = conn.getresponse()
            size = len(reply.read())
            times.append((time.perf_counter() - started) * 1000)
            conn.close()
            assert reply.status == 200
        metrics = {"bytes": size, "median_ms": round(statistics.median(times), 2),
                   "max_ms": round(max(times), 2)}
        print(json.dumps({"/system (A/B appliance)": metrics}))
        (SHOTS / "system-page-metrics.json").write_text(json.dumps(metrics) + "\n")
        assert size < PAGE_BUDGET and metrics["median_ms"] < 200, metrics
