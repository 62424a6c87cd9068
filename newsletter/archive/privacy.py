"""The privacy gate: nothing public is published unless it is clean.

Stage: after the archive is rendered into its staging folder, before it replaces the live
site. In: the staged files and a Policy (what the issues and newsletter.yaml wrote, plus the
subscriber addresses in the state database, read-only). Out: nothing when clean, else an
InputError naming every leak compiler-style, ``site/2016-12/index.html:42:17: ...``.

A leak is anything a per-recipient email has and an archive page must not (see
reference/standards.md 5.5): a subscriber's address or opaque uid; any email address the
issues and the config do not write; an unsubscribe URL with a token, a signed-token shape
or a ``token=`` query parameter; a Message-ID shape or a Slot marker; template syntax left
unrendered (unless an issue writes it literally); a link or source on a host the issues
and the config do not name (a third party the page would talk to). Images: metadata left in
them (EXIF, XMP, comments, text chunks, bytes after the image) and members' addresses or ids
anywhere in their bytes (``scan_image``).

Subscriber names are not searched for: contact names in issues are legitimately public
and the archive renders with no recipient at all, so no path puts a member's name there.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from newsletter.errors import InputError, Problem, StateError
from newsletter.model import Location, Network

GATE_VERSION = "2"  # bump when the checks change, so cached "clean" verdicts are dropped
SCANNED_SUFFIXES = frozenset({".html", ".htm", ".xml", ".js", ".json", ".txt", ".css"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
MAX_REPORTED = 100

# Every pattern starts with a literal ("@", "://", ".", "token=") so the scan jumps from
# candidate to candidate: pages are large and mostly prose and markup.
_AT_DOMAIN = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                         ".!#$%&'*+/=?^_`{|}~-")
_ENCODED_AT = re.compile(r"&#0*64;|&#[xX]0*40;|&commat;|%40")
# "logo@2x.png" is a file name, not an address
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg", "css", "js", "html"})
_URL = re.compile(r"https?://[^\s\"'<>()\[\]{}\\]+", re.IGNORECASE)  # for the sources
_AFTER_SLASHES = re.compile(r"//([^\s\"'<>()\[\]{}\\]+)")
_XMLNS = re.compile(r"""xmlns(?::\w+)?\s*=\s*("[^"]*"|'[^']*')""")
_HEX_ID = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{16,64}(?![0-9A-Za-z])")
_SLOT = re.compile(r"__NL_[A-Za-z0-9_]*")
_OPENERS = ("<", "&lt;", "&#60;", "&#x3c;", "&#x3C;")
_CLOSERS = (">", "&gt;", "&#62;", "&#x3e;", "&#x3E;")
_TEMPLATE = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)", re.MULTILINE)
# itsdangerous: [.]payload.signature or [.]payload.timestamp.signature, base64url segments
_SIGNATURE = re.compile(r"\.([A-Za-z0-9_-]{27,86})(?![\w.-])")
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_TOKEN_PARAM = re.compile(r"token=[^\s\"'<>&]+")


def addresses(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every email-address shape in ``text``."""
    for m in _AT_DOMAIN.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        if start < m.start():
            yield start, m.end()


class Policy(msgspec.Struct, frozen=True):
    """What may appear in public output."""

    hosts: frozenset[str]  # lower-case hosts written in the issues or the config
    emails: frozenset[str]  # lower-case addresses written in the issues or the config
    placeholders: frozenset[str]  # template syntax the issues write literally: "{{ config }}"
    subscribers: frozenset[str]  # lower-case addresses in the state database
    unsubscribe_base: str | None  # network.unsubscribe.url: a token may never follow it
    uids: frozenset[str] = frozenset()  # subscribers' opaque ids (in tokens and Message-IDs)
    salt: str = ""  # the state database's random salt: keys the fingerprint

    @property
    def fingerprint(self) -> str:
        """Changes whenever a verdict could change (used to trust earlier clean scans).

        Keyed with the database's secret salt: the fingerprint is kept on disk (never
        published), and a plain hash of a short member list could be guessed back.
        """
        data = [GATE_VERSION, self.salt, sorted(self.hosts), sorted(self.emails),
                sorted(self.placeholders), sorted(self.subscribers), self.unsubscribe_base,
                sorted(self.uids)]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()


class Written(msgspec.Struct, frozen=True):
    """What one source file (an issue, newsletter.yaml) writes that output may repeat."""

    hosts: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    placeholders: tuple[str, ...] = ()


def written_in(text: str) -> Written:
    """The hosts of its URLs, its email addresses and its literal template syntax."""
    urls = {m.group(0) for m in _URL.finditer(text)}
    return Written(
        hosts=tuple(sorted({h for h in map(_host, urls) if h})),
        emails=tuple(sorted({text[a:b].lower() for a, b in addresses(text)})),
        placeholders=tuple(sorted({m.group(0).strip() for m in _TEMPLATE.finditer(text)})),
    )


def policy_for(network: Network, written: Iterable[Written]) -> Policy:
    """The policy for a build: what the config and the issues write, and the members."""
    hosts: set[str] = set()
    emails: set[str] = set()
    placeholders: set[str] = set()
    for found in written:
        hosts.update(found.hosts)
        emails.update(found.emails)
        placeholders.update(found.placeholders)
    for url in (network.website, network.archive_url, network.helpline.report_url,
                network.unsubscribe.url or "", network.archive.quick_exit_url or ""):
        if host := _host(url):
            hosts.add(host)
    for address in (network.sender.address, network.reply_to.address if network.reply_to else "",
                    network.unsubscribe.mailto or ""):
        if address:
            emails.add(address.lower())
    database = network.database if network.database.is_absolute() \
        else network.root / network.database
    members, uids, salt = subscriber_values(database)
    return Policy(frozenset(hosts), frozenset(emails), frozenset(placeholders), members,
                  network.unsubscribe.url, uids, salt)


def subscriber_values(database: Path) -> tuple[frozenset[str], frozenset[str], str]:
    """(addresses, uids, salt) in the state database: read-only; no database means none."""
    if not database.is_file():
        return frozenset(), frozenset(), ""
    found: set[str] = set()
    uids: set[str] = set()
    salt = ""
    try:
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StateError(f"{database}: cannot open the state database read-only: {e}") from e
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'suppression_salt'"
                               ).fetchone()
            salt = str(row[0]) if row else ""
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({quoted})")]
            for column in columns:
                qcol = '"' + column.replace('"', '""') + '"'
                if column.lower() in ("email", "address", "recipient"):
                    sql = f"SELECT DISTINCT {qcol} FROM {quoted} WHERE {qcol} LIKE '%@%'"  # noqa: S608
                    found.update(str(r[0]).strip().lower() for r in conn.execute(sql))
                elif column.lower() == "uid":
                    sql = f"SELECT DISTINCT {qcol} FROM {quoted} WHERE {qcol} IS NOT NULL"  # noqa: S608
                    uids.update(str(r[0]).strip().lower() for r in conn.execute(sql)
                                if len(str(r[0])) >= 16)
    except sqlite3.Error as e:
        raise StateError(f"{database}: cannot read subscriber addresses: {e}") from e
    finally:
        conn.close()
    return frozenset(found), frozenset(uids), salt


def scan_text(text: str, policy: Policy, where: str) -> list[Problem]:
    """Every leak in one output file's text, located by line and column."""
    found: list[tuple[int, str]] = []
    masked: list[tuple[int, int]] = []  # spans already reported under a sharper name
    seen: set[int] = set()  # where addresses were found (each is reported once)

    if policy.uids:
        for m in _HEX_ID.finditer(text):
            if m.group(0).lower() in policy.uids:
                found.append((m.start(), f"subscriber id {m.group(0)} from the state database "
                                         "(it identifies a member)"))
    for m in _SLOT.finditer(text):
        found.append((m.start(), f"slot marker {m.group(0)} (a per-recipient value left in "
                                 "public output)"))
    for variant, decoded in _variants(text):
        for a, b in addresses(variant):
            address = variant[a:b].lower().strip(".")
            if address.rpartition(".")[2] in _FILE_SUFFIXES:
                continue
            at = a if not decoded else _locate(text, variant[a:b])
            if at in seen:
                continue
            seen.add(at)
            if variant.endswith(_OPENERS, 0, a) and variant.startswith(_CLOSERS, b):
                found.append((at, f"Message-ID-shaped value <{variant[a:b]}> (message "
                                  "identifiers are per recipient)"))
            elif address in policy.subscribers:
                found.append((at, f"subscriber address {address} from the state database "
                                  "(the archive must carry no member data)"))
            elif address not in policy.emails:
                found.append((at, f"email address {address} is not written in the issues "
                                  "or the config"))
    if policy.unsubscribe_base:
        base = re.escape(policy.unsubscribe_base.rstrip("/"))
        for m in re.finditer(base + r"/([^\s\"'<>?#]+)", text):
            found.append((m.start(), f"unsubscribe URL with a token: {m.group(0)[:80]}"))
            masked.append(m.span())
    for m in _SIGNATURE.finditer(text):
        start = m.start()
        while start > 0 and (text[start - 1] in _BASE64URL or text[start - 1] == "."):
            start -= 1
        # a leading "." marks a compressed payload (itsdangerous)
        parts = text[start:m.end()].removeprefix(".").split(".")
        if len(parts) not in (2, 3) or len(parts[0]) < 2 or (
                len(parts) == 3 and not 4 <= len(parts[1]) <= 8):
            continue
        if start > 0 and text[start - 1].isalnum():
            continue
        signature = m.group(1)
        looks_random = (any(c.isupper() for c in signature) and any(c.islower() for c in
                        signature) and any(c.isdigit() or c in "-_" for c in signature))
        if looks_random and not any(x <= start < y for x, y in masked):
            found.append((start, f"signed-token-shaped value {text[start:m.end()][:60]} "
                                 "(unsubscribe tokens are per recipient)"))
    for m in _TOKEN_PARAM.finditer(text):
        start = m.start()
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-"):
            start -= 1
        if start > 0 and text[start - 1] in "?&;" \
                and not any(x <= start < y for x, y in masked):
            found.append((start - 1, f"per-recipient query parameter "
                                     f"{text[start - 1:m.end()][:60]}"))
    for m in _TEMPLATE.finditer(text):
        if html.unescape(m.group(0)).strip() not in policy.placeholders:
            found.append((m.start(), f"unrendered template syntax {m.group(0)[:40]!r}"))
    scannable = _XMLNS.sub(lambda x: " " * len(x.group(0)), text)
    for at, url, relative in _links(scannable):
        host = _host(html.unescape(url))
        if host is None or host in policy.hosts:
            continue
        if relative:
            found.append((at, f"protocol-relative link to {host}, a host not written in the "
                              "issues or the config"))
        else:
            found.append((at, f"link to {host}, a host not written in the issues or the "
                              f"config: {url[:80]}"))
    found.sort()
    return [Problem(_location(text, where, at), "", message) for at, message in found]


def scan_files(folder: Path, relatives: Iterable[str], policy: Policy, *,
               shown_as: str) -> None:
    """Scan the text files ``relatives`` under ``folder``; raise InputError listing every leak.

    The caller names the files: every file the folder holds, less those it knows are
    byte-identical to files that already passed this gate under the same policy.
    """
    problems: list[Problem] = []
    for relative in sorted(relatives):
        suffix = Path(relative).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            problems.extend(scan_image((folder / relative).read_bytes(), policy,
                                       f"{shown_as.rstrip('/')}/{relative}"))
        if suffix not in SCANNED_SUFFIXES:
            continue
        text = (folder / relative).read_bytes().decode("utf-8", errors="replace")
        problems.extend(scan_text(text, policy, f"{shown_as.rstrip('/')}/{relative}"))
    if problems:
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(Problem(Location(shown_as), "",
                                 f"... and {len(problems) - MAX_REPORTED} more"))
        shown.append(Problem(Location(shown_as), "", "privacy gate: nothing was published "
                             "(the previous site is unchanged)"))
        raise InputError(shown)


def scan_image(data: bytes, policy: Policy, where: str) -> list[Problem]:
    """What an image file must not carry: metadata (EXIF with a GPS position or a name,
    XMP, comments, text chunks, bytes after the image), and members' addresses or ids
    anywhere in its bytes (as ASCII, Latin-1 or UTF-16 text)."""
    from newsletter.input.images import metadata_in

    found = [Problem(Location(where), "", f"image metadata: {what} (publishing an image "
                     "leaves it out; was this file copied in by hand?)")
             for what in metadata_in(data)]
    seen: set[str] = set()
    for variant in (data, data.replace(b"\0", b"")):  # UTF-16 text, less its zero bytes
        text = variant.decode("latin-1").lower()
        # binary bytes run into the local part: try each place the address might start
        values = [text[start:b] for a, b in addresses(text)
                  for start in range(a, text.index("@", a))
                  if text[start:b] in policy.subscribers]
        if policy.uids:
            values += [m.group(0) for m in _HEX_ID.finditer(text) if m.group(0) in policy.uids]
        for value in values:
            if value not in seen:
                seen.add(value)
                what = "address" if "@" in value else "id"
                found.append(Problem(Location(where), "", f"subscriber {what} {value} from "
                                     "the state database inside an image"))
    return found


def _links(text: str) -> Iterator[tuple[int, str, bool]]:
    """(start, URL, protocol-relative?) for every http(s) URL and every ``="//host..."``."""
    for m in _AFTER_SLASHES.finditer(text):
        start = m.start()
        if text.endswith(":", 0, start):
            scheme_at = start - 1
            while scheme_at > 0 and text[scheme_at - 1].isalpha():
                scheme_at -= 1
            if text[scheme_at:start - 1].lower() in ("http", "https"):
                yield scheme_at, text[scheme_at:m.end()], False
            continue
        before = text[max(0, start - 8):start].rstrip(" \t\"'")
        if before.endswith(("=", "(")):
            yield start, "https:" + text[start:m.end()], True


def _variants(text: str) -> list[tuple[str, bool]]:
    """The text itself, plus entity- and percent-decoded forms when they differ."""
    variants = [(text, False)]
    if ("%40" in text or "&#" in text or "&commat;" in text) and _ENCODED_AT.search(text):
        # decoding whole pages is slow: only when it can matter
        variants.append((html.unescape(text), True))
        variants.append((unquote(text), True))
    return variants


def _locate(text: str, address: str) -> int:
    """Where an address found in a decoded variant of ``text`` sits in the text itself."""
    local, _, domain = address.partition("@")
    lowered = text.lower()
    for at_sign in ("@", "&#64;", "&#x40;", "%40", "&commat;"):
        found = lowered.find(f"{local}{at_sign}{domain}".lower())
        if found >= 0:
            return found
    found = lowered.find(local.lower())
    return found if found >= 0 else 0


def _location(text: str, where: str, at: int) -> Location:
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return Location(where, line, col)


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None
