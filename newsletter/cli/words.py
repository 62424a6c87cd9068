"""What the sender reads about a send: the plan, the report, the status, in words.

In: the values the delivery stage returns (Plan, SendReport, SendStatus). Out: lines of
text, each with the stream it belongs on (standard output, or standard error for what
needs attention), and the exit code a send ends with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from newsletter import clock as uk
from newsletter.delivery.campaign import Plan, SendReport
from newsletter.delivery.limits import DAY
from newsletter.delivery.status import SendStatus
from newsletter.model import DeliveryState, Issue, Limits

if TYPE_CHECKING:
    from newsletter.pipeline import Readiness

INTERRUPTED = 130  # the exit code of a send stopped by Ctrl-C with members still to send

Line = tuple[str, bool]  # (text, for standard error)


def late_note(issue: Issue, now: float) -> str | None:
    """For a proof or a dry run, which are not refused: the deadline has passed."""
    if issue.send_by is None or not uk.passed(issue.send_by, now):
        return None
    return (f"note: the send-by deadline of {issue.slug}, {uk.words(issue.send_by)}, "
            "has passed: sending it to a list would be refused")


def plan_text(plan: Plan, ready: Readiness | None = None) -> str:
    if not plan.resuming:
        each = ", each member once" if len(plan.lists) > 1 else ""
        lines = [f"{plan.slug}: send to {plan.lists_text}: {plan.due} recipients{each} "
                 "(unsubscribed, bounced and suppressed members are not included)",
                 f"  subject: {plan.subject}", f"  from:    {plan.sender}",
                 _limits_line(plan, plan.due)]
        if ready is not None:
            lines += readiness_lines(plan, ready)
        return "\n".join(lines)
    c = plan.counts
    added = {name for name, _ in plan.adding}
    before = [name for name in plan.lists or (plan.list_name,) if name not in added]
    lines = [f"{plan.slug}: resuming the send to list{'s' * (len(before) > 1)} "
             f"{', '.join(before)} started "
             f"{uk.utc_time(plan.started_at)}: {counts_text(c)}"]
    for name, n in plan.adding:
        lines.append(f"  adding list {name}: {n} recipient{'s' * (n != 1)} (its members "
                     "who have had this issue through another list are skipped)")
    if plan.adding:
        lines.append(f"  subject: {plan.subject}")
    if plan.senders:
        lines.append(f"  joining {plan.senders} other sender{'s' * (plan.senders != 1)} of "
                     "this issue: each message goes out once, the limits count for all")
        if c[DeliveryState.ATTEMPTING]:
            lines.append(f"  {c[DeliveryState.ATTEMPTING]} in flight at the other senders (if "
                         "one stopped, they are sent again with the same Message-ID)")
    elif c[DeliveryState.ATTEMPTING]:
        lines.append(f"  {c[DeliveryState.ATTEMPTING]} were in flight when the last run "
                     "stopped: they are sent again, with the same Message-ID")
    if c[DeliveryState.UNKNOWN] and not plan.retry_unknown:
        lines.append(f"  {c[DeliveryState.UNKNOWN]} unknown (the server may have them) are "
                     "not resent; --retry-unknown resends them with the same Message-ID")
    if plan.due:
        lines.append(_limits_line(plan, plan.due))
    else:
        lines.append("  nothing is due now")
    return "\n".join(lines)


def readiness_lines(plan: Plan, ready: Readiness) -> list[str]:
    """Was this exact content proofed; does the built archive hold it."""
    from newsletter.archive import Published

    if ready.proofed_at is not None:
        proof = f"  proof:   this exact content was sent as a proof {uk.utc_time(ready.proofed_at)}"
    else:
        proof = ("  proof:   none of this exact content was sent (newsletter send "
                 f"{plan.slug} --to YOUR-ADDRESS)")
    site = f"{ready.site.name}/"
    archive = {
        Published.CURRENT: f"  archive: {site} holds this issue as it is now; publish it before "
                           "sending if you have not (images and 'view in browser' point "
                           "there)",
        Published.OLDER: f"  archive: {site} holds an older version of this issue: run "
                         "`newsletter archive` and publish the site before sending",
        Published.MISSING: f"  archive: {site} does not hold this issue: run `newsletter "
                           "archive` and publish the site before sending (images and 'view "
                           "in browser' point there)",
        Published.NO_SITE: "  archive: not built here: run `newsletter archive` and publish "
                           "the site before sending (images and 'view in browser' point "
                           "there)",
    }[ready.archive]
    return [proof, archive]


def top_rate(limits: Limits) -> float | None:
    """The most messages a second the limits allow over a long run (None: no limit)."""
    rates = [limits.per_second] if limits.per_second > 0 else []
    rates += [limits.per_minute / 60] if limits.per_minute > 0 else []
    rates += [limits.per_hour / 3600] if limits.per_hour > 0 else []
    return min(rates) if rates else None


def eta(limits: Limits, messages: int) -> float | None:
    """Seconds the limits need for ``messages`` (batch pauses included); None: no limit."""
    rate = top_rate(limits)
    pauses = (messages - 1) // limits.batch_size * limits.batch_pause \
        if limits.batch_size and messages > 0 else 0.0
    if rate is None:
        return pauses or None
    return messages / rate + pauses


def _limits_line(plan: Plan, due: int) -> str:
    limits: Limits = plan.limits
    parts = []
    if limits.per_second > 0:
        parts.append(f"{limits.per_second:g}/s")
    if limits.per_minute > 0:
        parts.append(f"{limits.per_minute}/min")
    if limits.per_hour > 0:
        parts.append(f"{limits.per_hour}/h")
    today = ""
    if limits.per_day > 0:
        left = max(0, limits.per_day - plan.sent_last_day)
        parts.append(f"{limits.per_day}/day")
        today = f"; {left} left in the last 24 h" + (
            f" (the other {due - left} wait for a later run)" if due > left else "")
        due = min(due, left)
    if limits.batch_size:
        parts.append(f"batches of {limits.batch_size} with {limits.batch_pause:g} s pauses")
    seconds = eta(limits, due)
    estimate = "as fast as the server takes them" if seconds is None else \
        f"about {duration(seconds)}"
    return (f"  via {plan.where}, {limits.concurrency} connection(s); limits: "
            f"{', '.join(parts) or 'none'}{today}; {due} to send, {estimate}")


def report_lines(report: SendReport, again: str = "") -> list[Line]:
    """Where the send stands after a run; ``again``: the command that resumes it."""
    run_again = f": {again}" if again else ""
    c, result, send_by = report.counts, report.result, report.send_by
    lines: list[Line] = []
    this_run = ", ".join(f"{n} {state}" for state, n in sorted(result.outcomes.items()))
    if this_run:
        lines.append((f"this run: {this_run}", False))
    lines.append((f"{report.slug}: {counts_text(c)}", False))
    if result.resent_after_crash:
        lines.append((f"  {result.resent_after_crash} were in flight when a previous run "
                      "stopped and were sent again with the same Message-ID (they may arrive "
                      "twice)", False))
    if c[DeliveryState.UNKNOWN]:
        lines.append((f"  {c[DeliveryState.UNKNOWN]} unknown: the connection was lost after "
                      "the message was sent; `newsletter status` lists them; --retry-unknown "
                      "resends them with the same Message-ID", False))
    late = report.late_deferred
    if c[DeliveryState.DEFERRED] > late:
        lines.append((f"  {c[DeliveryState.DEFERRED] - late} deferred (the server said 'try "
                      f"later'): run the same command again after "
                      f"{uk.utc_time(report.next_deferred)} to retry them", False))
    if late and send_by is not None:
        lines.append((f"  {late} deferred whose next attempt falls after the send-by deadline "
                      f"({uk.words(send_by)}): they are not retried; move send_by in the "
                      "issue to retry them", True))
    left = report.left
    if result.daily_cap and left:
        oldest = report.oldest_sent_last_day
        after = f" after {uk.utc_time(oldest + DAY)}" if oldest else ""
        lines.append((f"  daily cap reached: {left} still pending; run the same command again"
                      f"{after}{run_again}", False))
    elif result.past_deadline and left and send_by is not None:
        lines.append((f"  {result.stopped} ({uk.words(send_by)}): {left} still pending and "
                      "not sent; to send them anyway, move send_by in the issue and run the "
                      "same command again", True))
    elif result.interrupted:
        lines.append((f"  stopped: {left} still pending; run the same command to continue"
                      f"{run_again}", False))
    return lines


def stop_message(report: SendReport, again: str = "") -> str | None:
    """Why the run stopped, when the user must fix something before running it again."""
    result = report.result
    if not (result.fatal and result.stopped):
        return None
    return (f"sending stopped: {result.stopped}\n  {report.left} recipients are still "
            "pending; nothing was skipped: run the same command again once it is fixed"
            + (f":\n  {again}" if again else ""))


def exit_code(report: SendReport) -> tuple[int, Line | None]:
    """The exit code (1: recipients failed for good, or left unsent by the deadline), and a
    last line that goes with it."""
    result = report.result
    if result.interrupted and report.left:
        return INTERRUPTED, None  # not finished: a script must not take this for done
    if report.failed:
        return 1, (f"  {report.failed} failed for good: `newsletter status {report.slug}` "
                   "shows why", True)
    if report.late_deferred or (result.past_deadline and report.left):
        return 1, None  # members the deadline keeps from getting it: not done
    return 0, None


# --------------------------------------------------------------------------- status


def status_lines(sends: tuple[SendStatus, ...], slug: str | None, issue: str | None,
                 send_by: dt.date | None, now: float) -> Iterator[str]:
    if issue is not None and not sends:
        yield f"{slug}: not sent yet (newsletter send {issue} --list NAME)"
        if send_by is not None:
            yield deadline_line(send_by, now, None)
    elif not sends:
        yield "nothing has been sent yet"
    for send in sends:
        record = send.record
        lists = send.lists or (record.list_name,)
        yield (f"{record.issue}  list{'s' * (len(lists) > 1)} {', '.join(lists)}  started "
               f"{uk.utc_time(record.created_at)}  {counts_text(send.counts)}")
        if issue is not None and send_by is not None:
            yield deadline_line(send_by, now, send.left)
        if any(send.late.values()):
            yield "  came back later: " + ", ".join(
                f"{n} {LATE[kind][n != 1]}" for kind, n in send.late.items() if n)
        if issue is not None:
            yield from _problem_lines(send)
            yield from _late_lines(send)


def deadline_line(send_by: dt.date, now: float, left: int | None) -> str:
    """``left``: recipients still to send (None: not sent yet)."""
    due = uk.instant(send_by)
    if now < due:
        return f"  send-by {uk.words(send_by)}: {duration(due - now)} from now"
    if left == 0:
        return f"  send-by {uk.words(send_by)}: passed"
    who = "sending to a list" if left is None else f"sending to the {left} still pending"
    return (f"  send-by {uk.words(send_by)}: passed; {who} is refused (move send_by "
            "in the issue to send anyway)")


def _problem_lines(send: SendStatus) -> Iterator[str]:
    if send.crash_resends:
        yield (f"  {send.crash_resends} resent after a crash (in flight when a run was killed; "
               "same Message-ID)")
    for row in send.problems:
        # the reply text starts with its enhanced code when it has one: "450 4.2.1 busy"
        why = " ".join(str(x) for x in (row.reply_code, row.reply_text) if x)
        if row.state is DeliveryState.DEFERRED:
            yield (f"  deferred  {row.address}  attempt {row.attempts}, next "
                   f"{uk.utc_time(row.next_attempt_at)}: {why}")
        elif row.state is DeliveryState.UNKNOWN:
            yield f"  unknown   {row.address}  {row.message_id}: {why} (at {row.stage})"
        else:
            yield f"  {row.state:<9} {row.address}  {why} (at {row.stage})"


# What `newsletter inbox` recorded about an issue (singular, plural).
LATE = {"bounce": ("bounce", "bounces"), "soft": ("soft bounce", "soft bounces"),
        "complaint": ("complaint", "complaints"),
        "unsubscribe": ("unsubscribe", "unsubscribes")}


def _late_lines(send: SendStatus) -> Iterator[str]:
    for report in send.late_reports:
        if report.kind == "bounce":
            why = " ".join(x for x in (report.status, report.diagnostic) if x)
            yield f"  bounced   {report.address}  late bounce {why}"
        else:
            yield f"  complaint {report.address}  reported the newsletter as spam"


# --------------------------------------------------------------------------- words


def counts_text(c: dict[DeliveryState, int]) -> str:
    total = sum(c.values())
    shown = [f"{n} {state}" for state, n in c.items() if n]
    return f"{total} recipients: " + (", ".join(shown) or "none")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
