"""The privacy gate: nothing public is published unless it is clean.

Stage: after the archive is rendered into its staging folder, before it replaces the live
site. In: the staged files and a Policy (what the issues and newsletter.yaml wrote, plus the
members' addresses and uids, which the members stage reads and the pipeline passes in:
this module never opens the database). Out: nothing when clean, else an
InputError naming every leak compiler-style, ``site/2016-12/index.html:42:17: ...``.

A leak is anything a per-recipient email has and an archive page must not (see
reference/standards.md 5.5): a subscriber's address or opaque uid; any email address the
issues and the config do not write; an unsubscribe URL with a token, a signed-token shape
or a ``token=`` query parameter; a Message-ID shape or a Slot marker; template syntax left
unrendered (unless an issue writes it literally); a link or source on a host the issues
and the config do not name (a third party the page would talk to). Images: metadata left in
them (EXIF, XMP, comments, text chunks, bytes after the image) and members' addresses or ids
anywhere in their bytes (``scan_image``).

Addresses are compared as a browser would hand them to a mail client: after decoding
percent-escapes and HTML character references, again and again (``a%2Ehussain@``,
``&#64;``, ``%2540``, mixed). The issues' own text is decoded the same way, so an address
they write encoded (``?aff=info%40partner.example.org``) is as written as any other.

Subscriber names are not searched for: contact names in issues are legitimately public
and the archive renders with no recipient at all, so no path puts a member's name there.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import html
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from newsletter.errors import InputError, Problem
from newsletter.model import Location, Network, PrivateValues

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
# What a browser decodes on the way from a page to a mail client: runs of percent-escapes
# (one UTF-8 sequence may take several) and HTML character references, named or numeric.
# Left as they are: the references a page is full of that cannot be part of an address
# (quotes, spaces) and the angle brackets _OPENERS and _CLOSERS know in both forms.
_ESCAPE = re.compile(
    r"[%&](?:(?<=%)[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*"
    r"|(?<=&)(?!(?:lt|gt|quot|nbsp|#60|#62|#x3[cCeE]|#0*34|#[xX]0*22);)"
    r"(?:#[0-9]{1,8}|#[xX][0-9A-Fa-f]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});?)")
_URL_PUNCTUATION = re.compile(r"[/?=&#]")
_MARKUP_PUNCTUATION = re.compile(r"[^A-Za-z0-9._-]")
MAX_DECODING_ROUNDS = 6  # %25 nested this deep is no link anyone wrote by hand
# "logo@2x.png" is a file name, not an address
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg", "css", "js", "html"})
_URL = re.compile(r"https?://[^\s\"'<>()\[\]{}\\]+", re.IGNORECASE)  # for the sources
_AFTER_SLASHES = re.compile(r"//([^\s\"'<>()\[\]{}\\]+)")
_XMLNS = re.compile(r"""xmlns(?::\w+)?\s*=\s*("[^"]*"|'[^']*')""")
_HEX_ID = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{16,64}(?![0-9A-Za-z])")
_SLOT = re.compile(r"__NL_[A-Za-z0-9_]*")
_OPENERS = ("<", "&lt;", "&#60;", "&#x3c;", "&#x3C;")  # the forms _ESCAPE leaves as they are
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


def _readings(address: str, punctuation: re.Pattern[str] | None = None
              ) -> list[tuple[int, str]]:
    """(offset, address): the address as found, then shorter readings when its local part
    holds URL punctuation (in ``//host/?aff=info@host`` the address is ``info@host``)."""
    local, _, domain = address.rpartition("@")
    readings = [(0, address)]
    for m in (punctuation or _URL_PUNCTUATION).finditer(local):
        if m.end() < len(local):
            readings.append((m.end(), f"{local[m.end():]}@{domain}"))
    return readings


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
    # an address written encoded (``?aff=info%40partner.example.org``) is written all the
    # same: the gate compares decoded addresses. Written in markup (```a@b.org```, ``*a@b``)
    # it is written too: every reading after a punctuation mark counts as written.
    decoded = Decoded.of(text).text
    return Written(
        hosts=tuple(sorted({h for h in map(_host, urls) if h})),
        emails=tuple(sorted({reading for source in {text, decoded}
                             for a, b in addresses(source)
                             for _, reading in _readings(source[a:b].lower(),
                                                         _MARKUP_PUNCTUATION)})),
        placeholders=tuple(sorted({m.group(0).strip() for m in _TEMPLATE.finditer(text)})),
    )


def policy_for(network: Network, written: Iterable[Written], members: PrivateValues
               ) -> Policy:
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
    return Policy(frozenset(hosts), frozenset(emails), frozenset(placeholders),
                  members.addresses, network.unsubscribe.url, members.uids, members.salt)


def scan_text(text: str, policy: Policy, where: str) -> list[Problem]:
    """Every leak in one output file's text, located by line and column."""
    found: list[tuple[int, str]] = []
    masked: list[tuple[int, int]] = []  # spans already reported under a sharper name
    seen: set[tuple[int, str]] = set()  # (where, address): each is reported once

    if policy.uids:
        for m in _HEX_ID.finditer(text):
            if m.group(0).lower() in policy.uids:
                found.append((m.start(), f"subscriber id {m.group(0)} from the state database "
                                         "(it identifies a member)"))
    for m in _SLOT.finditer(text):
        found.append((m.start(), f"slot marker {m.group(0)} (a per-recipient value left in "
                                 "public output)"))
    decoded = Decoded.of(text)
    for a, b in addresses(decoded.text):
        shown = decoded.text[a:b]
        address = shown.lower().strip(".")
        if address.rpartition(".")[2] in _FILE_SUFFIXES:
            continue
        at = decoded.source_index(a)
        if (at, address) in seen:
            continue
        seen.add((at, address))
        lead = a + len(shown) - len(shown.lstrip("."))
        readings = _readings(address)
        member = next(((o, r) for o, r in readings if r in policy.subscribers), None)
        if decoded.text.endswith(_OPENERS, 0, a) and decoded.text.startswith(_CLOSERS, b):
            found.append((at, f"Message-ID-shaped value <{shown}> (message "
                              "identifiers are per recipient)"))
        elif member is not None:
            found.append((decoded.source_index(lead + member[0]), f"subscriber address "
                          f"{member[1]} from the state database (the archive must carry no "
                          "member data)"))
        elif not any(r in policy.emails for _, r in readings):
            offset, shortest = readings[-1]
            found.append((decoded.source_index(lead + offset), f"email address {shortest} "
                          "is not written in the issues or the config"))
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


class Decoded:
    """A text with every percent-escape and HTML character reference decoded, again and
    again (``%252E`` -> ``%2E`` -> ``.``, ``&#37;40`` -> ``%40`` -> ``@``), as a browser
    would on the way from a page to a mail client; ``source_index`` maps a position in the
    decoded text back to the original (inside a decoded escape: the escape's start)."""

    __slots__ = ("rounds", "text")

    def __init__(self, text: str, rounds: list[list[tuple[int, int, int, int]]]) -> None:
        self.text = text
        # per round, the last first: (start, end) of each decoded escape in the round's
        # output, then (start, end) of the escape in its input
        self.rounds = rounds

    @classmethod
    def of(cls, text: str) -> Decoded:
        rounds: list[list[tuple[int, int, int, int]]] = []
        for _ in range(MAX_DECODING_ROUNDS):
            if "%" not in text and "&" not in text:
                break
            decoded, marks = _decode_round(text)
            if not marks:
                break
            rounds.insert(0, marks)
            text = decoded
        return cls(text, rounds)

    def source_index(self, index: int) -> int:
        for marks in self.rounds:
            k = bisect.bisect_right(marks, (index, sys.maxsize)) - 1
            if k >= 0:
                _, end, source_start, source_end = marks[k]
                index = source_start if index < end else source_end + index - end
        return index


def _decode_round(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """One round of decoding, and where each decoded escape went (see ``Decoded``)."""
    marks: list[tuple[int, int, int, int]] = []
    shift = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal shift
        escape = m.group(0)
        value = _decoded_escape(escape)
        if value != escape:
            start = m.start() + shift
            shift += len(value) - len(escape)
            marks.append((start, start + len(value), m.start(), m.end()))
        return value

    return _ESCAPE.sub(replace, text), marks


@functools.lru_cache(maxsize=1024)
def _decoded_escape(escape: str) -> str:
    return unquote(escape) if escape[0] == "%" else html.unescape(escape)


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
