"""A message as SMTP's DATA phase carries it (RFC 5321 §4.5.2): part of the personalize stage.

In: message bytes, or the pre-encoded pieces personalize joins. Out: the same bytes with CRLF
line ends, a dot doubled at the start of every line that begins with one, and the final
``.`` line; an Outgoing holds both forms, so the sender writes the DATA phase as it is.

aiosmtplib's ``SMTP.data`` rewrites every line ending and scans every line of the whole
message for each recipient (two regular-expression passes over ~50 KB). personalize's
pieces are fixed per issue, so their stuffed form is made once, in ``prepare``; per
recipient only the few short values are stuffed and the pieces joined. ``data_phase`` is
the general form, for any bytes (a test's message, a proof), and gives the same bytes as
aiosmtplib's own transformation (tests/test_wire.py holds them to it).
"""

from __future__ import annotations

import re

import msgspec

FINAL_DOT = b".\r\n"
_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


class Outgoing(msgspec.Struct, frozen=True):
    """One recipient's message, and the same message in its DATA-phase form."""

    message: bytes  # exactly what the recipient gets (what DKIM signed, what --dry-run writes)
    data: bytes  # CRLF, dot-stuffed, ending with the final dot: written to the server as is

    def signed(self, header: bytes) -> Outgoing:
        """The message with ``header`` (a DKIM-Signature, ending in CRLF) in front."""
        message = header + self.message
        if not is_clean(header) or not header.endswith(b"\r\n"):
            return Outgoing(message, data_phase(message))
        lead = b"." if header.startswith(b".") else b""
        return Outgoing(message, lead + stuffed(header) + self.data)


def is_clean(piece: bytes) -> bool:
    """True when every CR and LF in ``piece`` belongs to a CRLF pair (none is split off)."""
    crlf = piece.count(b"\r\n")
    return piece.count(b"\n") == crlf and piece.count(b"\r") == crlf


def stuffed(piece: bytes) -> bytes:
    """``piece`` (CRLF-clean) with each dot after a line break doubled; a leading dot is
    left to the caller, who knows whether the piece starts a line."""
    return piece.replace(b"\r\n.", b"\r\n..")


def data_phase(message: bytes) -> bytes:
    """Any message in its DATA-phase form: lone CR or LF become CRLF, the last line ends
    with CRLF, a dot starting a line is doubled, and the final dot follows."""
    if not is_clean(message):
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    data = stuffed(message)
    if data.startswith(b"."):
        data = b"." + data
    return data + FINAL_DOT
