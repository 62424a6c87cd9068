"""Header values, checked before they reach a message: part of the personalize stage.

Every value that ends up in a header line (subject, display names, addresses, Message-ID,
List-Unsubscribe) passes through here, whatever Python version runs us: 3.11.7 lacks the
CVE-2024-6923 fix, so a stray LF or an encoded-word ``=?...?=`` in a Subject could inject
header lines. We refuse them rather than trust the ``email`` package to.

    check_value(name, value)   -> value, or HeaderValueError
    ascii_address(address)     -> the address with its domain IDNA-encoded (punycode)
"""

from __future__ import annotations

import re
import sys

from newsletter.errors import HeaderValueError

# C0 controls (TAB included: no header value we write needs one), DEL, C1 controls,
# the Unicode line and paragraph separators, and the start of an RFC 2047 encoded-word.
FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]|=\?")
_LOCAL_PART = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+")


# Releases with the CVE-2024-6923 and CVE-2026-1299 fixes in the email package.
_PATCHED = {(3, 10): (3, 10, 20), (3, 11): (3, 11, 15), (3, 12): (3, 12, 13),
            (3, 13): (3, 13, 12), (3, 14): (3, 14, 3)}


def python_warning(version: tuple[int, int, int] = sys.version_info[:3]) -> str | None:
    """A warning when this Python's email package predates the header-injection fixes."""
    import email.policy  # only here: it is a noticeable share of a short command's start-up

    needed = _PATCHED.get(version[:2])
    fixed = hasattr(email.policy.default, "verify_generated_headers")
    if (needed is None and version[:2] > (3, 14)) or (needed and version >= needed and fixed):
        return None
    shown = ".".join(map(str, version))
    wanted = ".".join(map(str, needed)) if needed else "a supported release"
    return (f"warning: Python {shown} predates the email header-injection fixes "
            f"(CVE-2024-6923, CVE-2026-1299); newsletter checks every header value itself, "
            f"but upgrade to {wanted} or later")


def value_problem(value: str) -> str | None:
    """Why ``value`` may not be written into a header, or None when it may."""
    found = FORBIDDEN.search(value)
    if found is None:
        return None
    text = found.group()
    if text == "=?":
        return "contains '=?' (the start of an encoded-word)"
    if text in "\r\n":
        return "contains a line break"
    return f"contains the control character U+{ord(text):04X}"


def check_value(name: str, value: str) -> str:
    """Return ``value`` unchanged, or raise HeaderValueError saying which header and why."""
    problem = value_problem(value)
    if problem is not None:
        raise HeaderValueError(f"{name}: {problem}: {value[:60]!r}")
    if not value.strip():
        raise HeaderValueError(f"{name}: empty value")
    return value


def ascii_address(address: str, name: str = "address") -> str:
    """``user@exämple.org`` -> ``user@xn--exmple-cua.org``; non-ASCII local parts are refused."""
    check_value(name, address)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise HeaderValueError(f"{name}: not an e-mail address: {address[:60]!r}")
    if not _LOCAL_PART.fullmatch(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        raise HeaderValueError(
            f"{name}: the part before @ must be plain ASCII letters, digits and . _ + -: "
            f"{address[:60]!r}")
    try:
        # An ASCII domain skips the idna codec, whose first use imports stringprep (~1 ms
        # of a short command); the label lengths it would check are checked below.
        ascii_domain = (domain if domain.isascii() else domain.encode("idna").decode("ascii")
                        ).lower()
    except UnicodeError as e:
        raise HeaderValueError(f"{name}: the domain is not valid: {domain[:60]!r}") from e
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", ascii_domain) \
            or "." not in ascii_domain \
            or not all(0 < len(label) <= 63 for label in ascii_domain.split(".")):
        raise HeaderValueError(f"{name}: the domain is not valid: {domain[:60]!r}")
    return f"{local}@{ascii_domain}"
