"""The exception tree; every error says where it came from.

    NewsletterError     anything the CLI reports as a message, never a traceback
    ├── InputError      bad input (issue, config, CSV, command line values): exit 1;
    │   │               carries every Problem found, not just the first
    │   └── CheckFailed `check` found errors (or warnings under --strict)
    ├── UsageError      the command line itself is wrong: exit 2
    ├── StateError      the state database refuses (locked, newer schema, corrupt): exit 1
    ├── RenderError     a template or MJML failed on valid input (a bug): exit 1
    ├── HeaderValueError  a value that would corrupt or inject a header line: exit 1
    ├── DeliveryError   sending stopped (config, circuit breaker, failed recipients): exit 1
    └── MailboxError    the inbox cannot be read (missing, refused login, bad certificate)

    AddressError (a ValueError)  why a string is not an address we can send to; the
                        callers turn it into a Problem where they know the position

A Problem is one finding, compiler style:

    issues/2016-12.yaml:14:7: blocks[3].image.alt: required (describe the image for
    people who cannot see it)                       [one line in real output]
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import msgspec

from newsletter.model import Location


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Problem(msgspec.Struct, frozen=True):
    where: Location
    key: str  # dotted path inside the file: "blocks[3].image.alt"; "" for the whole file
    message: str
    hint: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        parts = [str(self.where)]
        if self.key:
            parts.append(self.key)
        text = ": ".join(parts) + ": "
        if self.severity is Severity.WARNING:
            text += "warning: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class NewsletterError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 1


class InputError(NewsletterError):
    """One or more problems in a file the user wrote."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(NewsletterError):
    """The command line itself is wrong."""

    exit_code = 2


class StateError(NewsletterError):
    """The state database cannot be used as asked."""


class RenderError(NewsletterError):
    """Rendering failed on input that passed validation."""


class DeliveryError(NewsletterError):
    """Sending stopped or finished with failures."""


class MailboxError(NewsletterError):
    """The mailbox ``newsletter inbox`` reads cannot be opened, read or changed."""


class CheckFailed(InputError):
    """``check`` found errors (or warnings, under --strict); the problems were printed."""

    def __init__(self, problems: Iterable[Problem], summary: str) -> None:
        super().__init__(problems)
        self.args = (summary,)


class HeaderValueError(NewsletterError):
    """A value that would corrupt or inject a header line."""


class AddressError(ValueError):
    """Why a string is not an address we can send to."""
