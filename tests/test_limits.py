"""The limiter, on a fake clock: no window ever holds more than its budget."""

from __future__ import annotations

import asyncio
import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.clock import FakeClock
from newsletter.delivery.limits import Limiter
from newsletter.model import Limits


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of grants in any half-open window [t, t + seconds)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times)),
               default=0)


async def grant(limiter: Limiter, clock: FakeClock, n: int, tasks: int) -> list[float]:
    times: list[float] = []

    async def worker(share: int) -> None:
        for _ in range(share):
            if await limiter.acquire():
                times.append(clock.now())

    shares = [n // tasks + (1 if i < n % tasks else 0) for i in range(tasks)]
    await asyncio.gather(*(worker(s) for s in shares))
    return times


@settings(max_examples=40, deadline=None)
@given(per_second=st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0]),
       per_minute=st.sampled_from([0, 7, 30, 100]),
       per_hour=st.sampled_from([0, 50, 500]),
       tasks=st.integers(1, 6), n=st.integers(1, 300))
def test_the_limiter_never_exceeds_any_budget_in_any_window(
        per_second: float, per_minute: int, per_hour: int, tasks: int, n: int) -> None:
    clock = FakeClock()
    limits = Limits(per_second=per_second, per_minute=per_minute, per_hour=per_hour,
                    per_day=0, concurrency=tasks)
    times = asyncio.run(grant(Limiter(limits, clock), clock, n, tasks))
    assert len(times) == n
    if per_second >= 1:
        assert most_in_any_window(times, 1.0) <= per_second
    elif per_second > 0:
        assert most_in_any_window(times, 1 / per_second) <= 1
    if per_minute:
        assert most_in_any_window(times, 60.0) <= per_minute
    if per_hour:
        assert most_in_any_window(times, 3600.0) <= per_hour


def test_the_limiter_uses_its_whole_budget_rather_than_crawling() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_minute=30, per_day=0), clock)
    times = asyncio.run(grant(limiter, clock, 90, 3))
    # 90 messages at 30/min: the last goes out at the start of the third minute.
    assert times[-1] - times[0] == 120.0
    assert most_in_any_window(times, 60.0) == 30


def test_a_restart_does_not_get_a_fresh_budget() -> None:
    clock = FakeClock()
    first = asyncio.run(grant(Limiter(Limits(per_minute=30, per_day=0), clock), clock, 20, 2))
    clock.t += 10  # the run dies; a new one starts ten seconds later
    second_limiter = Limiter(Limits(per_minute=30, per_day=0), clock, recent=first)
    second = asyncio.run(grant(second_limiter, clock, 40, 2))
    assert most_in_any_window(first + second, 60.0) <= 30


def test_the_daily_cap_counts_what_earlier_runs_sent() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_minute=0, per_day=100), clock, sent_today=95)

    async def take() -> list[bool]:
        return [await limiter.acquire() for _ in range(8)]

    assert asyncio.run(take()) == [True] * 5 + [False] * 3


def test_slow_down_pauses_every_connection_and_grows_while_complaints_continue() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_minute=0, per_day=0, retry_base=1.0, retry_max=8.0), clock)
    delays = [limiter.slow_down() for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    start = clock.now()
    asyncio.run(grant(limiter, clock, 3, 3))
    assert clock.now() - start == 8.0  # everyone waited for the last pause
    limiter.calm()
    assert limiter.slow_down() == 1.0


def test_batches_pause_between_them() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_minute=0, per_day=0, batch_size=10, batch_pause=30.0), clock)
    times = asyncio.run(grant(limiter, clock, 25, 2))
    starts = sorted(set(times))
    assert starts == [clock.t - 60.0, clock.t - 30.0, clock.t]
    assert [times.count(t) for t in starts] == [10, 10, 5]
