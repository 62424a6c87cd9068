"""The send-by deadline: loaded from the issue, kept by the engine, refused by the CLI.

Standards R-3.4: a run started after the configured send-by deadline must refuse. The
engine tests run a real SMTP server on 127.0.0.1 and a real SQLite ledger, with a clock
that a test moves past the deadline; the CLI tests run `newsletter send` as a user does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Project
from smtp_servers import Delay, Scripted, Session, SmtpServer
from test_send import FAST, Campaign, address, build, rcpt_of
from test_send_e2e import (
    FAST_LIMITS,
    ISSUE,
    PASSWORD,
    USER,
    configure,
    members_csv,
    send,
    setup,
    status_rows,
)

from newsletter import clock as deadline
from newsletter.cli.commands import show_report
from newsletter.clock import FakeClock, RealClock
from newsletter.delivery import campaign as delivery
from newsletter.delivery.engine import RunResult, Sender
from newsletter.delivery.limits import Limiter
from newsletter.delivery.session import Transport
from newsletter.errors import InputError
from newsletter.input.issues import load_issue
from newsletter.model import DeliveryState, Limits, TlsMode

UK = ZoneInfo("Europe/London")


def issue_with(tmp_path: Path, send_by: str) -> Path:
    path = tmp_path / "issues" / "2017-03-news.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"title: Network news, March 2017\ndate: 2017-03-06\nsend_by: {send_by}\n"
                    "blocks:\n  - {type: section, title: Events}\n", encoding="utf-8")
    return path


def utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def uk_wall_clock(timestamp: float) -> dt.datetime:
    """What an editor in the UK would write for this moment (naive, to the second)."""
    return dt.datetime.fromtimestamp(int(timestamp), UK).replace(tzinfo=None)


# --------------------------------------------------------------------------- the field


def test_send_by_is_uk_local_time_and_a_date_alone_lasts_until_the_end_of_that_day(
        tmp_path: Path) -> None:
    winter = load_issue(issue_with(tmp_path, "2017-03-10 09:00")).send_by
    assert winter == dt.datetime(2017, 3, 10, 9, 0)
    assert utc(deadline.instant(winter)) == dt.datetime(2017, 3, 10, 9, 0, tzinfo=dt.UTC)
    summer = load_issue(issue_with(tmp_path, "2017-06-09T17:30")).send_by
    assert summer is not None
    assert utc(deadline.instant(summer)) == dt.datetime(2017, 6, 9, 16, 30, tzinfo=dt.UTC)
    day = load_issue(issue_with(tmp_path, "2017-03-10")).send_by
    assert day == dt.date(2017, 3, 10) and not isinstance(day, dt.datetime)
    assert utc(deadline.instant(day)) == dt.datetime(2017, 3, 11, 0, 0, tzinfo=dt.UTC)
    assert deadline.words(day) == "2017-03-10 (until the end of that day, UK time)"
    assert deadline.words(winter) == "2017-03-10 09:00 UK time"
    # the hour that happens twice in October: the earlier one, so nothing goes late
    twice = load_issue(issue_with(tmp_path, "2017-10-29 01:30")).send_by
    assert twice is not None
    assert utc(deadline.instant(twice)) == dt.datetime(2017, 10, 29, 0, 30, tzinfo=dt.UTC)


def test_send_by_on_the_issue_date_is_allowed_and_no_send_by_means_no_deadline(
        tmp_path: Path) -> None:
    assert load_issue(issue_with(tmp_path, "2017-03-06 00:00")).send_by is not None
    path = tmp_path / "issues" / "plain.yaml"
    path.write_text("title: x\ndate: 2017-03-06\nblocks: [{type: section, title: y}]\n",
                    encoding="utf-8")
    issue = load_issue(path)
    assert issue.send_by is None and not deadline.passed(issue.send_by, time.time())


def test_a_bad_send_by_is_reported_with_the_other_problems_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "issues" / "two.yaml"
    path.parent.mkdir()
    path.write_text("title: x\ndate: 2017-03-06\nsend_by: {day: friday}\nnumber: NO\n"
                    "blocks: [{type: section, title: y}]\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_issue(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3:10: send_by: expected a date like 2017-03-10 or a date and time like "
        "2017-03-10 09:00, found a mapping (key: value pairs) (UK local time, 24-hour clock; "
        "a date alone means until the end of that day)",
        f"{path}:4:9: number: expected a whole number, found 'NO'",
    ]


# --------------------------------------------------------------------------- the engine


class MovableClock(RealClock):
    """Real time, until a test moves it forward past the deadline."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def run(campaign: Campaign, server: SmtpServer, limits: Limits, *, deadline_at: float,
        clock: RealClock | None = None) -> RunResult:
    transport = Transport("127.0.0.1", server.port, TlsMode.NONE, None, None, 5.0, 5.0,
                          "example.org")
    sender = Sender(issue="issue", sender="news@example.org", transport=transport,
                    limits=limits, database=campaign.path, build=build, clock=clock,
                    deadline=deadline_at)
    return asyncio.run(sender.run())


def test_a_run_that_crosses_the_deadline_starts_no_message_after_it_and_leaves_the_rest_pending(
        tmp_path: Path) -> None:
    campaign = Campaign(tmp_path / "n.db", 20)
    clock = MovableClock()
    deadline_at = time.time() + 3600
    seen: list[float] = []

    def dot(session: Session, data: bytes) -> None:
        date = email.utils.parsedate_to_datetime(
            data.split(b"Date: ")[1].split(b"\r\n")[0].decode())
        seen.append(date.timestamp())
        if len(seen) == 5:  # the fifth message is on the wire when the deadline passes
            clock.offset += 7200

    one_at_a_time = Limits(per_minute=0, per_day=0, concurrency=1, retry_base=0.05)
    with SmtpServer(Scripted(dot=dot)) as server:
        result = run(campaign, server, one_at_a_time, deadline_at=deadline_at, clock=clock)
    assert result.past_deadline and not result.fatal and not result.daily_cap
    assert result.stopped == "send-by deadline reached"
    assert campaign.states() == {DeliveryState.SENT: 5, DeliveryState.PENDING: 15}
    assert len(server.received) == 5 and all(t < deadline_at for t in seen)


def test_a_run_started_after_the_deadline_neither_connects_nor_touches_a_row(
        tmp_path: Path) -> None:
    campaign = Campaign(tmp_path / "n.db", 6)
    with SmtpServer() as server:
        result = run(campaign, server, FAST, deadline_at=time.time() - 1)
    assert result.past_deadline
    assert server.sessions == 0 and not server.received
    assert campaign.states() == {DeliveryState.PENDING: 6}


def test_a_run_whose_limits_allow_nothing_more_before_the_deadline_ends_at_once(
        tmp_path: Path) -> None:
    campaign = Campaign(tmp_path / "n.db", 5)
    started = time.monotonic()
    with SmtpServer() as server:
        result = run(campaign, server, Limits(per_minute=2, per_day=0, concurrency=1),
                     deadline_at=time.time() + 20)
    assert time.monotonic() - started < 10  # not a minute's wait for a message it may not send
    assert result.past_deadline and result.stopped == (
        "the sending limits allow no more messages before the send-by deadline")
    assert campaign.states() == {DeliveryState.SENT: 2, DeliveryState.PENDING: 3}


def test_a_retry_that_would_fall_after_the_deadline_stays_deferred_and_is_not_waited_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    campaign = Campaign(tmp_path / "n.db", 4)
    busy = Scripted(rcpt=lambda s, r: "450 4.2.1 Mailbox busy" if r == address(1) else None)
    # without a deadline the run would wait the 20 s for this retry (send.LINGER is 60 s)
    limits = Limits(per_minute=0, per_day=0, retry_base=20, retry_max=40,
                    retry_deadline=3600)
    deadline_at = time.time() + 10
    started = time.monotonic()
    with SmtpServer(busy) as server:
        result = run(campaign, server, limits, deadline_at=deadline_at)
    assert time.monotonic() - started < 8
    assert result.stopped is None and not result.past_deadline
    assert campaign.states() == {DeliveryState.SENT: 3, DeliveryState.DEFERRED: 1}
    row = campaign.row(address(1))  # kept as the server's reply left it: not expired
    assert row.next_attempt_at is not None and row.next_attempt_at > deadline_at
    assert address(1) not in rcpt_of(server)
    # the report says why it will not be retried, and the send is not done: exit 1
    report = delivery.report(campaign.conn, "issue", result, uk_wall_clock(deadline_at + 1),
                             RealClock())
    code = show_report(report)
    shown = capsys.readouterr()
    assert code == 1
    assert "1 deferred whose next attempt falls after the send-by deadline" in shown.err
    assert "try later" not in shown.out  # no "run the same command again after ..."


def test_the_limiter_grants_nothing_it_could_only_grant_after_until() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_minute=2, per_day=0), clock)

    async def three() -> list[bool]:
        return [await limiter.acquire(until=clock.now() + 30) for _ in range(3)]

    assert asyncio.run(three()) == [True, True, False]  # the third fits only in 60 s
    assert clock.slept == 0 and not limiter.day_used_up


# --------------------------------------------------------------------------- the command


def set_send_by(project: Project, value: str) -> None:
    path = project.root / ISSUE
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("send_by:")]
    text = "".join(lines).replace("date: 2017-02-13\n", f"date: 2017-02-13\nsend_by: {value}\n")
    path.write_text(text, encoding="utf-8")


def said(err: str) -> str:
    """stderr without the warning about an old Python that some machines print first."""
    return "".join(line for line in err.splitlines(keepends=True)
                   if not line.startswith("warning: Python "))


def ledger_bytes(project: Project) -> str:
    digest = hashlib.sha256()
    for path in sorted(project.root.glob("newsletter.db*")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_send_started_after_the_deadline_is_refused_before_any_connection(
        project: Project) -> None:
    n = setup(project)
    set_send_by(project, "2017-02-20")
    before = ledger_bytes(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 1 and "Traceback" not in result.err
    assert said(result.err).startswith(
        "not sending 2017-02-news: its send-by deadline, 2017-02-20 (until the end of that "
        "day, UK time), has passed (it is now ")
    assert (f"  {n} members of list members are still pending; nothing was sent and nothing "
            "was changed\n  to send it anyway, move or remove send_by "
            "(issues/2017-02-news.yaml:3:10) and run the same command again\n") in result.err
    assert result.out == ""  # not even the plan
    assert server.sessions == 0
    assert ledger_bytes(project) == before
    assert "nothing has been sent" in project.run("status").out


def test_a_resume_after_the_deadline_is_refused_and_moving_send_by_lets_it_finish(
        project: Project) -> None:
    setup(project, n=10, limits=FAST_LIMITS.replace("per_day: 0", "per_day: 4"))
    set_send_by(project, "2099-12-31 17:00")
    with SmtpServer(users={USER: PASSWORD}) as server:
        first = send(project, server)
        assert first.code == 0 and "daily cap reached: 6 still pending" in first.out, first
        shown = project.run("status", ISSUE).out
        assert "send-by 2099-12-31 17:00 UK time: " in shown and " from now" in shown
        set_send_by(project, "2017-02-14 09:30")
        rows, sessions = status_rows(project), server.sessions
        before = ledger_bytes(project)
        for extra in ((), ("--retry-unknown",)):
            late = send(project, server, *extra)
            assert late.code == 1, late
            assert "its send-by deadline, 2017-02-14 09:30 UK time, has passed" in late.err
            assert "6 members of list members are still pending" in late.err
        assert server.sessions == sessions and len(server.received) == 4
        assert ledger_bytes(project) == before and status_rows(project) == rows
        shown = project.run("status", ISSUE).out
        assert ("send-by 2017-02-14 09:30 UK time: passed; sending to the 6 still pending is "
                "refused") in shown
        # the editor moves the deadline (the email itself is unchanged): the resume finishes
        configure(project)  # and lifts the daily cap
        set_send_by(project, "2099-12-31")
        final = send(project, server)
    assert final.code == 0, final.err
    assert len(server.received) == 10 and len(set(r.rcpt_to for r in server.received)) == 10
    assert {r["state"] for r in status_rows(project)} == {"sent"}


def test_a_proof_and_a_dry_run_after_the_deadline_go_ahead_with_a_note(
        project: Project) -> None:
    from test_send_e2e import smtp_env

    setup(project, n=3)
    set_send_by(project, "2017-02-20")
    note = ("note: the send-by deadline of 2017-02-news, 2017-02-20 (until the end of that "
            "day, UK time), has passed: sending it to a list would be refused\n")
    with SmtpServer(users={USER: PASSWORD}) as server:
        proof = project.run("send", ISSUE, "--to", "editor@example.org", env=smtp_env(server))
    assert proof.code == 0 and said(proof.err) == note
    assert [r.rcpt_to for r in server.received] == [("editor@example.org",)]
    dry = project.run("send", ISSUE, "--list", "members", "--dry-run", "outbox")
    assert dry.code == 0 and said(dry.err) == note
    assert len(list((project.root / "outbox").glob("*.eml"))) == 3


def test_a_send_that_runs_past_the_deadline_stops_there_and_says_so(project: Project) -> None:
    n = setup(project, n=150)
    members_csv(project, n)
    deadline_at = time.time() + 6
    set_send_by(project, f"{uk_wall_clock(deadline_at):%Y-%m-%d %H:%M:%S}")
    slow = SmtpServer(Scripted(dot=lambda s, d: Delay(0.1, "250 2.0.0 Ok")),
                      users={USER: PASSWORD})
    with slow as server:
        result = send(project, server)
    assert result.code == 1, result
    assert "still pending and not sent; to send them anyway, move send_by" in result.err
    assert "send-by deadline reached (" in result.err
    states = [r["state"] for r in status_rows(project)]
    assert states.count("pending") > 0
    assert states.count("sent") == len(server.accepted)
    for received in server.received:  # each was started before the deadline
        date = received.data.split(b"Date: ")[1].split(b"\r\n")[0].decode()
        assert email.utils.parsedate_to_datetime(date).timestamp() < int(deadline_at) + 1
