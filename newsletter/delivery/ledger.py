"""The delivery ledger: one SQLite row per (issue, subscriber), the send stage's state.

Each row knows the list it came through (an issue can go to several lists, each member
once); ``send_lists`` records every list of an issue, in the order they were added.

In: the recipients snapshot (written once, in one transaction, before any connection) and
every outcome the sender reports. Out: the rows still due, the counts ``status`` shows, the
24-hour totals the daily cap needs, and the single-runner lock.

None of these functions commits: callers group them in ``transaction(conn)`` so that one
commit covers, say, "mark the last message sent and the next one attempting". The schema is
``migrations/0002_deliveries.sql`` (0004_inbox.sql adds the envelope sender of each row, the
``bounced`` state and what ``newsletter inbox`` found); every query is here, at the top.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from newsletter.delivery.replies import Reply
from newsletter.errors import StateError
from newsletter.members.database import Connection, transaction
from newsletter.model import DeliveryState, Recipient

# --------------------------------------------------------------------------- queries

GET_SEND = "SELECT issue, list_name, content_hash, subject, created_at FROM sends WHERE issue = ?"
ALL_SENDS = """
SELECT issue, list_name, content_hash, subject, created_at FROM sends ORDER BY created_at
"""
INSERT_SEND = """
INSERT INTO sends (issue, list_name, content_hash, subject, created_at) VALUES (?, ?, ?, ?, ?)
"""
# A subscriber already in the issue's ledger (through any list) is not written again.
INSERT_DELIVERY = """
INSERT INTO deliveries
    (issue, subscriber_id, list_name, address, greeting, unsubscribe_url, list_unsubscribe,
     list_unsubscribe_post, message_id, return_path, return_token)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""
INSERT_SEND_LIST = """
INSERT INTO send_lists (issue, list_name, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING
"""
SEND_LISTS = "SELECT list_name FROM send_lists WHERE issue = ? ORDER BY rowid"
IN_LEDGER = "SELECT subscriber_id FROM deliveries WHERE issue = ?"
LEDGER_SIZE = "SELECT count(*) FROM deliveries WHERE issue = ?"
DUE = """
SELECT d.id, d.subscriber_id, d.list_name, d.address, d.greeting, d.unsubscribe_url,
       d.list_unsubscribe, d.list_unsubscribe_post, d.message_id, d.state, d.attempts,
       d.first_attempt_at, d.return_path
FROM deliveries d
WHERE d.issue = :issue AND d.id > :after
  AND (d.state IN ('pending', 'attempting')
       OR (d.state = 'deferred' AND d.next_attempt_at <= :now)
       OR (d.state = 'unknown' AND :unknown))
ORDER BY d.id
LIMIT :limit
"""
MARK_CRASHED = """
UPDATE deliveries SET resent_after_crash = resent_after_crash + 1
WHERE issue = ? AND state = 'attempting'
"""
# Only the holder of a row's claim (NULL: the one SQLite sender) starts or settles it.
BEGIN_ATTEMPT = """
UPDATE deliveries
SET state = 'attempting', attempts = attempts + 1,
    first_attempt_at = coalesce(first_attempt_at, :now), last_attempt_at = :now,
    suppression_checked_at = :now
WHERE id = :id AND state IN ('pending', 'attempting', 'deferred', 'unknown')
  AND claimed_by IS NOT DISTINCT FROM CAST(:me AS INTEGER)
"""
MARK_SUPPRESSED = """
UPDATE deliveries SET state = 'suppressed', suppression_checked_at = :now,
    next_attempt_at = NULL, claimed_by = NULL
WHERE id = :id AND state IN ('pending', 'attempting', 'deferred', 'unknown')
  AND claimed_by IS NOT DISTINCT FROM CAST(:me AS INTEGER)
"""
RECORD = """
UPDATE deliveries
SET state = :state, reply_code = :code, enhanced_code = :enhanced, reply_text = :text,
    stage = :stage, next_attempt_at = :next_attempt_at,
    sent_at = CASE WHEN :state = 'sent' THEN :now ELSE sent_at END, claimed_by = NULL
WHERE id = :id AND state = 'attempting' AND claimed_by IS NOT DISTINCT FROM CAST(:me AS INTEGER)
"""
# Several senders (PostgreSQL): each claims a batch of due rows nobody alive holds; a row
# left attempting by a sender whose lease ran out was in flight at its death.
JOIN_SEND = """
INSERT INTO senders (issue, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)
RETURNING id
"""
SENDER_HEARTBEAT = "UPDATE senders SET heartbeat_at = ? WHERE id = ?"
LEAVE_SEND = "DELETE FROM senders WHERE id = ?"
LIVE_SENDERS = "SELECT count(*) FROM senders WHERE issue = ? AND heartbeat_at >= ?"
RELEASE_CLAIMS = """
UPDATE deliveries SET claimed_by = NULL WHERE claimed_by = ? AND state != 'attempting'
"""
FORGET_DEAD_SENDERS = "DELETE FROM senders WHERE heartbeat_at < ?"
CLAIM = """
WITH picked AS (
    SELECT d.id FROM deliveries d
    WHERE d.issue = :issue
      AND (d.claimed_by IS NULL
           OR d.claimed_by NOT IN (SELECT id FROM senders WHERE heartbeat_at >= :alive))
      AND (d.state IN ('pending', 'attempting')
           OR (d.state = 'deferred' AND d.next_attempt_at <= :now)
           OR (d.state = 'unknown' AND :unknown))
    ORDER BY d.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
UPDATE deliveries d
SET claimed_by = :me,
    resent_after_crash = d.resent_after_crash
                         + CASE WHEN d.state = 'attempting' THEN 1 ELSE 0 END
FROM picked WHERE d.id = picked.id
RETURNING d.id, d.subscriber_id, d.list_name, d.address, d.greeting, d.unsubscribe_url,
          d.list_unsubscribe, d.list_unsubscribe_post, d.message_id, d.state, d.attempts,
          d.first_attempt_at, d.return_path
"""
CLAIMED_ELSEWHERE = """
SELECT count(*) FROM deliveries
WHERE issue = ? AND claimed_by IS NOT NULL AND claimed_by != ?
  AND state IN ('pending', 'attempting', 'deferred', 'unknown')
"""
# The shared limits: the n-th latest permit inside a window, if there is one, fills it.
NTH_PERMIT = "SELECT at FROM send_permits WHERE at > ? ORDER BY at DESC LIMIT 1 OFFSET ?"
TAKE_PERMIT = "INSERT INTO send_permits (at) VALUES (?)"
FORGET_PERMITS = "DELETE FROM send_permits WHERE at < ?"
EXPIRE = """
UPDATE deliveries SET state = 'expired', next_attempt_at = NULL
WHERE issue = ? AND state = 'deferred' AND first_attempt_at <= ?
"""
COUNTS = "SELECT state, count(*) AS n FROM deliveries WHERE issue = ? GROUP BY state"
CRASH_RESENDS = "SELECT count(*) FROM deliveries WHERE issue = ? AND resent_after_crash > 0"
NEXT_DEFERRED = """
SELECT min(next_attempt_at) FROM deliveries WHERE issue = ? AND state = 'deferred'
"""
SENT_SINCE = "SELECT count(*) FROM deliveries WHERE sent_at >= ?"
OLDEST_SENT_SINCE = "SELECT min(sent_at) FROM deliveries WHERE sent_at >= ?"
SENT_TIMES_SINCE = "SELECT sent_at FROM deliveries WHERE sent_at >= ?"
ROWS = """
SELECT id, subscriber_id, address, state, attempts, first_attempt_at, last_attempt_at,
       next_attempt_at, sent_at, reply_code, enhanced_code, reply_text, stage, message_id,
       resent_after_crash
FROM deliveries
WHERE issue = :issue
  AND (NOT :problems_only OR state IN ('failed', 'deferred', 'unknown', 'expired'))
ORDER BY CASE WHEN :problems_only THEN state END, id
"""
FORGET = """
UPDATE deliveries SET address = '', greeting = '', unsubscribe_url = '', list_unsubscribe = '',
    reply_text = NULL
WHERE subscriber_id = ?
"""
FORGET_FEEDBACK = "UPDATE feedback SET diagnostic = NULL WHERE subscriber_id = ?"
# What came back (newsletter inbox): the delivery a report names, by the token of its
# envelope sender or by its Message-ID.
REPORTED = """
SELECT d.id, d.issue, d.subscriber_id, s.list_name, d.address, d.state, d.message_id
FROM deliveries d JOIN sends s ON s.issue = d.issue
"""
BY_RETURN_TOKEN = REPORTED + "WHERE d.return_token = ?"
BY_MESSAGE_ID = REPORTED + "WHERE d.message_id = ?"
# A late bounce: only a message the server accepted (sent), or may have (unknown).
LATE_BOUNCE = """
UPDATE deliveries SET state = 'bounced', reply_code = :code, enhanced_code = :status,
    reply_text = :text, stage = 'report', next_attempt_at = NULL
WHERE id = :id AND state IN ('sent', 'unknown')
"""
INBOX_SEEN = "SELECT kind FROM inbox_messages WHERE fingerprint = ?"
INBOX_RECORD = """
INSERT INTO inbox_messages (fingerprint, kind, handled_at) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING
"""
ADD_FEEDBACK = """
INSERT INTO feedback (delivery_id, issue, subscriber_id, kind, status, diagnostic, at,
                      fingerprint)
VALUES (:delivery_id, :issue, :subscriber_id, :kind, :status, :diagnostic, :at, :fingerprint)
"""
SOFT_BOUNCES = """
SELECT count(*), count(DISTINCT issue) FROM feedback WHERE subscriber_id = ? AND kind = 'soft'
"""
FEEDBACK_COUNTS = "SELECT kind, count(*) FROM feedback WHERE issue = ? GROUP BY kind"
FEEDBACK_ROWS = """
SELECT f.kind, d.address, f.status, f.diagnostic, f.at
FROM feedback f JOIN deliveries d ON d.id = f.delivery_id
WHERE f.issue = ? AND f.kind IN ('bounce', 'complaint')
ORDER BY f.at, f.id
"""
RECORD_PROOF = """
INSERT INTO proofs (issue, content_hash, sent_at) VALUES (?, ?, ?)
ON CONFLICT (issue, content_hash) DO UPDATE SET sent_at = excluded.sent_at
"""
LAST_PROOF = "SELECT sent_at FROM proofs WHERE issue = ? AND content_hash = ?"
GET_LOCK = "SELECT issue, pid, host, token, started_at, heartbeat_at FROM send_lock"
DELETE_LOCK = "DELETE FROM send_lock"
INSERT_LOCK = """
INSERT INTO send_lock (name, issue, pid, host, token, started_at, heartbeat_at)
VALUES ('send', ?, ?, ?, ?, ?, ?)
"""
HEARTBEAT = "UPDATE send_lock SET heartbeat_at = ? WHERE token = ?"
RELEASE_LOCK = "DELETE FROM send_lock WHERE token = ?"

# A lock whose heartbeat is older than this belongs to a run that died (on any host).
STALE_AFTER = 60.0
REPLY_TEXT_MAX = 500
FEEDBACK_TEXT_MAX = 500


# --------------------------------------------------------------------------- values


class SendRecord(msgspec.Struct, frozen=True):
    """One issue's send: the list, the rendered content it was snapshotted with."""

    issue: str
    list_name: str
    content_hash: str
    subject: str
    created_at: float


class Delivery(msgspec.Struct, frozen=True):
    """A row that is due: who, and how many attempts it has had."""

    id: int
    subscriber_id: int
    list_name: str
    recipient: Recipient
    state: DeliveryState
    attempts: int
    first_attempt_at: float | None


class Reported(msgspec.Struct, frozen=True):
    """The delivery a report is about: which issue, which member, at which address."""

    id: int
    issue: str
    subscriber_id: int
    list_name: str
    address: str  # '' once the member was removed
    state: DeliveryState
    message_id: str


class LateReport(msgspec.Struct, frozen=True):
    """A late bounce or a complaint, as ``status`` lists it."""

    kind: str  # bounce, complaint
    address: str
    status: str | None
    diagnostic: str | None
    at: float


class Lock(msgspec.Struct, frozen=True):
    issue: str
    token: str


class Row(msgspec.Struct, frozen=True):
    """A ledger row as ``status`` shows it (and the CSV export writes it)."""

    id: int
    subscriber_id: int
    address: str
    state: DeliveryState
    attempts: int
    first_attempt_at: float | None
    last_attempt_at: float | None
    next_attempt_at: float | None
    sent_at: float | None
    reply_code: int | None
    enhanced_code: str | None
    reply_text: str | None
    stage: str | None
    message_id: str
    resent_after_crash: int


# --------------------------------------------------------------------------- the snapshot


def get_send(conn: Connection, issue: str) -> SendRecord | None:
    row = conn.execute(GET_SEND, (issue,)).fetchone()
    return SendRecord(*row) if row else None


def all_sends(conn: Connection) -> list[SendRecord]:
    return [SendRecord(*row) for row in conn.execute(ALL_SENDS)]


def snapshot(conn: Connection, send: SendRecord,
             recipients: Iterable[tuple[int, Recipient]]) -> int:
    """Write the send and one pending row per recipient of its list, in one transaction.

    Returns the number of rows written. A subscriber already in the ledger for this issue
    (UNIQUE(issue, subscriber_id)) is not written twice.
    """
    with transaction(conn):
        if get_send(conn, send.issue) is not None:
            raise StateError(f"{send.issue}: already has a send in the ledger")
        conn.execute(INSERT_SEND, (send.issue, send.list_name, send.content_hash, send.subject,
                                   send.created_at))
        return add_list(conn, send.issue, send.list_name, recipients, send.created_at)


def add_list(conn: Connection, issue: str, list_name: str,
             recipients: Iterable[tuple[int, Recipient]], now: float) -> int:
    """Record one more list for an issue already in the ledger, and a pending row for each
    of its recipients who has none (people who had the issue through another list are
    skipped); in one transaction. Returns the number of rows written."""
    with transaction(conn):
        conn.execute(INSERT_SEND_LIST, (issue, list_name, now))
        before = conn.execute(LEDGER_SIZE, (issue,)).fetchone()[0]
        conn.executemany(INSERT_DELIVERY, (
            (issue, subscriber_id, list_name, r.address, r.greeting, r.unsubscribe_url,
             r.list_unsubscribe, r.list_unsubscribe_post, r.message_id, r.return_path,
             return_token(r.return_path))
            for subscriber_id, r in recipients
        ))
        return int(conn.execute(LEDGER_SIZE, (issue,)).fetchone()[0]) - int(before)


def send_lists(conn: Connection, issue: str) -> tuple[str, ...]:
    """Every list the issue was sent to, in the order they were added."""
    return tuple(row[0] for row in conn.execute(SEND_LISTS, (issue,)))


def in_ledger(conn: Connection, issue: str) -> set[int]:
    """The subscribers who have a row for the issue (through any list)."""
    return {row[0] for row in conn.execute(IN_LEDGER, (issue,))}


# --------------------------------------------------------------------------- sending


def mark_crashed(conn: Connection, issue: str) -> int:
    """Count the rows a killed run left in flight; they are resent (same Message-ID)."""
    return conn.execute(MARK_CRASHED, (issue,)).rowcount


def expire(conn: Connection, issue: str, now: float, deadline: float) -> int:
    """Deferred rows first tried more than ``deadline`` seconds ago become expired."""
    return conn.execute(EXPIRE, (issue, now - deadline)).rowcount


def due(conn: Connection, issue: str, now: float, *, after: int = 0,
        limit: int = 500, include_unknown: bool = False) -> list[Delivery]:
    """The next rows to send, in id order, after row ``after``."""
    rows = conn.execute(DUE, {"issue": issue, "after": after, "now": now,
                              "unknown": include_unknown, "limit": limit}).fetchall()
    return [_delivery(row)[1] for row in rows]


def _delivery(row: Any) -> tuple[int, Delivery]:
    return row[0], Delivery(
        id=row[0], subscriber_id=row[1], list_name=row[2],
        recipient=Recipient(address=row[3], greeting=row[4], unsubscribe_url=row[5],
                            list_unsubscribe=row[6], list_unsubscribe_post=row[7],
                            message_id=row[8], return_path=row[12]),
        state=DeliveryState(row[9]), attempts=row[10], first_attempt_at=row[11],
    )


def begin_attempt(conn: Connection, delivery_id: int, now: float, me: int | None = None
                  ) -> bool:
    """pending/deferred/unknown (or a crashed attempting) -> attempting; False if not due,
    or (``me``: this sender's id, on PostgreSQL) if the row is no longer this sender's."""
    return conn.execute(BEGIN_ATTEMPT, {"id": delivery_id, "now": now, "me": me}).rowcount == 1


def mark_suppressed(conn: Connection, delivery_id: int, now: float, me: int | None = None
                    ) -> None:
    conn.execute(MARK_SUPPRESSED, {"id": delivery_id, "now": now, "me": me})


def record(conn: Connection, delivery_id: int, state: DeliveryState, reply: Reply,
           now: float, next_attempt_at: float | None = None, me: int | None = None) -> None:
    """attempting -> the outcome of the attempt (sent, deferred, failed, unknown, expired)."""
    if state in (DeliveryState.PENDING, DeliveryState.ATTEMPTING):
        raise ValueError(f"an attempt cannot end as {state}")
    conn.execute(RECORD, {
        "id": delivery_id, "state": str(state), "code": reply.code, "enhanced": reply.enhanced,
        "text": reply.text[:REPLY_TEXT_MAX], "stage": reply.stage,
        "next_attempt_at": next_attempt_at if state is DeliveryState.DEFERRED else None,
        "now": now, "me": me,
    })


# --------------------------------------------------------------------------- several senders


def join_send(conn: Connection, issue: str, now: float, lease: float) -> int:
    """Register this process as one of the senders of ``issue``: its id (PostgreSQL).

    Senders whose lease ran out long ago are forgotten first, and so are permits older
    than the longest limit window.
    """
    with transaction(conn):
        conn.execute(FORGET_DEAD_SENDERS, (now - max(lease, 3600.0),))
        conn.execute(FORGET_PERMITS, (now - 86400.0,))
        row = conn.execute(JOIN_SEND, (issue, socket.gethostname(), os.getpid(), now, now))
        return int(row.fetchone()[0])


def sender_heartbeat(conn: Connection, me: int, now: float) -> None:
    conn.execute(SENDER_HEARTBEAT, (now, me))


def live_senders(conn: Connection, issue: str, now: float, lease: float) -> int:
    """How many senders of ``issue`` are alive right now (PostgreSQL)."""
    n: int = conn.execute(LIVE_SENDERS, (issue, now - lease)).fetchone()[0]
    return n


def leave_send(conn: Connection, me: int) -> None:
    """Give back the rows this sender claimed and did not start; forget the sender."""
    with transaction(conn):
        conn.execute(RELEASE_CLAIMS, (me,))
        conn.execute(LEAVE_SEND, (me,))


def claim(conn: Connection, issue: str, me: int, now: float, lease: float, *,
          limit: int, include_unknown: bool = False) -> tuple[list[Delivery], int]:
    """Claim up to ``limit`` due rows nobody alive holds, in id order (PostgreSQL:
    FOR UPDATE SKIP LOCKED, so senders claiming together get different rows).

    Returns (the rows, how many of them a dead sender left in flight): those are resent
    with the same Message-ID and counted in resent_after_crash.
    """
    rows = conn.execute(CLAIM, {"issue": issue, "me": me, "now": now, "alive": now - lease,
                                "unknown": include_unknown, "limit": limit}).fetchall()
    found = [job for _, job in sorted((_delivery(row) for row in rows), key=lambda p: p[0])]
    crashed = sum(1 for job in found if job.state is DeliveryState.ATTEMPTING)
    return found, crashed


def claimed_elsewhere(conn: Connection, issue: str, me: int) -> int:
    """Rows of ``issue`` another sender holds and has not settled (alive or not yet
    known dead): a sender with nothing to claim waits for them before it stops."""
    n: int = conn.execute(CLAIMED_ELSEWHERE, (issue, me)).fetchone()[0]
    return n


def take_permit(conn: Connection, now: float, windows: Iterable[tuple[int, float]]
                ) -> tuple[float, float]:
    """Take one message's permit at ``now`` if every (limit, seconds) window has room:
    (0.0, 0.0); otherwise (the seconds until one would, the longest full window), and
    nothing is taken.

    Run inside the transaction that marks the row attempting, under a lock every sender
    takes, so that the count and the permit are one step for all senders together.
    """
    wait = full = 0.0
    for limit, seconds in windows:
        row = conn.execute(NTH_PERMIT, (now - seconds, limit - 1)).fetchone()
        if row is not None:
            wait, full = max(wait, float(row[0]) + seconds - now), max(full, seconds)
    if wait <= 0.0:
        conn.execute(TAKE_PERMIT, (now,))
        return 0.0, 0.0
    return wait, full


def forget_subscriber(conn: Connection, subscriber_id: int) -> None:
    """Erase a removed member's personal values from their ledger rows (keeps the counts)."""
    conn.execute(FORGET, (subscriber_id,))
    conn.execute(FORGET_FEEDBACK, (subscriber_id,))


def return_token(return_path: str) -> str | None:
    """The token of an envelope sender ``local+<token>@domain`` (None: no token)."""
    local = return_path.rpartition("@")[0]
    return local.rpartition("+")[2].lower() if "+" in local else None


# --------------------------------------------------------------------------- what came back


def reported_by_token(conn: Connection, token: str) -> Reported | None:
    """The delivery whose envelope sender carries this (verified) token."""
    row = conn.execute(BY_RETURN_TOKEN, (token.lower(),)).fetchone()
    return _reported(row)


def reported_by_message_id(conn: Connection, message_id: str) -> Reported | None:
    row = conn.execute(BY_MESSAGE_ID, (message_id,)).fetchone()
    return _reported(row)


def _reported(row: Any) -> Reported | None:
    if row is None:
        return None
    return Reported(id=row[0], issue=row[1], subscriber_id=row[2], list_name=row[3],
                    address=row[4], state=DeliveryState(row[5]), message_id=row[6])


def late_bounce(conn: Connection, delivery_id: int, code: int | None, status: str,
                text: str) -> bool:
    """sent (or unknown) -> bounced, with the reported status and diagnostic; True if moved."""
    return conn.execute(LATE_BOUNCE, {"id": delivery_id, "code": code, "status": status,
                                      "text": text[:REPLY_TEXT_MAX]}).rowcount == 1


def add_feedback(conn: Connection, reported: Reported, kind: str, status: str | None,
                 diagnostic: str | None, now: float, fingerprint: str) -> None:
    """Record what a report said about one delivery (bounce, soft, complaint, unsubscribe)."""
    conn.execute(ADD_FEEDBACK, {
        "delivery_id": reported.id, "issue": reported.issue,
        "subscriber_id": reported.subscriber_id, "kind": kind, "status": status,
        "diagnostic": None if diagnostic is None else diagnostic[:FEEDBACK_TEXT_MAX],
        "at": now, "fingerprint": fingerprint})


def soft_bounces(conn: Connection, subscriber_id: int) -> tuple[int, int]:
    """(soft bounces reported for the member, how many different issues they were about)."""
    n, issues = conn.execute(SOFT_BOUNCES, (subscriber_id,)).fetchone()
    return int(n), int(issues)


def feedback_counts(conn: Connection, issue: str) -> dict[str, int]:
    """What came back about an issue, by kind: bounce, soft, complaint, unsubscribe."""
    found = dict(conn.execute(FEEDBACK_COUNTS, (issue,)).fetchall())
    return {kind: int(found.get(kind, 0))
            for kind in ("bounce", "soft", "complaint", "unsubscribe")}


def late_reports(conn: Connection, issue: str) -> list[LateReport]:
    """Late bounces and complaints about an issue, in the order they came."""
    return [LateReport(*row) for row in conn.execute(FEEDBACK_ROWS, (issue,))]


def inbox_handled(conn: Connection, fingerprint: str) -> str | None:
    """The kind a message was found to be when it was handled before; None: new to us."""
    row = conn.execute(INBOX_SEEN, (fingerprint,)).fetchone()
    return None if row is None else str(row[0])


def record_inbox_message(conn: Connection, fingerprint: str, kind: str,
                         now: float) -> bool:
    """Mark a message handled; False when another run got there first (change nothing)."""
    return conn.execute(INBOX_RECORD, (fingerprint, kind, now)).rowcount == 1


# --------------------------------------------------------------------------- reporting


def counts(conn: Connection, issue: str) -> dict[DeliveryState, int]:
    found = {DeliveryState(state): n for state, n in conn.execute(COUNTS, (issue,))}
    return {state: found.get(state, 0) for state in DeliveryState}


def crash_resends(conn: Connection, issue: str) -> int:
    """How many rows were (or are being) resent because a run died with them in flight."""
    n: int = conn.execute(CRASH_RESENDS, (issue,)).fetchone()[0]
    return n


def next_deferred(conn: Connection, issue: str) -> float | None:
    value: float | None = conn.execute(NEXT_DEFERRED, (issue,)).fetchone()[0]
    return value


def sent_since(conn: Connection, since: float) -> int:
    """Messages accepted by the server since ``since`` (all issues): the daily cap's count."""
    n: int = conn.execute(SENT_SINCE, (since,)).fetchone()[0]
    return n


def oldest_sent_since(conn: Connection, since: float) -> float | None:
    value: float | None = conn.execute(OLDEST_SENT_SINCE, (since,)).fetchone()[0]
    return value


def sent_times_since(conn: Connection, since: float) -> list[float]:
    """When each message since ``since`` was accepted (all issues): the rate windows' start."""
    return [row[0] for row in conn.execute(SENT_TIMES_SINCE, (since,))]


def rows(conn: Connection, issue: str, *, problems_only: bool = False) -> Iterator[Row]:
    for row in conn.execute(ROWS, {"issue": issue, "problems_only": problems_only}):
        yield Row(id=row[0], subscriber_id=row[1], address=row[2], state=DeliveryState(row[3]),
                  attempts=row[4], first_attempt_at=row[5], last_attempt_at=row[6],
                  next_attempt_at=row[7], sent_at=row[8], reply_code=row[9],
                  enhanced_code=row[10], reply_text=row[11], stage=row[12],
                  message_id=row[13], resent_after_crash=row[14])


# --------------------------------------------------------------------------- proofs


def record_proof(conn: Connection, issue: str, content_hash: str, now: float) -> None:
    with transaction(conn):
        conn.execute(RECORD_PROOF, (issue, content_hash, now))


def last_proof(conn: Connection, issue: str, content_hash: str) -> float | None:
    """When this exact content of the issue was last sent as a proof (None: never)."""
    row = conn.execute(LAST_PROOF, (issue, content_hash)).fetchone()
    return None if row is None else float(row[0])


# --------------------------------------------------------------------------- the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held(conn: Connection, now: float) -> tuple[StateError | None, bool]:
    """(why the lock stops us, or None; whether a lock row is there to take over)."""
    held = conn.execute(GET_LOCK).fetchone()
    if held is None:
        return None, False
    held_issue, pid, held_host, _, started, beat = tuple(held)
    stale = (held_host == socket.gethostname() and not _alive(pid)) or now - beat > STALE_AFTER
    if stale:
        return None, True
    return StateError(
        f"{held_issue} is being sent right now (process {pid} on {held_host}, "
        f"running for {now - started:.0f} s); wait for it to finish, or stop it "
        "with Ctrl-C, then run this command again"), True


def check_not_locked(conn: Connection, now: float) -> None:
    """StateError when a live run holds the sending lock (nothing is written)."""
    error, _ = _held(conn, now)
    if error is not None:
        raise error


def acquire_lock(conn: Connection, issue: str, now: float) -> Lock:
    """Take the single sending lock, or raise StateError naming the run that holds it.

    A lock is stale (and taken over) when its process is gone on this host, or its
    heartbeat is older than STALE_AFTER seconds.
    """
    token = secrets.token_hex(16)
    with transaction(conn):
        error, there = _held(conn, now)
        if error is not None:
            raise error
        if there:
            conn.execute(DELETE_LOCK)
        conn.execute(INSERT_LOCK, (issue, os.getpid(), socket.gethostname(), token, now, now))
    return Lock(issue, token)


@contextmanager
def locked(conn: Connection, issue: str, now: float) -> Iterator[Lock]:
    """Hold the sending lock for the ``with`` block (acquire_lock, then release_lock)."""
    lock = acquire_lock(conn, issue, now)
    try:
        yield lock
    finally:
        release_lock(conn, lock)


def heartbeat(conn: Connection, lock: Lock, now: float) -> None:
    conn.execute(HEARTBEAT, (now, lock.token))


def release_lock(conn: Connection, lock: Lock) -> None:
    with transaction(conn):
        conn.execute(RELEASE_LOCK, (lock.token,))
