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

import base64
import hashlib
import re
import time

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from newsletter.errors import InputError, Problem
from newsletter.model import Location, Smtp

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)


NAME = b"DKIM-Signature"
CANONICALIZE = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


class Signer:
    """Signs with one key: relaxed/relaxed, rsa-sha256, the SIGNED_HEADERS.

    The header is the one ``dkim.sign`` (dkimpy) writes, byte for byte: dkimpy parses the
    header fields, canonicalises and hashes them, and folds the result; the RSA step is
    OpenSSL's (the ``cryptography`` package), and a body already in canonical form (no tab,
    no run of spaces, no space at a line end: what personalize writes) is hashed as it is.
    dkimpy's own RSA is pure Python, ~10 ms a message: that capped a signed send near 95
    messages a second per core.
    """

    __slots__ = ("_private", "domain", "key", "selector")

    def __init__(self, selector: str, domain: str, key: bytes) -> None:
        self.selector = selector
        self.domain = domain
        self.key = key  # the private key (PEM): never in repr()
        self._private: rsa.RSAPrivateKey | None = None

    def __repr__(self) -> str:
        return f"Signer(selector={self.selector!r}, domain={self.domain!r}, key=...)"

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header in front."""
        return self.header(message) + message

    def header(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The DKIM-Signature header field for ``message``, ending in CRLF.

        ``timestamp`` (t=) defaults to now, as in dkimpy.
        """
        private = self._private_key()
        headers, body = _parse(message)
        domain = self.domain.encode("ascii")
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        stamp = int(time.time()) if timestamp is None else timestamp
        fields = [
            (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", CANONICALIZE.to_c_value()),
            (b"d", domain), (b"i", b"@" + domain), (b"q", b"dns/txt"),
            (b"s", self.selector.encode("ascii")), (b"t", str(stamp).encode("ascii")),
            (b"h", b" : ".join(SIGNED_HEADERS)), (b"bh", body_hash),
            (b"b", b"0" * 60),  # folds b= onto its own line, as dkimpy does
        ]
        # What dkimpy's DomainSigner.gen_header does, with OpenSSL for the RSA step.
        value = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(NAME),
                            linesep=b"\r\n")
        value = dkimpy.RE_BTAG.sub(b"\\1", value)
        hasher = hashlib.sha256()
        dkimpy.hash_headers(hasher, CANONICALIZE, CANONICALIZE.canonicalize_headers(headers),
                            SIGNED_HEADERS, (NAME, b" " + value), dict(fields))
        signature = private.sign(hasher.digest(), padding.PKCS1v15(),
                                 utils.Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        folded: bytes = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n",
                                    namelen=len(NAME), linesep=b"\r\n")
        return NAME + b": " + folded

    def _private_key(self) -> rsa.RSAPrivateKey:
        """The key, loaded once; dkimpy.KeyFormatError (in dkimpy's words where it has
        them) when it is not an RSA private key that can sign."""
        if self._private is None:
            try:
                parse_pem_private_key(self.key)  # what dkimpy accepts, and its messages
            except UnparsableKeyError as e:
                raise dkimpy.KeyFormatError(str(e)) from e
            try:
                loaded = serialization.load_pem_private_key(self.key, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as e:
                raise dkimpy.KeyFormatError(f"OpenSSL cannot load it: {e}") from e
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise dkimpy.KeyFormatError("not an RSA key")
            self._private = loaded
        return self._private


# Two spaces: re searches for that literal (dkimpy's [\t ]+ stops at every single space).
_SPACES = re.compile(rb"  +")


def relaxed_body(body: bytes) -> bytes:
    """The body in relaxed canonical form (RFC 6376 §3.4.4), the same bytes as dkimpy's
    ``Relaxed.canonicalize_body``, without a regular-expression pass over ~50 KB."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if b"  " in body:
        body = _SPACES.sub(b" ", body)
    if b" \r\n" in body:  # after the two above, a line ends in one space at most
        body = body.replace(b" \r\n", b"\r\n")
    canonical: bytes = correct_empty_body(strip_trailing_lines(body))
    return canonical


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """(header fields, body) as dkimpy's ``rfc822_parse`` gives them; only the header
    block is parsed line by line when the body has no lone LF (dkimpy would make it CRLF)."""
    end = message.find(b"\r\n\r\n")
    if end > 0 and not message.startswith(b"\r\n"):
        head, body = message[:end + 2], message[end + 4:]
        if b"\n" not in head.replace(b"\r\n", b"") \
                and body.count(b"\n") == body.count(b"\r\n"):
            headers, _ = dkimpy.rfc822_parse(head)
            return headers, body
    headers, body = dkimpy.rfc822_parse(message)
    return headers, body


def signer_for(smtp: Smtp, sender_domain: str) -> Signer | None:
    """The signer the settings ask for, or None when signing is off (no key configured).

    config.py has already merged the NEWSLETTER_DKIM_* overrides and checked the selector
    and domain; this reads the key file and proves it can sign.
    """
    if smtp.dkim_key is None or smtp.dkim_selector is None:
        return None
    # where the path was given: its line in newsletter.yaml, or NEWSLETTER_DKIM_KEY
    where = smtp.dkim_key_where or Location("newsletter.yaml")
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
