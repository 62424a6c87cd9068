"""Progress while a send runs: a rich progress bar on a terminal, a log line otherwise.

In: each row's new state, as the send stage reports it. Out: the bar, or a line on
standard error every few seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from newsletter.cli.words import duration, eta

if TYPE_CHECKING:
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

    from newsletter.model import Limits

LOG_EVERY = 5.0


class Progress:
    """Call it with each row's new state; use it as a context manager around the run."""

    FINAL = frozenset({"sent", "failed", "unknown", "suppressed", "expired"})

    def __init__(self, total: int, limits: Limits | None = None) -> None:
        self.total = total
        self.limits = limits
        self.done = 0
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.last_log = self.started
        self.waits = 0  # waits for the limits so far (the first is always shown)
        self._bar: Bar | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty() and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=Console(stderr=True))
            self._task = self._bar.add_task("send", total=self.total, rate="")
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.done:
            self._log()

    def __call__(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        if state in self.FINAL:  # a deferred row comes round again: not done yet
            self.done += 1
        if self._bar is not None and self._task is not None:
            elapsed = max(1e-6, time.monotonic() - self.started)
            self._bar.update(self._task, completed=self.done,
                             rate=f"{self.done / elapsed:.1f}/s")
        elif time.monotonic() - self.last_log >= LOG_EVERY:
            self._log()

    def waiting(self, seconds: float, why: str) -> None:
        """The run waits for the limits: say so, with the time left by the limits."""
        self.waits += 1
        text = f"waiting for {why}, next in {seconds:.0f} s"
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, rate=text)
            return
        now = time.monotonic()
        if self.waits > 1 and now - self.last_log < LOG_EVERY:
            return
        self.last_log = now
        click.echo(f"progress: {self.done}/{self.total} done: {text}{self._left(seconds)}",
                   err=True)

    def _left(self, waiting: float = 0.0) -> str:
        """", about N left": by the rate so far, and never less than the limits allow
        (after the ``waiting`` seconds the run is waiting now)."""
        left = self.total - self.done
        if left <= 0:
            return ""
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        seconds = left / rate if rate else 0.0
        if self.limits is not None:
            seconds = max(seconds, waiting + (eta(self.limits, left) or 0.0))
        return f", about {duration(seconds)} left" if seconds else ""

    def _log(self) -> None:
        now = time.monotonic()
        self.last_log = now
        rate = self.done / max(1e-6, now - self.started)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        click.echo(f"progress: {self.done}/{self.total} done ({rate:.1f}/s{self._left()}): "
                   f"{counts}", err=True)
