"""The delivery ledger: the snapshot, forward-only states, due rows, the send lock; on
SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from newsletter.delivery import ledger
from newsletter.delivery.replies import Reply
from newsletter.errors import StateError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.csvfiles import MemberRow
from newsletter.model import DeliveryState, Recipient


def member_rows(n: int) -> tuple[MemberRow, ...]:
    return tuple(MemberRow(line=i + 2, email=f"m{i:05d}@example.org", name=f"Member {i}",
                           organisation=None, extra="{}", consent_source="test",
                           consent_date=None, consent_basis="consent") for i in range(n))


def recipient(i: int) -> Recipient:
    return Recipient(address=f"m{i:05d}@example.org", greeting=f"Hello Member {i}",
                     unsubscribe_url=f"https://news.example.org/u/{i}",
                     list_unsubscribe=f"<https://news.example.org/u/{i}>",
                     list_unsubscribe_post="List-Unsubscribe=One-Click",
                     message_id=f"<issue.{i}@example.org>")


@pytest.fixture
def conn(state_db: db.Target) -> Iterator[db.Connection]:
    connection = db.connect(state_db)
    members.import_rows(connection, "members", member_rows(5))
    yield connection
    connection.close()


def start(conn: db.Connection, n: int = 5, issue: str = "2016-12") -> int:
    ids = [s.id for s in members.recipients(conn, "members")][:n]
    return ledger.snapshot(conn, ledger.SendRecord(issue, "members", "hash1", "Subject", 1.0),
                           ((sid, recipient(i)) for i, sid in enumerate(ids)))


def test_the_snapshot_writes_every_row_pending_in_one_transaction(
        conn: db.Connection) -> None:
    assert start(conn) == 5
    assert ledger.counts(conn, "2016-12")[DeliveryState.PENDING] == 5
    assert ledger.get_send(conn, "2016-12") == ledger.SendRecord(
        "2016-12", "members", "hash1", "Subject", 1.0)


def test_a_failing_snapshot_leaves_no_rows_at_all(conn: db.Connection) -> None:
    def broken() -> object:
        yield (1, recipient(1))
        yield (2, recipient(2))
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        ledger.snapshot(conn, ledger.SendRecord("x", "members", "h", "S", 1.0),
                        broken())  # type: ignore[arg-type]
    assert ledger.get_send(conn, "x") is None
    assert sum(ledger.counts(conn, "x").values()) == 0


def test_a_subscriber_is_in_an_issue_s_ledger_once(conn: db.Connection) -> None:
    written = ledger.snapshot(conn, ledger.SendRecord("x", "members", "h", "S", 1.0),
                              [(1, recipient(1)), (1, recipient(1)), (2, recipient(2))])
    assert written == 2
    with pytest.raises(StateError):
        start(conn, issue="x")


def test_states_move_forward_only(conn: db.Connection) -> None:
    start(conn)
    row = ledger.due(conn, "2016-12", 10.0)[0]
    assert ledger.begin_attempt(conn, row.id, 10.0)
    reply = Reply(250, "2.0.0", "2.0.0 Ok: queued as X", "dot")
    ledger.record(conn, row.id, DeliveryState.SENT, reply, 11.0)
    assert not ledger.begin_attempt(conn, row.id, 12.0)  # sent stays sent
    ledger.record(conn, row.id, DeliveryState.FAILED, reply, 13.0)  # not attempting: no-op
    ledger.mark_suppressed(conn, row.id, 14.0)
    assert next(ledger.rows(conn, "2016-12")).state is DeliveryState.SENT
    with pytest.raises(ValueError):
        ledger.record(conn, row.id, DeliveryState.PENDING, reply, 15.0)


def test_due_rows_come_in_id_order_and_deferred_ones_only_when_their_time_comes(
        conn: db.Connection) -> None:
    start(conn)
    rows = ledger.due(conn, "2016-12", 10.0)
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    first, second = rows[0], rows[1]
    for r in (first, second):
        ledger.begin_attempt(conn, r.id, 10.0)
    ledger.record(conn, first.id, DeliveryState.DEFERRED,
                  Reply(451, "4.3.0", "4.3.0 later", "rcpt"), 10.0, next_attempt_at=50.0)
    ledger.record(conn, second.id, DeliveryState.UNKNOWN,
                  Reply(None, None, "lost", "dot"), 10.0)
    assert first.id not in {r.id for r in ledger.due(conn, "2016-12", 49.0)}
    assert first.id in {r.id for r in ledger.due(conn, "2016-12", 50.0)}
    assert second.id not in {r.id for r in ledger.due(conn, "2016-12", 99.0)}
    assert second.id in {r.id for r in ledger.due(conn, "2016-12", 99.0, include_unknown=True)}
    assert ledger.next_deferred(conn, "2016-12") == 50.0
    assert [r.id for r in ledger.due(conn, "2016-12", 10.0, after=rows[2].id)] == \
        [r.id for r in rows[3:]]


def test_deferred_rows_past_the_deadline_expire(conn: db.Connection) -> None:
    start(conn)
    row = ledger.due(conn, "2016-12", 10.0)[0]
    ledger.begin_attempt(conn, row.id, 10.0)
    ledger.record(conn, row.id, DeliveryState.DEFERRED, Reply(451, None, "x", "rcpt"),
                  10.0, next_attempt_at=20.0)
    assert ledger.expire(conn, "2016-12", now=100.0, deadline=100.0) == 0
    assert ledger.expire(conn, "2016-12", now=111.0, deadline=100.0) == 1
    assert ledger.counts(conn, "2016-12")[DeliveryState.EXPIRED] == 1


def test_rows_left_attempting_by_a_crash_are_due_again_and_counted(
        conn: db.Connection) -> None:
    start(conn)
    row = ledger.due(conn, "2016-12", 10.0)[0]
    ledger.begin_attempt(conn, row.id, 10.0)
    assert ledger.mark_crashed(conn, "2016-12") == 1
    assert ledger.crash_resends(conn, "2016-12") == 1
    again = ledger.due(conn, "2016-12", 11.0)[0]
    assert (again.id, again.state, again.recipient.message_id) == \
        (row.id, DeliveryState.ATTEMPTING, row.recipient.message_id)


def test_the_daily_count_spans_every_issue(conn: db.Connection) -> None:
    start(conn, issue="a")
    start(conn, issue="b")
    for issue, at in (("a", 1000.0), ("b", 90000.0)):
        row = ledger.due(conn, issue, at)[0]
        ledger.begin_attempt(conn, row.id, at)
        ledger.record(conn, row.id, DeliveryState.SENT, Reply(250, None, "ok", "dot"), at)
    assert ledger.sent_since(conn, 0.0) == 2
    assert ledger.sent_since(conn, 90000.0 - 86400) == 1


def test_a_second_runner_is_refused_while_the_first_holds_the_lock(
        conn: db.Connection) -> None:
    lock = ledger.acquire_lock(conn, "2016-12", time.time())
    with pytest.raises(StateError, match="is being sent right now"):
        ledger.acquire_lock(conn, "2017-02", time.time())
    ledger.release_lock(conn, lock)
    ledger.release_lock(conn, ledger.acquire_lock(conn, "2017-02", time.time()))


def test_a_lock_whose_process_died_is_taken_over(conn: db.Connection,
                                                 state_db: db.Target) -> None:
    code = ("import sys, time; from newsletter.members import database as db; "
            "from newsletter.delivery import ledger; "
            "c = db.connect(sys.argv[1]); ledger.acquire_lock(c, 'x', time.time())")
    subprocess.run([sys.executable, "-c", code, str(state_db)], check=True)
    lock = ledger.acquire_lock(conn, "2016-12", time.time())  # the holder is gone
    assert lock.issue == "2016-12"


def test_a_lock_with_an_old_heartbeat_is_taken_over(conn: db.Connection) -> None:
    now = time.time()
    old = ledger.acquire_lock(conn, "x", now - 3 * ledger.STALE_AFTER)
    with db.transaction(conn):
        ledger.heartbeat(conn, old, now - 2 * ledger.STALE_AFTER)
    assert ledger.acquire_lock(conn, "2016-12", now).issue == "2016-12"


def test_forgetting_a_member_erases_their_values_but_keeps_the_counts(
        conn: db.Connection) -> None:
    start(conn)
    row = ledger.due(conn, "2016-12", 1.0)[0]
    ledger.forget_subscriber(conn, row.subscriber_id)
    stored = next(r for r in ledger.rows(conn, "2016-12") if r.id == row.id)
    assert stored.address == ""
    assert sum(ledger.counts(conn, "2016-12").values()) == 5
