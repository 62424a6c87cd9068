"""`newsletter send` and `newsletter status` as a user runs them: the real CLI, a real server.

The server runs in this process (tests/smtp_servers.py) on 127.0.0.1 and keeps what it
receives across CLI runs, so a test can compare the ledger with the mail that arrived.
"""

from __future__ import annotations

import csv
import email
import email.policy
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dkim
import pytest
from conftest import Project, Result
from smtp_servers import Delay, Drop, Faults, Received, Scripted, Session, SmtpServer

ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"
REQUIRED = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "List-Id",
            "List-Unsubscribe", "List-Unsubscribe-Post")
FAST_LIMITS = """limits:
  per_minute: 0
  per_day: 0
  concurrency: 2
  retry_base: 0.2
  retry_max: 0.5
"""


def configure(project: Project, limits: str = FAST_LIMITS, smtp_extra: str = "") -> None:
    text = project.config.read_text(encoding="utf-8")
    text = re.sub(r"limits:.*?\n(?=\S)", limits, text, flags=re.S)
    if smtp_extra:
        text = text.replace("  password_env: NEWSLETTER_SMTP_PASSWORD\n",
                            "  password_env: NEWSLETTER_SMTP_PASSWORD\n" + smtp_extra)
    project.write("newsletter.yaml", text)


def members_csv(project: Project, n: int) -> str:
    rows = ["email,name,organisation,consent_source"]
    rows += [f"member{i:04d}@example.org,Member {i},Org {i % 7},test" for i in range(n)]
    project.write("subscribers/many.csv", "\n".join(rows) + "\n")
    return "subscribers/many.csv"


def smtp_env(server: SmtpServer, **extra: str) -> dict[str, str]:
    return {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
            "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD, **extra}


def setup(project: Project, n: int | None = None, **kwargs: str) -> int:
    """Configure, import members (the sample list, or n generated ones); return how many."""
    configure(project, **kwargs)
    csv_file = members_csv(project, n) if n else "subscribers/members.csv"
    result = project.run("subscribers", "import", csv_file, "--list", "members")
    assert result.code == 0, result.err
    found = re.search(r"added (\d+)", result.out)
    assert found, result.out
    return int(found.group(1))


def send(project: Project, server: SmtpServer, *args: str, **env: str) -> Result:
    return project.run("send", ISSUE, "--list", "members", "--yes", *args,
                       env=smtp_env(server, **env))


def status_rows(project: Project) -> list[dict[str, str]]:
    result = project.run("status", ISSUE, "--csv", "status.csv")
    assert result.code == 0, result.err
    with open(project.root / "status.csv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def message_id(data: bytes) -> str:
    found = re.search(rb"^Message-ID: (\S+)\r$", data, flags=re.M)
    assert found
    return found.group(1).decode()


def recipients(server: SmtpServer) -> Counter[str]:
    return Counter(r.rcpt_to[0] for r in server.delivered)


def check_message(received: Received, *, dkim_record: bytes | None = None) -> None:
    """One recipient, strict parse, the headers, text before HTML, line lengths, CRLF, DKIM."""
    data = received.data
    assert len(received.rcpt_to) == 1
    message = email.message_from_bytes(data, policy=email.policy.strict)
    assert not message.defects
    for part in message.walk():
        assert not part.defects
    for name in REQUIRED:
        assert len(message.get_all(name) or []) == 1, name
    assert message["To"] == received.rcpt_to[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://" in message["List-Unsubscribe"]
    types = [p.get_content_type() for p in message.walk()]
    assert types.index("text/plain") < types.index("text/html")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    if dkim_record is not None:
        assert data.startswith(b"DKIM-Signature:")
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: dkim_record)


# --------------------------------------------------------------------------- the happy path


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key and the DNS TXT record that publishes its public half."""
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    import base64

    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_send_delivers_one_well_formed_signed_message_to_every_member(
        project: Project, dkim_key: tuple[Path, bytes]) -> None:
    n = setup(project)
    key, record = dkim_key
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server, NEWSLETTER_DKIM_KEY=str(key),
                      NEWSLETTER_DKIM_SELECTOR="news2016")
    assert result.code == 0, result.err
    assert f"{n} recipients" in result.out and f"{n} sent" in result.out
    assert len(server.received) == n
    assert sorted(recipients(server)) == sorted(r["address"] for r in status_rows(project))
    for received in server.received:
        check_message(received, dkim_record=record)
        assert received.mail_from == "news@wmasn.example.org"
    ids = {message_id(r.data) for r in server.received}
    assert len(ids) == n and all(i.endswith("@wmasn.example.org>") for i in ids)
    again = send(project, server)  # a second send of a finished issue sends nothing
    assert again.code == 0 and "nothing is due" in again.out
    assert len(server.received) == n


def test_send_refuses_to_run_without_confirmation_when_nobody_can_answer(
        project: Project) -> None:
    setup(project)
    with SmtpServer() as server:
        result = project.run("send", ISSUE, "--list", "members", env=smtp_env(server),
                             input="")
    assert result.code == 2
    assert "--yes" in result.err
    assert server.sessions == 0
    assert "nothing has been sent" in project.run("status").out


def at_terminal(project: Project, *args: str, answer: str, env: dict[str, str]
                ) -> tuple[int, str]:
    """The CLI on a pseudo-terminal (stdin, stdout, stderr); ``answer`` typed at the prompt."""
    import pty
    import select

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args], cwd=project.root,
        env={**os.environ, "NEWSLETTER_SECRET": "test-secret-0123456789abcdef",
             "SOURCE_DATE_EPOCH": "1480896000", "TERM": "xterm-256color", "COLUMNS": "120",
             **env},
        stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    output, answered = b"", False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Send now?" in output:
                os.write(main, answer.encode() + b"\n")
                answered = True
        code = proc.wait(timeout=60)
    finally:
        os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    return code, text.replace("\r", "\n")


def test_at_a_terminal_the_plan_is_shown_and_nothing_happens_until_confirmed(
        project: Project) -> None:
    n = setup(project, limits="limits:\n  per_minute: 30\n  per_day: 10000\n")  # Microsoft 365
    args = ("send", ISSUE, "--list", "members")
    with SmtpServer(users={USER: PASSWORD}) as server:
        code, shown = at_terminal(project, *args, answer="n", env=smtp_env(server))
        assert code == 2 and "not sent (nothing was changed)" in shown
        # the plan: recipients, limits, estimated duration (30 a minute: 50 take 1 min 40 s)
        assert f"{n} recipients" in shown and "30/min" in shown and "10000/day" in shown
        assert "about 1 min" in shown and f"via 127.0.0.1:{server.port}" in shown
        assert server.sessions == 0
        assert "nothing has been sent" in project.run("status").out
        configure(project)  # limits off, so the bar fills quickly
        code, shown = at_terminal(project, *args, answer="y", env=smtp_env(server))
    assert code == 0, shown
    assert len(server.received) == n
    # rich's bar: done/total, rate, time remaining; no plain progress lines on a terminal
    assert re.search(rf"sending.*{n}/{n}\s+\d+\.\d/s\s+\d:\d\d:\d\d", shown), shown
    assert "progress:" not in shown


def test_the_plan_names_subject_and_sender_and_says_whether_proofed_and_archived(
        project: Project) -> None:
    setup(project)
    env = {"NEWSLETTER_SMTP_PASSWORD": PASSWORD}
    plan = project.run("send", ISSUE, "--list", "members", env=env)  # no terminal: refused
    assert plan.code == 2 and "nobody is at a terminal" in plan.err
    assert "  subject: Network news: NRM reform, help to return home, a new MSc" in plan.out
    assert "  from:    " in plan.out and "<news@wmasn.example.org>" in plan.out
    assert "  proof:   none of this exact content was sent" in plan.out
    assert "  archive: not built here: run `newsletter archive`" in plan.out
    with SmtpServer(users={USER: PASSWORD}) as server:
        assert project.run("send", ISSUE, "--to", "editor@example.org",
                           env=smtp_env(server)).code == 0
    assert project.run("archive").code == 0
    ready = project.run("send", ISSUE, "--list", "members", env=env)
    assert "  proof:   this exact content was sent as a proof 20" in ready.out
    assert "  archive: site/ holds this issue as it is now" in ready.out
    path = project.root / ISSUE
    path.write_text(path.read_text(encoding="utf-8").replace("radical change", "real change"),
                    encoding="utf-8")
    edited = project.run("send", ISSUE, "--list", "members", env=env)
    assert "  proof:   none of this exact content was sent" in edited.out
    assert "  archive: site/ holds an older version of this issue" in edited.out
    assert "nothing has been sent" in project.run("status").out


def test_a_wait_for_the_limits_is_said_with_what_is_waited_for(project: Project) -> None:
    setup(project, n=5, limits="""limits:
  per_minute: 0
  per_day: 0
  concurrency: 1
  batch_size: 2
  batch_pause: 2
""")
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 0, result.err
    assert "progress: 2/5 done: waiting for the pause between batches, next in 2 s" \
        in result.err
    # 3 to send: this pause, a batch of 2, a pause, the last one: about 4 s
    assert re.search(r"next in 2 s, about [34] s left", result.err), result.err


def test_without_a_terminal_progress_is_plain_log_lines(project: Project) -> None:
    n = setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 0, result.err
    assert re.search(rf"^progress: {n}/{n} done \(\d+\.\d/s\): {n} sent$", result.err, re.M)
    assert "\x1b[" not in result.err + result.out


def test_a_proof_goes_to_one_address_with_a_test_subject_and_is_not_recorded(
        project: Project) -> None:
    setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = project.run("send", ISSUE, "--to", "editor@example.org",
                             env=smtp_env(server))
        bad = project.run("send", ISSUE, "--to", "editor@exa mple.org\nBcc: x@y.org",
                          env=smtp_env(server))
    assert result.code == 0, result.err
    assert [r.rcpt_to for r in server.received] == [("editor@example.org",)]
    message = email.message_from_bytes(server.received[0].data, policy=email.policy.strict)
    assert message["Subject"].startswith("[TEST] ")
    check_message(server.received[0])
    assert bad.code == 1 and "--to" in bad.err
    assert "nothing has been sent" in project.run("status").out


def test_a_dry_run_writes_each_message_and_records_nothing(project: Project) -> None:
    n = setup(project)
    result = project.run("send", ISSUE, "--list", "members", "--dry-run", "outbox")
    assert result.code == 0, result.err
    files = sorted((project.root / "outbox").glob("*.eml"))
    assert len(files) == n
    for path in files:
        data = path.read_bytes()
        message = email.message_from_bytes(data, policy=email.policy.strict)
        check_message(Received("", (message["To"],), data, 0, "accepted"))
    assert "nothing has been sent" in project.run("status").out


# --------------------------------------------------------------------------- faults


def test_unknown_addresses_fail_for_good_and_their_members_are_bounced(project: Project) -> None:
    n = setup(project, n=30)
    bad = {"member0003@example.org", "member0017@example.org"}
    faults = Scripted(rcpt=lambda s, rcpt: "550 5.1.1 <x>: Recipient address rejected: "
                      "User unknown" if rcpt in bad else None)
    with SmtpServer(faults, users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 1
    assert "2 failed for good" in result.err
    assert set(recipients(server)) == {f"member{i:04d}@example.org" for i in range(n)} - bad
    rows = {r["address"]: r for r in status_rows(project)}
    for address in bad:
        assert (rows[address]["state"], rows[address]["reply_code"],
                rows[address]["enhanced_code"]) == ("failed", "550", "5.1.1")
    shown = project.run("status", ISSUE).out
    assert "member0003@example.org" in shown and "5.1.1" in shown
    listing = project.run("subscribers", "list", "--list", "members").out
    assert re.search(r"member0003@example.org\s+members\s+bounced", listing)


def test_a_temporary_failure_is_retried_later_in_the_same_run(project: Project) -> None:
    setup(project, n=10)
    refused: Counter[str] = Counter()

    def once(session: Session, rcpt: str) -> str | None:
        if rcpt == "member0004@example.org" and refused[rcpt] < 2:
            refused[rcpt] += 1
            return "451 4.3.0 Temporary local problem, try again"
        return None

    with SmtpServer(Scripted(rcpt=once), users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 0, result.err
    assert recipients(server)["member0004@example.org"] == 1
    row = next(r for r in status_rows(project) if r["address"] == "member0004@example.org")
    assert (row["state"], row["attempts"]) == ("sent", "3")


def test_421_and_a_dropped_connection_mid_batch_lose_nobody_and_repeat_nobody(
        project: Project) -> None:
    n = setup(project, n=40)
    count = Counter[str]()

    class Faulty(Faults):
        def on_mail(self, session: Session, sender: str) -> str | None:
            count["mail"] += 1
            return "421 4.7.0 Try again later, closing connection" if count["mail"] == 7 \
                else None

        def on_rcpt(self, session: Session, rcpt: str) -> Drop | None:
            count["rcpt"] += 1
            return Drop() if count["rcpt"] == 20 else None

    with SmtpServer(Faulty(), users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 0, result.err
    assert recipients(server) == Counter(f"member{i:04d}@example.org" for i in range(n))
    assert server.sessions >= 4


def test_a_disconnect_after_the_final_dot_is_unknown_until_retry_unknown_resends_it(
        project: Project) -> None:
    setup(project, n=8)
    victim = "member0005@example.org"
    dropped: list[bool] = []

    def dot(session: Session, data: bytes) -> Drop | None:
        if f"To: {victim}".encode() in data and not dropped:
            dropped.append(True)
            return Drop()
        return None

    with SmtpServer(Scripted(dot=dot), users={USER: PASSWORD}) as server:
        first = send(project, server)
        assert first.code == 0, first.err
        assert "1 unknown" in first.out and "--retry-unknown" in first.out
        second = send(project, server)
        assert recipients(server)[victim] == 1  # not resent without being asked
        assert "nothing is due" in second.out
        third = send(project, server, "--retry-unknown")
        assert third.code == 0, third.err
    copies = [r.data for r in server.delivered if r.rcpt_to == (victim,)]
    assert len(copies) == 2
    assert message_id(copies[0]) == message_id(copies[1])
    assert {r["state"] for r in status_rows(project)} == {"sent"}


def test_a_server_too_slow_to_answer_the_final_dot_leaves_the_message_unknown(
        project: Project) -> None:
    setup(project, n=4, smtp_extra="  final_dot_timeout: 1\n")
    slow = Scripted(dot=lambda s, data: Delay(2.5, "250 2.0.0 Ok")
                    if b"To: member0002@example.org" in data else None)
    with SmtpServer(slow, users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 0, result.err
    row = next(r for r in status_rows(project) if r["address"] == "member0002@example.org")
    assert (row["state"], row["stage"]) == ("unknown", "dot")
    assert "unknown" in project.run("status", ISSUE).out


def test_repeated_policy_refusals_stop_the_run_and_leave_the_rest_pending(
        project: Project) -> None:
    setup(project, n=40)
    faults = Scripted(dot=lambda s, d: "550 5.7.26 This mail has been blocked because the "
                      "sender is unauthenticated")
    with SmtpServer(faults, users={USER: PASSWORD}) as server:
        result = send(project, server)
    assert result.code == 1
    assert "circuit breaker" in result.err and "5.7.26" in result.err
    assert "still pending" in result.err
    states = Counter(r["state"] for r in status_rows(project))
    assert states["pending"] >= 30 and states["sent"] == 0
    listing = project.run("subscribers", "list", "--list", "members").out
    assert "bounced" not in listing


def test_a_refused_login_stops_at_once(project: Project) -> None:
    setup(project, n=5)
    with SmtpServer(users={USER: "another"}) as server:
        result = send(project, server)
    assert result.code == 1 and "refused the login" in result.err
    assert "MAIL" not in server.commands


@pytest.mark.parametrize("how", ["proof", "send"])
def test_a_server_without_login_names_the_setting_to_change_once(
        project: Project, how: str) -> None:
    setup(project)
    with SmtpServer() as server:  # takes mail without AUTH; smtp.user is set
        args = ("--to", "editor@example.org") if how == "proof" else ()
        result = project.run("send", ISSUE, *(args or ("--list", "members", "--yes")),
                             env=smtp_env(server))
    assert result.code == 1 and "Traceback" not in result.err
    assert "offers no login (no AUTH in its reply to EHLO)" in result.err
    assert "remove smtp.user from newsletter.yaml" in result.err
    assert "STARTTLS" not in result.err
    assert result.err.count("offers no login") == 1
    assert server.count == 0


def test_plaintext_to_a_remote_host_is_refused_before_any_connection(project: Project) -> None:
    setup(project, n=3)
    with SmtpServer() as server:
        env = smtp_env(server, NEWSLETTER_SMTP_HOST="smtp.wmasn.example.org")
        result = project.run("send", ISSUE, "--list", "members", "--yes", env=env)
    assert result.code == 1
    assert "in the clear" in result.err or "tls" in result.err.lower()
    assert server.sessions == 0
    assert "Traceback" not in result.err


def test_starttls_is_required_when_configured_and_no_login_is_tried_without_it(
        project: Project) -> None:
    setup(project, n=3)
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server, NEWSLETTER_SMTP_TLS="starttls")
    assert result.code == 1 and "does not offer STARTTLS" in result.err
    assert server.auth_attempts == 0 and "MAIL" not in server.commands


def test_a_server_that_cannot_be_reached_stops_the_send_with_everyone_still_pending(
        project: Project) -> None:
    from conftest import free_port

    n = setup(project, n=12)
    closed = free_port()  # nothing listens there: connection refused
    started = time.monotonic()
    result = project.run("send", ISSUE, "--list", "members", "--yes", env={
        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(closed),
        "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD})
    assert result.code == 1 and "Traceback" not in result.err
    assert f"could not connect to 127.0.0.1:{closed}" in result.err
    assert f"{n} recipients are still pending" in result.err
    assert time.monotonic() - started < 30  # a few quick retries, not minutes
    assert {r["state"] for r in status_rows(project)} == {"pending"}  # nobody deferred
    with SmtpServer(users={USER: PASSWORD}) as server:  # fixed: the same command finishes
        again = send(project, server)
    assert again.code == 0, again.err
    assert recipients(server) == Counter(f"member{i:04d}@example.org" for i in range(n))


def test_status_of_an_issue_that_does_not_exist_says_so(project: Project) -> None:
    setup(project, n=2)
    missing = project.run("status", "issues/2017-20-news.yaml")
    assert missing.code == 1 and "Traceback" not in missing.err
    assert "issues/2017-20-news.yaml: no such issue file" in missing.err
    unsent = project.run("status", ISSUE)
    assert unsent.code == 0 and "2017-02-news: not sent yet" in unsent.out


def test_a_changed_issue_is_not_resumed(project: Project) -> None:
    setup(project, n=5, limits=FAST_LIMITS.replace("retry_base: 0.2", "retry_base: 3600")
          .replace("retry_max: 0.5", "retry_max: 7200"))
    faults = Scripted(rcpt=lambda s, r: "450 4.2.1 busy" if r.endswith("3@example.org")
                      else None)
    with SmtpServer(faults, users={USER: PASSWORD}) as server:
        first = send(project, server)
        assert first.code == 0, first.err
        assert "1 deferred" in first.out
        shown = project.run("status", ISSUE).out  # each deferred one, with its next attempt
        assert re.search(r"deferred +member0003@example.org +attempt 1, next "
                         r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: 450 4.2.1 busy", shown), shown
        path = project.root / ISSUE
        path.write_text(path.read_text(encoding="utf-8").replace(
            "title:", "title: Changed", 1), encoding="utf-8")
        second = send(project, server)
    assert second.code == 1 and "changed since sending started" in second.err


def test_a_corrupt_ledger_stops_the_send_before_any_connection(project: Project) -> None:
    setup(project, n=5)
    with SmtpServer(users={USER: PASSWORD}) as server:
        first = send(project, server)
        assert first.code == 0, first.err
        database = project.root / "newsletter.db"
        data = bytearray(database.read_bytes())
        data[:100] = b"\0" * 100  # the header is gone: not a database any more
        database.write_bytes(bytes(data))
        for leftover in project.root.glob("newsletter.db-*"):
            leftover.unlink()
        sessions = server.sessions
        second = send(project, server)
    assert second.code == 1 and "not a usable state database" in second.err
    assert "Traceback" not in second.err
    assert server.sessions == sessions and len(server.received) == 5


# --------------------------------------------------------------------------- concurrency


def slow_server(delay: float) -> SmtpServer:
    return SmtpServer(Scripted(dot=lambda s, d: Delay(delay, "250 2.0.0 Ok")),
                      users={USER: PASSWORD})


def start_send(project: Project, server: SmtpServer) -> subprocess.Popen[str]:
    env = {**os.environ, "NEWSLETTER_SECRET": "test-secret-0123456789abcdef",
           "SOURCE_DATE_EPOCH": "1480896000", **smtp_env(server)}
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", ISSUE, "--list",
                             "members", "--yes"], cwd=project.root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_mail(server: SmtpServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while server.count < count:
        assert time.monotonic() < deadline, "the send did not start"
        time.sleep(0.05)


def test_a_second_send_while_one_runs_is_refused(project: Project) -> None:
    setup(project, n=40)
    with slow_server(0.2) as server:  # 4 s in all: longer than a second process takes to start
        first = start_send(project, server)
        wait_for_mail(server, 2)
        second = send(project, server)
        _out, err = first.communicate(timeout=120)
    assert second.code == 1 and "is being sent right now" in second.err
    assert second.out == ""  # refused before any plan ("resuming ...") is shown
    assert first.returncode == 0, err
    assert recipients(server) == Counter(f"member{i:04d}@example.org" for i in range(40))


def test_a_member_who_unsubscribes_mid_send_is_not_sent_to(project: Project) -> None:
    setup(project, n=40)
    leaver = "member0035@example.org"
    with slow_server(0.05) as server:
        running = start_send(project, server)
        wait_for_mail(server, 2)
        left = project.run("subscribers", "unsubscribe", leaver)
        assert left.code == 0, left.err
        _out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert leaver not in recipients(server)
    row = next(r for r in status_rows(project) if r["address"] == leaver)
    assert row["state"] == "suppressed"


def test_ctrl_c_stops_after_the_messages_in_flight_and_the_next_run_finishes(
        project: Project) -> None:
    setup(project, n=40)
    with slow_server(0.05) as server:
        running = start_send(project, server)
        wait_for_mail(server, 3)
        running.send_signal(signal.SIGINT)
        out, err = running.communicate(timeout=60)
        assert running.returncode == 130, err  # stopped, not finished
        assert "run the same command to continue" in out and "Traceback" not in err
        assert "still pending" in out
        assert server.count < 40
        # the messages in flight were finished and recorded: none left attempting
        states = Counter(r["state"] for r in status_rows(project))
        assert set(states) == {"sent", "pending"} and states["sent"] == len(server.accepted)
        result = send(project, server)
    assert result.code == 0, result.err
    assert recipients(server) == Counter(f"member{i:04d}@example.org" for i in range(40))


def start_send_with(project: Project, server: SmtpServer, limits: str
                    ) -> subprocess.Popen[str]:
    configure(project, limits=limits)
    return start_send(project, server)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_during_a_batch_pause_ends_the_run_at_once(
        project: Project, stop: signal.Signals) -> None:
    setup(project, n=10)
    pause = """limits:
  per_minute: 0
  per_day: 0
  concurrency: 1
  batch_size: 2
  batch_pause: 120
"""
    with SmtpServer(users={USER: PASSWORD}) as server:
        running = start_send_with(project, server, pause)
        wait_for_mail(server, 2)
        time.sleep(0.3)  # into the two-minute pause
        started = time.monotonic()
        running.send_signal(stop)
        out, err = running.communicate(timeout=30)  # not the 120 s pause
        stopped_in = time.monotonic() - started
    assert running.returncode == 130, err
    assert stopped_in < 30 and "Traceback" not in err
    assert ("8 still pending; run the same command to continue: newsletter send "
            f"{ISSUE} --list members") in out
    assert Counter(r["state"] for r in status_rows(project)) == {"sent": 2, "pending": 8}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_during_a_421_back_off_ends_the_run_at_once(
        project: Project, stop: signal.Signals) -> None:
    setup(project, n=10)
    slow = """limits:
  per_minute: 0
  per_day: 0
  concurrency: 1
  retry_base: 300
  retry_max: 3600
"""
    refused = Counter[str]()

    class Busy(Faults):  # every message: "slow down", so the stream backs off, doubling
        def on_mail(self, session: Session, sender: str) -> str:
            refused["mail"] += 1
            return "421 4.7.0 Too many messages, slow down"

    with SmtpServer(Busy(), users={USER: PASSWORD}) as server:
        running = start_send_with(project, server, slow)
        deadline = time.monotonic() + 60
        while refused["mail"] < 3:  # the back-off is now 20 s, and doubling
            assert time.monotonic() < deadline, "the send did not start"
            time.sleep(0.05)
        time.sleep(0.3)
        running.send_signal(stop)
        out, err = running.communicate(timeout=15)
    assert running.returncode == 130, err
    assert "Traceback" not in err and "run the same command to continue" in out
    assert server.count == 0
    assert set(Counter(r["state"] for r in status_rows(project))) <= {"pending", "deferred"}


@pytest.mark.slow
def test_kill_9_at_random_moments_never_skips_anyone_and_repeats_only_in_flight_messages(
        project: Project) -> None:
    n = setup(project, n=200)
    rng = random.Random(20161205)
    kills = mid_send = 0  # every kill, and those after this run had sent something
    with slow_server(0.08) as server:
        for _ in range(12):
            before = server.count
            running = start_send(project, server)
            time.sleep(rng.uniform(0.3, 2.0))
            if running.poll() is None:
                mid_send += server.count > before
                running.kill()
                kills += 1
            running.communicate(timeout=60)
            if running.returncode == 0:
                break
        final = send(project, server)
        assert final.code == 0, final.err
    everyone = {f"member{i:04d}@example.org" for i in range(n)}
    got = recipients(server)
    assert set(got) == everyone  # nobody skipped
    rows = {r["address"]: r for r in status_rows(project)}
    assert {r["state"] for r in rows.values()} == {"sent"}
    repeated = {address for address, copies in got.items() if copies > 1}
    # Only messages in flight at a kill repeat: at most `concurrency` per kill ...
    assert len(repeated) <= 2 * kills
    for address in repeated:
        # ... each recorded as resent after a crash, with the same Message-ID every time.
        assert int(rows[address]["resent_after_crash"]) >= 1
        ids = {message_id(r.data) for r in server.delivered if r.rcpt_to == (address,)}
        assert ids == {rows[address]["message_id"]}
    assert kills >= 8 and mid_send >= 4  # killed mid-send, many times


# --------------------------------------------------------------------------- the demo


def test_the_demo_runs_the_whole_pipeline_into_a_local_maildir_and_can_run_again(
        project: Project) -> None:
    import mailbox

    env = {"NEWSLETTER_SECRET": "", "NEWSLETTER_SMTP_HOST": "smtp.wmasn.example.org"}
    for _ in range(2):  # the second run starts afresh rather than finding nothing to do
        result = project.run("demo", "-o", "demo", env=env)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        assert "2017-02-news: 50 recipients: 50 sent" in result.out
    # it says where to look, and the commands it suggests work
    assert "demo/mail/new/: 50 messages" in result.out
    assert "demo/site/index.html" in result.out
    assert "demo/build/2017-02-news/email.html" in result.out
    suggested = re.search(r"`newsletter (--config \S+) status (\S+)`", result.out)
    assert suggested, result.out
    # then it reads what came back: one late bounce, one emailed unsubscribe
    assert "inbox: Maildir demo/bounces: 2 new messages: 1 bounce, 1 unsubscribe request\n" \
        in result.out
    assert re.search(r"\n  bounced       \S+@\S+  2017-02-news: 5\.1\.1 ", result.out)
    assert re.search(r"\n  unsubscribed  \S+@\S+  list members: asked by email\n", result.out)
    shown = project.run(*suggested.group(1).split(), "status", suggested.group(2))
    assert shown.code == 0 and "50 recipients: 49 sent, 1 bounced" in shown.out
    box = mailbox.Maildir(project.root / "demo" / "mail", create=False)
    messages = [box.get_bytes(key) for key in box.iterkeys()]
    assert len(messages) == 50
    for data in messages:
        message = email.message_from_bytes(data, policy=email.policy.strict)
        check_message(Received("", (message["To"],), data, 0, "accepted"))
    assert (project.root / "demo" / "site" / "index.html").exists()
    assert not (project.root / "newsletter.db").exists()  # the project's own state untouched
    settings = project.config.read_bytes()
    clobber = project.run("demo", "-o", ".", env=env)  # never over the project itself
    assert clobber.code == 1 and "the demo did not write" in clobber.err
    assert project.config.read_bytes() == settings


def test_removing_a_member_after_a_send_erases_them_from_the_ledger_too(
        project: Project) -> None:
    setup(project, n=3)
    with SmtpServer(users={USER: PASSWORD}) as server:
        assert send(project, server).code == 0
    address = "member0001@example.org"
    removed = project.run("subscribers", "remove", address)
    assert removed.code == 0, removed.err
    stored = b"".join(p.read_bytes() for p in project.root.glob("newsletter.db*"))
    assert address.encode() not in stored
    assert b"member0000@example.org" in stored  # the others are still there
    rows = status_rows(project)
    assert len(rows) == 3 and sum(r["state"] == "sent" for r in rows) == 3
