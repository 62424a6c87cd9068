"""Members in a real state database, SQLite and PostgreSQL (the ``engine`` fixture): what
the delivery code asks, suppression, removal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.errors import InputError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.csvfiles import parse_csv
from newsletter.members.recipients import recipient_for
from newsletter.members.tokens import Secrets, read_token
from newsletter.model import (
    Helpline,
    ListId,
    Mailbox,
    MemberStatus,
    Network,
    Unsubscribe,
)

SECRETS = Secrets("members-test-secret-0123")
NETWORK = Network(
    name="West Midlands Anti-Slavery Network",
    sender=Mailbox("WMASN Network News", "news@wmasn.example.org"),
    reply_to=None,
    website="https://www.wmasn.example.org/",
    archive_url="https://news.wmasn.example.org/",
    list_id=ListId("WMASN Network News", "news.wmasn.example.org"),
    helpline=Helpline("Suspect someone is a victim of modern slavery?",
                      "Modern Slavery Helpline", "08000 121 700",
                      "https://www.modernslaveryhelpline.org/report"),
    unsubscribe=Unsubscribe("https://news.wmasn.example.org/unsubscribe",
                            "unsubscribe@wmasn.example.org"),
)


@pytest.fixture
def conn(state_db: db.Target) -> Iterator[db.Connection]:
    connection = db.connect(state_db)
    yield connection
    connection.close()


def fail_inserts(conn: db.Connection, table: str) -> None:
    """A trigger that makes every insert into ``table`` fail with an integrity error."""
    if db.is_postgresql(conn):
        conn.execute("CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'disk on fire' USING ERRCODE = "
                     "'integrity_constraint_violation'; END $$")
        conn.execute(f"CREATE TRIGGER fail BEFORE INSERT ON {table} "
                     "FOR EACH ROW EXECUTE FUNCTION fail()")
    else:
        conn.execute(f"CREATE TRIGGER fail BEFORE INSERT ON {table} "
                     "BEGIN SELECT raise(ABORT, 'disk on fire'); END")


def add(conn: db.Connection, list_name: str, *lines: str) -> members.ImportResult:
    text = "email,name,organisation\r\n" + "".join(line + "\r\n" for line in lines)
    parsed = parse_csv(text.encode(), "t.csv", consent="test fixture")
    assert parsed.problems == ()
    return members.import_rows(conn, list_name, parsed.rows)


def emails(conn: db.Connection, list_name: str) -> list[str]:
    return [s.email for s in members.recipients(conn, list_name)]


def test_recipients_are_the_subscribed_members_of_a_list_in_id_order(
        conn: db.Connection) -> None:
    add(conn, "news", "c@example.org,Cy,", "a@example.org,Al,", "b@example.org,,")
    add(conn, "events", "d@example.org,Di,", "a@example.org,Al,")
    subscribers = list(members.recipients(conn, "news"))
    assert [s.email for s in subscribers] == ["c@example.org", "a@example.org", "b@example.org"]
    assert [s.id for s in subscribers] == sorted(s.id for s in subscribers)
    assert all(s.status is MemberStatus.SUBSCRIBED and len(s.uid) == 32 for s in subscribers)
    assert emails(conn, "events") == ["a@example.org", "d@example.org"]
    assert emails(conn, "no-such-list") == []


def test_recipients_page_through_a_long_list_without_gaps(conn: db.Connection) -> None:
    count = members.PAGE * 2 + 17
    add(conn, "news", *(f"m{i}@example.org,," for i in range(count)))
    found = emails(conn, "news")
    assert found == [f"m{i}@example.org" for i in range(count)]


def test_unsubscribing_from_one_list_keeps_the_others(conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,,", "b@example.org,,")
    add(conn, "events", "a@example.org,,")
    member = members.find_by_email(conn, "A@Example.org")
    assert member is not None
    assert members.unsubscribe(conn, member.id, "news", "asked by phone") is True
    assert members.unsubscribe(conn, member.id, "news", "asked by phone") is False
    assert members.is_suppressed(conn, member.id, "news")
    assert not members.is_suppressed(conn, member.id, "events")
    assert emails(conn, "news") == ["b@example.org"]
    assert emails(conn, "events") == ["a@example.org"]
    assert add(conn, "news", "a@example.org,,").skipped == ((2, "a@example.org"),)


def test_a_bounce_suppresses_the_address_on_every_list(conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,,", "b@example.org,,")
    add(conn, "events", "a@example.org,,")
    member = members.find_by_email(conn, "a@example.org")
    assert member is not None and not members.is_suppressed(conn, member.id, "news")
    members.mark_bounced(conn, member.id, "news", "550 5.1.1 no such user")
    assert members.is_suppressed(conn, member.id, "news")
    assert members.is_suppressed(conn, member.id, "events")
    assert emails(conn, "events") == []
    assert members.membership_status(conn, member.id, "news") is MemberStatus.BOUNCED
    assert add(conn, "weekly", "a@example.org,,").skipped == ((2, "a@example.org"),)


def test_the_suppression_list_alone_stops_delivery(conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,,")
    member = members.find_by_email(conn, "a@example.org")
    assert member is not None
    # A suppression written by someone else, with the membership still 'subscribed'.
    conn.execute("INSERT INTO suppression (hash, list_id, reason, at) VALUES (?, NULL, "
                 "'complaint', '2026-01-01T00:00:00Z')",
                 (members.address_hash(conn, "a@example.org"),))
    assert members.is_suppressed(conn, member.id, "news")
    assert emails(conn, "news") == []


def test_a_member_never_on_a_list_counts_as_suppressed_for_it(conn: db.Connection
                                                              ) -> None:
    add(conn, "news", "a@example.org,,")
    member = members.find_by_email(conn, "a@example.org")
    assert member is not None
    assert members.is_suppressed(conn, member.id, "events")
    assert members.is_suppressed(conn, 999, "news")


def test_remove_erases_the_person_but_keeps_the_row_and_the_hash(conn: db.Connection
                                                                 ) -> None:
    add(conn, "news", "a@example.org,Al Smith,Police", "b@example.org,,")
    member = members.find_by_email(conn, "a@example.org")
    assert member is not None
    members.remove(conn, "A@EXAMPLE.ORG")
    row = conn.execute("SELECT email, name, organisation, extra, uid FROM subscribers "
                       "WHERE id = ?", (member.id,)).fetchone()
    assert tuple(row) == (None, None, None, "{}", member.uid)
    assert members.find_by_email(conn, "a@example.org") is None
    assert members.is_suppressed(conn, member.id, "news")
    assert emails(conn, "news") == ["b@example.org"]
    result = add(conn, "events", "a@example.org,Al Smith,Police")
    assert (result.new, result.skipped) == (0, ((2, "a@example.org"),))
    with pytest.raises(InputError, match="was already removed"):
        members.remove(conn, "a@example.org")
    with pytest.raises(InputError, match="is not a member"):
        members.remove(conn, "z@example.org")


def test_the_suppression_salt_is_random_per_database_and_kept(
        request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> None:
    targets: list[db.Target] = [tmp_path / "one.db", tmp_path / "two.db"]
    if engine == "postgresql":
        postgres = request.getfixturevalue("postgres")
        targets = [postgres.create_database(), postgres.create_database()]
    one = db.connect(targets[0])
    two = db.connect(targets[1])
    first = members.address_hash(one, "a@example.org")
    assert first != members.address_hash(two, "a@example.org")
    one.close()
    two.close()
    again = db.connect(targets[0])
    assert members.address_hash(again, "a@example.org") == first
    assert "a@example.org" not in first
    again.close()


def test_recipient_values_are_exact(conn: db.Connection) -> None:
    add(conn, "news", "jane@example.org,Jane,", "anon@example.org,,")
    jane, anon = members.recipients(conn, "news")
    r = recipient_for(jane, "news", "2016-12", NETWORK, SECRETS)
    assert r.address == "jane@example.org"
    assert r.greeting == "Hello Jane"
    assert r.unsubscribe_url.startswith("https://news.wmasn.example.org/unsubscribe/")
    token = r.unsubscribe_url.rsplit("/", 1)[1]
    found = read_token(SECRETS, token)
    assert found is not None and (found.uid, found.list_name) == (jane.uid, "news")
    # the mailto carries the same signed token, in its subject (newsletter inbox reads it)
    assert r.list_unsubscribe == (f"<{r.unsubscribe_url}>, "
                                  "<mailto:unsubscribe@wmasn.example.org?subject=unsubscribe"
                                  f"%20{token}>")
    assert r.list_unsubscribe_post == "List-Unsubscribe=One-Click"
    assert r.message_id == f"<2016-12.{jane.uid}@wmasn.example.org>"
    assert "jane" not in r.message_id and "jane" not in r.unsubscribe_url
    assert recipient_for(jane, "news", "2016-12", NETWORK, SECRETS) == r
    assert recipient_for(anon, "news", "2016-12", NETWORK, SECRETS).greeting == "Hello"
    assert recipient_for(jane, "news", "2017-01", NETWORK, SECRETS).message_id != \
        r.message_id


def test_without_a_mailto_the_list_unsubscribe_has_only_the_https_link(
        conn: db.Connection) -> None:
    from msgspec.structs import replace

    add(conn, "news", "jane@example.org,Jane,")
    (jane,) = members.recipients(conn, "news")
    network = replace(NETWORK, unsubscribe=Unsubscribe(NETWORK.unsubscribe.url, None))
    r = recipient_for(jane, "news", "2016-12", network, SECRETS)
    assert r.list_unsubscribe == f"<{r.unsubscribe_url}>"


def test_find_by_email_ignores_case_and_idn_spelling(conn: db.Connection) -> None:
    add(conn, "news", "Li@Bücher.example.com,Li,")
    for spelling in ("li@bücher.example.com", "LI@XN--BCHER-KVA.EXAMPLE.COM"):
        found = members.find_by_email(conn, spelling)
        assert found is not None and found.email == "li@xn--bcher-kva.example.com"
    assert members.find_by_email(conn, "not an address") is None


def test_an_import_is_one_transaction(conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,,")
    parsed = parse_csv(b"email\r\nb@example.org\r\n", "t.csv", consent="x")
    fail_inserts(conn, "consent")
    with pytest.raises(db.IntegrityError):
        members.import_rows(conn, "news", parsed.rows)
    assert emails(conn, "news") == ["a@example.org"]
    assert conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 1


def test_a_dry_run_import_rolls_back(conn: db.Connection) -> None:
    parsed = parse_csv(b"email\r\nb@example.org\r\n", "t.csv", consent="x")
    result = members.import_rows(conn, "news", parsed.rows, dry_run=True)
    assert (result.new, result.dry_run) == (1, True)
    assert conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0
    assert members.list_names(conn) == []


def test_consent_evidence_is_recorded_once_per_member_and_list(conn: db.Connection
                                                               ) -> None:
    add(conn, "news", "a@example.org,,")
    add(conn, "news", "a@example.org,,")
    add(conn, "events", "a@example.org,,")
    assert [tuple(row) for row in conn.execute(
        "SELECT l.name, c.source, c.basis FROM consent c JOIN lists l ON l.id = c.list_id "
        "ORDER BY c.id")] == [
        ("news", "test fixture", "consent"), ("events", "test fixture", "consent")]


def test_a_uid_leads_to_the_member_only_on_their_own_lists(conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,Al,")
    (member,) = members.recipients(conn, "news")
    assert members.member_id_for(conn, member.uid, "news") == member.id
    assert members.member_id_for(conn, member.uid, "events") is None
    assert members.member_id_for(conn, "0" * 32, "news") is None
    members.remove(conn, "a@example.org")
    # A removed member's old link still names a past membership: unsubscribing is a no-op.
    assert members.member_id_for(conn, member.uid, "news") == member.id
    assert members.unsubscribe(conn, member.id, "news", "one-click") is False


def test_an_update_is_rolled_back_with_the_rest_of_the_import(conn: db.Connection
                                                              ) -> None:
    add(conn, "news", "a@example.org,Al,Old Org")
    parsed = parse_csv(b"email,name,organisation\r\na@example.org,Alan,New Org\r\n"
                       b"b@example.org,Bo,\r\n", "t.csv", consent="x")
    fail_inserts(conn, "consent")
    with pytest.raises(db.IntegrityError):
        members.import_rows(conn, "news", parsed.rows, update=True)
    assert [tuple(r) for r in conn.execute("SELECT email, name, organisation FROM subscribers"
                                           )] == [("a@example.org", "Al", "Old Org")]


def test_a_member_on_file_joining_another_list_is_updated_and_keeps_their_consent(
        conn: db.Connection) -> None:
    add(conn, "news", "a@example.org,Al,Old Org")
    consent_before = [tuple(r) for r in conn.execute("SELECT * FROM consent")]
    parsed = parse_csv(b"email,name,organisation\r\na@example.org,Alan,\r\n", "t.csv",
                       consent="events sign-up sheet")
    result = members.import_rows(conn, "events", parsed.rows, update=True)
    assert (result.new, result.changed) == (1, (members.ProfileChange(2, "a@example.org",
                                                                      ("name",)),))
    assert [tuple(r) for r in conn.execute("SELECT name, organisation FROM subscribers")] == [
        ("Alan", "Old Org")]
    assert [tuple(r) for r in conn.execute("SELECT * FROM consent")][:1] == consent_before
    assert emails(conn, "news") == emails(conn, "events") == ["a@example.org"]
