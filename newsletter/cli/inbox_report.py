"""What `newsletter inbox` did, in words for people (and for cron's mail).

In: the ``InboxReport`` the inbox stage returns. Out: lines of text: one summary line,
then each member whose status changed (and each soft bounce counted), the messages left
for a person to read, and the ones ignored with the reason. Senders and subjects come from
strangers: the inbox stage has already made them printable (no control or bidi
characters, one line, truncated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsletter.inbox.classify import Kind

if TYPE_CHECKING:
    from newsletter.inbox import InboxReport, Note
    from newsletter.inbox.apply import Effect

NAMES = {
    Kind.BOUNCE: ("bounce", "bounces"),
    Kind.SOFT: ("soft bounce", "soft bounces"),
    Kind.COMPLAINT: ("complaint", "complaints"),
    Kind.UNSUBSCRIBE: ("unsubscribe request", "unsubscribe requests"),
    Kind.AUTO_REPLY: ("auto-reply", "auto-replies"),
    Kind.PERSON: ("from a person", "from people"),
    Kind.IGNORED: ("ignored", "ignored"),
}
AFTER = {"move": "moved to the processed folder", "flag": "marked as read where they are",
         "delete": "deleted (--after delete)"}


def _count(n: int, kind: Kind) -> str:
    one, many = NAMES[kind]
    return f"{n} {one if n == 1 else many}"


def inbox_lines(report: InboxReport) -> list[str]:
    new = report.read - report.already
    if report.read == 0:
        return [f"inbox: {report.where}: no messages"]
    kinds = [_count(n, kind) for kind, n in report.counts.items() if n]
    head = f"inbox: {report.where}: {new} new message{'s' * (new != 1)}"
    if kinds:
        head += ": " + ", ".join(kinds)
    if report.already:
        head += f" ({report.already} handled before: nothing done again)"
    lines = [head]
    lines += [_effect(e) for e in report.effects if e.status is not None or e.kind is Kind.SOFT]
    if report.to_read:
        lines.append("left in the mailbox for a person to read:")
        lines += [_note(n) for n in report.to_read]
    if report.ignored:
        lines.append("ignored (nothing changed):")
        lines += [_note(n) for n in report.ignored]
    dealt = sum(report.counts[k] for k in (Kind.BOUNCE, Kind.SOFT, Kind.COMPLAINT,
                                            Kind.UNSUBSCRIBE, Kind.IGNORED))
    if dealt:
        lines.append(f"the {dealt} dealt with: {AFTER[str(report.after)]}")
    return lines


def _effect(effect: Effect) -> str:
    what = str(effect.status) if effect.status is not None else "soft bounce"
    about = f"{effect.issue}: " if effect.issue else f"list {effect.list_name}: "
    return f"  {what:<13} {effect.address}  {about}{effect.detail}"


def _note(note: Note) -> str:
    return f"  {note.kind:<11} from {note.sender}, \"{note.subject}\": {note.why}"
