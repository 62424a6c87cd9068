"""Careless or hostile input refused at the edge, through the real CLI as a user runs it.

Images from other sites, bidi controls in one-line text, files saved as UTF-16 or UTF-32,
issue files that are links to files elsewhere, a bad DKIM key named by the environment.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from conftest import Project, Result
from smtp_servers import SmtpServer

TRACKER = "https://tracker.example.net/open.gif?u=8812"
REMOTE = f"""\
title: Network newsletter, March 2017
date: 2017-03-06
preheader: Partner news.
blocks:
  - type: article
    title: A partner's report
    image: {{src: "{TRACKER}", alt: Cover of the report}}
    body: The report is out.
"""
REMOTE_PROBLEM = (
    "issues/2017-03.yaml:7:18: blocks[1].image.src: image from another site "
    "(tracker.example.net): loading it tells that site when each reader opens the email or "
    "the archive page (save it in issues/2017-03/ and write src: 2017-03/open.gif; or set "
    "remote_images: allow in newsletter.yaml)")


def fails(result: Result) -> str:
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    return result.err


def allow_remote_images(project: Project) -> None:
    with project.config.open("a", encoding="utf-8") as config:
        config.write("remote_images: allow\n")


def policy_of(page: str) -> str:
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert found is not None
    return found.group(1)


# --------------------------------------------------------------------------- remote images


def test_an_image_from_another_site_fails_check_build_and_archive_where_it_is_written(
        project: Project) -> None:
    project.write("issues/2017-03.yaml", REMOTE)
    assert fails(project.run("check", "issues/2017-03.yaml")) == (
        REMOTE_PROBLEM + "\ncheck failed: 1 error\n")
    assert fails(project.run("build", "issues/2017-03.yaml")) == REMOTE_PROBLEM + "\n"
    assert fails(project.run("archive", "-o", "site", "--no-members")) == REMOTE_PROBLEM + "\n"
    assert not (project.root / "site").exists() and not (project.root / "build").exists()


def test_the_hint_names_a_file_in_the_issues_folder_even_for_an_address_without_one(
        project: Project) -> None:
    project.write("issues/2017-03.yaml", REMOTE.replace(TRACKER, "https://cdn.example.net/"))
    assert "(save it in issues/2017-03/ and write src: 2017-03/image; or set remote_images: " \
        "allow in newsletter.yaml)" in fails(project.run("check", "issues/2017-03.yaml"))


def test_by_default_every_archive_page_loads_images_from_its_own_site_only(
        project: Project) -> None:
    assert project.run("archive", "-o", "site", "--no-members").code == 0
    pages = sorted((project.root / "site").rglob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "img-src 'self';" in policy_of(text) and "https:" not in policy_of(text)
        assert "This archive sets no cookies and loads nothing from other sites." in text


def test_allowed_remote_images_are_published_and_the_policy_and_footer_say_so(
        project: Project) -> None:
    allow_remote_images(project)
    project.write("issues/2017-03.yaml", REMOTE)
    checked = project.run("check", "issues/2017-03.yaml")
    assert checked.code == 0 and "blocks[1].image.src: warning: remote image" in checked.err
    assert project.run("archive", "-o", "site", "--no-members").code == 0
    page = (project.root / "site" / "2017-03" / "index.html").read_text(encoding="utf-8")
    assert 'src="https://tracker.example.net/open.gif?u=8812"' in page
    assert "img-src 'self' https:;" in policy_of(page)
    assert "loads nothing from other sites" not in page
    assert "Images in its issues may come from other sites" in page
    index = (project.root / "site" / "index.html").read_text(encoding="utf-8")
    assert policy_of(index) == policy_of(page)  # one policy: the server sends it too


def test_the_server_sends_the_policy_the_settings_allow(project: Project) -> None:
    import httpx
    from test_serve import start

    allow_remote_images(project)
    project.write("issues/2017-03.yaml", REMOTE)
    imported = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert imported.code == 0, imported.err  # serve wants the members database
    assert project.run("archive", "-o", "site").code == 0
    running = start(project, "-d", "site")
    try:
        page = httpx.get(f"{running.url}/2017-03/")
    finally:
        running.stop()
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == \
        f"{policy_of(page.text)}; frame-ancestors 'none'"
    assert "img-src 'self' https:;" in page.headers["content-security-policy"]


# --------------------------------------------------------------------------- bidi controls

BIDI = ("202A", "202B", "202C", "202D", "202E", "2066", "2067", "2068", "2069")


def test_every_bidi_control_in_one_line_text_is_refused_where_it_is(project: Project) -> None:
    blocks = "".join(f'  - type: section\n    title: "Part \\u{code} one"\n' for code in BIDI)
    project.write("issues/2017-03.yaml", "title: Network newsletter, March 2017\n"
                  "date: 2017-03-06\nblocks:\n" + blocks)
    lines = fails(project.run("check", "issues/2017-03.yaml")).splitlines()
    assert lines[-1] == "check failed: 9 errors"
    assert lines[:-1] == [
        f"issues/2017-03.yaml:{5 + 2 * i}:12: blocks[{i + 1}].title: bidi control U+{code} "
        f"({unicodedata.name(chr(int(code, 16)))}) is not allowed here (it makes the text "
        "show in another order than it is written; delete it)"
        for i, code in enumerate(BIDI)]


def test_a_bidi_override_is_refused_in_names_links_and_places_too(project: Project) -> None:
    rlo = "\u202e"
    project.write("issues/2017-03.yaml", f"""\
title: Network newsletter, March 2017
date: 2017-03-06
preheader: Partner news{rlo}.
blocks:
  - type: event
    title: Training day
    date: 2017-03-20
    location: Room {rlo}12
    link: {{url: "https://example.org/{rlo}gpj.exe", text: Book a place}}
  - type: contact
    title: Who to ask
    people:
      - {{name: Sam {rlo}Jones, role: Coordinator}}
""")
    err = fails(project.run("check", "issues/2017-03.yaml"))
    assert [line.split(": bidi")[0] for line in err.splitlines()[:-1]] == [
        "issues/2017-03.yaml:3:12: preheader",
        "issues/2017-03.yaml:8:15: blocks[1].location",
        "issues/2017-03.yaml:9:17: blocks[1].link.url",
        "issues/2017-03.yaml:13:16: blocks[2].people[1].name"]
    assert not (project.root / "build").exists()
    assert fails(project.run("build", "issues/2017-03.yaml")).count("U+202E") == 4


def test_a_bidi_control_in_newsletter_yaml_is_refused(project: Project) -> None:
    config = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", config.replace(
        "prompt: Suspect someone is a victim of modern slavery?",
        'prompt: "Suspect someone is a victim of modern slavery?\\u2066"'))
    err = fails(project.run("check", "issues/2016-12-newsletter.yaml"))
    assert err.startswith("newsletter.yaml:19:11: helpline.prompt: bidi control U+2066 "
                          "(LEFT-TO-RIGHT ISOLATE) is not allowed here")


def test_right_to_left_text_without_controls_is_welcome(project: Project) -> None:
    project.write("issues/2017-03.yaml", "title: نشرة الشبكة\ndate: 2017-03-06\n"
                  "preheader: חדשות הרשת\nblocks:\n  - type: section\n    title: أخبار\n")
    result = project.run("check", "issues/2017-03.yaml")
    assert (result.code, result.err) == (0, "")


# --------------------------------------------------------------------------- UTF-16 and UTF-32

GOOD = """\
title: Network newsletter, March 2017
date: 2017-03-06
preheader: Partner news.
blocks:
  - type: section
    title: Updates from the network
"""


def test_issues_saved_as_utf16_or_utf32_are_named_so_with_or_without_a_mark(
        project: Project) -> None:
    saved = {"le16": GOOD.encode("utf-16-le"), "be16": GOOD.encode("utf-16-be"),
             "bom16": GOOD.encode("utf-16"), "le32": GOOD.encode("utf-32-le"),
             "bom32": b"\x00\x00\xfe\xff" + GOOD.encode("utf-32-be"),
             # mostly Chinese: fewer NULs, still UTF-16
             "zh16": GOOD.replace("Updates from the network", "网络新闻" * 40).encode("utf-16-le")}
    for name, data in saved.items():
        project.write(f"issues/{name}.yaml", data)
    err = fails(project.run("check", *(f"issues/{name}.yaml" for name in saved)))
    assert err.splitlines() == [
        "issues/le16.yaml:1:1: looks like UTF-16, not UTF-8 (save it as UTF-8)",
        "issues/be16.yaml:1:1: looks like UTF-16, not UTF-8 (save it as UTF-8)",
        "issues/bom16.yaml:1:1: looks like UTF-16, not UTF-8: it starts with a UTF-16 byte "
        "order mark (save it as UTF-8 without BOM)",
        "issues/le32.yaml:1:1: looks like UTF-32, not UTF-8 (save it as UTF-8)",
        "issues/bom32.yaml:1:1: looks like UTF-32, not UTF-8: it starts with a UTF-32 byte "
        "order mark (save it as UTF-8 without BOM)",
        "issues/zh16.yaml:1:1: looks like UTF-16, not UTF-8 (save it as UTF-8)",
        "check failed: 6 errors"]
    assert fails(project.run("build", "issues/le16.yaml")).startswith(
        "issues/le16.yaml:1:1: looks like UTF-16, not UTF-8")


def test_a_stray_nul_in_a_utf8_issue_is_still_a_control_character(project: Project) -> None:
    project.write("issues/2017-03.yaml", GOOD.replace("Partner news.", "Partner\x00news.")
                  .encode("utf-8"))
    assert fails(project.run("check", "issues/2017-03.yaml")).startswith(
        "issues/2017-03.yaml:3:19: control character U+0000 is not allowed")


def test_a_config_saved_as_utf32_is_named_so(project: Project) -> None:
    project.write("newsletter.yaml", project.config.read_text(encoding="utf-8")
                  .encode("utf-32"))
    assert fails(project.run("check", "issues/2016-12-newsletter.yaml")).startswith(
        "newsletter.yaml:1:1: looks like UTF-32, not UTF-8: it starts with a UTF-32 byte order "
        "mark (save it as UTF-8 without BOM)\n")


# --------------------------------------------------------------------------- linked issue files

LINKED = ("issues/2017-03.yaml: the file is a link to a file outside its folder (copy the "
          "issue into the folder instead of linking to it; what a linked file holds is not "
          "shown)")


def test_an_issue_linked_to_a_file_elsewhere_is_refused_without_quoting_it(
        project: Project, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SeCrEtHaSh:17000:0:99999:7:::\ndaemon:*:17000:0:99999:7:::\n")
    (project.root / "issues" / "2017-03.yaml").symlink_to(secret)
    assert fails(project.run("check", "issues/2017-03.yaml")) == (
        LINKED + "\ncheck failed: 1 error\n")
    assert fails(project.run("check")).splitlines() == [LINKED, "check failed: 1 error"]
    assert fails(project.run("build", "issues/2017-03.yaml")) == LINKED + "\n"
    assert fails(project.run("archive", "-o", "site", "--no-members")) == LINKED + "\n"
    assert not (project.root / "site").exists() and not (project.root / "build").exists()


def test_links_out_of_the_folder_to_an_issue_or_to_nothing_are_refused_too(
        project: Project, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yaml").write_text(GOOD, encoding="utf-8")
    issues = project.root / "issues"
    (issues / "a.yaml").symlink_to(tmp_path / "elsewhere.yaml")  # a good issue, elsewhere
    (issues / "b.yaml").symlink_to("../newsletter.yaml")  # in the project, not the folder
    (issues / "c.yaml").symlink_to(tmp_path / "gone.yaml")
    err = fails(project.run("check", *(f"issues/{n}.yaml" for n in "abc")))
    assert [line.split(": ", 1) for line in err.splitlines()[:-1]] == [
        [f"issues/{n}.yaml", LINKED.split(": ", 1)[1]] for n in "abc"]
    assert "West Midlands" not in err


def test_a_link_to_another_issue_in_the_folder_is_read(project: Project) -> None:
    project.write("issues/drafts/2017-03.yaml", GOOD)
    (project.root / "issues" / "2017-03.yaml").symlink_to("drafts/2017-03.yaml")
    (project.root / "issues" / "latest.yaml").symlink_to("2016-12-newsletter.yaml")
    result = project.run("check", "issues/2017-03.yaml", "issues/latest.yaml")
    assert (result.code, result.err) == (0, "")


# --------------------------------------------------------------------------- DKIM key

def send_with(project: Project, server: SmtpServer, **env: str) -> Result:
    return project.run("send", "issues/2017-02-news.yaml", "--list", "members", "--yes", env={
        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
        "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": "test-password", **env})


def test_a_bad_dkim_key_is_reported_where_its_path_was_given(project: Project) -> None:
    imported = project.run("subscribers", "import", "subscribers/members.csv", "--list",
                           "members")
    assert imported.code == 0, imported.err
    project.write("junk.pem", "not a key\n")
    missing = project.root / "keys" / "news.pem"
    with SmtpServer() as server:
        from_env = fails(send_with(project, server, NEWSLETTER_DKIM_KEY=str(missing),
                                   NEWSLETTER_DKIM_SELECTOR="news2016")).splitlines()
        junk_env = fails(send_with(project, server, NEWSLETTER_DKIM_KEY="junk.pem",
                                   NEWSLETTER_DKIM_SELECTOR="news2016")).splitlines()
        config = project.config.read_text(encoding="utf-8")
        project.write("newsletter.yaml", config.replace(
            "  password_env: NEWSLETTER_SMTP_PASSWORD\n",
            "  password_env: NEWSLETTER_SMTP_PASSWORD\n  dkim_key: junk.pem\n"
            "  dkim_selector: news2016\n"))
        junk_file = fails(send_with(project, server)).splitlines()
        assert server.received == []
    assert f"environment variable NEWSLETTER_DKIM_KEY: smtp.dkim_key: cannot read the key " \
        f"file {missing}: No such file or directory" in from_env
    assert "environment variable NEWSLETTER_DKIM_KEY: smtp.dkim_key: junk.pem: not a usable " \
        "private key (Private key not found)" in junk_env
    assert "newsletter.yaml:38:13: smtp.dkim_key: junk.pem: not a usable private key " \
        "(Private key not found)" in junk_file
    assert not any(line.startswith("newsletter.yaml: ") for line in from_env + junk_env)
