"""Sending limits shared by every connection: part of the send stage.

In: model.Limits, the count of messages the ledger says were sent recently (so a restart
does not get a fresh budget), and a clock. Out: ``await limiter.acquire()`` before each
message, which returns when sending it keeps every budget, or False when the daily cap
is used up (or when the budgets allow no message before ``until``, the send-by deadline:
the run ends then rather than wait for a message it may not start).

Each per-second/minute/hour limit is a token bucket whose tokens carry the time they were
spent: a token comes back exactly one window after it was used. A classic refilling bucket
of capacity C lets up to 2C through in some window (a full bucket, then the refill); this
form never lets more than C through in ANY window of that length, which is what a provider
means by "30 messages a minute". ``slow_down`` (421, 451, 454) pauses the whole stream,
doubling while the server keeps complaining. Batches add a pause after every N messages.

The clock is injected: tests use FakeClock, whose sleep() only moves its time forward.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from newsletter.clock import Clock
from newsletter.model import Limits

# The limit windows, in seconds; the daily cap is a rolling 24 h, counted from the ledger.
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


class Window:
    """At most ``limit`` messages in any ``seconds``-long window."""

    def __init__(self, limit: int, seconds: float, spent: Iterable[float] = ()) -> None:
        self.limit = limit
        self.seconds = seconds
        self._spent: deque[float] = deque(sorted(spent)[-limit:] if limit else ())

    def wait(self, now: float) -> float:
        """Seconds until one more message fits (0: now)."""
        while self._spent and self._spent[0] <= now - self.seconds:
            self._spent.popleft()
        if len(self._spent) < self.limit:
            return 0.0
        return self._spent[0] + self.seconds - now

    def spend(self, now: float) -> None:
        self._spent.append(now)


def windows(limits: Limits) -> list[tuple[int, float]]:
    """Every (messages, seconds) window of the limits, the daily cap included: what the
    senders sharing a PostgreSQL database count together (ledger.take_permit)."""
    found = []
    if limits.per_second > 0:
        found.append((int(limits.per_second), 1.0) if limits.per_second >= 1
                     else (1, 1.0 / limits.per_second))
    for limit, seconds in ((limits.per_minute, MINUTE), (limits.per_hour, HOUR),
                           (limits.per_day, DAY)):
        if limit > 0:
            found.append((limit, seconds))
    return found


def local_only(limits: Limits) -> Limits:
    """The limits one sender keeps to itself when the windows are shared: batches and the
    server's requests to slow down."""
    return msgspec.structs.replace(limits, per_second=0, per_minute=0, per_hour=0, per_day=0)


class Limiter:
    """Every budget in model.Limits, shared by all connections of one run."""

    def __init__(self, limits: Limits, clock: Clock, *, recent: Iterable[float] = (),
                 sent_today: int = 0) -> None:
        """``recent``: send times (from the ledger) within the last hour, across runs."""
        recent = tuple(recent)
        self.clock = clock
        self.windows = []
        if limits.per_second > 0:
            # Fractional rates (0.5/s) become "1 per 2 s".
            per, seconds = (int(limits.per_second), 1.0) if limits.per_second >= 1 \
                else (1, 1.0 / limits.per_second)
            self.windows.append(Window(per, seconds, recent))
        if limits.per_minute > 0:
            self.windows.append(Window(limits.per_minute, MINUTE, recent))
        if limits.per_hour > 0:
            self.windows.append(Window(limits.per_hour, HOUR, recent))
        self.daily_left = (limits.per_day - sent_today) if limits.per_day > 0 else None
        self.batch_size = limits.batch_size
        self.batch_pause = limits.batch_pause
        self.backoff_base = max(0.05, min(limits.retry_base, 5.0))
        self.backoff_max = max(self.backoff_base, min(limits.retry_max, 300.0))
        self.granted = 0
        self.paused_until = 0.0
        self.paused_for = ""  # why the stream is paused: the batch pause, or the server
        # told of every wait of a second or more: (seconds, what is waited for)
        self.on_wait: Callable[[float, str], None] | None = None
        self._complaints = 0
        self._lock = asyncio.Lock()

    @property
    def day_used_up(self) -> bool:
        return self.daily_left is not None and self.daily_left <= 0

    async def acquire(self, until: float | None = None) -> bool:
        """Wait until one more message keeps every budget; False when today's cap is used.

        Also False, at once, when the budgets would only allow the message at or after
        ``until`` (the send-by deadline).
        """
        async with self._lock:  # one waiter at a time: first come, first served
            while True:
                granted = self._grant(until)
                if granted is not None:
                    return granted
                now = self.clock.now()
                wait = self._wait(now)
                if wait >= 1.0 and self.on_wait is not None:
                    pause = self.paused_until - now
                    self.on_wait(wait, self.paused_for if pause >= wait else "the rate limit")
                await self.clock.sleep(wait)

    def try_acquire(self, until: float | None = None) -> bool | None:
        """``acquire`` when it would answer at once (True or False); None when it would wait
        (or someone is already waiting): then await ``acquire``. No await: with the limits
        off, a message costs no trip through the event loop here."""
        if self._lock.locked():
            return None
        return self._grant(until)

    def _wait(self, now: float) -> float:
        return max([self.paused_until - now, *(w.wait(now) for w in self.windows)])

    def _grant(self, until: float | None) -> bool | None:
        """Spend one message of every budget if it fits now; False: the daily cap is used,
        or the message would start at or after ``until``; None: not yet."""
        if self.day_used_up:
            return False
        now = self.clock.now()
        wait = self._wait(now)
        if until is not None and now + max(0.0, wait) >= until:
            return False
        if wait > 0:
            return None
        for window in self.windows:
            window.spend(now)
        self.granted += 1
        if self.daily_left is not None:
            self.daily_left -= 1
        if self.batch_size and self.granted % self.batch_size == 0 and self.batch_pause:
            self.paused_until = max(self.paused_until, now + self.batch_pause)
            self.paused_for = "the pause between batches"
        return True

    def give_back(self) -> None:
        """A granted message that was not sent after all (suppressed, nothing transmitted)."""
        if self.daily_left is not None:
            self.daily_left += 1

    def slow_down(self) -> float:
        """The server asked us to slow down: pause everyone, longer each time in a row."""
        delay: float = min(self.backoff_max, self.backoff_base * 2.0 ** self._complaints)
        self._complaints += 1
        self.paused_until = max(self.paused_until, self.clock.now() + delay)
        self.paused_for = "the server, which asked us to slow down"
        return delay

    def calm(self) -> None:
        """A message went through: the next complaint starts the backoff afresh."""
        self._complaints = 0
