"""Copy a SQLite state database into an empty PostgreSQL one (``newsletter database copy``).

Everything goes across as it is: ids, uids, the delivery ledger and the suppression salt
(the ``meta`` row the new database was created with is replaced: the salt keys every
suppression hash, and a new one would let suppressed people back in). The tables and
their columns are read from the SQLite schema (``PRAGMA table_info``) and must be the ones
PostgreSQL has: a difference means the two migrations have drifted, and nothing is copied.

The copy is one PostgreSQL transaction: its tables are locked, found empty, filled with
COPY (referenced tables first), their identity sequences moved past the largest id, and
the row counts compared with SQLite's, or nothing is kept. The caller holds SQLite in one
transaction meanwhile, so every table is read from the same moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from newsletter.errors import InputError, Problem, StateError
from newsletter.input.config import URL_PASSWORD, database_url_problem
from newsletter.members import database as db
from newsletter.model import Location

URL_FORM = "postgresql://USER@HOST[:PORT]/NAME"
# Created by the first migration of every new database; replaced by the copied one.
SALT_KEY = "suppression_salt"
_PG_BOOKKEEPING = frozenset({"schema_version"})


def target_url(url: str) -> str:
    """The URL to copy into, or InputError: a postgresql:// URL with a host and a database
    name and no password (the password comes from NEWSLETTER_DATABASE_PASSWORD)."""
    def bad(message: str, hint: str) -> InputError:
        return InputError([Problem(Location("command line"), "URL", message, hint=hint)])

    if not url.startswith(db.URL_SCHEMES):
        shown = url if len(url) <= 60 else url[:60] + "..."
        raise bad(f"not a PostgreSQL URL: {shown!r}", f"write {URL_FORM}")
    problem = database_url_problem(url)
    if problem == URL_PASSWORD:
        raise bad(problem, f"remove it and set {db.PASSWORD_ENV} in the environment "
                  f"instead: {URL_FORM}")
    if problem is not None:
        raise bad(problem, f"write {URL_FORM}")
    return url


def copy_tables(source: sqlite3.Connection, target: db.PgConnection
                ) -> tuple[tuple[str, int], ...]:
    """Copy every table of ``source`` into the empty ``target`` in one transaction; the
    rows per table, in the order copied. StateError (nothing kept) when the schemas differ,
    the target holds data, or the counts do not match afterwards."""
    columns = _source_columns(source)
    where = target.where
    try:
        with db.transaction(target):
            target_columns = _target_columns(target)
            _same_schema(columns, target_columns, where)
            order = _referenced_first(source, list(columns))
            target.raw.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in order)))
            _require_empty(target, order)
            target.execute("DELETE FROM meta")
            with target.raw.cursor() as cursor:
                for table in order:
                    _copy_table(source, cursor, table, columns[table])
            _move_sequences(target)
            counts = tuple((t, _count(source, t)) for t in order)
            copied = {t: _pg_count(target, t) for t in order}
            wrong = [f"{t}: {n} in SQLite, {copied[t]} copied" for t, n in counts
                     if copied[t] != n]
            if wrong:
                raise StateError(f"{where}: the row counts differ after copying ("
                                 + "; ".join(wrong) + "); nothing was kept")
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StateError(f"{where}: the copy failed: {reason} (nothing was kept)") from e
    return counts


def _source_columns(source: sqlite3.Connection) -> dict[str, list[str]]:
    """Each table of the SQLite schema (not SQLite's own) and its columns, in order."""
    tables = [row[0] for row in source.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' ORDER BY name")]
    return {t: [row[1] for row in source.execute(f'PRAGMA table_info("{t}")')]
            for t in tables}


def _target_columns(target: db.PgConnection) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for table, column in target.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
            "WHERE c.table_schema = current_schema() "
            "ORDER BY c.table_name, c.ordinal_position"):
        if table not in _PG_BOOKKEEPING:
            found.setdefault(table, []).append(column)
    return found


def _same_schema(columns: dict[str, list[str]], target: dict[str, list[str]],
                 where: str) -> None:
    """The SQLite tables and columns are PostgreSQL's (SQLite's hidden rowid counts where
    PostgreSQL keeps it as a column: send_lists); otherwise the schemas have drifted."""
    drift = []
    for table in sorted(set(columns) | set(target)):
        if table not in target:
            drift.append(f"table {table} is only in SQLite")
        elif table not in columns:
            drift.append(f"table {table} is only in PostgreSQL")
        else:
            if "rowid" in target[table] and "rowid" not in columns[table]:
                columns[table].append("rowid")
            if set(columns[table]) != set(target[table]):
                only_lite = sorted(set(columns[table]) - set(target[table]))
                only_pg = sorted(set(target[table]) - set(columns[table]))
                drift.append(f"table {table}: columns only in SQLite {only_lite}, "
                             f"only in PostgreSQL {only_pg}")
    if drift:
        raise StateError(f"{where}: the SQLite and PostgreSQL schemas differ ("
                         + "; ".join(drift) + "); nothing was copied (upgrade newsletter, "
                         "or report this as a bug)")


def _referenced_first(source: sqlite3.Connection, tables: list[str]) -> list[str]:
    """The tables in an order where each comes after the tables its foreign keys name."""
    needs = {t: {row[2] for row in source.execute(f'PRAGMA foreign_key_list("{t}")')} - {t}
             for t in tables}
    order: list[str] = []
    while len(order) < len(tables):
        ready = [t for t in sorted(tables) if t not in order and needs[t] <= set(order)]
        if not ready:  # a cycle: cannot happen with this schema; keep going by name
            ready = [t for t in sorted(tables) if t not in order][:1]
        order.extend(ready)
    return order


def _require_empty(target: db.PgConnection, tables: Iterable[str]) -> None:
    """StateError unless every table is empty (meta: only the salt a new database has)."""
    full = []
    for table in tables:
        if table == "meta":
            n = int(target.execute("SELECT count(*) FROM meta WHERE key <> ?",
                                   (SALT_KEY,)).fetchone()[0])
        else:
            n = _pg_count(target, table)
        if n:
            full.append(f"{n} in {table}")
    if full:
        raise StateError(f"{target.where}: the database is not empty (rows: "
                         + ", ".join(full) + "); copy only into a new, empty database "
                         "(nothing was changed)")


def _copy_table(source: sqlite3.Connection, cursor: psycopg.Cursor[Any], table: str,
                columns: list[str]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    rows = source.cursor()
    rows.row_factory = None
    rows.execute(f'SELECT {names} FROM "{table}"')  # noqa: S608 (names from the schema)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    with cursor.copy(statement) as copy:
        while chunk := rows.fetchmany(5000):
            for row in chunk:
                copy.write_row(row)


def _move_sequences(target: db.PgConnection) -> None:
    """Each identity's next value is past the largest id copied (ids are never reused)."""
    for table, column in target.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES' "
            "ORDER BY table_name").fetchall():
        target.raw.execute(sql.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, %s), "
            "coalesce((SELECT max({c}) FROM {t}), 0) + 1, false)").format(
                c=sql.Identifier(column), t=sql.Identifier(table)), (table, column))


def _count(source: sqlite3.Connection, table: str) -> int:
    return int(source.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608


def _pg_count(target: db.PgConnection, table: str) -> int:
    row = target.raw.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])
