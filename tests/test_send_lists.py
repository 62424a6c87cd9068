"""One issue, several lists: each address once, each row through its own list, and a list
added to a finished send gets only the people who have not had it. Through the real CLI
and a real SMTP server in the test process (tests/smtp_servers.py)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import Project, Result
from smtp_servers import SmtpServer

from newsletter import pipeline
from newsletter.clock import FakeClock
from newsletter.delivery.campaign import Plan
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.tokens import Secrets, read_token
from newsletter.model import DeliveryState
from newsletter.pipeline import Readiness

ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"
SECRET = "test-secret-0123456789abcdef"  # conftest's NEWSLETTER_SECRET
NEWS = ["ana@example.org", "ben@example.org", "cai@example.org"]
EVENTS = ["ben@example.org", "cai@example.org", "dev@example.org", "eli@example.org"]


def setup(project: Project) -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(
        r"limits:.*?\n(?=\S)", "limits:\n  per_minute: 0\n  per_day: 0\n  concurrency: 2\n",
        text, flags=re.S))
    for name, people in (("news", NEWS), ("events", EVENTS)):
        project.write(f"subscribers/{name}.csv", "email,name,consent_source\n" + "".join(
            f"{a},{a.split('@')[0].title()},form\n" for a in people))
        result = project.run("subscribers", "import", f"subscribers/{name}.csv", "--list", name)
        assert result.code == 0, result.err


def send(project: Project, server: SmtpServer, *lists: str, yes: bool = True) -> Result:
    args = [a for name in lists for a in ("--list", name)]
    return project.run("send", ISSUE, *args, *(["--yes"] if yes else []), env={
        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
        "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD})


def ledger(project: Project) -> dict[str, tuple[str, str]]:
    """Each row's address -> (the list it came through, its state)."""
    return {address: (list_name, state) for address, list_name, state in project.rows(
        "SELECT address, list_name, state FROM deliveries ORDER BY id")}


def unsubscribe_list(data: bytes) -> str:
    """The list named by a message's one-click unsubscribe token."""
    found = re.search(rb"^List-Unsubscribe: <https://[^>]*/([^/>]+)>", data, flags=re.M)
    assert found
    token = read_token(Secrets(SECRET), found.group(1).decode())
    assert token is not None
    return token.list_name


def test_two_lists_at_once_send_each_address_once_through_its_first_list(
        project: Project, engine: str) -> None:
    setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server, "news", "events")
        assert result.code == 0, result.err
        got = {r.rcpt_to[0]: r.data for r in server.delivered}
        assert Counter(r.rcpt_to[0] for r in server.delivered) == Counter(set(NEWS + EVENTS))
    assert result.out.splitlines()[0] == (
        "2017-02-news: send to lists news, events: 5 recipients, each member once "
        "(unsubscribed, bounced and suppressed members are not included)")
    assert "ledger: 5 recipients recorded as pending" in result.out
    assert {a: row[0] for a, row in ledger(project).items()} == {
        "ana@example.org": "news", "ben@example.org": "news", "cai@example.org": "news",
        "dev@example.org": "events", "eli@example.org": "events"}
    assert {a: unsubscribe_list(data) for a, data in got.items()} == {
        a: row[0] for a, row in ledger(project).items()}
    status = project.run("status", ISSUE)
    assert status.out.startswith("2017-02-news  lists news, events  started ")


def test_a_finished_issue_sent_to_another_list_later_skips_everyone_who_had_it(
        project: Project, engine: str) -> None:
    setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        first = send(project, server, "news")
        assert first.code == 0, first.err
        assert sorted(r.rcpt_to[0] for r in server.delivered) == NEWS
        later = send(project, server, "events")
        assert later.code == 0, later.err
        assert Counter(r.rcpt_to[0] for r in server.delivered) == Counter(set(NEWS + EVENTS))
        again = send(project, server, "events")
        assert again.code == 0, again.err
        assert len(server.delivered) == 5
    lines = later.out.splitlines()
    assert lines[0].startswith("2017-02-news: resuming the send to list news started ")
    assert lines[0].endswith(": 3 recipients: 3 sent")
    assert lines[1] == ("  adding list events: 2 recipients (its members who have had this "
                        "issue through another list are skipped)")
    assert "ledger: 2 recipients recorded as pending" in later.out
    assert "nothing is due now" in again.out and "adding" not in again.out
    assert ledger(project)["dev@example.org"] == ("events", "sent")
    assert project.run("status").out.startswith("2017-02-news  lists news, events  started ")


def test_the_content_lock_still_holds_when_a_list_is_added(project: Project, engine: str) -> None:
    setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        assert send(project, server, "news").code == 0
        issue = project.root / ISSUE
        issue.write_text(issue.read_text(encoding="utf-8").replace(
            "title:", "title: Changed -", 1), encoding="utf-8")
        result = send(project, server, "events")
        assert len(server.delivered) == 3
    assert result.code == 1
    assert "the rendered issue changed since sending started" in result.err
    assert "dev@example.org" not in ledger(project)


def test_a_dry_run_of_two_lists_writes_each_member_once(project: Project, engine: str) -> None:
    setup(project)
    result = project.run("send", ISSUE, "--list", "news", "--list", "events", "--dry-run",
                         "outbox")
    assert result.code == 0, result.err
    assert result.out == ("dry run: 5 messages for lists news, events written to outbox/ "
                          "(nothing sent, nothing recorded)\n")
    assert len(list((project.root / "outbox").glob("*.eml"))) == 5
    unknown = project.run("send", ISSUE, "--list", "news", "--list", "nope", "--dry-run",
                          "outbox2")
    assert unknown.code == 1
    assert unknown.err.endswith("--list: no list named 'nope' (lists: events, news)\n")


class Events:
    """pipeline.SendEvents that runs ``between`` after the snapshot, before any message."""

    def __init__(self, between: object) -> None:
        self.between = between
        self.outcomes: list[str] = []

    def planned(self, plan: Plan, ready: Readiness) -> None:
        pass

    def recorded(self, count: int) -> None:
        self.between()  # type: ignore[operator]

    def __call__(self, state: str) -> None:
        self.outcomes.append(state)

    def waiting(self, seconds: float, why: str) -> None:
        pass

    @contextlib.contextmanager
    def sending(self, plan: Plan) -> Iterator[Events]:
        yield self


def test_the_check_before_each_message_is_for_the_list_the_row_came_through(
        project: Project, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(project)
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)

    def leave_news() -> None:  # ben came through news; he stays on events
        with members.existing(project.database) as conn:
            found = members.find_by_email(conn, "ben@example.org")
            assert found is not None
            members.unsubscribe(conn, found.id, "news", "test")

    with SmtpServer(users={USER: PASSWORD}) as server:
        for name, value in (("HOST", "127.0.0.1"), ("PORT", str(server.port)),
                            ("TLS", "none"), ("PASSWORD", PASSWORD)):
            monkeypatch.setenv(f"NEWSLETTER_SMTP_{name}", value)
        loaded = pipeline.load_for_sending(project.config, project.root / ISSUE)
        report = pipeline.send(loaded, ["news", "events"], Events(leave_news),
                               FakeClock(time.time()), retry_unknown=False)
        assert "ben@example.org" not in {r.rcpt_to[0] for r in server.delivered}
    assert report.counts[DeliveryState.SUPPRESSED] == 1
    assert report.counts[DeliveryState.SENT] == 4
    assert ledger(project)["ben@example.org"] == ("news", "suppressed")


def migrated_to(target: db.Target, version: int) -> db.Connection:
    """A state database at an old schema version, as an older program left it."""
    if db.is_postgresql(target):
        pg = db.connect(target, migrate=False)
        assert isinstance(pg, db.PgConnection)
        for number, _, sql in db.migrations("postgresql")[:version]:
            pg.raw.execute(sql)  # type: ignore[call-overload,unused-ignore]
            pg.execute("UPDATE schema_version SET version = ?", (number,))
        return pg
    lite = sqlite3.connect(target, isolation_level=None)
    for number, _, sql in db.migrations()[:version]:
        lite.executescript(sql)
        lite.execute(f"PRAGMA user_version = {number}")
    return lite


def test_a_ledger_from_before_several_lists_knows_each_row_s_list(state_db: db.Target
                                                                  ) -> None:
    conn = migrated_to(state_db, 3)
    conn.execute("INSERT INTO sends VALUES ('2016-12', 'news', 'h', 'S', 1.0)")
    conn.execute("INSERT INTO deliveries (issue, subscriber_id, address, greeting, "
                 "unsubscribe_url, list_unsubscribe, list_unsubscribe_post, message_id) "
                 "VALUES ('2016-12', 1, 'a@example.org', 'Hello', '', '', '', '<m>')")
    conn.close()
    with contextlib.closing(db.connect(state_db)) as migrated:
        assert [tuple(r) for r in migrated.execute("SELECT list_name FROM deliveries")] == [
            ("news",)]
        assert [tuple(r) for r in migrated.execute(
            "SELECT issue, list_name, added_at FROM send_lists")] == [("2016-12", "news", 1.0)]
