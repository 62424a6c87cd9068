"""`newsletter new`, issue numbers across issues/, and issues named without their path."""

from __future__ import annotations

import re

from conftest import Project


def test_new_writes_the_next_numbered_issue_with_every_block_type_and_it_passes_check(
        project: Project) -> None:
    made = project.run("new")
    assert made.code == 0, made.err
    path = re.search(r"wrote (issues/(\d{4}-\d{2})-news\.yaml) \(issue 3, dated (\S+)\)",
                     made.out)
    assert path, made.out
    text = (project.root / path.group(1)).read_text(encoding="utf-8")
    assert f"date: {path.group(3)}" in text and path.group(3).startswith(path.group(2))
    for kind in ("article", "event", "contact", "callout", "links", "section"):
        assert f"- type: {kind}" in text
    checked = project.run("check", "--strict")
    assert checked.code == 0, checked.err
    assert "4 issues checked: 0 errors, 0 warnings" in checked.out
    built = project.run("build", path.group(1))
    assert built.code == 0, built.err


def test_a_second_new_issue_in_the_same_month_takes_the_next_name_and_number(
        project: Project) -> None:
    first, second = project.run("new"), project.run("new")
    assert first.code == second.code == 0, second.err
    assert "(issue 3," in first.out and "(issue 4," in second.out
    assert re.search(r"issues/\d{4}-\d{2}-news-2\.yaml", second.out)
    assert project.run("check").code == 0


def test_new_never_overwrites_and_a_missing_skeleton_is_reported(project: Project) -> None:
    (project.root / "templates/issue/new.yaml.j2").unlink()
    result = project.run("new")
    assert result.code == 1 and "Traceback" not in result.err
    assert "templates/issue/new.yaml.j2: not found" in result.err
    assert len(list((project.root / "issues").glob("*.yaml"))) == 3


def test_check_warns_about_a_number_used_twice(project: Project) -> None:
    path = project.root / "issues/2017-02-news.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("number: 2", "number: 1"),
                    encoding="utf-8")
    result = project.run("check")
    assert result.code == 0
    assert ("issues/2017-02-news.yaml:3:9: number: warning: number 1 is also the number of "
            "2016-12-newsletter (issues/2016-12-newsletter.yaml:3:9) (give each issue its "
            "own number)") in result.err
    assert project.run("check", "--strict").code == 1


def test_check_warns_about_numbers_that_go_down_while_the_dates_go_up(project: Project) -> None:
    older = project.root / "issues/2016-12-newsletter.yaml"
    older.write_text(older.read_text(encoding="utf-8").replace("number: 1", "number: 5"),
                     encoding="utf-8")
    result = project.run("check")
    assert result.code == 0
    assert ("issues/2017-02-news.yaml:3:9: number: warning: number 2 comes after "
            "2016-12-newsletter (number 5, dated 2016-12-05) but is dated later, 2017-02-13 "
            "(numbers go up with the dates: check the number or the date)") in result.err


def test_build_status_and_check_take_an_issue_by_name_as_well_as_by_path(
        project: Project) -> None:
    by_name = project.run("build", "2017-02-news")
    assert by_name.code == 0, by_name.err
    assert project.run("check", "2017-02-news").code == 0
    status = project.run("status", "2017-02-news")
    assert status.code == 0 and "2017-02-news: not sent yet" in status.out
    unknown = project.run("build", "2099-01-none")
    assert unknown.code == 1 and "Traceback" not in unknown.err
