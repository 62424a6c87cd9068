"""Email address syntax, checked one way for the config, issues and member lists.

A plain ASCII address (the overwhelming case) is accepted by a conservative pattern;
anything else goes to email-validator (syntax only, no DNS), imported only then: it
compiles many regular expressions, a noticeable share of a short command's start-up.
"""

from __future__ import annotations

import re

_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")


class AddressError(ValueError):
    """Why a string is not an address we can send to."""


def checked_address(text: str) -> str:
    """The address with its domain IDNA-encoded and lower-cased, or AddressError(reason)."""
    if _PLAIN_ADDRESS.fullmatch(text) and len(text) <= 254:
        local, _, domain = text.rpartition("@")
        domain = domain.lower()
        tld = domain.rpartition(".")[2]
        if (len(local) <= 64 and tld not in _SPECIAL_USE
                and not any(label[2:4] == "--" for label in domain.split("."))):
            return f"{local}@{domain}"
    from email_validator import EmailNotValidError, validate_email

    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise AddressError(str(e)) from e
    local, _, domain = (valid.ascii_email or valid.normalized).rpartition("@")
    return f"{local}@{domain.lower()}"
