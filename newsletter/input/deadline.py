"""An issue's send-by deadline: read from the YAML, the instant it falls, said in words.

In: ``send_by`` beside ``date`` in ``issues/<slug>.yaml`` (load.py reads it here). Out:
``Issue.send_by`` as written, the POSIX time the send stage compares with its clock
(delivery.py refuses a run started after it; send.py starts no message after it), and the
words every message uses for it.

The deadline is UK local time (Europe/London, GMT or BST as the date requires), like the
start and end of events: the network is a UK partnership and its editors write the times
they read on the office clock, whatever zone the sending machine runs in. A date alone
means until the end of that day (midnight that starts the next one). In the autumn hour
that happens twice, the earlier one counts: a deadline errs on the side of not sending.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError
from newsletter.input.fields import Fields, Reader
from newsletter.input.yamlsource import Scalar, describe

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

ZONE = "Europe/London"
KEY = "send_by"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAY_AND_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]")


def read(r: Reader, f: Fields, date: dt.date | None) -> dt.date | None:
    """``send_by``: a date and time (the exact form of event times), or a date.

    Problems are recorded on ``r`` like any other field's; so is a deadline before the
    issue's own ``date``.
    """
    if not f.has(KEY):
        return None
    node = f.values[KEY]
    text = node.text.strip() if isinstance(node, Scalar) else ""
    value: dt.date | None
    if _DAY.fullmatch(text):
        value = r.date(f, KEY)
    elif _DAY_AND_TIME.match(text):  # the rest of the form is checked as for event times
        value = r.datetime(f, KEY)
    else:
        r.error(node, f.key(KEY), "expected a date like 2017-03-10 or a date and time like "
                f"2017-03-10 09:00, found {describe(node)}",
                "UK local time, 24-hour clock; a date alone means until the end of that day")
        return None
    if value is not None and date is not None and _day(value) < date:
        r.error(node, f.key(KEY), f"{text} is before the issue's date, {date:%Y-%m-%d}",
                "the deadline for sending an issue cannot come before the issue")
        return None
    return value


def _day(send_by: dt.date) -> dt.date:
    return send_by.date() if isinstance(send_by, dt.datetime) else send_by


@functools.cache
def _zone() -> ZoneInfo:
    # imported here: only the send stage needs the zone, and every build loads this module
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(ZONE)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise NewsletterError(
            f"the time zone {ZONE} is unknown on this machine, so send_by cannot be checked "
            "(install Debian's tzdata package, or `pip install tzdata` in the venv)") from e


def instant(send_by: dt.date) -> float:
    """The POSIX time at which the deadline falls."""
    if isinstance(send_by, dt.datetime):
        local = send_by
    else:  # until the end of that day
        local = dt.datetime.combine(send_by + dt.timedelta(days=1), dt.time())
    return local.replace(tzinfo=_zone(), fold=0).timestamp()


def passed(send_by: dt.date | None, now: float) -> bool:
    """True when there is a deadline and ``now`` is at or after it."""
    return send_by is not None and now >= instant(send_by)


def words(send_by: dt.date) -> str:
    """The deadline as the editor wrote it, with its zone: for every message about it."""
    if isinstance(send_by, dt.datetime):
        shown = f"{send_by:%Y-%m-%d %H:%M:%S}".removesuffix(":00")
        return f"{shown} UK time"
    return f"{send_by:%Y-%m-%d} (until the end of that day, UK time)"


def uk_time(timestamp: float) -> str:
    """A moment on the same clock as the deadline: ``2017-03-10 09:00:12 UK time``."""
    return f"{dt.datetime.fromtimestamp(timestamp, _zone()):%Y-%m-%d %H:%M:%S} UK time"
