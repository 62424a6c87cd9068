"""Sending an issue to a list: the plan, the deadline, the snapshot, the run, the outcome.

In: a Network, one RenderedIssue (rendered once), the state database and a clock. Out:
values the command line turns into words: a Plan before anything is written, the number
of rows the snapshot recorded, the engine's RunResult, and a SendReport after. The engine
itself is engine.py (one SMTP connection: session.py); pipeline.send() calls these in order:

    check_not_locked -> plan -> refuse_if_late -> (confirm) -> snapshot -> deliver -> report

An issue can go to several lists, at once or one after another: each member gets it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence

import msgspec

from newsletter import clock as uk
from newsletter.clock import Clock
from newsletter.delivery import ledger
from newsletter.delivery.engine import LEASE, Build, RunResult, Sender
from newsletter.delivery.limits import DAY
from newsletter.delivery.messages import recipients
from newsletter.delivery.session import Transport
from newsletter.errors import DeliveryError, StateError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.database import transaction
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
# Several senders on PostgreSQL: the seconds after its last heartbeat when a sender counts
# as dead and another takes over its rows (engine.LEASE unless NEWSLETTER_SEND_LEASE says).
LEASE_ENV = "NEWSLETTER_SEND_LEASE"
SNAPSHOT_LOCK = 0x6E6C0003  # senders starting together write the snapshot one at a time

Counts = dict[DeliveryState, int]


class Plan(msgspec.Struct, frozen=True):
    """What ``newsletter send`` is about to do, decided before anything is written."""

    slug: str
    list_name: str  # the list the send started with (or starts with)
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
    lists: tuple[str, ...] = ()  # every list of the send, this run's included
    # Lists this run adds to a send already in the ledger: (list, recipients without a row).
    adding: tuple[tuple[str, int], ...] = ()
    senders: int = 0  # PostgreSQL: other live senders of this issue, which this run joins

    @property
    def lists_text(self) -> str:
        """``list news`` or ``lists news, events``."""
        lists = self.lists or (self.list_name,)
        return f"list{'s' * (len(lists) > 1)} {', '.join(lists)}"


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


def check_not_locked(conn: db.Connection, clock: Clock) -> None:
    """StateError when another run holds the sending lock: before any plan is shown.

    Only on SQLite: on PostgreSQL a second `send` of the same issue joins the first.
    """
    if not db.is_postgresql(conn):
        ledger.check_not_locked(conn, clock.now())


def lease_from_env(environ: Mapping[str, str] | None = None) -> float:
    """NEWSLETTER_SEND_LEASE in seconds (2 to 3600), or engine.LEASE; DeliveryError when
    it is not a number in that range."""
    value = (os.environ if environ is None else environ).get(LEASE_ENV, "").strip()
    if not value:
        return LEASE
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 2.0 <= seconds <= 3600.0:
        raise DeliveryError(f"environment variable {LEASE_ENV}: expected seconds from 2 to "
                            f"3600, found {value!r}; unset it to use {LEASE:g}")
    return seconds


def list_names(lists: str | Sequence[str]) -> tuple[str, ...]:
    """The lists asked for, each once, in order."""
    return (lists,) if isinstance(lists, str) else tuple(dict.fromkeys(lists))


def plan(conn: db.Connection, network: Network, rendered: RenderedIssue,
         lists: str | Sequence[str], transport: Transport, clock: Clock, *,
         retry_unknown: bool) -> Plan:
    """Recipients, limits and what is left today; refuses a resume that would go wrong.

    Several lists are one send: each member once, through the first list that has them. A
    list added to an issue already in the ledger (finished or not) counts only its members
    who have no row for the issue.
    """
    names = list_names(lists)
    slug = rendered.slug
    record = ledger.get_send(conn, slug)
    limits = network.limits
    sent = ledger.sent_since(conn, clock.now() - DAY) if limits.per_day > 0 else 0
    sender = f"{network.sender.name} <{network.sender.address}>" if network.sender.name \
        else network.sender.address
    if record is None:
        for name in names:
            members.require_list(conn, name)
        due = len({s.id for name in names for s in members.recipients(conn, name)})
        return Plan(slug, names[0], rendered.subject, sender, due, False, None, {},
                    retry_unknown, transport.where, limits, sent, names)
    _check_resume(conn, record, rendered)
    sent_to = ledger.send_lists(conn, slug) or (record.list_name,)
    new = [name for name in names if name not in sent_to]
    for name in new:
        members.require_list(conn, name)
    have = ledger.in_ledger(conn, slug)
    adding = []
    for name in new:
        found = {s.id for s in members.recipients(conn, name)} - have
        adding.append((name, len(found)))
        have |= found
    counts = ledger.counts(conn, slug)
    senders = ledger.live_senders(conn, slug, clock.now(), lease_from_env()) \
        if db.is_postgresql(conn) else 0
    due = counts[DeliveryState.PENDING] + counts[DeliveryState.ATTEMPTING]
    due += counts[DeliveryState.DEFERRED]
    if retry_unknown:
        due += counts[DeliveryState.UNKNOWN]
    due += sum(n for _, n in adding)
    return Plan(slug, record.list_name, rendered.subject, sender, due, True, record.created_at,
                counts, retry_unknown, transport.where, limits, sent, (*sent_to, *new),
                tuple(adding), senders)


def refuse_if_late(issue: Issue, plan: Plan, clock: Clock) -> None:
    """A run started at or after the issue's send-by deadline sends nothing: DeliveryError.

    Called once the plan has counted who is still due, before anything is written and
    before any connection. A run with nothing due is not refused: it only reports.
    """
    now = clock.now()
    if not plan.due or issue.send_by is None or not uk.passed(issue.send_by, now):
        return
    members_left = f"{plan.due} member{'s' * (plan.due != 1)} of {plan.lists_text}"
    raise DeliveryError(
        f"not sending {issue.slug}: its send-by deadline, {uk.words(issue.send_by)}, "
        f"has passed (it is now {uk.uk_time(now)})\n"
        f"  {members_left} {'are' if plan.due != 1 else 'is'} still pending; nothing was "
        "sent and nothing was changed\n"
        f"  to send it anyway, move or remove send_by ({issue.location_of('send_by')}) and "
        "run the same command again")


def snapshot(conn: db.Connection, network: Network, rendered: RenderedIssue,
             lists: str | Sequence[str], secrets: Secrets, clock: Clock) -> int | None:
    """Every recipient as a pending ledger row, in one transaction, before any connection:
    the first snapshot of the issue, and a list added to it later (its members who have no
    row yet). The number of rows written; None when nothing was to be written (a run that
    held the lock already wrote them).
    """
    names = list_names(lists)
    slug = rendered.slug
    now = clock.now()
    written: int | None = None
    with transaction(conn):
        db.advisory_lock(conn, SNAPSHOT_LOCK)
        if ledger.get_send(conn, slug) is None:
            written = ledger.snapshot(conn, ledger.SendRecord(
                slug, names[0], rendered.content_hash, rendered.subject, now),
                recipients(conn, network, names[0], slug, secrets))
        sent_to = ledger.send_lists(conn, slug)
        for name in names:
            if name not in sent_to:
                added = ledger.add_list(conn, slug, name,
                                        recipients(conn, network, name, slug, secrets), now)
                written = (written or 0) + added
    return written


def deliver(network: Network, slug: str, transport: Transport, build: Build,
            lock: ledger.Lock | None, clock: Clock, *, retry_unknown: bool,
            send_by: dt.date | None = None,
            on_outcome: Callable[[str], None] | None = None,
            on_wait: Callable[[float, str], None] | None = None) -> RunResult:
    """Run the send engine over the due rows; ``on_outcome`` hears each row's new state,
    ``on_wait`` every wait for the limits of a second or more (seconds, what for)."""
    sender = Sender(issue=slug, sender=network.sender.address, transport=transport,
                    limits=network.limits, database=network.database, build=build,
                    lock=lock, clock=clock, retry_unknown=retry_unknown,
                    on_outcome=on_outcome, on_wait=on_wait, synchronous=LEDGER_SYNC,
                    deadline=None if send_by is None else uk.instant(send_by),
                    lease=lease_from_env())
    return asyncio.run(sender.run())


def report(conn: db.Connection, slug: str, result: RunResult | None,
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


def _check_resume(conn: db.Connection, record: ledger.SendRecord,
                  rendered: RenderedIssue) -> None:
    if record.content_hash != rendered.content_hash:
        sent = ledger.counts(conn, record.issue)[DeliveryState.SENT]
        raise StateError(
            f"{record.issue}: the rendered issue changed since sending started on "
            f"{uk.utc_time(record.created_at)} ({sent} already sent); the others would get a "
            "different newsletter. Undo the change to resume, or save the new version as a "
            "new issue file and send that")
