"""The command line: parse arguments, run the command (commands.py), map errors to exit codes.

Exit codes: 0 success; 1 bad input or recipients that failed for good; 2 usage errors (and
a send the user declined); 130 a send stopped by Ctrl-C with members still to send.
Errors are printed as messages; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from newsletter import pipeline
from newsletter.cli import commands
from newsletter.errors import NewsletterError

F = TypeVar("F", bound=Callable[..., Any])

# One instance of each: click looks up a translation for every Path type it makes (gettext
# searching the locale folders each time), ~1.5 ms of start-up with one per option.
_FILE = click.Path(dir_okay=False)
_FOLDER = click.Path(file_okay=False)

# Commands whose memory the input limits bound (a 1 MB issue): see run().
_BOUNDED = frozenset({"check", "build"})


def run() -> None:
    """The console script.

    Start-up (click, Jinja, markdown-it, PyYAML) makes tens of thousands of objects that
    live as long as the process; the cycle collector walking them again and again is ~4%
    of a short command (callgrind). So it is paused until the command is known, and only
    the bounded commands keep it paused: anything that runs long (send, serve, preview,
    archive, imports) collects as usual.
    """
    gc.disable()
    main()


def _reported(func: F) -> F:
    """Turn NewsletterError into its message and exit code (traceback only with --debug)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if func.__name__ not in _BOUNDED:
            gc.enable()
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except NewsletterError as e:
            if ctx.find_root().params.get("debug"):
                raise
            message = str(e) or type(e).__name__
            click.echo(message, err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    return wrapper  # type: ignore[return-value]


def _config(ctx: click.Context) -> Path:
    return Path(ctx.find_root().params["config"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    default="newsletter.yaml",
    show_default=True,
    type=_FILE,
    envvar="NEWSLETTER_CONFIG",
    help="The network's settings file; the project folder is the folder it is in.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="newsletter")
def main(config: str, debug: bool) -> None:
    """Build, preview, archive and send the network's newsletter."""


# --------------------------------------------------------------------------- editors


@main.command()
@click.argument("issues", nargs=-1, type=_FILE)
@click.option("--strict", is_flag=True, help="Treat editorial warnings as errors.")
@click.pass_context
@_reported
def check(ctx: click.Context, issues: tuple[str, ...], strict: bool) -> None:
    """Validate the config and issues (all of issues/ when none are named)."""
    commands.check(_config(ctx), [Path(p) for p in issues], strict=strict)


@main.command("new")
@click.pass_context
@_reported
def new(ctx: click.Context) -> None:
    """Start the next issue: issues/<YYYY-MM>-news.yaml, numbered and dated, every block type."""
    commands.new_issue(_config(ctx))


@main.command()
@click.argument("issue", type=_FILE)
@click.option("-o", "--output", default=None, type=_FOLDER,
              help="Output folder (default build/<slug>).")
@click.option("--strict", is_flag=True, help="Treat editorial warnings as errors.")
@click.pass_context
@_reported
def build(ctx: click.Context, issue: str, output: str | None, strict: bool) -> None:
    """Write email.html, email.txt and email.eml for one issue."""
    commands.build(_config(ctx), Path(issue), Path(output) if output else None, strict=strict)


@main.command()
@click.argument("issue", type=_FILE)
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535))
@click.option("--open/--no-open", "open_browser", default=False,
              help="Open the preview in the default browser.")
@click.pass_context
@_reported
def preview(ctx: click.Context, issue: str, port: int, open_browser: bool) -> None:
    """Preview the email at phone and desktop width on 127.0.0.1; reloads on save."""
    pipeline.preview(_config(ctx), Path(issue), port=port, open_browser=open_browser)


@main.command()
@click.option("-o", "--output", default="site", show_default=True,
              type=_FOLDER)
@click.option("--no-members", is_flag=True,
              help="Build even though there is no state database (a fresh checkout, CI): "
                   "the privacy gate's member check is skipped, with a note. When the "
                   "database exists, members are checked anyway.")
@click.pass_context
@_reported
def archive(ctx: click.Context, output: str, no_members: bool) -> None:
    """Build the static web archive of every issue in issues/."""
    commands.archive(_config(ctx), Path(output), no_members=no_members)


# --------------------------------------------------------------------------- members


@main.group()
def subscribers() -> None:
    """Import, export and manage members."""


@subscribers.command("import")
@click.argument("csv_file", type=_FILE)
@click.option("--list", "list_name", required=True, help="The list to add members to.")
@click.option("--consent", default=None,
              help="Consent evidence for rows that carry none, e.g. 'signed up at the 2016 "
                   "conference'.")
@click.option("--skip-invalid", is_flag=True, help="Import the good rows, report the bad.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--update", is_flag=True,
              help="Members already on file take the CSV's name, organisation and other "
                   "columns (empty cells change nothing; status and consent never change).")
@click.option("--format", "source", default=None,
              type=click.Choice(["csv", "mailchimp", "listmonk", "mailman"]),
              help="The file's format (default: told by its header).")
@click.pass_context
@_reported
def subscribers_import(ctx: click.Context, csv_file: str, list_name: str, consent: str | None,
                       skip_invalid: bool, dry_run: bool, update: bool,
                       source: str | None) -> None:
    """Import members from a CSV file (an 'email' column is required), or from another
    tool's export: Mailchimp (a CSV or the zip), listmonk, Mailman 3."""
    commands.import_subscribers(_config(ctx), Path(csv_file), list_name, consent=consent,
                                skip_invalid=skip_invalid, dry_run=dry_run, update=update,
                                source=source)


@subscribers.command("export")
@click.option("--list", "list_name", default=None, help="Only this list.")
@click.option("-o", "--output", default=None, type=_FILE,
              help="CSV file to write (default: standard output).")
@click.option("--all", "everyone", is_flag=True,
              help="Every member on file, whatever their status (subscribed, unsubscribed, "
                   "bounced, complained), with status, status_reason and status_changed "
                   "columns.")
@click.pass_context
@_reported
def subscribers_export(ctx: click.Context, list_name: str | None, output: str | None,
                       everyone: bool) -> None:
    """Export members as CSV (safe to open in a spreadsheet)."""
    commands.export_subscribers(_config(ctx), list_name, Path(output) if output else None,
                                everyone=everyone)


@subscribers.command("list")
@click.option("--list", "list_name", default=None, help="Only this list.")
@click.pass_context
@_reported
def subscribers_list(ctx: click.Context, list_name: str | None) -> None:
    """Show members and their status."""
    commands.list_subscribers(_config(ctx), list_name)


@subscribers.command("count")
@click.option("--list", "list_name", default=None, help="Only this list.")
@click.pass_context
@_reported
def subscribers_count(ctx: click.Context, list_name: str | None) -> None:
    """Count members by list and status."""
    commands.count_subscribers(_config(ctx), list_name)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "list_name", default=None, help="Only this list (default: all).")
@click.pass_context
@_reported
def subscribers_unsubscribe(ctx: click.Context, email: str, list_name: str | None) -> None:
    """Unsubscribe a member (they stay suppressed)."""
    commands.unsubscribe(_config(ctx), email, list_name)


@subscribers.command("suppress")
@click.argument("addresses", nargs=-1)
@click.option("--file", "address_file", default=None, type=_FILE,
              help="Addresses to suppress: one a line, or a CSV with an 'email' column.")
@click.pass_context
@_reported
def subscribers_suppress(ctx: click.Context, addresses: tuple[str, ...],
                         address_file: str | None) -> None:
    """Suppress addresses on every list, on file or not, so that no import adds them
    (only a salted hash of an address not on file is kept)."""
    if not addresses and address_file is None:
        raise click.UsageError("give the addresses to suppress, or --file FILE")
    commands.suppress(_config(ctx), list(addresses),
                      Path(address_file) if address_file else None)


@subscribers.command("remove")
@click.argument("email")
@click.pass_context
@_reported
def subscribers_remove(ctx: click.Context, email: str) -> None:
    """Erase a member's personal data, keeping a salted hash so they are never re-added."""
    commands.remove_subscriber(_config(ctx), email)


@main.group()
def database() -> None:
    """Manage the state database."""


@database.command("copy")
@click.argument("url")
@click.pass_context
@_reported
def database_copy(ctx: click.Context, url: str) -> None:
    """Copy the SQLite state database (database: in newsletter.yaml) into an empty
    PostgreSQL database, postgresql://USER@HOST[:PORT]/NAME; the password comes from
    NEWSLETTER_DATABASE_PASSWORD."""
    commands.copy_database(_config(ctx), url)


# --------------------------------------------------------------------------- delivery


@main.command()
@click.argument("issue", type=_FILE)
@click.option("--list", "lists", multiple=True,
              help="The list to send to; repeat it for several (each member gets it once).")
@click.option("--to", "proof_to", default=None, help="Send one proof to this address only.")
@click.option("--dry-run", "dry_run", default=None, type=_FOLDER,
              help="Write each recipient's message to this folder instead of sending.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--retry-unknown", is_flag=True,
              help="Resend messages whose outcome is unknown (same Message-ID).")
@click.pass_context
@_reported
def send(ctx: click.Context, issue: str, lists: tuple[str, ...], proof_to: str | None,
         dry_run: str | None, yes: bool, retry_unknown: bool) -> None:
    """Send an issue to a list (or several) in batches over SMTP; run again to resume.
    A list added later gets it only where its members have not had it."""
    if proof_to is None and not lists:
        raise click.UsageError("give --list NAME (or --to ADDRESS for a proof)")
    code = commands.send(_config(ctx), Path(issue), lists, proof_to=proof_to,
                         dry_run=Path(dry_run) if dry_run else None, assume_yes=yes,
                         retry_unknown=retry_unknown)
    ctx.exit(code)


@main.command()
@click.argument("issue", required=False, type=_FILE)
@click.option("--csv", "csv_out", default=None, type=_FILE,
              help="Also write every recipient's state to this CSV file.")
@click.pass_context
@_reported
def status(ctx: click.Context, issue: str | None, csv_out: str | None) -> None:
    """What was sent, to whom, what failed and why."""
    commands.status(_config(ctx), Path(issue) if issue else None,
                    Path(csv_out) if csv_out else None)


@main.command()
@click.option("--maildir", default=None, type=_FOLDER,
              help="Read this Maildir instead of the inbox newsletter.yaml names.")
@click.option("--mbox", default=None, type=_FILE,
              help="Read this mbox file instead of the inbox newsletter.yaml names.")
@click.option("--after", type=click.Choice(["move", "flag", "delete"]), default=None,
              help="What to do with a message once dealt with: move it to the processed "
                   "folder, flag it as read, or delete it (default: inbox.after, else move).")
@click.pass_context
@_reported
def inbox(ctx: click.Context, maildir: str | None, mbox: str | None, after: str | None) -> None:
    """Read bounces, spam complaints and emailed unsubscribes; act on each once."""
    from newsletter.model import AfterReading

    if maildir is not None and mbox is not None:
        raise click.UsageError("give --maildir or --mbox, not both")
    commands.inbox(_config(ctx), maildir=Path(maildir) if maildir else None,
                   mbox=Path(mbox) if mbox else None,
                   after=AfterReading(after) if after else None)


@main.command()
@click.option("-d", "--directory", default="site", show_default=True,
              type=_FOLDER, help="The built archive to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
@_reported
def serve(ctx: click.Context, directory: str, host: str, port: int) -> None:
    """Serve the archive and the one-click unsubscribe endpoint."""
    pipeline.serve(_config(ctx), Path(directory), host=host, port=port)


@main.command()
@click.option("-o", "--output", default="demo", show_default=True,
              type=_FOLDER, help="Where the demo writes everything.")
@click.pass_context
@_reported
def demo(ctx: click.Context, output: str) -> None:
    """The whole pipeline on the sample data, over a local SMTP server."""
    from newsletter.cli.demo import run_demo

    run_demo(_config(ctx), Path(output))


if __name__ == "__main__":  # pragma: no cover
    run()
