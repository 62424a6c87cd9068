"""What a member import did, in words for people: the lines `subscribers import` prints.

In: the ``ImportResult`` the members stage returns and the file as read (``CsvImport``: its
path, the columns it dropped); what ``subscribers suppress`` did. Out: lines of text (the
command prints them). Column names only, never the values: the report goes to a terminal
or a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from newsletter.members.csvfiles import CsvImport
    from newsletter.members.store import ImportResult, Suppressed

SHOWN_CHANGES = 10  # per-line report of profile changes; the rest are counted
SHOWN_COLUMNS = 30  # dropped columns named; the rest are counted
SHOWN_MEMBERS = 10  # suppressed members on file named; the rest are counted


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def profile_report(result: ImportResult, where: Callable[[int], str]) -> list[str]:
    """What --update changed (would change), or, without it, that the CSV differs."""
    changed = result.changed
    columns: dict[str, int] = {}
    for change in changed:
        for column in change.columns:
            columns[column] = columns.get(column, 0) + 1
    n = len(changed)
    members_word = "member" if n == 1 else "members"
    if not result.update:
        if not changed:
            return []
        have = "has" if n == 1 else "have"
        return [f"{n} existing {members_word} {have} a different {_or_list(list(columns))} "
                "in the CSV; --update takes them"]
    verb = "would update" if result.dry_run else "updated"
    if not changed:
        return [f"{result.list_name}: {verb} 0 existing members (none differs from the CSV)"]
    counted = ", ".join(f"{column} {count}" for column, count in columns.items())
    lines = [f"{result.list_name}: {verb} {n} existing {members_word} ({counted})"]
    for change in changed[:SHOWN_CHANGES]:
        lines.append(f"{where(change.line)}: {verb} {change.email}: "
                     f"{', '.join(change.columns)}")
    if n > SHOWN_CHANGES:
        lines.append(f"... and {n - SHOWN_CHANGES} more")
    return lines


def import_report(result: ImportResult, read: CsvImport) -> list[str]:
    """What an import did (or would do), for people."""
    verb = "would add" if result.dry_run else "added"
    lines = [f"{result.list_name}: {verb} {result.new} new, {result.already} already "
             f"subscribed, {len(result.skipped)} skipped (unsubscribed, bounced or removed)"]
    for line, email in result.skipped:
        lines.append(f"{read.where(line)}: skipped: {email} left or was removed earlier "
                     "(an import never resubscribes anyone)")
    if result.left:
        counted = ", ".join(f"{n.recorded + n.kept} {n.status}" for n in result.left)
        kept = sum(n.kept for n in result.left)
        already = f"; {kept} of them already were" if kept else ""
        lines.append(f"{result.list_name}: {'would record' if result.dry_run else 'recorded'} "
                     f"{counted}: never sent to, and no import subscribes them{already}")
    if read.dropped:
        shown = ", ".join(read.dropped[:SHOWN_COLUMNS])
        more = len(read.dropped) - SHOWN_COLUMNS
        lines.append(f"{read.path}: dropped {len(read.dropped)} column"
                     f"{'s' * (len(read.dropped) != 1)} not in member_columns "
                     f"(newsletter.yaml), their values not stored: {shown}"
                     + (f" and {more} more" if more > 0 else ""))
    lines.extend(profile_report(result, read.where))
    if result.dry_run:
        lines.append("dry run: nothing was changed")
    return lines


def suppress_report(done: Suppressed) -> list[str]:
    """What ``subscribers suppress`` did."""
    n = len(done.added)
    lines = [f"suppressed {n} address{'es' * (n != 1)} on every list "
             f"({len(done.already)} already were); no import will add them"]
    for email in done.members[:SHOWN_MEMBERS]:
        lines.append(f"{email}: a member on file: unsubscribed from every list "
                     "(`subscribers remove` erases the profile)")
    if len(done.members) > SHOWN_MEMBERS:
        lines.append(f"... and {len(done.members) - SHOWN_MEMBERS} more members")
    return lines
