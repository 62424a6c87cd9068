"""The SMTP engine against real servers on 127.0.0.1, with faults injected per reply."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from conftest import free_port
from smtp_servers import Delay, Drop, Scripted, Session, SmtpServer

from newsletter.delivery import ledger
from newsletter.delivery.engine import RunResult, Sender
from newsletter.delivery.session import Transport, transport_for
from newsletter.errors import DeliveryError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.csvfiles import MemberRow
from newsletter.model import DeliveryState, Limits, Recipient, Smtp, TlsMode

FAST = Limits(per_second=0, per_minute=0, per_hour=0, per_day=0, concurrency=2,
              retry_base=0.05, retry_max=0.2, retry_deadline=60)


def address(i: int) -> str:
    return f"m{i:04d}@example.org"


def build(recipient: Recipient, date: dt.datetime) -> bytes:
    return (f"From: news@example.org\r\nTo: {recipient.address}\r\nSubject: test\r\n"
            f"Date: {date:%a, %d %b %Y %H:%M:%S +0000}\r\n"
            f"Message-ID: {recipient.message_id}\r\n\r\n{recipient.greeting}\r\n").encode()


class Campaign:
    """A state database with n members, one issue snapshotted, and a server to send to."""

    def __init__(self, database: db.Target, n: int) -> None:
        self.path = database  # a SQLite file or a PostgreSQL URL (the state_db fixture)
        self.conn = db.connect(self.path)
        members.import_rows(self.conn, "members", tuple(
            MemberRow(line=i + 2, email=address(i), name=None, organisation=None, extra="{}",
                      consent_source="test", consent_date=None, consent_basis="consent")
            for i in range(n)))
        self.ids = {s.email: s.id for s in members.recipients(self.conn, "members")}
        ledger.snapshot(self.conn, ledger.SendRecord("issue", "members", "h", "S", 0.0), (
            (sid, Recipient(address=email, greeting="Hello", unsubscribe_url="https://u/x",
                            list_unsubscribe="<https://u/x>",
                            list_unsubscribe_post="List-Unsubscribe=One-Click",
                            message_id=f"<issue.{sid}@example.org>"))
            for email, sid in self.ids.items()))

    def run(self, server: SmtpServer, limits: Limits = FAST, *, retry_unknown: bool = False,
            final_dot_timeout: float = 5.0, user: str | None = None,
            password: str | None = None, tls: TlsMode = TlsMode.NONE) -> RunResult:
        transport = Transport("127.0.0.1", server.port, tls, user, password, 5.0,
                              final_dot_timeout, "example.org")
        sender = Sender(issue="issue", sender="news@example.org", transport=transport,
                        limits=limits, database=self.path, build=build,
                        retry_unknown=retry_unknown)
        return asyncio.run(sender.run())

    def states(self) -> Counter[DeliveryState]:
        return Counter({s: n for s, n in ledger.counts(self.conn, "issue").items() if n})

    def row(self, email: str) -> ledger.Row:
        return next(r for r in ledger.rows(self.conn, "issue") if r.address == email)


def rcpt_of(server: SmtpServer) -> Counter[str]:
    return Counter(r.rcpt_to[0] for r in server.delivered)


def test_every_recipient_gets_exactly_one_message_with_its_own_message_id(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 40)
    with SmtpServer() as server:
        result = campaign.run(server)
    assert result.stopped is None
    assert campaign.states() == {DeliveryState.SENT: 40}
    assert all(len(r.rcpt_to) == 1 for r in server.received)
    assert sorted(rcpt_of(server)) == sorted(campaign.ids)
    for r in server.received:
        assert f"Message-ID: <issue.{campaign.ids[r.rcpt_to[0]]}@example.org>".encode() in r.data
    assert campaign.row(address(0)).reply_text.startswith("2.0.0 Ok: queued as Q")
    assert server.sessions == 2  # two connections, each reused for many messages


def test_an_unknown_address_fails_and_the_member_is_bounced_and_suppressed(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 10)
    bad = {address(3), address(7)}
    faults = Scripted(rcpt=lambda s, rcpt: "550 5.1.1 No such user" if rcpt in bad else None)
    with SmtpServer(faults) as server:
        campaign.run(server)
    assert campaign.states() == {DeliveryState.SENT: 8, DeliveryState.FAILED: 2}
    for email in bad:
        row = campaign.row(email)
        assert (row.reply_code, row.enhanced_code, row.stage) == (550, "5.1.1", "rcpt")
        assert members.is_suppressed(campaign.conn, campaign.ids[email], "members")
    assert not members.is_suppressed(campaign.conn, campaign.ids[address(0)], "members")
    assert set(rcpt_of(server)) == set(campaign.ids) - bad


def test_a_temporary_failure_is_deferred_then_sent_on_a_later_attempt(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 6)
    refused: Counter[str] = Counter()

    def once(session: Session, rcpt: str) -> str | None:
        if rcpt == address(2) and not refused[rcpt]:
            refused[rcpt] += 1
            return "451 4.3.0 Try again later"
        return None

    with SmtpServer(Scripted(rcpt=once)) as server:
        campaign.run(server)
    assert campaign.states() == {DeliveryState.SENT: 6}
    row = campaign.row(address(2))
    assert row.attempts == 2
    assert rcpt_of(server) == Counter(list(campaign.ids))


def test_421_and_dropped_connections_mid_batch_reconnect_and_lose_nobody(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 60)
    seen: Counter[str] = Counter()

    def faults(session: Session, rcpt: str) -> str | Drop | None:
        seen[rcpt] += 1
        if seen[rcpt] == 1 and rcpt.endswith(("0@example.org",)):
            return "421 4.7.0 Too many messages, closing"
        if seen[rcpt] == 1 and rcpt.endswith("5@example.org"):
            return Drop()
        return None

    with SmtpServer(Scripted(rcpt=faults)) as server:
        result = campaign.run(server)
    assert result.stopped is None
    assert campaign.states() == {DeliveryState.SENT: 60}
    assert rcpt_of(server) == Counter(list(campaign.ids))  # nothing twice, nobody missing
    assert server.sessions > 2


def test_a_disconnect_after_the_final_dot_is_unknown_and_resent_only_when_asked(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 5)
    dropped: Counter[str] = Counter()

    def dot(session: Session, data: bytes) -> Drop | None:
        if b"To: " + address(1).encode() in data and not dropped["x"]:
            dropped["x"] += 1
            return Drop()
        return None

    with SmtpServer(Scripted(dot=dot)) as server:
        campaign.run(server)
        assert campaign.states() == {DeliveryState.SENT: 4, DeliveryState.UNKNOWN: 1}
        campaign.run(server)  # a plain rerun does not resend it
        assert rcpt_of(server)[address(1)] == 1
        campaign.run(server, retry_unknown=True)
    assert campaign.states() == {DeliveryState.SENT: 5}
    copies = [r.data for r in server.delivered if r.rcpt_to == (address(1),)]
    assert len(copies) == 2
    ids = {line for data in copies for line in data.split(b"\r\n")
           if line.startswith(b"Message-ID:")}
    assert len(ids) == 1  # the same Message-ID both times


def test_a_server_too_slow_to_answer_the_final_dot_leaves_the_message_unknown(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 3)
    slow = Scripted(dot=lambda s, data: Delay(1.5, "250 2.0.0 Ok") if b"m0001" in data
                    else None)
    with SmtpServer(slow) as server:
        campaign.run(server, final_dot_timeout=0.3)
    assert campaign.states() == {DeliveryState.SENT: 2, DeliveryState.UNKNOWN: 1}
    row = campaign.row(address(1))
    assert (row.state, row.stage) == (DeliveryState.UNKNOWN, "dot")


def test_repeated_policy_refusals_trip_the_circuit_breaker_and_leave_the_rest_pending(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 30)
    faults = Scripted(dot=lambda s, d: "550 5.7.26 Unauthenticated email is not accepted")
    with SmtpServer(faults) as server:
        result = campaign.run(server, Limits(per_minute=0, per_day=0, concurrency=1,
                                             retry_base=0.05))
    assert result.fatal and result.stopped is not None
    assert "circuit breaker" in result.stopped
    states = campaign.states()
    assert states[DeliveryState.DEFERRED] == 3  # not failed: a fixed sender can retry them
    assert states[DeliveryState.PENDING] == 27
    for email in campaign.ids:  # nobody is suppressed for our problem
        assert not members.is_suppressed(campaign.conn, campaign.ids[email], "members")


def test_a_refused_login_stops_at_once_without_sending_anything(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 10)
    with SmtpServer(users={"news": "right"}) as server:
        result = campaign.run(server, user="news", password="wrong")
    assert result.fatal and "refused the login" in (result.stopped or "")
    assert "MAIL" not in server.commands
    assert server.auth_attempts <= 2 * FAST.concurrency  # PLAIN, then LOGIN: never a loop
    assert campaign.states() == {DeliveryState.PENDING: 10}


def test_login_with_the_right_password_sends(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 4)
    with SmtpServer(users={"news": "right"}) as server:
        campaign.run(server, user="news", password="right")
    assert campaign.states() == {DeliveryState.SENT: 4}


def test_a_member_who_unsubscribes_mid_send_is_not_sent_to(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 20)
    leaver = address(15)

    def dot(session: Session, data: bytes) -> None:
        if b"To: " + address(2).encode() in data:  # while the send runs
            other = db.connect(campaign.path)
            members.unsubscribe(other, campaign.ids[leaver], "members", "clicked the link")
            other.close()

    with SmtpServer(Scripted(dot=dot)) as server:
        campaign.run(server, Limits(per_minute=0, per_day=0, concurrency=1))
    assert leaver not in rcpt_of(server)
    assert campaign.row(leaver).state is DeliveryState.SUPPRESSED
    assert campaign.states()[DeliveryState.SENT] == 19


def test_temporary_failures_past_the_deadline_expire(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 2)
    never = Scripted(rcpt=lambda s, r: "450 4.2.1 Mailbox busy" if r == address(0) else None)
    with SmtpServer(never) as server:
        campaign.run(server, Limits(per_minute=0, per_day=0, retry_base=0.05, retry_max=0.1,
                                    retry_deadline=0.5))
    assert campaign.states() == {DeliveryState.SENT: 1, DeliveryState.EXPIRED: 1}
    assert campaign.row(address(0)).attempts >= 3


def test_deferred_rows_due_much_later_end_the_run_with_their_schedule_kept(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 3)
    faults = Scripted(rcpt=lambda s, r: "450 4.2.1 later" if r == address(0) else None)
    with SmtpServer(faults) as server:
        campaign.run(server, Limits(per_minute=0, per_day=0, retry_base=3600))
    row = campaign.row(address(0))
    assert row.state is DeliveryState.DEFERRED
    assert row.next_attempt_at is not None and row.next_attempt_at > row.last_attempt_at + 3000


def test_the_daily_cap_counts_messages_sent_by_earlier_runs(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 12)
    with SmtpServer() as server:
        first = campaign.run(server, Limits(per_minute=0, per_day=5))
        assert first.daily_cap
        second = campaign.run(server, Limits(per_minute=0, per_day=5))
    assert second.daily_cap and second.outcomes["sent"] == 0
    assert campaign.states() == {DeliveryState.SENT: 5, DeliveryState.PENDING: 7}


def test_starttls_is_required_when_configured_and_no_login_is_tried_without_it(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 3)
    with SmtpServer(users={"news": "pw"}) as server:
        result = campaign.run(server, tls=TlsMode.STARTTLS, user="news", password="pw")
    assert result.fatal and "does not offer STARTTLS" in (result.stopped or "")
    assert server.auth_attempts == 0 and "MAIL" not in server.commands
    assert campaign.states() == {DeliveryState.PENDING: 3}


def test_starttls_refusal_against_aiosmtpd_without_tls(state_db: db.Target) -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self) -> None:
            self.commands: list[str] = []

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.commands.append("DATA")
            return "250 OK"

    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        campaign = Campaign(state_db, 2)
        transport = Transport("127.0.0.1", port, TlsMode.STARTTLS, "news", "pw", 5.0, 5.0,
                              "example.org")
        sender = Sender(issue="issue", sender="news@example.org", transport=transport,
                        limits=FAST, database=campaign.path, build=build)
        result = asyncio.run(sender.run())
    finally:
        controller.stop()
    assert result.fatal and "does not offer STARTTLS" in (result.stopped or "")
    assert handler.commands == []


def test_plaintext_to_a_host_that_is_not_loopback_is_refused_before_connecting() -> None:
    smtp = Smtp(host="smtp.example.org", port=25, tls=TlsMode.NONE)
    with pytest.raises(DeliveryError, match="in the clear"):
        transport_for(smtp, "example.org", environ={})
    with pytest.raises(DeliveryError, match="in the clear"):
        transport_for(Smtp(host="10.0.0.1", tls=TlsMode.NONE), "example.org", environ={})
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert transport_for(Smtp(host=host, tls=TlsMode.NONE), "x.org", environ={}).host == host


def test_the_password_comes_from_the_environment_only() -> None:
    smtp = Smtp(host="smtp.example.org", user="news", password_env="MY_PW")
    assert transport_for(smtp, "x.org", environ={"MY_PW": "s3cret"}).password == "s3cret"
    assert "s3cret" not in repr(transport_for(smtp, "x.org", environ={"MY_PW": "s3cret"}))
    assert transport_for(smtp, "x.org", environ={"NEWSLETTER_SMTP_PASSWORD": "over",
                                                 "MY_PW": "s3cret"}).password == "over"
    with pytest.raises(DeliveryError, match="MY_PW"):
        transport_for(smtp, "x.org", environ={})


def test_the_ledger_marks_a_row_attempting_before_the_message_is_sent(state_db: db.Target) -> None:
    campaign = Campaign(state_db, 3)
    seen: list[str] = []

    def dot(session: Session, data: bytes) -> None:
        other = db.connect(campaign.path)
        to = data.split(b"To: ")[1].split(b"\r\n")[0].decode()
        seen.append(other.execute("SELECT state FROM deliveries WHERE address = ?",
                                  (to,)).fetchone()[0])
        other.close()

    with SmtpServer(Scripted(dot=dot)) as server:
        campaign.run(server)
    assert seen == ["attempting"] * 3
    assert len(server.received) == 3


def test_a_server_that_cannot_be_reached_stops_the_run_and_leaves_everyone_to_send(
        state_db: db.Target) -> None:
    campaign = Campaign(state_db, 20)
    nobody = SmtpServer()
    nobody.port = free_port()  # nothing listens there
    result = campaign.run(nobody)
    assert result.fatal and "could not connect" in (result.stopped or "")
    # the server's trouble, not the recipients': nobody was attempted, nobody deferred
    assert campaign.states() == {DeliveryState.PENDING: 20}


def test_a_message_that_cannot_be_built_fails_alone_and_the_rest_are_sent(
        state_db: db.Target) -> None:
    from newsletter.errors import HeaderValueError

    campaign = Campaign(state_db, 5)
    poisoned = campaign.ids[address(2)]

    def fragile(recipient: Recipient, date: dt.datetime) -> bytes:
        if recipient.message_id == f"<issue.{poisoned}@example.org>":
            raise HeaderValueError("To: contains a line break")
        return build(recipient, date)

    with SmtpServer() as server:
        transport = Transport("127.0.0.1", server.port, TlsMode.NONE, None, None, 5.0, 5.0,
                              "example.org")
        asyncio.run(Sender(issue="issue", sender="news@example.org", transport=transport,
                           limits=FAST, database=campaign.path, build=fragile).run())
    assert campaign.states() == {DeliveryState.SENT: 4, DeliveryState.FAILED: 1}
    assert "line break" in (campaign.row(address(2)).reply_text or "")


def test_a_server_certificate_that_does_not_verify_is_refused(
        tmp_path: Path, state_db: db.Target) -> None:
    import ssl
    import subprocess

    from aiosmtpd.controller import Controller

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Handler:
        def __init__(self) -> None:
            self.messages = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.messages += 1
            return "250 OK"

    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        campaign = Campaign(state_db, 2)
        transport = Transport("127.0.0.1", port, TlsMode.IMPLICIT, None, None, 5.0, 5.0,
                              "example.org")
        result = asyncio.run(Sender(issue="issue", sender="news@example.org",
                                    transport=transport, limits=FAST, database=campaign.path,
                                    build=build).run())
    finally:
        controller.stop()
    assert result.fatal and "could not be verified" in (result.stopped or "")
    assert handler.messages == 0


def test_dkim_signing_is_off_until_configured_and_a_bad_key_is_reported_up_front(
        tmp_path: Path) -> None:
    from newsletter.delivery.dkim import signer_for
    from newsletter.errors import InputError

    assert signer_for(Smtp(), "example.org") is None
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(InputError, match="not a usable private key"):
        signer_for(Smtp(dkim_key=junk, dkim_selector="news"), "example.org")
    with pytest.raises(InputError, match="cannot read"):
        signer_for(Smtp(dkim_key=tmp_path / "missing.pem", dkim_selector="news"), "example.org")
