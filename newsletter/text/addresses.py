"""Addresses a reader is sent to: email addresses, phone numbers and link URLs, each
checked one way for the config, issues, member lists and messages.

Email: a plain ASCII address (the overwhelming case) is accepted by a conservative
pattern; anything else goes to email-validator (syntax only, no DNS), imported only then:
it compiles many regular expressions, a noticeable share of a short command's start-up.

Links: only https (with a host), mailto and tel. No relative or protocol-relative URLs (an
email has no base URL), no whitespace or control characters anywhere in the URL.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from newsletter.errors import AddressError

_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]*")
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")


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


def address_problem(text: str) -> tuple[str | None, str | None]:
    """``(checked address, None)`` for a usable address, else ``(None, message)`` (for
    loaders that collect problems instead of stopping at the first)."""
    try:
        return checked_address(text), None
    except AddressError as e:
        why = str(e)
        return None, f"not a usable email address: {why[:1].lower()}{why[1:].rstrip('.')}"


def phone_problem(text: str) -> tuple[str, str] | None:
    """``(message, hint)`` when ``text`` is not a phone number that a ``tel:`` link can dial
    as written (see model.tel_uri), else None."""
    digits = sum(c.isdigit() for c in text)
    if not _PHONE.fullmatch(text) or not 3 <= digits <= 15:
        return (f"expected a phone number, found {text!r}",
                "digits and spaces, e.g. 0207 811 6077 or +44 20 7811 6077")
    if text.startswith("+") and "(0)" in text.replace(" ", ""):
        return (f"{text!r} would be dialled with the 0 in brackets",
                "write it without the (0), e.g. +44 20 7811 6077")
    return None


# --------------------------------------------------------------------------- links

LINK_SCHEMES = frozenset({"https", "mailto", "tel"})
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


def url_problem(url: str, schemes: frozenset[str] = LINK_SCHEMES) -> str | None:
    """Why ``url`` may not be used, or None when it may."""
    if not url:
        return "empty URL"
    if _CONTROL_OR_SPACE.search(url):
        return "URL contains spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if not scheme:
        return "relative URL (an email has no base address; write the full https:// URL)"
    if scheme == "http":
        return "http:// link (use https://)"
    if scheme not in schemes:
        allowed = ", ".join(sorted(s + ":" for s in schemes))
        return f"{scheme}: links are not allowed (use {allowed})"
    if scheme == "https" and not parts.hostname:
        return "https URL without a host"
    if scheme == "mailto" and "@" not in parts.path:
        return "mailto: link without an address"
    if scheme == "tel" and not re.fullmatch(r"\+?[0-9]{3,15}", parts.path):
        return "tel: link must be digits only, e.g. tel:08000121700"
    return None


def is_loopback(host: str) -> bool:
    """``localhost`` or any address in 127.0.0.0/8 or ::1 (plaintext SMTP is allowed there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
