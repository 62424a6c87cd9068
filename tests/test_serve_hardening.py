"""The server under abuse and trouble, through the real server on loopback: many clients,
a locked database, undecodable paths, forged log lines, a missing or broken database,
broken templates. Every answer is a page with the security headers."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from conftest import Project, free_port
from web_servers import Server, start, start_app, with_members

from newsletter.web.server import Limits, RateLimiter

ONE_CLICK_FORM = {"List-Unsubscribe": "One-Click"}
HELPLINE = 'Modern Slavery Helpline on <a href="tel:08000121700">08000 121 700</a>'


@pytest.fixture
def members_project(project: Project) -> Project:
    return with_members(project)


def assert_secured(response: httpx.Response) -> None:
    """The security headers every answer carries, and no cookie."""
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'") and "frame-ancestors 'none'" in policy
    assert "set-cookie" not in response.headers


def assert_page(response: httpx.Response) -> None:
    """One of the server's own pages: secured, HTML, the helpline, no traceback."""
    assert_secured(response)
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert HELPLINE in response.text
    assert "Traceback" not in response.text


def get_raw(server: Server, raw_path: str, method: str = "GET") -> httpx.Response:
    """A request whose path is sent exactly as written (no normalising, no quoting)."""
    with httpx.Client() as client:
        request = client.build_request(method, server.url)
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        return client.send(request)


# --------------------------------------------------------------------------- rate limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_gives_each_client_its_limit_per_window_then_a_fresh_window() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)
    assert [limiter.allow("203.0.113.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("203.0.113.2")  # another client has its own allowance
    clock.now += 59.9
    assert not limiter.allow("203.0.113.1")
    clock.now += 0.1  # the window that opened with the first request has ended
    assert [limiter.allow("203.0.113.1") for _ in range(4)] == [True, True, True, False]


def test_the_limiter_remembers_a_bounded_number_of_clients_however_many_come() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 60.0, max_clients=1000, clock=clock)
    clients = [f"198.51.{i // 256}.{i % 256}" for i in range(20_000)]
    for client in clients:  # all within one window: none has expired
        assert limiter.allow(client)
        clock.now += 0.001
    assert len(limiter) == 1000
    assert limiter.allow(clients[-1]) and not limiter.allow(clients[-1])  # still limited
    assert limiter.allow(clients[0])  # forgotten first: a fresh allowance
    clock.now += 60
    assert limiter.allow("192.0.2.1")
    assert len(limiter) == 1  # every expired window dropped


def test_through_the_server_a_clients_allowance_returns_when_its_window_ends(
        members_project: Project) -> None:
    running = start_app(members_project, Limits(rate_limit=3, rate_window=1.0))
    try:
        url = f"{running.url}/unsubscribe/garbage"
        with httpx.Client() as client:
            answers = [client.get(url) for _ in range(4)]
            assert [a.status_code for a in answers] == [400, 400, 400, 429]
            refused = answers[3]
            assert refused.headers["retry-after"] == "1"
            assert "Please wait a minute and try again." in refused.text
            assert_page(refused)
            time.sleep(1.2)
            assert client.get(url).status_code == 400
    finally:
        running.stop()


def test_through_the_server_a_full_table_forgets_the_oldest_client_first(
        members_project: Project) -> None:
    running = start_app(members_project, Limits(rate_limit=2, rate_clients=3))
    url = f"{running.url}/unsubscribe/garbage"
    try:
        with httpx.Client() as client:
            def status(address: str) -> int:
                return client.get(url, headers={"x-forwarded-for": address}).status_code

            assert [status("203.0.113.1") for _ in range(3)] == [400, 400, 429]
            assert [status("203.0.113.2"), status("203.0.113.3")] == [400, 400]
            assert status("203.0.113.1") == 429  # three clients: all remembered
            assert status("203.0.113.4") == 400  # a fourth: the oldest is forgotten
            assert status("203.0.113.1") == 400
    finally:
        running.stop()


# --------------------------------------------------------------------------- locked database


@contextmanager
def write_lock(project: Project) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock, as an import does for its
    whole transaction; rolled back at the end unless committed before."""
    conn = sqlite3.connect(project.root / "newsletter.db", isolation_level=None,
                           check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO lists (name, created_at) VALUES ('imported', '2026-01-01')")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_a_one_click_post_during_an_import_waits_for_it_then_unsubscribes(
        members_project: Project) -> None:
    running = start(members_project)
    email = "d.okafor@west.example.org"
    try:
        url = f"{running.url}/unsubscribe/{running.token(email)}"
        with write_lock(members_project) as importer:
            threading.Timer(2.0, importer.execute, ("COMMIT",)).start()
            began = time.monotonic()
            response = httpx.post(url, data=ONE_CLICK_FORM, timeout=60)
            waited = time.monotonic() - began
        assert response.status_code == 200, response.text
        assert "You have been unsubscribed" in response.text
        assert waited >= 1.9
        assert running.status(email) == "unsubscribed"
        assert running.query("SELECT name FROM lists WHERE name = 'imported'")  # theirs too
    finally:
        running.stop()


def test_a_lock_held_longer_than_the_server_waits_gets_a_page_asking_to_try_again(
        members_project: Project) -> None:
    running = start_app(members_project, Limits(busy_wait=1.0))
    email = "d.okafor@west.example.org"
    token = running.token(email)
    url = f"{running.url}/unsubscribe/{token}"
    try:
        with write_lock(members_project):
            busy = httpx.post(url, data=ONE_CLICK_FORM, timeout=60)
            assert running.status(email) == "subscribed"
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "60"
        assert_page(busy)
        assert "Please try again in a minute" in busy.text
        assert "Nothing has changed yet" in busy.text
        again = httpx.post(url, data=ONE_CLICK_FORM, timeout=60)  # the lock is gone
        assert again.status_code == 200
        assert running.status(email) == "unsubscribed"
    finally:
        log = running.stop()
    assert "the members database stayed locked for 1 s" in log
    assert "POST /unsubscribe/<token> 503" in log and token not in log
    assert "Traceback" not in log


def test_requests_waiting_for_a_locked_database_hold_up_nothing_else(
        members_project: Project) -> None:
    # more waiting unsubscribes than the server has worker threads (40): the archive, and
    # reading the database, must still answer while they wait
    running = start_app(members_project, Limits(busy_wait=30.0, rate_limit=1000))
    email = "g.sandhu@west.example.org"
    url = f"{running.url}/unsubscribe/{running.token(email)}"
    try:
        with ThreadPoolExecutor(60) as pool:
            with write_lock(members_project) as importer:
                waiting = [pool.submit(httpx.post, url, data=ONE_CLICK_FORM, timeout=60)
                           for _ in range(60)]
                time.sleep(1.5)
                began = time.monotonic()
                archive = httpx.get(f"{running.url}/", timeout=60)
                confirm = httpx.get(url, timeout=60)
                meanwhile = time.monotonic() - began
                assert not any(f.done() for f in waiting)
                importer.execute("COMMIT")
            answers = [f.result() for f in waiting]
        assert archive.status_code == 200 and confirm.status_code == 200
        assert meanwhile < 5, meanwhile  # a thread-starved server takes the whole wait
        assert {a.status_code for a in answers} == {200}
        assert running.status(email) == "unsubscribed"
    finally:
        running.stop()


# --------------------------------------------------------------------------- odd paths

UNREADABLE = ["/%00", "/%ff", "/%c0%ae%c0%ae/", "/%ed%a0%80", "/a%e2%80", "/%0d%0a",
              "/%7f", "/%1b%5b31m", "/2016-12/%00index.html", "/unsubscribe/%00",
              "/unsubscribe/%ff", "/unsubscribe/abc%0a"]
NOWHERE = ["/%2e%2e/", "/%2e%2e/newsletter.db", "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
           "/" + "a" * 300, "/" + "a/" * 600, "/%ef%bf%bd", "/%c3%a9t%c3%a9"]


@pytest.fixture
def server(members_project: Project) -> Iterator[Server]:
    running = start(members_project)
    yield running
    running.stop()


def test_paths_that_cannot_be_read_get_a_400_page(server: Server) -> None:
    for path in UNREADABLE:
        response = get_raw(server, path)
        assert response.status_code == 400, path
        assert_page(response)
        assert "This address cannot be read" in response.text
    assert "Traceback" not in server.stop()


def test_paths_to_nowhere_get_the_404_page(server: Server) -> None:
    for path in NOWHERE:
        response = get_raw(server, path)
        assert response.status_code == 404, path
        assert_page(response)
        assert "There is no page at this address." in response.text
    assert "Traceback" not in server.stop()


def test_odd_bytes_in_a_query_change_nothing(server: Server) -> None:
    for path, status in (("/?%00", 200), ("/?q=%ff%00%0d%0a", 200), ("/missing?%00", 404),
                         ("/unsubscribe/garbage?%00", 400), ("/2016-12/?%ff", 200)):
        response = get_raw(server, path)
        assert response.status_code == status, path
        assert_secured(response)
    assert "Traceback" not in server.stop()


def test_a_request_the_http_parser_refuses_is_answered_with_the_headers(server: Server
                                                                        ) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    for line in (b"GET /a\x00b HTTP/1.1", b"GET /a b HTTP/1.1", b"GET /\xff HTTP/1.1"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        assert head.startswith("http/1.1 400"), line
        assert "content-security-policy: default-src 'self'" in head
        assert "x-content-type-options: nosniff" in head and "x-frame-options: deny" in head


# --------------------------------------------------------------------------- the log


def test_a_line_break_in_a_path_cannot_write_a_line_in_the_log(server: Server) -> None:
    for path in ("/%0d%0aGET%20/forged%20200", "/x%0aforged-too", "/%e2%80%a8forged-three",
                 "/%1b%5b2J"):
        get_raw(server, path)
    log = server.stop()
    assert r"GET /\r\nGET /forged 200 400" in log
    assert r"GET /x\nforged-too 400" in log
    assert r"GET /\u2028forged-three 404" in log
    assert r"GET /\x1b[2J 400" in log
    for line in log.split("\n"):
        assert not line.startswith(("GET /forged", "forged")), line
    assert "\r" not in log and "\x1b" not in log and "\u2028" not in log


def test_no_token_reaches_the_log_wherever_it_is_put(server: Server) -> None:
    token = server.token("r.patel@sandwell.example.net")
    payload, signature = token.split(".")
    for path in (f"/unsubscribe/{token}", f"/UNSUBSCRIBE/{token}", f"/unsubscribe%2F{token}",
                 f"//unsubscribe/{token}", f"/unsubscribe/{token}/more", f"/u/{token}",
                 f"/{token}", f"/archive/x{token}y.html", f"/?token={token}",
                 f"/unsubscribe/garbage?again={token}", f"/unsubscribe/{token}%0d%0a"):
        get_raw(server, path)
    get_raw(server, f"/unsubscribe/{token}", "PUT")
    httpx.post(f"{server.url}/unsubscribe/{token}", data=ONE_CLICK_FORM)
    log = server.stop()
    assert payload[:16] not in log and signature[:16] not in log
    assert "POST /unsubscribe/<token> 200" in log
    assert "PUT /unsubscribe/<token> 405" in log
    assert "GET /u/<token> 404" in log and "GET /?<query> 200" in log


# --------------------------------------------------------------------------- the database


def test_serve_refuses_to_start_without_a_members_database(project: Project) -> None:
    project.write("site/index.html", "<!DOCTYPE html><title>Archive</title>")
    result = project.run("serve", "--port", str(free_port()))
    assert result.code == 1
    assert result.err == (
        "newsletter.db: no members database here, so no unsubscribe link could be "
        "recognised (import the members first with 'newsletter subscribers import FILE.csv "
        "--list NAME', or point --config at the newsletter.yaml of the project that sent "
        "the links)\n")
    assert not (project.root / "newsletter.db").exists()


def test_serve_with_the_settings_of_another_project_names_the_database_it_looked_for(
        members_project: Project) -> None:
    shutil.copy(members_project.config, members_project.root / "site" / "newsletter.yaml")
    result = members_project.run("--config", "site/newsletter.yaml", "serve", "--port",
                                 str(free_port()))
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith("site/newsletter.db: no members database here")
    assert not (members_project.root / "site" / "newsletter.db").exists()


@pytest.mark.parametrize("damage", ["corrupt", "removed"])
def test_a_broken_or_vanished_database_gets_an_error_page(members_project: Project,
                                                          damage: str) -> None:
    running = start(members_project)
    token = running.token("e.lloyd@coventry.example.net")
    database = members_project.root / "newsletter.db"
    try:
        if damage == "corrupt":
            database.write_bytes(b"this is not a database\n" * 200)
        else:
            database.unlink()
        for response in (httpx.get(f"{running.url}/unsubscribe/{token}"),
                         httpx.post(f"{running.url}/unsubscribe/{token}",
                                    data=ONE_CLICK_FORM)):
            assert response.status_code == 500
            assert_page(response)
            assert "Something went wrong on our side" in response.text
            assert "unsubscribe@wmasn.example.org" in response.text  # another way out
        assert httpx.get(f"{running.url}/").status_code == 200  # the archive still serves
    finally:
        log = running.stop()
    assert "error answering GET /unsubscribe/<token>" in log
    assert token not in log
    assert database.exists() == (damage == "corrupt")  # never an empty new one


# --------------------------------------------------------------------------- every answer


def test_every_answer_carries_the_security_headers_errors_included(members_project: Project
                                                                   ) -> None:
    running = start_app(members_project, Limits(rate_limit=6, max_body=100))
    url = f"{running.url}/unsubscribe/{running.token('e.lloyd@coventry.example.net')}"
    try:
        with httpx.Client() as client:
            answers = {
                "confirm": (200, client.get(url)),
                "missing": (404, client.get(f"{running.url}/missing.html")),
                "put": (405, client.put(url)),
                "post to the archive": (405, client.post(f"{running.url}/")),
                "too large": (413, client.post(url, content=b"x" * 200, headers={
                    "content-type": "application/x-www-form-urlencoded"})),
                "not one-click": (400, client.post(url, data={"List-Unsubscribe": "No"})),
                "garbage": (400, client.get(f"{running.url}/unsubscribe/garbage")),
            }
            while (limited := client.get(url)).status_code != 429:
                pass
            answers["too many"] = (429, limited)
        for name, (status, response) in answers.items():
            assert response.status_code == status, name
            assert_page(response)
        assert set(answers["put"][1].headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
        assert "This address cannot be used that way" in answers["put"][1].text
        assert "This request is too large." in answers["too large"][1].text
    finally:
        running.stop()


def test_the_archives_own_files_carry_the_headers_too(server: Server) -> None:
    for response in (httpx.get(f"{server.url}/"), httpx.head(f"{server.url}/2016-12/"),
                     httpx.get(f"{server.url}/2016-12/index.html", cookies={"a": "b"})):
        assert response.status_code == 200
        assert_secured(response)


# --------------------------------------------------------------------------- templates


def test_a_network_restyles_the_servers_pages_by_editing_templates(members_project: Project
                                                                   ) -> None:
    templates = members_project.root / "templates"
    done = templates / "web" / "unsubscribed.html.j2"
    done.write_text(done.read_text(encoding="utf-8").replace(
        "You will not receive it again.", "Sorry to see you go &amp; thank you."),
        encoding="utf-8")
    helpline = templates / "shared" / "helpline.j2"  # the words, shared with the archive
    helpline.write_text(helpline.read_text(encoding="utf-8").replace(
        "report online", "tell us online"), encoding="utf-8")
    running = start(members_project)
    try:
        url = f"{running.url}/unsubscribe/{running.token('a.hussain@west.example.org')}"
        assert "tell us online" in httpx.get(url).text
        done_page = httpx.post(url, data=ONE_CLICK_FORM).text
        assert "Sorry to see you go &amp; thank you." in done_page
        assert "tell us online" in done_page
    finally:
        running.stop()


@pytest.mark.parametrize(("damage", "expected"), [
    ("broken", "templates/web/busy.html.j2:3: "),
    ("missing", "templates/web/too-many.html.j2: not found (the server's pages are the "
                "templates in templates/web/)\n"),
])
def test_a_broken_or_missing_page_template_stops_serve_before_it_serves(
        members_project: Project, damage: str, expected: str) -> None:
    web = members_project.root / "templates" / "web"
    if damage == "broken":
        (web / "busy.html.j2").write_text('{% extends "web/base.html.j2" %}\n\n'
                                          "{% block main %}{% if %}{% endblock %}\n",
                                          encoding="utf-8")
    else:
        (web / "too-many.html.j2").unlink()
    result = members_project.run("serve", "--port", str(free_port()))
    assert result.code == 1 and "Traceback" not in result.err
    assert expected in result.err and result.err.count("\n") == 1
