"""What a member import did, in words for people: the lines `subscribers import` prints.

In: the ``ImportResult`` the members stage returns and the CSV's path as shown to the user.
Out: lines of text (the command prints them). Column names only, never the values: the
report goes to a terminal or a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.members.store import ImportResult

SHOWN_CHANGES = 10  # per-line report of profile changes; the rest are counted


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def profile_report(result: ImportResult, path: str) -> list[str]:
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
        lines.append(f"{path}:{change.line}: {verb} {change.email}: "
                     f"{', '.join(change.columns)}")
    if n > SHOWN_CHANGES:
        lines.append(f"... and {n - SHOWN_CHANGES} more")
    return lines


def import_report(result: ImportResult, path: str) -> list[str]:
    """What an import did (or would do), for people."""
    verb = "would add" if result.dry_run else "added"
    lines = [f"{result.list_name}: {verb} {result.new} new, {result.already} already "
             f"subscribed, {len(result.skipped)} skipped (unsubscribed, bounced or removed)"]
    for line, email in result.skipped:
        lines.append(f"{path}:{line}: skipped: {email} left or was removed earlier "
                     "(an import never resubscribes anyone)")
    lines.extend(profile_report(result, path))
    if result.dry_run:
        lines.append("dry run: nothing was changed")
    return lines
