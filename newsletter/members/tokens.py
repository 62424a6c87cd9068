"""Unsubscribe tokens: opaque, signed, never expiring.

A token carries the member's random ``uid`` and the list name, signed with HMAC by
itsdangerous under the purpose salt ``unsubscribe-v1``; it contains no address and no
sequential id. The signing key comes from the environment only (``NEWSLETTER_SECRET``);
keys listed in ``NEWSLETTER_OLD_SECRETS`` (comma-separated) still verify, so the key can be
rotated without breaking the links in issues already sent. Tokens do not expire: people
unsubscribe from old issues.

    secrets_from_env()            -> Secrets (or InputError: missing or short secret)
    make_token(secrets, uid, list) -> str
    read_token(secrets, token)    -> UnsubscribeToken | None (None for anything not ours)

Return-path tokens name one delivery (an issue to a member) in the envelope sender,
``bounces+<token>@domain``, where a bounce report comes back to. A local part holds at
most 64 characters and some systems change its case, so the token is short and
case-insensitive: 32 base32 letters and digits, an opaque 10-byte key (a hash of the issue
and the member's uid: no address, no sequential id) and a 10-byte HMAC-SHA256 of it under
the purpose salt ``return-path-v1`` (80 bits, RFC 2104's minimum for a truncated MAC):

    make_return_token(secrets, slug, uid) -> str
    read_return_token(secrets, token)     -> str | None (the token, lower-case, if ours)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

import msgspec
from itsdangerous import BadData, Signer, URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from newsletter.errors import InputError, Problem
from newsletter.model import Location

SALT = "unsubscribe-v1"
SECRET_ENV = "NEWSLETTER_SECRET"  # noqa: S105 (the name of the variable, not a secret)
OLD_SECRETS_ENV = "NEWSLETTER_OLD_SECRETS"
MIN_SECRET_LENGTH = 16
MAX_TOKEN_LENGTH = 512  # anything longer is not one of ours; don't spend HMAC time on it

_UID = re.compile(r"^[0-9a-f]{32}$")
_GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Secrets(msgspec.Struct, frozen=True):
    """The signing key and the retired keys that still verify (never printed)."""

    current: str
    old: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Secrets(current=..., old=<{len(self.old)} retired>)"


class UnsubscribeToken(msgspec.Struct, frozen=True):
    uid: str  # subscribers.uid
    list_name: str


def secrets_from_env(environ: Mapping[str, str] | None = None) -> Secrets:
    """Read the signing keys from the environment; refuse a missing or short key."""
    env = os.environ if environ is None else environ
    where = Location("environment")
    problems: list[Problem] = []
    current = env.get(SECRET_ENV, "")
    if not current:
        problems.append(Problem(where, SECRET_ENV, "not set (unsubscribe links are signed "
                                "with it)", hint=f"set it to a random string, e.g. {_GENERATE}"))
    elif len(current) < MIN_SECRET_LENGTH:
        problems.append(Problem(where, SECRET_ENV, f"too short ({len(current)} characters; "
                                f"at least {MIN_SECRET_LENGTH})", hint=f"e.g. {_GENERATE}"))
    old = tuple(s.strip() for s in env.get(OLD_SECRETS_ENV, "").split(",") if s.strip())
    for number, secret in enumerate(old, start=1):
        if len(secret) < MIN_SECRET_LENGTH:
            problems.append(Problem(where, f"{OLD_SECRETS_ENV}[{number}]",
                                    f"too short ({len(secret)} characters; at least "
                                    f"{MIN_SECRET_LENGTH})"))
    if problems:
        raise InputError(problems)
    return Secrets(current, old)


def _serializer(secrets: Secrets) -> URLSafeSerializer:
    # itsdangerous signs with the last key and verifies with any of them.
    return URLSafeSerializer([*secrets.old, secrets.current], salt=SALT)


def make_token(secrets: Secrets, uid: str, list_name: str) -> str:
    """The signed token for one member of one list."""
    if not _UID.match(uid):
        raise ValueError("uid must be 32 lower-case hex digits")
    token: str = _serializer(secrets).dumps([uid, list_name])
    return token


def read_token(secrets: Secrets, token: str) -> UnsubscribeToken | None:
    """The member and list a token names, or None when it is not a valid token of ours."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        payload = _serializer(secrets).loads(token)
        # base64 ignores the spare bits of the last character: insist on the one spelling
        # we write, so that changing any character of a token makes it invalid.
        if any(base64_encode(base64_decode(part)) != part.encode()
               for part in token.split(".")):
            return None
    except (BadData, UnicodeError, ValueError):
        return None
    if (
        isinstance(payload, list)
        and len(payload) == 2
        and isinstance(payload[0], str)
        and isinstance(payload[1], str)
        and _UID.match(payload[0])
        and payload[1]
    ):
        return UnsubscribeToken(payload[0], payload[1])
    return None


# --------------------------------------------------------------------------- return paths

RETURN_SALT = "return-path-v1"
RETURN_KEY_BYTES = 10
RETURN_MAC_BYTES = 10
RETURN_TOKEN_LENGTH = 32  # base32 of 20 bytes, no padding
_RETURN_TOKEN = re.compile(r"^[a-z2-7]{32}$")


def _return_mac(secret: str, key: bytes) -> bytes:
    # itsdangerous derives a key per purpose (salt) from the secret, as for the unsubscribe
    # tokens; the MAC is truncated to fit a local part.
    derived = Signer(secret, salt=RETURN_SALT, key_derivation="hmac",
                     digest_method=hashlib.sha256).derive_key()
    return hmac.new(derived, key, hashlib.sha256).digest()[:RETURN_MAC_BYTES]


def make_return_token(secrets: Secrets, slug: str, uid: str) -> str:
    """The signed token for the message of one issue to one member (stable: a resend after
    a crash carries the same one)."""
    if not _UID.match(uid):
        raise ValueError("uid must be 32 lower-case hex digits")
    key = hashlib.sha256(f"{RETURN_SALT}\0{slug}\0{uid}".encode()).digest()[:RETURN_KEY_BYTES]
    raw = key + _return_mac(secrets.current, key)
    return base64.b32encode(raw).decode("ascii").lower()


def read_return_token(secrets: Secrets, token: str) -> str | None:
    """The token in lower case when its MAC verifies under any of the keys, else None."""
    token = token.lower()
    if not _RETURN_TOKEN.match(token):
        return None
    raw = base64.b32decode(token.upper())
    if base64.b32encode(raw).decode("ascii").lower() != token:
        return None
    key, mac = raw[:RETURN_KEY_BYTES], raw[RETURN_KEY_BYTES:]
    for secret in (secrets.current, *secrets.old):
        if hmac.compare_digest(mac, _return_mac(secret, key)):
            return token
    return None
