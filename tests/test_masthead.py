"""The network's masthead (brand.logo): in every email and on every archive page, published
from a local file without its metadata, and fitting a phone's screen."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from conftest import Project
from PIL import Image, ImageDraw

ALT = "West Midlands Anti-Slavery Network"


def logo_png(colour: str = "#1d4f91", artist: str = "A. Designer, 1 High St") -> bytes:
    image = Image.new("RGB", (480, 120), colour)
    ImageDraw.Draw(image).rectangle((20, 20, 100, 100), fill="white")
    exif = Image.Exif()
    exif[0x013B] = artist  # Artist: who made it, and where they live
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif.tobytes())
    return out.getvalue()


def with_logo(project: Project, data: bytes, name: str = "logo.png") -> None:
    project.write(name, data)
    config = re.sub(r"  logo(_alt)?: .*\n", "", project.config.read_text(encoding="utf-8"))
    project.write("newsletter.yaml", config.replace(
        "brand:\n", f"brand:\n  logo: {name}\n  logo_alt: {ALT}\n", 1))


def masthead_src(html: str) -> str:
    found = re.search(r'<img alt="' + ALT + r'"[^>]*src="([^"]+)"', html)
    assert found, "no masthead"
    return found.group(1)


def test_the_email_shows_the_masthead_from_the_archive_and_the_build_holds_it_clean(
        project: Project) -> None:
    with_logo(project, logo_png())
    built = project.run("build", "2017-02-news", "-o", "out")
    assert built.code == 0, built.err
    src = masthead_src((project.root / "out/email.html").read_text(encoding="utf-8"))
    name = src.rsplit("/", 1)[1]
    assert re.fullmatch(r"https://news\.wmasn\.example\.org/static/logo-[0-9a-f]{12}\.png", src)
    published = (project.root / "out" / name).read_bytes()
    assert b"A. Designer" not in published and b"A. Designer" in logo_png()
    with Image.open(io.BytesIO(published)) as image:
        assert image.size == (480, 120)


def test_every_archive_page_shows_the_masthead_and_a_new_logo_rebuilds_them(
        project: Project) -> None:
    with_logo(project, logo_png())
    assert project.run("archive", "--no-members").code == 0
    site = project.root / "site"
    pages = [site / "index.html", site / "2017-02-news/index.html", site / "search/index.html"]
    first = {re.search(r'class="site-logo".*?src="([^"]+)"', p.read_text()).group(1)  # type: ignore[union-attr]
             for p in pages}
    names = {src.rsplit("/", 1)[1] for src in first}
    assert len(names) == 1 and (site / "static" / names.pop()).is_file()
    assert b"A. Designer" not in b"".join(p.read_bytes() for p in (site / "static").iterdir())
    with_logo(project, logo_png("#7a1d91"), "logo2.png")  # another file, other bytes
    assert project.run("archive", "--no-members").code == 0
    second = {re.search(r'class="site-logo".*?src="([^"]+)"', p.read_text()).group(1)  # type: ignore[union-attr]
              for p in pages}
    assert len(second) == 2 and second.isdisjoint(first)  # "../static/..." and "static/..."
    for page in pages:
        src = re.search(r'class="site-logo".*?src="([^"]+)"', page.read_text())
        assert src and (page.parent / src.group(1)).resolve().is_file()


@pytest.mark.parametrize(("data", "message"), [
    (logo_png()[:300], "logo.png: the PNG file is cut short"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.png: not a PNG, JPEG, GIF or WebP "
     "image (export it in one of those formats)"),
])
def test_a_logo_that_is_no_usable_image_is_refused_where_it_is_set(
        project: Project, data: bytes, message: str) -> None:
    with_logo(project, data)
    result = project.run("check")
    assert result.code == 1 and "Traceback" not in result.err
    assert re.search(r"newsletter\.yaml:\d+:\d+: brand\.logo: " + re.escape(message),
                     result.err), result.err


@pytest.mark.browser
def test_the_masthead_fits_a_phone_in_the_email_and_the_archive(
        browser: Any, project: Project) -> None:
    with_logo(project, logo_png())
    assert project.run("build", "2017-02-news", "-o", "out").code == 0
    assert project.run("archive", "--no-members").code == 0
    out = project.root / "out"
    page = browser.new_page(viewport={"width": 320, "height": 700})
    try:
        page.route("**/*", lambda route: route.fulfill(
            path=str(out / route.request.url.rsplit("/", 1)[-1]))
            if route.request.url.startswith("https://news.wmasn.example.org/static/")
            else route.continue_() if route.request.url.startswith("file:")
            else route.abort())
        for url in ((out / "email.html").as_uri(),
                    (project.root / "site/2017-02-news/index.html").as_uri()):
            page.goto(url)
            logo = page.get_by_alt_text(ALT)
            assert logo.is_visible()
            assert page.evaluate("(img) => img.naturalWidth", logo.element_handle()) == 480
            box = logo.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 320
            assert box["y"] + box["height"] <= 700  # on the first screen
            scroll, inner = page.evaluate(
                "[document.scrollingElement.scrollWidth, innerWidth]")
            assert scroll <= inner
    finally:
        page.close()
