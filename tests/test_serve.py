"""The archive server and one-click unsubscribe, against the real server on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from conftest import Project, free_port
from web_servers import SECRET, Server, start, with_members

from newsletter.members.tokens import Secrets, make_token

OLD_SECRET = "retired-serve-secret-0123456789"


@pytest.fixture
def members_project(project: Project) -> Project:
    return with_members(project)


@pytest.fixture
def server(members_project: Project) -> Iterator[Server]:
    running = start(members_project, "-d", "site")
    yield running
    running.stop()


def assert_no_redirect_no_cookie(response: httpx.Response) -> None:
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers


ONE_CLICK_MULTIPART = {"List-Unsubscribe": (None, "One-Click")}
ONE_CLICK_FORM = {"List-Unsubscribe": "One-Click"}


# --------------------------------------------------------------------------- unsubscribe


def test_get_and_head_show_a_confirmation_and_never_unsubscribe(server: Server) -> None:
    token = server.token("a.hussain@west.example.org")
    page = httpx.get(f"{server.url}/unsubscribe/{token}")
    assert page.status_code == 200
    assert_no_redirect_no_cookie(page)
    assert '<form method="post" action="">' in page.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert "Modern Slavery Helpline on <a href=\"tel:08000121700\">08000 121 700</a>" \
        in page.text
    assert "a.hussain" not in page.text and token not in page.text
    head = httpx.head(f"{server.url}/unsubscribe/{token}")
    assert head.status_code == 200 and head.content == b""
    assert server.status("a.hussain@west.example.org") == "subscribed"


def test_one_click_multipart_post_unsubscribes_and_repeats_are_harmless(server: Server
                                                                        ) -> None:
    token = server.token("d.okafor@west.example.org")
    url = f"{server.url}/unsubscribe/{token}"
    first = httpx.post(url, files=ONE_CLICK_MULTIPART, cookies={"session": "abc"})
    assert first.headers["content-type"].startswith("text/html")
    assert first.status_code == 200
    assert_no_redirect_no_cookie(first)
    assert "You have been unsubscribed" in first.text
    assert server.status("d.okafor@west.example.org") == "unsubscribed"
    assert server.status("a.hussain@west.example.org") == "subscribed"
    again = httpx.post(url, files=ONE_CLICK_MULTIPART)
    assert (again.status_code, again.text) == (200, first.text)
    assert_no_redirect_no_cookie(again)
    assert server.status("d.okafor@west.example.org") == "unsubscribed"


def test_one_click_urlencoded_post_unsubscribes(server: Server) -> None:
    token = server.token("s.whitfield@staffordshire.example.org")
    response = httpx.post(f"{server.url}/unsubscribe/{token}", data=ONE_CLICK_FORM)
    assert response.status_code == 200
    assert_no_redirect_no_cookie(response)
    assert server.status("s.whitfield@staffordshire.example.org") == "unsubscribed"


def test_the_confirmation_pages_own_form_unsubscribes(server: Server) -> None:
    url = f"{server.url}/unsubscribe/{server.token('g.sandhu@west.example.org')}"
    page = httpx.get(url).text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page))
    response = httpx.post(url, data=fields)  # action="" posts back to the same address
    assert response.status_code == 200
    assert server.status("g.sandhu@west.example.org") == "unsubscribed"


def test_garbage_tampered_and_unknown_tokens_get_one_answer_and_change_nothing(
        server: Server) -> None:
    before = server.snapshot()
    good = server.token("t.brennan@warwickshire.example.org")
    tampered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    unknown = make_token(Secrets(SECRET), "0" * 32, "news")
    not_a_list = server.token("t.brennan@warwickshire.example.org", "events")
    answers = set()
    for token in ("garbage", tampered, unknown, not_a_list):
        url = f"{server.url}/unsubscribe/{token}"
        for response in (httpx.get(url), httpx.post(url, data=ONE_CLICK_FORM),
                         httpx.post(url, files=ONE_CLICK_MULTIPART)):
            assert response.status_code == 400
            assert_no_redirect_no_cookie(response)
            answers.add(response.text)
    assert len(answers) == 1
    assert "This unsubscribe link is not valid" in answers.pop()
    assert server.snapshot() == before


def test_a_post_without_the_one_click_body_changes_nothing(server: Server) -> None:
    before = server.snapshot()
    url = f"{server.url}/unsubscribe/{server.token('e.lloyd@coventry.example.net')}"
    for response in (httpx.post(url), httpx.post(url, data={"List-Unsubscribe": "Yes"}),
                     httpx.post(url, content=b"List-Unsubscribe=One-Click",
                                headers={"content-type": "text/plain"})):
        assert response.status_code == 400
        assert "not a one-click unsubscribe" in response.text
    assert server.snapshot() == before


def test_an_oversized_body_is_refused_with_413(server: Server) -> None:
    before = server.snapshot()
    url = f"{server.url}/unsubscribe/{server.token('e.lloyd@coventry.example.net')}"
    big = "List-Unsubscribe=One-Click&pad=" + "x" * 5000
    declared = httpx.post(url, content=big.encode(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(10):
            yield b"x" * 1000

    streamed = httpx.post(url, content=chunks(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    assert server.snapshot() == before


def test_more_than_thirty_requests_a_minute_from_one_client_get_429(server: Server) -> None:
    url = f"{server.url}/unsubscribe/garbage"
    with httpx.Client() as client:
        codes = [client.get(url).status_code for _ in range(31)]
    assert codes[:30] == [400] * 30
    assert codes[30] == 429
    assert httpx.get(f"{server.url}/").status_code == 200  # the archive is not limited


def test_behind_a_proxy_on_this_machine_each_forwarded_client_has_its_own_limit(
        server: Server) -> None:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS widens that), so
    # members behind one reverse proxy do not share one allowance
    url = f"{server.url}/unsubscribe/garbage"
    first = {"x-forwarded-for": "203.0.113.7"}
    with httpx.Client() as client:
        codes = [client.get(url, headers=first).status_code for _ in range(31)]
        other = client.get(url, headers={"x-forwarded-for": "198.51.100.23"}).status_code
    assert codes[30] == 429
    assert other == 400


def test_a_retired_secret_works_only_while_listed_in_old_secrets(members_project: Project
                                                                 ) -> None:
    email = "h.carter@birmingham.example.net"
    rotated = start(members_project, env={"NEWSLETTER_OLD_SECRETS": OLD_SECRET})
    try:
        token = rotated.token(email, secret=OLD_SECRET)
        assert httpx.get(f"{rotated.url}/unsubscribe/{token}").status_code == 200
    finally:
        rotated.stop()
    retired = start(members_project)
    try:
        response = httpx.post(f"{retired.url}/unsubscribe/{token}", data=ONE_CLICK_FORM)
        assert response.status_code == 400
        assert retired.status(email) == "subscribed"
    finally:
        retired.stop()
    rotated = start(members_project, env={"NEWSLETTER_OLD_SECRETS": OLD_SECRET})
    try:
        response = httpx.post(f"{rotated.url}/unsubscribe/{token}", data=ONE_CLICK_FORM)
        assert response.status_code == 200
        assert rotated.status(email) == "unsubscribed"
    finally:
        rotated.stop()


def test_the_log_never_contains_a_token(members_project: Project) -> None:
    running = start(members_project)
    token = running.token("r.patel@sandwell.example.net")
    httpx.get(f"{running.url}/unsubscribe/{token}")
    httpx.post(f"{running.url}/unsubscribe/{token}", data=ONE_CLICK_FORM)
    log = running.stop()
    assert "POST /unsubscribe/<token> 200" in log
    assert token not in log and token[:20] not in log


def test_serve_refuses_to_start_without_a_secret(members_project: Project) -> None:
    result = members_project.run("serve", "--port", str(free_port()),
                                 env={"NEWSLETTER_SECRET": ""})
    assert result.code == 1
    assert result.err.startswith("environment: NEWSLETTER_SECRET: not set")
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------- the archive


def test_archive_pages_are_served_with_strict_headers(server: Server) -> None:
    index = httpx.get(f"{server.url}/")
    assert index.status_code == 200 and "<h1>Archive</h1>" in index.text
    assert httpx.get(f"{server.url}/2016-12/").text.endswith("<title>December</title>")
    for response in (index, httpx.get(f"{server.url}/missing.html")):
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert "set-cookie" not in response.headers
    assert httpx.get(f"{server.url}/missing.html").status_code == 404


def test_the_servers_security_policy_lets_built_pages_keep_their_design(
        members_project: Project) -> None:
    built = members_project.run("archive", "-o", "built")
    assert built.code == 0, built.err
    running = start(members_project, "-d", "built")
    try:
        page = httpx.get(f"{running.url}/2016-12-newsletter/")
    finally:
        running.stop()
    assert page.status_code == 200 and 'style="' in page.text  # the email's inline styles
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page.text)
    assert meta is not None
    # a browser applies both policies: the header must allow all the page's own allows
    assert page.headers["content-security-policy"] == \
        f"{meta.group(1)}; frame-ancestors 'none'"


def test_paths_outside_the_archive_are_not_served(server: Server) -> None:
    with httpx.Client() as client:
        for path in ("/../newsletter.yaml", "/%2e%2e/newsletter.yaml", "/..%2fnewsletter.yaml",
                     "/%2e%2e%2fnewsletter.db"):
            request = client.build_request("GET", server.url)
            request.url = request.url.copy_with(raw_path=path.encode())
            response = client.send(request)
            assert response.status_code == 404, path
            assert "smtp:" not in response.text and "SQLite" not in response.text


def test_serving_a_folder_with_no_built_archive_is_refused_with_a_message(
        members_project: Project) -> None:
    before = sorted(p.name for p in members_project.root.iterdir())
    for folder in ("not-built-yet", "subscribers"):
        result = members_project.run("serve", "--port", str(free_port()), "-d", folder)
        assert result.code == 1, result.err
        assert result.err == (f"{folder}: no built archive here (no index.html) (build it "
                              "first with 'newsletter archive', or name its folder with -d)\n")
    assert sorted(p.name for p in members_project.root.iterdir()) == before


def test_a_missing_page_is_a_404_page_with_the_helpline(server: Server) -> None:
    response = httpx.get(f"{server.url}/no-such-issue/")
    assert response.status_code == 404
    assert "There is no page at this address." in response.text
    assert "Modern Slavery Helpline" in response.text
