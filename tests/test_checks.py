"""checks.py: editorial warnings, and the `check` command that reports them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Project

from newsletter.errors import Problem, Severity
from newsletter.input.checks import editorial, fold
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.model import Location, Network

CLEAN = """\
title: Network newsletter, December 2016
date: 2016-12-05
preheader: Our first newsletter, with events and partner news.
blocks:
  - type: article
    title: Report into modern slavery and homelessness
    body: The Commissioner's office published [the full report](https://example.org/r).
    link: {url: "https://example.org/report", text: Read the report}
"""


def warnings_for(tmp_path: Path, text: str, network: Network | None = None) -> list[str]:
    folder = tmp_path / "issues"
    folder.mkdir(exist_ok=True)
    path = folder / "2016-12.yaml"
    path.write_text(text, encoding="utf-8")
    problems = editorial(load_issue(path, network))
    assert all(p.severity is Severity.WARNING for p in problems)
    return [str(p).removeprefix(f"{path}:") for p in problems]


def test_a_clean_issue_has_no_warnings(tmp_path: Path) -> None:
    assert warnings_for(tmp_path, CLEAN) == []


@pytest.mark.parametrize("text", ["click here", "Click HERE!", "here.", "Read more…",
                                  "this link", "Link", "more", "  read   more  "])
def test_vague_link_text_is_flagged_whatever_its_case_or_punctuation(
        tmp_path: Path, text: str) -> None:
    issue = CLEAN.replace("text: Read the report", f"text: '{text}'")
    assert warnings_for(tmp_path, issue) == [
        f"8:53: blocks[1].link.text: warning: link text {text.strip()!r} does not say where the "
        "link goes (say where it goes, e.g. 'the full report (PDF)')"]


def test_vague_link_text_inside_markdown_is_flagged_on_its_line(tmp_path: Path) -> None:
    issue = CLEAN.replace(
        "    body: The Commissioner's office published [the full report](https://example.org/r).",
        "    body: |\n      The report is out.\n\n      For the summary [click here](https://e.org/s)."
    ).replace("intro", "intro")
    assert warnings_for(tmp_path, issue) == [
        "10:7: blocks[1].body: warning: link text 'click here' does not say where the link "
        "goes (say where it goes, e.g. 'the full report (PDF)')"]


@pytest.mark.parametrize("placeholder", ["TK", "TODO", "TBC", "XXX", "Lorem ipsum",
                                         "{{ name }}"])
def test_placeholders_left_in_text_are_flagged(tmp_path: Path, placeholder: str) -> None:
    issue = CLEAN.replace("published", f"published {placeholder}")
    assert warnings_for(tmp_path, issue) == [
        f"7:11: blocks[1].body: warning: placeholder {placeholder!r} left in the text "
        "(finish or remove it before sending)"]


def test_words_that_merely_contain_placeholder_letters_are_not_flagged(tmp_path: Path) -> None:
    issue = CLEAN.replace("published", "published TKO stock XXXL todo-list")
    assert warnings_for(tmp_path, issue) == []


def test_a_long_subject_and_a_missing_preheader_are_flagged(tmp_path: Path) -> None:
    subject = "Network news: conference report, new members and a lot more besides"
    issue = CLEAN.replace("preheader: Our first newsletter, with events and partner news.\n",
                          f"subject: '{subject}'\n")
    assert warnings_for(tmp_path, issue) == [
        "1:1: preheader: warning: no preheader (inbox previews will show the first words of "
        "the email instead)",
        f"3:10: subject: warning: subject is {len(subject)} characters; phones show about 60 "
        "(put the important words first or shorten it)"]


def test_a_subject_of_exactly_sixty_characters_is_fine(tmp_path: Path) -> None:
    issue = CLEAN.replace("preheader:", f"subject: {'x' * 60}\npreheader:")
    assert warnings_for(tmp_path, issue) == []


def test_long_alt_text_and_remote_images_are_flagged(tmp_path: Path) -> None:
    alt = "A photograph of " + "the report cover " * 9
    issue = CLEAN + f"    image: {{src: 'https://cdn.example.org/cover.png', alt: '{alt}'}}\n"
    config = tmp_path / "newsletter.yaml"
    config.write_text((REPO / "newsletter.yaml").read_text(encoding="utf-8")
                      + "remote_images: allow\n", encoding="utf-8")
    assert warnings_for(tmp_path, issue, load_network(config, {})) == [
        "9:18: blocks[1].image.src: warning: remote image: fetching it tells its server when "
        "each reader opens the email (save the image next to the issue and give its path)",
        f"9:60: blocks[1].image.alt: warning: alt text is {len(alt.strip())} characters; keep "
        "it under 150 (describe what matters; put details in the body)"]


def test_repeated_block_titles_and_articles_without_a_body_are_flagged(tmp_path: Path) -> None:
    issue = CLEAN + ("  - type: article\n    title: Report into modern  slavery and homelessness\n"
                     "    link: {url: 'https://example.org/x', text: The summary}\n")
    assert warnings_for(tmp_path, issue) == [
        "10:12: blocks[2].title: warning: same title as blocks[1] on line 6 (readers skim by "
        "titles)",
        "10:12: blocks[2].title: warning: article without a body (add a sentence or two, or "
        "make it a links item)"]


def test_repeated_warnings_fold_after_three() -> None:
    problems = [Problem(Location("a.yaml", n, 1), "preheader", "no preheader",
                        severity=Severity.WARNING) for n in range(1, 6)]
    problems.append(Problem(Location("b.yaml", 1, 1), "title", "required"))
    assert fold(problems) == [
        "a.yaml:1:1: preheader: warning: no preheader",
        "a.yaml:2:1: preheader: warning: no preheader",
        "a.yaml:3:1: preheader: warning: no preheader",
        "b.yaml:1:1: title: required",
        "... and 2 more like this: warning: no preheader",
    ]


def test_check_prints_warnings_and_passes_unless_strict(project: Project) -> None:
    project.write("issues/2016-12.yaml", CLEAN.replace("text: Read the report", "text: here"))
    result = project.run("check", "issues/2016-12.yaml")
    warning = ("issues/2016-12.yaml:8:53: blocks[1].link.text: warning: link text 'here' does "
               "not say where the link goes (say where it goes, e.g. 'the full report (PDF)')\n")
    assert (result.code, result.err) == (0, warning)
    assert result.out == "1 issue checked: 0 errors, 1 warning\n"
    strict = project.run("check", "--strict", "issues/2016-12.yaml")
    assert (strict.code, strict.err) == (1, warning + "check failed: 1 warning (--strict)\n")


def test_check_without_names_checks_every_issue_and_folds_repeats(project: Project) -> None:
    for old in (project.root / "issues").glob("*.yaml"):
        old.unlink()
    for month in range(1, 6):
        project.write(f"issues/2017-0{month}.yaml", CLEAN.replace(
            "preheader: Our first newsletter, with events and partner news.\n", ""))
    result = project.run("check")
    assert result.code == 0
    assert result.out == "5 issues checked: 0 errors, 5 warnings\n"
    lines = result.err.splitlines()
    assert lines[0].startswith("issues/2017-01.yaml:1:1: preheader: warning: no preheader")
    assert len(lines) == 4
    assert lines[3] == "... and 2 more like this: warning: no preheader"
