"""Arriving from Mailchimp, listmonk and Mailman: their real export formats through the real
CLI into a real SQLite file; statuses honoured, only the declared columns kept; suppression.

The fixtures (tests/fixtures/imports/README.md) are built from each tool's documented
header; each bad file is paired with the exact message it must produce.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import Project
from smtp_servers import SmtpServer

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
MAILCHIMP = FIXTURES / "mailchimp"
ZIP = "members_export_0e633f6c70.zip"
BAD = sorted(p.name for p in (FIXTURES / "bad").iterdir() if p.suffix != ".expected")
ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"
# What Mailchimp keeps about people that this network never declared: none may be stored.
UNDECLARED_VALUES = (b"192.0.2.10", b"198.51.100.7", b"52.4814200", b"-1.8998300",
                     b"Europe/London", b"0121 496 0001", b"07700 900123", b"Lloyd House",
                     b"a1b2c3d4e5", b"123456781", b"Wolverhampton event", b"no longer want",
                     b"Leamington Spa", b"01926 496000", b"5e1c7a10-3b52")


def rows(project: Project, sql: str, *params: object) -> list[tuple[object, ...]]:
    return project.rows(sql, *params)


def snapshot(project: Project) -> list[str]:
    return project.dump()


def stored_bytes(project: Project) -> bytes:
    """What the state database holds: SQLite's files byte for byte (-wal too); on
    PostgreSQL every row of every table, as text."""
    if project.postgresql:
        return "\n".join(project.dump()).encode()
    return b"".join(p.read_bytes() for p in project.root.glob("newsletter.db*"))


def copy(project: Project, source: Path, folder: str = "exports") -> str:
    """The file in the project, as a user would name it (beside, not over, the sample)."""
    (project.root / folder).mkdir(exist_ok=True)
    shutil.copy(source, project.root / folder / source.name)
    return f"{folder}/{source.name}"


def import_file(project: Project, source: Path, *args: str, list_name: str = "news",
                consent: str = "signed up on the old list's form") -> tuple[str, str]:
    result = project.run("subscribers", "import", copy(project, source), "--list", list_name,
                         "--consent", consent, *args)
    assert result.code == 0, result.err
    return result.out, result.err


def statuses(project: Project, list_name: str = "news") -> dict[str, str]:
    return dict(rows(project, "SELECT s.email, m.status FROM memberships m JOIN subscribers s "
                     "ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id "
                     "WHERE l.name = ?", list_name))  # type: ignore[arg-type]


def suppressed(project: Project, address: str) -> list[tuple[object, ...]]:
    """The suppression rows of an address (reason, list id), found by its salted hash."""
    import hashlib

    (salt,) = rows(project, "SELECT value FROM meta WHERE key = 'suppression_salt'")[0]
    digest = hashlib.sha256(f"{salt}:{address}".encode()).hexdigest()
    return rows(project, "SELECT reason, list_id FROM suppression WHERE hash = ? ORDER BY 1",
                digest)


# --------------------------------------------------------------------------- Mailchimp


def test_the_committed_zip_holds_exactly_the_three_mailchimp_csvs() -> None:
    with zipfile.ZipFile(MAILCHIMP / ZIP) as archive:
        inside = {name: archive.read(name) for name in archive.namelist()}
    assert inside == {p.name: p.read_bytes() for p in MAILCHIMP.glob("*.csv")}


def test_a_mailchimp_zip_imports_every_status_names_and_consent_dates_and_nothing_else(
        project: Project, engine: str) -> None:
    out, err = import_file(project, MAILCHIMP / ZIP)
    assert err == ""
    assert out.splitlines() == [
        "news: added 3 new, 0 already subscribed, 0 skipped (unsubscribed, bounced or removed)",
        "news: recorded 1 unsubscribed, 1 bounced: never sent to, and no import subscribes "
        "them",
        "exports/members_export_0e633f6c70.zip: dropped 25 columns not in member_columns "
        "(newsletter.yaml), their values not stored: Address, Phone Number, MEMBER_RATING, "
        "OPTIN_IP, CONFIRM_IP, LATITUDE, LONGITUDE, GMTOFF, DSTOFF, TIMEZONE, CC, REGION, "
        "LAST_CHANGED, LEID, EUID, NOTES, TAGS, UNSUB_TIME, UNSUB_CAMPAIGN_TITLE, "
        "UNSUB_CAMPAIGN_ID, UNSUB_REASON, UNSUB_REASON_OTHER, CLEAN_TIME, "
        "CLEAN_CAMPAIGN_TITLE, CLEAN_CAMPAIGN_ID",
    ]
    assert rows(project, "SELECT email, name, organisation, extra FROM subscribers "
                "ORDER BY id") == [
        ("a.hussain@west.example.org", "Amira Hussain", None, "{}"),
        ("d.okafor@west.example.org", "Daniel Okafor", None, "{}"),
        ("z.hall@hopeanchor.example.org", "Zoë Hall", None, "{}"),
        ("s.whitfield@staffordshire.example.org", "Sarah Whitfield", None, "{}"),
        ("g.sandhu@west.example.org", "Gurpreet Sandhu", None, "{}"),
    ]
    assert statuses(project) == {
        "a.hussain@west.example.org": "subscribed", "d.okafor@west.example.org": "subscribed",
        "z.hall@hopeanchor.example.org": "subscribed",
        "s.whitfield@staffordshire.example.org": "unsubscribed",
        "g.sandhu@west.example.org": "bounced"}
    # the confirm time when there is one (double opt-in), else the opt-in time
    assert rows(project, "SELECT s.email, c.source, c.date FROM consent c JOIN subscribers s "
                "ON s.id = c.subscriber_id ORDER BY c.id") == [
        ("a.hussain@west.example.org", "signed up on the old list's form", "2016-03-02"),
        ("d.okafor@west.example.org", "signed up on the old list's form", "2016-03-06"),
        ("z.hall@hopeanchor.example.org", "signed up on the old list's form", "2016-05-20"),
    ]
    assert suppressed(project, "s.whitfield@staffordshire.example.org") == [
        ("unsubscribed", 1)]  # this list
    assert suppressed(project, "g.sandhu@west.example.org") == [("bounced", None)]  # every list
    stored = stored_bytes(project)
    assert not [value for value in UNDECLARED_VALUES if value in stored]


def test_a_mailchimp_unsubscribed_or_cleaned_csv_alone_keeps_its_status(
        project: Project, engine: str) -> None:
    import_file(project, MAILCHIMP / "unsubscribed_members_export_0e633f6c70.csv")
    import_file(project, MAILCHIMP / "cleaned_members_export_0e633f6c70.csv", list_name="events")
    assert statuses(project) == {"s.whitfield@staffordshire.example.org": "unsubscribed"}
    assert statuses(project, "events") == {"g.sandhu@west.example.org": "bounced"}
    assert rows(project, "SELECT count(*) FROM consent") == [(0,)]


def test_declared_columns_are_kept_from_a_mailchimp_export(project: Project, engine: str) -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", text.replace(
        "member_columns: [name, organisation, role, sector]",
        "member_columns: [name, phone_number, tags]"))
    out, _ = import_file(project, MAILCHIMP / "subscribed_members_export_0e633f6c70.csv")
    assert "Phone Number" not in out and "TAGS" not in out and "Address" in out
    assert rows(project, "SELECT email, extra FROM subscribers ORDER BY id") == [
        ("a.hussain@west.example.org",
         '{"phone_number":"0121 496 0001","tags":"\\"police\\",\\"conference\\""}'),
        ("d.okafor@west.example.org", '{"phone_number":"","tags":""}'),
        ("z.hall@hopeanchor.example.org",
         '{"phone_number":"07700 900123","tags":"\\"charity\\""}'),
    ]
    assert b"192.0.2.10" not in stored_bytes(project)


def test_a_network_that_declares_no_columns_keeps_only_addresses_and_consent(
        project: Project, engine: str) -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", text.replace(
        "member_columns: [name, organisation, role, sector]", "member_columns: []"))
    out, _ = import_file(project, MAILCHIMP / ZIP)
    assert "dropped 26 columns" in out and ": First Name + Last Name, Address," in out
    assert rows(project, "SELECT DISTINCT name, organisation, extra FROM subscribers") == [
        (None, None, "{}")]
    assert b"Amira" not in stored_bytes(project)


# --------------------------------------------------------------------------- listmonk


def test_a_listmonk_export_keeps_status_and_declared_attributes(
        project: Project, engine: str) -> None:
    out, err = import_file(project, FIXTURES / "listmonk" / "subscribers.csv")
    assert err == ""
    assert out.splitlines() == [
        "news: added 2 new, 0 already subscribed, 0 skipped (unsubscribed, bounced or removed)",
        "news: recorded 1 unsubscribed, 1 suppressed: never sent to, and no import "
        "subscribes them",
        "exports/subscribers.csv: dropped 4 columns not in member_columns "
        "(newsletter.yaml), their values not stored: uuid, updated_at, attributes.city, "
        "attributes.phone",
    ]
    assert rows(project, "SELECT email, name, organisation, extra FROM subscribers "
                "ORDER BY id") == [
        ("t.brennan@warwickshire.example.org", "Tom Brennan", "Warwickshire Police",
         '{"role":"","sector":""}'),
        ("j.kowalska@british.example.org", "Joanna Kowalska", None, '{"role":"","sector":""}'),
        ("f.begum@west.example.org", "Fatima Begum", None, '{"role":"","sector":"police"}'),
    ]
    assert statuses(project) == {"t.brennan@warwickshire.example.org": "subscribed",
                                 "j.kowalska@british.example.org": "subscribed",
                                 "f.begum@west.example.org": "unsubscribed"}
    assert rows(project, "SELECT date FROM consent ORDER BY id") == [
        ("2016-03-21",), ("2016-03-26",)]
    # blocklisted: never added, only the salted hash kept, suppressed on every list
    stored = stored_bytes(project)
    assert b"m.ellison" not in stored and b"Mark Ellison" not in stored
    assert suppressed(project, "m.ellison@west.example.org") == [("suppressed", None)]
    assert not [value for value in UNDECLARED_VALUES if value in stored]


# --------------------------------------------------------------------------- Mailman


def test_mailman_members_output_keeps_quoted_and_encoded_names(
        project: Project, engine: str) -> None:
    out, err = import_file(project, FIXTURES / "mailman" / "members.txt")
    assert (out, err) == ("news: added 4 new, 0 already subscribed, 0 skipped (unsubscribed, "
                          "bounced or removed)\n", "")
    assert rows(project, "SELECT email, name FROM subscribers ORDER BY id") == [
        ("h.carter@birmingham.example.net", "Helen Carter"),
        ("r.patel@sandwell.example.net", "Patel, Rajesh"),
        ("c.donovan@public.example.net", "Cláire Donovan"),
        ("l.okoye@oldham.example.org", None),
    ]


def test_mailman_member_entries_keep_delivery_status_and_leave_out_owners(
        project: Project, engine: str) -> None:
    out, err = import_file(project, FIXTURES / "mailman" / "members.csv")
    assert err == ("exports/members.csv:5: role: warning: 'owner': left out (only members "
                   "receive the newsletter)\n")
    assert out.splitlines()[:2] == [
        "news: added 1 new, 0 already subscribed, 0 skipped (unsubscribed, bounced or removed)",
        "news: recorded 1 unsubscribed, 1 bounced: never sent to, and no import subscribes "
        "them"]
    assert "dropped 10 columns" in out and "role" in out.splitlines()[2]
    assert statuses(project) == {"h.carter@birmingham.example.net": "subscribed",
                                 "r.patel@sandwell.example.net": "bounced",
                                 "c.donovan@public.example.net": "unsubscribed"}
    assert rows(project, "SELECT name FROM subscribers ORDER BY id") == [
        ("Helen Carter",), ("Rajesh Patel",), ("Claire Donovan",)]
    assert b"owner@wmasn" not in stored_bytes(project)


# --------------------------------------------------------------------------- --format


def test_format_says_what_the_header_would(project: Project, engine: str) -> None:
    plain = project.run("subscribers", "import", copy(
        project, MAILCHIMP / "subscribed_members_export_0e633f6c70.csv"), "--list", "news",
        "--consent", "x", "--format", "csv")
    assert plain.code == 1
    assert plain.err.startswith("exports/subscribed_members_export_0e633f6c70.csv:1: no "
                                "'email' column (found 'email address', 'first name'")
    zipped = project.run("subscribers", "import", copy(project, MAILCHIMP / ZIP), "--list",
                         "news", "--consent", "x", "--format", "listmonk")
    assert (zipped.code, zipped.err) == (1, (
        "exports/members_export_0e633f6c70.zip: a zip file, not a listmonk file (a zip is "
        "read as Mailchimp's audience export; unzip it to import the CSV inside)\n"))
    project.write("subscribers/one.txt", "Jo Bloggs <jo@example.org>\n")
    said = project.run("subscribers", "import", "subscribers/one.txt", "--list", "news",
                       "--consent", "x", "--format", "mailman", "--dry-run")
    assert (said.code, said.out.splitlines()[0]) == (0, "news: would add 1 new, 0 already "
                                                     "subscribed, 0 skipped (unsubscribed, "
                                                     "bounced or removed)")
    assert snapshot(project) == []


def test_a_source_export_needs_consent_evidence(project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", copy(project, MAILCHIMP / ZIP), "--list",
                         "news")
    assert result.code == 1
    assert result.err.startswith("exports/members_export_0e633f6c70.zip: no consent "
                                 "evidence")
    assert snapshot(project) == []


# --------------------------------------------------------------------------- statuses


def test_a_plain_csv_status_column_is_honoured_and_never_upgraded(
        project: Project, engine: str) -> None:
    project.write("subscribers/s.csv", (
        "email,name,status,consent_source\n"
        "a@example.org,A,subscribed,form\n"
        "b@example.org,B,unsubscribed,form\n"
        "c@example.org,C,cleaned,form\n"
        "d@example.org,D,complained,form\n"
        "e@example.org,E,subscribed,form\n"
        "E@example.org,E again,blocklisted,form\n"))
    result = project.run("subscribers", "import", "subscribers/s.csv", "--list", "news")
    assert result.code == 0, result.err
    assert result.err == ("subscribers/s.csv:7: email: warning: 'E@example.org' is a "
                          "duplicate of line 6 (merged: the first row is kept, with this "
                          "row's status, suppressed)\n")
    assert statuses(project) == {"a@example.org": "subscribed", "b@example.org": "unsubscribed",
                                 "c@example.org": "bounced"}
    for address in ("d@example.org", "e@example.org"):
        assert suppressed(project, address) == [("suppressed", None)]
    assert b"E again" not in stored_bytes(project)


def test_a_later_import_never_subscribes_anyone_a_source_said_left(
        project: Project, engine: str) -> None:
    import_file(project, MAILCHIMP / ZIP)
    import_file(project, FIXTURES / "listmonk" / "subscribers.csv")
    again = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert again.code == 0, again.err
    skipped = [line.split(": skipped: ")[1].split()[0] for line in again.out.splitlines()
               if ": skipped: " in line]
    assert skipped == ["s.whitfield@staffordshire.example.org", "g.sandhu@west.example.org",
                       "m.ellison@west.example.org", "f.begum@west.example.org"]
    # on another list: a bounced and a blocklisted address stay suppressed, while people who
    # left only this list (Mailchimp's unsubscribed, listmonk's disabled) may join it
    other = project.run("subscribers", "import", "subscribers/members.csv", "--list", "events")
    assert other.out.startswith("events: added 48 new, 0 already subscribed, 2 skipped")


def test_an_import_that_says_a_member_left_takes_them_off_the_list(
        project: Project, engine: str) -> None:
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "events")
    out, _ = import_file(project, MAILCHIMP / "unsubscribed_members_export_0e633f6c70.csv")
    assert "recorded 1 unsubscribed" in out
    out, _ = import_file(project, MAILCHIMP / "cleaned_members_export_0e633f6c70.csv")
    assert "recorded 1 bounced" in out
    assert statuses(project)["s.whitfield@staffordshire.example.org"] == "unsubscribed"
    assert statuses(project, "events")["s.whitfield@staffordshire.example.org"] == "subscribed"
    assert statuses(project)["g.sandhu@west.example.org"] == "bounced"
    assert statuses(project, "events")["g.sandhu@west.example.org"] == "bounced"
    twice, _ = import_file(project, MAILCHIMP / "cleaned_members_export_0e633f6c70.csv")
    assert "recorded 1 bounced: never sent to, and no import subscribes them; 1 of them " \
           "already were" in twice


def test_no_one_a_source_said_left_is_ever_sent_to(project: Project, engine: str) -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(r"limits:.*?\n(?=\S)",
                                            "limits:\n  per_minute: 0\n  per_day: 0\n", text,
                                            flags=re.S))
    import_file(project, MAILCHIMP / ZIP)
    import_file(project, FIXTURES / "listmonk" / "subscribers.csv")
    import_file(project, FIXTURES / "mailman" / "members.csv")
    assert project.run("subscribers", "import", "subscribers/members.csv", "--list",
                       "news").code == 0
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = project.run("send", ISSUE, "--list", "news", "--yes", env={
            "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
            "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD})
        assert result.code == 0, result.err
        got = {r.rcpt_to[0]: r.data for r in server.delivered}
    never = {"s.whitfield@staffordshire.example.org", "g.sandhu@west.example.org",
             "m.ellison@west.example.org", "f.begum@west.example.org",
             "r.patel@sandwell.example.net", "c.donovan@public.example.net"}
    assert not never & set(got)
    assert {"a.hussain@west.example.org", "z.hall@hopeanchor.example.org",
            "t.brennan@warwickshire.example.org", "h.carter@birmingham.example.net"} <= set(got)
    message = email.message_from_bytes(got["z.hall@hopeanchor.example.org"],
                                       policy=email.policy.default)
    text_part = message.get_body(("plain",))
    assert text_part is not None and "Hello Zoë Hall," in text_part.get_content()


# --------------------------------------------------------------------------- suppress


def test_suppress_keeps_only_a_hash_of_addresses_not_on_file(project: Project, engine: str) -> None:
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    project.write("subscribers/blocked.txt", "# from the old tool's blocklist\n"
                  "Not A Member <not.a.member@example.org>\nD.Okafor@West.example.org\n")
    result = project.run("subscribers", "suppress", "someone@example.net", "--file",
                         "subscribers/blocked.txt")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "suppressed 3 addresses on every list (0 already were); no import will add them",
        "d.okafor@west.example.org: a member on file: unsubscribed from every list "
        "(`subscribers remove` erases the profile)"]
    stored = stored_bytes(project)
    assert b"not.a.member" not in stored and b"someone@example.net" not in stored
    assert statuses(project)["d.okafor@west.example.org"] == "unsubscribed"
    project.write("subscribers/later.csv", "email,consent_source\nnot.a.member@example.org,x\n"
                  "someone@example.net,x\n")
    later = project.run("subscribers", "import", "subscribers/later.csv", "--list", "events")
    assert later.out.startswith("events: added 0 new, 0 already subscribed, 2 skipped")
    again = project.run("subscribers", "suppress", "someone@example.net")
    assert again.out == ("suppressed 0 addresses on every list (1 already were); no import "
                         "will add them\n")


def test_suppress_checks_every_address_first_and_changes_nothing_on_a_bad_one(
        project: Project, engine: str) -> None:
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    before = snapshot(project)
    project.write("subscribers/bad.csv", "email,name\nfine@example.org,F\nnot-an-address,N\n")
    result = project.run("subscribers", "suppress", "good@example.org", "--file",
                         "subscribers/bad.csv")
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "subscribers/bad.csv:3: email: 'not-an-address' is not a valid address (An email "
        "address must have an @-sign.)\n"
        "subscribers/bad.csv: 1 address(es) cannot be read; nothing was suppressed\n")
    assert snapshot(project) == before
    usage = project.run("subscribers", "suppress")
    assert usage.code == 2 and "give the addresses to suppress, or --file FILE" in usage.err


# --------------------------------------------------------------------------- bad files


def test_every_bad_import_file_has_its_expected_message() -> None:
    assert BAD, "the bad-import corpus is missing"
    for case in BAD:
        assert (FIXTURES / "bad" / f"{Path(case).stem}.expected").is_file(), case


@pytest.mark.parametrize("case", BAD)
def test_a_bad_import_file_is_refused_with_its_exact_message_and_changes_nothing(
        project: Project, engine: str, case: str) -> None:
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    before = snapshot(project)
    result = project.run("subscribers", "import",
                         copy(project, FIXTURES / "bad" / case, "subscribers"),
                         "--list", "news", "--consent", "old list")
    expected = (FIXTURES / "bad" / f"{Path(case).stem}.expected").read_text(encoding="utf-8")
    assert (result.code, result.out) == (1, "")
    assert result.err == expected
    assert "Traceback" not in result.err
    assert snapshot(project) == before


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_zip_bomb_is_stopped_by_the_bytes_it_unpacks_to(project: Project, engine: str) -> None:
    header = (MAILCHIMP / "subscribed_members_export_0e633f6c70.csv").read_bytes()
    bomb = zipped({"subscribed_members_export_ab12.csv": header + b" " * (60 * 1_048_576)},
                  zipfile.ZIP_DEFLATED)
    assert len(bomb) < 1_048_576
    project.write("subscribers/bomb.zip", bomb)
    result = project.run("subscribers", "import", "subscribers/bomb.zip", "--list", "news",
                         "--consent", "x")
    assert (result.code, result.err) == (1, (
        "subscribers/bomb.zip: the files in the zip come to more than 50.0 MB unpacked; the "
        "limit is 50.0 MB (export the audience in parts and import each)\n"))
    many = zipped({f"subscribed_members_export_{i:04x}.csv": header for i in range(17)})
    project.write("subscribers/many.zip", many)
    result = project.run("subscribers", "import", "subscribers/many.zip", "--list", "news",
                         "--consent", "x")
    assert result.code == 1 and "the zip holds 17 files; at most 16 are read" in result.err
    assert snapshot(project) == []


def test_a_zip_refuses_encrypted_twice_named_and_empty_exports(
        project: Project, engine: str) -> None:
    header = (MAILCHIMP / "subscribed_members_export_0e633f6c70.csv").read_bytes()
    plain = zipped({"subscribed_members_export_ab12.csv": header})
    central = plain.index(b"PK\x01\x02")  # set the "encrypted" flag in the central directory
    flags = int.from_bytes(plain[central + 8:central + 10], "little") | 1
    locked = plain[:central + 8] + flags.to_bytes(2, "little") + plain[central + 10:]
    cases = {
        "locked.zip": (locked, "subscribers/locked.zip: subscribed_members_export_ab12.csv in "
                       "the zip is encrypted (unzip it with its password, then import the "
                       "CSV)\n"),
        "twice.zip": (zipped({"subscribed_members_export_ab12.csv": header,
                              "subscribed_members_export_cd34.csv": header}),
                      "subscribers/twice.zip: two subscribed exports in one zip "
                      "(subscribed_members_export_ab12.csv, subscribed_members_export_cd34"
                      ".csv) (import the zip Mailchimp's 'Export audience' sends, unchanged: "
                      "it holds subscribed_members_export_<id>.csv, unsubscribed_... and "
                      "cleaned_...)\n"),
        "empty.zip": (zipped({"subscribed_members_export_ab12.csv": header.split(b"\n")[0]}),
                      "subscribers/empty.zip: no members: the zip's exports have header "
                      "lines but no rows\n"),
    }
    for name, (data, message) in cases.items():
        project.write(f"subscribers/{name}", data)
        result = project.run("subscribers", "import", f"subscribers/{name}", "--list", "news",
                             "--consent", "x")
        assert (result.code, result.err) == (1, message), name
    assert snapshot(project) == []


def test_rows_of_a_zip_are_reported_by_their_own_file_and_line(
        project: Project, engine: str) -> None:
    header = (MAILCHIMP / "subscribed_members_export_0e633f6c70.csv").read_bytes()
    unsubscribed = (MAILCHIMP / "unsubscribed_members_export_0e633f6c70.csv").read_bytes()
    project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    project.run("subscribers", "unsubscribe", "d.okafor@west.example.org")
    project.write("subscribers/x.zip", zipped({
        "subscribed_members_export_ab12.csv": header,
        "unsubscribed_members_export_ab12.csv": unsubscribed
        + b"A.Hussain@west.example.org,Amira,Hussain\n"}))
    result = project.run("subscribers", "import", "subscribers/x.zip", "--list", "news",
                         "--consent", "x")
    assert result.code == 0, result.err
    assert result.err == (
        "subscribers/x.zip/unsubscribed_members_export_ab12.csv:3: Email Address: warning: "
        "'a.hussain@west.example.org' is a duplicate of subscribers/x.zip/"
        "subscribed_members_export_ab12.csv:2 (merged: the first row is kept, with this row's "
        "status, unsubscribed)\n")
    assert "subscribers/x.zip/subscribed_members_export_ab12.csv:3: skipped: " \
           "d.okafor@west.example.org left" in result.out
    assert statuses(project)["a.hussain@west.example.org"] == "unsubscribed"
