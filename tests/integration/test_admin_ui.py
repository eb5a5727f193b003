"""The Admin UI over real HTTPS: login with cookies, status page, logout, lockout, escaping."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from test_api_support import PASSWORD, Reply, Running, basic, running, write_users
from test_api_system import FS_SIZE, appliance, bundles, serving  # noqa: F401 (fixtures)

from lockgate import __version__
from lockgate.runtime import status
from lockgate.runtime.api.auth import FailureLimiter

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MiB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    write_users(tmp_path)
    with running(tmp_path) as srv:
        yield srv


def admin(srv: Running, method: str, path: str, form: dict[str, str] | None = None,
          cookie: str | None = None, origin: str | None = None) -> Reply:
    headers = dict(FORM) if form is not None else {}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    body = urlencode(form) if form is not None else None
    return srv.request(method, path, body, port=srv.admin_port, headers=headers)


def login(srv: Running, user: str = "admin", password: str = PASSWORD) -> Reply:
    """As a browser does: the login page's token cookie and hidden field, then the POST."""
    page = admin(srv, "GET", "/login")
    cookie = page.headers.get("set-cookie", "").split(";", 1)[0]
    token = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    return admin(srv, "POST", "/login", {"username": user, "password": password,
                                         "csrf": token.group(1) if token else ""}, cookie)


def session_cookie(reply: Reply) -> str:
    set_cookie = reply.headers["set-cookie"]
    return set_cookie.split(";", 1)[0]


def csrf_of(reply: Reply) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', reply.body.decode())
    assert found, reply.body[:300]
    return found.group(1)


def test_login_status_logout_flow(server: Running) -> None:
    first = admin(server, "GET", "/")
    assert first.status == 303 and first.headers["location"] == "/login"
    form = admin(server, "GET", "/login")
    assert form.status == 200 and b'name="password"' in form.body
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]

    reply = login(server)
    assert reply.status == 303 and reply.headers["location"] == "/"
    set_cookie = reply.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert attribute in set_cookie
    cookie = session_cookie(reply)
    assert PASSWORD not in set_cookie

    page = admin(server, "GET", "/", cookie=cookie)
    assert page.status == 200
    text = page.body.decode()
    assert __version__ in text
    assert server.mgmt.fingerprint in text
    assert "Configuration version" in text
    css = admin(server, "GET", "/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")

    assert admin(server, "POST", "/logout", {}, cookie=cookie).status == 403  # no CSRF token
    out = admin(server, "POST", "/logout", {"csrf": csrf_of(page)}, cookie=cookie)
    assert out.status == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert admin(server, "GET", "/", cookie=cookie).status == 303  # the old cookie is dead


@pytest.mark.parametrize("users", [{"admin": "a-new-password"}, {"someone-else": PASSWORD}])
def test_session_ends_when_the_password_changes_or_the_user_goes(tmp_path: Path,
                                                                  users: dict[str, str]) -> None:
    """z-reset-password (e.g. after a leaked password) must also log out open sessions."""
    write_users(tmp_path)
    with running(tmp_path) as srv:
        cookie = session_cookie(login(srv))
        assert admin(srv, "GET", "/", cookie=cookie).status == 200
        write_users(tmp_path, users)
        assert admin(srv, "GET", "/", cookie=cookie).status == 303
        write_users(tmp_path)  # the old password again: the ended session stays ended
        assert admin(srv, "GET", "/", cookie=cookie).status == 303


def test_wrong_password_and_forged_cookie(server: Running) -> None:
    bad = login(server, password="nope")
    assert bad.status == 401 and b"Wrong user name or password" in bad.body
    assert "lockgate_session" not in bad.headers.get("set-cookie", "")
    assert admin(server, "GET", "/", cookie="lockgate_session=forged").status == 303


def test_cross_site_post_is_refused(server: Running) -> None:
    reply = admin(server, "POST", "/login", {"username": "admin", "password": PASSWORD},
                  origin="https://evil.example")
    assert reply.status == 403 and "set-cookie" not in reply.headers
    # A form from another site carries no login cookie (SameSite=Strict), so no token.
    forged = admin(server, "POST", "/login", {"username": "admin", "password": PASSWORD,
                                              "csrf": "guessed"}, origin="null")
    assert forged.status == 403 and "lockgate_session" not in forged.headers.get("set-cookie", "")


def test_login_lockout_shared_with_rest(tmp_path: Path) -> None:
    write_users(tmp_path)
    with running(tmp_path, FailureLimiter(max_failures=2, window=60, lockout=30)) as srv:
        assert login(srv, password="a").status == 401
        locked = login(srv, password="b")
        assert locked.status == 429 and int(locked.headers["retry-after"]) > 0
        assert login(srv).status == 429
        # The REST port waits too: one limiter for both.
        assert srv.request("GET", "/api/tm/1.0", auth=basic("admin", PASSWORD)).status == 429


def test_status_page_shows_health_and_escapes(server: Running) -> None:
    hostile = "<script>alert(1)</script>"
    node = f"{hostile}:80"
    assert server.api("PUT", "/api/tm/1.0/config/active/pools/web", {
        "properties": {"basic": {"nodes_table": [{"node": node}, {"node": "127.0.0.1:81"}]}}},
    ).status == 201
    assert server.api("PUT", "/api/tm/1.0/config/active/virtual_servers/site", {
        "properties": {"basic": {"port": 18080, "pool": "web"}}}).status == 201
    status.run_folder(server.state_dir).mkdir(parents=True, exist_ok=True)
    status.write_worker_status(server.state_dir, 0, {
        "virtual_servers": {"site": {"requests": 41, "connections_current": 2}},
        "pools": {"web": {"nodes": {node: {"state": "dead", "failures": 4},
                                    "127.0.0.1:81": {"state": "alive"}}}}})
    cookie = session_cookie(login(server))
    text = admin(server, "GET", "/", cookie=cookie).body.decode()
    assert hostile not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;:80" in text
    assert re.search(r'class="dead">dead<', text)
    assert re.search(r'class="alive">alive<', text)
    assert "<td>41</td>" in text


def test_unconfigured_appliance_page(tmp_path: Path) -> None:
    with running(tmp_path) as srv:  # no users file
        page = admin(srv, "GET", "/")
        assert page.status == 200 and b"not been configured yet" in page.body
        assert login(srv).status == 503
        write_users(tmp_path)  # first boot finishes while the UI runs
        assert login(srv).status == 303


def test_unknown_page_and_method(server: Running) -> None:
    assert admin(server, "GET", "/nope").status == 404
    wrong = admin(server, "GET", "/logout")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"


def test_security_headers_allow_only_own_scripts(server: Running) -> None:
    page = admin(server, "GET", "/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    js = admin(server, "GET", "/chart.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")


def test_pool_and_virtual_server_pages_use_the_rest_api_rules(server: Running) -> None:
    cookie = session_cookie(login(server))
    csrf = csrf_of(admin(server, "GET", "/config/pools/new", cookie=cookie))
    bad = admin(server, "POST", "/config/pools/new", {
        "csrf": csrf, "name": "web", "basic.nodes_table[0].node": "127.0.0.1",
        "basic.nodes_table[0].weight": "1", "load_balancing.algorithm": "round_robin"},
        cookie=cookie)
    assert bad.status == 422
    assert re.search(r'data-field="basic.nodes_table\[0\].node">expected &#34;host:port&#34;',
                     bad.body.decode()), bad.body.decode()[-1500:]
    made = admin(server, "POST", "/config/pools/new", {
        "csrf": csrf, "name": "web", "basic.nodes_table[0].node": "127.0.0.1:8080",
        "basic.nodes_table[0].weight": "2", "basic.nodes_table[0].state": "active",
        "basic.nodes_table[1].node": "", "basic.nodes_table[1].weight": "",
        "basic.nodes_table[1].state": "", "basic.monitors": "",
        "load_balancing.algorithm": "weighted_round_robin", "basic.passive_monitoring": "on"},
        cookie=cookie)
    assert made.status == 303 and made.headers["location"] == "/config/pools"
    pool = server.api("GET", "/api/tm/1.0/config/active/pools/web").json()["properties"]
    assert pool["basic"]["nodes_table"] == [{"node": "127.0.0.1:8080", "weight": 2,
                                            "state": "active"}]
    assert pool["load_balancing"]["algorithm"] == "weighted_round_robin"
    taken = admin(server, "POST", "/config/virtual_servers/new", {
        "csrf": csrf, "name": "site", "basic.port": "9070", "basic.pool": "web"}, cookie=cookie)
    assert taken.status == 422 and b'data-field="basic.port"' in taken.body
    missing = admin(server, "POST", "/config/virtual_servers/new", {
        "csrf": csrf, "name": "site", "basic.port": "18081", "basic.pool": "nope"}, cookie=cookie)
    assert missing.status == 409 and b"nope" in missing.body
    markup = admin(server, "POST", "/config/monitors/new", {
        "csrf": csrf, "name": "<b>x</b>"}, cookie=cookie)
    assert markup.status == 422 and b"<b>x</b>" not in markup.body
    assert b"&lt;b&gt;x&lt;/b&gt;" in markup.body
    in_use = admin(server, "POST", "/config/pools/web/delete", {"csrf": csrf}, cookie=cookie)
    assert in_use.status == 303  # nothing uses it yet
    assert server.api("GET", "/api/tm/1.0/config/active/pools/web").status == 404
    assert admin(server, "POST", "/config/pools/web/delete", {}, cookie=cookie).status == 403
    events = admin(server, "GET", "/events", cookie=cookie).body.decode()
    assert "admin created pools web" in events and "admin deleted pools web" in events
    assert "admin logged in" in events
    system = admin(server, "GET", "/system", cookie=cookie)
    assert system.status == 200 and server.mgmt.fingerprint.encode() in system.body


def test_status_page_says_when_nothing_is_proxied_for_want_of_a_licence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lockgate.runtime.licence import NOT_ACCEPTED

    monkeypatch.delenv("LOCKGATE_LICENCE_DEV", raising=False)
    write_users(tmp_path)
    with running(tmp_path) as srv:
        text = admin(srv, "GET", "/", cookie=session_cookie(login(srv))).body.decode()
    assert f'<th>Licence</th><td class="error">{NOT_ACCEPTED}' in text


def test_status_page_shows_the_licence_in_force(server: Running) -> None:
    text = admin(server, "GET", "/", cookie=session_cookie(login(server))).body.decode()
    assert re.search(r"<th>Licence</th><td>[^<]*not for production", text), text


# ---- System page: upgrade, switch, roll back (the fake A/B appliance of test_api_system) --


@pytest.fixture
def system_server(tmp_path: Path, appliance: Any, bundles: dict[str, Path]  # noqa: F811
                  ) -> Iterator[tuple[Running, Any, list[str]]]:
    from lockgate.runtime.system.keys import load_public
    from lockgate.runtime.system.rest import SystemApi

    write_users(tmp_path / "mgmt")
    reboots: list[str] = []
    system = SystemApi(lambda: appliance.machine, lambda: [load_public(bundles["pub"])],
                       reboots.append)
    with serving(tmp_path / "mgmt", system) as srv:
        yield srv, appliance, reboots


def upload(srv: Running, cookie: str, body: bytes, query: str, csrf: str | None
           ) -> Reply:
    headers = {"Cookie": cookie, "Content-Type": "application/octet-stream"}
    if csrf is not None:
        headers["X-Lockgate-CSRF"] = csrf
    return srv.request("PUT", f"/system/upgrade{query}", body, port=srv.admin_port,
                       headers=headers)


def test_system_page_upgrades_switches_and_rolls_back(
        system_server: tuple[Running, Any, list[str]], bundles: dict[str, Path]  # noqa: F811
        ) -> None:
    srv, box, reboots = system_server
    cookie = session_cookie(login(srv))
    page = admin(srv, "GET", "/system", cookie=cookie)
    assert page.status == 200, page.body[:500]
    text = page.body.decode()
    assert 'id="slots"' in text and "<td>1.0.0</td>" in text and 'id="upload"' in text
    assert '<script src="/system.js"></script>' in text and "<script>" not in text
    csrf = csrf_of(page)
    slot_b = box.read_partition(box.b)
    js = admin(srv, "GET", "/system.js")
    assert js.status == 200 and b"X-Lockgate-CSRF" in js.body

    # Refused before anything is written: no CSRF token, a wrong one, no confirmation,
    # another site, no session.
    good = bundles["2.0.0"].read_bytes()
    assert upload(srv, cookie, good, "?confirm=yes", None).status == 403
    assert upload(srv, cookie, good, "?confirm=yes", "forged").status == 403
    assert upload(srv, cookie, good, "?restart=no", csrf).status == 400
    assert upload(srv, "lockgate_session=forged", good, "?confirm=yes", csrf).status == 303
    assert srv.request("PUT", "/system/upgrade?confirm=yes", good, port=srv.admin_port,
                       headers={"Cookie": cookie, "X-Lockgate-CSRF": csrf,
                                "Origin": "https://evil.example"}).status == 403
    # A bad bundle: the one-line reason comes back (system.js shows it on the page).
    bad = upload(srv, cookie, os.urandom(MiB), "?confirm=yes&restart=no", csrf)
    assert bad.status == 422 and "\n" not in bad.json()["error_text"], bad.body
    assert "bundle" in bad.json()["error_text"]
    assert box.read_partition(box.b) == slot_b
    assert not (box.state.base / "upgrade/upload.upgrade").exists()

    done = upload(srv, cookie, good, "?confirm=yes&restart=no", csrf)
    assert done.status == 200, done.body
    assert done.json()["version"] == "2.0.0" and done.json()["slot"] == "b"
    assert box.read_partition(box.b, FS_SIZE) == bundles["fs-2.0.0"].read_bytes()
    assert box.env["next_entry"] == "lockgate-2.0.0" and reboots == []

    text = admin(srv, "GET", "/system", cookie=cookie).body.decode()
    assert "<td>2.0.0</td>" in text and "Last upload: installed 2.0.0" in text
    assert 'action="/system/switch"' in text and 'id="rollback"' in text

    # Switch: the first POST only asks; the confirmed one sets GRUB's default.
    assert admin(srv, "POST", "/system/switch", {"version": "2.0.0"},
                 cookie=cookie).status == 403  # no CSRF token
    ask = admin(srv, "POST", "/system/switch", {"csrf": csrf, "version": "2.0.0"},
                cookie=cookie)
    assert ask.status == 200 and b'id="confirm"' in ask.body
    assert box.env["saved_entry"] == "lockgate-1.0.0"
    switched = admin(srv, "POST", "/system/switch", {"csrf": csrf, "version": "2.0.0",
                                                     "confirm": "yes"}, cookie=cookie)
    assert switched.status == 200 and b"lockgate-2.0.0 is now the default" in switched.body
    assert box.env["saved_entry"] == "lockgate-2.0.0" and reboots == []
    missing = admin(srv, "POST", "/system/switch", {"csrf": csrf, "version": "7.0.0",
                                                    "confirm": "yes"}, cookie=cookie)
    assert missing.status == 422 and b'id="problem"' in missing.body
    assert b"7.0.0 is not installed" in missing.body

    # Roll back (to the version not running: 2.0.0 here) with a restart.
    ask = admin(srv, "POST", "/system/rollback", {"csrf": csrf}, cookie=cookie)
    assert ask.status == 200 and b"stay with the newer version" in ask.body
    back = admin(srv, "POST", "/system/rollback", {"csrf": csrf, "confirm": "yes",
                                                   "restart": "yes"}, cookie=cookie)
    assert back.status == 200 and b"restarts now" in back.body, back.body[-800:]
    deadline = time.monotonic() + 5
    while not reboots and time.monotonic() < deadline:  # the reboot follows the reply
        time.sleep(0.05)
    assert reboots == ["lockgate-2.0.0"]

    events = admin(srv, "GET", "/events", cookie=cookie).body.decode()
    for said in ("installed 2.0.0 into slot b", "upgrade refused", "made the default: 2.0.0",
                 "rolled back to 2.0.0"):
        assert said in events, said


def test_system_page_off_an_appliance_says_why(server: Running) -> None:
    cookie = session_cookie(login(server))
    page = admin(server, "GET", "/system", cookie=cookie)
    assert page.status == 200 and b"Root slots:" in page.body and b'id="upload"' not in page.body


def test_health_changes_are_recorded_with_no_page_open(tmp_path: Path) -> None:
    """The management process watches the workers' merged status itself: a node going
    down lands in the event log although nobody requests a page."""
    write_users(tmp_path)
    status.run_folder(tmp_path).mkdir(parents=True, exist_ok=True)

    def worker_says(state: str) -> None:
        status.write_worker_status(tmp_path, 0, {"pools": {"web": {"nodes": {
            "192.0.2.7:80": {"state": state, "connections": 0, "requests": 0,
                             "failures": 0}}}}})

    events = tmp_path / "runtime/events.jsonl"
    with running(tmp_path):
        worker_says("alive")
        time.sleep(1.5)  # the watcher reads every second: it has seen "alive" by now
        worker_says("dead")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                events.exists() and "alive -> dead" in events.read_text()):
            time.sleep(0.1)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["kind"], e["text"]) for e in lines if e["kind"] == "health"] == [
        ("health", "pool web: node 192.0.2.7:80 alive -> dead")]


class MemberAdmin:
    """The Admin UI of a real ``lockgate runtime serve`` member, for login()/admin()."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self.admin_port = member.admin_port

    def request(self, method: str, path: str, body: bytes | str | None = None,
                port: int | None = None, headers: dict[str, str] | None = None) -> Reply:
        import http.client
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pins are checked in the cluster tests
        conn = http.client.HTTPSConnection("127.0.0.1", port or self.admin_port,
                                           context=context, timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return Reply(reply.status, {k.lower(): v for k, v in reply.getheaders()},
                         reply.read())
        finally:
            conn.close()


def test_system_page_lists_cluster_members_with_fingerprints_and_health(tmp_path: Path) -> None:
    """Two real members on loopback: tm1's System page shows tm2's fingerprint, its
    heartbeat state and the configuration replication link, then tm2 leaving."""
    from cluster_support import Member, wait_for
    from test_runtime_support import free_port

    a, b = (Member(name, tmp_path / name / "state", rest_port=free_port(),
                   admin_port=free_port(), control_port=free_port()) for name in ("tm1", "tm2"))
    try:
        a.start()
        b.start()
        assert b.join(a, a.fingerprint).returncode == 0
        ui = MemberAdmin(a)
        cookie = session_cookie(login(ui))

        def row(name: str) -> str:
            page = admin(ui, "GET", "/system", cookie=cookie).body.decode()
            found = re.search(rf"<tr><td>{name}</td>.*?</tr>", page)
            return found.group(0) if found else ""

        wait_for(lambda: "alive (heard" in row("tm2")
                 and "configuration replication: connected" in row("tm2"), 20, step=0.2)
        assert b.fingerprint in row("tm2") and a.fingerprint in row("tm1")
        assert "this traffic manager" in row("tm1")
        b.stop()
        wait_for(lambda: "leaving" in row("tm2"), 10, step=0.2)
    finally:
        b.stop()
        a.stop()


def test_system_page_installs_and_removes_a_licence_key(
        server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key checked as the runtime checks it (the reason next to the field, nothing
    written when refused); its limits show at once; removing it returns to the CE."""
    from licence_keys import signed_key, trust_issuer

    from lockgate.runtime.licence import DEV_ENV, key_file

    monkeypatch.delenv(DEV_ENV, raising=False)  # the suite's development licence
    issuer = trust_issuer(tmp_path / "issuers", monkeypatch)
    cookie = session_cookie(login(server))
    page = admin(server, "GET", "/system", cookie=cookie)
    csrf = csrf_of(page)
    assert "community" in re.search(r'<table id="licence">.*?</table>', page.body.decode(),
                                    re.S).group(0)  # type: ignore[union-attr]

    def send(action: str, content: bytes, token: str = csrf) -> Reply:
        boundary = "lockgate-licence-boundary"
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in (("csrf", token), ("action", action)))
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="licence_key"; '
                 'filename="site.key"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + content + f"\r\n--{boundary}--\r\n".encode())
        return server.request("POST", "/system/licence", body, port=server.admin_port,
                              headers={"Cookie": cookie, "Content-Type":
                                       f"multipart/form-data; boundary={boundary}"})

    key = signed_key(issuer, serial="L-0099", bandwidth_mbit_s=500, max_cluster_size=8)
    assert send("install", key, token="forged").status == 403
    for bad, reason in ((b"", "Choose a licence key"), (signed_key(None), "signature is invalid"),
                        (signed_key(issuer, expires="2001-01-01"), "expired on 2001-01-01")):
        refused = send("install", bad)
        assert refused.status == 422
        found = re.search(r'id="error-licence_key">([^<]*)<', refused.body.decode())
        assert found and reason in found.group(1), refused.body[-500:]
        assert not key_file(server.state_dir).exists()
    done = send("install", key)
    assert done.status == 200 and b"Licence key L-0099 installed" in done.body
    assert key_file(server.state_dir).read_bytes() == key
    assert key_file(server.state_dir).stat().st_mode & 0o077 == 0
    text = done.body.decode()
    assert "licensed (key L-0099)" in text and "500 Mb/s" in text and "at most 8" in text
    rest = server.api("GET", "/api/tm/1.0/status/local_tm/licence").json()
    assert "L-0099" in json.dumps(rest)  # what the runtime applies
    removed = send("community", b"")
    assert removed.status == 200 and not key_file(server.state_dir).exists()
    assert "community" in removed.body.decode()
    events = admin(server, "GET", "/events", cookie=cookie).body.decode()
    assert "installed licence key L-0099" in events and "removed the licence key" in events
