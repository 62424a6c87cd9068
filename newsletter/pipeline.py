"""The order of work for every command, readable in one place.

Each function here is what one command does: load what it needs, run the stages in order,
write outputs at the edge, and return what happened as a value. Nothing here prints: the
command line (newsletter/cli/) turns the values into words, progress and exit codes. Stage
modules do the work; this file only sequences it. The clock is given by the caller.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from newsletter.errors import CheckFailed, InputError, Problem, Severity
from newsletter.model import Issue, Network, RenderedIssue

if TYPE_CHECKING:
    from newsletter.archive import BuildReport, Published
    from newsletter.clock import Clock
    from newsletter.delivery.campaign import Plan, SendReport
    from newsletter.delivery.proof import DryRun, Proof
    from newsletter.delivery.status import SendStatus
    from newsletter.inbox import InboxReport
    from newsletter.input.starter import Started
    from newsletter.members.csvfiles import CsvImport
    from newsletter.members.store import ImportResult, Listing, Suppressed
    from newsletter.model import AfterReading, Subscriber


# --------------------------------------------------------------------------- editors


class Checked(msgspec.Struct, frozen=True):
    """``check``: how many issues were read, and every problem found, in file order."""

    issues: int
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> int:
        return sum(p.severity is Severity.ERROR for p in self.problems)

    @property
    def warnings(self) -> int:
        return len(self.problems) - self.errors


def check(config: Path, issues: list[Path]) -> Checked:
    """Validate newsletter.yaml and the issues; every problem at once."""
    from newsletter.input.checks import editorial, numbering
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, issue_path, load_issue

    problems: list[Problem] = []
    network: Network | None = None
    try:
        network = load_network(config)
    except InputError as e:
        problems.extend(e.problems)
    root = config.parent
    paths = [issue_path(root, p) for p in issues] or find_issues(root)
    loaded = []
    for path in paths:
        try:
            issue = load_issue(path, network)
        except InputError as e:
            problems.extend(e.problems)
        else:
            loaded.append(issue)
            problems.extend(editorial(issue, network))
    if not issues:  # numbers are compared across the whole issues/ folder
        problems.extend(numbering(loaded))
    return Checked(len(paths), tuple(problems))


class Built(msgspec.Struct, frozen=True):
    slug: str
    folder: Path
    html_bytes: int
    warnings: tuple[Problem, ...]  # editorial warnings (the build went ahead)


def new_issue(config: Path, clock: Clock) -> Started:
    """Write the next issue (next number, today's UK date) from the skeleton template."""
    from newsletter.clock import uk_date
    from newsletter.input.config import load_network
    from newsletter.input.starter import start_issue

    return start_issue(load_network(config), uk_date(clock.now()))


def build(config: Path, issue: Path, output: Path | None, *, strict: bool = False) -> Built:
    """Render one issue to email.html, email.txt and email.eml in a folder.

    Under ``strict``, editorial warnings refuse the build (CheckFailed, nothing written).
    """
    from newsletter.email.personalize import (
        anonymous_recipient,
        assemble,
        fill,
        prepare,
        sample_date,
    )
    from newsletter.email.render import local_images, render_issue, write_build
    from newsletter.input.config import load_network
    from newsletter.input.issues import issue_path, load_issue

    network = load_network(config)
    loaded = load_issue(issue_path(network.root, issue), network)
    warnings = _editorial(loaded, network, strict=strict)
    rendered = render_issue(loaded, network)
    reader = anonymous_recipient(network, loaded.slug)
    message = assemble(prepare(rendered, network), reader, sample_date(loaded))
    html, text = fill(rendered, reader)
    folder = output if output is not None else network.root / "build" / loaded.slug
    data = html.encode("utf-8")
    write_build(folder, {"email.html": data, "email.txt": text.encode("utf-8"),
                         "email.eml": message}, local_images(loaded, network))
    return Built(loaded.slug, folder, len(data), warnings)


def _editorial(issue: Issue, network: Network, *, strict: bool) -> tuple[Problem, ...]:
    """The editorial warnings; under --strict they refuse the build."""
    from newsletter.input.checks import editorial

    problems = tuple(editorial(issue, network))
    if strict and problems:
        n = len(problems)
        raise CheckFailed(problems, f"build refused: {n} warning{'s' * (n != 1)} (--strict)")
    return problems


def preview(config: Path, issue: Path, *, port: int, open_browser: bool) -> None:
    """Serve a live preview of one issue on 127.0.0.1."""
    from newsletter.web.preview import serve_preview

    serve_preview(config, issue, port=port, open_browser=open_browser)


class Archived(msgspec.Struct, frozen=True):
    report: BuildReport
    members_skipped: bool  # no state database, and --no-members said to go ahead
    database: Path | str


def archive(config: Path, output: Path, *, no_members: bool = False) -> Archived:
    """Build the static archive site from every issue."""
    from newsletter.archive import build_site
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, load_issue
    from newsletter.members.store import values_for_archive
    from newsletter.model import PrivateValues

    network = load_network(config)
    members = values_for_archive(network.database, no_members=no_members)
    report = build_site(network, find_issues(network.root), output,
                        lambda path: load_issue(path, network), members or PrivateValues())
    return Archived(report, members is None, network.database)


# --------------------------------------------------------------------------- members


class Imported(msgspec.Struct, frozen=True):
    read: CsvImport  # the file as read: its path, duplicates, skipped rows, dropped columns
    result: ImportResult


def import_subscribers(config: Path, csv_file: Path, list_name: str, *, consent: str | None,
                       skip_invalid: bool, dry_run: bool, update: bool = False,
                       source: str | None = None) -> Imported:
    """Validate the whole file first, then add its members to a list in one transaction.

    ``source``: the file's format (csv, mailchimp, listmonk, mailman); None tells it by the
    header. Only the member columns newsletter.yaml declares are kept. With ``update``,
    members already on file also take the file's names, organisations and other columns
    (same transaction; never their status or consent).
    """
    from newsletter.input.config import load_network
    from newsletter.members import database as db
    from newsletter.members import formats
    from newsletter.members import store as members

    network = load_network(config)
    members.check_list_name(list_name)
    parsed = formats.read_members(csv_file, consent=consent,
                                  columns=frozenset(network.member_columns),
                                  source=None if source is None else formats.Format(source))
    if not skip_invalid:
        parsed.require_valid()
    # a dry run against no database yet is a dry run against an empty one, in memory
    fresh = dry_run and not db.exists(network.database)
    with closing(db.connect(Path(":memory:") if fresh else network.database)) as conn:
        result = members.import_rows(conn, list_name, parsed.rows, dry_run=dry_run,
                                     update=update)
    return Imported(parsed, result)


def suppress_subscribers(config: Path, addresses: list[str], address_file: Path | None
                         ) -> Suppressed:
    """Suppress addresses on every list, on file or not (only a salted hash of an address not
    on file is kept), so that no import adds them; every address is checked first."""
    from newsletter.input.config import load_network
    from newsletter.members import database as db
    from newsletter.members import formats
    from newsletter.members import store as members

    network = load_network(config)
    found = formats.read_addresses(addresses, address_file)
    with closing(db.connect(network.database)) as conn:
        return members.suppress(conn, found, "suppressed by an editor")


def export_subscribers(config: Path, list_name: str | None, output: Path | None, *,
                       everyone: bool = False) -> str | None:
    """Subscribed members as spreadsheet-safe CSV: written to ``output`` (atomically), or
    returned when there is no output file. ``everyone``: every member on file, whatever
    their status, with the status, its reason and when it changed."""
    from newsletter.input.config import load_network
    from newsletter.members import csvfiles
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        if everyone:
            text = csvfiles.export_csv(members.export_rows_with_status(conn, list_name),
                                       with_status=True)
        else:
            text = csvfiles.export_csv(members.export_rows(conn, list_name))
    if output is None:
        return text
    csvfiles.write_export(output, text)
    return None


def list_subscribers(config: Path, list_name: str | None) -> list[Listing]:
    """One entry per membership."""
    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        return list(members.listing(conn, list_name))


def count_subscribers(config: Path, list_name: str | None) -> list[tuple[str, str, int]]:
    """Members per list and status."""
    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        return members.counts(conn, list_name)


def unsubscribe(config: Path, email: str, list_name: str | None) -> tuple[str, bool]:
    """Unsubscribe one member from one list or all; they stay suppressed.

    (the address as stored, whether anything changed).
    """
    from newsletter.input.config import load_network
    from newsletter.members import store as members

    network = load_network(config)
    with members.existing(network.database) as conn:
        members.require_list(conn, list_name)
        return members.unsubscribe_address(conn, email, list_name, "unsubscribed by an editor")


def remove_subscriber(config: Path, email: str) -> Subscriber:
    """Erase a member's personal data; a salted hash keeps them from being re-added."""
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
        db.checkpoint(conn)  # no erased value left in the WAL
    return removed


# --------------------------------------------------------------------------- the database


class Copied(msgspec.Struct, frozen=True):
    """``database copy``: the SQLite file read, the PostgreSQL database written (described,
    no password) and the rows copied per table, in the order copied."""

    source: Path
    target: str
    tables: tuple[tuple[str, int], ...]


def copy_database(config: Path, url: str, clock: Clock) -> Copied:
    """Copy the SQLite state database named by ``database:`` into an empty PostgreSQL one.

    The URL is checked before anything is opened; the SQLite file must exist (it is
    migrated, nothing else is written). It is held in one write transaction while copying,
    so no send can start and every table is read from the same moment; a send running now
    refuses the copy. PostgreSQL is opened (and migrated), then copied into in one
    transaction (members/copy.py), or left as it was.
    """
    import sqlite3

    from newsletter.delivery import ledger
    from newsletter.input.config import load_network
    from newsletter.members import copy as copying
    from newsletter.members import database as db
    from newsletter.model import Location

    url = copying.target_url(url)
    network = load_network(config)
    source = network.database
    if db.is_postgresql(source):
        raise InputError([Problem(Location(str(config)), "database",
                                  f"already PostgreSQL ({db.describe(source)}); the copy "
                                  "reads a SQLite file",
                                  hint="name the SQLite file in database: to copy it")])
    assert isinstance(source, Path)
    if not db.exists(source):
        raise InputError([Problem(Location(str(source)), "", "no SQLite state database to "
                                  "copy (the file does not exist)",
                                  hint="check database: in newsletter.yaml")])
    with closing(db.connect(source)) as lite:
        assert isinstance(lite, sqlite3.Connection)
        with db.transaction(lite):  # BEGIN IMMEDIATE: no send starts while copying
            ledger.check_not_locked(lite, clock.now())
            with closing(db.connect(url)) as target:
                assert isinstance(target, db.PgConnection)
                tables = copying.copy_tables(lite, target)
    return Copied(source, db.describe(url), tables)


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


class Loaded(msgspec.Struct, frozen=True):
    """An issue ready to send: its settings, its source, and its one render."""

    network: Network
    issue: Issue
    rendered: RenderedIssue
    path: Path  # the issue file


class Readiness(msgspec.Struct, frozen=True):
    """What the sender should know before confirming: was this exact content proofed, and
    does the built archive hold it (the email's images and "view in browser" link point
    at the published archive)."""

    proofed_at: float | None  # when a proof of this exact content was last sent
    site: Path  # the archive folder `newsletter archive` builds by default
    archive: Published


def load_for_sending(config: Path, issue: Path) -> Loaded:
    """Load and render once: proofs, dry runs and the send all start here."""
    from newsletter.email.render import render_issue
    from newsletter.input.config import load_network
    from newsletter.input.issues import issue_path, load_issue

    network = load_network(config)
    path = issue_path(network.root, issue)
    loaded = load_issue(path, network)
    return Loaded(network, loaded, render_issue(loaded, network), path)


def proof(loaded: Loaded, address: str, clock: Clock) -> Proof:
    """One test message, subject prefixed "[TEST] ", to one address."""
    from newsletter.delivery.proof import proof as send_proof

    return send_proof(loaded.network, loaded.rendered, address, clock)


def dry_run(loaded: Loaded, list_name: str | Sequence[str], folder: Path,
            clock: Clock) -> DryRun:
    """Each recipient's exact message as a .eml file; nothing sent, nothing recorded."""
    from newsletter.delivery.proof import dry_run as write_messages

    return write_messages(loaded.network, loaded.rendered, list_name, folder, clock)


class Watcher(Protocol):
    """Told while the run goes on."""

    def __call__(self, state: str) -> None:
        """A row reached a new state ("sent", "deferred", ...)."""

    def waiting(self, seconds: float, why: str) -> None:
        """The run waits ``seconds`` for the limits (``why``: what it waits for)."""


class SendEvents(Protocol):
    """What the command line is told while a send goes on (and how it answers)."""

    def planned(self, plan: Plan, ready: Readiness) -> None:
        """The plan, before anything is written; raise UsageError to stop there."""

    def recorded(self, count: int) -> None:
        """The snapshot wrote ``count`` pending rows."""

    def sending(self, plan: Plan) -> contextlib.AbstractContextManager[Watcher]:
        """For the run: told each row's new state and each wait."""


def send(loaded: Loaded, list_name: str | Sequence[str], events: SendEvents, clock: Clock, *,
         retry_unknown: bool) -> SendReport:
    """Send (or resume sending) an issue to a list, or to several (each member once); a list
    added to an issue sent before gets it only where its members have not had it.

    Refuse if another run holds the lock; plan; refuse if the send-by deadline has passed;
    show the plan (the caller may stop there); snapshot the list into the ledger, before any
    connection; deliver; report.
    """
    from newsletter.archive import published
    from newsletter.delivery import campaign, ledger
    from newsletter.delivery.messages import message_builder
    from newsletter.delivery.session import transport_for
    from newsletter.members import database as db
    from newsletter.members.tokens import secrets_from_env

    network, issue, rendered = loaded.network, loaded.issue, loaded.rendered
    transport = transport_for(network.smtp, network.sender_domain)
    build = message_builder(network, rendered)
    secrets = secrets_from_env()
    campaign.lease_from_env()  # a bad NEWSLETTER_SEND_LEASE stops us before anything is written
    with closing(db.connect(network.database)) as conn:
        campaign.check_not_locked(conn, clock)
        plan = campaign.plan(conn, network, rendered, list_name, transport, clock,
                             retry_unknown=retry_unknown)
        campaign.refuse_if_late(issue, plan, clock)
        site = network.root / "site"
        events.planned(plan, Readiness(
            ledger.last_proof(conn, rendered.slug, rendered.content_hash), site,
            published(site, rendered.slug, loaded.path)))
        result = None
        if plan.due:
            # SQLite: one run at a time. PostgreSQL: every run of the issue joins the send.
            held = contextlib.nullcontext(None) if db.is_postgresql(conn) \
                else ledger.locked(conn, rendered.slug, clock.now())
            with held as lock:
                written = campaign.snapshot(conn, network, rendered, plan.lists, secrets,
                                            clock)
                if written is not None:
                    events.recorded(written)
                with events.sending(plan) as watcher:
                    result = campaign.deliver(network, rendered.slug, transport, build, lock,
                                              clock, retry_unknown=retry_unknown,
                                              send_by=issue.send_by, on_outcome=watcher,
                                              on_wait=watcher.waiting)
        return campaign.report(conn, rendered.slug, result, issue.send_by, clock)


class Status(msgspec.Struct, frozen=True):
    """``status``: every send, or one issue's (with its deadline and problem rows)."""

    slug: str | None  # the one issue asked about
    issue: Path | None
    sends: tuple[SendStatus, ...]
    send_by: dt.date | None  # the one issue's deadline, when its file loads
    csv: Path | None  # written


def status(config: Path, issue: Path | None, csv_out: Path | None) -> Status:
    """Counts by state per issue; one issue's failures, deferrals, unknowns, deadline; CSV.

    An issue is found in the ledger by its slug (the file name), so the status of a sent
    issue still shows after its file is renamed or removed.
    """
    from newsletter.delivery import status as ledger_status
    from newsletter.input.config import load_network
    from newsletter.input.issues import issue_path, load_issue
    from newsletter.members import database as db
    from newsletter.model import Location

    network = load_network(config)
    send_by = None
    if issue is not None:
        issue = issue_path(network.root, issue)
    if issue is not None and issue.is_file():
        with contextlib.suppress(InputError):  # the ledger's story stands alone
            send_by = load_issue(issue, network).send_by
    slug = issue.stem if issue is not None else None
    with closing(db.connect(network.database)) as conn:
        sends = ledger_status.sends(conn, slug)
        if issue is not None and not sends and not issue.is_file():
            raise InputError([Problem(
                Location(str(issue)), "", "no such issue file, and nothing was sent as "
                f"{slug!r}", hint="`newsletter status` lists every issue sent")])
        if csv_out is not None:
            ledger_status.write_csv(conn, [s.record for s in sends], csv_out)
    return Status(slug, issue, tuple(sends), send_by, csv_out)


# --------------------------------------------------------------------------- what comes back


def inbox(config: Path, clock: Clock, *, maildir: Path | None = None, mbox: Path | None = None,
          after: AfterReading | None = None) -> InboxReport:
    """Read the bounce/unsubscribe mailbox (newsletter.yaml's inbox:, or the one given) and
    act on each message not handled before: late bounces, complaints, emailed unsubscribes.
    """
    from newsletter.inbox import read_inbox
    from newsletter.inbox.mailboxes import open_mailbox
    from newsletter.input.config import load_network
    from newsletter.members import database as db
    from newsletter.members.tokens import secrets_from_env
    from newsletter.model import AfterReading

    network = load_network(config)
    secrets = secrets_from_env()  # tokens are checked with it: refuse to start without it
    settings = network.inbox
    chosen = after or (settings.after if settings else AfterReading.MOVE)
    folder = settings.processed_folder if settings else "Processed"
    given = maildir is not None or mbox is not None
    with closing(db.connect(network.database)) as conn:
        if given:
            box = open_mailbox(maildir=maildir, mbox=mbox, after=chosen,
                               processed_folder=folder)
        elif settings is not None:
            box = open_mailbox(maildir=settings.maildir, mbox=settings.mbox,
                               imap=settings.imap, after=chosen, processed_folder=folder)
        else:
            box = open_mailbox()  # says what to add
        return read_inbox(conn, box, secrets, network.bounces, clock, chosen)
