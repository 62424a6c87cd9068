"""`newsletter inbox`: late bounces, complaints, emailed unsubscribes, through real parts.

A project sends two issues through the real CLI to an SMTP server on 127.0.0.1, with
bounces.address set, so every message leaves with its own envelope sender. The corpus in
tests/fixtures/bounces (one .eml per MTA or kind, each beside the .expected verdict it must
produce) is then read from real Maildirs and mbox files: as it is (its tokens are made up,
so nothing may change), and rewritten to name a real delivery (its verdict must happen).
"""

from __future__ import annotations

import email
import hashlib
import mailbox
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project, copy_project, make_project, new_database
from smtp_servers import Received, Scripted, Session, SmtpServer

from newsletter import pipeline
from newsletter.clock import FakeClock
from newsletter.inbox.classify import Kind, classify
from newsletter.members.tokens import Secrets, read_return_token, read_token

CORPUS = Path(__file__).parent / "fixtures" / "bounces"
CASES = sorted(p.stem for p in CORPUS.glob("*.eml"))
SECRET = "test-secret-0123456789abcdef"
FAKE_TOKEN = "k3jq7x2mvp4ts5nwy6hb2c7rdl3fo4ge"
FAKE_UID = "5f0c3e1a9b7d4c2e8f6a0b1c2d3e4f50"
FAKE_UNSUBSCRIBE = ("WyI1ZjBjM2UxYTliN2Q0YzJlOGY2YTBiMWMyZDNlNGY1MCIsIm1lbWJlcnMiXQ."
                    "q7Wn3b0yWc1Q2nJ0h9xv0F3lZPo")
JANE = "jane.doe@example.org"
BOUNCES = "bounces@wmasn.example.org"
ISSUES = ("issues/2016-12-newsletter.yaml", "issues/2017-02-news.yaml")
SETTINGS = f"""
bounces:
  address: {BOUNCES}
  soft_limit: 3
  soft_issues: 2
"""
FAST = """limits:
  per_minute: 0
  per_day: 0
  concurrency: 1
  retry_base: 0.1
  retry_max: 0.2
"""
MEMBERS = ("email,name,organisation,consent_source\n"
           f"{JANE},Jane Doe,Example,test\n"
           "bob.jones@example.org,Bob Jones,Example,test\n"
           "carol.smith@example.org,Carol Smith,Example,test\n")


# --------------------------------------------------------------------------- the corpus


def expected(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (CORPUS / f"{name}.expected").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(": ")
        found.setdefault(key, []).append(value)
    return found


def test_the_corpus_covers_many_mtas_and_every_kind() -> None:
    assert len(CASES) >= 30
    for name in CASES:
        assert (CORPUS / f"{name}.expected").is_file(), name
    kinds = {expected(name)["kind"][0] for name in CASES}
    assert kinds == {str(k) for k in Kind}
    for mta in ("postfix", "exim", "sendmail", "microsoft365", "exchange", "gmail", "yahoo",
                "qmail", "amazon-ses", "opensmtpd", "lotus-domino", "arf-yahoo",
                "arf-microsoft", "arf-ses"):
        assert any(name.startswith(mta) for name in CASES), mta


@pytest.mark.parametrize("name", CASES)
def test_each_corpus_message_gets_its_verdict(name: str) -> None:
    want = expected(name)
    found = classify((CORPUS / f"{name}.eml").read_bytes())
    assert str(found.kind) == want["kind"][0], found.why
    assert [f"{r.address} {r.status}" for r in found.recipients] == want.get("recipient", [])
    assert (FAKE_TOKEN in found.return_tokens) == (want["return-token"][0] == "yes")
    our_id = f"<2017-02-news.{FAKE_UID}@wmasn.example.org>"
    assert (our_id in found.message_ids) == (want["message-id"][0] == "yes")
    assert found.why and found.sender.isprintable() and found.subject.isprintable()


def test_names_and_subjects_from_strangers_are_made_safe_to_print() -> None:
    found = classify((CORPUS / "terminal-escapes-person.eml").read_bytes())
    for text in (found.sender, found.subject):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "owned" in found.subject  # shown, but as harmless text


# --------------------------------------------------------------------------- a real send


class Sent:
    """A project that sent two issues, and what the server received."""

    def __init__(self, project: Project, received: list[Received]) -> None:
        self.project = project
        self.received = received

    def to(self, address: str, issue: str = "2017-02-news") -> Received:
        for r in self.received:
            if r.rcpt_to == (address,) and f"<{issue}.".encode() in r.data:
                return r
        raise AssertionError(f"nothing sent to {address} for {issue}")

    def token(self, address: str, issue: str = "2017-02-news") -> str:
        return self.to(address, issue).mail_from.partition("+")[2].partition("@")[0]

    def uid(self, address: str) -> str:
        found = re.search(rb"Message-ID: <[^.]+\.([0-9a-f]{32})@", self.to(address).data)
        assert found
        return found.group(1).decode()

    def unsubscribe_token(self, address: str) -> str:
        found = re.search(rb"subject=unsubscribe%20([A-Za-z0-9_.-]+)>", self.to(address).data)
        assert found
        return found.group(1).decode()

    def about(self, name: str, address: str = JANE, issue: str = "2017-02-news") -> bytes:
        """A corpus message rewritten to name the real delivery of ``issue`` to ``address``."""
        data = (CORPUS / f"{name}.eml").read_bytes()
        data = data.replace(FAKE_TOKEN.encode(), self.token(address, issue).encode())
        data = data.replace(f"<2017-02-news.{FAKE_UID}@".encode(),
                            f"<{issue}.{self.uid(address)}@".encode())
        data = data.replace(FAKE_UNSUBSCRIBE.encode(), self.unsubscribe_token(address).encode())
        return data.replace(JANE.encode(), address.encode())


def configure(project: Project) -> None:
    text = project.config.read_text(encoding="utf-8")
    text = re.sub(r"limits:.*?\n(?=\S)", FAST, text, flags=re.S)
    project.write("newsletter.yaml", text + SETTINGS)
    project.write("subscribers/inbox.csv", MEMBERS)


def smtp_env(server: SmtpServer) -> dict[str, str]:
    return {"NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
            "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_USER": ""}


@pytest.fixture(scope="module")
def sent(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         engine: str) -> Sent:
    """The sample project with its issues sent, once per module and engine."""
    root = tmp_path_factory.mktemp("sent") / "project"
    project = make_project(root, new_database(request, engine))
    configure(project)
    result = project.run("subscribers", "import", "subscribers/inbox.csv", "--list", "members")
    assert result.code == 0, result.err
    with SmtpServer() as server:
        for issue in ISSUES:
            result = project.run("send", issue, "--list", "members", "--yes",
                                 env=smtp_env(server))
            assert result.code == 0, result.err
    return Sent(project, list(server.received))


@pytest.fixture
def fresh(request: pytest.FixtureRequest, sent: Sent, tmp_path: Path) -> Iterator[Project]:
    """A copy of the sent project (its database too) that a test may change."""
    yield copy_project(request, sent.project, tmp_path / "copy")


def maildir(root: Path, *messages: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    box = mailbox.Maildir(root / "Maildir", create=True)
    for data in messages:
        box.add(data)
    return root / "Maildir"


def statuses(project: Project) -> dict[str, str]:
    out = project.run("subscribers", "list").out
    return {line.split()[0]: line.split()[2] for line in out.splitlines()}


def query(project: Project, sql: str, *args: object) -> list[tuple[object, ...]]:
    return project.rows(sql, *args)


def delivery(project: Project, address: str, issue: str = "2017-02-news"
             ) -> tuple[object, ...]:
    (row,) = query(project, "SELECT state, enhanced_code, reply_text, stage FROM deliveries "
                   "WHERE address = ? AND issue = ?", address, issue)
    return row


def inbox(project: Project, *args: str) -> tuple[int, str, str]:
    result = project.run("inbox", *args)
    return result.code, result.out, result.err


# --------------------------------------------------------------------------- return paths


def test_each_message_has_its_own_signed_return_path_with_no_address_in_it(sent: Sent
                                                                           ) -> None:
    secrets = Secrets(SECRET)
    senders = [r.mail_from for r in sent.received]
    assert len(senders) == len(set(senders)) == 6
    for r in sent.received:
        local, _, domain = r.mail_from.partition("@")
        assert domain == "wmasn.example.org" and local.startswith("bounces+")
        assert len(local) <= 64
        token = local.partition("+")[2]
        assert read_return_token(secrets, token) == token
        assert r.rcpt_to[0].partition("@")[0] not in r.mail_from
        unsubscribe = re.search(rb"subject=unsubscribe%20([A-Za-z0-9_.-]+)>", r.data)
        assert unsubscribe and read_token(secrets, unsubscribe.group(1).decode())


def test_the_return_path_survives_a_retry_like_the_message_id(
        project: Project, engine: str) -> None:
    configure(project)
    project.run("subscribers", "import", "subscribers/inbox.csv", "--list", "members")
    refused: list[str | None] = []

    def once_later(session: Session, address: str) -> str | None:
        if address == JANE and not refused:
            refused.append(session.mail_from)
            return "451 4.3.0 try again later"
        return None

    with SmtpServer(Scripted(rcpt=once_later)) as server:
        first = project.run("send", ISSUES[1], "--list", "members", "--yes",
                            env=smtp_env(server))
        assert "1 deferred" in first.out, first.out + first.err
        time.sleep(0.3)
        again = project.run("send", ISSUES[1], "--list", "members", "--yes",
                            env=smtp_env(server))
        assert again.code == 0, again.err
    (row,) = query(project, "SELECT return_path FROM deliveries WHERE address = ?", JANE)
    (delivered,) = [r for r in server.received if r.rcpt_to == (JANE,)]
    assert refused == [row[0]] == [delivered.mail_from]
    assert row[0].startswith("bounces+")


# --------------------------------------------------------------------------- each kind, for real


ACTING = [name for name in CASES if expected(name)["kind"][0] in
          ("bounce", "soft", "complaint", "unsubscribe")]


@pytest.mark.parametrize("name", ACTING)
def test_a_corpus_report_about_a_real_delivery_does_what_its_verdict_says(
        sent: Sent, fresh: Project, name: str) -> None:
    kind = expected(name)["kind"][0]
    box = maildir(fresh.root, sent.about(name))
    code, out, err = inbox(fresh, "--maildir", str(box))
    assert code == 0, err
    after = statuses(fresh)
    others = {a: s for a, s in after.items() if a != JANE}
    assert set(others.values()) == {"subscribed"}
    if kind == "bounce":
        assert after[JANE] == "bounced"
        state, status, text, stage = delivery(fresh, JANE)
        assert (state, stage) == ("bounced", "report")
        assert status == expected(name)["recipient"][0].split()[1]
        assert text
        assert f"  bounced       {JANE}  2017-02-news: {status}" in out
    elif kind == "soft":
        assert after[JANE] == "subscribed"
        assert delivery(fresh, JANE)[0] == "sent"
        assert f"  soft bounce   {JANE}  2017-02-news: " in out
        assert "(soft bounce 1 of 3, about 1 of 2 different issues)" in out
    elif kind == "complaint":
        assert after[JANE] == "complained"
        assert delivery(fresh, JANE)[0] == "sent"
        assert f"  complained    {JANE}  2017-02-news: reported the newsletter as spam" in out
    else:
        assert after[JANE] == "unsubscribed"
        assert f"  unsubscribed  {JANE}  list members: asked by email" in out
    assert out.startswith(f"inbox: Maildir {box}: 1 new message: 1 ")
    assert not list((box / "new").iterdir())  # moved to the processed folder, not deleted
    assert len(list((box / ".Processed" / "cur").iterdir())) == 1


@pytest.mark.parametrize("name", ["ooo-rfc3834", "ooo-outlook-automatic-reply", "person-reply",
                                  "unsubscribe-no-token", "challenge-response-auto-generated"])
def test_auto_replies_and_mail_from_people_are_left_for_a_person(
        sent: Sent, fresh: Project, name: str) -> None:
    box = maildir(fresh.root, sent.about(name))
    before = statuses(fresh)
    code, out, _ = inbox(fresh, "--maildir", str(box))
    assert code == 0
    assert statuses(fresh) == before
    assert "left in the mailbox for a person to read:" in out
    assert len(list((box / "new").iterdir())) == 1  # untouched, still unread
    assert not (box / ".Processed").exists()


def test_a_bounced_or_complained_member_is_not_sent_to_again_nor_imported_again(
        sent: Sent, fresh: Project) -> None:
    bob = "bob.jones@example.org"
    box = maildir(fresh.root, sent.about("postfix-user-unknown"),
                  sent.about("arf-yahoo-abuse", address=bob))
    assert inbox(fresh, "--maildir", str(box))[0] == 0
    assert statuses(fresh) == {JANE: "bounced", bob: "complained",
                               "carol.smith@example.org": "subscribed"}
    with SmtpServer() as server:
        result = fresh.run("send", "issues/2014-06-network-update.yaml", "--list", "members",
                           "--yes", env=smtp_env(server))
    assert result.code == 0, result.err
    assert [r.rcpt_to for r in server.received] == [("carol.smith@example.org",)]
    again = fresh.run("subscribers", "import", "subscribers/inbox.csv", "--list", "members")
    assert again.code == 0 and "2 skipped" in again.out, again.out
    assert statuses(fresh)[JANE] == "bounced"


def test_soft_bounces_count_until_n_across_m_issues(sent: Sent, fresh: Project) -> None:
    delay = sent.about("gmail-mailbox-full-delay")
    box = maildir(fresh.root, delay, delay.replace(b"04:36:10", b"07:36:10"))
    code, out, _ = inbox(fresh, "--maildir", str(box))
    assert code == 0 and statuses(fresh)[JANE] == "subscribed"
    assert "(soft bounce 2 of 3, about 1 of 2 different issues)" in out
    # a third soft bounce, about the other issue: 3 across 2 issues
    box = maildir(fresh.root, sent.about("postfix-delayed", issue="2016-12-newsletter"))
    code, out, _ = inbox(fresh, "--maildir", str(box))
    assert code == 0
    assert statuses(fresh)[JANE] == "bounced"
    assert f"  bounced       {JANE}  2016-12-newsletter: 4.4.1" in out
    (reason,) = query(fresh, "SELECT reason FROM memberships m JOIN subscribers s "
                      "ON s.id = m.subscriber_id WHERE s.email = ?", JANE)
    assert "3 soft bounces about 2 issues" in str(reason[0])


# --------------------------------------------------------------------------- nobody forged out


def test_reports_that_cannot_be_trusted_change_nothing_and_say_why(sent: Sent, fresh: Project
                                                                   ) -> None:
    real = sent.about("postfix-user-unknown")
    token = sent.token(JANE)
    forged = real.replace(token.encode(), (token[:-1] + ("a" if token[-1] != "a" else "b"))
                          .encode())
    bob = "bob.jones@example.org"
    # jane's real token, but the report names someone else
    wrong_address = real.replace(JANE.encode(), bob.encode())
    # no token, a Message-ID we never sent
    unknown_id = (CORPUS / "exim-classic.eml").read_bytes()
    # an unsubscribe with a token that does not verify
    unsubscribe = sent.about("unsubscribe-mailto").replace(b"unsubscribe Wy", b"unsubscribe Wz")
    box = maildir(fresh.root, forged, wrong_address, unknown_id, unsubscribe)
    code, out, _ = inbox(fresh, "--maildir", str(box))
    assert code == 0
    assert set(statuses(fresh).values()) == {"subscribed"}
    assert delivery(fresh, JANE)[0] == "sent" and delivery(fresh, bob)[0] == "sent"
    assert "4 ignored" in out
    assert "its return-path token does not verify" in out
    assert f"reports {bob}, but 2017-02-news was not sent to that address" in out
    assert "names no message of ours" in out
    assert "its unsubscribe token does not verify" in out
    assert len(list((box / ".Processed" / "cur").iterdir())) == 4


def test_the_whole_corpus_as_it_is_changes_nobody_and_never_crashes(sent: Sent, fresh: Project
                                                                    ) -> None:
    messages = [(CORPUS / f"{name}.eml").read_bytes() for name in CASES]
    # a huge report: a DSN with 30 MB of returned message; and one of a thousand headers
    huge = (CORPUS / "postfix-user-unknown.eml").read_bytes().replace(
        b"Message-ID: <2017-02-news", b"X-Filler: " + b"x" * 30_000_000 + b"\nMessage-ID: <2017")
    headers = b"".join(b"X-Many-%d: %d\n" % (i, i) for i in range(1000)) + messages[0]
    box = maildir(fresh.root, *messages, huge, headers)
    before = statuses(fresh)
    code, out, err = inbox(fresh, "--maildir", str(box))
    assert code == 0, err
    assert err == ""
    assert statuses(fresh) == before
    assert query(fresh, "SELECT count(*) FROM feedback") == [(0,)]
    assert {row[0] for row in query(fresh, "SELECT state FROM deliveries")} == {"sent"}
    assert f"inbox: Maildir {box}: {len(CASES) + 2} new messages" in out
    assert "unsubscribed" not in out.split("\n", 1)[1].split("left in the mailbox")[0]


PATHOLOGICAL = {
    # a detector's trigger, then a 3 MB line its address pattern must scan
    "long line": (CORPUS / "exchange-2003-legacy.eml").read_bytes().replace(
        b"recipient(s):\n", b"recipient(s):\n" + b"a" * 3_000_000 + b"\n"),
    "a header of 3 MB": b"From: MAILER-DAEMON@x\nTo: " + b"a+" * 1_500_000 + b"\n\nhi\n",
    "3 million empty lines": b"From: x@y\nSubject: undeliverable\n\n" + b"\n" * 3_000_000,
    "100,000 headers": b"".join(b"X-H%d: v\n" % i for i in range(100_000)) + b"\nhi\n",
    "60,000 parts": (b"From: MAILER-DAEMON@x\nSubject: Undeliverable\nContent-Type: multipart/"
                     b"mixed; boundary=b\n\n" + b"--b\nContent-Type: text/plain\n\nx\n" * 60_000),
    "20,000 nested messages": b"From: MAILER-DAEMON@x\n" + b"Content-Type: message/rfc822\n\n"
                              * 20_000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_messages_are_classified_in_seconds_and_change_nothing(name: str) -> None:
    started = time.monotonic()
    found = classify(PATHOLOGICAL[name])
    assert time.monotonic() - started < 10
    assert found.kind in (Kind.PERSON, Kind.IGNORED, Kind.AUTO_REPLY)


def test_running_inbox_twice_on_the_same_mail_changes_nothing_the_second_time(
        sent: Sent, fresh: Project) -> None:
    reports = [sent.about(n) for n in ("postfix-user-unknown", "gmail-mailbox-full-delay",
                                       "ooo-rfc3834", "person-reply")]
    box = maildir(fresh.root, *reports)
    assert inbox(fresh, "--maildir", str(box))[0] == 0

    def snapshot() -> list[object]:
        return [query(fresh, f"SELECT * FROM {table} ORDER BY 1") for table in
                ("memberships", "deliveries", "feedback", "suppression", "inbox_messages")]

    first = snapshot()
    code, out, _ = inbox(fresh, "--maildir", str(box))  # the two for a person are still there
    assert code == 0 and snapshot() == first
    assert out == f"inbox: Maildir {box}: 0 new messages (2 handled before: nothing done again)\n"
    # the same mail delivered again (a restored backup, a second copy): still nothing
    again = maildir(fresh.root / "restored", *reports)
    code, out, _ = inbox(fresh, "--maildir", str(again))
    assert code == 0 and snapshot() == first
    assert "0 new messages (4 handled before" in out
    assert not list((again / "new").iterdir())[2:]  # the dealt-with two were moved on


# --------------------------------------------------------------------------- mailboxes


def test_an_mbox_is_read_and_what_was_dealt_with_moves_byte_for_byte(sent: Sent, fresh: Project
                                                                     ) -> None:
    path = fresh.root / "bounces.mbox"
    box = mailbox.mbox(path)
    for data in (sent.about("qmail-no-mailbox"), sent.about("person-reply")):
        box.add(data)
    box.flush()
    box.close()
    bounce_bytes = mailbox.mbox(path).get_bytes(0)
    code, out, err = inbox(fresh, "--mbox", str(path))
    assert code == 0, err
    assert statuses(fresh)[JANE] == "bounced"
    left = mailbox.mbox(path)
    assert [m["Subject"] for m in left] == ["Re: WMASN news, February 2017"]
    moved = mailbox.mbox(fresh.root / "Processed")
    assert [moved.get_bytes(k) for k in moved.keys()] == [bounce_bytes]  # noqa: SIM118
    assert not (fresh.root / "bounces.mbox.lock").exists()
    code, out, _ = inbox(fresh, "--mbox", str(path))
    assert code == 0 and "0 new messages (1 handled before" in out


@pytest.mark.parametrize("after", ["flag", "delete"])
def test_processed_mail_is_flagged_or_deleted_only_when_asked(sent: Sent, fresh: Project,
                                                              after: str) -> None:
    box = maildir(fresh.root, sent.about("postfix-user-unknown"), sent.about("person-reply"))
    code, out, _ = inbox(fresh, "--maildir", str(box), "--after", after)
    assert code == 0
    names = sorted(os.listdir(box / "cur")) + sorted(os.listdir(box / "new"))
    if after == "flag":
        assert len(names) == 2 and sum(n.endswith(":2,S") for n in names) == 1
        assert "marked as read where they are" in out
    else:
        assert len(names) == 1 and "deleted (--after delete)" in out
    assert not (box / ".Processed").exists()


def test_the_inbox_named_in_newsletter_yaml_is_read_by_default(sent: Sent, fresh: Project
                                                               ) -> None:
    maildir(fresh.root / "mail", sent.about("microsoft365-ndr"))
    fresh.write("newsletter.yaml", fresh.config.read_text(encoding="utf-8")
                + "inbox:\n  maildir: mail/Maildir\n  processed_folder: Done\n")
    code, _, _ = inbox(fresh)
    assert code == 0 and statuses(fresh)[JANE] == "bounced"
    assert (fresh.root / "mail" / "Maildir" / ".Done" / "cur").is_dir()


@pytest.mark.parametrize(("args", "env", "code", "message"), [
    ((), {}, 1, "no mailbox to read: add an inbox: section to newsletter.yaml (maildir, mbox "
                "or imap), or give --maildir PATH or --mbox PATH\n"),
    (("--maildir", "nowhere"), {}, 1, "nowhere: not a Maildir (it needs cur/, new/ and tmp/ "
                                      "folders)\n"),
    (("--mbox", "none.mbox"), {}, 1, "none.mbox: no such mbox file\n"),
    (("--maildir", "a", "--mbox", "b"), {}, 2, "give --maildir or --mbox, not both"),
    (("--maildir", "Maildir"), {"NEWSLETTER_SECRET": ""}, 1, "NEWSLETTER_SECRET: not set"),
])
def test_what_cannot_be_read_is_a_message_not_a_traceback(
        fresh: Project, args: tuple[str, ...], env: dict[str, str], code: int,
        message: str) -> None:
    maildir(fresh.root)
    result = fresh.run("inbox", *args, env=env)
    assert result.code == code
    assert message in result.err
    assert "Traceback" not in result.err


# --------------------------------------------------------------------------- status and export


def test_status_shows_late_bounces_and_complaints_per_issue(sent: Sent, fresh: Project) -> None:
    bob = "bob.jones@example.org"
    box = maildir(fresh.root, sent.about("sendmail-dsn"),
                  sent.about("arf-ses-complaint", address=bob))
    assert inbox(fresh, "--maildir", str(box))[0] == 0
    overall = fresh.run("status").out
    line = next(x for x in overall.splitlines() if x.startswith("2017-02-news"))
    assert "1 bounced" in line and "2 sent" in line
    assert "  came back later: 1 bounce, 1 complaint" in overall
    one = fresh.run("status", ISSUES[1]).out
    assert f"  bounced   {JANE}  late bounce 5.1.1 SMTP; 550 5.1.1" in one
    assert f"  complaint {bob}  reported the newsletter as spam" in one
    rows = fresh.run("status", ISSUES[1], "--csv", "status.csv")
    assert rows.code == 0
    text = (fresh.root / "status.csv").read_text(encoding="utf-8-sig")
    assert f"2017-02-news,{JANE},bounced," in text


def test_export_all_carries_every_status_and_its_reason(sent: Sent, fresh: Project) -> None:
    bob = "bob.jones@example.org"
    box = maildir(fresh.root, sent.about("postfix-user-unknown"),
                  sent.about("arf-yahoo-abuse", address=bob))
    assert inbox(fresh, "--maildir", str(box))[0] == 0
    result = fresh.run("subscribers", "export", "--all")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == ("email,name,organisation,consent_source,consent_date,consent_basis,"
                        "status,status_reason,status_changed")
    by_address = {line.split(",")[0]: line for line in lines[1:]}
    assert ',bounced,"members: 2017-02-news: bounced later, 5.1.1 smtp; 550 5.1.1' \
        in by_address[JANE]
    assert ",complained,members: 2017-02-news: reported as spam (feedback report)," \
        in by_address[bob]
    assert ",subscribed,import," in by_address["carol.smith@example.org"]
    plain = fresh.run("subscribers", "export").out  # unchanged without --all
    assert plain.splitlines()[0] == ("email,name,organisation,consent_source,consent_date,"
                                     "consent_basis")
    assert JANE not in plain and bob not in plain


def test_a_removed_member_leaves_no_diagnostic_behind(sent: Sent, fresh: Project) -> None:
    box = maildir(fresh.root, sent.about("postfix-user-unknown").replace(
        b"Status: 5.1.1", b"Status: 4.2.2").replace(b"Action: failed", b"Action: delayed"))
    assert inbox(fresh, "--maildir", str(box))[0] == 0
    (diagnostic,) = query(fresh, "SELECT diagnostic FROM feedback")
    assert JANE in str(diagnostic[0])  # the remote server's words often name the address
    assert fresh.run("subscribers", "remove", JANE).code == 0
    assert query(fresh, "SELECT diagnostic FROM feedback") == [(None,)]
    # a late report about them now changes nothing
    box = maildir(fresh.root / "later", sent.about("postfix-user-unknown"))
    code, out, _ = inbox(fresh, "--maildir", str(box))
    assert code == 0 and "about a member since removed" in out


def test_fingerprints_are_of_the_whole_message(sent: Sent) -> None:
    data = sent.about("postfix-user-unknown")
    assert hashlib.sha256(data).hexdigest() != hashlib.sha256(data + b"\n").hexdigest()
    assert email.message_from_bytes(data)["Subject"] == "Undelivered Mail Returned to Sender"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_486_400_000.0)


def test_the_pipeline_returns_the_report_as_a_value(sent: Sent, fresh: Project, clock: FakeClock,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    box = maildir(fresh.root, sent.about("postfix-user-unknown"), sent.about("person-reply"))
    report = pipeline.inbox(fresh.config, clock, maildir=box)
    assert (report.read, report.already) == (2, 0)
    assert report.counts[Kind.BOUNCE] == 1 and report.counts[Kind.PERSON] == 1
    (change,) = report.changed
    assert (change.address, str(change.status), change.issue) == (JANE, "bounced",
                                                                  "2017-02-news")
    assert [n.subject for n in report.to_read] == ["Re: WMASN news, February 2017"]
