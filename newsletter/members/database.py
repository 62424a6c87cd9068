"""The state database: a SQLite file (the default) or PostgreSQL, opened one way, migrated
forward in order.

``database:`` in newsletter.yaml is either a file in the project folder (SQLite: one sender
at a time, nothing to run) or a ``postgresql://user@host/name`` URL (several senders on one
send, on several machines). The password never sits in the settings file: it comes from
``NEWSLETTER_DATABASE_PASSWORD`` (or libpq's own PGPASSWORD and ~/.pgpass).

Both engines run the same migrations, ``migrations/NNNN_name.sql`` for SQLite and
``migrations/postgresql/NNNN_name.sql`` for PostgreSQL, the same numbers and names; SQLite
records the last one applied in ``PRAGMA user_version``, PostgreSQL in ``schema_version``.
Each migration runs in its own transaction, so a failure leaves the database at the previous
version. A database newer than this program is refused rather than guessed at.

The SQL for members lives in store.py, the SQL for deliveries in delivery/ledger.py, written
once for both engines: ``?`` and ``:name`` parameters, ``ON CONFLICT``, ``CASE``, ``IS [NOT]
DISTINCT FROM``. A PostgreSQL connection (``PgConnection``) answers the part of the sqlite3
API those modules use, so the SQLite path keeps its speed untouched. This module owns what
differs: opening, pragmas, transactions, savepoints, checkpoints and the error classes.

A SQLite file holds members' addresses: it is created readable by its owner only (0600), and
SQLite gives its -wal and -shm files the same permissions as the database file.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.pq import TransactionStatus

from newsletter.errors import StateError
from newsletter.input.config import DATABASE_URL_SCHEMES
from newsletter.members import private

T = TypeVar("T")

PASSWORD_ENV = "NEWSLETTER_DATABASE_PASSWORD"  # noqa: S105 (the name, not a password)
URL_SCHEMES = DATABASE_URL_SCHEMES
# Held by whoever migrates a PostgreSQL database (senders starting together take turns).
_MIGRATE_LOCK = 0x6E6C0001

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# Where a database is: a SQLite file, or a PostgreSQL URL (no password in it).
Target = Path | str

# Errors either engine raises: ``except db.Error``; with StateError, ``db.ERROR_OR_STATE``.
Error: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError,
                                               psycopg.errors.IntegrityError)
ERROR_OR_STATE: tuple[type[Exception], ...] = (*Error, StateError)


class Cursor(Protocol):
    """What is read of a statement's cursor, on either engine."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What store.py and ledger.py use of a connection: sqlite3.Connection's API."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    def close(self) -> None: ...


def is_postgresql(target: Target | Connection) -> bool:
    if isinstance(target, PgConnection):
        return True
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def describe(target: Target) -> str:
    """How messages name a database: the file, or the URL without any password."""
    if not is_postgresql(target):
        return str(target)
    parts = urlsplit(str(target))
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


def migrations(dialect: str = "sqlite") -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped for an engine, in order."""
    package = "newsletter.members.migrations"
    if dialect == "postgresql":
        package += ".postgresql"
    found = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise StateError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


# --------------------------------------------------------------------------- opening


def connect(target: Target, *, migrate: bool = True) -> Connection:
    """Open (creating a SQLite file if needed) the state database and bring its schema up
    to date."""
    if is_postgresql(target):
        return _connect_postgresql(str(target), migrate=migrate)
    return _connect_sqlite(Path(target), migrate=migrate)


def exists(target: Target) -> bool:
    """Whether the state database is there: the file, or a PostgreSQL database that holds
    at least the first migration (a server that cannot be reached is a StateError)."""
    if not is_postgresql(target):
        return Path(target).is_file()
    conn = _connect_postgresql(str(target), migrate=False)
    try:
        return _pg_version(conn) > 0
    finally:
        conn.close()


def open_read_only(target: Target) -> Connection:
    """The existing state database, read-only and not migrated (it is never created here).

    For readers that must change nothing, such as the archive's privacy gate: the tables
    they read exist from the first migration on.
    """
    if is_postgresql(target):
        conn = _connect_postgresql(str(target), migrate=False)
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        return conn
    path = Path(target)
    try:
        lite = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                               isolation_level=None)
    except sqlite3.Error as e:
        raise StateError(f"{path}: cannot open the state database read-only: {e}") from e
    lite.row_factory = sqlite3.Row
    return lite


def _connect_sqlite(path: Path, *, migrate: bool) -> sqlite3.Connection:
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
            _migrate_sqlite(conn, path)
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


def _connect_postgresql(url: str, *, migrate: bool) -> PgConnection:
    where = describe(url)
    if urlsplit(url).password:
        raise StateError(f"{where}: the database URL carries a password; remove it and set "
                         f"{PASSWORD_ENV} instead (secrets never sit in newsletter.yaml)")
    extra: dict[str, Any] = {"connect_timeout": 10, "application_name": "newsletter"}
    password = os.environ.get(PASSWORD_ENV)
    if password:
        extra["password"] = password
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_pg_row, **extra)
    except psycopg.Error as e:
        # libpq's message: the failure, then a tab-indented hint; one line of both
        reason = "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) \
            or type(e).__name__
        hint = (f"; set {PASSWORD_ENV}" if "password" in reason and not password else "")
        raise StateError(f"{where}: cannot open the state database: {reason}{hint}") from e
    conn = PgConnection(raw, where)
    if migrate:
        try:
            _migrate_postgresql(conn, where)
        except BaseException:
            conn.close()
            raise
    return conn


# --------------------------------------------------------------------------- PostgreSQL


class Row(tuple[Any, ...]):
    """A PostgreSQL row as sqlite3.Row reads: by position or by column name."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


_row_classes: dict[tuple[str, ...], type[Row]] = {}


def _pg_row(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = tuple(c.name for c in cursor.description or ())
    cls = _row_classes.get(names)
    if cls is None:
        cls = type("Row", (Row,), {"__slots__": (), "_index": {n: i for i, n in
                                                               enumerate(names)}})
        _row_classes[names] = cls
    return cls


_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|(?<![:\w]):([A-Za-z_]\w*)|%")


def _translate(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, a literal ``%`` -> ``%%`` (not in strings)."""
    def token(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("'"):
            return text
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return f"%({m.group(1)})s"
    return _TOKEN.sub(token, sql)


class PgConnection:
    """A psycopg connection in autocommit mode that answers as sqlite3.Connection does:
    ``execute`` (with SQLite's parameter styles), ``executemany``, ``in_transaction``."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any], where: str) -> None:
        self.raw = raw
        self.where = where
        self._sql: dict[str, str] = {}

    def _q(self, sql: str) -> str:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = _translate(sql)
        return query

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        return self.raw.execute(self._q(sql), parameters or None)

    def executemany(self, sql: str, parameters: Iterable[Any]) -> Any:
        rows = list(parameters)  # a generator may query this same connection as it goes
        cursor = self.raw.cursor()
        cursor.executemany(self._q(sql), rows)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def _pg_version(conn: PgConnection) -> int:
    found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not found:
        return 0
    return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])


def _migrate_postgresql(conn: PgConnection, where: str) -> None:
    known = migrations("postgresql")
    for version, name, sql in known:
        try:
            with transaction(conn):
                conn.execute(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")
                current = _pg_version(conn)
                if current > len(known):
                    raise StateError(
                        f"{where}: schema version {current} is newer than this program "
                        f"knows ({len(known)}); upgrade newsletter")
                if current >= version:
                    continue
                conn.raw.execute(sql)  # type: ignore[call-overload,unused-ignore]
                conn.execute("UPDATE schema_version SET version = ?", (version,))
        except psycopg.Error as e:
            raise StateError(f"{where}: migration {name} failed: {e}") from e


# --------------------------------------------------------------------------- both engines


def begin(conn: Connection) -> None:
    """Start a write transaction (SQLite: take the write lock now, not at the first write)."""
    conn.execute("BEGIN" if is_postgresql(conn) else "BEGIN IMMEDIATE")


def advisory_lock(conn: Connection, key: int) -> None:
    """PostgreSQL: wait for the lock ``key`` until this transaction ends (every process
    using the database takes turns). SQLite: nothing to do, BEGIN IMMEDIATE already made
    the transaction the only writer."""
    if is_postgresql(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (key,))


def pragma(conn: Connection, setting: str) -> None:
    """A SQLite pragma (``secure_delete = ON``); PostgreSQL has nothing to set."""
    if not is_postgresql(conn):
        conn.execute(f"PRAGMA {setting}")


def checkpoint(conn: Connection) -> None:
    """Copy SQLite's WAL into the database and empty it (after erasing personal data).

    Inside a transaction this does nothing: the caller checkpoints after its commit. On
    PostgreSQL, a CHECKPOINT needs the superuser; VACUUM of the members' table removes the
    erased row versions from the table itself.
    """
    if conn.in_transaction:
        return
    if is_postgresql(conn):
        with suppress(psycopg.Error):
            conn.execute("VACUUM subscribers")
        return
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def set_synchronous(conn: Connection, level: str) -> None:
    """SQLite's PRAGMA synchronous (FULL, NORMAL, ...); on PostgreSQL, synchronous_commit
    for this connection (NORMAL: off, which can lose the last commits to a power cut but
    never to a kill; FULL: on)."""
    if level.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {level!r}")
    if is_postgresql(conn):
        conn.execute("SET synchronous_commit = "
                     + ("on" if level.upper() in ("FULL", "EXTRA") else "off"))
        return
    conn.execute(f"PRAGMA synchronous={level}")


@contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """BEGIN [IMMEDIATE] ... COMMIT (ROLLBACK on any exception); joins one already open."""
    if conn.in_transaction:
        yield conn
        return
    begin(conn)
    try:
        yield conn
    except BaseException:
        with suppress(*Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def in_savepoint(conn: Connection, op: Callable[[Connection], T]
                 ) -> tuple[T | None, Exception | None]:
    """Run ``op(conn)`` in a savepoint: (its value, None), or (None, its exception) with
    only its own changes undone. Errors of the savepoint statements themselves propagate.
    """
    conn.execute("SAVEPOINT op")
    try:
        value = op(conn)
    except Exception as e:
        conn.execute("ROLLBACK TO SAVEPOINT op")
        conn.execute("RELEASE SAVEPOINT op")
        return None, e
    conn.execute("RELEASE SAVEPOINT op")
    return value, None


def abandon(conn: Connection) -> None:
    """Roll back whatever transaction an error left open, if any (errors ignored)."""
    with suppress(*Error):
        conn.execute("ROLLBACK")


def busy(error: BaseException | None) -> bool:
    """Is this "the database is busy, try again": SQLite's SQLITE_BUSY or SQLITE_LOCKED,
    PostgreSQL's lock timeout, deadlock or serialization failure, maybe wrapped?"""
    while error is not None:
        if isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode & 0xFF in (
                sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return True
        if isinstance(error, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected,
                              psycopg.errors.SerializationFailure,
                              psycopg.errors.QueryCanceled)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _migrate_sqlite(conn: sqlite3.Connection, path: Path) -> None:
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
