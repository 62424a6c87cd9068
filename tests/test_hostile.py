"""Hostile input: nothing dangerous reaches any output, whatever an issue contains.

Two layers are tested. Through the CLI, an issue full of payloads in every plain field
builds, and the built .eml's HTML part is scanned. Below the loader (which already refuses
raw HTML and bad links in Markdown), issues built directly in Python show the renderer
defends on its own: markdown-it escapes raw HTML, nh3 keeps an allowlist, and only
https/mailto/tel URLs keep their href.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from email.message import EmailMessage
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from newsletter.email.personalize import anonymous_recipient, assemble, fill, prepare
from newsletter.email.render import render_issue
from newsletter.input.config import load_network
from newsletter.model import (
    Article,
    Callout,
    Contact,
    Event,
    Image,
    Issue,
    Link,
    Links,
    Location,
    Network,
    Person,
    Section,
)
from newsletter.text.markdown import to_html

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = "<script>alert(1)</script>&\"'"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&amp;"
HERE = Location("tests/test_hostile.py")
MARKDOWN_ATTACKS = (
    f"{PAYLOAD} {{{{ config }}}} {{% raw %}} {{{{ ''.__class__ }}}}\n\n"
    "<img src=x onerror=alert(1)> <iframe src=https://evil.example/></iframe>\n\n"
    "<style>body{display:none}</style> <a href=\"https://evil.example/\" onclick=\"x()\">a</a>\n\n"
    "[one](JaVaScRiPt:alert(1)) [two](javascript&#x3A;alert(2)) [three](//evil.example/x) "
    "[four](/relative) [five](data:text/html;base64,PHNjcmlwdD4=) [six](vbscript:x) "
    "[seven](http://plain.example/) ![pixel](https://tracker.example/p.gif) "
    "[fine](https://example.org/ok)"
)


class Scan(HTMLParser):
    """Tags, attributes and text of a document."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_nothing_dangerous(html: str) -> None:
    scan = Scan(html)
    names = {tag for tag, _ in scan.tags}
    assert not names & {"script", "iframe", "object", "embed", "form", "input", "link", "base"}
    assert len([t for t, _ in scan.tags if t == "style"]) <= 1  # the template's own @media
    for tag, attrs in scan.tags:
        for name, value in attrs:
            assert not name.lower().startswith("on"), (tag, name)
            if name.lower() in ("href", "src", "action", "background", "poster"):
                assert value is not None
                assert re.match(r"(https://[^/]|mailto:|tel:|[a-z0-9-]+\.(png|jpe?g|gif|webp)$)",
                                value), (tag, name, value)
    lowered = html.lower()
    for bad in ("javascript:", "vbscript:", "data:", "//evil.example", "http://plain"):
        assert not re.search(r"""(href|src)\s*=\s*["']?\s*""" + re.escape(bad), lowered), bad


def network() -> Network:
    return load_network(REPO / "newsletter.yaml")


def hostile_issue(markdown: str = MARKDOWN_ATTACKS) -> Issue:
    link = Link(url="https://example.org/?q=%3Cscript%3E&x=\"'", text=PAYLOAD, where=HERE,
                note=PAYLOAD)
    return Issue(
        slug="hostile", title=PAYLOAD, date=dt.date(2016, 12, 5), where=HERE, number=7,
        subject=PAYLOAD, preheader=PAYLOAD, intro=markdown,
        blocks=(
            Section(title=PAYLOAD, where=HERE),
            Article(title=PAYLOAD, where=HERE, body=markdown, link=link,
                    image=Image(src="https://example.org/i.png", alt=PAYLOAD, where=HERE)),
            Event(title=PAYLOAD, where=HERE, date=dt.date(2016, 11, 15), location=PAYLOAD,
                  body=markdown, link=link),
            Contact(title=PAYLOAD, where=HERE, body=markdown, people=(
                Person(name=PAYLOAD, where=HERE, role=PAYLOAD, organisation=PAYLOAD,
                       phone="0121 496 0000", email="a@example.org"),)),
            Callout(title=PAYLOAD, where=HERE, body=markdown, link=link),
            Links(title=PAYLOAD, where=HERE, items=(link,)),
        ),
    )


# --------------------------------------------------------------------------- below the loader


def test_markdown_keeps_only_safe_tags_and_https_mailto_tel_links() -> None:
    html = to_html(MARKDOWN_ATTACKS)
    assert_nothing_dangerous(html)
    assert '<a href="https://example.org/ok">fine</a>' in html
    assert "<img" not in html and "rel=" not in html and "target=" not in html
    assert "{{ config }}" in html and "{% raw %}" in html


def test_the_renderer_alone_lets_nothing_dangerous_into_html_or_text() -> None:
    net = network()
    rendered = render_issue(hostile_issue(), net)
    html, text = fill(rendered, anonymous_recipient(net, "hostile"))
    assert_nothing_dangerous(html)
    links_section = text.split("\nLinks\n")[-1]
    for bad in ("javascript:", "evil.example", "data:", "vbscript:", "http://"):
        assert bad not in links_section.lower()


def test_the_payload_in_every_field_is_escaped_in_html_and_literal_in_text() -> None:
    net = network()
    issue = hostile_issue(markdown=PAYLOAD)
    rendered = render_issue(issue, net)
    # Escaped in the markup: the payload never appears raw, its escaped form does. (Inside
    # quoted attribute values, such as alt, HTML5 needs only & and " escaped: no tag there.)
    assert PAYLOAD not in rendered.html
    assert "script" not in {tag for tag, _ in Scan(rendered.html).tags}
    assert rendered.html.count(ESCAPED) >= 20
    # Decoded, the reader sees exactly what the editor wrote, in every field.
    visible = "".join(Scan(rendered.html).text)
    fields = 1 + 1 + 1 + 6 + 3 + 3 + 2 + 3  # title, preheader, intro, titles, bodies, links...
    assert visible.count(PAYLOAD) >= fields
    assert rendered.text.count(PAYLOAD) >= fields
    assert "&amp;" not in rendered.text and "&lt;" not in rendered.text
    alts = [dict(a).get("alt") for t, a in Scan(rendered.html).tags if t == "img"]
    assert alts == [PAYLOAD]


def test_author_text_is_never_compiled_as_a_template() -> None:
    issue = hostile_issue(markdown="{{ config }} {% raw %} {{ 7 * 7 }} {# c #}")
    rendered = render_issue(issue, network())
    for literal in ("{{ config }}", "{% raw %}", "{{ 7 * 7 }}", "{# c #}"):
        assert literal in unescape(rendered.html) and literal in rendered.text
    assert "{{ 7 * 7 }}" in rendered.text and " 49 " not in rendered.text


def test_the_sample_message_of_a_hostile_issue_is_well_formed() -> None:
    net = network()
    rendered = render_issue(hostile_issue(), net)
    raw = assemble(prepare(rendered, net), anonymous_recipient(net, "hostile"),
                   dt.datetime(2016, 12, 5, tzinfo=dt.UTC))
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == PAYLOAD
    assert all(not part.defects for part in message.walk())


# --------------------------------------------------------------------------- through the CLI

YAML_PAYLOAD = '"<script>alert(1)</script>&\\"\'"'


def hostile_yaml(subject: str = YAML_PAYLOAD, title: str = YAML_PAYLOAD) -> str:
    p = YAML_PAYLOAD
    return f"""\
title: {title}
date: 2016-12-05
subject: {subject}
preheader: {p}
intro: "Template syntax stays text: {{{{ config }}}} and {{% raw %}} and & \\" '"
blocks:
  - type: section
    title: {p}
  - type: article
    title: {p}
    body: "Plain words {{{{ config }}}} & more"
    image: {{src: "https://example.org/i.png", alt: {p}}}
    link: {{url: "https://example.org/a?b=1&c=2", text: {p}}}
  - type: event
    title: {p}
    date: 2016-11-15
    location: {p}
  - type: contact
    title: {p}
    people:
      - {{name: {p}, role: {p}, organisation: {p}, phone: "0121 496 0000"}}
  - type: callout
    title: {p}
  - type: links
    title: {p}
    items:
      - {{url: "https://example.org/x", text: {p}, note: {p}}}
"""


def html_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert isinstance(part, EmailMessage)
    content: str = part.get_content()
    return content


def test_a_built_hostile_issue_has_only_safe_links_and_no_script_in_its_eml(project) -> None:
    project.write("issues/hostile.yaml", hostile_yaml())
    with project.config.open("a", encoding="utf-8") as config:
        config.write("remote_images: allow\n")  # the payload's image is on example.org
    result = project.run("build", "issues/hostile.yaml", "-o", "out")
    assert result.code == 0, result.err
    raw = (project.root / "out" / "email.eml").read_bytes()
    html = html_part(raw)
    assert_nothing_dangerous(html)
    assert PAYLOAD not in html and ESCAPED in html
    assert "{{ config }}" in html and "{% raw %}" in html
    text = (project.root / "out" / "email.txt").read_text(encoding="utf-8")
    assert text.count(PAYLOAD) >= 10
    assert (project.root / "out" / "email.html").read_text(encoding="utf-8").count(ESCAPED) >= 10


@pytest.mark.parametrize("subject", [
    '"Hello\\r\\nBcc: victim@example.org"',
    '"Hello\\nBcc: victim@example.org"',
    '"=?UTF-8?Q?=0A?=Bcc:_victim@example.org"',
    '"Nul \\0 byte"',
])
def test_a_subject_that_could_inject_headers_stops_the_build(project, subject: str) -> None:
    project.write("issues/hostile.yaml", hostile_yaml(subject=subject))
    result = project.run("build", "issues/hostile.yaml", "-o", "out")
    assert result.code == 1, result.out
    assert "Traceback" not in result.err and "ubject" in result.err
    assert not (project.root / "out").exists()


@pytest.mark.parametrize(("title", "found"), [
    ('"Network\\r\\nBcc: victim@example.org"', "a line break"),
    ('"Network =?UTF-8?Q?=0A?=Bcc:_victim@example.org"', "'=?'"),
])
def test_an_issue_title_that_could_inject_headers_stops_the_build(
        project, title: str, found: str) -> None:
    # The title is the subject when there is none, and the archive's page title: refused
    # outright, even with a safe subject.
    project.write("issues/hostile.yaml", hostile_yaml(subject='"A safe subject"', title=title))
    result = project.run("build", "issues/hostile.yaml", "-o", "out")
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"issues/hostile.yaml:1:8: title: {found} is not allowed in "
                                 "text that goes into an email header")
    assert not (project.root / "out").exists()
