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
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec
from itsdangerous import BadData, URLSafeSerializer
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
