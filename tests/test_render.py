"""The render stage: golden files, templates, HTML structure, the text part, the build.

Golden files: tests/golden/<slug>/email.html and email.txt are what `newsletter build`
writes for each sample issue (the sample recipient's greeting and unsubscribe URL filled
in). They are compared byte for byte. After an intended change, regenerate them with

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render.py

and review the diff before committing.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from html import unescape
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import Project
from hypothesis import example, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from newsletter.email.personalize import anonymous_recipient, assemble, fill, prepare
from newsletter.email.render import (
    COLOURS,
    render_archive_body,
    render_html,
    render_issue,
    render_text,
)
from newsletter.email.templating import html_environment, long_date, text_environment
from newsletter.errors import InputError, RenderError
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.model import (
    Contact,
    Event,
    Image,
    Issue,
    Location,
    Network,
    Person,
    RenderMode,
    Slot,
)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
SAMPLES = ("2014-06-network-update", "2016-12-newsletter", "2017-02-news")
TWELVE = REPO / "tests" / "fixtures" / "twelve-blocks.yaml"
HERE = Location("tests/test_render.py")


def network() -> Network:
    return load_network(REPO / "newsletter.yaml")


def sample(slug: str) -> Issue:
    return load_issue(REPO / "issues" / f"{slug}.yaml", network())


def built_files(issue: Issue, net: Network) -> tuple[str, str]:
    """What `newsletter build` writes as email.html and email.txt."""
    return fill(render_issue(issue, net), anonymous_recipient(net, issue.slug))


def visible_text(html: str) -> str:
    """The words of an HTML document without its tags (comments and styles dropped)."""
    html = re.sub(r"<(style|title)\b.*?</\1>|<!--.*?-->", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split()).replace(" .", ".")


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside headings."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.headings: list[tuple[str, str]] = []
        self._heading: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = tag
            self.headings.append((tag, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == self._heading:
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading:
            tag, text = self.headings[-1]
            self.headings[-1] = (tag, text + data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


# --------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("slug", SAMPLES)
def test_each_sample_issue_renders_exactly_as_its_golden_files(slug: str) -> None:
    html, text = built_files(sample(slug), network())
    folder = GOLDEN / slug
    if os.environ.get("UPDATE_GOLDEN") == "1":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "email.html").write_bytes(html.encode("utf-8"))
        (folder / "email.txt").write_bytes(text.encode("utf-8"))
    assert (folder / "email.html").read_bytes() == html.encode("utf-8")
    assert (folder / "email.txt").read_bytes() == text.encode("utf-8")


def test_rendering_is_deterministic_in_one_process() -> None:
    net, issue = network(), sample("2017-02-news")
    assert render_issue(issue, net) == render_issue(issue, net)


def test_building_an_issue_twice_writes_the_same_bytes_as_the_golden_files(project) -> None:
    first = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out1")
    second = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out2")
    assert first.code == 0 and second.code == 0, first.err + second.err
    names = sorted(p.name for p in (project.root / "out1").iterdir())
    assert names == sorted(p.name for p in (project.root / "out2").iterdir())
    for name in names:
        assert (project.root / "out1" / name).read_bytes() == \
            (project.root / "out2" / name).read_bytes(), name
    for name in ("email.html", "email.txt"):
        assert (project.root / "out1" / name).read_bytes() == \
            (GOLDEN / "2016-12-newsletter" / name).read_bytes()
    assert "out1" in first.out


def test_source_date_epoch_sets_the_sample_date_and_nothing_else_changes(project,
                                                                         monkeypatch) -> None:
    emls = []
    for epoch in ("1480896000", "1480896000", "1486972800"):
        result = project.run("build", "issues/2017-02-news.yaml", "-o", "out",
                             env={"SOURCE_DATE_EPOCH": epoch})
        assert result.code == 0, result.err
        emls.append((project.root / "out" / "email.eml").read_bytes())
    assert emls[0] == emls[1]
    assert b"\r\nDate: Mon, 05 Dec 2016 00:00:00 +0000\r\n" in b"\r\n" + emls[0]
    assert re.sub(rb"^Date: .*\r\n", b"", emls[0]) == re.sub(rb"^Date: .*\r\n", b"", emls[2])
    assert emls[0] != emls[2]
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    from newsletter.email.personalize import sample_date

    assert sample_date(sample("2017-02-news")) == dt.datetime(2017, 2, 13, 9, 0, tzinfo=dt.UTC)


def test_build_writes_to_build_slug_by_default_and_copies_local_images(project) -> None:
    result = project.run("build", "issues/2017-02-news.yaml")
    assert result.code == 0, result.err
    folder = project.root / "build" / "2017-02-news"
    issue = load_issue(project.root / "issues" / "2017-02-news.yaml")
    images = [b.image for b in issue.blocks if getattr(b, "image", None)]
    assert images
    for image in images:
        assert isinstance(image, Image) and image.path and image.published_name
        assert (folder / image.published_name).read_bytes() == image.path.read_bytes()
        assert f"https://news.wmasn.example.org/2017-02-news/{image.published_name}" in \
            (folder / "email.html").read_text(encoding="utf-8")
    assert {"email.html", "email.txt", "email.eml"} <= {p.name for p in folder.iterdir()}


def test_a_build_that_fails_leaves_no_output_and_keeps_the_previous_build(project) -> None:
    assert project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out").code == 0
    before = {p.name: p.read_bytes() for p in (project.root / "out").iterdir()}
    project.write("issues/2016-12-newsletter.yaml", "title: [unclosed\n")
    broken = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out")
    assert broken.code == 1 and "Traceback" not in broken.err
    assert {p.name: p.read_bytes() for p in (project.root / "out").iterdir()} == before
    fresh = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "fresh")
    assert fresh.code == 1 and not (project.root / "fresh").exists()
    # no staging folder left behind (the template cache is the first build's, on purpose)
    leftovers = [p.name for p in project.root.iterdir()
                 if p.name.startswith(".") and p.name != ".newsletter-cache"]
    assert leftovers == []


@pytest.mark.parametrize("output", ["a-file/out", "/proc/no-such-folder/out"])
def test_an_output_folder_that_cannot_be_written_is_one_line_not_a_traceback(
        project, output: str) -> None:
    project.write("a-file", "not a folder")
    result = project.run("build", "issues/2016-12-newsletter.yaml", "-o", output)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"{output}: cannot write the build: ")
    assert result.err.count("\n") == 1


def test_a_template_that_breaks_the_build_reports_it_and_writes_nothing(project) -> None:
    project.write("templates/email/blocks/links.mjml.j2", "{{ block.no_such_field }}")
    result = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out")
    assert result.code == 1
    assert "no_such_field" in result.err and "Traceback" not in result.err
    assert not (project.root / "out").exists()


# --------------------------------------------------------------------------- templates


def test_the_html_environment_escapes_mjml_templates(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "probe.mjml.j2").write_text("<mj-text>{{ v }}</mj-text>")
    out = html_environment(tmp_path).get_template("probe.mjml.j2").render(v="<b>&\"'")
    assert out == "<mj-text>&lt;b&gt;&amp;&#34;&#39;</mj-text>"


def test_the_text_environment_leaves_text_unescaped(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "probe.txt.j2").write_text("{{ v }}")
    assert text_environment(tmp_path).get_template("probe.txt.j2").render(v="a & <b>") == \
        "a & <b>"


def test_a_missing_template_variable_raises_instead_of_rendering_empty(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "probe.mjml.j2").write_text("Hi {{ name }}!")
    with pytest.raises(Exception, match="name"):
        html_environment(tmp_path).get_template("probe.mjml.j2").render()


def test_compiled_templates_come_back_from_the_cache_and_bad_entries_are_recompiled(
        tmp_path: Path) -> None:
    from jinja2 import Environment, FileSystemLoader

    from newsletter.email.templating import _WholeFileBytecodeCache

    (tmp_path / "templates").mkdir()
    source = tmp_path / "templates" / "probe.txt.j2"
    source.write_text("{% for i in range(3) %}{{ i }}{{ v }}{% endfor %}")
    cache = _WholeFileBytecodeCache(directory=str(tmp_path))

    def render() -> tuple[str, bool]:
        """The template's output, and whether its code came from the cache."""
        env = Environment(loader=FileSystemLoader(str(tmp_path / "templates")),
                          bytecode_cache=cache)
        name = "probe.txt.j2"
        bucket = cache.get_bucket(env, name, str(source), source.read_text())
        return env.get_template(name).render(v="!"), bucket.code is not None

    assert render() == ("0!1!2!", False)  # compiled, then written to the cache
    assert render() == ("0!1!2!", True)  # read back in one piece
    [entry] = tmp_path.glob("__jinja2_*.cache")
    entry.write_bytes(entry.read_bytes()[:-20])  # truncated: compiled afresh, not a crash
    assert render() == ("0!1!2!", False)
    source.write_text("{{ v }}{{ v }}")  # edited: the old code is not used
    assert render() == ("!!", False)
    assert render() == ("!!", True)


def test_compiled_templates_are_kept_in_the_project_not_in_tmp(project, tmp_path: Path
                                                                ) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}  # where Jinja's default cache folder would be
    assert project.run("build", "issues/2016-12-newsletter.yaml", env=env).code == 0
    cache = project.root / ".newsletter-cache"
    entries = {p.name: p.stat().st_mtime_ns for p in (cache / "templates").iterdir()}
    assert len(entries) >= 10  # the email and text templates, blocks included
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"  # no repository takes it
    assert list(tmp.iterdir()) == []
    assert project.run("build", "issues/2016-12-newsletter.yaml", env=env).code == 0
    # read back, not compiled and written again
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "templates").iterdir()} == entries


def test_a_cache_folder_that_cannot_be_made_only_means_compiling_again(project) -> None:
    project.write(".newsletter-cache", "a file where the folder would go")
    result = project.run("build", "issues/2016-12-newsletter.yaml")
    assert result.code == 0, result.err
    assert (project.root / "build" / "2016-12-newsletter" / "email.html").is_file()


def test_an_mjml_error_becomes_a_render_error_naming_the_issue(tmp_path: Path) -> None:
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "templates" / "email" / "base.mjml.j2").write_text(
        "<mjml><mj-head><mj-html-attributes></mj-html-attributes></mj-head>"
        "<mj-body></mj-body></mjml>")
    net = replace(network(), root=tmp_path)
    with pytest.raises(RenderError, match="2016-12-newsletter"):
        render_html(sample("2016-12-newsletter"), net)


def test_each_block_type_has_an_email_and_a_text_template() -> None:
    from newsletter.model import BLOCK_TYPES

    for kind in BLOCK_TYPES:
        assert (REPO / "templates" / "email" / "blocks" / f"{kind.type}.mjml.j2").is_file()
        assert (REPO / "templates" / "text" / "blocks" / f"{kind.type}.txt.j2").is_file()


def test_templates_use_no_mjml_features_mrml_ignores_or_that_leak() -> None:
    for path in (REPO / "templates" / "email").rglob("*.mjml.j2"):
        source = path.read_text(encoding="utf-8")
        for banned in ("mj-social", "mj-html-attributes", "mj-preview", "mj-font",
                       'inline="inline"', "mj-include"):
            assert banned not in source, f"{path.name} uses {banned}"


# --------------------------------------------------------------------------- the HTML


def test_the_html_declares_language_direction_and_both_colour_schemes() -> None:
    html = render_html(sample("2016-12-newsletter"), network())
    assert re.search(r'<html lang="en-GB" dir="ltr"', html)
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    assert "prefers-color-scheme: dark" in html


def test_layout_tables_are_presentational_and_images_have_alt_text() -> None:
    for slug in SAMPLES:
        page = Elements(render_html(sample(slug), network()))
        assert page.all("table")
        assert all(t.get("role") == "presentation" for t in page.all("table"))
        assert page.all("img")
        assert all(img.get("alt") for img in page.all("img"))


def test_headings_run_in_order_h1_title_h2_blocks_h3_inside() -> None:
    for slug in SAMPLES:
        issue = sample(slug)
        headings = Elements(render_html(issue, network())).headings
        assert headings[0] == ("h1", issue.title)
        assert [t for t, _ in headings].count("h1") == 1
        levels = [int(t[1]) for t, _ in headings]
        assert all(b <= a + 1 for a, b in pairwise(levels)), headings
        block_titles = [text for tag, text in headings if tag == "h2"]
        for block in issue.blocks:
            assert block.title in block_titles


def test_markdown_headings_in_a_body_become_h3() -> None:
    issue = replace(sample("2016-12-newsletter"), intro="# A big heading\n\nText.")
    headings = Elements(render_html(issue, network())).headings
    assert ("h3", "A big heading") in headings
    assert [t for t, _ in headings].count("h1") == 1


_MARKDOWN_PIECES = ["word", " ", "\n", "\n\n", "[", "]", "(", ")", "[x]: ", "[x]", "![", "<",
                    ">", "*", "_", "`", "# ", "- ", "1. ", "> ", "\\", ":", "&#58;", "&amp;",
                    "https://example.org/a", "javascript:", "JavaScript&#58;", "data:",
                    "mailto:a@example.org", "<https://example.org>", '"t"', "    ", "<b>",
                    "</b>", "<div>\n", "[a](javascript:x)", "![a](https://example.org/a)"]


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_MARKDOWN_PIECES), max_size=30))
@example(pieces=["[x]: https://example.org/a\n", "[x]: javascript:y\n", "[x]"])  # a duplicate
def test_markdown_parsed_by_the_loader_renders_as_if_parsed_afresh(pieces: list[str]) -> None:
    from newsletter.text import markdown
    from newsletter.text.plaintext import LinkRefs

    text = "".join(pieces)
    markdown.clear_cache()
    list(markdown.parts(text))  # may keep its parse for the renderer
    kept = markdown._tokens(text), markdown.to_html(text), markdown.to_text(text, LinkRefs())
    markdown.clear_cache()
    fresh = markdown._tokens(text), markdown.to_html(text), markdown.to_text(text, LinkRefs())
    assert kept == fresh


def test_the_preheader_is_hidden_without_a_low_contrast_colour() -> None:
    issue = sample("2016-12-newsletter")
    html = render_html(issue, network())
    match = re.search(r'<div style="([^"]*)">' + re.escape(issue.preheader or "-"), html)
    assert match, "preheader not found"
    style = match.group(1)
    for needed in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all"):
        assert needed in style
    assert "color" not in style
    assert "opacity:0" not in html.replace(" ", "")  # MRML's mj-preview hides text that way


def test_a_twelve_block_issue_stays_under_100_kb_of_html() -> None:
    net = network()
    issue = load_issue(TWELVE, net)
    assert len(issue.blocks) == 12
    html, _ = built_files(issue, net)
    assert len(html.encode("utf-8")) < 100_000
    # As sent: the quoted-printable HTML part (what Gmail measures) stays under 100 KB too.
    raw = assemble(prepare(render_issue(issue, net), net),
                   anonymous_recipient(net, issue.slug), dt.datetime(2017, 3, 6, tzinfo=dt.UTC))
    html_part = raw.split(b"Content-Type: text/html")[1]
    assert 40_000 < len(html_part) < 100_000
    assert {b.type for b in issue.blocks} == {"article", "event", "contact", "callout",
                                              "links", "section"}


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_template_colours_keep_a_contrast_of_at_least_4_5_to_1() -> None:
    brand = network().brand.colour
    c = COLOURS
    pairs = [(c.text, c.card), (c.muted, c.card), (c.muted, c.page), (brand, c.card),
             (brand, c.page), (brand, c.callout), (brand, c.helpline), (c.text, c.callout),
             (c.text, c.helpline), (c.dark_text, c.dark_card), (c.dark_link, c.dark_card),
             (c.dark_muted, c.dark_page), (c.dark_link, c.dark_page),
             (c.dark_text, c.dark_callout), (c.dark_link, c.dark_callout),
             (c.dark_text, c.dark_helpline), (c.dark_link, c.dark_helpline)]
    for fg, bg in pairs:
        assert contrast(fg, bg) >= 4.5, (fg, bg, contrast(fg, bg))
    assert contrast("#777777", "#ffffff") < 4.5  # the check itself can fail


def test_the_html_loads_nothing_from_third_parties_and_runs_no_script() -> None:
    html = render_html(load_issue(TWELVE, network()), network())
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "fonts.googleapis" not in html and "mailjet" not in html
    for img in Elements(html).all("img"):
        assert img["src"].startswith("https://news.wmasn.example.org/")


# --------------------------------------------------------------------------- modes and parts


def test_email_mode_leaves_slots_and_archive_mode_has_no_recipient_at_all() -> None:
    net, issue = network(), sample("2016-12-newsletter")
    email = render_issue(issue, net)
    archive = render_issue(issue, net, RenderMode.ARCHIVE)
    for slot in Slot:
        assert slot.value in email.html and slot.value in email.text
        assert slot.value not in archive.html and slot.value not in archive.text
    assert "Unsubscribe" not in archive.html and "unsubscribe" not in archive.text.lower()
    assert net.helpline.phone in archive.html and net.helpline.phone in archive.text


def test_local_images_point_at_the_archive_in_email_and_beside_the_page_in_archive() -> None:
    net, issue = network(), sample("2016-12-newsletter")
    name = next(b.image.published_name for b in issue.blocks
                if getattr(b, "image", None) is not None)
    assert name and re.fullmatch(r"homelessness-report-[0-9a-f]{12}\.png", name)
    email = Elements(render_html(issue, net)).all("img")
    archive = Elements(render_html(issue, net, RenderMode.ARCHIVE)).all("img")
    assert [i["src"] for i in email] == [f"https://news.wmasn.example.org/2016-12-newsletter/{name}"]
    assert [i["src"] for i in archive] == [name]


def test_the_archive_body_reuses_the_email_templates_without_recipient_data() -> None:
    net, issue = network(), sample("2017-02-news")
    css, body = render_archive_body(issue, net)
    assert "prefers-color-scheme" in css and "<style" not in css
    assert body.lstrip().startswith("<div") and "<body" not in body
    assert issue.title in body and net.helpline.phone in body
    assert "__NL_" not in body and "member@example.invalid" not in body


def test_view_in_browser_link_is_in_the_header_of_both_parts() -> None:
    rendered = render_issue(sample("2017-02-news"), network())
    assert rendered.view_url == "https://news.wmasn.example.org/2017-02-news/"
    assert rendered.text.startswith(f"View this issue in your browser:\n{rendered.view_url}\n")
    first_link = Elements(rendered.html).all("a")[0]
    assert first_link["href"] == rendered.view_url


def test_every_email_carries_the_helpline_footer_in_html_and_text() -> None:
    net = network()
    for slug in SAMPLES:
        rendered = render_issue(sample(slug), net)
        hrefs = [a["href"] for a in Elements(rendered.html).all("a")]
        assert "tel:08000121700" in hrefs and "tel:999" in hrefs
        assert net.helpline.report_url in hrefs
        assert Slot.UNSUBSCRIBE_URL.value in hrefs
        for words in (net.helpline.prompt, "Call the Modern Slavery Helpline on 08000 121 700",
                      "always call 999"):
            assert words in visible_text(rendered.html)
            assert words in " ".join(rendered.text.split())
        assert net.helpline.report_url in rendered.text
        assert f"member of the {net.name} mailing list" in " ".join(rendered.text.split())


def test_event_dates_read_as_long_en_gb_dates() -> None:
    assert long_date(dt.date(2016, 11, 15)) == "Tuesday 15 November 2016"
    net = network()
    base = sample("2016-12-newsletter")
    timed = Event(title="Training", where=HERE, start=dt.datetime(2017, 3, 21, 10, 0),
                  end=dt.datetime(2017, 3, 21, 13, 30))
    issue = replace(base, blocks=(*base.blocks, timed))
    text = render_text(issue, net)
    assert "When: Tuesday 15 November 2016" in text
    assert "When: Tuesday 21 March 2017, 10:00 to 13:30" in text
    assert "Tuesday 15 November 2016" in render_html(issue, net)


def test_contact_people_get_tel_and_mailto_links() -> None:
    base = sample("2017-02-news")
    person = Person(name="Alex Morgan", where=HERE, role="Coordinator", phone="0121 496 0000",
                    email="alex@example.org")
    issue = replace(base, blocks=(Contact(title="Who to call", where=HERE, people=(person,)),))
    hrefs = [a["href"] for a in Elements(render_html(issue, network())).all("a")]
    assert "tel:01214960000" in hrefs and "mailto:alex@example.org" in hrefs
    text = render_text(issue, network())
    assert "Phone: 0121 496 0000" in text and "Email: alex@example.org" in text


def test_text_lines_wrap_at_76_columns_and_never_break_a_url() -> None:
    long_url = "https://www.example.org/" + "a-very-long-path/" * 6
    base = sample("2016-12-newsletter")
    issue = replace(base, intro=("Words " * 60) + f"and a bare [link]({long_url}) " + "end " * 30)
    text = render_text(issue, network())
    for line in text.splitlines():
        unbreakable = [w for w in line.split() if w.startswith("https://") and len(w) > 70]
        assert len(line) <= 76 or unbreakable, line
    assert re.search(r"^\[\d+\] " + re.escape(long_url) + "$", text, re.M)
    assert max(len(line) for line in text.splitlines() if long_url not in line) > 60


def test_every_line_of_text_a_template_writes_wraps_at_76_columns() -> None:
    words = "a long piece of editor's text that goes on well past the end of a line " * 2
    person = Person(name="Dr " + words, where=HERE, role=words, phone="0121 496 0000")
    base = sample("2014-06-network-update")
    blocks = []
    for block in base.blocks:
        changes: dict[str, object] = {"title": words}
        link, image = getattr(block, "link", None), getattr(block, "image", None)
        if link is not None:
            changes["link"] = replace(link, text=words)
        if image is not None:
            changes["image"] = replace(image, alt=words)
        blocks.append(replace(block, **changes))
    blocks.append(Contact(title=words, where=HERE, people=(person,)))
    issue = replace(base, title=words, blocks=tuple(blocks))
    for slug in SAMPLES:
        for text in (render_text(sample(slug), network()), render_text(issue, network())):
            long = [line for line in text.splitlines()
                    if len(line) > 76 and not re.fullmatch(r"(\[\d+\] )?\S+", line)]
            assert long == []


def test_text_links_are_numbered_references_with_full_urls_at_the_end() -> None:
    net, issue = network(), sample("2016-12-newsletter")
    text = render_text(issue, net)
    refs = dict(re.findall(r"^\[(\d+)\] (\S+)$", text.split("\nLinks\n-----\n")[1], re.M))
    for url in ("https://www.rusi.org/", "https://www.thepassage.org.uk/",
                "mailto:coordinator@wmasn.example.org", net.helpline.report_url):
        assert url in refs.values()
    rusi = next(n for n, u in refs.items() if u == "https://www.rusi.org/")
    assert f"RUSI's report on disrupting human trafficking [{rusi}]" in text
    assert "<a " not in text and "&amp;" not in text


def test_templates_use_only_mjml_elements_mrml_supports() -> None:
    allowed = {"mjml", "mj-head", "mj-title", "mj-attributes", "mj-all", "mj-style", "mj-raw",
               "mj-body", "mj-section", "mj-column", "mj-text", "mj-image", "mj-divider",
               "mj-spacer"}
    used: set[str] = set()
    for path in (REPO / "templates" / "email").rglob("*.mjml.j2"):
        used |= set(re.findall(r"</?(mjml|mj-[a-z-]+)", path.read_text(encoding="utf-8")))
    assert used and used <= allowed, used - allowed


def test_editorial_warnings_are_printed_and_fail_the_build_only_under_strict(project) -> None:
    source = (project.root / "issues" / "2016-12-newsletter.yaml").read_text(encoding="utf-8")
    project.write("issues/2016-12-newsletter.yaml",
                  re.sub(r"(?m)^preheader:.*\n", "", source))
    relaxed = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "relaxed")
    assert relaxed.code == 0 and "preheader" in relaxed.err
    strict = project.run("build", "--strict", "issues/2016-12-newsletter.yaml", "-o", "strict")
    assert strict.code == 1 and "preheader" in strict.err
    assert not (project.root / "strict").exists()


def test_write_build_failing_midway_keeps_the_old_folder_and_leaves_no_staging(
        tmp_path: Path) -> None:
    from newsletter.email.render import write_build

    folder = tmp_path / "out"
    write_build(folder, {"email.html": b"old"}, [])
    missing = Image(src="gone.png", alt="gone", where=HERE, path=tmp_path / "gone.png",
                    digest="0" * 64)
    with pytest.raises(InputError, match=r"cannot write the build: .*gone\.png: No such file"):
        write_build(folder, {"email.html": b"new"}, [missing])
    assert (folder / "email.html").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    write_build(folder, {"email.html": b"new"}, [])
    assert (folder / "email.html").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab -/:.\n\t\u00e9"), max_size=400),
       indent=st.sampled_from(["", "  ", "* ", "[12] "]))
def test_the_text_wrapper_makes_the_same_lines_as_textwrap(text: str, indent: str) -> None:
    import textwrap

    from newsletter.text.plaintext import WIDTH, oneline, wrap

    expected = "\n".join(textwrap.wrap(oneline(text), width=WIDTH, initial_indent=indent,
                                       subsequent_indent=" " * len(indent),
                                       break_long_words=False, break_on_hyphens=False))
    assert wrap(text, initial_indent=indent, subsequent_indent=" " * len(indent)) == expected


def test_the_helpline_words_are_written_once_in_the_templates() -> None:
    words = "If someone is in immediate danger"
    holders = [p.relative_to(REPO).as_posix() for p in (REPO / "templates").rglob("*")
               if p.is_file() and words in p.read_text(encoding="utf-8")]
    assert holders == ["templates/shared/helpline.j2"]


def test_the_shared_helpline_words_are_escaped_in_html_only_also_from_the_cache(
        project) -> None:
    """Both environments load shared/helpline.j2; their compiled code must not be mixed up."""
    config = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", config.replace(
        "  name: Modern Slavery Helpline", '  name: "Modern Slavery <Helpline> & Co"'))
    for _ in range(2):  # compiled, then read back from .newsletter-cache
        result = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out")
        assert result.code == 0, result.err
        html = (project.root / "out" / "email.html").read_text(encoding="utf-8")
        text = (project.root / "out" / "email.txt").read_text(encoding="utf-8")
        assert "Call the Modern Slavery &lt;Helpline&gt; &amp; Co on" in html
        assert "Call the Modern Slavery <Helpline> & Co on" in " ".join(text.split())


def test_the_compact_helpline_line_tops_the_email_unless_the_settings_turn_it_off(
        project: Project) -> None:
    built = project.run("build", "2017-02-news", "-o", "on")
    assert built.code == 0, built.err
    text = (project.root / "on/email.txt").read_text(encoding="utf-8")
    first = text.split("West Midlands Anti-Slavery Network")[0]
    assert "Modern Slavery Helpline: 08000 121 700 · in an emergency 999" in first
    html = (project.root / "on/email.html").read_text(encoding="utf-8")
    assert html.count('href="tel:08000121700"') == 2
    config = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", config.replace("  emergency: \"999\"\n",
                                                    "  emergency: \"999\"\n  top: false\n"))
    assert "top: false" in project.config.read_text(encoding="utf-8")
    off = project.run("build", "2017-02-news", "-o", "off")
    assert off.code == 0, off.err
    text = (project.root / "off/email.txt").read_text(encoding="utf-8")
    assert "in an emergency" not in text.split("West Midlands Anti-Slavery Network")[0]
    assert "08000 121 700" in text  # the box at the end stays
    html = (project.root / "off/email.html").read_text(encoding="utf-8")
    assert html.count('href="tel:08000121700"') == 1
