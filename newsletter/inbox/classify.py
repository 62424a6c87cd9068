"""What one incoming message is: part of the inbox stage. Pure: bytes in, a Finding out.

In: the raw bytes of a message from the mailbox ``newsletter inbox`` reads. Out: a Finding
saying what kind of message it is, the recipients it reports (with the status and the
diagnostic), and the keys that may tie it to a message we sent: return-path tokens (from
``bounces+<token>@...``), Message-IDs of the returned original, an unsubscribe token.
Nothing here trusts those keys: apply.py verifies them against the secrets and the ledger.

The order of the questions, most specific first:

    1. an RFC 5965 feedback report (``Feedback-Type: abuse``)        -> complaint
    2. an RFC 3464 delivery status notification: 5.x.x failed        -> bounce
                                                 4.x.x, delayed      -> soft
    3. ``unsubscribe <token>`` in the subject (the List-Unsubscribe mailto) -> unsubscribe
    4. an auto-reply (RFC 3834 Auto-Submitted: auto-replied, X-Autoreply, Precedence:
       auto_reply, an out-of-office subject)                         -> auto-reply
    5. a bounce in another format (Exchange, qmail, Yahoo, ...): flufl.bounce's
       detectors, asked only about a message that looks automatic  -> bounce / soft
    6. anything else automatic                                       -> auto-reply
    7. anything else                                                 -> person

A message that cannot be parsed, or a report that contradicts itself, is never an error:
it becomes a Finding a person reads. Only the first MAX_PARSE bytes are parsed.
"""

from __future__ import annotations

import binascii
import email
import email.header
import email.message
import email.utils
import enum
import logging
import quopri
import re
from collections.abc import Iterable, Iterator
from email.message import Message

import msgspec
from flufl.bounce import all_failures

# flufl.bounce logs a detector's exception before re-raising it; a stage never prints.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

MAX_PARSE = 2 * 1024 * 1024  # a report's parts come first; the rest is the returned message
# flufl.bounce's detectors search each line with patterns that are quadratic in its length:
# they see the first FLUFL_BYTES, with lines cut at RFC 5322's 998 characters
FLUFL_BYTES = 64 * 1024
LINE_MAX = 998
TEXT_MAX = 300  # subjects, diagnostics and senders are shown and stored truncated

# bounces+<token>@domain: the 32-character base32 token tokens.py makes (searched for from
# the "+" on: a pattern that starts with a repeated class is quadratic on a long header)
RETURN_ADDRESS = re.compile(r"\+([A-Za-z2-7]{32})@[A-Za-z0-9.-]")
UNSUBSCRIBE = re.compile(r"\bunsubscribe\b", re.IGNORECASE)
# itsdangerous: base64url payload "." base64url signature
UNSUBSCRIBE_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_-]{8,400}\.[A-Za-z0-9_-]{20,100})",
                               re.IGNORECASE)
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SMTP_CODE = re.compile(r"^\s*([245]\d\d)\b")
MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}@[^<>\s]{1,250}>")
MESSAGE_ID_LINE = re.compile(r"^[ \t]*Message-ID:[ \t]*(<[^<>\s@]{1,250}@[^<>\s]{1,250}>)",
                             re.IGNORECASE | re.M)

# Headers that carry the address a message was delivered to (the envelope recipient).
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to",
                    "x-rcpt-to", "to")
AUTOMATIC_SENDERS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon",
                     "maildaemon", "mdaemon", "mailer_daemon", "bounce", "bounces")
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|notification|problem|has failed)"
    r"|returned mail|failure notice|mail delivery (failed|failure|system|subsystem)"
    r"|could not be delivered|non-?delivery|nondeliverable|delivery report|rejected"
    r"|warning: could not send|delayed mail|message not delivered", re.IGNORECASE)
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|autoreply|out of (the )?office"
    r"|away from (the |my )?office|on (annual )?leave|vacation( reply)?|abwesenheit"
    r"|r[ée]ponse automatique|respuesta autom[aá]tica|risposta automatica"
    r"|automatisch antwoord|fuera de la oficina|absence|auto:)", re.IGNORECASE)


class Kind(enum.StrEnum):
    BOUNCE = "bounce"  # a permanent failure (5.x.x)
    SOFT = "soft"  # a temporary failure or a delay (4.x.x)
    COMPLAINT = "complaint"  # a spam complaint (RFC 5965, Feedback-Type: abuse)
    UNSUBSCRIBE = "unsubscribe"  # a request to the List-Unsubscribe mailto
    AUTO_REPLY = "auto-reply"  # out of office and other automatic replies: for a person
    PERSON = "person"  # mail from a person (or nothing we can act on): for a person
    IGNORED = "ignored"  # changes nothing, with the reason (forged, unknown, unreadable)


class Recipient(msgspec.Struct, frozen=True):
    """One recipient a report is about."""

    address: str  # lower-case as reported
    status: str  # 5.1.1, 4.4.7, or "" when the report gives none
    diagnostic: str  # what the remote server said, truncated; "" when none
    original: str = ""  # Original-Recipient, when the report gives it


class Finding(msgspec.Struct, frozen=True):
    kind: Kind
    why: str  # how it was recognised, or why nothing can be done with it
    sender: str  # From, as shown (truncated, printable)
    subject: str  # decoded Subject, as shown (truncated, printable)
    recipients: tuple[Recipient, ...] = ()
    return_tokens: tuple[str, ...] = ()  # candidates, lower-case, unverified
    message_ids: tuple[str, ...] = ()  # Message-IDs of the original message
    unsubscribe_token: str | None = None  # unverified


# --------------------------------------------------------------------------- entry


def classify(data: bytes) -> Finding:
    """What ``data`` is. Never raises for any input."""
    try:
        msg = email.message_from_bytes(data[:MAX_PARSE])
    except Exception as e:  # the parser is lenient; this is the last line of defence
        return Finding(Kind.IGNORED, f"could not be read as an email ({type(e).__name__})",
                       "", "")
    try:
        return _classify(msg, data)
    except Exception as e:
        # A report malformed in a way no rule foresaw: a person reads it; nothing changes.
        return Finding(Kind.PERSON, f"could not be understood ({type(e).__name__}: "
                       f"{printable(str(e), 80)})", _sender(msg), _subject(msg))


def _classify(msg: Message, data: bytes) -> Finding:
    sender, subject = _sender(msg), _subject(msg)
    if not any(msg.get(name) for name in ("From", "Subject", "Date", "Message-ID", "To")):
        return Finding(Kind.IGNORED, "not an email (no From, To, Subject, Date or Message-ID)",
                       sender, subject)
    envelope = _unique(_tokens(_header_values(msg, ENVELOPE_HEADERS)))

    feedback = _part(msg, "message/feedback-report")
    if feedback is not None:
        return _feedback(msg, feedback, sender, subject, envelope)
    status = _part(msg, "message/delivery-status")
    if status is not None:
        return _delivery_status(msg, status, sender, subject, envelope)

    auto = _auto_reply(msg, subject)
    token = UNSUBSCRIBE_TOKEN.search(subject)
    if token is not None and auto is None:
        return Finding(Kind.UNSUBSCRIBE, "an unsubscribe request (the List-Unsubscribe mailto)",
                       sender, subject, unsubscribe_token=token.group(1))
    # Bounces say Auto-Submitted: auto-replied too (RFC 3834 asks it of them): one that comes
    # from a mail daemon or is titled as a bounce is read as a bounce first.
    bounce_like = _looks_like_bounce(msg, subject)
    if bounce_like or (auto is None and (envelope or _null_sender(msg))):
        found = _flufl(msg, data, sender, subject, envelope)
        if found is not None:
            return found
    if auto is not None:
        return Finding(Kind.AUTO_REPLY, auto, sender, subject, return_tokens=envelope)
    if bounce_like:
        return Finding(Kind.PERSON, "looks like a bounce, but names no failed recipient in a "
                       "format we know", sender, subject, return_tokens=envelope)
    automatic = _automatic(msg)
    if automatic is not None:
        return Finding(Kind.AUTO_REPLY, automatic, sender, subject, return_tokens=envelope)
    if UNSUBSCRIBE.search(subject):
        return Finding(Kind.PERSON, "asks to unsubscribe but carries no token (anyone can "
                       "write a From line): check who it is, then `newsletter subscribers "
                       "unsubscribe ADDRESS`", sender, subject)
    return Finding(Kind.PERSON, "mail from a person", sender, subject, return_tokens=envelope)


# --------------------------------------------------------------------------- RFC 5965


def _feedback(msg: Message, part: Message, sender: str, subject: str,
              envelope: tuple[str, ...]) -> Finding:
    fields = _blocks(part)
    first = fields[0] if fields else Message()
    kind = printable(first.get("Feedback-Type", ""), 40).strip().lower()
    original = _original(msg)
    tokens = list(envelope)
    tokens += _tokens(_header_values(first, ("original-mail-from",)))
    if original is not None:
        tokens += _tokens(_header_values(original, ("return-path",)))
    rcpts = tuple(Recipient(a, kind, printable(first.get("User-Agent", ""), TEXT_MAX))
                  for a in _addresses(_header_values(first, ("original-rcpt-to",))))
    ids = _message_ids(msg, original)
    if kind == "abuse":
        return Finding(Kind.COMPLAINT, "a spam complaint (RFC 5965 feedback report, abuse)",
                       sender, subject, rcpts, _unique(tokens), ids)
    what = kind or "no Feedback-Type"
    return Finding(Kind.PERSON, f"a feedback report of type {what}, not a spam complaint",
                   sender, subject, rcpts, _unique(tokens), ids)


# --------------------------------------------------------------------------- RFC 3464


def _delivery_status(msg: Message, part: Message, sender: str, subject: str,
                     envelope: tuple[str, ...]) -> Finding:
    blocks = _blocks(part)
    permanent: list[Recipient] = []
    temporary: list[Recipient] = []
    unreadable = False  # a failure reported for a recipient we cannot read
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        action = printable(block.get("Action", ""), 40).strip().lower()
        final = _addresses(_header_values(block, ("final-recipient",)))
        if not final:
            final = _addresses(_header_values(block, ("x-actual-recipient",)))
        original = _addresses(_header_values(block, ("original-recipient",)))
        if not final and not original:
            unreadable = unreadable or action.startswith(("failed", "error", "delayed"))
            continue
        status_text = printable(block.get("Status", ""), 60)
        found = STATUS.search(status_text)
        status = found.group(0) if found else ""
        diagnostic = _diagnostic(block)
        rcpt = Recipient((final or original)[0], status, diagnostic,
                         original[0] if original else "")
        if action.startswith(("failed", "failure", "error")):
            # a failure without a Status: the server's reply code decides
            code = SMTP_CODE.match(diagnostic.partition(";")[2] or diagnostic)
            if status.startswith("5") or (not status and code is not None
                                          and code.group(1).startswith("5")):
                permanent.append(rcpt)
            else:
                temporary.append(rcpt)
        elif action.startswith("delayed"):
            temporary.append(rcpt)
    original_msg = _original(msg)
    tokens = list(envelope)
    if original_msg is not None:
        tokens += _tokens(_header_values(original_msg, ("return-path",)))
    ids = _message_ids(msg, original_msg)
    if permanent:
        return Finding(Kind.BOUNCE, "a delivery status notification (RFC 3464): failed",
                       sender, subject, (*permanent, *temporary), _unique(tokens), ids)
    if temporary:
        return Finding(Kind.SOFT, "a delivery status notification (RFC 3464): "
                       "delayed or a temporary failure", sender, subject, tuple(temporary),
                       _unique(tokens), ids)
    if unreadable:
        return Finding(Kind.PERSON, "a delivery status notification whose failed recipient "
                       "cannot be read", sender, subject, (), _unique(tokens), ids)
    return Finding(Kind.IGNORED, "a delivery status notification that reports no failure "
                   "(none we can read)",
                   sender, subject, (), _unique(tokens), ids)


def _diagnostic(block: Message) -> str:
    for name in ("Diagnostic-Code", "X-Postfix-Diagnostic", "X-Diagnostic"):
        value = block.get(name)
        if value:
            return printable(" ".join(str(value).split()), TEXT_MAX)
    return ""


# --------------------------------------------------------------------------- others


def _flufl(msg: Message, data: bytes, sender: str, subject: str,
           envelope: tuple[str, ...]) -> Finding | None:
    """A bounce in a format flufl.bounce's detectors know (Exchange, qmail, Yahoo, ...)."""
    head = email.message_from_bytes(_LONG_LINE.sub(lambda m: m.group()[:LINE_MAX],
                                                   data[:FLUFL_BYTES]))
    try:
        temporary, permanent = all_failures(head)
    except Exception:
        return None
    if not temporary and not permanent:
        return None
    text = _text(head)
    original = _original(msg)
    tokens = [*envelope, *_tokens(re.findall(r"Return-Path:\s*(\S+)", text, re.I))]
    if original is not None:
        tokens += _tokens(_header_values(original, ("return-path",)))
    ids = _message_ids(msg, original, text)
    found = STATUS.search(text)
    diagnostic = _diagnostic_line(text)
    if permanent:
        status = found.group(0) if found and found.group(1) == "5" else "5.0.0"
        rcpts = tuple(Recipient(_decode(a), status, diagnostic) for a in sorted(permanent))
        return Finding(Kind.BOUNCE, "a bounce (non-standard format, read by flufl.bounce)",
                       sender, subject, rcpts, _unique(tokens), ids)
    status = found.group(0) if found and found.group(1) == "4" else "4.0.0"
    rcpts = tuple(Recipient(_decode(a), status, diagnostic) for a in sorted(temporary))
    return Finding(Kind.SOFT, "a delay warning (non-standard format, read by flufl.bounce)",
                   sender, subject, rcpts, _unique(tokens), ids)


def _diagnostic_line(text: str) -> str:
    for line in text.splitlines():
        if STATUS.search(line) or re.search(r"\b[45]\d\d[ -]", line):
            return printable(" ".join(line.split()), TEXT_MAX)
    return ""


def _auto_reply(msg: Message, subject: str) -> str | None:
    """Why the message is an automatic reply (RFC 3834 and the common markers), or None."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return "Auto-Submitted: auto-replied"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if msg.get(name) is not None:
            return f"{name} header"
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    if AUTO_REPLY_SUBJECT.match(subject):
        return "an out-of-office subject"
    return None


def _automatic(msg: Message) -> str | None:
    """Why the message was sent by a program (not a reply, not a bounce we can read)."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {printable(auto, 40)}"
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    return None


def _null_sender(msg: Message) -> bool:
    return str(msg.get("Return-Path", "")).strip() == "<>"


def _looks_like_bounce(msg: Message, subject: str) -> bool:
    """A bounce's usual marks: a mail daemon's From, or a bounce's subject."""
    name, address = email.utils.parseaddr(str(msg.get("From", "")))
    local = address.rpartition("@")[0].lower()
    if local in AUTOMATIC_SENDERS or "mail delivery" in name.lower() \
            or "mail administrator" in name.lower():
        return True
    return bool(BOUNCE_SUBJECT.search(subject))


# --------------------------------------------------------------------------- parts


def _part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    raw: object
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        if encoding not in ("base64", "quoted-printable"):
            return blocks
        # an encoded report was parsed as header blocks: undo that, then decode it
        encoded = "\n".join(b.as_string() for b in blocks).encode("ascii", "replace")
        raw = (binascii.a2b_base64(encoded) if encoding == "base64"
               else quopri.decodestring(encoded))
    else:
        raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return []
    text = raw.decode("utf-8", "replace")
    return [email.message_from_string(chunk.strip() + "\n")
            for chunk in re.split(r"\r?\n[ \t]*\r?\n", text) if chunk.strip()]


def _original(msg: Message) -> Message | None:
    """The returned original message (or its headers), when the report carries it."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return email.message_from_bytes(raw.lstrip() + b"\n")
    return None


def _message_ids(msg: Message, original: Message | None, text: str | None = None
                 ) -> tuple[str, ...]:
    found: list[str] = []
    if original is not None:
        found += MESSAGE_ID.findall(str(original.get("Message-ID", "")))
    for name in ("In-Reply-To", "References"):
        found += MESSAGE_ID.findall(str(msg.get(name, "")))
    if text is not None:
        found += MESSAGE_ID_LINE.findall(text)
    return _unique(found)


def _text(msg: Message) -> str:
    """Every text part, decoded (for the formats only text tells apart)."""
    pieces = []
    for part in msg.walk():
        if part.get_content_maintype() in ("text", "message") and not part.is_multipart():
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                pieces.append(raw.decode(part.get_content_charset() or "utf-8", "replace")
                              if _known_charset(part.get_content_charset())
                              else raw.decode("utf-8", "replace"))
    return "\n".join(pieces)


def _known_charset(name: str | None) -> bool:
    import codecs

    if not name:
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


# --------------------------------------------------------------------------- values


def _header_values(msg: Message, names: Iterable[str]) -> list[str]:
    values: list[str] = []
    for name in names:
        for value in msg.get_all(name, []) or []:
            values.append(str(value))
    return values


def _tokens(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        for match in RETURN_ADDRESS.finditer(value):
            yield match.group(1).lower()


def _addresses(values: Iterable[str]) -> list[str]:
    """Addresses out of DSN/ARF fields: ``rfc822; a@b``, ``<a@b>``, ``a@b``."""
    found = []
    for value in values:
        text = value.partition(";")[2] if ";" in value else value
        _, address = email.utils.parseaddr(text.strip())
        address = address.strip().strip("<>").lower()
        if "@" in address and len(address) <= 254 and address.isprintable():
            found.append(address)
    return found


def _decode(address: bytes) -> str:
    return address.decode("ascii", "replace").strip("<>").lower()


def _sender(msg: Message) -> str:
    return printable(_decoded(msg.get("From", "")), 120)


def _subject(msg: Message) -> str:
    return printable(_decoded(msg.get("Subject", "")), TEXT_MAX)


def _decoded(value: object) -> str:
    """A header value with RFC 2047 encoded-words decoded (never raises)."""
    text = str(value or "")
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        return text


_LONG_LINE = re.compile(rb"[^\n]{%d,}" % (LINE_MAX + 1))
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def printable(text: str, limit: int) -> str:
    """Safe to print on a terminal: no control or bidi characters, one line, ``limit`` long."""
    text = _UNPRINTABLE.sub(" ", text.replace("\ufffd", "?"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
