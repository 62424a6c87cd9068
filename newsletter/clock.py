"""Time: the one clock every stage reads, and the UK wall-clock time deadlines are written in.

Stages never read the time themselves: they are given a Clock (``RealClock`` by the
command line; tests give ``FakeClock``, whose sleep only moves its time forward, or a
clock of their own). ``now()`` is POSIX time, which the ledger stores.

An issue's ``send_by`` is UK local time (Europe/London, GMT or BST as the date requires),
like the start and end of events: the network is a UK partnership and its editors write
the times they read on the office clock, whatever zone the sending machine runs in. A date
alone means until the end of that day (midnight that starts the next one). In the autumn
hour that happens twice, the earlier one counts: a deadline errs on the side of not
sending. ``instant`` is the POSIX time a deadline falls; ``words`` says it in every message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from typing import TYPE_CHECKING, Protocol

from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

ZONE = "Europe/London"


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall-clock time (the ledger stores it), asyncio sleeps."""

    def now(self) -> float:
        return time.time()

    def utc(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when someone sleeps: tests run limits in no real time."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        self.slept += max(0.0, seconds)
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- UK time


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


def utc_time(timestamp: float | None) -> str:
    """A moment as the ledger's messages show it: ``2017-03-10 09:00:12 UTC`` (None: -)."""
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def uk_date(timestamp: float) -> dt.date:
    """The day it is in the UK at ``timestamp``: an issue's date is written on that calendar."""
    return dt.datetime.fromtimestamp(timestamp, _zone()).date()


def uk_time(timestamp: float) -> str:
    """A moment on the same clock as the deadline: ``2017-03-10 09:00:12 UK time``."""
    return f"{dt.datetime.fromtimestamp(timestamp, _zone()):%Y-%m-%d %H:%M:%S} UK time"
