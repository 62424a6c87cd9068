"""The bad-input corpus, through the real CLI: each case fails with its exact message.

Every ``tests/bad_inputs/issues/<name>.yaml`` is checked as ``issues/<name>.yaml`` inside a
copy of the project (with the folder ``<name>/`` next to it, for image cases); every
``tests/bad_inputs/config/<name>.yaml`` replaces newsletter.yaml. The neighbouring
``<name>.expected`` holds the whole of stderr. Each run must exit 1, print no traceback
and write nothing.

To rewrite the .expected files after a deliberate change of wording, run with
``REGENERATE_EXPECTED=1`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import Project, Result

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
ISSUE_CASES = sorted(p.stem for p in (CORPUS / "issues").glob("*.yaml"))
CONFIG_CASES = sorted(p.stem for p in (CORPUS / "config").glob("*.yaml"))
REGENERATE = os.environ.get("REGENERATE_EXPECTED") == "1"

GOOD_ISSUE = """\
title: Network newsletter, December 2016
date: 2016-12-05
preheader: Our first newsletter, with events and partner news.
blocks:
  - type: section
    title: Updates from the network
"""


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def check_fails(project: Project, *args: str) -> Result:
    before = snapshot(project.root)
    result = project.run("check", *args)
    assert "Traceback" not in result.out + result.err
    assert result.code == 1, result.out + result.err
    assert snapshot(project.root) == before, "check wrote or changed a file"
    return result


def expect(result: Result, expected_file: Path) -> None:
    if REGENERATE:
        expected_file.write_text(result.err, encoding="utf-8")
    assert result.err == expected_file.read_text(encoding="utf-8")
    assert result.out == "1 issue checked: " + result.err.splitlines()[-1].removeprefix(
        "check failed: ") + ", 0 warnings\n"


def test_the_corpus_has_at_least_thirty_issue_cases_each_with_its_expected_message() -> None:
    assert len(ISSUE_CASES) >= 30
    assert len(CONFIG_CASES) >= 3
    for folder, names in (("issues", ISSUE_CASES), ("config", CONFIG_CASES)):
        for name in names:
            assert (CORPUS / folder / f"{name}.expected").is_file(), f"{folder}/{name}"


@pytest.mark.parametrize("name", ISSUE_CASES)
def test_a_bad_issue_fails_with_its_exact_message_and_writes_nothing(
        project: Project, name: str) -> None:
    issues = project.root / "issues"
    issues.mkdir(exist_ok=True)
    shutil.copy(CORPUS / "issues" / f"{name}.yaml", issues / f"{name}.yaml")
    if (CORPUS / "issues" / name).is_dir():
        shutil.copytree(CORPUS / "issues" / name, issues / name)
    result = check_fails(project, f"issues/{name}.yaml")
    expect(result, CORPUS / "issues" / f"{name}.expected")


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_a_bad_config_fails_with_its_exact_message_and_writes_nothing(
        project: Project, name: str) -> None:
    shutil.copy(CORPUS / "config" / f"{name}.yaml", project.config)
    project.write("issues/good.yaml", GOOD_ISSUE)
    result = check_fails(project, "issues/good.yaml")
    expect(result, CORPUS / "config" / f"{name}.expected")


def test_the_repository_config_and_the_good_issue_pass(project: Project) -> None:
    project.write("issues/good.yaml", GOOD_ISSUE)
    result = project.run("check", "issues/good.yaml")
    assert (result.code, result.err) == (0, "")
    assert result.out == "1 issue checked: 0 errors, 0 warnings\n"


def test_a_ten_megabyte_issue_is_refused_by_its_size_before_parsing(project: Project) -> None:
    line = b"- " + b"lol " * 20 + b"\n"
    project.write("issues/huge.yaml", b"title: x\nblocks:\n" + line * (10 * 2**20 // len(line)))
    started = time.monotonic()
    result = check_fails(project, "issues/huge.yaml")
    assert time.monotonic() - started < 10
    assert result.err == ("issues/huge.yaml: file is 10.0 MB; the limit is 1.0 MB "
                          "(split it, or move large content out of the file)\n"
                          "check failed: 1 error\n")


def test_an_issue_just_over_one_megabyte_is_refused(project: Project) -> None:
    body = "x" * 1_150_000
    project.write("issues/big.yaml", f"title: x\ndate: 2016-12-05\nintro: {body}\n")
    result = check_fails(project, "issues/big.yaml")
    assert result.err.startswith("issues/big.yaml: file is 1.1 MB; the limit is 1.0 MB")


def test_more_than_sixty_blocks_are_refused(project: Project) -> None:
    blocks = "".join(f"  - {{type: section, title: Part {i}}}\n" for i in range(61))
    project.write("issues/long.yaml", "title: x\ndate: 2016-12-05\nblocks:\n" + blocks)
    result = check_fails(project, "issues/long.yaml")
    assert result.err == ("issues/long.yaml:4:3: blocks: 61 blocks; the limit is 60 "
                          "(split the issue in two)\ncheck failed: 1 error\n")


def test_problems_of_every_file_are_reported_before_failing(project: Project) -> None:
    (project.root / "issues").mkdir(exist_ok=True)
    for name in ("missing-title", "number-no", "http-link"):
        shutil.copy(CORPUS / "issues" / f"{name}.yaml", project.root / "issues" / f"{name}.yaml")
    before = snapshot(project.root)
    result = project.run("check", "issues/missing-title.yaml", "issues/number-no.yaml",
                         "issues/http-link.yaml")
    assert result.code == 1
    assert snapshot(project.root) == before
    assert [line.split(":")[0] for line in result.err.splitlines()[:-1]] == [
        "issues/missing-title.yaml", "issues/number-no.yaml", "issues/http-link.yaml"]
    assert result.out == "3 issues checked: 3 errors, 0 warnings\n"
    assert result.err.splitlines()[-1] == "check failed: 3 errors"


def test_a_broken_config_does_not_hide_the_problems_of_the_issues(project: Project) -> None:
    shutil.copy(CORPUS / "config" / "no-helpline.yaml", project.config)
    (project.root / "issues").mkdir(exist_ok=True)
    shutil.copy(CORPUS / "issues" / "number-no.yaml", project.root / "issues" / "number-no.yaml")
    result = check_fails(project, "issues/number-no.yaml")
    assert result.err == (
        (CORPUS / "config" / "no-helpline.expected").read_text().splitlines(keepends=True)[0]
        + (CORPUS / "issues" / "number-no.expected").read_text().splitlines(keepends=True)[0]
        + "check failed: 2 errors\n")


def test_an_issue_that_does_not_exist_is_reported_without_a_traceback(project: Project) -> None:
    result = check_fails(project, "issues/nope.yaml")
    assert result.err == ("issues/nope.yaml: cannot read the file: No such file or directory\n"
                          "check failed: 1 error\n")
