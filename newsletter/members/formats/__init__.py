"""Member files from the tools a network arrives from: which format a file is in, and reading it.

Import stage, before store.py: a file -> ``CsvImport``, the same validated ``MemberRow``
values whatever the format, so ``store.import_rows`` stays one path. A format is told by
the file's header (``--format`` can say it instead):

    csv         this program's columns: email, name, organisation, consent_*, status
    mailchimp   Mailchimp's audience export: one of its CSVs, or the zip of all three
    listmonk    listmonk's subscriber export (status, JSON attributes)
    mailman     Mailman 3: ``mailman members`` output, or its member entries as CSV

Each module says where its columns come from. Every format keeps only what the network
declares (``member_columns``) besides the address and the consent evidence, and reports
the columns it dropped; and none makes anyone more sendable than the file says.
"""

from __future__ import annotations

import enum
from pathlib import Path

from newsletter.errors import AddressError, InputError, Problem
from newsletter.members import csvfiles as cf
from newsletter.members.formats import listmonk, mailchimp, mailman, zips
from newsletter.model import Location

_SNIFF = 65536  # bytes read to tell the format


class Format(enum.StrEnum):
    CSV = "csv"
    MAILCHIMP = "mailchimp"
    LISTMONK = "listmonk"
    MAILMAN = "mailman"


def read_members(path: Path, *, consent: str | None, columns: cf.Columns,
                 source: Format | None = None, shown_as: str | None = None) -> cf.CsvImport:
    """Read and validate a member file of any format (``source``: None tells it by its
    header); whole-file problems raise InputError at once."""
    shown = shown_as or str(path)
    data = cf.read_file(path, shown)
    if zips.is_zip(data):
        if source not in (None, Format.MAILCHIMP):
            raise InputError([Problem(Location(shown), "", f"a zip file, not a {source} "
                                      "file", "a zip is read as Mailchimp's audience export; "
                                      "unzip it to import the CSV inside")])
        consent = cf.checked_consent(consent)
        cf.require_consent(False, consent, shown)
        return mailchimp.read_zip(data, shown, consent=consent, columns=columns)
    return parse_members(data, shown, consent=consent, columns=columns, source=source)


def parse_members(data: bytes, path: str, *, consent: str | None, columns: cf.Columns,
                  source: Format | None = None) -> cf.CsvImport:
    """The work of ``read_members`` on bytes already read (not a zip)."""
    if source is None or source is Format.CSV:
        found = detect(data, path) if source is None else Format.CSV
        if found is Format.CSV:
            return cf.parse_csv(data, path, consent=consent, columns=columns)
        source = found
    consent = cf.checked_consent(consent)
    text = cf.decode(data, path)
    line = mailman.first_line(text)
    if line is None:
        raise InputError([Problem(Location(path), "", f"empty file (expected {source}'s "
                                  "export)")])
    if source is Format.MAILMAN and mailman.is_member_line(line):
        cf.require_consent(False, consent, path)
        return mailman.read_text(text, path, consent=consent, columns=columns)
    header, _ = cf.header_and_records(text, path)
    cf.require_consent(cf.CONSENT_SOURCE in [n.strip().lower() for n in header or ()],
                       consent, path)
    if source is Format.MAILCHIMP:
        return mailchimp.read(text, path, consent=consent, columns=columns)
    if source is Format.LISTMONK:
        return listmonk.read(text, path, consent=consent, columns=columns)
    return mailman.read_csv(text, path, consent=consent, columns=columns)


def detect(data: bytes, path: str) -> Format:
    """The format a file's first line says it is in (CSV when it says nothing else)."""
    chunk = data[:_SNIFF]
    if len(data) > _SNIFF and (cut := chunk.rfind(b"\n")) > 0:
        chunk = chunk[:cut]  # whole lines only: never half a character
    try:
        text = cf.decode(chunk, path)
        line = mailman.first_line(text)
        if line is None:
            return Format.CSV
        if mailman.is_member_line(line):
            return Format.MAILMAN
        header, _ = cf.header_and_records(text, path)
    except InputError:
        return Format.CSV  # the CSV reader says what is wrong with the file
    names = header or []
    if listmonk.is_listmonk(names):
        return Format.LISTMONK
    if mailchimp.is_mailchimp(names):
        return Format.MAILCHIMP
    if mailman.is_mailman_csv(names):
        return Format.MAILMAN
    return Format.CSV


def read_addresses(addresses: list[str], path: Path | None) -> list[str]:
    """Normalised addresses from the command line and a file, every one checked first.

    The file: one address a line (``Name <address>`` too, as ``mailman members`` prints
    them; ``#`` lines skipped), or a CSV whose ``email`` (or ``Email Address``) column is
    read and nothing else. InputError lists every address that is not one.
    """
    found: list[str] = []
    problems: list[Problem] = []
    for address in addresses:
        try:
            found.append(cf.normalise_address(address))
        except AddressError as e:
            problems.append(Problem(Location("command line"), "ADDRESS", str(e)))
    if path is not None:
        shown = str(path)
        text = cf.decode(cf.read_file(path, shown), shown)
        line = mailman.first_line(text)
        if line is not None and mailman.is_member_line(line):
            lines: list[tuple[int, str]] = []
            for number, row in enumerate(text.splitlines(), start=1):
                if not row.strip() or row.lstrip().startswith("#"):
                    continue
                found_address = mailman.address_of(row)  # the name does not matter here
                if found_address is None:
                    problems.append(Problem(cf.CsvLine(shown, number), "",
                                            f"{row.strip()[:100]!r} is not an address line",
                                            "one address a line, or 'Name <address>'"))
                else:
                    lines.append((number, found_address))
        else:
            header, records = cf.header_and_records(text, shown)
            names = [n.strip().lower() for n in header or ()]
            column = next((names.index(n) for n in ("email", "email address") if n in names),
                          None)
            if column is None:
                raise InputError([Problem(cf.CsvLine(shown, 1), "", "no 'email' column and "
                                          "no address on the first line",
                                          "one address a line, or a CSV with an 'email' "
                                          "column")])
            lines = [(number, cells[column]) for number, cells in records
                     if len(cells) > column]
        for number, cell in lines:
            try:
                found.append(cf.normalise_address(cell))
            except AddressError as e:
                problems.append(Problem(cf.CsvLine(shown, number), "email", str(e)))
    if problems:
        raise InputError([*problems, Problem(Location(str(path or "command line")), "",
                                             f"{len(problems)} address(es) cannot be read; "
                                             "nothing was suppressed")])
    if not found:
        raise InputError([Problem(Location(str(path or "command line")), "",
                                  "no addresses to suppress")])
    return found
