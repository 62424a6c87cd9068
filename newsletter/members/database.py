"""The state database: one SQLite file, opened one way, migrated forward in order.

Migrations are the files ``newsletter/migrations/NNNN_name.sql``; ``PRAGMA user_version``
records the last one applied. Each migration runs in its own transaction, so a failure
leaves the database at the previous version. A database newer than this program is
refused rather than guessed at. The SQL for members lives in store.py, the SQL for
deliveries in delivery/ledger.py; this module opens, migrates, and owns the statements
about the connection itself (pragmas, transactions, savepoints, checkpoints).

The file holds members' addresses: it is created readable by its owner only (0600), and
SQLite gives its -wal and -shm files the same permissions as the database file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import TypeVar

from newsletter.errors import StateError
from newsletter.members import private

T = TypeVar("T")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped, in order."""
    found = []
    for entry in resources.files("newsletter.members.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise StateError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


def connect(path: Path, *, migrate: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the state database and bring its schema up to date."""
    try:
        _create_private(path)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    except sqlite3.Error as e:
        raise StateError(f"{path}: cannot open the state database: {e}") from e
    except OSError as e:
        raise StateError(f"{path}: cannot open the state database: {e.strerror or e}") from e
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        if migrate:
            _migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StateError(
            f"{path}: not a usable state database ({e}); restore it from a backup "
            "or move it aside (nothing was changed)"
        ) from e
    return conn


def _create_private(path: Path) -> None:
    """Create a missing database file empty and 0600 before SQLite opens it.

    SQLite would create it 0644 (readable by every account on the machine), and gives the
    -wal and -shm files the main file's permissions. An empty file is an empty database.
    An existing file keeps the permissions its owner gave it.
    """
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    private.create_empty(path)


def open_read_only(path: Path) -> sqlite3.Connection:
    """The existing state database, read-only and not migrated (it is never created here).

    For readers that must change nothing, such as the archive's privacy gate: the tables
    they read exist from the first migration on.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                               isolation_level=None)
    except sqlite3.Error as e:
        raise StateError(f"{path}: cannot open the state database read-only: {e}") from e
    conn.row_factory = sqlite3.Row
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and empty it (after erasing personal data).

    Inside a transaction this does nothing: the caller checkpoints after its commit.
    """
    if not conn.in_transaction:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def set_synchronous(conn: sqlite3.Connection, level: str) -> None:
    """PRAGMA synchronous for this connection: FULL (``connect``'s setting), NORMAL, ..."""
    if level.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {level!r}")
    conn.execute(f"PRAGMA synchronous={level}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception); joins one already open."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def in_savepoint(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], T]
                 ) -> tuple[T | None, Exception | None]:
    """Run ``op(conn)`` in a savepoint: (its value, None), or (None, its exception) with
    only its own changes undone. Errors of the savepoint statements themselves propagate.
    """
    conn.execute("SAVEPOINT op")
    try:
        value = op(conn)
    except Exception as e:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return None, e
    conn.execute("RELEASE op")
    return value, None


def abandon(conn: sqlite3.Connection) -> None:
    """Roll back whatever transaction an error left open, if any (errors ignored)."""
    with suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    known = migrations()
    if current > len(known):
        raise StateError(
            f"{path}: schema version {current} is newer than this program knows "
            f"({len(known)}); upgrade newsletter"
        )
    for version, name, sql in known[current:]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.execute("ROLLBACK")
            raise StateError(f"{path}: migration {name} failed: {e}") from e


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about strings)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
