"""The personalize stage: RenderedIssue -> PreparedMessage (once) -> bytes per recipient.

``prepare`` does all the expensive work once per issue: header lines, the
multipart/alternative structure (text/plain first, text/html last, both quoted-printable,
charset utf-8) and the quoted-printable encoding itself. The result is a list of byte
segments split where a per-recipient value goes; every body segment ends with a soft line
break, so a value encoded on its own starts at column 0 and lines stay <= 76.

``assemble`` only validates and encodes the few per-recipient values (To, Date,
Message-ID, List-Unsubscribe, List-Unsubscribe-Post, greeting, unsubscribe URL) and joins
bytes. No EmailMessage is built per recipient (``email.policy`` would turn a long
unsubscribe URL into an RFC 2047 encoded-word, which breaks one-click unsubscribe).

Header lines stay within 78 columns: values are folded at spaces, List-Unsubscribe between
its entries, so each of its lines carries one URL, written literally however long it is.
All line endings are CRLF; every header value is checked by headers.py first.
"""

from __future__ import annotations

import binascii
import datetime as dt
import enum
import html
import os
import re
from email.header import Header
from email.utils import format_datetime, formataddr

import msgspec

from newsletter.email import wire
from newsletter.errors import HeaderValueError
from newsletter.model import (
    Issue,
    ListId,
    Mailbox,
    Network,
    Recipient,
    RenderedIssue,
    RenderMode,
    Slot,
)
from newsletter.text.addresses import url_problem
from newsletter.text.headers import ascii_address, check_value

MAX_LINE = 998
FOLD_AT = 78
ONE_CLICK = "List-Unsubscribe=One-Click"
PLACEHOLDER_ADDRESS = "member@example.invalid"


class _Field(enum.Enum):
    TO = "to"
    DATE = "date"
    MESSAGE_ID = "message_id"
    LIST_UNSUBSCRIBE = "list_unsubscribe"
    LIST_UNSUBSCRIBE_POST = "list_unsubscribe_post"
    TEXT_GREETING = "text_greeting"
    TEXT_UNSUBSCRIBE = "text_unsubscribe"
    HTML_GREETING = "html_greeting"
    HTML_UNSUBSCRIBE = "html_unsubscribe"


class PreparedMessage(msgspec.Struct, frozen=True):
    """One issue's message, pre-encoded: literal byte segments around per-recipient fields.

    ``literals`` has one more element than ``fields``: literal, field, literal, ... literal.
    """

    slug: str
    content_hash: str
    literals: tuple[bytes, ...]
    fields: tuple[_Field, ...]
    stuffed: tuple[bytes, ...] = ()  # each literal dot-stuffed (wire.stuffed), for SMTP
    clean: bool = False  # every literal is CRLF-clean, so ``stuffed`` can be used as is

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.literals)


# --------------------------------------------------------------------------- encoding


def _qp(data: bytes) -> bytes:
    """Quoted-printable with CRLF line ends (input has LF line ends)."""
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _qp_piece(text: str) -> bytes:
    """QP-encode a piece that may end mid-line; end it at column 0 (a soft break if needed)."""
    encoded = _qp(text.encode("utf-8"))
    if not encoded or encoded.endswith(b"\r\n"):
        return encoded
    head, _, last = encoded.rpartition(b"\r\n")
    pieces = [head + b"\r\n"] if head else []
    while len(last) > 75:  # leave room for the "=" of the soft break
        cut = 75
        if last[cut - 1:cut] == b"=":
            cut -= 1
        elif last[cut - 2:cut - 1] == b"=":
            cut -= 2
        pieces.append(last[:cut] + b"=\r\n")
        last = last[cut:]
    pieces.append(last + b"=\r\n")
    return b"".join(pieces)


_SLOT = re.compile("(" + "|".join(re.escape(s.value) for s in Slot) + ")")


def _body(text: str, fields: dict[Slot, _Field]) -> list[bytes | _Field]:
    """A body split at its Slot markers, each literal piece QP-encoded on its own."""
    out: list[bytes | _Field] = []
    for i, piece in enumerate(_SLOT.split(text.replace("\r\n", "\n").replace("\r", "\n"))):
        if i % 2:
            out.append(fields[Slot(piece)])
        elif piece:
            out.append(_qp_piece(piece))
    return out


def _header(name: str, value: str) -> bytes:
    """A header line for an ASCII value we composed ourselves (already checked), folded at
    spaces so lines stay within 78 columns; a longer word keeps a line of its own."""
    lines = [f"{name}:"]
    for word in value.split(" "):
        if word and len(lines[-1]) + 1 + len(word) > FOLD_AT and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + word
    if max(len(line) for line in lines) > MAX_LINE:
        raise HeaderValueError(f"{name}: longer than {MAX_LINE} characters")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _phrase(name: str, angle: str, field: str) -> bytes:
    """``Display Name <angle>`` (From, Reply-To, List-Id): non-ASCII names become RFC 2047
    encoded-words of at most 75 characters each (``formataddr`` writes one of any length)."""
    if name.isascii():
        return _header(field, formataddr((name, angle)))
    # 64 leaves room for "Reply-To: " before the first encoded-word on its line
    words = Header(name, "utf-8").encode(maxlinelen=64).split()
    return _header(field, " ".join([*words, f"<{angle}>"]))


def _mailbox(field: str, name: str, address: str, what: str) -> bytes:
    check_value(f"{what} name", name)
    return _phrase(name, ascii_address(address, f"{what} address"), field)


def _subject(subject: str) -> bytes:
    check_value("Subject", subject)
    # ASCII folds at spaces; anything else becomes RFC 2047 encoded-words split on whole
    # characters, each line <= 76. (email.header, not email.policy: a third of the import.)
    charset = "us-ascii" if subject.isascii() else "utf-8"
    folded = Header(subject, charset, header_name="Subject").encode(linesep="\r\n",
                                                                   maxlinelen=76)
    return f"Subject: {folded}\r\n".encode("ascii")


# --------------------------------------------------------------------------- once per issue


class MessageHeaders(msgspec.Struct, frozen=True):
    """Everything ``prepare`` takes from newsletter.yaml: the header values every
    recipient's message shares (the Subject comes from the render).

    The render's content hash covers these (render.py), so a send that was started is
    never resumed with another From, Reply-To, List-Id or List-Archive. ``prepare`` reads
    the network only through this: a header added from the config belongs here.
    """

    sender: Mailbox
    reply_to: Mailbox | None
    list_id: ListId
    archive_url: str


def message_headers(network: Network) -> MessageHeaders:
    return MessageHeaders(network.sender, network.reply_to, network.list_id,
                          network.archive_url)


def prepare(rendered: RenderedIssue, network: Network, *,
            subject_prefix: str = "") -> PreparedMessage:
    """Build and pre-encode the message once; ``assemble`` fills in each recipient."""
    if rendered.mode is not RenderMode.EMAIL:
        raise ValueError("prepare() needs an EMAIL render (the archive render has no slots)")
    headers = message_headers(network)
    boundary = "==nl_" + rendered.content_hash[:32]
    parts: list[bytes | _Field] = [b"Date: ", _Field.DATE, b"\r\n"]
    head = [_mailbox("From", headers.sender.name, headers.sender.address, "sender")]
    if headers.reply_to is not None:
        head.append(_mailbox("Reply-To", headers.reply_to.name, headers.reply_to.address,
                             "reply_to"))
    parts += [*head, b"To: ", _Field.TO, b"\r\n", _subject(subject_prefix + rendered.subject),
              b"Message-ID: ", _Field.MESSAGE_ID, b"\r\n"]
    check_value("List-Id label", headers.list_id.label)
    check_value("List-Id name", headers.list_id.name)
    parts.append(_phrase(headers.list_id.name, headers.list_id.label, "List-Id"))
    if url_problem(headers.archive_url) is None:
        archive = check_value("archive_url", headers.archive_url)
        parts.append(_header("List-Archive", f"<{archive}>"))
    parts += [b"List-Unsubscribe: ", _Field.LIST_UNSUBSCRIBE, b"\r\n",
              _Field.LIST_UNSUBSCRIBE_POST,  # the whole line, or nothing (mailto only)
              b"Precedence: bulk\r\n", b"MIME-Version: 1.0\r\n",
              f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode(),
              b"\r\n"]
    part_head = ('--{b}\r\nContent-Type: {t}; charset="utf-8"\r\n'
                 "Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    parts.append(part_head.format(b=boundary, t="text/plain").encode())
    parts += _body(rendered.text, {Slot.GREETING: _Field.TEXT_GREETING,
                                   Slot.UNSUBSCRIBE_URL: _Field.TEXT_UNSUBSCRIBE})
    parts.append(b"\r\n" + part_head.format(b=boundary, t="text/html").encode())
    parts += _body(rendered.html, {Slot.GREETING: _Field.HTML_GREETING,
                                   Slot.UNSUBSCRIBE_URL: _Field.HTML_UNSUBSCRIBE})
    parts.append(f"\r\n--{boundary}--\r\n".encode())

    literals: list[bytes] = [b""]
    fields: list[_Field] = []
    for part in parts:
        if isinstance(part, bytes):
            literals[-1] += part
        else:
            fields.append(part)
            literals.append(b"")
    return PreparedMessage(slug=rendered.slug, content_hash=rendered.content_hash,
                           literals=tuple(literals), fields=tuple(fields),
                           stuffed=tuple(wire.stuffed(b) for b in literals),
                           clean=all(wire.is_clean(b) for b in literals))


# --------------------------------------------------------------------------- per recipient

_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                      r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[A-Za-z0-9.-]+>")  # no spaces, no < > inside
_URI = re.compile(r"<[!-;=?-~]+>")  # RFC 2369: a URI in angle brackets, no spaces inside
_URI_LIST = re.compile(rf"{_URI.pattern}(?:, ?{_URI.pattern})*")


def _field_values(recipient: Recipient, date: dt.datetime) -> dict[_Field, bytes]:
    if date.tzinfo is None:
        raise HeaderValueError("Date: needs a timezone-aware datetime")
    address = recipient.address
    if address.isascii():
        if not _ADDRESS.fullmatch(address):
            check_value("To", address)
            raise HeaderValueError(f"To: not one plain address: {address[:60]!r}")
    else:
        address = ascii_address(address, "To")
    message_id = check_value("Message-ID", recipient.message_id)
    if not _MESSAGE_ID.fullmatch(message_id):
        raise HeaderValueError(f"Message-ID: expected <id@domain>, found {message_id[:60]!r}")
    unsubscribe = check_value("List-Unsubscribe", recipient.list_unsubscribe)
    if not _URI_LIST.fullmatch(unsubscribe):
        raise HeaderValueError("List-Unsubscribe: expected <URI>, <URI>, ...: "
                               f"{unsubscribe[:60]!r}")
    uris = _URI.findall(unsubscribe)
    if max(len(uri) for uri in uris) + len("List-Unsubscribe: ,") > MAX_LINE:
        raise HeaderValueError(f"List-Unsubscribe: longer than {MAX_LINE} characters")
    post = recipient.list_unsubscribe_post
    if post and (post != ONE_CLICK or "<https://" not in unsubscribe):
        raise HeaderValueError(f"List-Unsubscribe-Post: must be exactly {ONE_CLICK!r}, "
                               "with an https URI in List-Unsubscribe (RFC 8058)")
    url = check_value("unsubscribe URL", recipient.unsubscribe_url)
    problem = url_problem(url, frozenset({"https", "mailto"}))
    if problem is not None:
        raise HeaderValueError(f"unsubscribe URL: {problem}: {url[:60]!r}")
    greeting = check_value("greeting", recipient.greeting)
    return {
        _Field.TO: address.encode("ascii"),
        _Field.DATE: format_datetime(date).encode("ascii"),
        _Field.MESSAGE_ID: message_id.encode("ascii"),
        # one URI per line: never split inside one, never an encoded-word
        _Field.LIST_UNSUBSCRIBE: ",\r\n ".join(uris).encode("ascii"),
        _Field.LIST_UNSUBSCRIBE_POST: (f"List-Unsubscribe-Post: {post}\r\n".encode("ascii")
                                       if post else b""),
        _Field.TEXT_GREETING: _qp_piece(greeting),
        _Field.TEXT_UNSUBSCRIBE: _qp_piece(url),
        _Field.HTML_GREETING: _qp_piece(html.escape(greeting)),
        _Field.HTML_UNSUBSCRIBE: _qp_piece(html.escape(url)),
    }


def assemble(prepared: PreparedMessage, recipient: Recipient, date: dt.datetime) -> bytes:
    """The message bytes for one recipient (CRLF, ready to DKIM-sign and send as they are)."""
    try:
        values = _field_values(recipient, date)
    except UnicodeEncodeError as e:
        raise HeaderValueError(f"a header value for {recipient.message_id[:60]!r} "
                               "is not ASCII") from e
    literals = prepared.literals
    out = [literals[0]]
    for field, literal in zip(prepared.fields, literals[1:], strict=True):
        out.append(values[field])
        out.append(literal)
    return b"".join(out)


def assemble_outgoing(prepared: PreparedMessage, recipient: Recipient, date: dt.datetime
                      ) -> wire.Outgoing:
    """``assemble``'s bytes, and the same in their DATA-phase form (wire.py) for SMTP.

    The literals were dot-stuffed once, in ``prepare``; here only the recipient's values
    are, and a dot is doubled where a piece starting with one begins a line.
    """
    try:
        values = _field_values(recipient, date)
    except UnicodeEncodeError as e:
        raise HeaderValueError(f"a header value for {recipient.message_id[:60]!r} "
                               "is not ASCII") from e
    out: list[bytes] = []
    data: list[bytes] = []
    at_line_start, clean = True, prepared.clean
    for i, literal in enumerate(prepared.literals):
        if i:
            value = values[prepared.fields[i - 1]]
            if value:
                clean = clean and wire.is_clean(value)
                out.append(value)
                if at_line_start and value[:1] == b".":
                    data.append(b".")
                data.append(wire.stuffed(value))
                at_line_start = value.endswith(b"\r\n")
        if literal:
            out.append(literal)
            if at_line_start and literal[:1] == b".":
                data.append(b".")
            data.append(prepared.stuffed[i])
            at_line_start = literal.endswith(b"\r\n")
    message = b"".join(out)
    if not (clean and at_line_start):  # never, for what prepare builds
        return wire.Outgoing(message, wire.data_phase(message))
    data.append(wire.FINAL_DOT)
    return wire.Outgoing(message, b"".join(data))


def anonymous_recipient(network: Network, slug: str) -> Recipient:
    """A clearly fake recipient for sample messages (``newsletter build``'s email.eml)."""
    base = network.unsubscribe.url or network.archive_url.rstrip("/") + "/unsubscribe"
    url = base.rstrip("/") + "/PREVIEW"
    header = f"<{url}>"
    if network.unsubscribe.mailto:
        header += f", <mailto:{network.unsubscribe.mailto}?subject=unsubscribe>"
    return Recipient(address=PLACEHOLDER_ADDRESS, greeting="Hello", unsubscribe_url=url,
                     list_unsubscribe=header, list_unsubscribe_post=ONE_CLICK,
                     message_id=f"<{slug}.preview@{network.sender_domain}>")


def sample_date(issue: Issue) -> dt.datetime:
    """A deterministic Date for sample messages: SOURCE_DATE_EPOCH, else the issue day 09:00 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
    return dt.datetime.combine(issue.date, dt.time(9, 0), dt.UTC)


def fill(rendered: RenderedIssue, recipient: Recipient) -> tuple[str, str]:
    """(html, text) with the recipient's values in place of the Slot markers (for previews)."""
    html_values = {Slot.GREETING: html.escape(recipient.greeting),
                   Slot.UNSUBSCRIBE_URL: html.escape(recipient.unsubscribe_url)}
    text_values = {Slot.GREETING: recipient.greeting,
                   Slot.UNSUBSCRIBE_URL: recipient.unsubscribe_url}
    return (_SLOT.sub(lambda m: html_values[Slot(m.group())], rendered.html),
            _SLOT.sub(lambda m: text_values[Slot(m.group())], rendered.text))
