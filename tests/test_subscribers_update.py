"""`subscribers import --update` through the real CLI and a real SQLite file.

Members already on file take the CSV's name, organisation and other columns; nobody's status
or consent records change, people who left are left alone whole, empty cells change nothing.
"""

from __future__ import annotations

import csv
import io
from contextlib import closing
from pathlib import Path

from conftest import Project

from newsletter.members import store as members

SAMPLE = Path(__file__).resolve().parent.parent / "subscribers" / "members.csv"
UPDATE = "subscribers/update.csv"
SUBSCRIBED = ("news: added 0 new, 50 already subscribed, 0 skipped (unsubscribed, bounced or "
              "removed)")


def snapshot(project: Project) -> list[str]:
    return project.dump()


def rows(project: Project, sql: str, *params: object) -> list[tuple[object, ...]]:
    return project.rows(sql, *params)


def profile(project: Project, email: str) -> tuple[object, ...]:
    (found,) = rows(project, "SELECT name, organisation, extra FROM subscribers WHERE email = ?",
                    email)
    return found


def state(project: Project) -> list[tuple[object, ...]]:
    """Everything but the profiles: memberships, consent, suppression."""
    return [*rows(project, "SELECT * FROM memberships ORDER BY subscriber_id, list_id"),
            *rows(project, "SELECT * FROM consent ORDER BY id"),
            *rows(project, "SELECT * FROM suppression ORDER BY hash, list_id")]


def import_sample(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err


def write_edited(project: Project, edits: dict[str, dict[str, str]], *,
                 columns: tuple[str, ...] | None = None, append: str = "") -> None:
    """The sample CSV (same lines, same consent evidence) with some cells changed."""
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        members_rows = list(csv.DictReader(f))
    header = columns or tuple(members_rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    for row in members_rows:
        writer.writerow({**row, **edits.get(row["email"], {})})
    project.write(UPDATE, out.getvalue() + append)


def update(project: Project, *options: str) -> list[str]:
    result = project.run("subscribers", "import", UPDATE, "--list", "news", *options)
    assert (result.code, result.err) == (0, "")
    return result.out.splitlines()


def test_update_gives_subscribed_members_their_new_name_and_organisation(
        project: Project, engine: str) -> None:
    import_sample(project)
    before = state(project)
    write_edited(project, {
        "a.hussain@west.example.org": {"name": "Amira Hussain-Grey"},
        "d.okafor@west.example.org": {"organisation": "West Mercia Police"},
        "g.sandhu@west.example.org": {"name": "Gurpreet Kaur Sandhu", "sector": "health"},
    })
    assert update(project, "--update") == [
        SUBSCRIBED,
        "news: updated 3 existing members (name 2, organisation 1, sector 1)",
        "subscribers/update.csv:2: updated a.hussain@west.example.org: name",
        "subscribers/update.csv:3: updated d.okafor@west.example.org: organisation",
        "subscribers/update.csv:5: updated g.sandhu@west.example.org: name, sector",
    ]
    assert profile(project, "a.hussain@west.example.org") == (
        "Amira Hussain-Grey", "West Midlands Police", '{"sector":"police"}')
    assert profile(project, "d.okafor@west.example.org") == (
        "Daniel Okafor", "West Mercia Police", '{"sector":"police"}')
    assert profile(project, "g.sandhu@west.example.org") == (
        "Gurpreet Kaur Sandhu", "West Mercia Police", '{"sector":"health"}')
    assert profile(project, "s.whitfield@staffordshire.example.org") == (
        "Sarah Whitfield", "Staffordshire Police", '{"sector":"police"}')
    assert state(project) == before  # the same memberships, consent and suppression rows
    # The new name is the one the next issue greets them by.
    listed = project.run("subscribers", "list", "--list", "news").out.splitlines()
    assert listed[0].endswith("Amira Hussain-Grey (West Midlands Police)")
    assert update(project, "--update") == [
        SUBSCRIBED, "news: updated 0 existing members (none differs from the CSV)"]


def test_update_leaves_unsubscribed_bounced_suppressed_and_removed_members_alone(
        project: Project, engine: str) -> None:
    import_sample(project)
    assert project.run("subscribers", "unsubscribe", "a.hussain@west.example.org").code == 0
    assert project.run("subscribers", "remove", "s.whitfield@staffordshire.example.org"
                       ).code == 0
    with closing(project.connect()) as conn:
        bounced = members.find_by_email(conn, "d.okafor@west.example.org")
        assert bounced is not None
        members.mark_bounced(conn, bounced.id, "news", "550 5.1.1 no such user")
        # A suppression someone else wrote (a complaint), the membership still 'subscribed'.
        conn.execute("INSERT INTO suppression (hash, list_id, reason, at) VALUES (?, NULL, "
                     "'complaint', '2026-01-01T00:00:00Z')",
                     (members.address_hash(conn, "g.sandhu@west.example.org"),))
    left = ("a.hussain@west.example.org", "d.okafor@west.example.org",
            "s.whitfield@staffordshire.example.org", "g.sandhu@west.example.org")
    write_edited(project, {
        **{email: {"name": "New Name", "organisation": "New Org", "sector": "new"}
           for email in left},
        "t.brennan@warwickshire.example.org": {"name": "Thomas Brennan"},
    })
    before = snapshot(project)
    assert update(project, "--update", "--dry-run")[-3:] == [
        "news: would update 1 existing member (name 1)",
        "subscribers/update.csv:6: would update t.brennan@warwickshire.example.org: name",
        "dry run: nothing was changed",
    ]
    assert snapshot(project) == before
    everyone_else = rows(project, "SELECT * FROM subscribers WHERE email IS DISTINCT FROM "
                         "'t.brennan@warwickshire.example.org' OR email IS NULL ORDER BY id")
    result = update(project, "--update")
    assert result[0] == ("news: added 0 new, 46 already subscribed, 4 skipped (unsubscribed, "
                         "bounced or removed)")
    assert result[5:] == [
        "news: updated 1 existing member (name 1)",
        "subscribers/update.csv:6: updated t.brennan@warwickshire.example.org: name",
    ]
    assert rows(project, "SELECT * FROM subscribers WHERE email IS DISTINCT FROM "
                "'t.brennan@warwickshire.example.org' OR email IS NULL ORDER BY id"
                ) == everyone_else
    assert rows(project, "SELECT count(*) FROM subscribers WHERE email IS NULL") == [(1,)]
    assert rows(project, "SELECT m.status FROM memberships m JOIN subscribers s "
                "ON s.id = m.subscriber_id WHERE s.id <= 4 ORDER BY s.id") == [
        ("unsubscribed",), ("bounced",), ("removed",), ("subscribed",)]
    assert profile(project, "t.brennan@warwickshire.example.org")[0] == "Thomas Brennan"


def test_empty_cells_and_missing_columns_leave_the_stored_values(
        project: Project, engine: str) -> None:
    import_sample(project)
    write_edited(project, {
        "a.hussain@west.example.org": {"name": "", "organisation": "Home Office"},
        "d.okafor@west.example.org": {"name": "  ", "organisation": "", "sector": ""},
        "s.whitfield@staffordshire.example.org": {"sector": "  "},
    })
    assert update(project, "--update")[1:] == [
        "news: updated 1 existing member (organisation 1)",
        "subscribers/update.csv:2: updated a.hussain@west.example.org: organisation",
    ]
    assert profile(project, "a.hussain@west.example.org") == (
        "Amira Hussain", "Home Office", '{"sector":"police"}')
    assert profile(project, "d.okafor@west.example.org") == (
        "Daniel Okafor", "West Midlands Police", '{"sector":"police"}')
    assert profile(project, "s.whitfield@staffordshire.example.org") == (
        "Sarah Whitfield", "Staffordshire Police", '{"sector":"police"}')
    # A file with only some columns: the others keep what they hold; a new column joins.
    write_edited(project, {"g.sandhu@west.example.org": {"role": "Inspector"}},
                 columns=("email", "name", "role", "consent_source", "consent_date",
                          "consent_basis"))
    assert update(project, "--update")[1:] == [
        "news: updated 1 existing member (role 1)",
        "subscribers/update.csv:5: updated g.sandhu@west.example.org: role",
    ]
    assert profile(project, "g.sandhu@west.example.org") == (
        "Gurpreet Sandhu", "West Mercia Police", '{"sector":"police","role":"Inspector"}')
    assert profile(project, "a.hussain@west.example.org") == (
        "Amira Hussain", "Home Office", '{"sector":"police"}')


def test_a_dry_run_update_reports_the_changes_by_line_and_changes_nothing(
        project: Project, engine: str) -> None:
    import_sample(project)
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        emails = [row["email"] for row in csv.DictReader(f)]
    write_edited(project, {email: {"organisation": "Renamed"} for email in emails[:12]})
    before = snapshot(project)
    assert update(project, "--update", "--dry-run") == [
        "news: would add 0 new, 50 already subscribed, 0 skipped (unsubscribed, bounced or "
        "removed)",
        "news: would update 12 existing members (organisation 12)",
        *(f"subscribers/update.csv:{n + 2}: would update {emails[n]}: organisation"
          for n in range(10)),
        "... and 2 more",
        "dry run: nothing was changed",
    ]
    assert snapshot(project) == before


def test_without_update_the_report_says_how_many_members_differ_and_nothing_changes(
        project: Project, engine: str) -> None:
    import_sample(project)
    write_edited(project, {"a.hussain@west.example.org": {"name": "Amira Hussain-Grey"}})
    before = snapshot(project)
    assert update(project) == [
        SUBSCRIBED,
        "1 existing member has a different name in the CSV; --update takes them"]
    write_edited(project, {"a.hussain@west.example.org": {"name": "Amira Hussain-Grey"},
                           "d.okafor@west.example.org": {"organisation": "NCA"},
                           "g.sandhu@west.example.org": {"sector": ""}})
    assert update(project) == [
        SUBSCRIBED,
        "2 existing members have a different name or organisation in the CSV; --update "
        "takes them"]
    assert update(project, "--dry-run")[1:] == [
        "2 existing members have a different name or organisation in the CSV; --update "
        "takes them",
        "dry run: nothing was changed"]
    assert snapshot(project) == before
    assert update(project, "--update")[1] == (
        "news: updated 2 existing members (name 1, organisation 1)")


def test_a_bad_row_anywhere_in_the_file_means_nobody_is_updated(
        project: Project, engine: str) -> None:
    import_sample(project)
    write_edited(project, {"a.hussain@west.example.org": {"name": "Amira Hussain-Grey"}},
                 append="not-an-address,Someone,Somewhere,police,form,2016-03-01,consent\r\n")
    before = snapshot(project)
    result = project.run("subscribers", "import", UPDATE, "--list", "news", "--update")
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "subscribers/update.csv:52: email: 'not-an-address' is not a valid address (An email "
        "address must have an @-sign.)\n"
        "subscribers/update.csv: 1 row(s) cannot be imported; nothing was imported (fix them, "
        "or use --skip-invalid to import the other rows)\n")
    assert snapshot(project) == before
    assert profile(project, "a.hussain@west.example.org")[0] == "Amira Hussain"
