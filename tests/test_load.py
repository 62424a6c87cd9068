"""load.py, yamlsource.py and yamlfields.py: strict issue loading, in-process."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.errors import InputError
from newsletter.input.issues import find_issues, load_issue, sniff_image
from newsletter.model import Article, Callout, Contact, Event, Links, Section

FULL_ISSUE = """\
title: Network newsletter, December 2016
date: 2016-12-05
number: 1
subject: "Network news: conference report, new members"
preheader: Our first newsletter, with events and partner news.
intro: |
  Welcome to the first newsletter of the network.

  See [the partnership's page](https://www.wmasn.example.org/about).
blocks:
  - type: article
    title: Report into modern slavery and homelessness
    body: |
      The Commissioner's office and the Passage published a report.
    image: {src: 2016-12/report.png, alt: "Cover of the report"}
    link: {url: "https://example.org/report", text: "Read the report"}
  - type: event
    title: Health engagement event on modern slavery
    date: 2016-11-15
    location: Public Health offices, Birmingham
  - type: event
    title: Conference on supply chains
    start: 2016-12-12 09:30
    end: 2016-12-12 16:00
  - type: contact
    title: Return and reintegration help
    people:
      - {name: Counter-trafficking team, role: Project assistant, phone: "0207 811 6077",
         email: team@bücher.example}
  - type: callout
    title: Training places left
    body: Book a place on the first-responder course.
  - type: links
    title: Further reading
    items:
      - {url: "https://www.gov.uk/modern-slavery", text: Modern slavery on GOV.UK, note: guidance}
      - {url: "mailto:coordinator@wmasn.example.org", text: Write to the coordinator}
  - type: section
    title: Updates from the network
"""


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = b"".join(b"\0" + b"\xff" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_issue(tmp_path: Path, text: str, name: str = "2016-12") -> Path:
    folder = tmp_path / "issues"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        load_issue(path)
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def full_issue(tmp_path: Path) -> Path:
    path = write_issue(tmp_path, FULL_ISSUE)
    (path.parent / "2016-12").mkdir()
    (path.parent / "2016-12" / "report.png").write_bytes(png(40, 30))
    return path


def test_a_full_issue_loads_every_block_type_with_its_values(full_issue: Path) -> None:
    issue = load_issue(full_issue)
    assert (issue.slug, issue.title, issue.date, issue.number) == (
        "2016-12", "Network newsletter, December 2016", dt.date(2016, 12, 5), 1)
    assert issue.subject_line == "Network news: conference report, new members"
    assert [type(b) for b in issue.blocks] == [Article, Event, Event, Contact, Callout, Links,
                                               Section]
    article, day, timed, contact, _callout, links, section = issue.blocks
    assert isinstance(article, Article) and article.image and article.link
    assert article.image.media_type == "image/png"
    assert (article.image.width, article.image.height) == (40, 30)
    assert article.image.path == (full_issue.parent / "2016-12" / "report.png").resolve()
    assert article.link.text == "Read the report"
    assert isinstance(day, Event) and day.date == dt.date(2016, 11, 15) and day.start is None
    assert isinstance(timed, Event) and timed.start == dt.datetime(2016, 12, 12, 9, 30)
    assert timed.end == dt.datetime(2016, 12, 12, 16, 0)
    assert isinstance(contact, Contact)
    assert contact.people[0].email == "team@xn--bcher-kva.example"
    assert contact.people[0].phone_tel == "tel:02078116077"
    assert isinstance(links, Links) and [i.note for i in links.items] == ["guidance", None]
    assert section.where.line == 38
    assert issue.location_of("blocks[5].title").line == 31


def test_the_source_hash_covers_the_yaml_and_the_image_bytes(full_issue: Path) -> None:
    first = load_issue(full_issue).source_hash
    assert load_issue(full_issue).source_hash == first
    (full_issue.parent / "2016-12" / "report.png").write_bytes(png(41, 30))
    assert load_issue(full_issue).source_hash != first


def test_yaml_1_1_words_and_numbers_stay_text_where_text_is_expected(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: NO\ndate: 2016-12-05\nsubject: 1.10\n"
                                 "preheader: 12:30\nblocks:\n  - {type: section, title: off}\n")
    issue = load_issue(path)
    assert (issue.title, issue.subject, issue.preheader) == ("NO", "1.10", "12:30")
    assert issue.blocks[0].title == "off"


def test_an_empty_or_null_value_is_no_value_but_quoted_tilde_is_text(tmp_path: Path) -> None:
    # libyaml marks plain scalars with style '' where PyYAML says None: both are plain
    path = write_issue(tmp_path, "title: T\ndate: 2016-12-05\nsubject:\npreheader: ~\n"
                                 "intro: null\nblocks:\n  - {type: section, title: '~'}\n")
    issue = load_issue(path)
    assert (issue.subject, issue.preheader, issue.intro) == (None, None, None)
    assert issue.subject_line == "T"
    assert issue.blocks[0].title == "~"


def test_every_problem_in_a_file_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\ndate: 2016-02-30\nnumber: 0123\nblocks:\n"
                                 "  - {type: section}\n  - {type: callout, title: y, "
                                 "link: {url: 'http://x.org', text: here}}\n")
    assert problems_of(path) == [
        f"{path}:2:7: date: 2016-02-30 is not a real date (day is out of range for month)",
        f"{path}:3:9: number: a leading zero is not allowed in 0123 (write 123)",
        f"{path}:5:5: blocks[1].title: required",
        f"{path}:6:43: blocks[2].link.url: http:// link (use https://)",
    ]


def test_a_duplicate_key_is_reported_with_both_lines(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: a\ndate: 2016-12-05\nblocks:\n  - type: section\n"
                                 "    title: b\n    title: c\n")
    assert problems_of(path) == [f"{path}:6:5: blocks[1].title: duplicate key (the first is "
                                 "on line 5) (keep one of them)"]


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"{b}: &{b} [{','.join(['*' + a] * 9)}]"
             for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
    path = write_issue(tmp_path, "\n".join(rows) + "\n")
    started = time.monotonic()
    problems = problems_of(path)
    assert time.monotonic() - started < 0.5
    assert problems == [f"{path}:1:4: a: anchor &a is not allowed (write the value out in full)"]


def test_five_thousand_levels_of_nesting_are_an_error_not_a_recursion_error(
        tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\nblocks: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems_of(path) == [f"{path}:2:28: nested more than 20 levels deep "
                                 "(flatten the structure)"]


def test_a_markdown_link_is_reported_on_its_own_line_in_a_literal_body(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\ndate: 2016-12-05\nblocks:\n  - type: callout\n"
                                 "    title: y\n    body: |\n      First line.\n\n"
                                 "      Then a\n      [bad link](/relative) here.\n")
    assert problems_of(path) == [
        f"{path}:10:7: blocks[1].body: link to '/relative': relative URL (an email has no "
        "base address; write the full https:// URL)"]


def test_an_image_is_sniffed_from_its_bytes_not_its_name(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\ndate: 2016-12-05\nblocks:\n  - type: article\n"
                                 "    title: y\n    body: z\n"
                                 "    image: {src: pics/photo.jpg, alt: A photo}\n")
    (path.parent / "pics").mkdir()
    (path.parent / "pics" / "photo.jpg").write_bytes(png(7, 5))
    image = load_issue(path).blocks[0].image  # type: ignore[union-attr]
    assert image is not None
    assert (image.media_type, image.width, image.height) == ("image/png", 7, 5)
    assert image.digest == hashlib.sha256(png(7, 5)).hexdigest()


@pytest.mark.parametrize(("data", "expected"), [
    (b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 20, ("image/gif", 320, 200)),
    (b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
     + b"\xff\xc0" + struct.pack(">HBHH", 17, 8, 480, 640) + b"\0" * 20,
     ("image/jpeg", 640, 480)),
    (b"RIFF" + b"\0" * 4 + b"WEBPVP8 " + b"\0" * 4 + b"\0\0\0\x9d\x01\x2a"
     + struct.pack("<HH", 300, 150) + b"\0" * 10, ("image/webp", 300, 150)),
    (b"RIFF" + b"\0" * 4 + b"WEBPVP8L" + b"\0" * 4 + b"\x2f"
     + struct.pack("<I", (99) | (49 << 14)) + b"\0" * 10, ("image/webp", 100, 50)),
    (b"RIFF" + b"\0" * 4 + b"WEBPVP8X" + b"\0" * 8 + (799).to_bytes(3, "little")
     + (599).to_bytes(3, "little") + b"\0" * 10, ("image/webp", 800, 600)),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
    (b"", None),
])
def test_image_types_and_sizes_come_from_the_file_headers(
        data: bytes, expected: tuple[str, int, int] | None) -> None:
    assert sniff_image(data) == expected


def test_an_image_over_one_megabyte_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\ndate: 2016-12-05\nblocks:\n  - type: article\n"
                                 "    title: y\n    body: z\n"
                                 "    image: {src: big.png, alt: A photo}\n")
    (path.parent / "big.png").write_bytes(png(4, 4) + b"\0" * 1_200_000)
    assert problems_of(path) == [f"{path}:7:18: blocks[1].image.src: image is 1.1 MB; the "
                                 "limit is 1.0 MB (compress it; 1200 pixels wide is plenty for "
                                 "an email)"]


def test_a_symlink_out_of_the_issues_folder_is_refused(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: x\ndate: 2016-12-05\nblocks:\n  - type: article\n"
                                 "    title: y\n    body: z\n"
                                 "    image: {src: escape.png, alt: A photo}\n")
    (tmp_path / "secret.png").write_bytes(png(1, 1))
    (path.parent / "escape.png").symlink_to(tmp_path / "secret.png")
    assert problems_of(path) == [f"{path}:7:18: blocks[1].image.src: 'escape.png' points "
                                 "outside the issue's folder (a link?)"]


def test_find_issues_lists_only_yaml_files_sorted(tmp_path: Path) -> None:
    for name in ("2017-01.yaml", "2016-12.yaml", "notes.txt"):
        write_issue(tmp_path, "", name.removesuffix(".yaml")) if name.endswith(".yaml") \
            else (tmp_path / "issues" / name).write_text("x")
    (tmp_path / "issues" / "2016-12").mkdir()
    assert [p.name for p in find_issues(tmp_path)] == ["2016-12.yaml", "2017-01.yaml"]
    assert find_issues(tmp_path / "nowhere") == []


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "issues" / "none.yaml") == [
        f"{tmp_path}/issues/none.yaml: cannot read the file: No such file or directory"]


def test_a_folder_a_pipe_or_an_unreadable_file_is_an_input_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    issues = tmp_path / "issues"
    (issues / "folder.yaml").mkdir(parents=True)
    os.mkfifo(issues / "pipe.yaml")  # reading it would wait for ever
    assert problems_of(issues / "folder.yaml") == [
        f"{issues}/folder.yaml: cannot read the file: a folder"]
    assert problems_of(issues / "pipe.yaml") == [
        f"{issues}/pipe.yaml: cannot read the file: not a regular file"]
    locked = issues / "locked.yaml"
    locked.write_text("title: x\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # chmod 000 does not stop root
    assert problems_of(locked) == [f"{locked}: cannot read the file: Permission denied"]


YAMLISH = st.lists(st.sampled_from([
    "title: ", "date: ", "blocks:", "\n", "  - ", "type: ", "article", "event", "section",
    "links", "items:", "url: ", "text: ", "{", "}", "[", "]", ",", ": ", "&a ", "*a", "!!str ",
    "!!python/object:x ", "'", '"', "|", ">", "#", "---", "2016-02-30", "0123", "12:30", "NO",
    "\t", "\\x00", "=?", "https://x.org", "javascript:x", "image: ", "src: ", "alt: ", "~",
    "    ", "é", "\u2028", "start: ", "end: ", "2016-11-15 10:00", "people:", "name: ",
]), max_size=40).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), YAMLISH.map(lambda s: s.encode("utf-8"))))
def test_any_bytes_either_load_or_raise_input_error_and_nothing_else(
        tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "issues" / "fuzz.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    try:
        load_issue(path)
    except InputError as e:
        assert e.problems
        assert all(p.where.path == str(path) for p in e.problems)


FIELD_TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(values=st.lists(FIELD_TEXT, min_size=12, max_size=12))
def test_any_text_in_any_field_of_a_well_formed_issue_never_escapes_as_another_error(
        tmp_path: Path, values: list[str]) -> None:
    q = [json.dumps(v) for v in values]  # a JSON string is a YAML double-quoted scalar
    text = (f"title: {q[0]}\ndate: {q[1]}\nnumber: {q[2]}\nsubject: {q[3]}\nintro: {q[4]}\n"
            f"blocks:\n  - type: article\n    title: {q[5]}\n    body: {q[6]}\n"
            f"    image: {{src: {q[7]}, alt: {q[8]}}}\n    link: {{url: {q[9]}, text: {q[10]}}}\n"
            f"  - type: contact\n    title: x\n    people: [{{name: x, email: {q[11]}, "
            f"phone: {q[2]}}}]\n  - type: event\n    title: x\n    start: {q[1]}\n")
    path = tmp_path / "issues" / "fuzz.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        load_issue(path)
    except InputError as e:
        assert e.problems


def test_a_duplicate_key_does_not_hide_the_other_problems_of_the_file(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "title: a\ntitle: b\nnumber: NO\nblocks: []\n")
    assert problems_of(path) == [
        f"{path}:1:1: date: required",
        f"{path}:2:1: title: duplicate key (the first is on line 1) (keep one of them)",
        f"{path}:3:9: number: expected a whole number, found 'NO'",
        f"{path}:4:9: blocks: no blocks (an issue needs at least one)",
    ]


def test_a_number_too_long_for_python_to_convert_is_an_input_error(tmp_path: Path) -> None:
    path = write_issue(tmp_path, f"title: a\ndate: 2016-12-05\nnumber: {'9' * 5000}\n"
                                 "blocks: [{type: section, title: b}]\n")
    assert problems_of(path) == [f"{path}:3:9: number: expected a whole number, found "
                                 f"'{'9' * 37}...'"]
