"""Mailchimp's audience export, as a CSV or as the zip Mailchimp sends: part of the import.

In: the decoded text of one export CSV, or the zip's bytes. Out: the ``Table`` the common
reader (csvfiles.read_table) validates, and so the same ``MemberRow`` values as a plain CSV.

Where the columns come from: "Export audience" (Audience > All contacts > Export audience)
sends ``members_export_<id>.zip`` holding one CSV per status, named
``subscribed_members_export_<id>.csv``, ``unsubscribed_members_export_<id>.csv``,
``cleaned_members_export_<id>.csv`` (and ``nonsubscribed_members_export_<id>.csv``: contacts
who never subscribed, left out here). Each starts with the audience's fields (the defaults:
Email Address, First Name, Last Name, Address, Phone Number, Birthday), then Mailchimp's own:

    MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,
    DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS

The unsubscribed file has UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,
UNSUB_REASON_OTHER where the subscribed one has LAST_CHANGED; the cleaned file (addresses
Mailchimp stopped sending to after hard bounces) has CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,
CLEAN_CAMPAIGN_ID. Times are written ``2016-04-18 13:51:14`` (UTC).

Mapped: Email Address; First Name + Last Name -> name (or a single Name field); the
confirm time (double opt-in), else the opt-in time -> the consent date. The status comes
from the file: unsubscribed -> unsubscribed, cleaned -> bounced. Every other column is
dropped unless the network declares it (an "Organisation" field is the organisation).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator

import msgspec

from newsletter.errors import InputError, Problem, Severity
from newsletter.members import csvfiles as cf
from newsletter.members.formats import zips
from newsletter.model import Location

# Columns only Mailchimp writes: one of them beside "Email Address" says the file is its.
SYSTEM_COLUMNS = frozenset({"member_rating", "optin_time", "optin_ip", "confirm_time",
                            "confirm_ip", "leid", "euid", "last_changed", "unsub_time",
                            "clean_time"})
_ENTRY = re.compile(r"(subscribed|unsubscribed|cleaned|nonsubscribed)_(?:members_)?export_"
                    r"[A-Za-z0-9]+\.csv")
_KIND_STATUS = {"subscribed": cf.RowStatus.SUBSCRIBED,
                "unsubscribed": cf.RowStatus.UNSUBSCRIBED,
                "cleaned": cf.RowStatus.BOUNCED}
ZIP_HINT = ("import the zip Mailchimp's 'Export audience' sends, unchanged: it holds "
            "subscribed_members_export_<id>.csv, unsubscribed_... and cleaned_...")
_TIME_HINT = "expected a time like 2016-04-18 13:51:14, as Mailchimp writes them"


def is_mailchimp(names: Iterable[str]) -> bool:
    lower = {name.strip().lower() for name in names}
    return "email address" in lower and bool(lower & SYSTEM_COLUMNS)


def table(header: list[str], records: Iterator[tuple[int, list[str]]], path: str,
          status: cf.RowStatus = cf.RowStatus.SUBSCRIBED) -> cf.Table:
    """One export CSV as the common reader takes it. ``status``: the file's, from its name
    in the zip (the columns say it too: the furthest from subscribed is taken)."""
    names = [name.strip() for name in header]
    cf.duplicate_columns(names, path)
    lower = [name.lower() for name in names]
    if "email address" not in lower:
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        raise InputError([Problem(cf.CsvLine(path, 1), "", "no 'Email Address' column "
                                  f"(found {found})",
                                  hint="export the audience from Mailchimp (Audience > "
                                       "Export audience), or give --format csv for a file "
                                       "with an 'email' column")])
    if "unsub_time" in lower and status is cf.RowStatus.SUBSCRIBED:
        status = cf.RowStatus.UNSUBSCRIBED
    if "clean_time" in lower and status is not cf.RowStatus.SUPPRESSED:
        status = cf.RowStatus.BOUNCED

    def column(name: str) -> int | None:
        return lower.index(name) if name in lower else None

    email = lower.index("email address")
    first, last = column("first name"), column("last name")
    whole = column("name") if first is None and last is None else None
    times = [i for i in (column("confirm_time"), column("optin_time")) if i is not None]
    used = {i for i in (email, first, last, whole, *times) if i is not None}
    others: list[int] = []
    out = [cf.EMAIL, cf.NAME, cf.CONSENT_DATE]
    labels = {cf.EMAIL: names[email],
              cf.NAME: " + ".join(names[i] for i in (first, last, whole) if i is not None)}
    if times:
        labels[cf.CONSENT_DATE] = names[times[0]]
    for number, name in enumerate(names):
        if number in used:
            continue
        key = cf.column_key(name)
        if key == cf.ORGANISATION:
            out.append(cf.ORGANISATION)
            labels[cf.ORGANISATION] = name
        else:
            out.append(name)
        others.append(number)

    def rows() -> Iterator[cf.Record]:
        for line, cells, problems in cf.aligned(records, len(names), path):
            if cells is None:
                yield line, None, problems
                continue
            name = " ".join(part for part in (
                cells[i].strip() for i in (first, last, whole) if i is not None) if part)
            date = ""
            for i in times:
                if value := cells[i].strip():
                    found = cf.iso_date_part(value)
                    why = _TIME_HINT
                    if found is not None:
                        try:
                            dt.date.fromisoformat(found)
                        except ValueError as e:
                            found, why = None, str(e)
                    if found is None:
                        problems.append(Problem(cf.CsvLine(path, line), names[i],
                                                f"{value!r} is not a date and time", why))
                    date = date or found or ""
            yield line, [cells[email], name, date, *(cells[i] for i in others)], problems

    # A second name or address field, or Mailchimp's own STATUS field: never stored.
    unstored = frozenset(n for n in out if cf.column_key(n) in cf.RESERVED
                         and n not in cf.RESERVED)
    return cf.Table(path, out, rows(), labels=labels, status=status, unstored=unstored)


def read(text: str, path: str, *, consent: str | None, columns: cf.Columns,
         status: cf.RowStatus = cf.RowStatus.SUBSCRIBED, empty_ok: bool = False
         ) -> cf.CsvImport:
    """One Mailchimp export CSV, decoded."""
    header, records = cf.header_and_records(text, path)
    if header is None:
        raise InputError([Problem(Location(path), "", "empty file (expected Mailchimp's "
                                  "header line, then one member per line)")])
    found = table(header, records, path, status)
    if empty_ok:
        found.empty = None
    return cf.read_table(found, consent=consent, columns=columns)


def read_zip(data: bytes, path: str, *, consent: str | None, columns: cf.Columns
             ) -> cf.CsvImport:
    """The zip of an audience export: its subscribed, unsubscribed and cleaned members
    together, as one import (a person in two of its files keeps the status furthest from
    subscribed)."""
    files = zips.entries(data, path, limit=cf.MAX_FILE_BYTES,
                         expected=lambda name: _ENTRY.fullmatch(name) is not None,
                         hint=ZIP_HINT)
    kinds: dict[str, str] = {}
    for name, _ in files:
        kind = _ENTRY.fullmatch(name).group(1)  # type: ignore[union-attr]
        if kind in kinds:
            raise InputError([Problem(Location(path), "", f"two {kind} exports in one zip "
                                      f"({kinds[kind]}, {name})", ZIP_HINT)])
        kinds[kind] = name
    notes = [Problem(Location(f"{path}/{name}"), "", "left out: contacts who never "
                     "subscribed", severity=Severity.WARNING)
             for name, _ in files if name.startswith("nonsubscribed")]
    order = {"subscribed": 0, "unsubscribed": 1, "cleaned": 2}
    wanted = sorted(((order[kind], name) for kind, name in kinds.items() if kind in order))
    if not wanted:
        raise InputError([Problem(Location(path), "", "no subscribed, unsubscribed or cleaned "
                                  "export in the zip", ZIP_HINT)])
    content = dict(files)
    parts: list[tuple[cf.CsvImport, int]] = []
    problems: list[Problem] = []
    for _, name in wanted:
        shown = f"{path}/{name}"
        try:
            text = cf.decode(content[name], shown)
            kind = _ENTRY.fullmatch(name).group(1)  # type: ignore[union-attr]
            parts.append((read(text, shown, consent=consent, columns=columns,
                               status=_KIND_STATUS[kind], empty_ok=True),
                          text.count("\n") + 1))
        except InputError as e:  # every file's problems at once
            problems.extend(e.problems)
    if problems:
        raise InputError(problems)
    return combine(path, parts, notes)


def combine(path: str, parts: list[tuple[cf.CsvImport, int]], notes: list[Problem]
            ) -> cf.CsvImport:
    """Several files' reads as one: lines count on from file to file (CsvImport.where),
    duplicates across files merged as within one."""
    rows: list[cf.MemberRow] = []
    first_row: dict[str, int] = {}
    problems: list[Problem] = []
    duplicates: list[Problem] = []
    dropped: list[str] = []
    offsets: list[tuple[int, str]] = []
    offset = 0
    for part, lines in parts:
        offsets.append((offset, part.path))
        for row in part.rows:
            moved = msgspec.structs.replace(row, line=row.line + offset)
            seen = first_row.get(row.email)
            if seen is not None:
                earlier = rows[seen].line
                first = next(f"{name}:{earlier - start}" for start, name in reversed(offsets)
                             if earlier > start)
                duplicates.append(cf.merge_duplicate(
                    rows, seen, moved, cf.CsvLine(part.path, row.line), row.email, first,
                    key="Email Address"))
                continue
            first_row[row.email] = len(rows)
            rows.append(moved)
        problems.extend(part.problems)
        duplicates.extend(part.duplicates)
        dropped.extend(part.dropped)
        notes.extend(part.notes)
        offset += lines
    if not rows and not problems:
        raise InputError([Problem(Location(path), "", "no members: the zip's exports have "
                                  "header lines but no rows")])
    return cf.CsvImport(path, tuple(rows), tuple(problems), tuple(duplicates),
                        dropped=tuple(dict.fromkeys(dropped)), notes=tuple(notes),
                        parts=tuple(offsets))
