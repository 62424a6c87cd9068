"""Optional DKIM signing of the exact bytes that are sent: the last step of the send stage.

In: a message as bytes (from personalize.assemble) and the key, selector and domain from
smtp.dkim_* in newsletter.yaml, or the environment (NEWSLETTER_DKIM_KEY, _SELECTOR,
_DOMAIN; the key file is a secret and belongs outside the repository). Out: the same bytes
with a DKIM-Signature header in front. Nothing re-serialises the message after this
(standards.md §0 #2: re-flattening a signed message breaks the signature).

The signature covers the headers RFC 8058 §4 requires (List-Unsubscribe and
List-Unsubscribe-Post) besides the usual ones.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dkim as dkimpy

from .errors import InputError, Problem
from .model import Location, Smtp

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)
# RFC 6376 §3.1: a selector is one or more DNS labels ("news2016", "mail.2016").
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Signer:
    selector: str
    domain: str
    key: bytes = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        signature: bytes = dkimpy.sign(
            message, self.selector.encode("ascii"), self.domain.encode("ascii"), self.key,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return signature + message


def signer_for(smtp: Smtp, sender_domain: str,
               environ: Mapping[str, str] | None = None) -> Signer | None:
    """The signer the settings ask for, or None when signing is off (no key configured)."""
    env = os.environ if environ is None else environ
    key_path = env.get("NEWSLETTER_DKIM_KEY") or (str(smtp.dkim_key) if smtp.dkim_key else "")
    selector = env.get("NEWSLETTER_DKIM_SELECTOR") or smtp.dkim_selector or ""
    domain = env.get("NEWSLETTER_DKIM_DOMAIN") or smtp.dkim_domain or sender_domain
    if not key_path and not selector:
        return None
    where = Location("newsletter.yaml")
    problems = []
    if not key_path:
        problems.append(Problem(where, "smtp.dkim_key", "required when smtp.dkim_selector is "
                                "set", hint="or set NEWSLETTER_DKIM_KEY to the key file"))
    if not selector:
        problems.append(Problem(where, "smtp.dkim_selector", "required when smtp.dkim_key is "
                                "set", hint="or set NEWSLETTER_DKIM_SELECTOR"))
    elif not _SELECTOR.match(selector):
        problems.append(Problem(where, "smtp.dkim_selector",
                                f"expected a DNS label like news2016, found {selector!r}"))
    key = b""
    if key_path:
        try:
            key = Path(key_path).read_bytes()
        except OSError as e:
            problems.append(Problem(where, "smtp.dkim_key",
                                    f"cannot read the key file {key_path}: {e.strerror}"))
    if problems:
        raise InputError(problems)
    signer = Signer(selector, domain.lower(), key)
    try:  # fail now, not on the first message
        signer.sign(b"From: a@example.org\r\nSubject: test\r\n\r\ntest\r\n")
    except dkimpy.DKIMException as e:
        raise InputError([Problem(where, "smtp.dkim_key",
                                  f"{key_path}: not a usable private key ({e})")]) from e
    return signer
