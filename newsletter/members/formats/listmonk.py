"""listmonk's subscriber export: part of the import stage.

In: the decoded text of the CSV listmonk's Subscribers page exports. Out: the ``Table`` the
common reader (csvfiles.read_table) validates, so the same ``MemberRow`` values as a plain
CSV.

Where the columns come from: listmonk's export handler (cmd/subscribers.go,
``handleExportSubscribers``) writes the header

    uuid,email,name,attributes,status,created_at,updated_at

with ``attributes`` the subscriber's attributes as a JSON object (``{"city": "Leeds"}``),
``status`` one of enabled, disabled, blocklisted, and the times as Go prints them
(``2024-01-15 10:20:30.123456 +0000 UTC``).

Mapped: email; name; status (enabled -> subscribed, disabled -> unsubscribed, blocklisted
-> suppressed); created_at -> the consent date; each attribute the network declares
(``organisation`` is the organisation) -> that column. uuid, updated_at and every other
attribute are dropped (attributes are named ``attributes.KEY`` in the report). A mangled
attributes cell is a problem on its line: the row is not imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from newsletter.errors import InputError, Problem
from newsletter.members import csvfiles as cf
from newsletter.model import Location

HEADER = ("uuid", "email", "name", "attributes", "status", "created_at", "updated_at")
STATUSES = {"enabled": cf.RowStatus.SUBSCRIBED, "disabled": cf.RowStatus.UNSUBSCRIBED,
            "blocklisted": cf.RowStatus.SUPPRESSED}
_ATTRIBUTES_HINT = 'listmonk writes attributes as a JSON object, e.g. {"city": "Leeds"}'
MAX_DROPPED = 200  # distinct attribute names reported: a hostile file could hold millions


def is_listmonk(names: Iterable[str]) -> bool:
    return {"uuid", "email", "attributes", "status"} <= {n.strip().lower() for n in names}


def read(text: str, path: str, *, consent: str | None, columns: cf.Columns) -> cf.CsvImport:
    header, records = cf.header_and_records(text, path)
    if header is None:
        raise InputError([Problem(Location(path), "", "empty file (expected listmonk's "
                                  "header line: " + ",".join(HEADER) + ")")])
    return cf.read_table(table(header, records, path, columns), consent=consent,
                         columns=columns)


def table(header: list[str], records: Iterator[tuple[int, list[str]]], path: str,
          columns: cf.Columns) -> cf.Table:
    names = [name.strip().lower() for name in header]
    cf.duplicate_columns(names, path)
    missing = [name for name in ("email", "status") if name not in names]
    if missing:
        raise InputError([Problem(cf.CsvLine(path, 1), "", f"no {missing[0]!r} column "
                                  f"(listmonk's export has {','.join(HEADER)})")])
    email, status = names.index("email"), names.index("status")
    name = names.index("name") if "name" in names else None
    created = names.index("created_at") if "created_at" in names else None
    attributes = names.index("attributes") if "attributes" in names else None
    # Declared attributes become columns; the name comes from its own column.
    wanted = [] if columns is None else [
        c for c in sorted(columns) if c not in names
        and c not in (cf.NAME, cf.EMAIL, cf.STATUS, *cf.CONSENT_COLUMNS)]
    used = {email, status, name, created, attributes}
    others = [i for i in range(len(names)) if i not in used]
    out = [cf.EMAIL, cf.NAME, cf.STATUS, cf.CONSENT_DATE, *wanted,
           *(names[i] for i in others)]
    found = cf.Table(path, out, [], labels={cf.CONSENT_DATE: "created_at"},
                     statuses=STATUSES)
    seen: set[str] = set()

    def attribute_values(line: int, cell: str, problems: list[Problem]) -> list[str]:
        values = [""] * len(wanted)
        if not cell.strip():
            return values
        where = cf.CsvLine(path, line)
        try:
            parsed: Any = json.loads(cell)
        except ValueError as e:
            problems.append(Problem(where, "attributes", f"not valid JSON ({_why(e)})",
                                    _ATTRIBUTES_HINT))
            return values
        if not isinstance(parsed, dict):
            problems.append(Problem(where, "attributes", "expected a JSON object, found "
                                    f"{type(parsed).__name__}", _ATTRIBUTES_HINT))
            return values
        for key, value in parsed.items():
            normal = cf.column_key(key)
            if normal in wanted:
                values[wanted.index(normal)] = value if isinstance(value, str) else \
                    "" if value is None else json.dumps(value, ensure_ascii=False)
            elif key not in seen and len(seen) < MAX_DROPPED:
                seen.add(key)
                found.dropped.append(f"attributes.{_shown(key)}")
        return values

    def rows() -> Iterator[cf.Record]:
        for line, cells, problems in cf.aligned(records, len(names), path):
            if cells is None:
                yield line, None, problems
                continue
            date = ""
            if created is not None and (value := cells[created].strip()):
                date = cf.iso_date_part(value) or ""
                if not date:
                    problems.append(Problem(cf.CsvLine(path, line), "created_at",
                                            f"{value!r} is not a date and time",
                                            "expected a time like 2024-01-15 10:20:30 "
                                            "+0000 UTC, as listmonk writes them"))
            extra = attribute_values(line, cells[attributes], problems) \
                if attributes is not None else [""] * len(wanted)
            yield line, [cells[email], "" if name is None else cells[name], cells[status],
                         date, *extra, *(cells[i] for i in others)], problems

    found.records = rows()
    return found


def _why(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at character {e.pos + 1}"
    return str(e)


def _shown(key: str) -> str:
    """An attribute's name as a report may show it (it is data from the file)."""
    return key if key.isprintable() and len(key) <= 64 else repr(key[:64])
