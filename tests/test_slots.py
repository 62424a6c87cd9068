"""Per-member values go only where the templates place them, never into what an editor wrote.

The personalisation markers (model.Slot: greeting, unsubscribe URL) are filled per
recipient. A marker in issue text or a link would send each member's value (their
unsubscribe token) wherever that text shows or links to: ``check`` refuses it, with its
place and a hint, in any spelling a renderer decodes into a marker; the render refuses a
marker no template placed. Through the real CLI.
"""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from conftest import Project

from newsletter.model import Article, Slot

HINT = ("(remove it; members' values go only where the templates place them, never into "
        "issue text or links)")
ISSUE = "issues/2017-03-survey.yaml"


def issue_with(block: str, head: str = "") -> str:
    return ("title: Members' survey\ndate: 2017-03-06\npreheader: Tell us what you think.\n"
            + head + "blocks:\n" + block)


SURVEY = ("  - type: callout\n    title: Tell us what you think\n"
          "    body: The survey takes five minutes.\n"
          "    link: {url: 'https://survey.example.com/?ref=__NL_UNSUBSCRIBE_URL__', "
          "text: Take the survey}\n")


def import_members(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list",
                         "members")
    assert result.code == 0, result.err


def refused(project: Project, text: str) -> str:
    """Check the issue ``text``: refused (exit 1, no traceback); stderr."""
    project.write(ISSUE, text)
    result = project.run("check", ISSUE)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err
    return result.err


def test_a_marker_in_a_link_is_refused_by_check_and_no_member_token_reaches_the_site(
        project: Project) -> None:
    import_members(project)
    err = refused(project, issue_with(SURVEY))
    assert err == (f"{ISSUE}:8:50: blocks[1].link.url: __NL_UNSUBSCRIBE_URL__ is a "
                   f"personalisation marker: each member's own value would be put here {HINT}\n"
                   "check failed: 1 error\n")
    sent = project.run("send", ISSUE, "--list", "members", "--dry-run", "outbox")
    assert sent.code == 1 and "__NL_UNSUBSCRIBE_URL__ is a personalisation marker" in sent.err
    assert not (project.root / "outbox").exists()
    built = project.run("build", ISSUE)
    assert built.code == 1 and not (project.root / "build").exists()


def block(body: str = "Plain words.", *, title: str = "A callout", link_url: str =
          "https://www.wmasn.example.org/", link_text: str = "Our website") -> str:
    return (f"  - type: callout\n    title: '{title}'\n    body: |\n"
            + "".join(f"      {line}\n" for line in body.splitlines())
            + f"    link: {{url: '{link_url}', text: '{link_text}'}}\n")


# each: the issue, then the exact place and key, and the marker as shown
CASES = {
    "in a title": (issue_with(block(title="Hello __NL_GREETING__")),
                   "6:19: blocks[1].title", "__NL_GREETING__"),
    "in link text": (issue_with(block(link_text="Leave: __NL_UNSUBSCRIBE_URL__")),
                     "9:65: blocks[1].link.text", "__NL_UNSUBSCRIBE_URL__"),
    "an unknown marker": (issue_with(block(title="__NL_ADDRESS__")),
                          "6:13: blocks[1].title", "__NL_ADDRESS__"),
    "lower case": (issue_with(block(title="x __nl_greeting__")),
                   "6:15: blocks[1].title", "__nl_greeting__"),
    "in a Markdown body": (issue_with(block("First line.\n\nDear __NL_GREETING__, hello.")),
                           "10:12: blocks[1].body", "__NL_GREETING__"),
    "in a Markdown link": (issue_with(block("See [the survey](https://survey.example.com/"
                                            "?u=__NL_UNSUBSCRIBE_URL__).")),
                           "8:54: blocks[1].body", "__NL_UNSUBSCRIBE_URL__"),
    "in an autolink": (issue_with(block("<https://survey.example.com/__NL_UNSUBSCRIBE_URL__>")),
                       "8:35: blocks[1].body", "__NL_UNSUBSCRIBE_URL__"),
    "Markdown backslash escapes": (issue_with(block(r"Dear \_\_NL\_GREETING\_\_, hello.")),
                                   "8:13: blocks[1].body", "__NL_GREETING__"),
    "HTML entities": (issue_with(block("[x](https://survey.example.com/?u=&#95;&#95;"
                                       "NL_UNSUBSCRIBE_URL&#95;&#95;)")),
                      "8:41: blocks[1].body", "__NL_UNSUBSCRIBE_URL__"),
    "named entities": (issue_with(block("Dear &lowbar;&lowbar;NL_GREETING&lowbar;&lowbar;")),
                       "8:12: blocks[1].body", "__NL_GREETING__"),
    "percent-encoded": (issue_with(block(link_url="https://survey.example.com/?u=%5F%5FNL_"
                                                  "UNSUBSCRIBE_URL%5F%5F")),
                        "9:48: blocks[1].link.url", "__NL_UNSUBSCRIBE_URL__"),
    "in the image alt": (issue_with("  - type: article\n    title: x\n    body: y\n"
                                    "    image: {src: 'https://img.example.org/a.png', "
                                    "alt: 'Hello __NL_GREETING__'}\n"),
                         "8:63: blocks[1].image.alt", "__NL_GREETING__"),
    "in the image src": (issue_with("  - type: article\n    title: x\n    body: y\n"
                                    "    image: {src: 'https://img.example.org/"
                                    "__NL_UNSUBSCRIBE_URL__.png', alt: A picture}\n"),
                         "8:43: blocks[1].image.src", "__NL_UNSUBSCRIBE_URL__"),
    "in the subject": (issue_with(block(), "subject: 'News for __NL_GREETING__'\n"),
                       "4:20: subject", "__NL_GREETING__"),
    "in the preheader": ("title: t\ndate: 2017-03-06\npreheader: __NL_GREETING__, news\n"
                         "blocks:\n" + block(), "3:12: preheader", "__NL_GREETING__"),
    "in the intro": (issue_with(block(), "intro: |\n  Hello.\n  Dear __NL_GREETING__\n"),
                     "6:8: intro", "__NL_GREETING__"),
    "in a link-list note": (issue_with(
        "  - type: links\n    title: Reading\n    items:\n"
        "      - {url: 'https://www.wmasn.example.org/', text: Site, "
        "note: '__NL_UNSUBSCRIBE_URL__'}\n"), "8:68: blocks[1].items[1].note",
        "__NL_UNSUBSCRIBE_URL__"),
    "in a person's name": (issue_with(
        "  - type: contact\n    title: Contacts\n    people:\n"
        "      - {name: '__NL_GREETING__'}\n"), "8:17: blocks[1].people[1].name",
        "__NL_GREETING__"),
    "in an event location": (issue_with(
        "  - type: event\n    title: Meeting\n    date: 2017-04-01\n"
        "    location: At __NL_GREETING__'s office\n"), "8:18: blocks[1].location",
        "__NL_GREETING__"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_marker_anywhere_an_editor_writes_is_refused_with_its_place(
        project: Project, case: str) -> None:
    text, where, marker = CASES[case]
    err = refused(project, text)
    assert f"{ISSUE}:{where}: {marker} is a personalisation marker: each member's own " \
           f"value would be put here {HINT}\n" in err, err


def test_a_marker_in_newsletter_yaml_is_refused_too(project: Project) -> None:
    config = project.config.read_text()
    assert "  report_url: https://" in config
    project.write("newsletter.yaml", re.sub(r"(  report_url: \S+)", r"\1?r=__NL_GREETING__",
                                            config))
    project.write(ISSUE, issue_with(block()))
    result = project.run("check", ISSUE)
    assert result.code == 1 and "Traceback" not in result.err
    assert re.search(r"newsletter\.yaml:\d+:\d+: helpline\.report_url: __NL_GREETING__ is a "
                     "personalisation marker", result.err), result.err


def test_a_marker_a_template_writes_literally_fails_the_build_and_writes_nothing(
        project: Project) -> None:
    template = project.root / "templates/email/blocks/callout.mjml.j2"
    source = template.read_text()
    assert "<h2>{{ block.title" in source
    template.write_text(source.replace("<h2>{{ block.title",
                                       "<h2>__NL_UNSUBSCRIBE_URL__ {{ block.title", 1))
    project.write(ISSUE, issue_with(block()))
    result = project.run("build", ISSUE)
    assert result.code == 1 and "Traceback" not in result.err
    assert (f"{ISSUE}:1:1: the HTML part holds the personalisation marker __NL_UNSUBSCRIBE_URL__ "
            "where no template placed it; members' values go only where a template writes "
            "{{ Slot.UNSUBSCRIBE_URL }}") in result.err, result.err
    assert not (project.root / "build").exists()


def test_each_member_s_values_appear_only_where_the_templates_place_them(
        project: Project) -> None:
    import_members(project)
    project.write(ISSUE, issue_with(block("Plain words with *emphasis* and [a link]"
                                          "(https://survey.example.com/?ref=newsletter).")))
    result = project.run("send", ISSUE, "--list", "members", "--dry-run", "outbox")
    assert result.code == 0, result.err
    files = sorted((project.root / "outbox").glob("*.eml"))
    assert files
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        url = str(message["List-Unsubscribe"]).split(">")[0].strip("<")
        token = url.rsplit("/", 1)[1]
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert "__NL_" not in html + text
        assert html.count(token) == 1
        assert re.search(rf'<a href="{re.escape(url)}"[^>]*>Unsubscribe from', html)
        assert text.count(token) == 1
        assert re.search(rf"Unsubscribe from [^\n]+:\r?\n{re.escape(url)}\r?\n", text)
        assert "survey.example.com/?ref=newsletter" in html
        assert not re.search(r"survey\.example\.com[^\"\s]*" + re.escape(token), html + text)


def test_every_slot_value_starts_with_the_prefix_the_checks_look_for() -> None:
    # fields.py and render.py recognise markers by this prefix: a new Slot must keep it
    assert all(slot.value.startswith("__NL_") and slot.value.endswith("__") for slot in Slot)


def test_the_marker_finder_reports_where_the_spelling_starts() -> None:
    from newsletter.input.fields import slot_marker

    assert slot_marker("no marker, NL_ and __nl only") is None
    assert slot_marker("x=__NL_GREETING__") == (2, "__NL_GREETING__")
    assert slot_marker("ab &#95;&#95;NL_X") == (3, "__NL_X")
    assert slot_marker("ab %5f%5FNL_Y%5F%5F") == (3, "__NL_Y__")
    assert slot_marker(r"ab \_\_NL\_Z") == (4, "__NL_Z")


def test_the_render_places_fresh_markers_each_time() -> None:
    from newsletter.email.render import PlacedSlots

    one, two = PlacedSlots(), PlacedSlots()
    assert one.markers[Slot.GREETING] != two.markers[Slot.GREETING]
    assert all(re.fullmatch(r"__slot_[0-9a-f]{16}_[A-Z_]+__", m) for m in one.markers.values())


def test_the_render_refuses_a_marker_that_reached_the_model_some_other_way() -> None:
    import msgspec

    from newsletter.email.render import render_issue
    from newsletter.errors import RenderError
    from newsletter.input.config import load_network
    from newsletter.input.issues import load_issue
    from newsletter.model import RenderMode

    repo = Path(__file__).resolve().parent.parent
    network = load_network(repo / "newsletter.yaml")
    issue = load_issue(repo / "issues/2017-02-news.yaml", network)
    first = issue.blocks[0]
    assert isinstance(first, Article) and first.link is not None
    link = msgspec.structs.replace(first.link, url="https://survey.example.com/?u="
                                   "__NL_UNSUBSCRIBE_URL__")
    forged = msgspec.structs.replace(issue, blocks=(msgspec.structs.replace(first, link=link),
                                                    *issue.blocks[1:]))
    for mode in RenderMode:
        with pytest.raises(RenderError, match="personalisation marker __NL_UNSUBSCRIBE_URL__ "
                                              "where no template placed it"):
            render_issue(forged, network, mode)
    assert Slot.UNSUBSCRIBE_URL.value in render_issue(issue, network).html
