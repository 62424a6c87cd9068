"""Sending an issue to a list: the plan, the deadline, the snapshot, the run, the outcome.

In: a Network, one RenderedIssue (rendered once), the state database and a clock. Out:
values the command line turns into words: a Plan before anything is written, the number
of rows the snapshot recorded, the engine's RunResult, and a SendReport after. The engine
itself is engine.py (one SMTP connection: session.py); pipeline.send() calls these in order:

    check_not_locked -> plan -> refuse_if_late -> (confirm) -> snapshot -> deliver -> report
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
from collections.abc import Callable

import msgspec

from newsletter import clock as uk
from newsletter.clock import Clock
from newsletter.delivery import ledger
from newsletter.delivery.engine import Build, RunResult, Sender
from newsletter.delivery.limits import DAY
from newsletter.delivery.messages import recipients
from newsletter.delivery.session import Transport
from newsletter.errors import DeliveryError, StateError
from newsletter.members import store as members
from newsletter.members.tokens import Secrets
from newsletter.model import DeliveryState, Issue, Limits, Network, RenderedIssue

# The ledger thread runs at synchronous=NORMAL under WAL. A kill -9 (the threat model)
# cannot lose a committed transaction then: the WAL write is in the OS page cache before
# COMMIT returns, and the next open replays it. Only a power cut or an OS crash can lose
# the last commits, and losing a suffix of the WAL only moves rows back to an earlier state
# (sent -> attempting -> pending): those few messages are sent again with the same
# Message-ID; nobody is ever skipped. benchmarks/send.py measures what FULL costs;
# NEWSLETTER_LEDGER_SYNC=FULL restores an fsync per commit.
LEDGER_SYNC = os.environ.get("NEWSLETTER_LEDGER_SYNC", "NORMAL").upper()

Counts = dict[DeliveryState, int]


class Plan(msgspec.Struct, frozen=True):
    """What ``newsletter send`` is about to do, decided before anything is written."""

    slug: str
    list_name: str
    subject: str
    sender: str  # as the From line shows it: "Name <address>"
    due: int  # messages this run would send
    resuming: bool  # the ledger already holds this issue's snapshot
    started_at: float | None  # when the snapshot was taken (resuming only)
    counts: Counts  # the ledger's rows by state (resuming only)
    retry_unknown: bool
    where: str  # the server, as the transport names it
    limits: Limits
    sent_last_day: int  # messages sent in the last 24 h (counted only under a daily cap)


class SendReport(msgspec.Struct, frozen=True):
    """Where a send stands after a run (or when nothing was due)."""

    slug: str
    counts: Counts
    result: RunResult
    send_by: dt.date | None
    late_deferred: int  # deferred rows whose next attempt falls after the send-by deadline
    next_deferred: float | None  # when the earliest deferred row may be retried
    oldest_sent_last_day: float | None  # when the daily cap frees its first message

    @property
    def left(self) -> int:
        return self.counts[DeliveryState.PENDING] + self.counts[DeliveryState.ATTEMPTING]

    @property
    def failed(self) -> int:
        return self.counts[DeliveryState.FAILED] + self.counts[DeliveryState.EXPIRED]


def check_not_locked(conn: sqlite3.Connection, clock: Clock) -> None:
    """StateError when another run holds the sending lock: before any plan is shown."""
    ledger.check_not_locked(conn, clock.now())


def plan(conn: sqlite3.Connection, network: Network, rendered: RenderedIssue, list_name: str,
         transport: Transport, clock: Clock, *, retry_unknown: bool) -> Plan:
    """Recipients, limits and what is left today; refuses a resume that would go wrong."""
    slug = rendered.slug
    record = ledger.get_send(conn, slug)
    limits = network.limits
    sent = ledger.sent_since(conn, clock.now() - DAY) if limits.per_day > 0 else 0
    sender = f"{network.sender.name} <{network.sender.address}>" if network.sender.name \
        else network.sender.address
    if record is None:
        members.require_list(conn, list_name)
        due = sum(1 for _ in members.recipients(conn, list_name))
        return Plan(slug, list_name, rendered.subject, sender, due, False, None, {},
                    retry_unknown, transport.where, limits, sent)
    _check_resume(conn, record, rendered, list_name)
    counts = ledger.counts(conn, slug)
    due = counts[DeliveryState.PENDING] + counts[DeliveryState.ATTEMPTING]
    due += counts[DeliveryState.DEFERRED]
    if retry_unknown:
        due += counts[DeliveryState.UNKNOWN]
    return Plan(slug, record.list_name, rendered.subject, sender, due, True, record.created_at,
                counts, retry_unknown, transport.where, limits, sent)


def refuse_if_late(issue: Issue, plan: Plan, clock: Clock) -> None:
    """A run started at or after the issue's send-by deadline sends nothing: DeliveryError.

    Called once the plan has counted who is still due, before anything is written and
    before any connection. A run with nothing due is not refused: it only reports.
    """
    now = clock.now()
    if not plan.due or issue.send_by is None or not uk.passed(issue.send_by, now):
        return
    members_left = f"{plan.due} member{'s' * (plan.due != 1)} of list {plan.list_name}"
    raise DeliveryError(
        f"not sending {issue.slug}: its send-by deadline, {uk.words(issue.send_by)}, "
        f"has passed (it is now {uk.uk_time(now)})\n"
        f"  {members_left} {'are' if plan.due != 1 else 'is'} still pending; nothing was "
        "sent and nothing was changed\n"
        f"  to send it anyway, move or remove send_by ({issue.location_of('send_by')}) and "
        "run the same command again")


def snapshot(conn: sqlite3.Connection, network: Network, rendered: RenderedIssue,
             list_name: str, secrets: Secrets, clock: Clock) -> int | None:
    """Every recipient as a pending ledger row, in one transaction, before any connection.

    The number of rows written; None when a run that held the lock already took it.
    """
    if ledger.get_send(conn, rendered.slug) is not None:
        return None
    return ledger.snapshot(conn, ledger.SendRecord(
        rendered.slug, list_name, rendered.content_hash, rendered.subject, clock.now()),
        recipients(conn, network, list_name, rendered.slug, secrets))


def deliver(network: Network, slug: str, transport: Transport, build: Build,
            lock: ledger.Lock, clock: Clock, *, retry_unknown: bool,
            send_by: dt.date | None = None,
            on_outcome: Callable[[str], None] | None = None,
            on_wait: Callable[[float, str], None] | None = None) -> RunResult:
    """Run the send engine over the due rows; ``on_outcome`` hears each row's new state,
    ``on_wait`` every wait for the limits of a second or more (seconds, what for)."""
    sender = Sender(issue=slug, sender=network.sender.address, transport=transport,
                    limits=network.limits, database=network.database, build=build,
                    lock=lock, clock=clock, retry_unknown=retry_unknown,
                    on_outcome=on_outcome, on_wait=on_wait, synchronous=LEDGER_SYNC,
                    deadline=None if send_by is None else uk.instant(send_by))
    return asyncio.run(sender.run())


def report(conn: sqlite3.Connection, slug: str, result: RunResult | None,
           send_by: dt.date | None, clock: Clock) -> SendReport:
    """Where the send stands; ``result`` is None when nothing was due."""
    counts = ledger.counts(conn, slug)
    late = 0
    if counts[DeliveryState.DEFERRED] and send_by is not None:
        cutoff = uk.instant(send_by)
        late = sum(1 for row in ledger.rows(conn, slug, problems_only=True)
                   if row.state is DeliveryState.DEFERRED
                   and (row.next_attempt_at or 0.0) >= cutoff)
    upcoming = ledger.next_deferred(conn, slug) if counts[DeliveryState.DEFERRED] else None
    oldest = ledger.oldest_sent_since(conn, clock.now() - DAY)
    return SendReport(slug, counts, result or RunResult(), send_by, late, upcoming, oldest)


def _check_resume(conn: sqlite3.Connection, record: ledger.SendRecord,
                  rendered: RenderedIssue, list_name: str) -> None:
    if record.list_name != list_name:
        raise StateError(f"{record.issue} is being sent to list {record.list_name}, not "
                         f"{list_name}: finish that send first (an issue goes to one list)")
    if record.content_hash != rendered.content_hash:
        sent = ledger.counts(conn, record.issue)[DeliveryState.SENT]
        raise StateError(
            f"{record.issue}: the rendered issue changed since sending started on "
            f"{uk.utc_time(record.created_at)} ({sent} already sent); the others would get a "
            "different newsletter. Undo the change to resume, or save the new version as a "
            "new issue file and send that")
