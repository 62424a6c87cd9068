"""`newsletter demo`: the whole pipeline on the sample data, over SMTP on this machine only.

In: the project's newsletter.yaml, issues/, templates/ and subscribers/members.csv. Out, all
inside the demo folder: a copy of the project whose settings point at a state database in
the folder and at a local SMTP server; the built issues; the archive site; every message
the server received, in a Maildir (open it with any mail client, or ``mutt -f``); and what
came back: a late bounce (as Postfix writes one, to the message's own return path) and an
emailed unsubscribe (as a mail client sends the List-Unsubscribe mailto), in the Maildir
``bounces/`` that ``newsletter inbox`` then reads.

Nothing leaves 127.0.0.1 and nothing outside the demo folder is changed. The demo starts
afresh each time (its database and Maildir are replaced); a random unsubscribe secret is
kept in the folder so links from one demo run still verify in the next.
"""

from __future__ import annotations

import mailbox
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

import click
import yaml

from newsletter.errors import InputError, Problem
from newsletter.model import Location

COPIED = ("issues", "templates", "subscribers")
LIST_NAME = "members"
HEADER = "# A copy made by `newsletter demo`: local SMTP, no limits.\n"


class MaildirHandler:
    """aiosmtpd handler: each message the server accepts becomes a file in the Maildir."""

    def __init__(self, path: Path) -> None:
        self.maildir = mailbox.Maildir(path, create=True)
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        # as a mail server does on final delivery: the envelope sender, for replies to reach
        key = self.maildir.add(f"Return-Path: <{envelope.mail_from}>\r\n".encode() + data)
        self.count += 1
        return f"250 2.0.0 Ok: queued as {key.split('.')[0]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _project_copy(config: Path, folder: Path, port: int) -> Path:
    """Copy the sample project into ``folder`` with local SMTP, no limits, its own database."""
    if not config.is_file():
        raise InputError([Problem(Location(str(config)), "", "not found", hint=(
            "run the demo in the project folder (where newsletter.yaml is), or pass "
            "--config"))])
    root = config.resolve().parent
    copy = folder / "newsletter.yaml"
    if copy.exists() and not copy.read_text(encoding="utf-8").startswith(HEADER):
        raise InputError([Problem(Location(str(folder)), "--output", (
            "holds a newsletter.yaml the demo did not write; the demo would replace it"),
            hint="give the demo a folder of its own, e.g. -o demo")])
    folder.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (root / name).is_dir():
            shutil.copytree(root / name, folder / name, dirs_exist_ok=True)
    settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    settings["smtp"] = {"host": "127.0.0.1", "port": port, "tls": "none",
                        "password_env": "NEWSLETTER_DEMO_SMTP_PASSWORD"}
    settings["limits"] = {"per_second": 0, "per_minute": 0, "per_hour": 0, "per_day": 0,
                          "concurrency": 2, "batch_size": 0, "batch_pause": 0}
    settings["database"] = "state.db"
    # what comes back: each message's own return path, and the Maildir inbox reads
    domain = str((settings.get("sender") or {}).get("address", "@example.org")).rpartition("@")[2]
    settings["bounces"] = {"address": f"bounces@{domain}"}
    settings["inbox"] = {"maildir": "bounces"}
    copy.write_text(HEADER + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    for stale in ("state.db", "state.db-wal", "state.db-shm"):
        (folder / stale).unlink(missing_ok=True)
    return copy


def _demo_environment(folder: Path) -> None:
    """Settings come from the demo copy only; keep a stable demo secret in the folder."""
    for name in list(os.environ):
        if name.startswith(("NEWSLETTER_SMTP_", "NEWSLETTER_DKIM_")):
            del os.environ[name]
    secret_file = folder / "demo-secret.txt"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    os.environ["NEWSLETTER_SECRET"] = secret_file.read_text(encoding="utf-8").strip()


def _step(title: str, action: Any, *args: Any, **kwargs: Any) -> Any:
    click.secho(f"\n== {title}", bold=True)
    return action(*args, **kwargs)


def _newest_issue(root: Path) -> Path | None:
    from newsletter.input.config import load_network
    from newsletter.input.issues import find_issues, load_issue

    network = load_network(root / "newsletter.yaml")
    issues = [load_issue(path, network) for path in find_issues(root)]
    if not issues:
        return None
    newest = max(issues, key=lambda issue: (issue.date, issue.slug))
    return root / "issues" / f"{newest.slug}.yaml"


def run_demo(config: Path, folder: Path) -> None:
    """Build, import, archive, send over loopback SMTP to a Maildir, and show the status."""
    from aiosmtpd.controller import Controller

    from newsletter.cli import commands

    port = _free_port()
    copy = _project_copy(config, folder, port)
    _demo_environment(folder)
    root = copy.parent
    maildir = folder / "mail"
    for old in (maildir, folder / "bounces"):
        if old.exists():
            shutil.rmtree(old)
    click.echo(f"newsletter demo: the sample issues and members, copied into {folder}/, are "
               "built, archived and sent to a\ntest mail server on this machine. Nothing "
               "leaves 127.0.0.1; the project's own state is not touched.")

    for issue in sorted((root / "issues").glob("*.yaml")):
        _step(f"build {issue.stem}", commands.build, copy, issue, folder / "build" / issue.stem)
    members = root / "subscribers" / "members.csv"
    _step(f"import {members.name} into list {LIST_NAME}", commands.import_subscribers, copy,
          members, LIST_NAME, consent=None, skip_invalid=True, dry_run=False)
    # after the import: the privacy gate checks the site against the members just added
    _step("archive", commands.archive, copy, folder / "site")

    newest = _newest_issue(root)
    if newest is None:
        click.echo("no sample issues found: nothing to send")
        return
    handler = MaildirHandler(maildir)
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        _step(f"send {newest.stem} to list {LIST_NAME} (test server on 127.0.0.1:{port})",
              commands.send, copy, newest, LIST_NAME, proof_to=None, dry_run=None,
              assume_yes=True, retry_unknown=False)
    finally:
        controller.stop()
    came_back = _comes_back(maildir, folder / "bounces")
    _step(f"inbox: later, mail comes back to {folder / 'bounces'}/ ({came_back})",
          commands.inbox, copy, maildir=None, mbox=None, after=None)
    _step(f"status {newest.stem}", commands.status, copy, newest, None)

    config_option = f"--config {copy}"
    click.secho("\n== where to look", bold=True)
    click.echo(f"   the mail:     {maildir}/new/: {handler.count} messages as the server "
               f"received them,\n"
               f"                 one file per member (any text editor, or `mutt -f {maildir}`)")
    click.echo(f"   one email:    {folder / 'build' / newest.stem}/email.html (in a browser), "
               "email.txt, email.eml")
    click.echo(f"   the archive:  {folder / 'site'}/index.html")
    click.echo(f"   the ledger:   `newsletter {config_option} status {newest.stem}` "
               "(add --csv FILE for every recipient)")
    click.echo(f"   came back:    {folder / 'bounces'}/.Processed/: the bounce and the "
               f"unsubscribe, read by `newsletter {config_option} inbox`")
    click.echo(f"   try more:     `newsletter {config_option} subscribers list`;\n"
               f"                 NEWSLETTER_SECRET=$(cat {folder / 'demo-secret.txt'}) "
               f"newsletter {config_option} serve -d {folder / 'site'}\n"
               "                 (the archive and the unsubscribe endpoint on "
               "http://127.0.0.1:8000/)")


# --------------------------------------------------------------------------- what comes back


def _comes_back(sent: Path, inbox: Path) -> str:
    """Write, into ``inbox``, a late bounce for the first message sent (a Postfix DSN to its
    return path) and an unsubscribe by email for the second (its List-Unsubscribe mailto).
    """
    import email
    import re
    from email.utils import parseaddr

    box = mailbox.Maildir(sent, create=False)
    received = [email.message_from_bytes(box.get_bytes(key)) for key in sorted(box.iterkeys())]
    if len(received) < 2:
        return "nothing sent, nothing comes back"
    first, second = received[0], received[1]
    target = mailbox.Maildir(inbox, create=True)
    return_path = parseaddr(str(first["Return-Path"]))[1]
    address = str(first["To"])
    target.add(BOUNCE.format(return_path=return_path, address=address,
                             message_id=first["Message-ID"], subject=first["Subject"],
                             domain=return_path.rpartition("@")[2]).encode())
    mailto = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", str(second["List-Unsubscribe"]))
    if mailto is not None:
        from urllib.parse import unquote

        target.add(UNSUBSCRIBE.format(sender=second["To"], to=mailto.group(1),
                                      subject=unquote(mailto.group(2))).encode())
    return f"a bounce for {address}, an unsubscribe from {second['To']}"


BOUNCE = """\
Return-Path: <>
Delivered-To: {return_path}
From: MAILER-DAEMON@smtp.{domain} (Mail Delivery System)
To: {return_path}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="demo-bounce"

--demo-bounce
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host smtp.{domain}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{address}>: host mx.example.org said: 550 5.1.1 <{address}>:
    Recipient address rejected: User unknown (in reply to RCPT TO command)

--demo-bounce
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; smtp.{domain}

Final-Recipient: rfc822; {address}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{address}>: Recipient address rejected: User unknown

--demo-bounce
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

To: {address}
Subject: {subject}
Message-ID: {message_id}

--demo-bounce--
"""

UNSUBSCRIBE = """\
From: {sender}
To: {to}
Subject: {subject}
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

"""
