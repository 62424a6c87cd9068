"""The archive in a real browser (Debian's chromium): reading, searching, accessibility."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Project
from test_archive import THREE, build, png

pytestmark = pytest.mark.browser

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
PAGES = ("index.html", "2017-01/index.html", "search/index.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built archive of three issues (one with a local image)."""
    root = tmp_path_factory.mktemp("archive") / "project"
    root.mkdir()
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    shutil.copytree(REPO / "templates", root / "templates")
    project = Project(root)
    project.write("issues/2017-01/map.png", png(width=40, height=30, seed=3))
    image = ("  - type: article\n    title: Where we work\n"
             "    image: {src: 2017-01/map.png, alt: A map of the region}\n"
             "    body: Our members cover seven local authority areas.\n")
    for slug, text in THREE.items():
        project.write(f"issues/{slug}.yaml", text + (image if slug == "2017-01" else ""))
    return build(project)


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """The site over http on a free loopback port."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def reader(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh browser page and the list of every URL it requests."""
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    yield page, requests
    context.close()


def only_local(requests: list[str], base: str) -> None:
    assert requests, "no request was recorded"
    strangers = [u for u in requests if not (u.startswith(base) or u.startswith("file://"))]
    assert strangers == [], strangers


def serious_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


# --------------------------------------------------------------------------- reading


def test_a_reader_goes_from_the_index_into_an_issue_and_along_previous_and_next(
        reader: tuple[Any, list[str]], server: str) -> None:
    page, requests = reader
    page.goto(server)
    assert page.locator("h1").first.inner_text().endswith("past newsletters")
    page.get_by_role("link", name="Network newsletter, February 2017").click()
    assert page.url == server + "2017-02/index.html"
    assert "Two new members joined" in page.locator("article.issue-body").inner_text()
    page.get_by_role("link", name="Previous issue Network newsletter, January 2017").click()
    assert page.url == server + "2017-01/index.html"
    image = page.get_by_role("img", name="A map of the region")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 40
    page.get_by_role("link", name="Previous issue Network newsletter, December 2016").click()
    assert page.url == server + "2016-12/index.html"
    assert page.locator("a[rel=prev]").count() == 0  # the first issue has no previous
    page.get_by_role("link", name="Next issue Network newsletter, January 2017").click()
    assert page.url == server + "2017-01/index.html"
    page.locator(".pager").get_by_role("link", name="All issues").click()
    assert page.url == server + "index.html"
    only_local(requests, server)
    assert page.context.cookies() == []
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def test_search_from_disk_finds_the_one_issue_with_a_word_and_opens_it(
        reader: tuple[Any, list[str]], site: Path) -> None:
    page, requests = reader
    page.goto((site / "search" / "index.html").as_uri())
    results = page.locator("#search-results > li:visible")
    assert results.count() == 3
    page.get_by_label("Words to find").fill("zebra")
    assert results.count() == 1
    assert page.locator("#search-status").inner_text() == "1 issue contains “zebra”."
    assert "zebrafish" in results.first.locator(".issue-card__snippet").inner_text()
    results.first.get_by_role("link").click()
    assert page.url == (site / "2017-01" / "index.html").as_uri()
    assert "zebrafish" in page.locator("article.issue-body").inner_text()
    only_local(requests, "file://")


def test_search_needs_every_word_and_says_when_nothing_matches(
        reader: tuple[Any, list[str]], server: str) -> None:
    page, _ = reader
    page.goto(server + "search/index.html?q=network+newsletter")
    assert page.get_by_label("Words to find").input_value() == "network newsletter"
    assert page.locator("#search-results > li:visible").count() == 3
    page.get_by_label("Words to find").fill("newsletter commissioner")
    assert page.locator("#search-results > li:visible").count() == 1
    page.get_by_label("Words to find").fill("commissioner zebrafish partnership")
    assert page.locator("#search-results > li:visible").count() == 0
    assert page.locator("#search-status").inner_text().startswith("No issue contains")
    page.get_by_label("Words to find").fill("")
    assert page.locator("#search-results > li:visible").count() == 3


def test_the_search_page_lists_every_issue_without_javascript(browser: Any, site: Path) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto((site / "search" / "index.html").as_uri())
    links = page.locator("#search-results a")
    assert links.count() == 3
    assert links.first.inner_text() == "Network newsletter, February 2017"
    context.close()


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("width", [320, 1024])
def test_the_helpline_is_visible_near_the_top_and_nothing_scrolls_sideways(
        browser: Any, server: str, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 640})
    page = context.new_page()
    for name in PAGES:
        page.goto(server + name)
        helpline = page.locator("aside.helpline")
        assert helpline.is_visible()
        box = helpline.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 640, (name, box)
        assert helpline.get_by_role("link", name="08000 121 700").get_attribute("href") \
            == "tel:08000121700"
        assert helpline.get_by_role("link", name="999").get_attribute("href") == "tel:999"
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (name, width, overflow)
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_problems(browser: Any, server: str,
                                                   scheme: str) -> None:
    # the pages' Content-Security-Policy refuses injected scripts, axe included
    context = browser.new_context(color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    for name in PAGES:
        page.goto(server + name)
        assert serious_violations(page) == [], name
    context.close()


def test_the_pages_follow_the_readers_dark_or_light_preference(browser: Any,
                                                               server: str) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme)
        page = context.new_page()
        page.goto(server)
        colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        context.close()
    assert colours["light"] == "rgb(245, 246, 248)"
    assert colours["dark"] == "rgb(18, 20, 23)"


def test_printing_hides_navigation_search_and_the_quick_exit(reader: tuple[Any, list[str]],
                                                             server: str) -> None:
    page, _ = reader
    page.goto(server + "search/index.html")
    page.emulate_media(media="print")
    for selector in (".quick-exit", ".site-nav", ".search-form"):
        assert not page.locator(selector).is_visible(), selector
    assert page.locator("aside.helpline").is_visible()
    page.goto(server + "2017-01/index.html")
    assert not page.locator(".pager").is_visible()
    assert page.locator("article.issue-body").is_visible()


def test_leave_this_site_quickly_replaces_the_page(reader: tuple[Any, list[str]],
                                                   server: str) -> None:
    page, _ = reader
    page.route("https://www.bbc.co.uk/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>Weather</title>"))
    page.goto(server + "2017-01/index.html")
    page.get_by_role("link", name="Leave this site quickly").click()
    page.wait_for_url("https://www.bbc.co.uk/weather")
    page.go_back()
    assert not page.url.startswith(server)  # replaced: Back does not return to the archive


def test_pressing_escape_twice_leaves_the_site(reader: tuple[Any, list[str]],
                                               server: str) -> None:
    page, _ = reader
    page.route("https://www.bbc.co.uk/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>Weather</title>"))
    page.goto(server + "search/index.html")
    page.keyboard.press("Escape")
    assert page.url.startswith(server)  # once is not enough
    page.keyboard.press("Escape")
    page.wait_for_url("https://www.bbc.co.uk/weather")


def test_the_content_security_policy_refuses_scripts_from_elsewhere(
        reader: tuple[Any, list[str]], server: str) -> None:
    page, _ = reader
    page.goto(server + "index.html")
    violated = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation',
                                  e => resolve(e.effectiveDirective + ' ' + e.blockedURI));
        const s = document.createElement('script');
        s.src = 'https://cdn.example.com/x.js';
        document.head.appendChild(s);
    })""")
    assert violated == "script-src-elem https://cdn.example.com/x.js"


def test_the_not_found_page_works_at_any_depth(reader: tuple[Any, list[str]], server: str,
                                               site: Path) -> None:
    page, requests = reader
    missing = server + "2016-12/no/such/page"
    page.route(missing, lambda route: route.fulfill(  # as a web server answers a 404
        status=404, content_type="text/html", body=(site / "404.html").read_bytes()))
    page.goto(missing)
    assert page.locator("h1").inner_text() == "Page not found"
    assert server + "static/site.css" in requests  # styled, from the site root
    assert page.locator("aside.helpline").is_visible()
    page.get_by_role("link", name="See every issue").click()
    assert page.url == server + "index.html"


def test_the_sample_issues_fit_a_phone_and_pass_axe(browser: Any, project: Project) -> None:
    site = build(project)
    pages = sorted(p for p in site.glob("*/index.html") if p.parent.name not in ("search",))
    assert pages, "the sample issues are missing"
    context = browser.new_context(viewport={"width": 320, "height": 640}, bypass_csp=True)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    for path in pages:
        page.goto(path.as_uri())
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path.parent.name, overflow)
        assert page.locator("aside.helpline").is_visible()
        broken = page.evaluate("[...document.images].filter(i => !i.naturalWidth).length")
        assert broken == 0, path.parent.name
        assert serious_violations(page) == [], path.parent.name
    only_local(requests, "file://")
    context.close()
