"""A send that was started is resumed only with the very message the first members got.

The content hash that locks a send covers the subject and every header value the config
puts in each message (From, Reply-To, List-Id, List-Archive), the preheader and both
parts: a send stopped partway and resumed after an edit is refused with "the rendered
issue changed", and nothing more is sent. The real CLI against a real SMTP server on
127.0.0.1 (tests/smtp_servers.py); a daily cap stops the first run partway.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable

import pytest
from conftest import Project, Result
from smtp_servers import SmtpServer

ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"
MEMBERS = 6
TAKEN = 2  # the daily cap: the first run stops after this many messages
CAPPED = f"""limits:
  per_minute: 0
  per_day: {TAKEN}
  concurrency: 1
"""
CHANGED = "the rendered issue changed since sending started"


def prepare_project(project: Project) -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(r"limits:.*?\n(?=\S)", CAPPED, text, flags=re.S))
    rows = ["email,name,organisation,consent_source"]
    rows += [f"member{i:02d}@example.org,Member {i},Org,test" for i in range(MEMBERS)]
    project.write("subscribers/many.csv", "\n".join(rows) + "\n")
    result = project.run("subscribers", "import", "subscribers/many.csv", "--list", "members")
    assert result.code == 0, result.err


def send(project: Project, server: SmtpServer) -> Result:
    return project.run("send", ISSUE, "--list", "members", "--yes", env={
        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
        "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD})


def edit(project: Project, relative: str, old: str, new: str) -> Callable[[], None]:
    """Change ``old`` to ``new`` in a project file; return the undo."""
    path = project.root / relative
    before = path.read_text(encoding="utf-8")
    assert before.count(old) == 1, old
    path.write_text(before.replace(old, new), encoding="utf-8")
    return lambda: path.write_text(before, encoding="utf-8")


def header(data: bytes, name: str) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return str(message[name])


EDITS = {
    "the subject": (ISSUE, 'subject: "Network news: NRM reform, help to return home, a new MSc"',
                    'subject: "Network news: NRM reform and a new MSc"'),
    "the sender's name": ("newsletter.yaml", "  name: WMASN Network News\n  address: news@",
                          "  name: WMASN News Desk\n  address: news@"),
    "the reply-to address": ("newsletter.yaml", "address: coordinator@wmasn.example.org",
                             "address: office@wmasn.example.org"),
    "the List-Id label": ("newsletter.yaml", "label: news.wmasn.example.org",
                          "label: bulletin.wmasn.example.org"),
    "the preheader": (ISSUE, "preheader: The Commissioner's call",
                      "preheader: This month, the Commissioner's call"),
}


@pytest.mark.parametrize("what", EDITS)
def test_a_send_stopped_partway_is_not_resumed_after_an_edit_to(
        project: Project, what: str) -> None:
    prepare_project(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        first = send(project, server)
        assert first.code == 0, first.err
        assert "daily cap reached" in first.out, first.out
        assert len(server.accepted) == TAKEN
        subject = header(server.accepted[0].data, "Subject")

        edit(project, "newsletter.yaml", f"per_day: {TAKEN}\n", "per_day: 0\n")  # cap lifted
        relative, old, new = EDITS[what]
        undo = edit(project, relative, old, new)
        check = project.run("check", ISSUE)
        assert check.code == 0, check.err  # a valid issue and config: only the send refuses
        resumed = send(project, server)
        assert resumed.code == 1 and "Traceback" not in resumed.err
        assert f"2017-02-news: {CHANGED}" in resumed.err, resumed.err
        assert f"({TAKEN} already sent)" in resumed.err
        assert len(server.received) == TAKEN  # nobody got the edited message

        undo()  # as it was: the same command resumes it, and the rest get the same message
        again = send(project, server)
        assert again.code == 0, again.err
        assert "resuming the send to list members" in again.out and CHANGED not in again.err
    assert len(server.accepted) == MEMBERS
    assert len({r.rcpt_to for r in server.accepted}) == MEMBERS
    assert {header(r.data, "Subject") for r in server.accepted} == {subject}


def test_the_lock_covers_every_header_value_prepare_takes_from_the_config() -> None:
    """Each config value prepare() writes into a header, and the subject, changes the
    message's shared bytes and the hash together (the hash is stable otherwise)."""
    from pathlib import Path

    import msgspec

    from newsletter.email.personalize import prepare
    from newsletter.email.render import render_issue
    from newsletter.input.config import load_network
    from newsletter.input.issues import load_issue
    from newsletter.model import ListId, Mailbox

    repo = Path(__file__).resolve().parent.parent
    network = load_network(repo / "newsletter.yaml")
    issue = load_issue(repo / ISSUE, network)
    replace = msgspec.structs.replace
    assert network.reply_to is not None
    changes = {
        "sender name": replace(network, sender=replace(network.sender, name="Other")),
        "sender address": replace(network, sender=replace(network.sender,
                                                          address="x@wmasn.example.org")),
        "reply-to": replace(network, reply_to=Mailbox("C", "c@wmasn.example.org")),
        "no reply-to": replace(network, reply_to=None),
        "list-id name": replace(network, list_id=replace(network.list_id, name="Other")),
        "list-id label": replace(network, list_id=ListId(network.list_id.name,
                                                         "other.wmasn.example.org")),
        "archive url": replace(network, archive_url="https://archive.wmasn.example.org/"),
        "subject": network,
    }
    base = render_issue(issue, network)
    base_literals = prepare(base, network).literals
    for name, changed in changes.items():
        edited = replace(issue, subject="Another subject") if name == "subject" else issue
        rendered = render_issue(edited, changed)
        literals = prepare(rendered, changed).literals
        # the boundary comes from the hash: compare the bytes without it
        strip = re.compile(rb"==nl_[0-9a-f]{32}")
        assert [strip.sub(b"", x) for x in literals] != [strip.sub(b"", x)
                                                       for x in base_literals], name
        assert rendered.content_hash != base.content_hash, name
    assert render_issue(issue, network).content_hash == base.content_hash  # stable
