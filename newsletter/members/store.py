"""Members in the state database: lists, memberships, consent evidence, suppression.

I/O stage between csvfiles.py (validated CSV rows) and the delivery code (campaign.py,
engine.py), which asks for ``recipients()`` (recipients.py makes each one's per-message
values) and reports permanent failures with ``mark_bounced()`` (so does the inbox stage, with
``mark_complained()`` for spam complaints and ``unsubscribe()`` for emailed requests); the
archive's privacy gate
gets the values it must never publish from ``private_values()``. All the SQL for members
is at the top of this file; the schema is ``migrations/0001_members.sql``. Imports return
``ImportResult`` values; the words for people are made in cli/member_reports.py.

Rules kept here: a member who unsubscribed, bounced, complained or was removed is in the
suppression
list (a salted sha256 of the address, the salt created at random with the database) and
no import ever subscribes them again; so is an address an editor suppressed (``suppress``)
or a file said was blocklisted or complained, on file or not (then only the hash is kept).
An import honours the status each row carries and never upgrades it; subscriber rows are
never deleted (the delivery ledger refers to them), removal erases the personal fields
instead. An import with ``update`` changes only the profile (name, organisation, other
columns) of members it does not skip, never with an empty cell, and never a status or a
consent record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import msgspec

from newsletter.errors import AddressError, InputError, Problem, StateError
from newsletter.members import database as db
from newsletter.members.csvfiles import ExportRow, MemberRow, RowStatus, normalise_address
from newsletter.members.database import (
    Connection,
    Target,
    checkpoint,
    connect,
    open_read_only,
    transaction,
)
from newsletter.model import Location, MemberStatus, PrivateValues, Subscriber

# --------------------------------------------------------------------------- SQL

SALT = "SELECT value FROM meta WHERE key = 'suppression_salt'"

ENSURE_LIST = "INSERT INTO lists (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
LIST_ID = "SELECT id FROM lists WHERE name = ?"

# A member is suppressed for a list by a suppression row for that list or for every list.
RECIPIENTS_PAGE = """
    SELECT s.id, s.email, s.name, s.organisation, s.uid
    FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
    WHERE m.list_id = :list_id AND m.status = 'subscribed' AND s.id > :after
      AND s.email IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM suppression x WHERE x.hash = s.email_hash
                      AND (x.list_id IS NULL OR x.list_id = :list_id))
    ORDER BY s.id
    LIMIT :limit
"""

SUPPRESSED_HASH = """
    SELECT 1 FROM suppression x WHERE x.hash = :hash
    AND (x.list_id IS NULL OR x.list_id = (SELECT id FROM lists WHERE name = :list_name))
"""
# Sendable: subscribed to the list right now, not erased, not in the suppression list.
SENDABLE = """
    SELECT 1 FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id
    WHERE s.id = :subscriber_id AND s.email IS NOT NULL AND m.status = 'subscribed'
      AND m.list_id = (SELECT id FROM lists WHERE name = :list_name)
      AND NOT EXISTS (SELECT 1 FROM suppression x WHERE x.hash = s.email_hash
                      AND (x.list_id IS NULL OR x.list_id = m.list_id))
"""

SUBSCRIBER_BY_EMAIL = "SELECT id, email, name, organisation, uid FROM subscribers WHERE email = ?"
MEMBER_OF_LIST = """
    SELECT s.id FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id
    JOIN lists l ON l.id = m.list_id
    WHERE s.uid = ? AND l.name = ?
"""
SUBSCRIBER_HASH = "SELECT email_hash FROM subscribers WHERE id = ?"

MEMBERSHIP = """
    SELECT m.status FROM memberships m JOIN lists l ON l.id = m.list_id
    WHERE m.subscriber_id = ? AND l.name = ?
"""
# subscribed if on any list, else the latest change
STATUS = """
    SELECT m.status FROM memberships m WHERE m.subscriber_id = ?
    ORDER BY m.status = 'subscribed' DESC, m.changed_at DESC LIMIT 1
"""

# Leaving: memberships that are still subscribed move on; the suppression row is the memory.
LEAVE = """
    UPDATE memberships SET status = :status, changed_at = :now, reason = :reason
    WHERE subscriber_id = :subscriber_id AND status = 'subscribed'
      AND (CAST(:list_name AS TEXT) IS NULL
           OR list_id = (SELECT id FROM lists WHERE name = :list_name))
"""
SUPPRESS = """
    INSERT INTO suppression (hash, list_id, reason, at)
    VALUES (:hash, :list_id, :reason, :now)
    ON CONFLICT DO NOTHING
"""

REMOVE_MEMBERSHIPS = """
    UPDATE memberships SET status = 'removed', changed_at = :now, reason = :reason
    WHERE subscriber_id = :subscriber_id
"""
ERASE = """
    UPDATE subscribers SET email = NULL, email_hash = NULL, name = NULL, organisation = NULL,
                           extra = '{}'
    WHERE id = ?
"""

# Import: rows go to a temporary table in one executemany, then everything is set-based.
IMPORT_TABLE = """
    CREATE TEMP TABLE import_rows (
        line INTEGER PRIMARY KEY, email TEXT NOT NULL, email_hash TEXT NOT NULL,
        name TEXT, organisation TEXT, extra TEXT NOT NULL, consent_source TEXT NOT NULL,
        consent_date TEXT, consent_basis TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT
    )
"""
IMPORT_ROW = """
    INSERT INTO import_rows (line, email, email_hash, name, organisation, extra,
                                  consent_source, consent_date, consent_basis, status)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Subscribed rows: new, already, or suppressed (skipped). Rows that say a person left:
# recorded, or kept when the suppression list already says as much (for that list, when
# they unsubscribed from it; for every list, when they bounced or are suppressed).
IMPORT_CLASSIFY = """
    UPDATE import_rows AS r SET outcome = CASE
        WHEN r.status != 'subscribed' THEN
            CASE WHEN EXISTS (SELECT 1 FROM suppression x WHERE x.hash = r.email_hash
                              AND (x.list_id IS NULL
                                   OR (r.status = 'unsubscribed' AND x.list_id = :list_id)))
                 THEN 'kept' ELSE 'recorded' END
        WHEN EXISTS (SELECT 1 FROM suppression x WHERE x.hash = r.email_hash
                     AND (x.list_id IS NULL OR x.list_id = :list_id)) THEN 'suppressed'
        ELSE coalesce((SELECT CASE WHEN m.status = 'subscribed' THEN 'already'
                                   ELSE 'suppressed' END
                       FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id
                       WHERE s.email = r.email AND m.list_id = :list_id), 'new')
    END
"""
IMPORT_NEW_SUBSCRIBERS = """
    INSERT INTO subscribers (email, email_hash, name, organisation, extra, created_at)
    SELECT r.email, r.email_hash, r.name, r.organisation, r.extra, :now
    FROM import_rows r
    WHERE r.outcome = 'new' AND NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = r.email)
    ORDER BY r.line
"""
IMPORT_MEMBERSHIPS = """
    INSERT INTO memberships (subscriber_id, list_id, status, changed_at, reason)
    SELECT s.id, :list_id, 'subscribed', :now, 'import'
    FROM import_rows r JOIN subscribers s ON s.email = r.email
    WHERE r.outcome = 'new'
"""
IMPORT_CONSENT = """
    INSERT INTO consent (subscriber_id, list_id, source, date, basis, recorded_at)
    SELECT s.id, :list_id, r.consent_source, r.consent_date, r.consent_basis, :now
    FROM import_rows r JOIN subscribers s ON s.email = r.email
    WHERE r.outcome IN ('new', 'already')
      AND NOT EXISTS (SELECT 1 FROM consent c
                      WHERE c.subscriber_id = s.id AND c.list_id = :list_id
                        AND c.source = r.consent_source AND c.basis = r.consent_basis
                        AND c.date IS NOT DISTINCT FROM r.consent_date)
    ORDER BY r.line
"""
# Members already on file whose row differs; the rows an import skips are left alone whole.
# A NULL (empty) cell never counts as different: a partial spreadsheet cannot blank anyone.
IMPORT_PROFILES = """
    SELECT r.line, r.email, s.id, s.name AS old_name, s.organisation AS old_organisation,
           s.extra AS old_extra, r.name, r.organisation, r.extra
    FROM import_rows r JOIN subscribers s ON s.email = r.email
    WHERE r.outcome IN ('new', 'already') AND s.email IS NOT NULL
      AND ((r.name IS NOT NULL AND r.name IS DISTINCT FROM s.name)
           OR (r.organisation IS NOT NULL
                AND r.organisation IS DISTINCT FROM s.organisation)
           OR r.extra != s.extra)
    ORDER BY r.line
"""
UPDATE_PROFILE = """
    UPDATE subscribers SET name = :name, organisation = :organisation, extra = :extra
    WHERE id = :id AND email IS NOT NULL
"""
# People who left (unsubscribed, bounced) and are not on file are recorded as members with
# that status; suppressed people are never added: only their salted hash is kept.
IMPORT_LEFT_SUBSCRIBERS = """
    INSERT INTO subscribers (email, email_hash, name, organisation, extra, created_at)
    SELECT r.email, r.email_hash, r.name, r.organisation, r.extra, :now
    FROM import_rows r
    WHERE r.outcome = 'recorded' AND r.status IN ('unsubscribed', 'bounced')
      AND NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.email = r.email)
    ORDER BY r.line
"""
IMPORT_LEFT_MEMBERSHIPS = """
    INSERT INTO memberships (subscriber_id, list_id, status, changed_at, reason)
    SELECT s.id, :list_id, r.status, :now, 'import: ' || r.status
    FROM import_rows r JOIN subscribers s ON s.email = r.email
    WHERE r.outcome = 'recorded' AND r.status IN ('unsubscribed', 'bounced')
    ON CONFLICT (subscriber_id, list_id) DO UPDATE
        SET status = excluded.status, changed_at = excluded.changed_at, reason = excluded.reason
        WHERE memberships.status = 'subscribed'
"""
# A bounced address bounces for every list; a suppressed person leaves every list.
IMPORT_LEAVE_EVERY_LIST = """
    UPDATE memberships SET status = CASE WHEN r.status = 'bounced' THEN 'bounced'
                                         ELSE 'unsubscribed' END,
                           changed_at = :now, reason = 'import: ' || r.status
    FROM import_rows r JOIN subscribers s ON s.email = r.email
    WHERE memberships.subscriber_id = s.id AND memberships.status = 'subscribed'
      AND r.outcome = 'recorded' AND r.status IN ('bounced', 'suppressed')
"""
IMPORT_SUPPRESS = """
    INSERT INTO suppression (hash, list_id, reason, at)
    SELECT r.email_hash, CASE WHEN r.status = 'unsubscribed' THEN :list_id END, r.status, :now
    FROM import_rows r
    WHERE r.outcome = 'recorded'
    ON CONFLICT DO NOTHING
"""
IMPORT_OUTCOMES = """
    SELECT outcome, count(*) FROM import_rows WHERE status = 'subscribed' GROUP BY outcome
"""
IMPORT_LEFT_OUTCOMES = """
    SELECT status, outcome, count(*) FROM import_rows WHERE status != 'subscribed'
    GROUP BY status, outcome
"""
IMPORT_SKIPPED = """
    SELECT line, email FROM import_rows WHERE outcome = 'suppressed' ORDER BY line
"""
SUPPRESSED_EVERYWHERE = "SELECT 1 FROM suppression WHERE hash = ? AND list_id IS NULL"
IMPORT_DROP = "DROP TABLE import_rows"

EXPORT_LIST = """
    SELECT s.email, s.name, s.organisation, s.extra, c.source, c.date, c.basis
    FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
    LEFT JOIN consent c ON c.id = (SELECT max(id) FROM consent
                                   WHERE subscriber_id = s.id AND list_id = m.list_id)
    WHERE m.list_id = (SELECT id FROM lists WHERE name = :list_name)
      AND m.status = 'subscribed' AND s.email IS NOT NULL
    ORDER BY s.id
"""
EXPORT_ALL = """
    SELECT s.email, s.name, s.organisation, s.extra, c.source, c.date, c.basis
    FROM subscribers s
    LEFT JOIN consent c ON c.id = (
        SELECT max(c2.id) FROM consent c2 JOIN memberships m2
            ON m2.subscriber_id = c2.subscriber_id AND m2.list_id = c2.list_id
        WHERE c2.subscriber_id = s.id AND m2.status = 'subscribed')
    WHERE s.email IS NOT NULL
      AND EXISTS (SELECT 1 FROM memberships m
                  WHERE m.subscriber_id = s.id AND m.status = 'subscribed')
    ORDER BY s.id
"""

# Every member on file with their status and its reason (subscribers export --all): for one
# list, its memberships; for every list, each member once, subscribed if on any list, else
# their latest change.
EXPORT_STATUS_LIST = """
    SELECT s.email, s.name, s.organisation, s.extra, c.source, c.date, c.basis,
           m.status, m.reason, m.changed_at
    FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
    LEFT JOIN consent c ON c.id = (SELECT max(id) FROM consent
                                   WHERE subscriber_id = s.id AND list_id = m.list_id)
    WHERE m.list_id = (SELECT id FROM lists WHERE name = :list_name) AND s.email IS NOT NULL
    ORDER BY s.id
"""
EXPORT_STATUS_ALL = """
    SELECT s.email, s.name, s.organisation, s.extra, c.source, c.date, c.basis,
           m.status, m.reason, m.changed_at
    FROM subscribers s
    JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = (
        SELECT m2.list_id FROM memberships m2 WHERE m2.subscriber_id = s.id
        ORDER BY m2.status = 'subscribed' DESC, m2.changed_at DESC LIMIT 1)
    LEFT JOIN consent c ON c.id = (SELECT max(id) FROM consent
                                   WHERE subscriber_id = s.id AND list_id = m.list_id)
    WHERE s.email IS NOT NULL
    ORDER BY s.id
"""
SUBSCRIBER_EMAIL = "SELECT email FROM subscribers WHERE id = ?"

LISTING = """
    SELECT s.id, s.email, s.name, s.organisation, l.name AS list_name, m.status,
           m.changed_at, m.reason
    FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id
    JOIN lists l ON l.id = m.list_id
    WHERE CAST(:list_name AS TEXT) IS NULL OR l.name = :list_name
    ORDER BY l.name, s.id
"""
COUNTS = """
    SELECT l.name, m.status, count(*) FROM memberships m JOIN lists l ON l.id = m.list_id
    WHERE CAST(:list_name AS TEXT) IS NULL OR l.name = :list_name
    GROUP BY l.name, m.status ORDER BY l.name, m.status
"""
LIST_NAMES = "SELECT name FROM lists ORDER BY name"

# What the archive must never publish: every address and uid on file, whatever the status
# (the delivery ledger copies these addresses, and erases its copies with them).
PRIVATE_ADDRESSES = "SELECT DISTINCT email FROM subscribers WHERE email IS NOT NULL"
PRIVATE_UIDS = "SELECT uid FROM subscribers"

PAGE = 1000
_LIST_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


# --------------------------------------------------------------------------- helpers


def now_text() -> str:
    """Timestamps in the database: UTC, ISO 8601, seconds."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def address_hasher(conn: Connection) -> Callable[[str], str]:
    """Salted sha256 of a normalised address: what the suppression list remembers."""
    salt: str = conn.execute(SALT).fetchone()[0]
    base = hashlib.sha256(f"{salt}:".encode())  # copied per address: the salt is hashed once

    def hashed(email: str) -> str:
        h = base.copy()
        h.update(email.encode())
        return h.hexdigest()

    return hashed


def address_hash(conn: Connection, email: str) -> str:
    return address_hasher(conn)(email)


@contextmanager
def existing(database: Target) -> Iterator[Connection]:
    """The state database for commands about members already imported (never created)."""
    if not db.exists(database):
        raise InputError([Problem(Location(db.describe(database)), "", "no members yet (the state "
                                  "database does not exist)",
                                  hint="import some first: newsletter subscribers import "
                                       "FILE.csv --list NAME")])
    with closing(connect(database)) as conn:
        yield conn


def _not_a_member(email: str, where: str = "") -> InputError:
    return InputError([Problem(Location("command line"), "EMAIL",
                               f"{email!r} is not a member{where}",
                               hint="check the spelling with 'newsletter subscribers list'")])


def _subscriber(row: Any, status: MemberStatus) -> Subscriber:
    return Subscriber(id=row["id"], email=row["email"], name=row["name"],
                      organisation=row["organisation"], status=status, uid=row["uid"])


def _list_id(conn: Connection, list_name: str) -> int | None:
    row = conn.execute(LIST_ID, (list_name,)).fetchone()
    return None if row is None else int(row[0])


def private_values(conn: Connection) -> PrivateValues:
    """Every member's address and uid, and the salt: what the archive's gate looks for."""
    salt = conn.execute(SALT).fetchone()
    return PrivateValues(
        addresses=frozenset(str(r[0]).strip().lower() for r in conn.execute(PRIVATE_ADDRESSES)),
        uids=frozenset(str(r[0]).strip().lower() for r in conn.execute(PRIVATE_UIDS)
                       if len(str(r[0])) >= 16),
        salt=str(salt[0]) if salt else "")


def values_for_archive(database: Target, *, no_members: bool = False) -> PrivateValues | None:
    """``private_values`` for the archive's privacy gate, the database opened read-only
    (never created, never migrated: building the archive changes no state).

    No database is an InputError: the gate could not check the pages for members, and a
    build in a fresh checkout, in CI or with the wrong --config would publish an address
    unchecked. Unless ``no_members`` says so: then None, and the caller says it skipped.
    """
    if not db.exists(database):
        if no_members:
            return None
        raise InputError([Problem(
            Location(str(database)), "", "no state database, so the privacy gate cannot "
            "check the pages for members' addresses and ids; nothing was built",
            hint="build where the members were imported (or give --config for that project); "
                 "where there are none, e.g. a fresh checkout or CI, run "
                 "'newsletter archive --no-members'")])
    try:
        with closing(open_read_only(database)) as conn:
            return private_values(conn)
    except db.Error as e:
        raise StateError(f"{database}: cannot read subscriber addresses: {e}") from e


def list_names(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(LIST_NAMES)]


def check_list_name(name: str) -> None:
    """List names travel in unsubscribe tokens and reports: keep them plain."""
    if not _LIST_NAME.fullmatch(name):
        raise InputError([Problem(Location("--list"), "", f"{name!r} is not a usable list name",
                                  hint="lower-case letters, digits, '.', '_' and '-', "
                                       "e.g. 'news'")])


def require_list(conn: Connection, name: str | None) -> None:
    """InputError unless ``name`` is None or an existing list."""
    if name is None:
        return
    known = list_names(conn)
    if name not in known:
        found = ", ".join(known) or "none yet; import a CSV with --list NAME"
        raise InputError([Problem(Location("--list"), "", f"no list named {name!r}",
                                  hint=f"lists: {found}")])


# --------------------------------------------------------------------------- for delivery


def recipients(conn: Connection, list_name: str) -> Iterator[Subscriber]:
    """Subscribed, unsuppressed members of a list, by id (fetched in pages, no long reads)."""
    list_id = _list_id(conn, list_name)
    if list_id is None:
        return
    after = 0
    while True:
        rows = conn.execute(RECIPIENTS_PAGE,
                            {"list_id": list_id, "after": after, "limit": PAGE}).fetchall()
        for row in rows:
            yield _subscriber(row, MemberStatus.SUBSCRIBED)
        if len(rows) < PAGE:
            return
        after = rows[-1]["id"]


def is_suppressed(conn: Connection, subscriber_id: int, list_name: str) -> bool:
    """True unless the member is, right now, subscribed to the list and not suppressed."""
    return conn.execute(SENDABLE, {"list_name": list_name,
                                   "subscriber_id": subscriber_id}).fetchone() is None


def mark_bounced(conn: Connection, subscriber_id: int, list_name: str,
                 reason: str) -> bool:
    """A permanent failure (5.x.x): the address is suppressed on every list, for good.

    An address that does not exist does not exist for any list, so the bounce is not
    limited to ``list_name`` (kept in the reason for the record). True if anything changed.
    """
    return _leave(conn, subscriber_id, None, MemberStatus.BOUNCED, f"{list_name}: {reason}")


def mark_complained(conn: Connection, subscriber_id: int, list_name: str,
                    reason: str) -> bool:
    """A spam complaint (an RFC 5965 abuse report): suppressed on every list, for good.

    Whoever calls the newsletter spam is sent nothing more from this network, whichever
    list the complaint was about (kept in the reason). True if anything changed.
    """
    return _leave(conn, subscriber_id, None, MemberStatus.COMPLAINED, f"{list_name}: {reason}")


def unsubscribe(conn: Connection, subscriber_id: int, list_name: str | None,
                reason: str) -> bool:
    """Leave one list (or every list when None); idempotent. True if anything changed."""
    return _leave(conn, subscriber_id, list_name, MemberStatus.UNSUBSCRIBED, reason)


def _leave(conn: Connection, subscriber_id: int, list_name: str | None,
           status: MemberStatus, reason: str) -> bool:
    now = now_text()
    with transaction(conn):
        row = conn.execute(SUBSCRIBER_HASH, (subscriber_id,)).fetchone()
        list_id = None if list_name is None else _list_id(conn, list_name)
        params = {"status": str(status), "now": now, "reason": reason,
                  "subscriber_id": subscriber_id, "list_name": list_name}
        changed = conn.execute(LEAVE, params).rowcount
        if row is not None and row[0] is not None and (list_name is None or list_id):
            changed += conn.execute(SUPPRESS, {"hash": row[0], "list_id": list_id,
                                               "reason": str(status), "now": now}).rowcount
    return changed > 0


def unsubscribe_address(conn: Connection, email: str, list_name: str | None,
                        reason: str) -> tuple[str, bool]:
    """An editor's unsubscribe: (the stored address, whether anything changed).

    InputError when the address is no member (of ``list_name``, when given).
    """
    member = find_by_email(conn, email)
    if member is None or (list_name is not None
                          and membership_status(conn, member.id, list_name) is None):
        raise _not_a_member(email, f" of list {list_name!r}" if list_name else "")
    return member.email, unsubscribe(conn, member.id, list_name, reason)


class Suppressed(msgspec.Struct, frozen=True):
    """What ``suppress`` did: addresses newly suppressed, already suppressed, and those of
    the newly suppressed who were members on file (they left every list)."""

    added: tuple[str, ...]
    already: tuple[str, ...]
    members: tuple[str, ...]


def suppress(conn: Connection, emails: Iterable[str], reason: str) -> Suppressed:
    """Suppress normalised addresses on every list, in one transaction.

    An address not on file leaves only its salted hash; a member on file leaves every list
    (their profile stays until ``remove``). Either way no import subscribes them again.
    """
    hashed = address_hasher(conn)
    now = now_text()
    added: list[str] = []
    already: list[str] = []
    on_file: list[str] = []
    with transaction(conn):
        for email in dict.fromkeys(emails):
            digest = hashed(email)
            if conn.execute(SUPPRESSED_EVERYWHERE, (digest,)).fetchone():
                already.append(email)
                continue
            conn.execute(SUPPRESS, {"hash": digest, "list_id": None, "reason": "suppressed",
                                    "now": now})
            added.append(email)
            member = conn.execute(SUBSCRIBER_BY_EMAIL, (email,)).fetchone()
            if member is not None:
                conn.execute(LEAVE, {"status": str(MemberStatus.UNSUBSCRIBED), "now": now,
                                     "reason": reason, "subscriber_id": member["id"],
                                     "list_name": None})
                on_file.append(email)
    return Suppressed(tuple(added), tuple(already), tuple(on_file))


# --------------------------------------------------------------------------- look-ups


def find_by_email(conn: Connection, email: str) -> Subscriber | None:
    """The member with this address (any case, any IDN form), or None.

    Status: subscribed if on any list, else the latest change.
    """
    try:
        normal = normalise_address(email)
    except AddressError:
        return None
    row = conn.execute(SUBSCRIBER_BY_EMAIL, (normal,)).fetchone()
    if row is None:
        return None
    status = conn.execute(STATUS, (row["id"],)).fetchone()
    return _subscriber(row, MemberStatus(status[0]) if status else MemberStatus.UNSUBSCRIBED)


def address_of(conn: Connection, subscriber_id: int) -> str | None:
    """The member's address as stored (None once removed)."""
    row = conn.execute(SUBSCRIBER_EMAIL, (subscriber_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def member_id_for(conn: Connection, uid: str, list_name: str) -> int | None:
    """The id of the member with this uid who is (or was) on the list, else None."""
    row = conn.execute(MEMBER_OF_LIST, (uid, list_name)).fetchone()
    return None if row is None else int(row[0])


def membership_status(conn: Connection, subscriber_id: int, list_name: str
                      ) -> MemberStatus | None:
    """The member's status on one list; None when they were never on it."""
    row = conn.execute(MEMBERSHIP, (subscriber_id, list_name)).fetchone()
    return None if row is None else MemberStatus(row[0])


# --------------------------------------------------------------------------- removal


def remove(conn: Connection, email: str, reason: str = "removed") -> Subscriber:
    """Erase a member's personal data; keep only the salted hash, suppressed on every list."""
    where = Location("command line")
    try:
        normal = normalise_address(email)
    except AddressError as e:
        raise InputError([Problem(where, "EMAIL", str(e))]) from e
    # Overwrite freed space, then empty the WAL: the erased values must not linger on disk.
    db.pragma(conn, "secure_delete = ON")
    with transaction(conn):
        row = conn.execute(SUBSCRIBER_BY_EMAIL, (normal,)).fetchone()
        hashed = address_hash(conn, normal)
        if row is None:
            if conn.execute(SUPPRESSED_HASH, {"hash": hashed, "list_name": None}).fetchone():
                raise InputError([Problem(where, "EMAIL", f"{email!r} was already removed "
                                          "(only its suppression hash is kept)")])
            raise _not_a_member(email)
        now = now_text()
        conn.execute(SUPPRESS, {"hash": hashed, "list_id": None, "reason": "removed",
                                "now": now})
        conn.execute(REMOVE_MEMBERSHIPS, {"now": now, "reason": reason,
                                          "subscriber_id": row["id"]})
        conn.execute(ERASE, (row["id"],))
    checkpoint(conn)
    return _subscriber(row, MemberStatus.REMOVED)


# --------------------------------------------------------------------------- import / export


class ProfileChange(msgspec.Struct, frozen=True):
    """A member on file whose CSV row differs: the line, the address, which columns.

    Column names only, never the values: the report goes to a terminal or a log.
    """

    line: int
    email: str
    columns: tuple[str, ...]  # name, organisation, then other columns in file order


class LeftCount(msgspec.Struct, frozen=True):
    """Rows of one status other than subscribed: how many this import recorded, and how
    many the suppression list already held."""

    status: RowStatus
    recorded: int
    kept: int


class ImportResult(msgspec.Struct, frozen=True):
    list_name: str
    new: int
    already: int
    skipped: tuple[tuple[int, str], ...]  # (line, address) suppressed: never resubscribed
    dry_run: bool
    changed: tuple[ProfileChange, ...] = ()  # members on file whose row differs
    update: bool = False  # whether ``changed`` was (or, dry run, would be) written
    left: tuple[LeftCount, ...] = ()  # unsubscribed, bounced, suppressed rows (in that order)


def _profile_change(row: Any) -> tuple[ProfileChange, dict[str, object]] | None:
    """How a member on file would change; None when nothing does (empty cells never count).

    Other columns merge one by one: a column missing from this CSV, or empty in it, keeps
    the stored value.
    """
    columns: list[str] = []
    name, organisation = row["old_name"], row["old_organisation"]
    if row["name"] is not None and row["name"] != name:
        columns.append("name")
        name = row["name"]
    if row["organisation"] is not None and row["organisation"] != organisation:
        columns.append("organisation")
        organisation = row["organisation"]
    extra = row["old_extra"]
    if row["extra"] != extra:
        stored: dict[str, str] = json.loads(extra)
        merged = dict(stored)
        for column, value in json.loads(row["extra"]).items():
            if value.strip() and stored.get(column) != value:
                columns.append(column)
                merged[column] = value
        if merged != stored:
            extra = json.dumps(merged, ensure_ascii=False, separators=(",", ":"))
    if not columns:
        return None
    return (ProfileChange(row["line"], row["email"], tuple(columns)),
            {"id": row["id"], "name": name, "organisation": organisation, "extra": extra})


def import_rows(conn: Connection, list_name: str, rows: tuple[MemberRow, ...], *,
                dry_run: bool = False, update: bool = False) -> ImportResult:
    """Add validated rows to a list in one transaction (rolled back when ``dry_run``).

    Only subscribed rows subscribe anyone, and never someone suppressed. Members already on
    file keep their status and consent records whatever ``update`` says; with ``update``
    their name, organisation and other columns take the CSV's non-empty values. Without it,
    the result still says who differs.

    The other statuses are honoured, never upgraded: an unsubscribed row leaves (or is
    recorded as having left) this list, a bounced row bounces on every list, a suppressed
    row suppresses the address on every list; each is added to the suppression list, so no
    later import subscribes them. People who left are recorded with their profile; a
    suppressed person not on file is never added (only the salted hash is kept).
    """
    now = now_text()
    hashed = address_hasher(conn)
    if conn.in_transaction:
        raise RuntimeError("import_rows runs its own transaction")
    db.pragma(conn, "temp_store = MEMORY")  # the staging table never needs the disk
    db.begin(conn)
    try:
        conn.execute(ENSURE_LIST, (list_name, now))
        list_id = _list_id(conn, list_name)
        conn.execute(IMPORT_TABLE)
        conn.executemany(IMPORT_ROW, (
            (r.line, r.email, hashed(r.email), r.name, r.organisation, r.extra,
             r.consent_source, r.consent_date, r.consent_basis, r.status) for r in rows))
        params = {"list_id": list_id, "now": now}
        conn.execute(IMPORT_CLASSIFY, params)
        found = [c for c in map(_profile_change, conn.execute(IMPORT_PROFILES)) if c]
        if update:
            conn.executemany(UPDATE_PROFILE, (values for _, values in found))
        conn.execute(IMPORT_NEW_SUBSCRIBERS, params)
        conn.execute(IMPORT_MEMBERSHIPS, params)
        conn.execute(IMPORT_CONSENT, params)
        for statement in (IMPORT_LEFT_SUBSCRIBERS, IMPORT_LEFT_MEMBERSHIPS,
                          IMPORT_LEAVE_EVERY_LIST, IMPORT_SUPPRESS):
            conn.execute(statement, params)
        outcomes = dict(conn.execute(IMPORT_OUTCOMES).fetchall())
        left = {(RowStatus(status), outcome): n
                for status, outcome, n in conn.execute(IMPORT_LEFT_OUTCOMES)}
        skipped = tuple((int(r[0]), str(r[1])) for r in conn.execute(IMPORT_SKIPPED))
        conn.execute(IMPORT_DROP)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("ROLLBACK" if dry_run else "COMMIT")
    counted = tuple(LeftCount(status, left.get((status, "recorded"), 0),
                              left.get((status, "kept"), 0))
                    for status in (RowStatus.UNSUBSCRIBED, RowStatus.BOUNCED,
                                   RowStatus.SUPPRESSED)
                    if (status, "recorded") in left or (status, "kept") in left)
    return ImportResult(list_name, outcomes.get("new", 0), outcomes.get("already", 0), skipped,
                        dry_run, tuple(change for change, _ in found), update, counted)


def export_rows(conn: Connection, list_name: str | None) -> Iterator[ExportRow]:
    """Subscribed members (of one list, or of any), oldest first, with their latest consent."""
    query = EXPORT_ALL if list_name is None else EXPORT_LIST
    for row in conn.execute(query, {"list_name": list_name}):
        yield ExportRow(email=row[0], name=row[1], organisation=row[2], extra=row[3],
                        consent_source=row[4], consent_date=row[5], consent_basis=row[6])


def export_rows_with_status(conn: Connection, list_name: str | None
                            ) -> Iterator[ExportRow]:
    """Every member on file (of one list, or of any), whatever their status, with its reason."""
    query = EXPORT_STATUS_ALL if list_name is None else EXPORT_STATUS_LIST
    for row in conn.execute(query, {"list_name": list_name}):
        yield ExportRow(email=row[0], name=row[1], organisation=row[2], extra=row[3],
                        consent_source=row[4], consent_date=row[5], consent_basis=row[6],
                        status=row[7], status_reason=row[8], status_changed=row[9])


class Listing(msgspec.Struct, frozen=True):
    id: int
    email: str | None
    name: str | None
    organisation: str | None
    list_name: str
    status: MemberStatus
    changed_at: str
    reason: str | None


def listing(conn: Connection, list_name: str | None) -> Iterator[Listing]:
    for row in conn.execute(LISTING, {"list_name": list_name}):
        yield Listing(row["id"], row["email"], row["name"], row["organisation"],
                      row["list_name"], MemberStatus(row["status"]), row["changed_at"],
                      row["reason"])


def counts(conn: Connection, list_name: str | None) -> list[tuple[str, str, int]]:
    return [(row[0], row[1], row[2]) for row in conn.execute(COUNTS, {"list_name": list_name})]
