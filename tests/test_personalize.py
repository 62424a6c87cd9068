"""personalize: one prepared message per issue, cheap correct bytes per recipient."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import time
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from msgspec.structs import replace

from newsletter.email.personalize import (
    ONE_CLICK,
    PreparedMessage,
    anonymous_recipient,
    assemble,
    prepare,
)
from newsletter.email.render import render_issue
from newsletter.errors import HeaderValueError
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.model import Network, Recipient, RenderedIssue, RenderMode
from newsletter.text.headers import ascii_address, check_value

REPO = Path(__file__).resolve().parent.parent
WHEN = dt.datetime(2016, 12, 5, 9, 30, tzinfo=dt.UTC)


def network() -> Network:
    return load_network(REPO / "newsletter.yaml")


def rendered(slug: str = "2017-02-news") -> RenderedIssue:
    net = network()
    return render_issue(load_issue(REPO / "issues" / f"{slug}.yaml", net), net)


def recipient(**changes: str) -> Recipient:
    token = "tok_" + "x" * 20
    base = Recipient(
        address="jane.doe@example.org",
        greeting="Hello Jane",
        unsubscribe_url=f"https://news.wmasn.example.org/unsubscribe/{token}",
        list_unsubscribe=(f"<https://news.wmasn.example.org/unsubscribe/{token}>, "
                          "<mailto:unsubscribe@wmasn.example.org?subject=unsubscribe>"),
        list_unsubscribe_post=ONE_CLICK,
        message_id="<2017-02-news.s42@wmasn.example.org>",
    )
    return replace(base, **changes)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    return message


def body_text(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert isinstance(part, EmailMessage)
    content: str = part.get_content()
    return content


def prepared(slug: str = "2017-02-news", **kwargs: str) -> PreparedMessage:
    return prepare(rendered(slug), network(), **kwargs)


# --------------------------------------------------------------------------- structure


def test_an_assembled_message_parses_strictly_with_no_defects() -> None:
    raw = assemble(prepared(), recipient(), WHEN)
    message = parse(raw)
    parts: list[Message] = list(message.walk())
    assert all(not part.defects for part in parts)
    assert [p.get_content_type() for p in parts] == \
        ["multipart/alternative", "text/plain", "text/html"]
    for part in parts[1:]:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


ONE_URL_LINE = re.compile(rb"(?:[A-Za-z-]+:)? ?<[^<>\s]+>,?")


def assert_short_lines(raw: bytes) -> None:
    """R-1.4 on the wire: CRLF only; header lines <= 78 unless a line is one unbreakable
    URL (``<...>``); body lines <= 76 (quoted-printable)."""
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        assert line.strip(), "a whitespace-only header line ends the header block"
        assert len(line) <= 78 or ONE_URL_LINE.fullmatch(line), line
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


@pytest.mark.parametrize("slug", ["2014-06-network-update", "2016-12-newsletter",
                                  "2017-02-news"])
def test_the_wire_format_is_crlf_only_with_short_lines(slug: str) -> None:
    ready = prepared(slug)
    for person in (recipient(), anonymous_recipient(network(), slug)):
        raw = assemble(ready, person, WHEN)
        assert_short_lines(raw)
        assert all(not part.defects for part in parse(raw).walk())


def test_long_and_non_ascii_names_are_folded_within_78_columns() -> None:
    net = network()
    long_name = "West Midlands Anti-Slavery Network, News for Partners " * 3
    french = "Réseau régional contre l’esclavage moderne — actualités du réseau " * 2
    for name in (long_name.strip(), french.strip()):
        changed = replace(net, sender=replace(net.sender, name=name),
                          list_id=replace(net.list_id, name=name))
        raw = assemble(prepare(rendered(), changed), recipient(), WHEN)
        assert_short_lines(raw)
        parse(raw)  # strictly, without defects
        # RFC 2047 §6.2 decoding (email.headerregistry adds spaces between encoded-words)
        legacy = email.message_from_bytes(raw)
        for field, angle in (("From", net.sender.address), ("List-Id", net.list_id.label)):
            unfolded = re.sub(r"\r?\n(?=[ \t])", "", legacy[field])
            decoded = str(make_header(decode_header(unfolded)))
            assert decoded.replace('"', "") == f"{name} <{angle}>"
        assert all(len(word) <= 75 for word in re.findall(rb"=\?[^ ]*\?=", raw))


def test_headers_are_the_ones_a_list_message_needs_exactly_once() -> None:
    net = network()
    message = parse(assemble(prepared(), recipient(), WHEN))
    for name in ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence", "Reply-To"):
        assert len(message.get_all(name) or []) == 1, name
    assert message["To"] == "jane.doe@example.org"
    assert message["From"] == "WMASN Network News <news@wmasn.example.org>"
    assert message["Date"] == "Mon, 05 Dec 2016 09:30:00 +0000"
    assert message["Message-ID"] == "<2017-02-news.s42@wmasn.example.org>"
    assert message["List-Id"] == net.list_id.header
    assert message["List-Archive"] == "<https://news.wmasn.example.org/>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk"
    assert message["Subject"] == rendered().subject


def test_text_comes_before_html_and_both_carry_the_recipient_values() -> None:
    raw = assemble(prepared(), recipient(), WHEN)
    assert raw.index(b"Content-Type: text/plain") < raw.index(b"Content-Type: text/html")
    message = parse(raw)
    text, html = body_text(message, "plain"), body_text(message, "html")
    url = recipient().unsubscribe_url
    assert "Hello Jane," in text and "Hello Jane," in html
    assert url in text and f'href="{url}"' in html
    assert "__NL_" not in text and "__NL_" not in html


def test_each_recipient_gets_only_their_own_values() -> None:
    ready = prepared()
    one = assemble(ready, recipient(), WHEN)
    other = assemble(ready, recipient(address="sam@example.net", greeting="Hello Sam",
                                      message_id="<2017-02-news.s43@wmasn.example.org>"), WHEN)
    assert b"jane" not in other.lower() and b"Jane" not in other
    assert b"sam@example.net" in other and b"sam@" not in one


def test_list_unsubscribe_is_folded_between_its_urls_one_url_per_line() -> None:
    raw = assemble(prepared(), recipient(), WHEN)
    url = recipient().unsubscribe_url
    assert (f"List-Unsubscribe: <{url}>,\r\n"
            " <mailto:unsubscribe@wmasn.example.org?subject=unsubscribe>\r\n").encode() in raw
    assert parse(raw)["List-Unsubscribe"] == recipient().list_unsubscribe


def test_a_200_character_unsubscribe_url_stays_literal_on_a_line_of_its_own() -> None:
    url = "https://news.wmasn.example.org/unsubscribe/" + "A" * 157
    assert len(url) == 200
    header = f"<{url}>, <mailto:unsubscribe@wmasn.example.org?subject=unsubscribe>"
    raw = assemble(prepared(), recipient(unsubscribe_url=url, list_unsubscribe=header), WHEN)
    assert_short_lines(raw)
    assert f"\r\nList-Unsubscribe: <{url}>,\r\n <mailto:".encode() in raw
    head = raw.partition(b"\r\n\r\n")[0]
    assert b"=?" not in head.split(b"List-Unsubscribe:")[1].split(b"List-Unsubscribe-Post")[0]
    message = parse(raw)
    assert message["List-Unsubscribe"] == header
    assert url in body_text(message, "plain") and url in body_text(message, "html")


@pytest.mark.parametrize("bad", ["<https://a.example/u> <mailto:u@a.example>",
                                 "<https://a.example/u>,", "<https://a.example/u x>",
                                 "<https://a.example/é>"])
def test_a_list_unsubscribe_that_is_not_a_list_of_bracketed_uris_is_refused(bad: str) -> None:
    with pytest.raises(HeaderValueError, match="List-Unsubscribe"):
        assemble(prepared(), recipient(list_unsubscribe=bad), WHEN)


def test_a_non_ascii_subject_round_trips_as_encoded_words() -> None:
    subject = "Réseau: nouvelles de l’été — 🇬🇧 " * 4
    ready = prepare(replace(rendered(), subject=subject.strip()), network())
    raw = assemble(ready, recipient(), WHEN)
    head = raw.partition(b"\r\n\r\n")[0]
    assert b"=?utf-8?" in head.lower()
    subject_lines = head.split(b"Subject: ")[1].split(b"\r\nMessage-ID:")[0].split(b"\r\n")
    assert len(subject_lines) > 1 and all(len(line) <= 76 for line in subject_lines)
    assert b"?q??=" not in head.lower() and b"?b??=" not in head.lower()
    assert parse(raw)["Subject"] == subject.strip()


def test_a_subject_prefix_marks_proofs() -> None:
    raw = assemble(prepared(subject_prefix="[Proof] "), recipient(), WHEN)
    assert parse(raw)["Subject"] == "[Proof] " + rendered().subject


def test_a_hostile_greeting_is_escaped_in_html_and_literal_in_text() -> None:
    greeting = "Hello <script>alert(1)</script>&\"'"
    message = parse(assemble(prepared(), recipient(greeting=greeting), WHEN))
    html, text = body_text(message, "html"), body_text(message, "plain")
    assert "<script>" not in html
    assert "Hello &lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;," in html
    assert greeting + "," in text


def test_long_values_at_a_slot_keep_quoted_printable_lines_within_76() -> None:
    greeting = "Hello " + "Bartholomew-Featherstonehaugh " * 8
    url = "https://news.wmasn.example.org/unsubscribe/" + "=&?" * 80
    raw = assemble(prepared(), recipient(greeting=greeting.strip(), unsubscribe_url=url), WHEN)
    body = raw.partition(b"\r\n\r\n")[2]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    message = parse(raw)
    assert greeting.strip() + "," in body_text(message, "plain")
    assert url in body_text(message, "plain")


def test_prepare_refuses_an_archive_render() -> None:
    net = network()
    issue = load_issue(REPO / "issues" / "2017-02-news.yaml", net)
    with pytest.raises(ValueError, match="EMAIL"):
        prepare(render_issue(issue, net, RenderMode.ARCHIVE), net)


# --------------------------------------------------------------------------- header values


@pytest.mark.parametrize("bad", ["a\r\nBcc: x@y.z", "trailing\n", "nul\x00", "tab\there",
                                 "del\x7f", "line\u2028sep", "=?UTF-8?Q?=0A?=Bcc:_x@y.z"])
def test_header_values_with_line_breaks_controls_or_encoded_words_are_refused(bad: str) -> None:
    with pytest.raises(HeaderValueError):
        check_value("Subject", bad)
    with pytest.raises(HeaderValueError):
        prepare(replace(rendered(), subject=bad), network())
    with pytest.raises(HeaderValueError):
        assemble(prepared(), recipient(greeting=bad), WHEN)


@pytest.mark.parametrize("field", ["address", "message_id", "list_unsubscribe",
                                   "list_unsubscribe_post", "unsubscribe_url"])
def test_recipient_values_that_would_inject_headers_are_refused(field: str) -> None:
    with pytest.raises(HeaderValueError):
        assemble(prepared(), recipient(**{field: "x@example.org\r\nBcc: evil@example.net"}),
                 WHEN)


@pytest.mark.parametrize("address", ["a@b@c.org", "a b@c.org", "zoë@example.org",
                                     "two@example.org, three@example.org", "nodomain@"])
def test_malformed_recipient_addresses_are_refused(address: str) -> None:
    with pytest.raises(HeaderValueError):
        assemble(prepared(), recipient(address=address), WHEN)


def test_idn_domains_become_punycode_never_encoded_words() -> None:
    assert ascii_address("user@exämple.org") == "user@xn--exmple-cua.org"
    raw = assemble(prepared(), recipient(address="user@exämple.org"), WHEN)
    assert b"To: user@xn--exmple-cua.org\r\n" in raw
    with pytest.raises(HeaderValueError):
        ascii_address("zoë@example.org")


@pytest.mark.parametrize("domain", ["a..example.org", "x" * 64 + ".org", "example.org.",
                                    "-example.org"])
def test_ascii_domains_with_bad_labels_are_refused(domain: str) -> None:
    # ASCII domains skip the idna codec; the label checks it made must still happen
    with pytest.raises(HeaderValueError, match="domain is not valid"):
        ascii_address(f"user@{domain}")
    assert ascii_address("user@" + "x" * 63 + ".Example.ORG") == "user@" + "x" * 63 + ".example.org"


def test_an_unsubscribe_url_that_is_not_https_or_mailto_is_refused() -> None:
    for bad in ("javascript:alert(1)", "http://news.wmasn.example.org/u/x", "/u/x"):
        with pytest.raises(HeaderValueError):
            assemble(prepared(), recipient(unsubscribe_url=bad), WHEN)


def test_one_click_needs_the_exact_value_and_an_https_uri() -> None:
    with pytest.raises(HeaderValueError, match="RFC 8058"):
        assemble(prepared(), recipient(list_unsubscribe_post="List-Unsubscribe=Yes"), WHEN)
    with pytest.raises(HeaderValueError, match="RFC 8058"):
        assemble(prepared(), recipient(list_unsubscribe="<mailto:u@wmasn.example.org>"), WHEN)
    with pytest.raises(HeaderValueError, match="<URI>"):
        assemble(prepared(), recipient(list_unsubscribe="https://x.example/u"), WHEN)


def test_a_mailto_only_list_sends_no_one_click_header() -> None:
    raw = assemble(prepared(), recipient(
        unsubscribe_url="mailto:unsubscribe@wmasn.example.org?subject=unsubscribe",
        list_unsubscribe="<mailto:unsubscribe@wmasn.example.org?subject=unsubscribe>",
        list_unsubscribe_post=""), WHEN)
    message = parse(raw)
    assert message["List-Unsubscribe-Post"] is None
    assert message["List-Unsubscribe"] == \
        "<mailto:unsubscribe@wmasn.example.org?subject=unsubscribe>"


def test_a_naive_date_is_refused() -> None:
    with pytest.raises(HeaderValueError, match="Date"):
        assemble(prepared(), recipient(), dt.datetime(2016, 12, 5, 9, 0))


def test_the_sample_recipient_is_clearly_a_placeholder() -> None:
    net = network()
    sample = anonymous_recipient(net, "2017-02-news")
    assert sample.address.endswith("@example.invalid")
    assert sample.unsubscribe_url.endswith("/PREVIEW")
    assert sample.list_unsubscribe.startswith("<https://") and sample.message_id.endswith(
        "@wmasn.example.org>")
    parse(assemble(prepared(), sample, WHEN))


# --------------------------------------------------------------------------- speed


def test_assembling_a_message_takes_well_under_100_microseconds() -> None:
    ready = prepared()
    assert 30_000 < ready.size < 200_000
    person = recipient()
    assemble(ready, person, WHEN)
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        assemble(ready, person, WHEN)
    per_message = (time.perf_counter() - started) / rounds
    assert per_message < 100e-6, f"{per_message * 1e6:.0f} µs per message"


def test_building_an_email_message_per_recipient_would_be_much_slower() -> None:
    """The baseline the design avoids: EmailMessage + policy.SMTP for every recipient."""
    source = rendered()
    person = recipient()

    def naive() -> bytes:
        m = EmailMessage(policy=email.policy.SMTP)
        m["To"] = person.address
        m["Subject"] = source.subject
        m.set_content(source.text, cte="quoted-printable")
        m.add_alternative(source.html, subtype="html", cte="quoted-printable")
        return m.as_bytes()

    started = time.perf_counter()
    naive()
    slow = time.perf_counter() - started
    ready = prepared()
    started = time.perf_counter()
    assemble(ready, person, WHEN)
    fast = time.perf_counter() - started
    assert fast * 10 < slow


def test_an_unpatched_python_is_warned_about_and_a_patched_one_is_not() -> None:
    from newsletter.text.headers import python_warning

    warning = python_warning((3, 11, 7))
    assert warning is not None and "3.11.15" in warning
    assert python_warning((3, 15, 0)) is None
