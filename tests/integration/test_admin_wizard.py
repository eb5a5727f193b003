"""The web initial-configuration wizard over real HTTPS: token claim, steps, Finish, 410."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_api_support import Reply, Running, basic, running, write_users

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from licence_keys import signed_key, trust_issuer
from test_firstboot_apply_register import make_cert, sd_server

from lockgate.paths import StatePaths

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NEW_PASSWORD = "wizard pass 1"


@pytest.fixture
def unconfigured(tmp_path: Path) -> Iterator[Running]:
    state = tmp_path / "var/lib/lockgate"  # the appliance's layout under a test root
    state.mkdir(parents=True)
    with running(state) as srv:
        yield srv


def get(srv: Running, path: str, cookie: str | None = None) -> Reply:
    return srv.request("GET", path, port=srv.admin_port,
                       headers={"Cookie": cookie} if cookie else {})


def post(srv: Running, path: str, form: dict[str, str], cookie: str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    all_headers = {**FORM, **(headers or {})}
    if cookie:
        all_headers["Cookie"] = cookie
    return srv.request("POST", path, urlencode(form), port=srv.admin_port, headers=all_headers)


def claim(srv: Running) -> tuple[str, str]:
    url = srv.mgmt.wizard_url()
    assert url is not None and "/wizard?token=" in url
    reply = get(srv, url[url.index("/wizard"):])
    assert reply.status == 303, reply.body
    set_cookie = reply.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict"):
        assert attribute in set_cookie
    cookie = set_cookie.split(";", 1)[0]
    page = get(srv, "/wizard", cookie)
    assert page.status == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert found
    return cookie, found.group(1)


def complete(srv: Running, cookie: str, csrf: str) -> Reply:
    steps = [("/wizard", {}),
             ("/wizard/password", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
             ("/wizard/licence", {"accept_license": "accept"}),
             ("/wizard/time", {"timezone": "europe/london", "ntp_server": "ntp.example.org"}),
             ("/wizard/security", {}),  # box unticked: intrusion prevention off
             ("/wizard/licence-key", {"edition": "community"})]
    for path, form in steps:
        reply = post(srv, path, {**form, "csrf": csrf, "action": "next"}, cookie)
        assert reply.status == 303, (path, reply.body[:400])
    summary = get(srv, "/wizard/summary", cookie)
    text = summary.body.decode()
    assert summary.status == 200
    assert "cluster_host=" in text and "cluster_fingerprint=" + srv.mgmt.fingerprint in text
    assert NEW_PASSWORD.replace(" ", "&#32;") not in text and NEW_PASSWORD not in text
    assert "&lt;redacted&gt;" in text
    assert NEW_PASSWORD in get(srv, "/wizard/summary?show=1", cookie).body.decode()
    return post(srv, "/wizard/summary", {"csrf": csrf, "action": "finish"}, cookie)


def test_only_the_console_token_claims_the_wizard(unconfigured: Running) -> None:
    srv = unconfigured
    assert get(srv, "/wizard?token=guess").status == 403
    assert get(srv, "/wizard").status == 403  # no token, no cookie
    claim(srv)
    url = srv.mgmt.wizard_url() or ""
    again = get(srv, url[url.index("/wizard"):])  # the token is spent
    assert again.status == 403 and b"already been claimed" in again.body
    assert get(srv, "/wizard/password", "lockgate_wizard=forged").status == 403


def test_finish_writes_what_user_data_would_and_the_wizard_is_gone(unconfigured: Running) -> None:
    srv = unconfigured
    cookie, csrf = claim(srv)
    assert post(srv, "/wizard/password", {"password": "x", "confirm": "x"}, cookie).status == 403
    bad = post(srv, "/wizard/password", {"password": "short", "confirm": "short",
                                         "csrf": csrf}, cookie)
    assert bad.status == 422 and b'id="error-password"' in bad.body
    assert b"at least 6 characters" in bad.body
    bad = post(srv, "/wizard/time", {"timezone": "Mars/Base", "ntp_server": "bad host!",
                                     "csrf": csrf}, cookie)
    assert bad.status == 422 and b'id="error-timezone"' in bad.body
    assert b'id="error-ntp_server"' in bad.body
    done = complete(srv, cookie, csrf)
    assert done.status == 200 and b"configured" in done.body

    paths = StatePaths(srv.state_dir)
    assert json.loads((paths.config / "time.json").read_text()) == {"ntp_server": "ntp.example.org"}
    assert json.loads((paths.config / "security.json").read_text()) == {
        "ssh_intrusion_prevention": False}
    assert (paths.config / "timezone").read_text().strip() == "Europe/London"
    assert json.loads(paths.licence.read_text())["accepted"] is True
    assert NEW_PASSWORD not in paths.users.read_text()
    # The new password works on the REST API and the Admin UI; the wizard answers 410.
    assert srv.request("GET", "/api/tm/", auth=basic("admin", NEW_PASSWORD)).status == 200
    page = get(srv, "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert token
    login = post(srv, "/login", {"username": "admin", "password": NEW_PASSWORD,
                                 "csrf": token.group(1)},
                 page.headers["set-cookie"].split(";", 1)[0])
    assert login.status == 303 and login.headers["location"] == "/"
    assert get(srv, "/wizard", cookie).status == 410
    assert post(srv, "/wizard/summary", {"csrf": csrf, "action": "finish"}, cookie).status == 410
    url = srv.mgmt.wizard_url() or ""
    assert get(srv, url[url.index("/wizard"):]).status == 410


def test_back_and_an_unanswered_step(unconfigured: Running) -> None:
    srv = unconfigured
    cookie, csrf = claim(srv)
    for step in ("", "/password", "/licence", "/time", "/security", "/licence-key", "/summary"):
        page = get(srv, "/wizard" + step, cookie)
        assert page.status == 200 and len(page.body) < 100 * 1024, (step, len(page.body))
        assert "script-src 'self'" in page.headers["content-security-policy"]
    back = post(srv, "/wizard/time", {"csrf": csrf, "action": "back"}, cookie)
    assert back.status == 303 and back.headers["location"] == "/wizard/licence"
    summary = get(srv, "/wizard/summary", cookie)
    assert b'id="error-missing"' in summary.body and b"Administrator password" in summary.body
    refused = post(srv, "/wizard/summary", {"csrf": csrf, "action": "finish"}, cookie)
    assert refused.status == 303 and refused.headers["location"] == "/wizard/password"
    # The first unanswered step, in the console wizard's order: the licence comes next.
    assert post(srv, "/wizard/password", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
                                          "csrf": csrf}, cookie).status == 303
    refused = post(srv, "/wizard/summary", {"csrf": csrf, "action": "finish"}, cookie)
    assert refused.headers["location"] == "/wizard/licence"
    assert not StatePaths(srv.state_dir).users.exists()


def test_a_configured_appliance_has_no_wizard(tmp_path: Path) -> None:
    from lockgate.firstboot.apply.licence import accept_licence

    state = tmp_path / "var/lib/lockgate"
    write_users(state)
    accept_licence(tmp_path, True)
    with running(state) as srv:
        assert srv.mgmt.wizard_url() is None
        assert get(srv, "/wizard?token=x").status == 410


def test_a_password_from_user_data_without_the_licence_still_needs_the_wizard(
        tmp_path: Path) -> None:
    """user-data gave a password but no accept_license: the wizard finishes the job, and
    the admin may log in meanwhile with that password."""
    state = tmp_path / "var/lib/lockgate"
    write_users(state)
    with running(state) as srv:
        assert srv.mgmt.wizard_url() is not None
        cookie, csrf = claim(srv)
        assert complete(srv, cookie, csrf).status == 200
        assert get(srv, "/wizard", cookie).status == 410
        assert srv.request("GET", "/api/tm/", auth=basic("admin", NEW_PASSWORD)).status == 200


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "lockgate-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="license_key"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_a_licence_key_upload_is_checked_and_installed(
        unconfigured: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = unconfigured
    issuer = trust_issuer(tmp_path / "issuers", monkeypatch)
    cookie, csrf = claim(srv)

    def upload(content: bytes) -> Reply:
        body, ctype = multipart({"csrf": csrf, "edition": "key", "action": "next"}, "key.lic",
                                content)
        return srv.request("POST", "/wizard/licence-key", body, port=srv.admin_port,
                           headers={"Content-Type": ctype, "Cookie": cookie})

    empty = upload(b"")
    assert empty.status == 422 and b'id="error-license_key"' in empty.body
    assert upload(b"x" * (1024 * 1024 + 1)).status == 413  # the server's body limit first
    # Refused by the runtime's own licence check, the reason next to the field, and
    # nothing of the refused file kept.
    paths = StatePaths(srv.state_dir)
    for bad, reason in ((b"-----BEGIN LOCKGATE LICENCE-----\nabc\n", "not a lockgate licence"),
                        (signed_key(None), "signature is invalid"),
                        (signed_key(issuer, expires="2001-01-01"), "expired on 2001-01-01")):
        refused = upload(bad)
        assert refused.status == 422, refused.body[-600:]
        found = re.search(r'id="error-license_key">([^<]*)<', refused.body.decode())
        assert found and reason in found.group(1) and "the uploaded file" in found.group(1)
        assert not (paths.config / "licence.upload").exists()
    key = signed_key(issuer)
    assert upload(key).status == 303
    assert b"key.lic" not in get(srv, "/wizard/summary", cookie).body  # not the client's path
    done = complete_with_key(srv, cookie, csrf)
    assert done.status == 200
    assert (paths.config / "licence.key").read_bytes() == key
    assert (paths.config / "licence.key").stat().st_mode & 0o077 == 0
    assert not (paths.config / "licence.upload").exists()


def complete_with_key(srv: Running, cookie: str, csrf: str, summary: str = "") -> Reply:
    for path, form in [("/wizard/password", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
                       ("/wizard/licence", {"accept_license": "accept"}),
                       ("/wizard/time", {"timezone": "UTC", "ntp_server": ""})]:
        assert post(srv, path, {**form, "csrf": csrf}, cookie).status == 303
    assert summary in get(srv, "/wizard/summary", cookie).body.decode()
    return post(srv, "/wizard/summary", {"csrf": csrf, "action": "finish"}, cookie)


def test_services_director_registration_from_the_wizard(
        unconfigured: Running, tmp_path: Path) -> None:
    """The licence-key step's Services Director option: errors next to each field, then
    Finish sends first boot's registration to a real loopback HTTPS Services Director."""
    srv = unconfigured
    cookie, csrf = claim(srv)
    cert = make_cert()

    def choose(fields: dict[str, str]) -> Reply:
        body, ctype = multipart({"csrf": csrf, "edition": "sd", "action": "next", **fields},
                                "", b"")
        return srv.request("POST", "/wizard/licence-key", body, port=srv.admin_port,
                           headers={"Content-Type": ctype, "Cookie": cookie})

    bad = choose({"sd_address": "sd.example.com", "sd_registration_key": "",
                  "sd_cert": "bm90IGEgY2VydA=="})
    assert bad.status == 422
    text = bad.body.decode()
    for name in ("sd_address", "sd_registration_key", "sd_cert"):
        assert f'id="error-{name}"' in text, name
    assert 'value="sd.example.com"' in text  # what the user typed is kept
    with sd_server(cert, tmp_path) as (address, received):
        assert choose({"sd_address": address, "sd_registration_key": "policy-7",
                       "sd_cert": cert.pem}).status == 303
        done = complete_with_key(srv, cookie, csrf, summary=f"registered with the Services "
                                                           f"Director at {address}")
        assert done.status == 200, done.body[-600:]
        assert [(r[1], r[2]["registration_policy"]) for r in received.requests] == [
            ("/api/tmcm/2.9/instance/register", "policy-7")]
        assert received.requests[0][2]["fingerprint"] == srv.mgmt.fingerprint
    config = StatePaths(srv.state_dir).config
    assert json.loads((config / "services_director.json").read_text())["sd_address"] == address
    assert not (config / "licence.key").exists()


def test_community_edition_stays_the_default(unconfigured: Running) -> None:
    cookie, _ = claim(unconfigured)
    page = get(unconfigured, "/wizard/licence-key", cookie).body.decode()
    assert re.search(r'value="community" id="edition-community" checked', page)
    assert not re.search(r'value="(key|sd)" id="edition-(key|sd)" checked', page)
