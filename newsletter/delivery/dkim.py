"""Optional DKIM signing of the exact bytes that are sent: the last step of the send stage.

In: a message as bytes (from personalize.assemble) and the key, selector and domain from
the settings (smtp.dkim_* in newsletter.yaml, or NEWSLETTER_DKIM_KEY, _SELECTOR, _DOMAIN,
merged by config.py; the key file is a secret and belongs outside the repository). Out:
the same bytes with a DKIM-Signature header in front. Nothing re-serialises the message after this
(standards.md §0 #2: re-flattening a signed message breaks the signature).

The signature covers the headers RFC 8058 §4 requires (List-Unsubscribe and
List-Unsubscribe-Post) besides the usual ones.
"""

from __future__ import annotations

import dkim as dkimpy
import msgspec

from newsletter.errors import InputError, Problem
from newsletter.model import Location, Smtp

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)


class Signer(msgspec.Struct, frozen=True):
    selector: str
    domain: str
    key: bytes  # the private key: never in repr()

    def __repr__(self) -> str:
        return f"Signer(selector={self.selector!r}, domain={self.domain!r}, key=...)"

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header in front."""
        return self.header(message) + message

    def header(self, message: bytes) -> bytes:
        """The DKIM-Signature header line(s) for ``message``, ending in CRLF."""
        signature: bytes = dkimpy.sign(
            message, self.selector.encode("ascii"), self.domain.encode("ascii"), self.key,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return signature


def signer_for(smtp: Smtp, sender_domain: str) -> Signer | None:
    """The signer the settings ask for, or None when signing is off (no key configured).

    config.py has already merged the NEWSLETTER_DKIM_* overrides and checked the selector
    and domain; this reads the key file and proves it can sign.
    """
    if smtp.dkim_key is None or smtp.dkim_selector is None:
        return None
    where = Location("newsletter.yaml")
    key_path = smtp.dkim_key
    try:
        key = key_path.read_bytes()
    except OSError as e:
        raise InputError([Problem(where, "smtp.dkim_key",
                                  f"cannot read the key file {key_path}: {e.strerror}")]) from e
    signer = Signer(smtp.dkim_selector, (smtp.dkim_domain or sender_domain).lower(), key)
    try:  # fail now, not on the first message
        signer.sign(b"From: a@example.org\r\nSubject: test\r\n\r\ntest\r\n")
    except dkimpy.DKIMException as e:
        raise InputError([Problem(where, "smtp.dkim_key",
                                  f"{key_path}: not a usable private key ({e})")]) from e
    return signer
