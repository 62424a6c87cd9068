"""A late bounce from end to end: a real Postfix on 127.0.0.1 accepts, then bounces.

`newsletter send` hands every message to Postfix, which answers 250 (the ledger says
sent). Postfix then relays: one member's server refuses them (550 5.1.1), another member's
server cannot be reached at all. Postfix writes its bounces (RFC 3464, as it does for real)
to each message's return path, bounces+<token>@bounces.example.net, which it delivers to a Maildir.
`newsletter inbox` reads that Maildir; the next `send` skips the member who bounced.

The Postfix instance is the machine's Postfix binaries with a configuration of its own in
a temporary folder (``postfix -c DIR start``): its own queue, ports, transport table and
log file; no system instance is configured or started.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Project, free_port, require_tool
from smtp_servers import Scripted, SmtpServer
from test_inbox import FAST, JANE, MEMBERS, query, statuses

BOB, CAROL = "bob.jones@example.org", "carol.smith@example.org"
BOUNCES = "bounces@bounces.example.net"

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Postfix:
    folder: Path
    port: int  # where `newsletter send` hands messages over
    destination: SmtpServer  # the members' mail server (refuses jane)
    maildir: Path  # where bounces+...@bounces.example.net is delivered

    @property
    def log(self) -> str:
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


def _main_cf(folder: Path) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.newsletter.test
mydomain = newsletter.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
# bounces+<token>@bounces.example.net is delivered to the mailbox of bounces@bounces.example.net
recipient_delimiter = +
virtual_mailbox_domains = bounces.example.net
virtual_mailbox_base = {folder}/mail
virtual_mailbox_maps = texthash:{folder}/conf/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
transport_maps = texthash:{folder}/conf/transport
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
smtputf8_enable = no
biff = no
delay_warning_time = 0
smtp_connect_timeout = 2s
# one try, then the bounce: a server that cannot be reached bounces now, not in 5 days
maximal_queue_lifetime = 0
bounce_queue_lifetime = 0
"""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    binary = require_tool("/usr/sbin/postfix")
    # Postfix's unprivileged processes must reach the queue: not under pytest's 0700 tmp
    folder = Path(tempfile.mkdtemp(prefix="newsletter-postfix-"))
    folder.chmod(0o755)
    conf = folder / "conf"
    try:
        for sub in ("conf", "queue", "data", "mail"):
            (folder / sub).mkdir()
        shutil.chown(folder / "data", "postfix")
        shutil.chown(folder / "mail", "nobody", "nogroup")
        port, closed = free_port(), free_port()  # nothing will listen on `closed`
        refuse = Scripted(rcpt=lambda _session, address: (
            f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
            if address == JANE else None))
        with SmtpServer(refuse) as destination:
            (conf / "main.cf").write_text(_main_cf(folder))
            (conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
            (conf / "vmailbox").write_text("bounces@bounces.example.net bounces/\n")
            (conf / "transport").write_text(
                f"{BOB} smtp:[127.0.0.1]:{closed}\n"
                f"example.org smtp:[127.0.0.1]:{destination.port}\n")
            started = subprocess.run([binary, "-c", str(conf), "start"], capture_output=True,
                                     text=True)
            assert started.returncode == 0, (started.stderr, _read(folder / "maillog"))
            try:
                deadline = time.monotonic() + 30
                while not _listening(port):
                    assert time.monotonic() < deadline, _read(folder / "maillog")
                    time.sleep(0.1)
                yield Postfix(folder, port, destination, folder / "mail" / "bounces")
            finally:
                subprocess.run([binary, "-c", str(conf), "stop"], capture_output=True)
                deadline = time.monotonic() + 15
                while _listening(port) and time.monotonic() < deadline:
                    time.sleep(0.1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else "(no log)"


def _wait_for_bounces(postfix: Postfix, n: int) -> list[Path]:
    new = postfix.maildir / "new"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = sorted(new.iterdir()) if new.is_dir() else []
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"Postfix delivered no {n} bounces in time:\n{postfix.log}")


def through(postfix: Postfix) -> dict[str, str]:
    return {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(postfix.port),
            "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_USER": ""}


def test_a_late_bounce_from_a_real_postfix_is_recorded_and_the_next_send_skips_the_member(
        project: Project, postfix: Postfix) -> None:
    text = project.config.read_text(encoding="utf-8")
    text = re.sub(r"limits:.*?\n(?=\S)", FAST, text, flags=re.S)
    project.write("newsletter.yaml", text + f"bounces:\n  address: {BOUNCES}\n")
    project.write("subscribers/inbox.csv", MEMBERS)
    assert project.run("subscribers", "import", "subscribers/inbox.csv",
                       "--list", "members").code == 0

    sent = project.run("send", "issues/2017-02-news.yaml", "--list", "members", "--yes",
                       env=through(postfix))
    assert sent.code == 0, sent.err
    assert "3 recipients: 3 sent" in sent.out  # Postfix accepted them all: 250
    bounces = _wait_for_bounces(postfix, 2)
    assert re.search(rf"to=<{re.escape(JANE)}>.*dsn=5\.1\.1, status=bounced", postfix.log)
    # bob's server cannot be reached: deferred, and (one try only) returned at once
    assert re.search(rf"to=<{re.escape(BOB)}>.*dsn=4\.4\.1, status=deferred", postfix.log)
    assert "status=expired, returned to sender" in postfix.log
    assert [r.rcpt_to for r in postfix.destination.received] == [(CAROL,)]
    # the bounce went to the return path that names jane's delivery, not to news@
    heads = [p.read_bytes().split(b"\n\n", 1)[0] for p in bounces]
    assert all(b"Delivered-To: bounces+" in h and b"@bounces.example.net" in h for h in heads)
    assert all(JANE.encode() not in h.split(b"Delivered-To:")[1].split(b"\n")[0]
               for h in heads)

    inbox = project.run("inbox", "--maildir", str(postfix.maildir))
    assert inbox.code == 0, inbox.err
    assert inbox.out.startswith(f"inbox: Maildir {postfix.maildir}: 2 new messages: "
                                "1 bounce, 1 soft bounce\n")
    assert f"  bounced       {JANE}  2017-02-news: 5.1.1 smtp; 550 5.1.1 <{JANE}>: " \
        "Recipient address rejected: User unknown" in inbox.out
    assert f"  soft bounce   {BOB}  2017-02-news: 4.4.1" in inbox.out
    assert statuses(project) == {JANE: "bounced", BOB: "subscribed", CAROL: "subscribed"}
    assert query(project, "SELECT state, enhanced_code, stage FROM deliveries "
                 "WHERE address = ?", JANE) == [("bounced", "5.1.1", "report")]
    assert "1 bounced" in project.run("status").out

    again = project.run("inbox", "--maildir", str(postfix.maildir))
    assert again.code == 0
    assert again.out == f"inbox: Maildir {postfix.maildir}: no messages\n"
    assert len(os.listdir(postfix.maildir / ".Processed" / "cur")) == 2

    postfix.destination.received.clear()
    following = project.run("send", "issues/2014-06-network-update.yaml", "--list", "members",
                            "--yes", env=through(postfix))
    assert following.code == 0, following.err
    assert "2 recipients: 2 sent" in following.out  # jane is not among them
    deadline = time.monotonic() + 30
    while not postfix.destination.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r.rcpt_to for r in postfix.destination.received] == [(CAROL,)]
    assert JANE not in postfix.log.split("2014-06-network-update")[-1]
