"""`newsletter preview`: the real CLI serving 127.0.0.1, re-rendering when files change."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Project, free_port


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8"), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, "", {}


@pytest.fixture
def preview(project: Project) -> Iterator[tuple[Project, str]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "preview", "issues/2016-12-newsletter.yaml",
         "--port", str(port)],
        cwd=project.root, env={**os.environ, "SOURCE_DATE_EPOCH": "1480896000"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                get(base + "version")
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read().decode() if proc.stderr else "") \
                        from None
                time.sleep(0.1)
        yield project, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_for_version_change(base: str, old: str) -> str:
    for _ in range(50):
        version = get(base + "version")[1]
        if version != old:
            return version
        time.sleep(0.1)
    raise AssertionError("the preview did not notice the change")


def touch_later(path: Any, text: str) -> None:
    """Write ``text`` with a modification time that surely differs from the last one."""
    path.write_text(text, encoding="utf-8")
    later = time.time() + 2
    os.utime(path, (later, later))


def test_the_preview_page_shows_phone_and_desktop_widths_and_the_text_part(preview) -> None:
    _, base = preview
    status, body, headers = get(base)
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    widths = [int(w) for w in re.findall(r'<iframe src="/email.html" width="(\d+)"', body)]
    assert 320 in widths and 375 in widths and max(widths) >= 600
    assert "Call the Modern Slavery Helpline on 08000 121 700" in " ".join(body.split())
    assert '<script src="/preview.js"></script>' in body
    email = get(base + "email.html")[1]
    assert "Network newsletter, December 2016" in email and "__NL_" not in email
    image = re.search(r'src="(images/homelessness-report-[0-9a-f]{12}\.png)"', email)
    assert image
    with urllib.request.urlopen(base + image.group(1), timeout=10) as response:
        assert response.read().startswith(b"\x89PNG")
        assert response.headers["Content-Type"] == "image/png"
    assert get(base + "images/../newsletter.yaml")[0] == 404
    assert get(base + "nothing-here")[0] == 404


def test_saving_the_issue_re_renders_and_bad_yaml_shows_its_errors(preview) -> None:
    project, base = preview
    issue = project.root / "issues" / "2016-12-newsletter.yaml"
    original = issue.read_text(encoding="utf-8")
    version = get(base + "version")[1]

    touch_later(issue, original.replace("Network newsletter, December 2016",
                                        "Network newsletter, Christmas edition"))
    version = wait_for_version_change(base, version)
    assert "Christmas edition" in get(base + "email.html")[1]
    assert "Christmas edition" in get(base + "email.txt")[1]

    touch_later(issue, original + "  - type: nonsense\n")
    version = wait_for_version_change(base, version)
    status, body, _ = get(base)
    assert status == 200 and "Problems" in body and "nonsense" in body
    assert "2016-12-newsletter.yaml:" in body

    touch_later(issue, original)
    wait_for_version_change(base, version)
    status, body, _ = get(base)
    assert "nonsense" not in body and "Network newsletter, December 2016" in get(
        base + "email.html")[1]


def test_editing_a_template_re_renders(preview) -> None:
    project, base = preview
    template = project.root / "templates" / "email" / "blocks" / "callout.mjml.j2"
    version = get(base + "version")[1]
    touch_later(template, template.read_text(encoding="utf-8").replace(
        "<h2>", "<h2>Note: ", 1))
    wait_for_version_change(base, version)
    assert "Note: Share your news" in get(base + "email.html")[1]


def test_the_preview_page_reloads_itself_in_the_browser(preview, browser: Any) -> None:
    project, base = preview
    from playwright.sync_api import expect

    page = browser.new_page()
    try:
        page.goto(base)
        assert page.locator("iframe").count() == 3
        frame = page.frame_locator("iframe").first
        assert frame.locator("h1").inner_text() == "Network newsletter, December 2016"
        issue = project.root / "issues" / "2016-12-newsletter.yaml"
        touch_later(issue, issue.read_text(encoding="utf-8").replace(
            "Network newsletter, December 2016", "Renamed while watching"))
        # The page's own script polls /version and reloads (no test code runs in the page).
        expect(page.locator("#text")).to_contain_text("Renamed while watching", timeout=10_000)
        expect(page.frame_locator("iframe").first.locator("h1")).to_have_text(
            "Renamed while watching")
    finally:
        page.close()


@pytest.mark.parametrize("args", [("preview", "issues/no-such-issue.yaml"),
                                  ("--config", "elsewhere.yaml", "preview",
                                   "issues/2016-12-newsletter.yaml")])
def test_a_missing_issue_or_settings_file_stops_the_preview_with_a_message(
        project: Project, args: tuple[str, ...]) -> None:
    result = project.run(*args, "--port", str(free_port()), timeout=30)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and ("cannot read the file" in result.err
                                            or "settings file not found" in result.err)


def test_a_port_in_use_is_reported_in_one_line(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = project.run("preview", "issues/2016-12-newsletter.yaml", "--port", str(port),
                             timeout=30)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err == (f"command line: --port: cannot listen on 127.0.0.1:{port}: Address "
                          "already in use (choose another port, or --port 0 for any free one)\n")


def test_the_preview_page_is_the_projects_template_and_a_broken_one_is_shown_as_text(
        preview) -> None:
    project, base = preview
    template = project.root / "templates" / "web" / "preview.html.j2"
    original = template.read_text(encoding="utf-8")
    version = get(base + "version")[1]
    touch_later(template, original.replace("<h2>Plain-text part</h2>",
                                           "<h2>The text version</h2>"))
    version = wait_for_version_change(base, version)
    status, body, _ = get(base)
    assert status == 200 and "<h2>The text version</h2>" in body
    assert "Plain-text part" not in body

    touch_later(template, original.replace("{% if problems %}", "{% if %}"))
    version = wait_for_version_change(base, version)
    try:
        urllib.request.urlopen(base, timeout=10)
        raise AssertionError("a broken template still gave a page")
    except urllib.error.HTTPError as e:
        assert e.code == 500
        assert "preview.html.j2:" in e.read().decode("utf-8")

    touch_later(template, original)
    wait_for_version_change(base, version)
    assert "Plain-text part" in get(base)[1]  # fixed by saving; the server kept running
