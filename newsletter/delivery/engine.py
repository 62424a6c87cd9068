"""The send stage: deliver the ledger's due rows over SMTP, and record every outcome.

In: an issue whose recipients are already in the ledger (ledger.snapshot), a function that
turns a Recipient into the exact message bytes (personalize.assemble, then DKIM), the SMTP
transport and the limits. Out: ledger rows moved forward, one commit per step, and a
RunResult saying why the run ended.

How a message goes, on one of ``limits.concurrency`` connections (aiosmtplib serialises a
connection, so concurrency means several of them):

    limiter.acquire()            every budget, shared by all connections
    session.connect()            unless open; retried, and no row is touched until it works
    begin: suppressed? -> suppressed; else attempting (committed before any byte is sent)
    MAIL, RCPT, DATA             the raw bytes, one recipient, never re-serialised
    record the outcome           sent / deferred (next_attempt_at) / failed / unknown

With a send-by deadline (deadline.py), no message starts at or after it: the run stops
as at the daily cap, the rest stay pending, and a deferred row whose next attempt falls
after it is left deferred rather than waited for (moving send_by in the issue lets the
next run send both).

A kill at any point leaves each row either untouched, ``attempting`` (resent on the next
run, same Message-ID: the only possible duplicate) or settled. Outcomes are classified
by outcomes.py. The database is touched by one thread (LedgerThread), which commits
whatever steps the connections have queued together, in the order they were queued:
``attempting`` is durable before the first byte of the message is sent, and an outcome
before the same connection's next row is marked attempting (a connection does not wait for
its outcome's commit, only for the next ``attempting``, which that commit precedes); ten
connections cost one fsync, not ten.
One connection is a session.Session; this module decides what each outcome does to the
row, to the stream (slow down, stop) and to the member (bounced).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec

from newsletter.clock import Clock, RealClock
from newsletter.delivery import ledger
from newsletter.delivery.limits import DAY, HOUR, Limiter, local_only
from newsletter.delivery.limits import windows as limits_windows
from newsletter.delivery.replies import Action, Reply, Verdict
from newsletter.delivery.session import Attempt, Session, Transport
from newsletter.email.wire import Outgoing
from newsletter.errors import NewsletterError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.model import DeliveryState, Limits, Recipient

T = TypeVar("T")

LINGER = 60.0  # wait inside the run for deferred rows due within this many seconds
POLICY_STREAK = 3  # consecutive 5.7.x refusals that stop the run (circuit breaker)
CONNECT_FAILURES = 5  # consecutive failed connections that stop the run
RETRIES_IN_RUN = 5  # "nothing delivered" retries of one row before it waits its turn
FETCH = 500  # rows read from the ledger at a time
HEARTBEAT_EVERY = 5.0
LEASE = 30.0  # PostgreSQL: a sender silent this long is dead; its rows go to the others
PERMIT_LOCK = 0x6E6C0002  # taken by every sender while it counts the shared limits
_STOPPED = object()


class _Wait(Exception):
    """The shared limits have no room yet: (seconds until they do, the full window)."""

    def __init__(self, seconds: float, window: float) -> None:
        super().__init__(seconds, window)
        self.seconds, self.window = seconds, window

Build = Callable[[Recipient, dt.datetime], bytes | Outgoing]


# --------------------------------------------------------------------------- the ledger thread


class LedgerThread:
    """The one thread that touches the database while sending, with group commit.

    ``await ledger_thread(op)`` runs ``op(conn)`` inside a transaction shared with whatever
    other operations are waiting, commits, then returns op's result: the step is durable
    when the await returns. Each op runs in a savepoint, so one failing op does not undo
    the others. The thread also beats the send lock's heartbeat.
    """

    def __init__(self, path: db.Target, lock: ledger.Lock | None, *, synchronous: str = "FULL",
                 beat_every: float = HEARTBEAT_EVERY) -> None:
        self.path = path
        self.synchronous = synchronous
        self.beat_every = beat_every
        # the heartbeat: the send lock's (SQLite), or this sender's lease (PostgreSQL)
        self.beat: Callable[[db.Connection, float], None] | None = None
        if lock is not None:
            self.beat = functools.partial(_lock_beat, lock)
        self._requests: queue.SimpleQueue[
            tuple[Callable[[db.Connection], Any], asyncio.Future[Any],
                  asyncio.AbstractEventLoop] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join()

    async def __call__(self, op: Callable[[db.Connection], T]) -> T:
        return await self.submit(op)

    def submit(self, op: Callable[[db.Connection], T]) -> asyncio.Future[T]:
        """Queue ``op`` without waiting: the future is done once its commit is durable.

        Operations commit in the order they were submitted, so any later operation's
        commit includes (or follows) this one's.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._requests.put((op, future, loop))
        return future

    def _run(self) -> None:
        try:
            conn = db.connect(self.path)
            db.set_synchronous(conn, self.synchronous)
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        last_beat = 0.0
        try:
            while True:
                try:
                    first = self._requests.get(timeout=self.beat_every)
                except queue.Empty:
                    first = ()  # type: ignore[assignment]
                batch = [first]
                while True:
                    try:
                        batch.append(self._requests.get_nowait())
                    except queue.Empty:
                        break
                closing = None in batch
                ops = [item for item in batch if item]
                now = time.time()
                beat = self.beat is not None and now - last_beat >= self.beat_every
                if ops or beat:
                    self._commit(conn, ops, beat, now)
                    if beat:
                        last_beat = now
                if closing:
                    return
        finally:
            conn.close()

    def _commit(self, conn: db.Connection, ops: list[Any], beat: bool, now: float) -> None:
        results: list[tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, Any]] = []
        try:
            with db.transaction(conn):
                for op, future, loop in ops:
                    value, error = db.in_savepoint(conn, op)
                    results.append((future, loop, value, error))
                if beat and self.beat is not None:
                    self.beat(conn, now)
        except db.Error as e:
            db.abandon(conn)
            error = NewsletterError(f"{db.describe(self.path)}: the ledger could not be "
                                    f"written ({e}); sending stopped")
            results = [(future, loop, None, error) for _, future, loop in ops]
        # One wake-up of each waiting event loop per commit, not one per operation.
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for future, loop, value, error in results:
            settled.setdefault(loop, []).append((future, value, error))
        for loop, outcomes in settled.items():
            loop.call_soon_threadsafe(_settle_futures, outcomes)


def _settle_futures(outcomes: list[tuple[asyncio.Future[Any], Any, Any]]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


# --------------------------------------------------------------------------- the run


class RunResult(msgspec.Struct):
    """Why a run ended and what it did (the ledger has the totals)."""

    outcomes: Counter[str] = msgspec.field(default_factory=Counter)
    stopped: str | None = None  # why the run stopped early (None: nothing more to do now)
    fatal: bool = False  # stopped by an error the user must fix (exit 1)
    resent_after_crash: int = 0
    daily_cap: bool = False
    past_deadline: bool = False  # stopped by the send-by deadline
    interrupted: bool = False


class Sender:
    """One run over one issue's due rows."""

    def __init__(self, *, issue: str, sender: str, transport: Transport, limits: Limits,
                 database: db.Target, build: Build, lock: ledger.Lock | None = None,
                 clock: Clock | None = None, retry_unknown: bool = False,
                 on_outcome: Callable[[str], None] | None = None,
                 on_wait: Callable[[float, str], None] | None = None,
                 synchronous: str = "FULL", deadline: float | None = None,
                 lease: float = LEASE) -> None:
        """``deadline``: the send-by deadline as POSIX time; no message starts at or after it.

        On PostgreSQL the run is one of possibly several senders of the issue: it claims
        rows in batches, holds them while its heartbeat (every ``lease`` / 3 s) is younger
        than ``lease`` seconds, and counts the limits' windows with the others.
        """
        self.issue = issue
        self.sender = sender
        self.transport = transport
        self.limits = limits
        self.build = build
        self.clock = clock or RealClock()
        self.retry_unknown = retry_unknown
        self.deadline = deadline
        self.on_outcome = on_outcome or (lambda action: None)
        self.on_wait = on_wait
        self.shared = db.is_postgresql(database)
        self.lease = lease
        self.me: int | None = None  # this sender's id among the issue's senders (shared)
        self.windows = limits_windows(limits) if self.shared else []
        self.db = LedgerThread(database, lock, synchronous=synchronous,
                               beat_every=min(HEARTBEAT_EVERY, lease / 3))
        self.result = RunResult()
        self._queue: asyncio.Queue[ledger.Delivery | None] = asyncio.Queue(
            maxsize=max(2 * limits.concurrency, 8))
        self._stop = asyncio.Event()
        self._policy_streak = 0
        self._connect_failures = 0
        self._retries: Counter[int] = Counter()
        self._recording: set[asyncio.Future[None]] = set()  # outcomes not yet committed
        self._ledger_error: BaseException | None = None
        self.limiter: Limiter | None = None

    # ---------------------------------------------------------------- control

    def stop(self, why: str, *, fatal: bool = False) -> None:
        if not self._stop.is_set():
            self.result.stopped = why
            self.result.fatal = fatal
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _interrupt(self) -> None:
        self.result.interrupted = True
        self.stop("interrupted (Ctrl-C): the messages in flight were finished")
        with contextlib.suppress(ValueError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    # ---------------------------------------------------------------- the loop

    async def run(self) -> RunResult:
        self.db.start()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, self._interrupt)
                handled.append(sig)
        try:
            now = self.clock.now()
            if self.shared:
                self.me = me = await self.db(
                    lambda c: ledger.join_send(c, self.issue, now, self.lease))
                self.db.beat = functools.partial(_sender_beat, me)
                self.limiter = Limiter(local_only(self.limits), self.clock)
            else:
                self.result.resent_after_crash = await self.db(
                    lambda c: ledger.mark_crashed(c, self.issue))
                recent = await self.db(lambda c: _recent_sends(c, now))
                self.limiter = Limiter(self.limits, self.clock, recent=recent[1],
                                       sent_today=recent[0])
            await self.db(lambda c: ledger.expire(c, self.issue, now,
                                                  self.limits.retry_deadline))
            self.limiter.on_wait = self.on_wait
            workers = [asyncio.create_task(self._worker())
                       for _ in range(max(1, self.limits.concurrency))]
            first = True
            while not self.stopping:
                await self._dispatch(include_unknown=first and self.retry_unknown)
                first = False
                if self.stopping:
                    break
                upcoming = await self.db(lambda c: ledger.next_deferred(c, self.issue))
                if upcoming is None or (self.deadline is not None and upcoming >= self.deadline):
                    break  # a retry due after the deadline stays deferred
                wait = upcoming - self.clock.now()
                if wait > LINGER:
                    break
                if wait > 0:
                    await self._sleep(wait)
            for _ in workers:
                await self._queue.put(None)
            await asyncio.gather(*workers)
            await asyncio.gather(*self._recording, return_exceptions=True)
            if self._ledger_error is not None:
                raise self._ledger_error
        finally:
            for sig in handled:
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)
            if self.me is not None:
                me = self.me
                with contextlib.suppress(NewsletterError, *db.Error):
                    await self.db(lambda c: ledger.leave_send(c, me))
            self.db.close()
        return self.result

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _unless_stopped(self, waiting: Coroutine[Any, Any, T]) -> T | None:
        """``waiting``'s result, or None when the run stops first (it is cancelled then).

        Every wait of the run ends at a stop: Ctrl-C or SIGTERM during a batch pause or a
        421 back-off stops at once instead of sleeping it out. The limiter changes nothing
        until its wait is over, so cancelling it leaves every budget as it was.
        """
        task = asyncio.ensure_future(waiting)
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _dispatch(self, *, include_unknown: bool) -> None:
        """Queue every due row once, in id order; return when they are all settled."""
        if self.shared:
            await self._dispatch_claimed(include_unknown=include_unknown)
            return
        after = 0
        while not self.stopping:
            batch = await self.db(functools.partial(
                ledger.due, issue=self.issue, now=self.clock.now(), after=after, limit=FETCH,
                include_unknown=include_unknown))
            if not batch:
                break
            for job in batch:
                if self.stopping:
                    break
                await self._queue.put(job)
            after = batch[-1].id
        await self._drained()

    async def _drained(self) -> None:
        """Return when every queued row is settled, or the run stops."""
        joined = asyncio.ensure_future(self._queue.join())
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({joined, stopped}, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()
        stopped.cancel()

    async def _dispatch_claimed(self, *, include_unknown: bool) -> None:
        """One of several senders: claim batches of due rows and queue them; when nothing
        is left to claim, wait while other senders hold unsettled rows (should one die,
        its rows become claimable once its lease runs out), then return."""
        me = self.me
        assert me is not None
        size = max(10, 4 * self.limits.concurrency)
        while not self.stopping:
            batch, crashed = await self.db(functools.partial(
                ledger.claim, issue=self.issue, me=me, now=self.clock.now(),
                lease=self.lease, limit=size, include_unknown=include_unknown))
            self.result.resent_after_crash += crashed
            for job in batch:
                if self.stopping:
                    break
                await self._queue.put(job)
            if batch:
                continue
            await self._drained()
            if self.stopping:
                break
            held = await self.db(lambda c: ledger.claimed_elsewhere(c, self.issue, me))
            if not held:
                break
            await self._sleep(min(1.0, self.lease / 4))
        await self._drained()

    async def _worker(self) -> None:
        session = Session(self.transport)
        try:
            while True:
                job = await self._queue.get()
                try:
                    if job is None:
                        return
                    if not self.stopping:
                        await self._deliver(job, session)
                finally:
                    self._queue.task_done()
        finally:
            await session.quit()

    # ---------------------------------------------------------------- one message

    async def _deliver(self, job: ledger.Delivery, session: Session) -> None:
        assert self.limiter is not None
        granted = self.limiter.try_acquire(until=self.deadline)
        if granted is None:
            if self._recording:  # about to wait: count the outcomes in flight first
                await asyncio.wait(set(self._recording))
            granted = await self._unless_stopped(self.limiter.acquire(until=self.deadline))
            if granted is None:
                return  # stopped while waiting for the limits (a batch pause, a back-off)
        if not granted:
            if self.limiter.day_used_up:
                self.result.daily_cap = True
                self.stop("the daily cap (limits.per_day) is reached")
            else:
                self._deadline_reached()
            return
        if not await self._connected(session):
            self.limiter.give_back()
            return  # the run is stopping; the row was not touched
        now = self.clock.now()
        if self.deadline is not None and now >= self.deadline:  # connecting took that long
            self.limiter.give_back()
            self._deadline_reached()
            return
        if self.shared:
            started, now = await self._begin_shared(job)
            if started is _STOPPED:
                self.limiter.give_back()
                return
        else:
            started = await self.db(lambda c: _begin(c, job, now))
        if not started:
            self.limiter.give_back()
            self._count("suppressed" if started is False else "skipped")
            return
        try:
            data = self.build(job.recipient, dt.datetime.fromtimestamp(now, dt.UTC))
        except (NewsletterError, ValueError) as e:
            attempt = Attempt(Verdict(Action.FAIL, why="the message could not be built"),
                              Reply(None, None, f"not sent: {e}", "build"))
        else:
            # the envelope sender names the delivery (bounces+<token>@...) when configured
            sender = job.recipient.return_path or self.sender
            attempt = await session.send(sender, job.recipient.address, data)
        await self._settle(job, attempt, now)

    async def _begin_shared(self, job: ledger.Delivery) -> tuple[bool | object | None, float]:
        """``_begin`` for one of several senders, and when: wait while the shared limits are
        full (_STOPPED: the run stopped meanwhile, or the daily cap or the deadline did)."""
        me, windows = self.me, self.windows
        now = self.clock.now()
        while not self.stopping:
            now = self.clock.now()
            try:
                return await self.db(functools.partial(_begin, job=job, now=now, me=me,
                                                       windows=windows)), now
            except _Wait as full:
                if full.window >= DAY:
                    self.result.daily_cap = True
                    self.stop("the daily cap (limits.per_day) is reached")
                    break
                if self.deadline is not None and now + full.seconds >= self.deadline:
                    self._deadline_reached()
                    break
                if full.seconds >= 1.0 and self.on_wait is not None:
                    self.on_wait(full.seconds, "the rate limit (shared by every sender)")
                await self._sleep(full.seconds)
        return _STOPPED, now

    def _deadline_reached(self) -> None:
        if not self.stopping:
            self.result.past_deadline = True
            self.stop("send-by deadline reached" if self.clock.now() >= (self.deadline or 0.0)
                      else "the sending limits allow no more messages before the send-by "
                      "deadline")

    async def _connected(self, session: Session) -> bool:
        """Open the session before a row is touched, retrying with growing pauses.

        Connection trouble is about the server, not the recipient: the rows stay pending.
        False when the run stops first (a refused login, a bad certificate, no STARTTLS,
        or CONNECT_FAILURES failures in a row across all connections).
        """
        while not self.stopping:
            failed = await session.connect()
            if failed is None:
                self._connect_failures = 0
                return True
            self._connect_failures += 1
            if failed.verdict.action is Action.STOP:
                self.stop(_stopped_by(failed), fatal=True)
            elif self._connect_failures >= CONNECT_FAILURES:
                self.stop(f"could not connect to {self.transport.where} {CONNECT_FAILURES} "
                          f"times in a row: {_said(failed.reply)}\n  check smtp.host and "
                          "smtp.port (or NEWSLETTER_SMTP_HOST and _PORT) and that the server "
                          "is up", fatal=True)
            else:
                base = min(1.0, self.limits.retry_base)
                await self._sleep(base * 2 ** (self._connect_failures - 1))
        return False

    async def _settle(self, job: ledger.Delivery, attempt: Attempt, started: float) -> None:
        verdict, reply = attempt.verdict, attempt.reply
        action = verdict.action
        limiter = self.limiter
        assert limiter is not None
        now = self.clock.now()
        attempts = job.attempts + 1
        first = job.first_attempt_at or started
        state = DeliveryState.DEFERRED
        next_at: float | None = now
        bounce = False
        if verdict.slow_down:
            limiter.slow_down()
        if action is Action.SENT:
            state, next_at = DeliveryState.SENT, None
            limiter.calm()
            self._policy_streak = 0
        elif action in (Action.DEFER, Action.POLICY):
            next_at = now + self._backoff(attempts)
            if action is Action.POLICY:
                self._policy_streak += 1
        elif action is Action.RETRY:
            self._retries[job.id] += 1
            if self._retries[job.id] > RETRIES_IN_RUN:
                next_at = now + self._backoff(attempts)
        elif action is Action.BOUNCE:
            state, next_at, bounce = DeliveryState.FAILED, None, True
        elif action is Action.FAIL:
            state, next_at = DeliveryState.FAILED, None
        elif action is Action.UNKNOWN:
            state, next_at = DeliveryState.UNKNOWN, None
        # Action.STOP: nothing was delivered; the row waits for the next run (deferred, now).
        if state is DeliveryState.DEFERRED and next_at is not None \
                and next_at > first + self.limits.retry_deadline:
            state, next_at = DeliveryState.EXPIRED, None
        # Not awaited: the ledger commits in order, so this outcome is durable before this
        # connection's next row is marked attempting, let alone sent; the count waits for it.
        me = self.me
        recorded = self.db.submit(lambda c: _record(c, job, state, reply, now, next_at, bounce,
                                                    me))
        self._recording.add(recorded)
        recorded.add_done_callback(functools.partial(self._recorded, str(state)))
        if action is Action.STOP:
            self.stop(_stopped_by(attempt), fatal=True)
        elif self._policy_streak >= POLICY_STREAK:
            self.stop(f"{POLICY_STREAK} messages in a row were refused by the server's policy "
                      f"(circuit breaker): {_said(reply)}\n  this is about the sender, not the "
                      "recipients: check SPF, DKIM and DMARC for the sender's domain and the "
                      "account's sending limits, then run the same command again", fatal=True)

    def _recorded(self, state: str, future: asyncio.Future[None]) -> None:
        self._recording.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._count(state)
        elif self._ledger_error is None:
            self._ledger_error = error
            self.stop(str(error), fatal=True)

    def _backoff(self, attempts: int) -> float:
        delay: float = self.limits.retry_base * 2 ** max(0, attempts - 1)
        return min(self.limits.retry_max, delay)

    def _count(self, state: str) -> None:
        self.result.outcomes[state] += 1
        self.on_outcome(state)


def _said(reply: Reply) -> str:
    code = f"{reply.code} " if reply.code else ""
    return f"{code}{reply.text} (at {reply.stage})"


def _stopped_by(attempt: Attempt) -> str:
    """Why a STOP verdict ends the run, with the server's words when it said any."""
    why, reply = attempt.verdict.why, attempt.reply
    if reply.text == why:  # our own finding (no STARTTLS, a bad certificate)
        return f"{why} (at {reply.stage})"
    return f"{why}\n  server said: {_said(reply)}"


# --------------------------------------------------------------------------- ledger steps
# These run on the ledger thread, each inside the shared transaction.


def _lock_beat(lock: ledger.Lock, conn: db.Connection, now: float) -> None:
    ledger.heartbeat(conn, lock, now)


def _sender_beat(me: int, conn: db.Connection, now: float) -> None:
    ledger.sender_heartbeat(conn, me, now)


def _recent_sends(conn: db.Connection, now: float) -> tuple[int, list[float]]:
    """(messages sent in the last 24 h, send times in the last hour), across all runs."""
    return ledger.sent_since(conn, now - DAY), ledger.sent_times_since(conn, now - HOUR)


def _begin(conn: db.Connection, job: ledger.Delivery, now: float, me: int | None = None,
           windows: list[tuple[int, float]] | None = None) -> bool | None:
    """Re-check suppression, then mark the row attempting. False: suppressed; None: not due
    (or, shared, no longer this sender's).

    ``windows``: the limits shared with other senders: the row's start takes a permit in
    the same transaction, or _Wait says how long until one is free (nothing changed).
    """
    if members.is_suppressed(conn, job.subscriber_id, job.list_name):
        ledger.mark_suppressed(conn, job.id, now, me)
        return False
    if not ledger.begin_attempt(conn, job.id, now, me):
        return None
    if windows:
        db.advisory_lock(conn, PERMIT_LOCK)
        wait, window = ledger.take_permit(conn, now, windows)
        if wait > 0:
            raise _Wait(wait, window)  # the savepoint undoes the begin
    return True


def _record(conn: db.Connection, job: ledger.Delivery, state: DeliveryState,
            reply: Reply, now: float, next_at: float | None, bounce: bool,
            me: int | None = None) -> None:
    ledger.record(conn, job.id, state, reply, now, next_at, me)
    if bounce:
        members.mark_bounced(conn, job.subscriber_id, job.list_name,
                             f"{reply.code or ''} {reply.text}".strip())
