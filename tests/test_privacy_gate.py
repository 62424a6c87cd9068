"""The privacy gate: a build that would publish member data or a third party fails whole."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import Project
from test_archive import THREE, assert_staging_mirrors, build, issue_yaml, tree, with_issues

from newsletter.archive.privacy import Policy, scan_text

SUBSCRIBER = "jane.member@example.org"


def plant_in_template(project: Project, text: str) -> None:
    """Put ``text`` into the archive's index template (as a careless edit would)."""
    path = project.root / "templates/archive/index.html.j2"
    source = path.read_text()
    marker = '<p class="lede">'
    assert marker in source
    path.write_text(source.replace(marker, f"<p>{text}</p>\n  {marker}", 1))


def fails_whole(project: Project, site: Path, before: dict[str, tuple[bytes, int]],
                expected: str) -> str:
    """Run the build; it must exit 1 naming the leak, and leave the old site as it was."""
    result = project.run("archive", "--no-members")
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err
    assert re.search(expected, result.err), result.err
    assert "nothing was published" in result.err
    assert tree(site) == before
    assert_staging_mirrors(site)  # the refused pages are not left on disk either
    return result.err


@pytest.fixture
def published(project: Project) -> tuple[Project, Path, dict[str, tuple[bytes, int]]]:
    site = build(with_issues(project, THREE))
    return project, site, tree(site)


def test_a_subscriber_address_in_an_issue_fails_the_build(published: tuple) -> None:
    from newsletter.members.database import connect

    project, site, before = published
    conn = connect(project.root / "newsletter.db")
    conn.execute("INSERT INTO subscribers (email, created_at) VALUES (?, ?)",
                 (SUBSCRIBER, "2016-12-01T00:00:00Z"))
    conn.close()
    text = issue_yaml("Network newsletter, March 2017", "2017-03-01", 4,
                      body=f"Thanks to {SUBSCRIBER} for the photographs.")
    project.write("issues/2017-03.yaml", text)
    err = fails_whole(project, site, before,
                      r"site/2017-03/index\.html:\d+:\d+: subscriber address "
                      + re.escape(SUBSCRIBER) + " from the state database")
    assert "site/search-index.js:1:" in err and "site/feed.xml:" in err


def test_a_subscribers_opaque_id_in_the_output_fails_the_build(published: tuple) -> None:
    from newsletter.members.database import connect

    project, site, before = published
    conn = connect(project.root / "newsletter.db")
    conn.execute("INSERT INTO subscribers (email, created_at) VALUES (?, ?)",
                 (SUBSCRIBER, "2016-12-01T00:00:00Z"))
    uid = conn.execute("SELECT uid FROM subscribers").fetchone()[0]
    conn.close()
    plant_in_template(project, f'<a href="#{uid}">me</a>')
    fails_whole(project, site, before, rf"site/index\.html:\d+:\d+: subscriber id {uid}")


def test_the_archive_never_creates_the_state_database(project: Project) -> None:
    build(with_issues(project, THREE))
    assert not (project.root / "newsletter.db").exists()


def test_an_unsubscribe_url_with_a_token_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, '<a href="https://news.wmasn.example.org/unsubscribe/'
                               'eyJ1IjoiYWIifQ.Zk3x9Q.AbCdEfGhIjKlMnOpQrStUvWxYz01">Leave</a>')
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: unsubscribe URL with a token: "
                r"https://news\.wmasn\.example\.org/unsubscribe/eyJ1")


def test_a_signed_token_on_its_own_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, "ref eyJ1IjoiYWIifQ.Zk3x9Q.AbCdEfGhIjKlMnOpQrStUvWxYz01")
    fails_whole(project, site, before, r"site/index\.html:\d+:\d+: signed-token-shaped value")


def test_a_real_unsubscribe_token_is_found_wherever_it_appears() -> None:
    from newsletter.members.tokens import make_token, secrets_from_env

    secrets = secrets_from_env({"NEWSLETTER_SECRET": "test-secret-0123456789abcdef"})
    for uid, list_name in (("0123456789abcdef0123456789abcdef", "members"),
                           ("00000000000000000000000000000000", "a")):
        token = make_token(secrets, uid, list_name)
        for text in (f"<p>{token}</p>", f'<a href="https://elsewhere.example/u/{token}">',
                     f'{{"t":"{token}"}}'):
            problems = scan_text(text, POLICY, "site/x.html")
            assert any("signed-token-shaped value" in p.message for p in problems), text


def test_a_message_id_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, "Message-ID: {{ '<2016-12.4f2a9c@wmasn.example.org>' }}")
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: Message-ID-shaped value "
                r"<2016-12\.4f2a9c@wmasn\.example\.org>")


def test_a_slot_marker_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, "__NL_GREETING__,")
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: slot marker __NL_GREETING__")


def test_unrendered_template_syntax_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, "{{ '{{ x }}' }}")
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: unrendered template syntax '\{\{ x \}\}'")


def test_a_link_to_a_host_no_issue_or_config_names_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, '<link rel="stylesheet" '
                               'href="https://fonts.googleapis.com/css?family=Ubuntu">')
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: link to fonts\.googleapis\.com, a host not "
                r"written in the issues or the config")


def test_a_protocol_relative_source_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, '<img alt="" src="//tracker.example.net/p.gif">')
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: protocol-relative link to tracker\.example\.net")


def test_an_email_address_no_issue_or_config_writes_fails_the_build(published: tuple) -> None:
    project, site, before = published
    plant_in_template(project, "Write to j.bloggs@personal-mail.example.com")
    fails_whole(project, site, before,
                r"site/index\.html:\d+:\d+: email address j\.bloggs@personal-mail\.example\.com"
                " is not written in the issues or the config")


def test_what_the_issues_write_themselves_is_published(project: Project) -> None:
    contact = ("  - type: contact\n    title: Ask us\n    people:\n"
               "      - {name: Helpdesk, email: help@partner.example.org, phone: 0121 496 0000}\n"
               "  - type: links\n    title: Reading\n    items:\n"
               "      - {url: 'https://www.gov.uk/modern-slavery', text: Guidance}\n")
    text = issue_yaml("Network newsletter, March 2017", "2017-03-01", 4,
                      body="Templates show `{{ config }}` and `{% raw %}` literally. "
                           "TODO lists and TK marks are prose, as is the @media query.",
                      extra_blocks=contact)
    site = build(with_issues(project, {**THREE, "2017-03": text}))
    page = (site / "2017-03" / "index.html").read_text()
    assert "help@partner.example.org" in page and "https://www.gov.uk/modern-slavery" in page
    assert "{{ config }}" in page and "{% raw %}" in page


# --------------------------------------------------------------------------- scan_text


POLICY = Policy(hosts=frozenset({"news.wmasn.example.org"}),
                emails=frozenset({"news@wmasn.example.org"}), placeholders=frozenset(),
                subscribers=frozenset({SUBSCRIBER}),
                unsubscribe_base="https://news.wmasn.example.org/unsubscribe")


@pytest.mark.parametrize("clean", [
    '<img src="logo@2x.png" alt="">',
    "@media (prefers-color-scheme: dark) { a { color: #fff } }",
    '<feed xmlns="http://www.w3.org/2005/Atom">',
    "Version 1.2.3 of the guidance. TODO: nothing. See www.example.org.",
    '<a href="https://news.wmasn.example.org/unsubscribe">how to leave the list</a>',
    '<a href="mailto:news@wmasn.example.org">news@wmasn.example.org</a>',
    "window.NEWSLETTER_SEARCH = {\"issues\":[{\"a\":{\"b\":1}}]};",
    "report-3f2a9c0b1d2e.png and 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
])
def test_ordinary_page_text_passes_the_scan(clean: str) -> None:
    assert scan_text(clean, POLICY, "site/x.html") == []


@pytest.mark.parametrize(("leak", "message"), [
    (f"Hello {SUBSCRIBER.upper()}", "subscriber address"),
    ("jane.member&#64;example.org", "subscriber address"),
    ("mailto:jane.member%40example.org", "subscriber address"),
    ("&lt;abc.123@wmasn.example.org&gt;", "Message-ID-shaped value"),
    ('<a href="https://news.wmasn.example.org/unsubscribe/tok3n">', "unsubscribe URL"),
    ('<a href="https://www.example.org/p?token=abc123">', "per-recipient query parameter"),
    ("{% if x %}", "unrendered template syntax"),
    ('<script src="http://cdn.example.com/x.js">', "link to cdn.example.com"),
])
def test_each_kind_of_leak_is_found_with_its_line_and_column(leak: str, message: str) -> None:
    problems = scan_text(f"<p>first line</p>\n  {leak}\n", POLICY, "site/x.html")
    assert problems, leak
    assert all(str(p).startswith("site/x.html:2:") for p in problems), problems
    assert any(message in str(p) for p in problems), problems


def test_a_new_subscriber_is_found_in_pages_that_did_not_change(project: Project) -> None:
    from newsletter.members.database import connect

    text = issue_yaml("Network newsletter, March 2017", "2017-03-01", 4,
                      body=f"Photographs by {SUBSCRIBER}.")
    site = build(with_issues(project, {**THREE, "2017-03": text}))
    before = tree(site)
    conn = connect(project.root / "newsletter.db")
    conn.execute("INSERT INTO subscribers (email, created_at) VALUES (?, ?)",
                 (SUBSCRIBER, dt.date(2017, 3, 2).isoformat()))
    conn.close()
    # no input changed, but earlier "clean" verdicts were given under another policy
    fails_whole(project, site, before, r"site/2017-03/index\.html:\d+:\d+: subscriber address")


def test_a_hand_edited_published_page_is_rebuilt_not_trusted(published: tuple) -> None:
    project, site, _ = published
    page = site / "2016-12" / "index.html"
    text = page.read_text()
    page.unlink()  # break the hard link to the previous build's copy before editing
    page.write_text(text.replace("</main>", "__NL_GREETING__</main>"))
    result = project.run("archive", "--no-members")
    assert result.code == 0, result.err
    assert "__NL_" not in page.read_text()


def test_the_published_site_holds_nothing_derived_from_the_member_list(
        project: Project) -> None:
    with_issues(project, THREE)
    without_members = tree(build(project, "before"))
    imported = project.run("subscribers", "import", "subscribers/members.csv",
                           "--list", "news", "--consent", "network sign-up form")
    assert imported.code == 0, imported.err
    site = build(project, "after")
    published = {name: data for name, (data, _) in tree(site).items()}
    # the member list changes nothing a reader can fetch, not even a fingerprint
    assert published == {name: data for name, (data, _) in without_members.items()}
    assert not any("manifest" in name for name in published)
    staging = site.parent / f".{site.name}.staging"
    assert not any("manifest" in p.name for p in staging.rglob("*"))
    # beside each site, for its next build: the verdict's fingerprint covers the members
    policies = [json.loads((project.root / f".{name}.manifest.json").read_text())["policy"]
                for name in ("before", "after")]
    assert policies[0] != policies[1]
    assert not any(policies[1].encode() in data for data in published.values())
    with sqlite3.connect(project.root / "newsletter.db") as conn:
        values = [v for row in conn.execute("SELECT email, name, uid FROM subscribers")
                  for v in row if v]
    assert len(values) >= 100
    everything = b"\n".join(published.values()).decode().lower()
    assert [v for v in values if v.lower() in everything] == []


def test_an_unchanged_rebuild_trusts_the_pages_that_passed_the_gate(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.archive import build_site, privacy
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, load_issue
    from newsletter.members.store import values_for_archive
    from newsletter.model import PrivateValues

    with_issues(project, THREE)
    network = load_network(project.config)
    scanned: list[str] = []
    real_scan = privacy.scan_text

    def counting_scan(text: str, policy: Policy, where: str) -> list:
        scanned.append(where.removeprefix(f"{project.root}/"))
        return real_scan(text, policy, where)

    monkeypatch.setattr(privacy, "scan_text", counting_scan)

    def rebuild() -> list[str]:
        scanned.clear()
        build_site(network, find_issues(project.root), project.root / "site",
                   lambda path: load_issue(path, network),
                   values_for_archive(network.database, no_members=True) or PrivateValues())
        return sorted(scanned)

    assert "site/2016-12/index.html" in rebuild()
    assert rebuild() == []  # same bytes under the same policy: nothing scanned again
    from newsletter.members.database import connect

    conn = connect(project.root / "newsletter.db")
    conn.execute("INSERT INTO subscribers (email, created_at) VALUES (?, ?)",
                 (SUBSCRIBER, "2017-03-02T00:00:00Z"))
    conn.close()
    assert "site/2016-12/index.html" in rebuild()  # another member list: scan it all again



# --------------------------------------------------------------------------- no database

MEMBER = "a.hussain@west.example.org"  # in subscribers/members.csv
NO_DATABASE = (
    "newsletter.db: no state database, so the privacy gate cannot check the pages for "
    "members' addresses and ids; nothing was built (build where the members were imported "
    "(or give --config for that project); where there are none, e.g. a fresh checkout or "
    "CI, run 'newsletter archive --no-members')\n")
SKIPPED = ("archive: no state database (newsletter.db): the member check was skipped "
           "(--no-members)\n")


def with_member_in_an_issue(project: Project, written: str = MEMBER) -> Project:
    text = issue_yaml("Network newsletter, March 2017", "2017-03-01", 4,
                      body=f"Photographs by {written}.")
    return with_issues(project, {**THREE, "2017-03": text})


def import_members(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err


def test_without_the_state_database_the_archive_is_refused_not_built_unchecked(
        project: Project) -> None:
    with_member_in_an_issue(project)
    result = project.run("archive")
    assert (result.code, result.out, result.err) == (1, "", NO_DATABASE)
    assert not (project.root / "site").exists()
    assert not (project.root / ".site.staging").exists()
    assert not (project.root / "newsletter.db").exists()  # still never created


def test_without_the_state_database_an_existing_site_is_left_as_it_was(
        published: tuple) -> None:
    project, site, before = published
    with_member_in_an_issue(project)
    result = project.run("archive", "-o", "site")
    assert (result.code, result.err) == (1, NO_DATABASE)
    assert tree(site) == before


def test_no_members_builds_without_the_database_and_says_the_check_was_skipped(
        project: Project) -> None:
    with_member_in_an_issue(project)
    result = project.run("archive", "--no-members")
    assert result.code == 0, result.err
    assert result.err == SKIPPED
    assert MEMBER in (project.root / "site/2017-03/index.html").read_text()
    assert not (project.root / "newsletter.db").exists()


def test_no_members_does_not_switch_the_check_off_when_the_database_exists(
        project: Project) -> None:
    import_members(with_member_in_an_issue(project))
    result = project.run("archive", "--no-members")
    assert result.code == 1
    assert re.search(r"site/2017-03/index\.html:\d+:\d+: subscriber address "
                     + re.escape(MEMBER) + " from the state database", result.err)
    assert "skipped" not in result.err
    assert not (project.root / "site").exists()


def test_the_database_of_a_project_named_with_config_is_the_one_checked(
        project: Project) -> None:
    import_members(with_member_in_an_issue(project))
    beside = Project(project.root.parent)  # run from the folder above the project
    result = beside.run("--config", "project/newsletter.yaml", "archive",
                        "-o", "project/site")
    assert result.code == 1, result.out + result.err
    assert re.search(r"project/site/2017-03/index\.html:\d+:\d+: subscriber address "
                     + re.escape(MEMBER), result.err)
    assert not (project.root / "site").exists()


def test_the_demo_checks_its_archive_against_the_members_it_imported(
        project: Project) -> None:
    # the demo's archive runs after its import: a member named in an issue stops it
    with_member_in_an_issue(project)
    result = project.run("demo", "-o", "demo")
    assert result.code == 1, result.out + result.err
    assert re.search(r"demo/site/2017-03/index\.html:\d+:\d+: subscriber address "
                     + re.escape(MEMBER), result.err)
    assert "== import members.csv into list members" in result.out
    assert not (project.root / "demo/site").exists()


# --------------------------------------------------------------------------- encodings


ENCODED_MEMBER = [
    "mailto:a%2Ehussain@west.example.org",
    "mailto:a%2ehussain%40west.example.org",
    "mailto:%61%2E%68%75%73%73%61%69%6E%40west.example.org",
    "a&#46;hussain&#64;west.example.org",
    "a&#x2e;hussain&#x40;west&#46;example.org",
    "a&#X2E;hussain&commat;west.example.org",
    "a%252Ehussain%2540west.example.org",
    "a%25252Ehussain%252540west.example.org",
    "a&amp;#46;hussain&amp;#64;west.example.org",
    "a&#37;2Ehussain&#37;40west.example.org",
    "a%26%2346%3Bhussain%26%2364%3Bwest.example.org",
    "a.hussain%26%23%36%34%3Bwest.example.org",
    "A%2EHUSSAIN%40WEST.EXAMPLE.ORG",
    "https://partner.example.org/?aff=a.hussain%40west.example.org",
    "https://partner.example.org/?x=1&amp;to=a%2Ehussain%40west.example.org",
]


@pytest.mark.parametrize("leak", ENCODED_MEMBER)
def test_a_members_address_is_found_however_it_is_encoded(leak: str) -> None:
    policy = Policy(hosts=frozenset({"partner.example.org"}),
                    emails=frozenset({MEMBER, "a%2ehussain@west.example.org"}),
                    placeholders=frozenset(), subscribers=frozenset({MEMBER}),
                    unsubscribe_base=None)
    problems = scan_text(f"<p>first line</p>\n  <a href=\"{leak}\">Amira</a>\n", policy,
                         "site/x.html")
    assert [str(p) for p in problems] == [
        f"site/x.html:2:{col}: subscriber address {MEMBER} from the state database (the "
        "archive must carry no member data)" for col in [problems[0].where.col]]
    assert problems[0].where.line == 2 and 12 <= problems[0].where.col <= 12 + len(leak)


@pytest.mark.parametrize("written", [
    "[Amira](mailto:a%2Ehussain@west.example.org)",
    "[Amira](mailto:a%252Ehussain@west.example.org)",
    "[Amira](mailto:a%2Ehussain@west.example.org?subject=Photographs)",
    "[our partner](https://partner.example.org/?aff=a.hussain%40west.example.org)",
])
def test_a_members_address_written_encoded_in_an_issue_fails_the_build(
        project: Project, written: str) -> None:
    import_members(with_member_in_an_issue(project, written))
    result = project.run("archive")
    assert result.code == 1, result.err
    assert re.search(r"site/2017-03/index\.html:\d+:\d+: subscriber address "
                     + re.escape(MEMBER) + " from the state database", result.err)
    assert not (project.root / "site").exists()


@pytest.mark.parametrize("written", [
    "[our partner](https://partner.example.org/?aff=info%40partner.example.org)",
    "[our partner](https://partner.example.org/?aff=info%2540partner.example.org)",
    "[our partner](https://partner.example.org/?ref=news&aff=info%40partner.example.org)",
    "[the desk](mailto:desk@partner.example.org?cc=info%40partner.example.org)",
    "the desk, `desk@partner.example.org`, or *info@partner.example.org*",
])
def test_an_address_an_issue_writes_encoded_is_published_like_any_written_address(
        project: Project, written: str) -> None:
    with_member_in_an_issue(project, written)
    result = project.run("archive", "--no-members")
    assert (result.code, result.err) == (0, SKIPPED)
    import_members(project)  # none of them is a member's: the gate passes with members too
    result = project.run("archive")
    assert (result.code, result.err) == (0, "")
    assert "partner.example.org" in (project.root / "site/2017-03/index.html").read_text()


def test_an_unwritten_address_in_a_query_is_named_as_itself() -> None:
    policy = Policy(hosts=frozenset({"partner.example.org"}), emails=frozenset(),
                    placeholders=frozenset(), subscribers=frozenset(), unsubscribe_base=None)
    text = '<a href="https://partner.example.org/?aff=bob%40other.example.org">x</a>'
    assert [str(p) for p in scan_text(text, policy, "site/x.html")] == [
        "site/x.html:1:43: email address bob@other.example.org is not written in the "
        "issues or the config"]
