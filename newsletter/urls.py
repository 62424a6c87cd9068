"""Which links may appear in an email or on an archive page.

Only https (with a host), mailto and tel. No relative or protocol-relative URLs: an email
has no base URL. No whitespace or control characters anywhere in the URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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


def is_safe_url(url: str, schemes: frozenset[str] = LINK_SCHEMES) -> bool:
    return url_problem(url, schemes) is None


def host_of(url: str) -> str | None:
    """Lower-case host of an https URL, else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return parts.hostname.lower() if parts.scheme.lower() == "https" and parts.hostname else None
