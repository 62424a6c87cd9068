"""`newsletter inbox` over IMAP: Debian's Dovecot on 127.0.0.1, started here.

The fixture writes a Dovecot configuration in a temporary folder (a self-signed
certificate for 127.0.0.1, a passwd-file with one user, Maildirs owned by an unprivileged
user) and runs ``dovecot -F`` on free ports: IMAPS (implicit TLS) and IMAP (STARTTLS).
Mail is put in with IMAP APPEND, as any client would; the real CLI reads it.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_inbox
from conftest import Project, free_port, require_tool
from test_inbox import JANE, Sent, query, statuses

# the sent project and its per-test copy, shared with test_inbox.py
sent = test_inbox.sent
fresh = test_inbox.fresh

USER, PASSWORD = "bounces", "imap-test-password"


@dataclass
class Dovecot:
    folder: Path
    imaps: int
    imap: int
    cert: Path

    def client(self) -> object:
        from imapclient import IMAPClient

        context = ssl.create_default_context(cafile=str(self.cert))
        client = IMAPClient("127.0.0.1", port=self.imaps, ssl=True, ssl_context=context)
        client.login(USER, PASSWORD)
        return client


def _user(name: str) -> str:
    """An unprivileged system user Dovecot may run as (it refuses root)."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return "nobody"
    return name


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("dovecot did not start listening")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    binary = require_tool("/usr/sbin/dovecot")
    openssl = require_tool("openssl")
    # Dovecot's unprivileged processes must reach these files: not under pytest's 0700 tmp
    folder = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    folder.chmod(0o755)
    try:
        cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        (folder / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        home = folder / "home"
        for sub in ("cur", "new", "tmp"):
            (home / USER / "Maildir" / sub).mkdir(parents=True)
        mail_user = "nobody"
        shutil.chown(home, mail_user, "nogroup")
        for path in home.rglob("*"):
            shutil.chown(path, mail_user, "nogroup")
        imaps, imap = free_port(), free_port()
        internal, login = _user("dovecot"), _user("dovenull")
        (folder / "state").mkdir()
        (folder / "run").mkdir()
        config = folder / "dovecot.conf"
        config.write_text(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = newsletter-test-{imaps}
log_path = {folder}/dovecot.log
default_internal_user = {internal}
default_internal_group = {"dovecot" if internal == "dovecot" else "nogroup"}
default_login_user = {login}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid=nogroup home={home}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")
        process = subprocess.Popen([binary, "-F", "-c", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(imaps, process, folder / "dovecot.log")
            _wait_for(imap, process, folder / "dovecot.log")
            yield Dovecot(folder, imaps, imap, cert)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mailbox_of(dovecot: Dovecot) -> Iterator[Dovecot]:
    """The user's mailbox emptied before each test."""
    client = dovecot.client()
    for folder in [f[2] for f in client.list_folders()]:  # type: ignore[attr-defined]
        if folder != "INBOX":
            client.delete_folder(folder)  # type: ignore[attr-defined]
    client.select_folder("INBOX")  # type: ignore[attr-defined]
    uids = client.search()  # type: ignore[attr-defined]
    if uids:
        client.delete_messages(uids)  # type: ignore[attr-defined]
        client.expunge()  # type: ignore[attr-defined]
    client.logout()  # type: ignore[attr-defined]
    yield dovecot


def put(dovecot: Dovecot, *messages: bytes) -> None:
    client = dovecot.client()
    for data in messages:
        client.append("INBOX", data)  # type: ignore[attr-defined]
    client.logout()  # type: ignore[attr-defined]


def folders(dovecot: Dovecot) -> dict[str, list[tuple[bytes, ...]]]:
    """Each folder's messages' flags (read without marking anything)."""
    client = dovecot.client()
    found = {}
    for name in [f[2] for f in client.list_folders()]:  # type: ignore[attr-defined]
        client.select_folder(name, readonly=True)  # type: ignore[attr-defined]
        flags = client.get_flags(client.search())  # type: ignore[attr-defined]
        found[name] = [tuple(sorted(x for x in f if x != b"\\Recent"))
                       for _, f in sorted(flags.items())]
    client.logout()  # type: ignore[attr-defined]
    return found


def use_imap(project: Project, dovecot: Dovecot, *, tls: str = "implicit") -> None:
    port = dovecot.imaps if tls == "implicit" else dovecot.imap  # STARTTLS or plaintext
    project.write("newsletter.yaml", project.config.read_text(encoding="utf-8") + f"""
inbox:
  imap:
    host: 127.0.0.1
    port: {port}
    tls: {tls}
    user: {USER}
    password_env: TEST_IMAP_PASSWORD
""")


def run(project: Project, dovecot: Dovecot, **env: str) -> tuple[int, str, str]:
    result = project.run("inbox", env={"TEST_IMAP_PASSWORD": PASSWORD,
                                       "SSL_CERT_FILE": str(dovecot.cert), **env})
    return result.code, result.out, result.err


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_inbox_reads_imap_over_tls_moves_what_it_dealt_with_and_leaves_the_rest_unread(
        mailbox_of: Dovecot, sent: Sent, fresh: Project, tls: str) -> None:
    put(mailbox_of, sent.about("postfix-user-unknown"), sent.about("ooo-rfc3834"),
        sent.about("person-reply"), sent.about("unsubscribe-mailto",
                                                address="bob.jones@example.org"))
    use_imap(fresh, mailbox_of, tls=tls)
    code, out, err = run(fresh, mailbox_of)
    assert code == 0, err
    port = mailbox_of.imaps if tls == "implicit" else mailbox_of.imap
    assert out.startswith(f"inbox: IMAP 127.0.0.1:{port} folder INBOX: 4 new messages: "
                          "1 bounce, 1 unsubscribe request, 1 auto-reply, 1 from a person")
    assert statuses(fresh) == {JANE: "bounced", "bob.jones@example.org": "unsubscribed",
                               "carol.smith@example.org": "subscribed"}
    boxes = folders(mailbox_of)
    assert boxes["INBOX"] == [(), ()]  # the two for a person, still unread
    assert boxes["Processed"] == [(b"\\Seen",), (b"\\Seen",)]
    code, out, _ = run(fresh, mailbox_of)
    assert code == 0
    assert "0 new messages (2 handled before: nothing done again)" in out
    assert folders(mailbox_of) == boxes


def test_an_imap_certificate_that_cannot_be_verified_stops_before_login(
        mailbox_of: Dovecot, sent: Sent, fresh: Project) -> None:
    put(mailbox_of, sent.about("postfix-user-unknown"))
    use_imap(fresh, mailbox_of)
    result = fresh.run("inbox", env={"TEST_IMAP_PASSWORD": PASSWORD,
                                     "SSL_CERT_FILE": os.devnull})
    assert result.code == 1
    assert result.err.startswith(f"127.0.0.1:{mailbox_of.imaps}: the certificate could not be "
                                 "verified (")
    assert "nothing was read" in result.err
    assert statuses(fresh)[JANE] == "subscribed"
    assert folders(mailbox_of) == {"INBOX": [()]}


def test_a_refused_imap_login_or_a_missing_password_is_a_message(
        mailbox_of: Dovecot, fresh: Project) -> None:
    use_imap(fresh, mailbox_of)
    code, _, err = run(fresh, mailbox_of, TEST_IMAP_PASSWORD="wrong")
    assert code == 1
    assert err.startswith(f"127.0.0.1:{mailbox_of.imaps}: login refused for {USER} (")
    assert err.rstrip().endswith("check inbox.imap.user and TEST_IMAP_PASSWORD")
    code, _, err = run(fresh, mailbox_of, TEST_IMAP_PASSWORD="")
    assert (code, err) == (1, "inbox.imap: the password is not set: put it in the environment "
                              "variable TEST_IMAP_PASSWORD (never in newsletter.yaml)\n")


def test_nothing_is_deleted_from_imap_unless_asked(mailbox_of: Dovecot, sent: Sent,
                                                   fresh: Project) -> None:
    put(mailbox_of, sent.about("gmail-mailbox-full-delay"), sent.about("person-reply"))
    use_imap(fresh, mailbox_of)
    env = {"TEST_IMAP_PASSWORD": PASSWORD, "SSL_CERT_FILE": str(mailbox_of.cert)}
    result = fresh.run("inbox", "--after", "flag", env=env)
    assert result.code == 0, result.err
    assert folders(mailbox_of) == {"INBOX": [(b"\\Seen",), ()]}
    put(mailbox_of, sent.about("qmail-no-mailbox"))
    result = fresh.run("inbox", "--after", "delete", env=env)
    assert result.code == 0, result.err
    # asked to delete: the bounce and the delay dealt with before go; the person's mail stays
    assert folders(mailbox_of) == {"INBOX": [()]}
    assert statuses(fresh)[JANE] == "bounced"
    assert query(fresh, "SELECT count(*) FROM inbox_messages") == [(3,)]


def test_plaintext_imap_is_allowed_to_this_machine_only(mailbox_of: Dovecot, sent: Sent,
                                                        fresh: Project) -> None:
    put(mailbox_of, sent.about("sendmail-dsn"))
    use_imap(fresh, mailbox_of, tls="none")
    code, _, err = run(fresh, mailbox_of)
    assert code == 0, err
    assert statuses(fresh)[JANE] == "bounced"
    remote = fresh.config.read_text(encoding="utf-8").replace("host: 127.0.0.1",
                                                               "host: imap.example.org")
    fresh.write("newsletter.yaml", remote)
    result = fresh.run("inbox", env={"TEST_IMAP_PASSWORD": PASSWORD})
    assert result.code == 1
    assert "inbox.imap.tls: tls: none sends the password and the mail in the clear to " \
        "imap.example.org" in result.err
