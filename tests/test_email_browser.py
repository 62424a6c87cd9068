"""The built email in Debian's chromium: no sideways scrolling on phones, helpline visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

pytestmark = pytest.mark.browser

SAMPLES = ("2014-06-network-update", "2016-12-newsletter", "2017-02-news")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each sample issue (and the twelve-block fixture) built once with the real CLI."""
    import shutil

    from conftest import REPO, Project

    root = tmp_path_factory.mktemp("browser") / "project"
    root.mkdir()
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    for folder in ("issues", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copytree(REPO / "tests" / "fixtures", root / "fixtures")
    project = Project(root)
    out: dict[str, Path] = {}
    for slug, path in [*((s, f"issues/{s}.yaml") for s in SAMPLES),
                       ("twelve-blocks", "fixtures/twelve-blocks.yaml")]:
        result = project.run("build", path, "-o", f"out/{slug}")
        assert result.code == 0, result.err
        out[slug] = root / "out" / slug / "email.html"
    return out


def open_page(browser: Any, path: Path, width: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 700})
    # The email's images point at the archive, which does not exist yet: serve local copies.
    page.route("https://news.wmasn.example.org/**", lambda route: route.fulfill(
        path=str(path.parent / route.request.url.rsplit("/", 1)[-1]))
        if route.request.url.endswith(".png") else route.abort())
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        ("file:", "https://news.wmasn.example.org/")) else route.abort())
    page.goto(path.as_uri())
    return page


@pytest.mark.parametrize("width", [320, 375, 600, 800])
@pytest.mark.parametrize("slug", [*SAMPLES, "twelve-blocks"])
def test_the_email_never_scrolls_sideways(browser: Any, built: dict[str, Path], slug: str,
                                          width: int) -> None:
    page = open_page(browser, built[slug], width)
    try:
        scroll, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert scroll <= inner, f"{slug} at {width}px: {scroll} > {inner}"
        for img in page.query_selector_all("img"):
            box = img.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    finally:
        page.close()


def test_the_scroll_check_catches_a_fixed_width_image(browser: Any, tmp_path: Path) -> None:
    """The control: content fixed at 552 px does scroll sideways at 320 px.

    (MRML's own mj-image with width= shrinks in chromium; the templates still add
    fluid-on-mobile so clients that honour MJML's phone media query go full width.)
    """
    page_file = tmp_path / "fixed.html"
    page_file.write_text('<!doctype html><meta name="viewport" content="width=device-width">'
                         '<table role="presentation" style="width:552px"><tr><td>'
                         '<div style="width:552px;height:40px"></div></td></tr></table>')
    page = browser.new_page(viewport={"width": 320, "height": 600})
    try:
        page.goto(page_file.as_uri())
        scroll, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert scroll > inner
    finally:
        page.close()


@pytest.mark.parametrize("width", [320, 600])
@pytest.mark.parametrize("slug", SAMPLES)
def test_the_helpline_number_is_visible_and_dialable(browser: Any, built: dict[str, Path],
                                                      slug: str, width: int) -> None:
    page = open_page(browser, built[slug], width)
    try:
        link = page.locator('.nl-helpline a[href="tel:08000121700"]')  # the box at the end
        assert link.count() == 1
        link.scroll_into_view_if_needed()
        assert link.is_visible()
        assert link.inner_text().strip() == "08000 121 700"
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] >= 10
        colours = page.evaluate("""(a) => {
            const s = getComputedStyle(a); return [s.color, s.visibility, s.display];
        }""", link.element_handle())
        assert colours[1] == "visible" and colours[2] != "none"
        assert page.locator('.nl-helpline a[href="tel:999"]').is_visible()
    finally:
        page.close()


@pytest.mark.parametrize("slug", SAMPLES)
def test_the_helpline_is_on_the_first_screen_of_a_phone_too(browser: Any, built: dict[str, Path],
                                                          slug: str) -> None:
    page = open_page(browser, built[slug], 320)  # 320 x 700: nothing scrolled
    try:
        top = page.locator('.nl-helpline-top a[href="tel:08000121700"]')
        assert top.count() == 1 and top.is_visible()
        assert top.inner_text().strip() == "08000 121 700"
        box = top.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 700
        assert box["x"] >= 0 and box["x"] + box["width"] <= 320
        emergency = page.locator('.nl-helpline-top a[href="tel:999"]')
        assert emergency.is_visible()
        assert page.locator('a[href="tel:08000121700"]').count() == 2  # and the box at the end
    finally:
        page.close()


def test_dark_mode_changes_the_page_colours(browser: Any, built: dict[str, Path]) -> None:
    page = browser.new_page(viewport={"width": 600, "height": 700}, color_scheme="dark")
    try:
        page.goto(built["2016-12-newsletter"].as_uri())
        colour = page.evaluate(
            "getComputedStyle(document.querySelector('.nl-card')).backgroundColor")
        heading = page.evaluate("getComputedStyle(document.querySelector('h1')).color")
        assert colour == "rgb(28, 33, 40)" and heading == "rgb(158, 197, 255)"
    finally:
        page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("slug", SAMPLES)
def test_axe_finds_no_serious_accessibility_problems(browser: Any, built: dict[str, Path],
                                                      slug: str, scheme: str) -> None:
    """axe-core (node_modules) in the page: contrast, alt text, headings, link names...

    Only the landmark rules fire, at "moderate": an email is one role=article, no <main>.
    """
    from conftest import REPO

    axe = REPO / "node_modules" / "axe-core" / "axe.min.js"
    if not axe.is_file():
        require_tool(str(axe))
    page = browser.new_page(viewport={"width": 600, "height": 800}, color_scheme=scheme)
    try:
        page.goto(built[slug].as_uri())
        page.add_script_tag(path=str(axe))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [(v["id"], v["impact"], [n["html"][:120] for n in v["nodes"][:3]])
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == []
        assert {v["id"] for v in result["violations"]} <= {"landmark-one-main", "region"}
    finally:
        page.close()
