"""DKIM: the RSA step through OpenSSL; every signature verified by dkimpy on the bytes."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from newsletter.delivery.dkim import SIGNED_HEADERS, Signer, _parse, relaxed_body
from newsletter.email.personalize import ONE_CLICK, assemble_outgoing, prepare
from newsletter.email.render import render_issue
from newsletter.email.wire import data_phase
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.model import Recipient

REPO = Path(__file__).resolve().parent.parent
WHEN = dt.datetime(2017, 2, 6, 9, 0, tzinfo=dt.UTC)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption())
RECORD = b"v=DKIM1; k=rsa; p=" + base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
SIGNER = Signer("news2016", "wmasn.example.org", PEM)


def verified(signed: bytes) -> bool:
    """dkimpy's verdict on the received bytes, the key published as DNS would."""
    result: bool = dkim.verify(signed, dnsfunc=lambda name, timeout=5: RECORD)
    return result


def issue_message(subject: str | None = None, pad: int = 0) -> bytes:
    network = load_network(REPO / "newsletter.yaml")
    rendered = render_issue(load_issue(REPO / "issues/2017-02-news.yaml", network), network)
    if subject is not None:
        rendered = replace(rendered, subject=subject)
    if pad:
        rendered = replace(rendered, html=rendered.html.replace(
            "</body>", "<p>More  news,\tspaced   out. </p>\n" * pad + "</body>"))
    url = "https://news.wmasn.example.org/unsubscribe/tok_" + "x" * 60
    person = Recipient(address="jane.doe@example.org", greeting="Hello Jane", unsubscribe_url=url,
                       list_unsubscribe=f"<{url}>, <mailto:unsubscribe@wmasn.example.org>",
                       list_unsubscribe_post=ONE_CLICK,
                       message_id="<2017-02-news.s42@wmasn.example.org>")
    return assemble_outgoing(prepare(rendered, network), person, WHEN).message


def dkimpy_header(message: bytes) -> bytes:
    header: bytes = dkim.sign(message, b"news2016", b"wmasn.example.org", PEM,
                              canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=list(SIGNED_HEADERS), linesep=b"\r\n")
    return header


def same_second(message: bytes) -> tuple[bytes, bytes]:
    """Our header and dkimpy's for the same t= (RSA PKCS#1 v1.5 signatures are deterministic)."""
    while True:
        now = int(time.time())
        ours, theirs = SIGNER.header(message, timestamp=now), dkimpy_header(message)
        if int(time.time()) == now:
            return ours, theirs


MESSAGES = {
    "the sample issue": issue_message(),
    "a non-ASCII subject": issue_message("Réseau : les nouvelles — été 2017 ✓ " * 3),
    "a long body with tabs and runs of spaces": issue_message(pad=3000),
    "folded headers, odd spacing, trailing blank lines": (
        b"From: News <news@wmasn.example.org>\r\nTo:  jane@example.org \r\n"
        b"Subject: a subject\r\n\tfolded  over\r\n   three lines\r\n"
        b"List-Unsubscribe: <https://x.example/u>,\r\n <mailto:u@x.example>\r\n"
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n\r\n"
        b"  indented\t\tline  \r\n.dot\r\n\r\n\r\n\r\n"),
    "an empty body": b"From: a@example.org\r\nSubject: nothing\r\n\r\n",
    "a body without a final line break": b"From: a@example.org\r\n\r\nno end ",
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_each_signature_verifies_with_dkimpy_and_is_the_header_dkimpy_writes(name: str
                                                                             ) -> None:
    message = MESSAGES[name]
    ours, theirs = same_second(message)
    assert ours == theirs
    assert verified(SIGNER.sign(message))
    fields = dkim.util.parse_tag_value(ours.split(b":", 1)[1].replace(b"\r\n", b""))
    assert fields[b"h"].replace(b" ", b"").split(b":") == list(SIGNED_HEADERS)
    assert (fields[b"a"], fields[b"c"], fields[b"d"], fields[b"s"]) == (
        b"rsa-sha256", b"relaxed/relaxed", b"wmasn.example.org", b"news2016")


def test_a_signed_message_that_was_changed_does_not_verify() -> None:
    signed = SIGNER.sign(MESSAGES["the sample issue"])
    assert not verified(signed.replace(b"Hello Jane", b"Hello Joan", 1))
    assert not verified(signed.replace(b"To: jane.doe@", b"To: john.doe@", 1))


def test_the_signed_data_phase_is_the_signed_message_made_ready_for_smtp() -> None:
    network = load_network(REPO / "newsletter.yaml")
    rendered = render_issue(load_issue(REPO / "issues/2017-02-news.yaml", network), network)
    url = "https://news.wmasn.example.org/unsubscribe/t"
    person = Recipient(address="a@example.org", greeting=".dot", unsubscribe_url=url,
                       list_unsubscribe=f"<{url}>", list_unsubscribe_post=ONE_CLICK,
                       message_id="<x.1@wmasn.example.org>")
    outgoing = assemble_outgoing(prepare(rendered, network), person, WHEN)
    signed = outgoing.signed(SIGNER.header(outgoing.message))
    assert verified(signed.message)
    assert signed.data == data_phase(signed.message)


WSP = st.lists(st.sampled_from([b"a", b"b", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"."]),
               max_size=40).map(b"".join)


@given(WSP)
@settings(max_examples=400, deadline=None)
def test_the_relaxed_body_is_dkimpys_for_any_bytes(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(st.lists(st.sampled_from([b"A: b", b" c", b"\r\n", b"\n", b"\r\n\r\n", b"x", b"\t"]),
                max_size=20).map(b"".join))
@settings(max_examples=300, deadline=None)
def test_the_message_is_split_as_dkimpy_splits_it(message: bytes) -> None:
    try:
        expected = dkim.rfc822_parse(message)
    except Exception as e:  # dkimpy refuses some (MessageFormatError, or an IndexError)
        with pytest.raises(type(e)):
            _parse(message)
    else:
        assert _parse(message) == expected


def test_a_key_that_cannot_sign_is_refused_in_words(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    locked = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret"))
    for key, words in ((b"not a key\n", "Private key not found"), (ec_key, "Unparsable"),
                       (locked, "Unparsable")):
        with pytest.raises(dkim.KeyFormatError, match=words):
            Signer("news", "example.org", key).sign(b"From: a@example.org\r\n\r\nx\r\n")
    assert "key=..." in repr(SIGNER) and "PRIVATE" not in repr(SIGNER)


def test_pkcs1_keys_sign_too() -> None:
    pkcs1 = KEY.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY")
    assert verified(Signer("news2016", "wmasn.example.org", pkcs1).sign(MESSAGES["an empty body"]))
