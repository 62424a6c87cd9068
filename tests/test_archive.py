"""The static archive: `newsletter archive` builds a site of every issue, safely and quickly."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import feedparser
from conftest import Project

# --------------------------------------------------------------------------- helpers


def png(width: int = 4, height: int = 3, seed: int = 0, padding: int = 0) -> bytes:
    """A valid PNG; ``padding`` adds an ancillary chunk to make it as big as needed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\0" + bytes([(seed + x) % 256 for x in range(width * 3)])
                   for _ in range(height))
    extra = chunk(b"teXt", b"pad\0" + b"x" * padding) if padding else b""
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def issue_yaml(title: str, date: str, number: int | None = None, *, body: str = "",
               preheader: str | None = None, extra_blocks: str = "") -> str:
    lines = [f"title: {title}", f"date: {date}"]
    if number is not None:
        lines.append(f"number: {number}")
    if preheader:
        lines.append(f"preheader: {preheader}")
    lines += [
        "blocks:",
        "  - type: article",
        f"    title: News for {title}",
        "    body: |",
        *[f"      {line}" for line in (body or f"Partner news for {title}.").splitlines()],
        "  - type: callout",
        "    title: Training places",
        "    body: Book a place on the first-responder training through the coordinator.",
        "    link: {url: 'https://www.wmasn.example.org/training', text: Book a place}",
    ]
    return "\n".join(lines) + "\n" + extra_blocks


THREE = {
    "2016-12": issue_yaml("Network newsletter, December 2016", "2016-12-05", 1,
                          preheader="Our first newsletter, with events and partner news.",
                          body="The conference on the **victim's journey** was a success."),
    "2017-01": issue_yaml("Network newsletter, January 2017", "2017-01-20", 2,
                          body="The Commissioner wrote to the minister about the NRM.\n"
                               "Everyone mentioned the zebrafish in the report."),
    "2017-02": issue_yaml("Network newsletter, February 2017", "2017-02-14", 3,
                          body="Two new members joined the partnership this month."),
}


def with_issues(project: Project, issues: dict[str, str]) -> Project:
    """The project with exactly these issues (the sample issues removed)."""
    shutil.rmtree(project.root / "issues", ignore_errors=True)
    (project.root / "issues").mkdir()
    for slug, text in issues.items():
        project.write(f"issues/{slug}.yaml", text)
    return project


def build(project: Project, output: str = "site") -> Path:
    result = project.run("archive", "--no-members", "-o", output)
    assert result.code == 0, result.err
    return project.root / output


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under a folder: bytes and mtime."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_staging_mirrors(site: Path) -> None:
    """The staging folder kept beside the site holds nothing but the site's own files."""
    staging = site.parent / f".{site.name}.staging"
    names = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    assert names == {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    for name in names:
        assert os.path.samefile(staging / name, site / name), name
    assert not (site.parent / f".{site.name}.old").exists()


def titles_in_order(page: str) -> list[str]:
    return re.findall(r'class="issue-card__title"><a href="[^"]+">([^<]+)</a>', page)


# --------------------------------------------------------------------------- the site


def test_the_index_lists_every_issue_newest_first_grouped_by_year(project: Project) -> None:
    site = build(with_issues(project, THREE))
    index = (site / "index.html").read_text()
    assert titles_in_order(index) == ["Network newsletter, February 2017",
                                      "Network newsletter, January 2017",
                                      "Network newsletter, December 2016"]
    assert index.index('id="y2017"') < index.index('id="y2016"')
    assert 'href="2016-12/index.html"' in index
    assert "No. 1" in index and 'datetime="2016-12-05"' in index
    assert "Our first newsletter, with events and partner news." in index  # the preheader
    assert "The Commissioner wrote to the minister about the NRM." in index  # first words


def test_each_issue_has_a_stable_permalink_page_embedding_its_email_render(
        project: Project) -> None:
    from newsletter.email.render import render_archive_body
    from newsletter.input.config import load_network
    from newsletter.input.issues import load_issue

    site = build(with_issues(project, THREE))
    network = load_network(project.config)
    issue = load_issue(project.root / "issues/2017-01.yaml", network)
    css, body = render_archive_body(issue, network)
    page = (site / "2017-01" / "index.html").read_text()
    assert body.strip() in page  # the same content and look as the email
    assert css.strip() in page
    assert '<link rel="canonical" href="https://news.wmasn.example.org/2017-01/">' in page
    assert 'rel="prev" href="../2016-12/index.html"' in page
    assert 'rel="next" href="../2017-02/index.html"' in page
    assert 'href="../index.html">All issues' in page
    assert "__NL_" not in page and "unsubscribe" not in page.lower()


def test_every_page_carries_the_helpline_with_dialable_numbers_and_the_feed_link(
        project: Project) -> None:
    site = build(with_issues(project, THREE))
    pages = ["index.html", "2016-12/index.html", "search/index.html", "404.html"]
    for name in pages:
        page = (site / name).read_text()
        assert 'href="tel:08000121700">08000 121 700</a>' in page, name
        assert 'href="tel:999">999</a>' in page, name
        assert 'href="https://www.modernslaveryhelpline.org/report">report online</a>' in page
        assert '<link rel="alternate" type="application/atom+xml"' in page, name
        assert 'data-quick-exit' in page and "https://www.bbc.co.uk/weather" in page
        assert '<meta name="robots"' not in page
        assert page.index('class="helpline"') < page.index('<main')


def test_the_feed_is_valid_atom_with_full_content_and_links_to_pages_in_the_site(
        project: Project) -> None:
    site = build(with_issues(project, THREE))
    feed = feedparser.parse((site / "feed.xml").read_bytes())
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert [e.title for e in feed.entries] == ["Network newsletter, February 2017",
                                               "Network newsletter, January 2017",
                                               "Network newsletter, December 2016"]
    assert feed.feed.updated == "2017-02-14T00:00:00Z"
    base = "https://news.wmasn.example.org/"
    for entry in feed.entries:
        assert entry.link.startswith(base) and entry.link.endswith("/")
        assert (site / entry.link[len(base):] / "index.html").is_file()
        assert entry.id == entry.link
    january = feed.entries[1]
    assert "zebrafish" in january.content[0].value
    assert "<h2" in january.content[0].value  # full HTML content, not a summary
    assert january.updated == "2017-01-20T00:00:00Z"


def test_search_index_is_a_script_defining_a_global_with_every_issue(project: Project) -> None:
    site = build(with_issues(project, THREE))
    script = (site / "search-index.js").read_text()
    assert script.startswith("window.NEWSLETTER_SEARCH = {")
    assert script.count('"slug":') == 3 and "zebrafish" in script
    data = json.loads(script.removeprefix("window.NEWSLETTER_SEARCH = ").rstrip(";\n"))
    for issue in data["issues"]:  # the title is its own field, not repeated in snippets
        assert issue["title"] and not issue["text"].startswith(issue["title"]), issue
    search = (site / "search" / "index.html").read_text()
    assert '<script src="../search-index.js"></script>' in search
    assert '<script src="../static/search.js"></script>' in search
    assert len(titles_in_order(search)) == 3  # without JavaScript: every issue, by title


def test_sitemap_robots_and_404_come_from_the_config(project: Project) -> None:
    site = build(with_issues(project, THREE))
    sitemap = (site / "sitemap.xml").read_text()
    assert "<loc>https://news.wmasn.example.org/2017-01/</loc>" in sitemap
    assert "<lastmod>2017-01-20</lastmod>" in sitemap
    robots = (site / "robots.txt").read_text()
    assert "Sitemap: https://news.wmasn.example.org/sitemap.xml" in robots
    assert "Disallow" not in robots
    assert "Page not found" in (site / "404.html").read_text()


def test_noindex_adds_meta_robots_and_disallows_crawling(project: Project) -> None:
    config = project.config.read_text().replace("noindex: false", "noindex: true")
    project.write("newsletter.yaml", config)
    site = build(with_issues(project, THREE))
    for name in ("index.html", "2017-01/index.html", "search/index.html"):
        assert '<meta name="robots" content="noindex, nofollow">' in (site / name).read_text()
    assert (site / "robots.txt").read_text() == "User-agent: *\nDisallow: /\n"


def test_without_a_quick_exit_url_no_exit_button_or_script_is_shown(project: Project) -> None:
    config = project.config.read_text().replace(
        "  quick_exit_url: https://www.bbc.co.uk/weather\n", "")
    project.write("newsletter.yaml", config)
    page = (build(with_issues(project, THREE)) / "index.html").read_text()
    assert "data-quick-exit" not in page and "site.js" not in page


def test_local_images_are_copied_beside_their_page_under_content_hashed_names(
        project: Project) -> None:
    image = png(seed=7)
    project.write("issues/2017-01/map.png", image)
    block = ("  - type: article\n    title: Our region\n"
             "    image: {src: 2017-01/map.png, alt: A map of the region}\n"
             "    body: Where our members work.\n")
    issues = {**THREE, "2017-01": THREE["2017-01"] + block}
    shutil.move(project.root / "issues/2017-01", project.root / "map-folder")
    with_issues(project, issues)
    shutil.move(project.root / "map-folder", project.root / "issues/2017-01")
    site = build(project)
    published = list((site / "2017-01").glob("map-*.png"))
    assert len(published) == 1 and published[0].read_bytes() == image
    assert re.fullmatch(r"map-[0-9a-f]{12}\.png", published[0].name)
    page = (site / "2017-01" / "index.html").read_text()
    assert f'src="{published[0].name}"' in page
    feed = feedparser.parse((site / "feed.xml").read_bytes())
    january = next(e for e in feed.entries if "January" in e.title)
    assert f'src="https://news.wmasn.example.org/2017-01/{published[0].name}"' in \
        january.content[0].value
    raw = (site / "feed.xml").read_text()  # absolute in the XML itself, not only via xml:base
    assert f"src=&#34;https://news.wmasn.example.org/2017-01/{published[0].name}&#34;" in raw


def test_an_image_over_one_megabyte_is_refused_and_nothing_is_written(
        project: Project) -> None:
    project.write("issues/2017-01/huge.png", png(padding=1_100_000))
    block = ("  - type: article\n    title: Big\n"
             "    image: {src: 2017-01/huge.png, alt: A huge picture}\n")
    with_issues(project, {"2017-01": THREE["2017-01"] + block})
    project.write("issues/2017-01/huge.png", png(padding=1_100_000))
    result = project.run("archive", "--no-members")
    assert result.code == 1
    assert "issues/2017-01.yaml:16" in result.err and "image" in result.err
    assert "Traceback" not in result.err
    assert not (project.root / "site").exists()


def test_building_twice_gives_the_same_bytes(project: Project) -> None:
    with_issues(project, THREE)
    first, second = build(project, "one"), build(project, "two")
    one = {k: v[0] for k, v in tree(first).items()}
    two = {k: v[0] for k, v in tree(second).items()}
    assert one == two
    assert len(one) >= 12


def test_an_unchanged_rebuild_rewrites_nothing(project: Project) -> None:
    site = build(with_issues(project, THREE))
    before = tree(site)
    result = project.run("archive", "--no-members")
    assert result.code == 0, result.err
    assert "0 issues rendered" in result.out
    assert tree(site) == before  # same bytes, same mtimes


def test_editing_one_issue_rewrites_only_its_page_neighbours_and_the_indexes(
        project: Project) -> None:
    five = {**THREE,
            "2017-03": issue_yaml("Network newsletter, March 2017", "2017-03-10", 4),
            "2017-04": issue_yaml("Network newsletter, April 2017", "2017-04-12", 5)}
    site = build(with_issues(project, five))
    before = tree(site)
    edited = five["2017-02"].replace("Two new members", "Three new members").replace(
        "February 2017\n", "February 2017 (corrected)\n", 1)
    project.write("issues/2017-02.yaml", edited)
    result = project.run("archive", "--no-members")
    assert result.code == 0, result.err
    assert "1 issues rendered" in result.out
    after = tree(site)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"2017-02/index.html", "2017-01/index.html", "2017-03/index.html",
                       "index.html", "search/index.html", "search-index.js", "feed.xml"}
    assert "Three new members" in after["2017-02/index.html"][0].decode()
    assert b"February 2017 (corrected)" in after["2017-03/index.html"][0]  # its prev link
    assert_staging_mirrors(site)
    # and the result is exactly what a build from nothing gives
    fresh = build(project, "fresh")
    assert {k: v[0] for k, v in tree(fresh).items()} == {k: v[0] for k, v in after.items()}


def test_a_hand_edited_search_index_is_rebuilt_from_the_issues(project: Project) -> None:
    site = build(with_issues(project, THREE))
    index = site / "search-index.js"
    text = index.read_text()
    index.unlink()  # (it is a hard link shared with the staging folder)
    index.write_text(text.replace("zebrafish", "walrus"))
    build(project)
    assert "zebrafish" in index.read_text() and "walrus" not in index.read_text()


def test_a_deleted_issue_disappears_from_the_site(project: Project) -> None:
    site = build(with_issues(project, THREE))
    (project.root / "issues/2017-01.yaml").unlink()
    build(project)
    assert not (site / "2017-01").exists()
    assert "January" not in (site / "index.html").read_text()
    assert 'href="../2016-12/index.html"' in (site / "2017-02/index.html").read_text()
    assert_staging_mirrors(site)


def test_bad_input_fails_with_every_problem_and_leaves_the_previous_site_untouched(
        project: Project) -> None:
    site = build(with_issues(project, THREE))
    before = tree(site)
    project.write("issues/2017-03.yaml", "title: Broken\ndate: 2017-02-30\nblocks: []\n")
    project.write("issues/2017-04.yaml", "title: [\n")
    result = project.run("archive", "--no-members")
    assert result.code == 1
    assert "issues/2017-03.yaml:2" in result.err and "issues/2017-04.yaml" in result.err
    assert "Traceback" not in result.err
    assert tree(site) == before
    assert_staging_mirrors(site)


def test_the_archive_refuses_to_replace_a_folder_it_did_not_build(project: Project) -> None:
    with_issues(project, THREE)
    project.write("notes/important.txt", "keep me")
    result = project.run("archive", "--no-members", "-o", "notes")
    assert result.code == 1
    assert "notes" in result.err and "not built by `newsletter archive`" in result.err
    assert (project.root / "notes/important.txt").read_text() == "keep me"


def test_an_output_that_cannot_be_a_site_folder_is_a_message(project: Project) -> None:
    with_issues(project, THREE)
    project.write("empty/.keep", "")
    (project.root / "empty/.keep").unlink()
    before = sorted(p.name for p in project.root.iterdir())
    for output, code, message in (
            ("newsletter.yaml", 2, "'newsletter.yaml' is a file"),
            (".", 1, ".: is not a folder name (name the site's own folder, e.g. -o site)"),
            ("empty/..", 1, "empty/..: is not a folder name"),
            ("/proc/site", 1, "/proc/site: cannot write the site (/proc/.site.staging: ")):
        result = project.run("archive", "--no-members", "-o", output)
        assert result.code == code, (output, result.err)
        assert message in result.err and "Traceback" not in result.err, result.err
    assert sorted(p.name for p in project.root.iterdir()) == before


def test_the_sample_issues_build_into_a_site(project: Project) -> None:
    samples = sorted((project.root / "issues").glob("*.yaml"))
    site = build(project)
    for sample in samples:
        assert (site / sample.stem / "index.html").is_file()
    assert feedparser.parse((site / "feed.xml").read_bytes()).bozo == 0


def test_the_site_sets_no_cookies_and_uses_no_storage(project: Project) -> None:
    site = build(with_issues(project, THREE))
    for script in (site / "static").glob("*.js"):
        text = script.read_text()
        for forbidden in ("cookie", "localStorage", "sessionStorage", "indexedDB", "fetch(",
                          "XMLHttpRequest", "http"):
            assert forbidden not in text, (script.name, forbidden)


def test_the_output_folder_is_swapped_in_whole(project: Project) -> None:
    site = build(with_issues(project, THREE))
    inode = os.stat(site).st_ino
    build(project)
    assert os.stat(site).st_ino != inode  # a new folder renamed into place, not edited
    assert_staging_mirrors(site)


def test_two_builds_beside_the_same_folder_do_not_run_at_once(project: Project) -> None:
    import fcntl

    site = build(with_issues(project, THREE))
    before = tree(site)
    fd = os.open(project.root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a build in progress holds it
        result = project.run("archive", "--no-members")
    finally:
        os.close(fd)
    assert result.code == 1
    assert "another `newsletter archive` is building beside it" in result.err
    assert tree(site) == before
    assert project.run("archive", "--no-members").code == 0


def test_a_build_killed_between_the_two_renames_is_put_right(project: Project) -> None:
    site = build(with_issues(project, THREE))
    before = tree(site)
    os.rename(site, project.root / ".site.old")  # as if killed just after the first rename
    build(project)
    assert tree(site) == before
    assert_staging_mirrors(site)


def test_a_remote_image_is_kept_as_written(project: Project) -> None:
    block = ("  - type: article\n    title: From a partner\n"
             "    image: {src: 'https://images.partner.example.org/team.jpg', alt: The team}\n"
             "    body: A photograph from our partner's own site.\n")
    with project.config.open("a", encoding="utf-8") as config:
        config.write("remote_images: allow\n")
    site = build(with_issues(project, {"2017-01": THREE["2017-01"] + block}))
    page = (site / "2017-01" / "index.html").read_text()
    assert 'src="https://images.partner.example.org/team.jpg"' in page
    assert [p.name for p in (site / "2017-01").iterdir()] == ["index.html"]


def test_an_archive_of_no_issues_is_still_a_valid_site(project: Project) -> None:
    site = build(with_issues(project, {}))
    assert "No issues have been published yet." in (site / "index.html").read_text()
    assert feedparser.parse((site / "feed.xml").read_bytes()).bozo == 0
