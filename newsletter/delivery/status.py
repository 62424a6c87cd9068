"""What the ledger says about each send: part of delivery, for ``newsletter status``.

In: the state database, and one issue's slug or none. Out: a SendStatus per send (counts
by state and what came back later, from `newsletter inbox`; for one issue, every row that
needs a look and each late bounce and complaint), and the CSV of every recipient's state
(spreadsheet-safe).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import msgspec

from newsletter.delivery import ledger
from newsletter.members import database as db
from newsletter.members.csvfiles import neutralise, write_export
from newsletter.model import DeliveryState

CSV_COLUMNS = ("issue", "address", "state", "attempts", "reply_code", "enhanced_code",
               "reply", "stage", "first_attempt", "last_attempt", "next_attempt", "sent_at",
               "message_id", "resent_after_crash")


class SendStatus(msgspec.Struct, frozen=True):
    record: ledger.SendRecord
    counts: dict[DeliveryState, int]
    crash_resends: int  # rows resent after a crash (for one issue only)
    problems: tuple[ledger.Row, ...]  # failed, deferred, unknown... (for one issue only)
    late: dict[str, int] = msgspec.field(default_factory=dict)  # came back: bounce, soft, ...
    late_reports: tuple[ledger.LateReport, ...] = ()  # bounces, complaints (one issue only)
    lists: tuple[str, ...] = ()  # every list the issue was sent to

    @property
    def left(self) -> int:
        """Recipients still to send: pending, in flight or deferred."""
        return sum(self.counts[s] for s in (DeliveryState.PENDING, DeliveryState.ATTEMPTING,
                                            DeliveryState.DEFERRED))


def sends(conn: db.Connection, slug: str | None) -> list[SendStatus]:
    """Every send (or the one of ``slug``, with its problem rows), oldest first."""
    found = []
    for record in ledger.all_sends(conn):
        if slug is not None and record.issue != slug:
            continue
        one = slug is not None
        found.append(SendStatus(
            record, ledger.counts(conn, record.issue),
            ledger.crash_resends(conn, record.issue) if one else 0,
            tuple(ledger.rows(conn, record.issue, problems_only=True)) if one else (),
            ledger.feedback_counts(conn, record.issue),
            tuple(ledger.late_reports(conn, record.issue)) if one else (),
            ledger.send_lists(conn, record.issue)))
    return found


def write_csv(conn: db.Connection, records: list[ledger.SendRecord], path: Path) -> None:
    """Every recipient of these sends, one row each, written whole or not at all."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        for r in ledger.rows(conn, record.issue):
            writer.writerow([neutralise(str(v)) for v in (
                record.issue, r.address, r.state, r.attempts, r.reply_code or "",
                r.enhanced_code or "", r.reply_text or "", r.stage or "",
                _iso(r.first_attempt_at), _iso(r.last_attempt_at), _iso(r.next_attempt_at),
                _iso(r.sent_at), r.message_id, r.resent_after_crash)])
    write_export(path, buffer.getvalue())


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")
