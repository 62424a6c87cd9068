"""The order of work for every command, readable in one place.

Each function here is what one CLI command does: load what it needs, run the stages in
order, write outputs at the edge. Stage modules do the work; this file only sequences it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.model import Issue, Network


# --------------------------------------------------------------------------- editors


def check(config: Path, issues: list[Path], *, strict: bool = False) -> None:
    """Validate newsletter.yaml and the issues; report every problem at once.

    Problems go to stderr compiler-style (repeated warnings folded), a one-line summary to
    stdout; errors, or warnings under ``strict``, fail with exit code 1.
    """
    import click

    from newsletter.errors import InputError, Problem, Severity
    from newsletter.input.checks import CheckFailed, editorial, fold
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, load_issue

    problems: list[Problem] = []
    network: Network | None = None
    try:
        network = load_network(config)
    except InputError as e:
        problems.extend(e.problems)
    paths = issues or find_issues(config.parent)
    for path in paths:
        try:
            problems.extend(editorial(load_issue(path, network), network))
        except InputError as e:
            problems.extend(e.problems)
    for line in fold(problems):
        click.echo(line, err=True)
    errors = sum(p.severity is Severity.ERROR for p in problems)
    warnings = len(problems) - errors

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    click.echo(f"{count(len(paths), 'issue')} checked: {count(errors, 'error')}, "
               f"{count(warnings, 'warning')}")
    if errors:
        raise CheckFailed(problems, f"check failed: {count(errors, 'error')}")
    if strict and warnings:
        raise CheckFailed(problems, f"check failed: {count(warnings, 'warning')} (--strict)")


def build(config: Path, issue: Path, output: Path | None, *, strict: bool = False) -> Path:
    """Render one issue to email.html, email.txt and email.eml; return the folder."""
    import click

    from newsletter.email.personalize import (
        anonymous_recipient,
        assemble,
        fill,
        prepare,
        sample_date,
    )
    from newsletter.email.render import local_images, render_issue, write_build
    from newsletter.input.config import load_network
    from newsletter.input.issues import load_issue

    network = load_network(config)
    loaded = load_issue(issue, network)
    _editorial_checks(loaded, network, strict=strict)
    rendered = render_issue(loaded, network)
    reader = anonymous_recipient(network, loaded.slug)
    message = assemble(prepare(rendered, network), reader, sample_date(loaded))
    html, text = fill(rendered, reader)
    folder = output if output is not None else network.root / "build" / loaded.slug
    write_build(folder, {"email.html": html.encode("utf-8"), "email.txt": text.encode("utf-8"),
                         "email.eml": message}, local_images(loaded))
    click.echo(f"built {loaded.slug}: {folder}/email.html, email.txt, email.eml "
               f"({len(html.encode('utf-8')) // 1024} KB of HTML)")
    return folder


def _editorial_checks(issue: Issue, network: Network, *, strict: bool) -> None:
    """Print the editorial warnings; under --strict they fail the build."""
    import click

    from newsletter.input.checks import CheckFailed, editorial, fold

    problems = editorial(issue, network)
    for line in fold(problems):
        click.echo(line, err=True)
    if strict and problems:
        n = len(problems)
        raise CheckFailed(problems, f"build refused: {n} warning{'s' * (n != 1)} (--strict)")


def preview(config: Path, issue: Path, *, port: int, open_browser: bool) -> None:
    """Serve a live preview of one issue on 127.0.0.1."""
    from newsletter.web.preview import serve_preview

    serve_preview(config, issue, port=port, open_browser=open_browser)


def archive(config: Path, output: Path) -> Path:
    """Build the static archive site from every issue."""
    import click

    from newsletter.archive import build_site
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, load_issue

    network = load_network(config)
    report = build_site(network, find_issues(network.root), output,
                        lambda path: load_issue(path, network))
    click.echo(f"archive: {report.issues} issues in {output}/ ({len(report.written)} files "
               f"written, {len(report.kept)} unchanged, {len(report.loaded)} issues rendered)")
    return output


# --------------------------------------------------------------------------- members


def import_subscribers(config: Path, csv_file: Path, list_name: str, *, consent: str | None,
                       skip_invalid: bool, dry_run: bool, update: bool = False) -> None:
    """Validate the whole CSV first, then add its members to a list in one transaction.

    With ``update``, members already on file also take the CSV's names, organisations and
    other columns (same transaction; never their status or consent).
    """
    from contextlib import closing

    import click

    from newsletter.input.config import load_network
    from newsletter.members import csvfiles as subscribers
    from newsletter.members import database as db
    from newsletter.members import store as members

    network = load_network(config)
    members.check_list_name(list_name)
    parsed = subscribers.read_csv(csv_file, consent=consent)
    if not skip_invalid:
        parsed.require_valid()
    for problem in parsed.duplicates:
        click.echo(str(problem), err=True)
    for problem in parsed.problems:
        click.echo(f"{problem} (row skipped)", err=True)
    # a dry run against no database yet is a dry run against an empty one, in memory
    fresh = dry_run and not network.database.is_file()
    with closing(db.connect(Path(":memory:") if fresh else network.database)) as conn:
        result = members.import_rows(conn, list_name, parsed.rows, dry_run=dry_run,
                                     update=update)
    for line in members.import_report(result, parsed.path):
        click.echo(line)


def export_subscribers(config: Path, list_name: str | None, output: Path | None) -> None:
    """Subscribed members as spreadsheet-safe CSV, to a file (atomically) or stdout."""
    import click

    from newsletter.input.config import load_network
    from newsletter.members import csvfiles as subscribers
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        text = subscribers.export_csv(members.export_rows(conn, list_name))
    if output is None:
        click.echo(text, nl=False)
    else:
        subscribers.write_export(output, text)


def list_subscribers(config: Path, list_name: str | None) -> None:
    """One line per membership: address, list, status, since, name (organisation)."""
    import click

    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        for m in members.listing(conn, list_name):
            who = m.name or ""
            if m.organisation:
                who += f" ({m.organisation})"
            click.echo(f"{m.email or '(removed)':<40} {m.list_name:<12} {m.status:<12} "
                       f"{m.changed_at[:10]}  {who}".rstrip())


def count_subscribers(config: Path, list_name: str | None) -> None:
    """Members per list and status."""
    import click

    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        for name, status, count in members.counts(conn, list_name):
            click.echo(f"{name}\t{status}\t{count}")


def unsubscribe(config: Path, email: str, list_name: str | None) -> None:
    """Unsubscribe one member from one list or all; they stay suppressed."""
    import click

    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        address, changed = members.unsubscribe_address(conn, email, list_name,
                                                       "unsubscribed by an editor")
    scope = list_name or "every list"
    click.echo(f"{address}: {'unsubscribed' if changed else 'already unsubscribed'} "
               f"from {scope}")


def remove_subscriber(config: Path, email: str) -> None:
    """Erase a member's personal data; a salted hash keeps them from being re-added."""
    import click

    from newsletter.delivery import ledger
    from newsletter.input.config import load_network
    from newsletter.members import database as db
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        # one transaction: the member and their copies in the delivery ledger go together
        with db.transaction(conn):
            removed = members.remove(conn, email)
            ledger.forget_subscriber(conn, removed.id)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no erased value left in the WAL
    click.echo(f"{email}: removed (personal data erased; the address can never be "
               "imported again)")


def serve(config: Path, directory: Path, *, host: str, port: int) -> None:
    """The archive and the one-click unsubscribe endpoint, until interrupted."""
    from newsletter.input.config import load_network
    from newsletter.members import database as db
    from newsletter.members.tokens import secrets_from_env
    from newsletter.web import server as web

    network = load_network(config)
    secrets = secrets_from_env()  # refuse to start without a signing key
    web.check_site(directory)
    web.check_database(network.database)  # never make an empty one to answer links from
    db.connect(network.database).close()  # migrate before the first request
    web.run(network, directory, secrets, host=host, port=port)


# --------------------------------------------------------------------------- delivery


def send(config: Path, issue: Path, list_name: str | None, *, proof_to: str | None,
         dry_run: Path | None, assume_yes: bool, retry_unknown: bool) -> int:
    """Send (or resume sending) an issue; return the exit code.

    Render once; then a proof (--to), a dry run (--dry-run) or the campaign: plan, refuse
    if the send-by deadline has passed, confirm, snapshot the list into the ledger (before
    any connection), deliver, report.
    """
    import time

    import click

    from newsletter.delivery import campaign as delivery
    from newsletter.delivery import ledger
    from newsletter.delivery.session import transport_for
    from newsletter.email.render import render_issue
    from newsletter.input.config import load_network
    from newsletter.input.headers import python_warning
    from newsletter.input.issues import load_issue
    from newsletter.members import database as db
    from newsletter.members.tokens import secrets_from_env

    if warning := python_warning():
        click.echo(warning, err=True)
    network = load_network(config)
    loaded = load_issue(issue, network)
    rendered = render_issue(loaded, network)
    late = delivery.late_note(loaded, time.time())
    if late and (proof_to is not None or dry_run is not None):  # not refused: told
        click.echo(late, err=True)
    if proof_to is not None:
        return delivery.proof(network, rendered, proof_to)
    assert list_name is not None  # the CLI requires --list without --to
    if dry_run is not None:
        return delivery.dry_run(network, rendered, list_name, dry_run)
    transport = transport_for(network.smtp, network.sender_domain)
    build = delivery.message_builder(network, rendered)
    secrets = secrets_from_env()
    conn = db.connect(network.database)
    try:
        plan = delivery.plan(conn, network, rendered, list_name, transport,
                             retry_unknown=retry_unknown)
        delivery.refuse_if_late(loaded, plan, list_name, time.time())
        click.echo(plan.text)
        result = None
        if plan.due:
            delivery.confirm(assume_yes)
            with ledger.locked(conn, rendered.slug) as lock:
                if not plan.resuming:
                    delivery.snapshot(conn, network, rendered, list_name, secrets)
                result = delivery.deliver(network, rendered.slug, transport, build, lock,
                                          due=plan.due, retry_unknown=retry_unknown,
                                          send_by=loaded.send_by)
        return delivery.report(conn, rendered.slug, result, loaded.send_by)
    finally:
        conn.close()


def status(config: Path, issue: Path | None, csv_out: Path | None) -> None:
    """Counts by state per issue; one issue's failures, deferrals, unknowns, deadline; CSV."""
    from contextlib import suppress

    from newsletter.delivery import campaign as delivery
    from newsletter.errors import InputError
    from newsletter.input.config import load_network
    from newsletter.input.issues import load_issue

    network = load_network(config)
    send_by = None
    if issue is not None and issue.is_file():
        with suppress(InputError):  # the ledger's story stands alone; `check` reports the file
            send_by = load_issue(issue, network).send_by
    delivery.status(network, issue, csv_out, send_by)


def demo(config: Path, output: Path) -> None:
    """The whole pipeline on the sample data, to a local SMTP server writing a Maildir."""
    from newsletter.cli.demo import run_demo

    run_demo(config, output)
