"""Each command run and shown: call the pipeline, turn what it returns into words.

In: the parsed arguments (cli/__init__.py parses them). Out: text on standard output and
standard error, and the exit code. The demo runs the same functions, so it shows what the
commands show.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter import pipeline
from newsletter.errors import CheckFailed, DeliveryError, Problem, UsageError

if TYPE_CHECKING:
    from newsletter.cli.progress import Progress
    from newsletter.clock import Clock
    from newsletter.delivery.campaign import Plan, SendReport
    from newsletter.model import AfterReading
    from newsletter.pipeline import Readiness

DEFAULT_CONFIG = Path("newsletter.yaml")

# Only what every command needs is imported here; the rest where it is used, so that a
# short command (check, build) does not pay for the send stage's imports.


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _problems(problems: Iterable[Problem]) -> None:
    from newsletter.input.checks import fold

    for line in fold(problems):
        click.echo(line, err=True)


# --------------------------------------------------------------------------- editors


def check(config: Path, issues: list[Path], *, strict: bool = False) -> None:
    """Problems to stderr compiler-style (repeated warnings folded), a summary to stdout;
    errors, or warnings under ``strict``, fail with exit code 1."""
    checked = pipeline.check(config, issues)
    _problems(checked.problems)
    errors, warnings = checked.errors, checked.warnings
    click.echo(f"{_count(checked.issues, 'issue')} checked: {_count(errors, 'error')}, "
               f"{_count(warnings, 'warning')}")
    if errors:
        raise CheckFailed(checked.problems, f"check failed: {_count(errors, 'error')}")
    if strict and warnings:
        raise CheckFailed(checked.problems,
                          f"check failed: {_count(warnings, 'warning')} (--strict)")


def new_issue(config: Path, clock: Clock | None = None) -> None:
    from newsletter.clock import RealClock

    started = pipeline.new_issue(config, clock or RealClock())
    click.echo(f"wrote {started.path} (issue {started.number}, dated {started.date:%Y-%m-%d}): "
               f"replace its texts, then `newsletter check {started.slug}` and "
               f"`newsletter preview {started.path}`")


def build(config: Path, issue: Path, output: Path | None, *, strict: bool = False) -> None:
    try:
        built = pipeline.build(config, issue, output, strict=strict)
    except CheckFailed as e:  # --strict: the warnings, then why nothing was built
        _problems(e.problems)
        raise
    _problems(built.warnings)
    click.echo(f"built {built.slug}: {built.folder}/email.html, email.txt, email.eml "
               f"({built.html_bytes // 1024} KB of HTML)")


def archive(config: Path, output: Path, *, no_members: bool = False) -> None:
    done = pipeline.archive(config, output, no_members=no_members)
    if done.members_skipped:
        click.echo(f"archive: no state database ({done.database}): the member check was "
                   "skipped (--no-members)", err=True)
    report = done.report
    click.echo(f"archive: {report.issues} issues in {output}/ ({len(report.written)} files "
               f"written, {len(report.kept)} unchanged, {len(report.loaded)} issues rendered)")


# --------------------------------------------------------------------------- members


def import_subscribers(config: Path, csv_file: Path, list_name: str, *, consent: str | None,
                       skip_invalid: bool, dry_run: bool, update: bool = False,
                       source: str | None = None) -> None:
    from newsletter.cli.member_reports import import_report

    imported = pipeline.import_subscribers(config, csv_file, list_name, consent=consent,
                                           skip_invalid=skip_invalid, dry_run=dry_run,
                                           update=update, source=source)
    for problem in (*imported.read.notes, *imported.read.duplicates):
        click.echo(str(problem), err=True)
    for problem in imported.read.problems:
        click.echo(f"{problem} (row skipped)", err=True)
    for line in import_report(imported.result, imported.read):
        click.echo(line)


def suppress(config: Path, addresses: list[str], address_file: Path | None) -> None:
    from newsletter.cli.member_reports import suppress_report

    for line in suppress_report(pipeline.suppress_subscribers(config, addresses,
                                                              address_file)):
        click.echo(line)


def export_subscribers(config: Path, list_name: str | None, output: Path | None, *,
                       everyone: bool = False) -> None:
    text = pipeline.export_subscribers(config, list_name, output, everyone=everyone)
    if text is not None:
        click.echo(text, nl=False)


def list_subscribers(config: Path, list_name: str | None) -> None:
    for m in pipeline.list_subscribers(config, list_name):
        who = m.name or ""
        if m.organisation:
            who += f" ({m.organisation})"
        click.echo(f"{m.email or '(removed)':<40} {m.list_name:<12} {m.status:<12} "
                   f"{m.changed_at[:10]}  {who}".rstrip())


def count_subscribers(config: Path, list_name: str | None) -> None:
    for name, status, count in pipeline.count_subscribers(config, list_name):
        click.echo(f"{name}\t{status}\t{count}")


def unsubscribe(config: Path, email: str, list_name: str | None) -> None:
    address, changed = pipeline.unsubscribe(config, email, list_name)
    scope = list_name or "every list"
    click.echo(f"{address}: {'unsubscribed' if changed else 'already unsubscribed'} "
               f"from {scope}")


def remove_subscriber(config: Path, email: str) -> None:
    pipeline.remove_subscriber(config, email)
    click.echo(f"{email}: removed (personal data erased; the address can never be "
               "imported again)")


def copy_database(config: Path, url: str, clock: Clock | None = None) -> None:
    """Copy, then the rows per table and what to do next."""
    import time

    from newsletter.clock import RealClock

    started = time.monotonic()
    copied = pipeline.copy_database(config, url, clock or RealClock())
    seconds = time.monotonic() - started
    total = sum(n for _, n in copied.tables)
    click.echo(f"copied {copied.source.name} to {copied.target}: {_count(total, 'row')} in "
               f"{_count(len(copied.tables), 'table')}, {seconds:.1f} s")
    width = max(len(t) for t, _ in copied.tables)
    for table, n in copied.tables:
        click.echo(f"  {table:<{width}}  {n}")
    click.echo("row counts checked: each table matches the SQLite file")
    click.echo(f"next: put `database: {copied.target}` in {config.name} (keep "
               "NEWSLETTER_DATABASE_PASSWORD set wherever newsletter runs), and keep "
               f"{copied.source.name} as a backup until the first send from PostgreSQL "
               "works")


# --------------------------------------------------------------------------- delivery


class _Terminal:
    """pipeline.SendEvents for a person at a terminal (or a script passing --yes)."""

    def __init__(self, assume_yes: bool) -> None:
        self.assume_yes = assume_yes

    def planned(self, plan: Plan, ready: Readiness) -> None:
        from newsletter.cli import words

        click.echo(words.plan_text(plan, ready))
        if plan.due:
            _confirm(self.assume_yes)

    def recorded(self, count: int) -> None:
        click.echo(f"ledger: {count} recipients recorded as pending")

    @contextlib.contextmanager
    def sending(self, plan: Plan) -> Iterator[Progress]:
        from newsletter.cli.progress import Progress

        with Progress(plan.due, plan.limits) as progress:
            yield progress


def _confirm(assume_yes: bool) -> None:
    """Ask at a terminal; without one, refuse unless --yes (nothing is changed either way)."""
    if assume_yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("not sending: nobody is at a terminal to confirm; "
                         "pass --yes to send without asking")
    if not click.confirm("Send now?", default=False):
        raise UsageError("not sent (nothing was changed)")


def send(config: Path, issue: Path, lists: str | Sequence[str] | None, *,
         proof_to: str | None, dry_run: Path | None, assume_yes: bool, retry_unknown: bool,
         clock: Clock | None = None) -> int:
    """A proof (--to), a dry run (--dry-run) or the send to a list; the exit code."""
    from newsletter.cli import words
    from newsletter.clock import RealClock
    from newsletter.text.headers import python_warning

    clock = clock or RealClock()
    if warning := python_warning():
        click.echo(warning, err=True)
    loaded = pipeline.load_for_sending(config, issue)
    late = words.late_note(loaded.issue, clock.now())
    if late and (proof_to is not None or dry_run is not None):  # not refused: told
        click.echo(late, err=True)
    if proof_to is not None:
        sent = pipeline.proof(loaded, proof_to, clock)
        click.echo(f"proof of {sent.slug} sent to {sent.to} via {sent.where} ({sent.reply})")
        return 0
    assert lists  # the CLI requires --list without --to
    names = [lists] if isinstance(lists, str) else list(dict.fromkeys(lists))
    if dry_run is not None:
        done = pipeline.dry_run(loaded, names, dry_run, clock)
        click.echo(f"dry run: {done.count} messages for list{'s' * (len(names) > 1)} "
                   f"{done.list_name} written to {done.folder}/ (nothing sent, nothing "
                   "recorded)")
        return 0
    report = pipeline.send(loaded, names, _Terminal(assume_yes), clock,
                           retry_unknown=retry_unknown)
    again = ["newsletter"] + (["--config", str(config)] if config != DEFAULT_CONFIG else [])
    again += ["send", str(issue)]
    for name in names:
        again += ["--list", name]
    return show_report(report, shlex.join(again))


def show_report(report: SendReport, again: str = "") -> int:
    """Print where a send stands; the exit code. DeliveryError when the run was stopped by
    an error the user must fix. ``again``: the command that resumes the send."""
    from newsletter.cli import words

    for text, err in words.report_lines(report, again):
        click.echo(text, err=err)
    if stopped := words.stop_message(report, again):
        raise DeliveryError(stopped)
    code, last = words.exit_code(report)
    if last is not None:
        click.echo(last[0], err=last[1])
    return code


def status(config: Path, issue: Path | None, csv_out: Path | None,
           clock: Clock | None = None) -> None:
    from newsletter.cli import words
    from newsletter.clock import RealClock

    clock = clock or RealClock()
    found = pipeline.status(config, issue, csv_out)
    for line in words.status_lines(found.sends, found.slug,
                                   None if issue is None else str(issue), found.send_by,
                                   clock.now()):
        click.echo(line)
    if found.csv is not None:
        click.echo(f"wrote {found.csv}")


# --------------------------------------------------------------------------- what comes back


def inbox(config: Path, *, maildir: Path | None, mbox: Path | None,
          after: AfterReading | None, clock: Clock | None = None) -> None:
    """Read the mailbox once; print what was done. Safe to run from cron (no questions)."""
    from newsletter.cli.inbox_report import inbox_lines
    from newsletter.clock import RealClock

    report = pipeline.inbox(config, clock or RealClock(), maildir=maildir, mbox=mbox,
                            after=after)
    for line in inbox_lines(report):
        click.echo(line)
