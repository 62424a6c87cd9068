"""Member CSV files in and out: decoding, parsing, address validation and normalisation.

Import stage: ``subscribers/*.csv`` bytes -> ``CsvImport`` (validated ``MemberRow`` values,
every bad row as a ``Problem`` with its line, duplicates merged). The rows of every format
(formats/: Mailchimp, listmonk, Mailman) are validated here too, by ``read_table``: each
format only says which of its columns mean what. Each row carries a ``RowStatus``; a person
named twice keeps the status furthest from subscribed. Only the declared member columns
are kept (``columns``); the others are named in ``CsvImport.dropped``. Nothing here touches
the database; store.py stores the rows. Export stage: rows -> CSV text that is safe to open in
a spreadsheet (formula-looking cells get a leading ``'``, which the import removes again,
so export -> import -> export gives the same bytes).

Addresses: validated by email-validator (no DNS), domain IDNA-encoded and lower-cased,
local part lower-cased (addresses differing only in case are one member), non-ASCII local
parts refused (SMTPUTF8 is not supported). Names and organisations may reach mail headers,
so control characters and ``=?`` are refused, and so are the invisible bidirectional
controls (U+202A-U+202E, U+2066-U+2069) that make text display as something else.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import functools
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import msgspec

from newsletter.errors import AddressError, InputError, Problem, Severity
from newsletter.input.files import read_regular
from newsletter.members import private
from newsletter.model import Location
from newsletter.text.addresses import checked_address

EMAIL = "email"
NAME = "name"
ORGANISATION = "organisation"
CONSENT_SOURCE = "consent_source"
CONSENT_DATE = "consent_date"
CONSENT_BASIS = "consent_basis"
STATUS = "status"
STANDARD_COLUMNS = (EMAIL, NAME, ORGANISATION)
CONSENT_COLUMNS = (CONSENT_SOURCE, CONSENT_DATE, CONSENT_BASIS)
EXPORT_COLUMNS = (*STANDARD_COLUMNS, *CONSENT_COLUMNS)
# subscribers export --all adds these after the consent columns
STATUS_COLUMNS = ("status", "status_reason", "status_changed")
RESERVED = frozenset((*EXPORT_COLUMNS, STATUS))  # never another column's name

# UK GDPR Art. 6(1) lawful bases, as people write them.
BASES = ("consent", "contract", "legal obligation", "vital interests", "public task",
         "legitimate interests")
DEFAULT_BASIS = "consent"
MAX_TEXT = 200  # name, organisation, consent fields
MAX_EXTRA = 1000  # any other column
MAX_FILE_BYTES = 50 * 1_048_576  # some 700,000 members; refused before a byte is read

# A spreadsheet treats a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Bidirectional embeddings, overrides and isolates: invisible, they make "Amira" + U+202E +
# "nosretaP" display as something it is not, in a mail client, a terminal or a report.
_BIDI = "\u202a-\u202e\u2066-\u2069"
_BIDI_CONTROL = re.compile(f"[{_BIDI}]")
_HEADER_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]|=\\?")
_EXTRA_UNSAFE = re.compile(r"\x00")
_NOT_KEY = re.compile(r"[^a-z0-9]+")

# The member columns a network declares (members.columns in newsletter.yaml); None: all.
Columns = frozenset[str] | None


# --------------------------------------------------------------------------- values


class CsvLine(Location, frozen=True):
    """A line of a CSV file (no column: a row is the unit people fix)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class RowStatus(enum.StrEnum):
    """What a member file says about a person. An import never makes anyone more sendable
    than the file says: only SUBSCRIBED rows are ever subscribed."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"  # left this list
    BOUNCED = "bounced"  # the address does not work (Mailchimp: cleaned): every list
    SUPPRESSED = "suppressed"  # blocklisted or complained: every list, only the hash is kept


# How far from subscribed: a person named twice keeps the furthest.
_RANK = {RowStatus.SUBSCRIBED: 0, RowStatus.UNSUBSCRIBED: 1, RowStatus.BOUNCED: 2,
         RowStatus.SUPPRESSED: 3}

# A plain CSV's status column, in the words of the tools people export from.
CSV_STATUSES: dict[str, RowStatus] = {
    "subscribed": RowStatus.SUBSCRIBED, "unsubscribed": RowStatus.UNSUBSCRIBED,
    "bounced": RowStatus.BOUNCED, "cleaned": RowStatus.BOUNCED,
    "blocklisted": RowStatus.SUPPRESSED, "complained": RowStatus.SUPPRESSED,
    "suppressed": RowStatus.SUPPRESSED,
}


class MemberRow(msgspec.Struct, frozen=True):
    line: int  # the row's line (in a zip: see CsvImport.where)
    email: str  # normalised
    name: str | None
    organisation: str | None
    extra: str  # JSON object of the other columns, in file order
    consent_source: str
    consent_date: str | None  # YYYY-MM-DD
    consent_basis: str
    status: RowStatus = RowStatus.SUBSCRIBED


# (line, cells in the header's order or None when unreadable, problems a format found)
Record = tuple[int, list[str] | None, list[Problem]]


class CsvImport(msgspec.Struct, frozen=True):
    path: str
    rows: tuple[MemberRow, ...]
    problems: tuple[Problem, ...]  # rows that cannot be imported
    duplicates: tuple[Problem, ...]  # rows merged into an earlier row (warnings)
    dropped: tuple[str, ...] = ()  # columns not stored (not declared), as the file names them
    notes: tuple[Problem, ...] = ()  # rows left out on purpose (warnings)
    # Several files read as one (a zip): (first line, file) each. A row's line counts on
    # from the previous file's last line; where() turns it back into file:line.
    parts: tuple[tuple[int, str], ...] = ()

    def where(self, line: int) -> str:
        """``file:line`` of a row, from its line (in a zip, its file's own line)."""
        for offset, part in reversed(self.parts):
            if line > offset:
                return f"{part}:{line - offset}"
        return f"{self.path}:{line}"

    def require_valid(self) -> None:
        """InputError listing every bad row, unless there are none."""
        if self.problems:
            bad = len({p.where for p in self.problems})
            raise InputError([*self.problems, Problem(
                Location(self.path), "", f"{bad} row(s) cannot be imported; nothing was "
                "imported", hint="fix them, or use --skip-invalid to import the other rows")])


class ExportRow(msgspec.Struct, frozen=True):
    email: str
    name: str | None
    organisation: str | None
    extra: str  # JSON object
    consent_source: str | None
    consent_date: str | None
    consent_basis: str | None
    # subscribers export --all: the member's status, why, and when it last changed
    status: str | None = None
    status_reason: str | None = None
    status_changed: str | None = None


# --------------------------------------------------------------------------- addresses


def normalise_address(text: str) -> str:
    """``Jane.Smith@Exämple.ORG`` -> ``jane.smith@xn--exmple-cua.org``, or AddressError."""
    text = text.strip()
    if not text:
        raise AddressError("empty (every member needs an address)")
    if any(ord(c) > 127 for c in text.rpartition("@")[0]):
        raise AddressError(f"{text!r} is not a valid address (non-ASCII characters before "
                           "the @-sign need SMTPUTF8, which is not supported)")
    try:
        address = checked_address(text)
    except AddressError as e:
        raise AddressError(f"{text!r} is not a valid address ({e})") from e
    local, _, domain = address.rpartition("@")
    return f"{local.lower()}@{domain}"


def text_problem(value: str, limit: int = MAX_TEXT) -> str | None:
    """Why a name or organisation cannot be used (it may end up in a mail header)."""
    found = _HEADER_UNSAFE.search(value)
    if found and _BIDI_CONTROL.match(found.group()):
        char = found.group()
        return (f"{value!r} contains U+{ord(char):04X} {unicodedata.name(char)}, an "
                "invisible bidirectional control (not allowed: it makes text display as "
                "something else; delete it, it is often pasted in unseen)")
    if found:
        what = "'=?'" if found.group() == "=?" else f"control character {found.group()!r}"
        return f"{value!r} contains {what} (not allowed: it could reach a mail header)"
    if len(value) > limit:
        return f"too long ({len(value)} characters; at most {limit})"
    return None


# --------------------------------------------------------------------------- spreadsheet safety


def neutralise(cell: str) -> str:
    """Make a cell inert in a spreadsheet: a leading ``'`` before formula characters.

    A cell that already starts with ``'`` gets one more, so ``unneutralise`` can always
    tell an added quote from a typed one and the round trip is exact.
    """
    if cell.startswith(_FORMULA_START) or cell.startswith("'"):
        return "'" + cell
    return cell


def unneutralise(cell: str) -> str:
    """Undo exactly what ``neutralise`` added (and nothing else)."""
    if len(cell) >= 2 and cell[0] == "'" and (cell[1] == "'" or cell[1] in _FORMULA_START):
        return cell[1:]
    return cell


# --------------------------------------------------------------------------- reading


def decode(data: bytes, path: str) -> str:
    """UTF-8 with or without a BOM; anything else is refused, naming the line."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError([Problem(CsvLine(path, 1), "", "the file is UTF-16, not UTF-8",
                                  hint="save it as 'CSV UTF-8' from your spreadsheet")])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start:e.start + 1].hex()
        raise InputError([Problem(
            CsvLine(path, line), "", f"not UTF-8: byte 0x{bad} cannot be decoded",
            hint="save the file as 'CSV UTF-8' from your spreadsheet")]) from e


def _delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


def _records(text: str, path: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) for each record, blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text), strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError([Problem(
                CsvLine(path, start), "", f"broken quoting ({e})",
                hint='a value that contains the delimiter or a quote must be wrapped in '
                     'quotes, and quotes inside it doubled: "Smith ""Jo"" Ltd"')]) from e
        end = reader.line_num
        if any(cell.strip() for cell in cells):
            yield start, [unneutralise(cell) if cell[:1] == "'" else cell for cell in cells]


def _header(cells: list[str], path: str) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    problems = []
    where = CsvLine(path, 1)
    for number, name in enumerate(names, start=1):
        if not name:
            problems.append(Problem(where, "", f"column {number} has no name in the header"))
        elif names.index(name) != number - 1:
            problems.append(Problem(where, "", f"column {name!r} appears twice in the header"))
    if EMAIL not in names:
        found = ", ".join(repr(n) for n in names if n) or "nothing"
        problems.append(Problem(where, "", f"no 'email' column (found {found})",
                                hint="the first line must name the columns, one of them "
                                     "'email'"))
    if problems:
        raise InputError(problems)
    return names


_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# A date, then perhaps a time (seconds, fractions) and a zone: "2016-04-18 13:51:14",
# "2024-01-15 10:20:30.123456 +0000 UTC".
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})"
                        r"(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[+-]?[\w:]+){0,2})?$")
_UK_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")


@functools.lru_cache(maxsize=4096)
def _consent_date(value: str) -> str:
    """YYYY-MM-DD, or DD/MM/YYYY as UK spreadsheets write it, as YYYY-MM-DD."""
    iso, uk = _ISO_DATE.fullmatch(value), _UK_DATE.fullmatch(value)
    try:
        if iso:
            return dt.date(int(iso[1]), int(iso[2]), int(iso[3])).isoformat()
        if uk:
            return dt.date(int(uk[3]), int(uk[2]), int(uk[1])).isoformat()
    except ValueError as e:
        raise ValueError(f"{value!r} is not a date ({e})") from e
    raise ValueError(f"{value!r} is not a date (expected YYYY-MM-DD or DD/MM/YYYY)")


def _basis(value: str) -> str:
    basis = " ".join(value.lower().split())
    if basis == "legitimate interest":
        basis = "legitimate interests"
    if basis not in BASES:
        raise ValueError(f"{value!r} is not a lawful basis (expected one of: "
                         f"{', '.join(BASES)})")
    return basis


def read_csv(path: Path, *, consent: str | None, shown_as: str | None = None,
             columns: Columns = None) -> CsvImport:
    """Parse and validate a member CSV; whole-file problems raise InputError at once."""
    shown = shown_as or str(path)
    return parse_csv(read_file(path, shown), shown, consent=consent, columns=columns)


def read_file(path: Path, shown: str) -> bytes:
    """A member file's bytes, held to the rule every input file is: a regular file, of a
    bounded size (InputError otherwise, naming the file as ``shown``)."""
    try:
        return read_regular(path, limit=MAX_FILE_BYTES, shown_as=shown,
                            too_big_hint="split it into several files and import each",
                            irregular_hint="save the members as a CSV file and give its name")
    except OSError as e:
        raise InputError([Problem(Location(shown), "", f"cannot read the file ({e.strerror})")]
                         ) from e


def parse_csv(data: bytes, path: str, *, consent: str | None,
              columns: Columns = None) -> CsvImport:
    """The work of ``read_csv`` on bytes already read.

    ``columns``: the member columns the network declares (only those are stored, beside the
    address and the consent evidence); None keeps every column.
    """
    consent = checked_consent(consent)
    text = decode(data, path)
    records = _records(text, path)
    first = next(records, None)
    if first is None:
        raise InputError([Problem(Location(path), "", "empty file (expected a header line "
                                  "with an 'email' column, then one member per line)")])
    names = _header(first[1], path)
    require_consent(CONSENT_SOURCE in names, consent, path)
    return read_table(Table(path, names, aligned(records, len(names), path),
                            statuses=CSV_STATUSES), consent=consent, columns=columns)


def checked_consent(consent: str | None) -> str | None:
    """The --consent text, stripped; InputError when it could reach a header."""
    if consent is not None and (problem := text_problem(consent.strip())):
        raise InputError([Problem(Location("--consent"), "", problem)])
    return consent.strip() if consent else None


def require_consent(has_column: bool, consent: str | None, path: str) -> None:
    """InputError when neither the file nor --consent says where people agreed."""
    if not has_column and not consent:
        raise InputError([Problem(
            Location(path), "", "no consent evidence: the file has no 'consent_source' column "
            "and no --consent was given",
            hint="say where these people agreed to receive the newsletter, e.g. --consent "
                 "'signed up at the 2016 conference', or add consent_source, consent_date "
                 "and consent_basis columns")])


def header_and_records(text: str, path: str
                       ) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """The first record's cells (None: an empty file) and the (line, cells) records after
    it: for a format that reads the header itself."""
    records = _records(text, path)
    first = next(records, None)
    return (None if first is None else first[1]), records


def duplicate_columns(names: Sequence[str], path: str) -> None:
    """InputError naming every column the header names twice (or not at all)."""
    problems = []
    where = CsvLine(path, 1)
    lower = [name.strip().lower() for name in names]
    for number, name in enumerate(lower, start=1):
        if not name:
            problems.append(Problem(where, "", f"column {number} has no name in the header"))
        elif lower.index(name) != number - 1:
            problems.append(Problem(where, "", f"column {names[number - 1].strip()!r} appears "
                                    "twice in the header"))
    if problems:
        raise InputError(problems)


def iso_date_part(value: str) -> str | None:
    """``2016-04-18 13:51:14`` (or with fractions and a zone) -> ``2016-04-18``; None when
    the value does not start with a date."""
    found = _DATE_TIME.match(value.strip())
    return found.group(1) if found else None


def aligned(records: Iterable[tuple[int, list[str]]], width: int | None, path: str
            ) -> Iterator[Record]:
    """Records padded to the header's width; a record wider than the header is a problem
    (its cells are None: nothing else of the row is read)."""
    for line, cells in records:
        if width is None:
            yield line, cells, []
        elif len(cells) > width:
            yield line, None, [Problem(CsvLine(path, line), "", f"{len(cells)} values but the "
                                       f"header names {width} columns",
                                       hint="quote values that contain the delimiter")]
        else:
            yield line, cells + [""] * (width - len(cells)) if len(cells) < width else cells, []


def column_key(name: str) -> str:
    """A column's name as newsletter.yaml declares it: ``Phone Number`` -> ``phone_number``."""
    return _NOT_KEY.sub("_", name.strip().lower()).strip("_")


class Table(msgspec.Struct):
    """A member file as the common reader takes it, whatever format it came in.

    ``header`` holds the reader's names (email, name, organisation, the consent columns,
    status) where a column means one of those, and the file's own names for the others;
    ``records`` yields (line, cells in header order, problems the format found), cells
    None when the record cannot be read at all.
    """

    path: str  # as messages show it
    header: list[str]
    records: Iterable[Record]
    labels: dict[str, str] = msgspec.field(default_factory=dict)  # reader's name -> file's
    statuses: Mapping[str, RowStatus] = msgspec.field(default_factory=dict)  # status words
    status: RowStatus = RowStatus.SUBSCRIBED  # the whole file's, when it has no status column
    dropped: list[str] = msgspec.field(default_factory=list)  # filled as records are read
    unstored: frozenset[str] = frozenset()  # other columns never stored, whatever is declared
    notes: list[Problem] = msgspec.field(default_factory=list)  # warnings (rows left out)
    empty: str | None = "no members: the file has a header line but no rows"  # None: allowed


def read_table(table: Table, *, consent: str | None, columns: Columns) -> CsvImport:
    """Validate every record of a table: ``MemberRow`` values, every bad row as a problem,
    duplicates merged (the row furthest from subscribed gives the status)."""
    path, names = table.path, table.header
    index = {name: number for number, name in enumerate(names)}

    def label(column: str) -> str:
        return table.labels.get(column, column)

    kept = {column: columns is None or column in columns for column in (NAME, ORGANISATION)}
    dropped = [label(column) for column in (NAME, ORGANISATION)
               if column in index and not kept[column]]
    extra_columns: list[tuple[int, str]] = []
    for number, name in enumerate(names):
        if name in STANDARD_COLUMNS or name in CONSENT_COLUMNS or name == STATUS:
            continue
        if name in table.unstored:
            dropped.append(label(name))
        elif columns is None:
            extra_columns.append((number, name))
        elif column_key(name) in columns and column_key(name) not in RESERVED:
            extra_columns.append((number, column_key(name)))
        else:
            dropped.append(label(name))
    status_column = index.get(STATUS)
    email_column = index[EMAIL]
    rows: list[MemberRow] = []
    problems: list[Problem] = []
    duplicates: list[Problem] = []
    first_row: dict[str, int] = {}
    for line, cells, found in table.records:
        where = CsvLine(path, line)
        if cells is None:
            problems.extend(found)
            continue
        row_problems: list[Problem] = []
        raw_email = cells[email_column]
        email = ""
        try:
            email = normalise_address(raw_email)
        except AddressError as e:
            row_problems.append(Problem(where, label(EMAIL), str(e)))
        status = table.status
        if status_column is not None:
            word = cells[status_column].strip()
            if (known := table.statuses.get(word.lower())) is not None:
                status = known
            else:
                row_problems.append(Problem(where, label(STATUS), status_problem(
                    word, table.statuses)))
        if status is RowStatus.SUPPRESSED:  # only the address is kept: nothing else is read
            row_problems.extend(found)
            if row_problems:
                problems.extend(row_problems)
                continue
            row = MemberRow(line=line, email=email, name=None, organisation=None, extra="{}",
                            consent_source="", consent_date=None, consent_basis=DEFAULT_BASIS,
                            status=status)
        else:
            fields = {column: cells[index[column]].strip()
                      if column in index and kept.get(column, True) else ""
                      for column in (NAME, ORGANISATION, CONSENT_SOURCE)}
            # One search for the common clean row; the separator cannot complete "=?".
            joined = " ".join(fields.values())
            if _HEADER_UNSAFE.search(joined) or len(joined) > MAX_TEXT:
                for column, value in fields.items():
                    if value and (problem := text_problem(value)):
                        row_problems.append(Problem(where, label(column), problem))
            date: str | None = None
            if CONSENT_DATE in index and (raw := cells[index[CONSENT_DATE]].strip()):
                try:
                    date = _consent_date(raw)
                except ValueError as e:
                    row_problems.append(Problem(where, label(CONSENT_DATE), str(e)))
            basis = DEFAULT_BASIS
            if CONSENT_BASIS in index and (raw := cells[index[CONSENT_BASIS]].strip()):
                try:
                    basis = _basis(raw)
                except ValueError as e:
                    row_problems.append(Problem(where, label(CONSENT_BASIS), str(e)))
            source = fields[CONSENT_SOURCE] or consent
            if not source and status is RowStatus.SUBSCRIBED:
                row_problems.append(Problem(where, label(CONSENT_SOURCE), "empty (no consent "
                                            "evidence for this member)",
                                            hint="fill it in, or give --consent TEXT for rows "
                                                 "without one"))
            extra: dict[str, str] = {}
            for number, column in extra_columns:
                value = cells[number]
                if _EXTRA_UNSAFE.search(value) or len(value) > MAX_EXTRA:
                    row_problems.append(Problem(where, label(names[number]), "contains a NUL "
                                                f"character or is longer than {MAX_EXTRA} "
                                                "characters"))
                extra[column] = value
            row_problems.extend(found)
            if row_problems:
                problems.extend(row_problems)
                continue
            row = MemberRow(
                line=line, email=email, name=fields[NAME] or None,
                organisation=fields[ORGANISATION] or None,
                extra=json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra
                else "{}",
                consent_source=source or "", consent_date=date, consent_basis=basis,
                status=status)
        if (seen := first_row.get(email)) is not None:
            duplicates.append(merge_duplicate(rows, seen, row, where, raw_email,
                                              key=label(EMAIL)))
            continue
        first_row[email] = len(rows)
        rows.append(row)
    if not rows and not problems and not duplicates and table.empty is not None:
        raise InputError([Problem(Location(path), "", table.empty)])
    dropped.extend(table.dropped)
    return CsvImport(path, tuple(rows), tuple(problems), tuple(duplicates),
                     dropped=tuple(dict.fromkeys(dropped)), notes=tuple(table.notes))


def merge_duplicate(rows: list[MemberRow], seen: int, row: MemberRow, where: Location,
                    raw_email: str, first: str | None = None, key: str = EMAIL) -> Problem:
    """Merge a row into the earlier row of the same address (rows[seen]): the first row's
    values are kept, and the status furthest from subscribed, so that naming a person twice
    can never subscribe someone who left. The warning that says so."""
    kept = rows[seen]
    said = f"line {kept.line}" if first is None else first
    merged = "merged: the first row is kept"
    if _RANK[row.status] > _RANK[kept.status]:
        rows[seen] = with_status(kept, row.status)
        merged += f", with this row's status, {row.status}"
    return Problem(where, key, f"{raw_email.strip()!r} is a duplicate of {said} ({merged})",
                   severity=Severity.WARNING)


def with_status(row: MemberRow, status: RowStatus) -> MemberRow:
    """The row with another status; a suppressed row keeps nothing but the address."""
    if status is RowStatus.SUPPRESSED:
        return MemberRow(line=row.line, email=row.email, name=None, organisation=None,
                         extra="{}", consent_source="", consent_date=None,
                         consent_basis=DEFAULT_BASIS, status=status)
    return msgspec.structs.replace(row, status=status)


def status_problem(word: str, statuses: Mapping[str, RowStatus]) -> str:
    expected = ", ".join(statuses)
    if not word:
        return f"empty (every row needs a status; expected one of: {expected})"
    return f"{word!r} is not a status this file can have (expected one of: {expected})"


# --------------------------------------------------------------------------- writing


def export_csv(rows: Iterable[ExportRow], *, with_status: bool = False) -> str:
    """CSV text (CRLF, minimal quoting, formula cells neutralised), columns in a fixed order.

    The standard and consent columns come first (then, ``with_status``, the status, its
    reason and when it changed), then every other column found in the members' stored
    extra data, sorted by name.
    """
    materialised: Sequence[ExportRow] = list(rows)
    extras = [json.loads(row.extra) for row in materialised]
    extra_columns = sorted({key for extra in extras for key in extra})
    status_columns = STATUS_COLUMNS if with_status else ()
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in (*EXPORT_COLUMNS, *status_columns,
                                             *extra_columns)])
    for row, extra in zip(materialised, extras, strict=True):
        cells = [row.email, row.name or "", row.organisation or "", row.consent_source or "",
                 row.consent_date or "", row.consent_basis or ""]
        if with_status:
            cells += [row.status or "", row.status_reason or "", row.status_changed or ""]
        cells.extend(str(extra.get(column, "")) for column in extra_columns)
        writer.writerow([neutralise(cell) for cell in cells])
    return out.getvalue()


def write_export(path: Path, text: str) -> None:
    """Write exported CSV atomically, with the BOM spreadsheets need to read it as UTF-8.

    Owner-only (0600): the file lists members' addresses."""
    partial = path.with_name(path.name + ".partial")
    try:
        private.write_new(partial, b"\xef\xbb\xbf" + text.encode("utf-8"))
        partial.replace(path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise InputError([Problem(Location(str(path)), "",
                                  f"cannot write the file ({e.strerror})")]) from e

