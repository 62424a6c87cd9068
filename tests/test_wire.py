"""The DATA phase written as it is: the same bytes aiosmtplib's ``data`` would send, made once."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace
from smtp_servers import SmtpServer

from newsletter.delivery.replies import Action
from newsletter.delivery.session import _PLAIN_ADDRESS, Transport, _quoted, send_one
from newsletter.email import wire
from newsletter.email.personalize import ONE_CLICK, assemble, assemble_outgoing, prepare
from newsletter.email.render import render_issue
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.model import Recipient, TlsMode

REPO = Path(__file__).resolve().parent.parent
WHEN = dt.datetime(2017, 2, 6, 9, 0, tzinfo=dt.UTC)
NETWORK = load_network(REPO / "newsletter.yaml")
RENDERED = render_issue(load_issue(REPO / "issues" / "2017-02-news.yaml", NETWORK), NETWORK)
# Lines that start with a dot, in both parts: each must go out with the dot doubled.
DOTTY = replace(RENDERED, text=".starts with a dot\n..two\n.\n" + RENDERED.text + "\n.end",
                html=RENDERED.html.replace("<body", "\n.<body", 1))


def aiosmtplib_data(message: bytes) -> bytes:
    """What ``aiosmtplib.SMTP.data`` writes for ``message`` (protocol.execute_data_command)."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


def recipient(greeting: str = "Hello Jane") -> Recipient:
    url = "https://news.wmasn.example.org/unsubscribe/tok_" + "x" * 20
    return Recipient(address="jane.doe@example.org", greeting=greeting, unsubscribe_url=url,
                     list_unsubscribe=f"<{url}>", list_unsubscribe_post=ONE_CLICK,
                     message_id="<2017-02-news.s42@wmasn.example.org>")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.lists(st.sampled_from(
    [b".", b"..", b"\r\n", b"\n", b"\r", b"a", b" ", b"\r\n.\r\n"]), max_size=30).map(b"".join))
def test_data_phase_is_what_aiosmtplib_would_send_for_any_bytes(message: bytes) -> None:
    assert wire.data_phase(message) == aiosmtplib_data(message)


def test_an_assembled_message_comes_with_its_data_phase_made_from_pre_stuffed_pieces() -> None:
    for rendered in (RENDERED, DOTTY):
        prepared = prepare(rendered, NETWORK)
        assert prepared.clean
        for greeting in ("Hello Jane", ".Jane", "..", "Jane.", "Dear .NET team"):
            outgoing = assemble_outgoing(prepared, recipient(greeting), WHEN)
            assert outgoing.message == assemble(prepared, recipient(greeting), WHEN)
            assert outgoing.data == aiosmtplib_data(outgoing.message)
    dotty = assemble_outgoing(prepare(DOTTY, NETWORK), recipient(".Jane"), WHEN)
    assert b"\r\n..starts with a dot\r\n...two\r\n" in dotty.data
    assert b"\r\n..Jane" in dotty.data  # the greeting's own line, stuffed per recipient


@given(st.text(alphabet=st.sampled_from(". aé"), min_size=1, max_size=12)
       .filter(lambda g: g.strip()))
@settings(max_examples=60, deadline=None)
def test_any_greeting_gives_the_data_phase_aiosmtplib_would_send(greeting: str) -> None:
    outgoing = assemble_outgoing(prepare(DOTTY, NETWORK), recipient(greeting), WHEN)
    assert outgoing.data == aiosmtplib_data(outgoing.message)


def test_a_signature_in_front_keeps_the_data_phase_right() -> None:
    outgoing = assemble_outgoing(prepare(DOTTY, NETWORK), recipient(), WHEN)
    for header in (b"DKIM-Signature: v=1;\r\n b=abc\r\n", b".odd: x\r\n\t.y\r\n",
                   b"Lone: lf\n", b"No-end: x"):
        signed = outgoing.signed(header)
        assert signed.message == header + outgoing.message
        assert signed.data == aiosmtplib_data(signed.message)


@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_a_plain_address_is_quoted_as_aiosmtplib_quotes_it(address: str) -> None:
    assert _quoted(address) == quote_address(address).encode("ascii")


def test_other_addresses_are_quoted_or_refused_by_aiosmtplib_itself() -> None:
    assert _quoted("Jane <jane@example.org>") == b"<jane@example.org>"
    for odd in ("a b@example.org>", "jane@example.org> SIZE=1", "<a@b.org>\r\nRSET",
                "jäne@example.org", '"a b"@example.org'):
        try:
            expected = quote_address(odd).encode("ascii")
        except ValueError:  # UnicodeEncodeError is one
            with pytest.raises(ValueError):
                _quoted(odd)
        else:
            assert _quoted(odd) == expected


def test_lines_starting_with_a_dot_arrive_as_they_were_written(tmp_path: Path) -> None:
    outgoing = assemble_outgoing(prepare(DOTTY, NETWORK), recipient(".Jane"), WHEN)
    plain = b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend"  # no CRLF at the end
    with SmtpServer() as server:
        transport = Transport("127.0.0.1", server.port, TlsMode.NONE, None, None, 5.0, 5.0,
                              "example.org")
        for message in (outgoing, plain):
            attempt = asyncio.run(send_one(transport, "news@example.org",
                                           "jane.doe@example.org", message))
            assert attempt.verdict.action is Action.SENT, attempt
    assert [r.data for r in server.accepted] == [outgoing.message, plain + b"\r\n"]
