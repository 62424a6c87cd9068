"""Mailman 3's members, as ``mailman members`` prints them or as a CSV: part of the import.

In: decoded text. Out: the ``Table`` the common reader (csvfiles.read_table) validates, so
the same ``MemberRow`` values as a plain CSV.

Where the formats come from:

- ``mailman members LIST [-o FILE]`` (mailman/commands/cli_members.py) prints one member a
  line, ``formataddr((display_name, email))``: ``Anne Person <anne@example.com>``, a bare
  ``anne@example.com`` without a name, the name quoted when it holds a comma
  (``"Person, Anne" <anne@example.com>``) and RFC 2047-encoded when it is not ASCII
  (``=?utf-8?q?Zo=C3=AB_Hall?= <zoe@example.com>``). Postorius's "download members" file is
  the same without names: one address a line. ``#`` lines and blank lines are skipped, as
  ``mailman members --add`` skips them. The text says nothing about delivery: export with
  ``--nomail enabled`` to leave out members whose delivery is off.
- The CSV is the REST API's member entries (``GET /3.1/lists/LIST/roster/member``,
  documented in mailman/rest/docs/membership.rst) as columns: address, bounce_score,
  delivery_mode, delivery_status, display_name, email, list_id, member_id,
  moderation_action, role, subscription_mode, user, ...

Mapped: email; display_name -> name; delivery_status (enabled -> subscribed; by_user,
by_moderator, unknown -> unsubscribed; by_bounces -> bounced). Rows whose role is not
``member`` (owners, moderators, nonmembers) are left out with a note. Every other column
is dropped unless the network declares it.
"""

from __future__ import annotations

import email.errors
import email.header
import re
from collections.abc import Iterable, Iterator

from newsletter.errors import InputError, Problem, Severity
from newsletter.members import csvfiles as cf
from newsletter.model import Location

STATUSES = {"enabled": cf.RowStatus.SUBSCRIBED, "by_user": cf.RowStatus.UNSUBSCRIBED,
            "by_moderator": cf.RowStatus.UNSUBSCRIBED, "unknown": cf.RowStatus.UNSUBSCRIBED,
            "by_bounces": cf.RowStatus.BOUNCED}
# "Name <address>", '"Last, First" <address>' or a bare address, as formataddr writes them.
_NAMED = re.compile(r'\s*(?P<name>"(?:[^"\\]|\\.)*"|[^"<>]*?)\s*<(?P<address>[^<>\s]+)>\s*')
_BARE = re.compile(r"\s*(?P<address>[^\s<>\",;]+@[^\s<>\",;]+)\s*")
_NO_MEMBERS = re.compile(r"\S+ has no members\s*")
_LINE_HINT = "expected 'Name <address>' or 'address', as `mailman members` prints them"


def is_mailman_csv(names: Iterable[str]) -> bool:
    lower = {n.strip().lower() for n in names}
    return {"email", "display_name"} <= lower


def first_line(text: str) -> str | None:
    """The first line that is neither blank nor a ``#`` comment."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return None


def is_member_line(line: str) -> bool:
    """Does the line read like ``mailman members`` output (and not a CSV header)?"""
    return bool(_NAMED.fullmatch(line) or _BARE.fullmatch(line) or _NO_MEMBERS.fullmatch(line))


def address_of(line: str) -> str | None:
    """The address of one ``mailman members`` line (None: not one), its name unread."""
    found = _BARE.fullmatch(line) or _NAMED.fullmatch(line)
    return None if found is None else found["address"]


def parse_line(line: str) -> tuple[str, str] | None:
    """(name, address) of one ``mailman members`` line; None when it is not one. The name is
    unquoted and decoded from RFC 2047; ValueError when it cannot be decoded."""
    if found := _BARE.fullmatch(line):
        return "", found["address"]
    found = _NAMED.fullmatch(line)
    if found is None:
        return None
    name = found["name"]
    if name.startswith('"'):
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if "=?" in name:
        try:
            name = str(email.header.make_header(email.header.decode_header(name)))
        except (email.errors.HeaderParseError, LookupError, UnicodeError) as e:
            raise ValueError(f"{name!r} cannot be decoded ({e})") from e
    return name.strip(), found["address"]


def read_text(text: str, path: str, *, consent: str | None, columns: cf.Columns
              ) -> cf.CsvImport:
    """``mailman members`` output, decoded."""
    def rows() -> Iterator[cf.Record]:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#") \
                    or _NO_MEMBERS.fullmatch(line):
                continue
            where = cf.CsvLine(path, number)
            try:
                parsed = parse_line(line)
            except ValueError as e:
                yield number, None, [Problem(where, "name", str(e))]
                continue
            if parsed is None:
                yield number, None, [Problem(where, "", f"{line.strip()[:100]!r} is not a "
                                             "member line", _LINE_HINT)]
                continue
            yield number, [parsed[1], parsed[0]], []

    found = cf.Table(path, [cf.EMAIL, cf.NAME], rows(),
                     empty="no members: the file lists no addresses")
    return cf.read_table(found, consent=consent, columns=columns)


def read_csv(text: str, path: str, *, consent: str | None, columns: cf.Columns
             ) -> cf.CsvImport:
    """Mailman's member entries as CSV, decoded."""
    header, records = cf.header_and_records(text, path)
    if header is None:
        raise InputError([Problem(Location(path), "", "empty file (expected a header line "
                                  "with email and display_name columns)")])
    names = [name.strip().lower() for name in header]
    cf.duplicate_columns(names, path)
    if "email" not in names:
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        raise InputError([Problem(cf.CsvLine(path, 1), "", f"no 'email' column (found "
                                  f"{found})", "Mailman's member entries have email and "
                                  "display_name")])
    mapped = {"email": cf.EMAIL, "display_name": cf.NAME, "delivery_status": cf.STATUS}
    labels = {cf.NAME: "display_name", cf.STATUS: "delivery_status"}
    out = []
    for name in names:
        if name in mapped:
            out.append(mapped[name])
        elif name in cf.RESERVED or name == "role":  # Mailman's own, not a profile column
            out.append(f"mailman {name}")
            labels[f"mailman {name}"] = name
        else:
            out.append(name)
    role = names.index("role") if "role" in names else None
    table = cf.Table(path, out, [], labels=labels, statuses=STATUSES,
                     unstored=frozenset(f"mailman {n}" for n in (*cf.RESERVED, "role")))

    def rows() -> Iterator[cf.Record]:
        for line, cells, problems in cf.aligned(records, len(names), path):
            if cells is not None and role is not None \
                    and (what := cells[role].strip().lower()) not in ("", "member"):
                table.notes.append(Problem(cf.CsvLine(path, line), "role", f"{what!r}: left "
                                           "out (only members receive the newsletter)",
                                           severity=Severity.WARNING))
                continue
            yield line, cells, problems

    table.records = rows()
    return cf.read_table(table, consent=consent, columns=columns)
