"""Around the send stage: the plan, the confirmation, proofs, dry runs, progress, status.

In: a Network, one RenderedIssue (rendered once) and the state database. Out: what the
editor reads (the plan before, a progress bar or log lines during, the report after,
``newsletter status`` any time), the snapshot in the ledger, and a run of send.Sender.
pipeline.send() calls these in order; the engine itself is send.py (one SMTP connection:
session.py).

    plan -> on time? -> confirm -> snapshot -> deliver -> report
                                                         newsletter send ISSUE --list NAME
    proof(network, rendered, address)                    newsletter send ISSUE --to ADDRESS
    dry_run(network, rendered, list_name, folder)        newsletter send ISSUE --dry-run DIR
    status(network, issue | None, csv_out)               newsletter status [ISSUE]
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from newsletter.delivery import ledger
from newsletter.delivery.dkim import signer_for
from newsletter.delivery.engine import Build, RunResult, Sender
from newsletter.delivery.limits import DAY
from newsletter.delivery.replies import Action
from newsletter.delivery.session import Transport, send_one, transport_for
from newsletter.errors import DeliveryError, InputError, Problem, StateError, UsageError
from newsletter.input import deadline
from newsletter.input.addresses import AddressError, checked_address
from newsletter.members import database as db
from newsletter.members import private
from newsletter.members import store as members
from newsletter.members.recipients import recipient_for
from newsletter.members.tokens import Secrets, secrets_from_env
from newsletter.model import (
    DeliveryState,
    Issue,
    Limits,
    Location,
    Network,
    Recipient,
    RenderedIssue,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# The ledger thread runs at synchronous=NORMAL under WAL. A kill -9 (the threat model)
# cannot lose a committed transaction then: the WAL write is in the OS page cache before
# COMMIT returns, and the next open replays it. Only a power cut or an OS crash can lose
# the last commits, and losing a suffix of the WAL only moves rows back to an earlier state
# (sent -> attempting -> pending): those few messages are sent again with the same
# Message-ID; nobody is ever skipped. benchmarks/send.py measures what FULL costs;
# NEWSLETTER_LEDGER_SYNC=FULL restores an fsync per commit.
LEDGER_SYNC = os.environ.get("NEWSLETTER_LEDGER_SYNC", "NORMAL").upper()
LOG_EVERY = 5.0
INTERRUPTED = 130  # the exit code of a send stopped by Ctrl-C, as the CLI uses for it


# --------------------------------------------------------------------------- building bytes


def message_builder(network: Network, rendered: RenderedIssue, *,
                    subject_prefix: str = "") -> Build:
    """The per-recipient function: prepare once, then assemble (and sign) per message."""
    from newsletter.email.personalize import assemble, prepare

    prepared = prepare(rendered, network, subject_prefix=subject_prefix)
    signer = signer_for(network.smtp, network.sender_domain)
    if signer is None:
        return lambda recipient, date: assemble(prepared, recipient, date)
    sign = signer.sign
    return lambda recipient, date: sign(assemble(prepared, recipient, date))


def _recipients(conn: sqlite3.Connection, network: Network, list_name: str,
                slug: str, secrets: Secrets) -> Iterator[tuple[int, Recipient]]:
    for subscriber in members.recipients(conn, list_name):
        yield subscriber.id, recipient_for(subscriber, list_name, slug, network, secrets)


# --------------------------------------------------------------------------- proof, dry run


def proof(network: Network, rendered: RenderedIssue, address: str) -> int:
    """One test message, subject prefixed "[TEST] ", to one address; the ledger is untouched."""
    from newsletter.email.personalize import anonymous_recipient

    try:
        to = checked_address(address.strip())
    except AddressError as e:
        raise InputError([Problem(Location("--to"), "",
                                  f"{address!r} is not a valid address ({e})")]) from e
    transport = transport_for(network.smtp, network.sender_domain)
    build = message_builder(network, rendered, subject_prefix="[TEST] ")
    stamp = f"{time.time_ns():x}"
    recipient = msgspec.structs.replace(anonymous_recipient(network, rendered.slug), address=to,
                        message_id=f"<{rendered.slug}.proof.{stamp}@{network.sender_domain}>")
    data = build(recipient, dt.datetime.now(dt.UTC))
    attempt = asyncio.run(send_one(transport, network.sender.address, to, data))
    if attempt.verdict.action is not Action.SENT:
        code = f"{attempt.reply.code} " if attempt.reply.code else ""
        raise DeliveryError(f"proof not sent to {to}: {attempt.verdict.why}: "
                            f"{code}{attempt.reply.text} (at {attempt.reply.stage})")
    click.echo(f"proof of {rendered.slug} sent to {to} via {transport.where} "
               f"({attempt.reply.text})")
    return 0


def dry_run(network: Network, rendered: RenderedIssue, list_name: str, folder: Path) -> int:
    """Write each recipient's exact message to ``folder`` as .eml; no connection, no ledger."""
    build = message_builder(network, rendered)
    secrets = secrets_from_env()
    conn = db.connect(network.database)
    date = dt.datetime.now(dt.UTC)
    count = 0
    try:
        members.require_list(conn, list_name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError([Problem(Location(str(folder)), "--dry-run",
                                      f"cannot create the folder ({e.strerror or e})")]) from e
        for number, (_, recipient) in enumerate(
                _recipients(conn, network, list_name, rendered.slug, secrets), start=1):
            _write(folder / f"{number:06d}.eml", build(recipient, date))
            count = number
    finally:
        conn.close()
    click.echo(f"dry run: {count} messages for list {list_name} written to {folder}/ "
               "(nothing sent, nothing recorded)")
    return 0


# --------------------------------------------------------------------------- the campaign


class Plan(msgspec.Struct, frozen=True):
    """What ``newsletter send`` is about to do, decided before anything is written."""

    due: int  # messages this run would send
    resuming: bool  # the ledger already holds this issue's snapshot
    text: str  # what the editor reads before confirming


def plan(conn: sqlite3.Connection, network: Network, rendered: RenderedIssue, list_name: str,
         transport: Transport, *, retry_unknown: bool) -> Plan:
    """Recipients, limits and estimated duration; refuses a resume that would go wrong."""
    slug = rendered.slug
    record = ledger.get_send(conn, slug)
    if record is None:
        members.require_list(conn, list_name)
        due = sum(1 for _ in members.recipients(conn, list_name))
        return Plan(due, False, (
            f"{slug}: send to list {list_name}: {due} recipients (unsubscribed, bounced and "
            f"suppressed members are not included)\n"
            + _limits_line(conn, network.limits, due, transport.where)))
    _check_resume(conn, record, rendered, list_name)
    due = _due_count(conn, slug, retry_unknown)
    return Plan(due, True, _resume_plan(conn, record, network.limits, due, retry_unknown,
                                        transport.where))


def refuse_if_late(issue: Issue, plan: Plan, list_name: str, now: float) -> None:
    """A run started at or after the issue's send-by deadline sends nothing: DeliveryError.

    Called once the plan has counted who is still due, before anything is written and
    before any connection. A run with nothing due is not refused: it only reports.
    """
    if not plan.due or issue.send_by is None or not deadline.passed(issue.send_by, now):
        return
    members_left = f"{plan.due} member{'s' * (plan.due != 1)} of list {list_name}"
    raise DeliveryError(
        f"not sending {issue.slug}: its send-by deadline, {deadline.words(issue.send_by)}, "
        f"has passed (it is now {deadline.uk_time(now)})\n"
        f"  {members_left} {'are' if plan.due != 1 else 'is'} still pending; nothing was "
        "sent and nothing was changed\n"
        f"  to send it anyway, move or remove send_by ({issue.location_of('send_by')}) and "
        "run the same command again")


def late_note(issue: Issue, now: float) -> str | None:
    """For a proof or a dry run, which are not refused: the deadline has passed."""
    if issue.send_by is None or not deadline.passed(issue.send_by, now):
        return None
    return (f"note: the send-by deadline of {issue.slug}, {deadline.words(issue.send_by)}, "
            "has passed: sending it to a list would be refused")


def confirm(assume_yes: bool) -> None:
    """Ask at a terminal; without one, refuse unless --yes (nothing is changed either way)."""
    if assume_yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("not sending: nobody is at a terminal to confirm; "
                         "pass --yes to send without asking")
    if not click.confirm("Send now?", default=False):
        raise UsageError("not sent (nothing was changed)")


def snapshot(conn: sqlite3.Connection, network: Network, rendered: RenderedIssue,
             list_name: str, secrets: Secrets) -> None:
    """Every recipient as a pending ledger row, in one transaction, before any connection."""
    if ledger.get_send(conn, rendered.slug) is not None:  # a run that held the lock did it
        return
    written = ledger.snapshot(conn, ledger.SendRecord(
        rendered.slug, list_name, rendered.content_hash, rendered.subject, time.time()),
        _recipients(conn, network, list_name, rendered.slug, secrets))
    click.echo(f"ledger: {written} recipients recorded as pending")


def deliver(network: Network, slug: str, transport: Transport, build: Build,
            lock: ledger.Lock, *, due: int, retry_unknown: bool,
            send_by: dt.date | None = None) -> RunResult:
    """Run the send engine over the due rows, with a progress bar or log lines."""
    with _Progress(due) as progress:
        sender = Sender(issue=slug, sender=network.sender.address, transport=transport,
                        limits=network.limits, database=network.database, build=build,
                        lock=lock, retry_unknown=retry_unknown, on_outcome=progress,
                        synchronous=LEDGER_SYNC,
                        deadline=None if send_by is None else deadline.instant(send_by))
        return asyncio.run(sender.run())


def _check_resume(conn: sqlite3.Connection, record: ledger.SendRecord,
                  rendered: RenderedIssue, list_name: str) -> None:
    if record.list_name != list_name:
        raise StateError(f"{record.issue} is being sent to list {record.list_name}, not "
                         f"{list_name}: finish that send first (an issue goes to one list)")
    if record.content_hash != rendered.content_hash:
        sent = ledger.counts(conn, record.issue)[DeliveryState.SENT]
        raise StateError(
            f"{record.issue}: the rendered issue changed since sending started on "
            f"{_when(record.created_at)} ({sent} already sent); the others would get a "
            "different newsletter. Undo the change to resume, or save the new version as a "
            "new issue file and send that")


def _due_count(conn: sqlite3.Connection, slug: str, retry_unknown: bool) -> int:
    counts = ledger.counts(conn, slug)
    due = counts[DeliveryState.PENDING] + counts[DeliveryState.ATTEMPTING]
    due += counts[DeliveryState.DEFERRED]
    if retry_unknown:
        due += counts[DeliveryState.UNKNOWN]
    return due


def _resume_plan(conn: sqlite3.Connection, record: ledger.SendRecord, limits: Limits,
                 due: int, retry_unknown: bool, where: str) -> str:
    c = ledger.counts(conn, record.issue)
    lines = [f"{record.issue}: resuming the send to list {record.list_name} started "
             f"{_when(record.created_at)}: {_counts_text(c)}"]
    if c[DeliveryState.ATTEMPTING]:
        lines.append(f"  {c[DeliveryState.ATTEMPTING]} were in flight when the last run "
                     "stopped: they are sent again, with the same Message-ID")
    if c[DeliveryState.UNKNOWN] and not retry_unknown:
        lines.append(f"  {c[DeliveryState.UNKNOWN]} unknown (the server may have them) are "
                     "not resent; --retry-unknown resends them with the same Message-ID")
    if due:
        lines.append(_limits_line(conn, limits, due, where))
    else:
        lines.append("  nothing is due now")
    return "\n".join(lines)


def _limits_line(conn: sqlite3.Connection, limits: Limits, due: int, where: str) -> str:
    parts = []
    rate = float("inf")
    if limits.per_second > 0:
        parts.append(f"{limits.per_second:g}/s")
        rate = min(rate, limits.per_second)
    if limits.per_minute > 0:
        parts.append(f"{limits.per_minute}/min")
        rate = min(rate, limits.per_minute / 60)
    if limits.per_hour > 0:
        parts.append(f"{limits.per_hour}/h")
        rate = min(rate, limits.per_hour / 3600)
    today = ""
    if limits.per_day > 0:
        left = max(0, limits.per_day - ledger.sent_since(conn, time.time() - DAY))
        parts.append(f"{limits.per_day}/day")
        today = f"; {left} left in the last 24 h" + (
            f" (the other {due - left} wait for a later run)" if due > left else "")
        due = min(due, left)
    if limits.batch_size:
        parts.append(f"batches of {limits.batch_size} with {limits.batch_pause:g} s pauses")
    estimate = "as fast as the server takes them" if rate == float("inf") else \
        f"about {_duration(due / rate)}"
    return (f"  via {where}, {limits.concurrency} connection(s); limits: "
            f"{', '.join(parts) or 'none'}{today}; {due} to send, {estimate}")


def report(conn: sqlite3.Connection, slug: str, result: RunResult | None,
           send_by: dt.date | None = None) -> int:
    """Print where the send stands; the exit code (1: recipients failed for good, or left
    unsent by the send-by deadline).

    ``result`` is None when nothing was due. DeliveryError when the run was stopped by an
    error the user must fix.
    """
    c = ledger.counts(conn, slug)
    result = result or RunResult()
    this_run = ", ".join(f"{n} {state}" for state, n in sorted(result.outcomes.items()))
    if this_run:
        click.echo(f"this run: {this_run}")
    click.echo(f"{slug}: {_counts_text(c)}")
    if result.resent_after_crash:
        click.echo(f"  {result.resent_after_crash} were in flight when a previous run stopped "
                   "and were sent again with the same Message-ID (they may arrive twice)")
    if c[DeliveryState.UNKNOWN]:
        click.echo(f"  {c[DeliveryState.UNKNOWN]} unknown: the connection was lost after the "
                   "message was sent; `newsletter status` lists them; --retry-unknown resends "
                   "them with the same Message-ID")
    late = 0  # deferred rows whose next attempt falls after the send-by deadline
    if c[DeliveryState.DEFERRED] and send_by is not None:
        cutoff = deadline.instant(send_by)
        late = sum(1 for row in ledger.rows(conn, slug, problems_only=True)
                   if row.state is DeliveryState.DEFERRED
                   and (row.next_attempt_at or 0.0) >= cutoff)
    if c[DeliveryState.DEFERRED] > late:
        upcoming = ledger.next_deferred(conn, slug)
        click.echo(f"  {c[DeliveryState.DEFERRED] - late} deferred (the server said 'try "
                   f"later'): run the same command again after {_when(upcoming)} to retry "
                   "them")
    if late and send_by is not None:
        click.echo(f"  {late} deferred whose next attempt falls after the send-by deadline "
                   f"({deadline.words(send_by)}): they are not retried; move send_by in the "
                   "issue to retry them", err=True)
    left = c[DeliveryState.PENDING] + c[DeliveryState.ATTEMPTING]
    if result.daily_cap and left:
        oldest = ledger.oldest_sent_since(conn, time.time() - DAY)
        again = f" after {_when(oldest + DAY)}" if oldest else ""
        click.echo(f"  daily cap reached: {left} still pending; run the same command again"
                   f"{again}")
    elif result.past_deadline and left and send_by is not None:
        click.echo(f"  {result.stopped} ({deadline.words(send_by)}): {left} still "
                   "pending and not sent; to send them anyway, move send_by in the issue and "
                   "run the same command again", err=True)
    elif result.interrupted:
        click.echo(f"  stopped: {left} still pending; run the same command to continue")
    failed = c[DeliveryState.FAILED] + c[DeliveryState.EXPIRED]
    if result.fatal and result.stopped:
        raise DeliveryError(f"sending stopped: {result.stopped}\n  {left} recipients are "
                            "still pending; nothing was skipped: run the same command again "
                            "once it is fixed")
    if result.interrupted and left:
        return INTERRUPTED  # not finished: a script must not take this for done
    if failed:
        click.echo(f"  {failed} failed for good: `newsletter status {slug}` shows why",
                   err=True)
        return 1
    if late or (result.past_deadline and left):
        return 1  # members the deadline keeps from getting it: not done, and not by itself
    return 0


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on a terminal; a log line every few seconds otherwise."""

    FINAL = frozenset({"sent", "failed", "unknown", "suppressed", "expired"})

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.last_log = self.started
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty() and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._task = self._bar.add_task("send", total=self.total, rate="")
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.done:
            self._log()

    def __call__(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        if state in self.FINAL:  # a deferred row comes round again: not done yet
            self.done += 1
        if self._bar is not None and self._task is not None:
            elapsed = max(1e-6, time.monotonic() - self.started)
            self._bar.update(self._task, completed=self.done,
                             rate=f"{self.done / elapsed:.1f}/s")
        elif time.monotonic() - self.last_log >= LOG_EVERY:
            self._log()

    def _log(self) -> None:
        now = time.monotonic()
        self.last_log = now
        rate = self.done / max(1e-6, now - self.started)
        eta = f", about {_duration((self.total - self.done) / rate)} left" \
            if rate and self.total > self.done else ""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        click.echo(f"progress: {self.done}/{self.total} done ({rate:.1f}/s{eta}): {counts}",
                   err=True)


# --------------------------------------------------------------------------- status


def status(network: Network, issue: Path | None, csv_out: Path | None,
           send_by: dt.date | None = None) -> None:
    """Counts per issue; for one issue every failure, deferral and unknown; CSV export.

    An issue is found in the ledger by its slug (the file name), so the status of a sent
    issue still shows after its file is renamed or removed. ``send_by``: that one issue's
    send-by deadline, shown with whether it has passed.
    """
    slug = issue.stem if issue is not None else None
    conn = db.connect(network.database)
    try:
        sends = ledger.all_sends(conn)
        if issue is not None:
            sends = [s for s in sends if s.issue == slug]
            if not sends and not issue.is_file():
                raise InputError([Problem(
                    Location(str(issue)), "", "no such issue file, and nothing was sent as "
                    f"{slug!r}", hint="`newsletter status` lists every issue sent")])
            if not sends:
                click.echo(f"{slug}: not sent yet (newsletter send {issue} --list NAME)")
            if not sends and send_by is not None:
                click.echo(_deadline_line(send_by, time.time(), None))
        elif not sends:
            click.echo("nothing has been sent yet")
        for record in sends:
            c = ledger.counts(conn, record.issue)
            click.echo(f"{record.issue}  list {record.list_name}  started "
                       f"{_when(record.created_at)}  {_counts_text(c)}")
            if issue is not None and send_by is not None:
                left = sum(c[s] for s in (DeliveryState.PENDING, DeliveryState.ATTEMPTING,
                                          DeliveryState.DEFERRED))
                click.echo(_deadline_line(send_by, time.time(), left))
            if issue is not None:
                for line in _problem_lines(conn, record.issue):
                    click.echo(line)
        if csv_out is not None:
            _write_csv(conn, sends, csv_out)
            click.echo(f"wrote {csv_out}")
    finally:
        conn.close()


def _deadline_line(send_by: dt.date, now: float, left: int | None) -> str:
    """``left``: recipients still to send (None: not sent yet)."""
    due = deadline.instant(send_by)
    if now < due:
        return f"  send-by {deadline.words(send_by)}: {_duration(due - now)} from now"
    if left == 0:
        return f"  send-by {deadline.words(send_by)}: passed"
    who = "sending to a list" if left is None else f"sending to the {left} still pending"
    return (f"  send-by {deadline.words(send_by)}: passed; {who} is refused (move send_by "
            "in the issue to send anyway)")


def _problem_lines(conn: sqlite3.Connection, slug: str) -> Iterator[str]:
    crashes = ledger.crash_resends(conn, slug)
    if crashes:
        yield (f"  {crashes} resent after a crash (in flight when a run was killed; same "
               "Message-ID)")
    for row in ledger.rows(conn, slug, problems_only=True):
        # the reply text starts with its enhanced code when it has one: "450 4.2.1 busy"
        why = " ".join(str(x) for x in (row.reply_code, row.reply_text) if x)
        if row.state is DeliveryState.DEFERRED:
            yield (f"  deferred  {row.address}  attempt {row.attempts}, next "
                   f"{_when(row.next_attempt_at)}: {why}")
        elif row.state is DeliveryState.UNKNOWN:
            yield f"  unknown   {row.address}  {row.message_id}: {why} (at {row.stage})"
        else:
            yield f"  {row.state:<9} {row.address}  {why} (at {row.stage})"


CSV_COLUMNS = ("issue", "address", "state", "attempts", "reply_code", "enhanced_code",
               "reply", "stage", "first_attempt", "last_attempt", "next_attempt", "sent_at",
               "message_id", "resent_after_crash")


def _write_csv(conn: sqlite3.Connection, sends: list[ledger.SendRecord], path: Path) -> None:
    from newsletter.members.csvfiles import neutralise, write_export

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for record in sends:
        for r in ledger.rows(conn, record.issue):
            writer.writerow([neutralise(str(v)) for v in (
                record.issue, r.address, r.state, r.attempts, r.reply_code or "",
                r.enhanced_code or "", r.reply_text or "", r.stage or "",
                _iso(r.first_attempt_at), _iso(r.last_attempt_at), _iso(r.next_attempt_at),
                _iso(r.sent_at), r.message_id, r.resent_after_crash)])
    write_export(path, buffer.getvalue())


def _write(path: Path, data: bytes) -> None:
    """Write a whole file or nothing (a .partial renamed into place): dry-run messages."""
    partial = path.with_name(path.name + ".partial")
    try:
        private.write_new(partial, data)  # owner-only: each message names its member
        partial.replace(path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise InputError([Problem(Location(str(path)), "",
                                  f"cannot write the file ({e.strerror or e})")]) from e


# --------------------------------------------------------------------------- words


def _counts_text(c: dict[DeliveryState, int]) -> str:
    total = sum(c.values())
    shown = [f"{n} {state}" for state, n in c.items() if n]
    return f"{total} recipients: " + (", ".join(shown) or "none")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
