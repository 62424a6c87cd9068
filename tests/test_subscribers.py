"""Member CSV import and export through the real CLI, plus the address and cell rules."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import Project, new_database, use_database
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter.errors import AddressError
from newsletter.members import csvfiles as subscribers
from newsletter.members import database as db
from newsletter.members.csvfiles import (
    ExportRow,
    export_csv,
    neutralise,
    normalise_address,
    parse_csv,
    unneutralise,
)
from newsletter.text.addresses import _PLAIN_ADDRESS

FIXTURES = Path(__file__).parent / "fixtures" / "csv"
BAD = sorted(p.stem for p in (FIXTURES / "bad").glob("*.csv"))


def snapshot(project: Project) -> list[str]:
    """Every row of the state database, or [] when there is none."""
    return project.dump()


def rows(project: Project, sql: str, *params: object) -> list[tuple[object, ...]]:
    return project.rows(sql, *params)


def import_sample(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err
    assert result.out.startswith("news: added 50 new, 0 already subscribed, 0 skipped")


# --------------------------------------------------------------------------- bad files


def test_every_bad_file_has_its_expected_message() -> None:
    assert BAD, "the bad-CSV corpus is missing"
    for case in BAD:
        assert (FIXTURES / "bad" / f"{case}.expected").is_file(), case


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_refused_with_its_exact_message_and_changes_nothing(
        project: Project, engine: str, case: str) -> None:
    import_sample(project)
    before = snapshot(project)
    shutil.copy(FIXTURES / "bad" / f"{case}.csv", project.root / "subscribers" / f"{case}.csv")
    result = project.run("subscribers", "import", f"subscribers/{case}.csv", "--list", "news")
    expected = (FIXTURES / "bad" / f"{case}.expected").read_text(encoding="utf-8")
    assert result.code == 1
    assert result.err == expected
    assert "Traceback" not in result.err
    assert result.out == ""
    assert snapshot(project) == before


def test_a_bad_file_creates_no_database(project: Project, engine: str) -> None:
    shutil.copy(FIXTURES / "bad" / "bad-rows.csv", project.root / "subscribers" / "x.csv")
    result = project.run("subscribers", "import", "subscribers/x.csv", "--list", "news")
    assert result.code == 1
    assert not project.has_database()


def test_a_missing_file_is_a_message_not_a_traceback(project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", "subscribers/nope.csv", "--list", "news")
    assert result.code == 1
    assert result.err == ("subscribers/nope.csv: cannot read the file (No such file or "
                          "directory)\n")


@pytest.mark.parametrize(("args", "code", "message"), [
    (("import", "subscribers", "--list", "news"), 2, "'subscribers' is a directory"),
    (("import", "subscribers/members.csv"), 2, "Missing option '--list'"),
    (("import", "subscribers/members.csv", "--list", ""), 1,
     "--list: '' is not a usable list name"),
    (("export", "-o", "subscribers"), 2, "'subscribers' is a directory"),
    (("export",), 1, "newsletter.db: no members yet (the state database does not exist)"),
    (("list",), 1, "no members yet"),
    (("count", "--list", "news"), 1, "no members yet"),
    (("unsubscribe", "a.hussain@west.example.org"), 1, "no members yet"),
    (("remove", "a.hussain@west.example.org"), 1, "no members yet"),
])
def test_bad_command_lines_are_a_message_and_create_nothing(
        project: Project, engine: str, args: tuple[str, ...], code: int, message: str) -> None:
    if project.postgresql:  # messages name the database by its URL
        message = message.replace("newsletter.db", db.describe(project.database))
    before = sorted(p.name for p in project.root.iterdir())
    result = project.run("subscribers", *args)
    assert (result.code, result.out) == (code, ""), result.err
    assert message in result.err and "Traceback" not in result.err
    assert sorted(p.name for p in project.root.iterdir()) == before  # no database made
    assert not project.has_database()


@pytest.mark.parametrize("action", ["remove", "unsubscribe"])
def test_removing_or_unsubscribing_a_stranger_is_an_error_that_changes_nothing(
        project: Project, engine: str, action: str) -> None:
    import_sample(project)
    before = snapshot(project)
    result = project.run("subscribers", action, "nobody@example.org")
    assert result.code == 1
    assert result.err == ("command line: EMAIL: 'nobody@example.org' is not a member (check "
                          "the spelling with 'newsletter subscribers list')\n")
    assert snapshot(project) == before


def test_an_unusable_list_name_is_refused(project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "News!")
    assert result.code == 1
    assert result.err == ("--list: 'News!' is not a usable list name (lower-case letters, "
                          "digits, '.', '_' and '-', e.g. 'news')\n")


def test_skip_invalid_imports_the_good_rows_and_reports_the_bad(
        project: Project, engine: str) -> None:
    shutil.copy(FIXTURES / "bad" / "bad-rows.csv", project.root / "subscribers" / "x.csv")
    result = project.run("subscribers", "import", "subscribers/x.csv", "--list", "news",
                         "--skip-invalid")
    assert result.code == 0, result.err
    assert result.out == ("news: added 1 new, 0 already subscribed, 0 skipped (unsubscribed, "
                          "bounced or removed)\n")
    reported = result.err.splitlines()
    assert len(reported) == 11
    assert reported[0] == ("subscribers/x.csv:3: email: 'a@b@c' is not a valid address (The "
                           "part after the @-sign contains invalid characters: '@'.) "
                           "(row skipped)")
    assert rows(project, "SELECT email FROM subscribers") == [("j.smith@example.org",)]


def test_consent_for_rows_without_evidence_can_be_given_on_the_command_line(
        project: Project, engine: str) -> None:
    shutil.copy(FIXTURES / "bad" / "no-consent.csv", project.root / "subscribers" / "x.csv")
    result = project.run("subscribers", "import", "subscribers/x.csv", "--list", "news",
                         "--consent", "signed up at the 2016 conference")
    assert result.code == 0, result.err
    assert rows(project, "SELECT source, date, basis FROM consent") == [
        ("signed up at the 2016 conference", None, "consent")]


# --------------------------------------------------------------------------- messy but valid


def test_a_messy_spreadsheet_file_imports_cleanly(project: Project, engine: str) -> None:
    shutil.copy(FIXTURES / "messy.csv", project.root / "subscribers" / "messy.csv")
    result = project.run("subscribers", "import", "subscribers/messy.csv", "--list", "news",
                         "--consent", "old mailing list")
    assert result.code == 0, result.err
    assert result.out == ("news: added 5 new, 0 already subscribed, 0 skipped (unsubscribed, "
                          "bounced or removed)\n")
    assert result.err == ("subscribers/messy.csv:4: email: warning: 'JANE.SMITH@example.org' "
                          "is a duplicate of line 2 (merged: the first row is kept)\n")
    assert rows(project, "SELECT email, name, organisation, extra FROM subscribers ORDER BY id"
                ) == [
        ("jane.smith@example.org", "Jane Smith", "West Midlands Police; Safeguarding",
         '{"role":"Detective Sergeant"}'),
        ("bob.jones@example.net", 'Bob "BJ" Jones', "Birmingham City Council", '{"role":""}'),
        ("li.wei@xn--bcher-kva.example.com", "Li Wei", "Hope Anchor Charity",
         '{"role":"Volunteer\\r\\ncoordinator; Tuesdays"}'),
        ("-minus@example.org", "Formula Test", '=HYPERLINK("http://evil.example")',
         '{"role":"@SUM(A1)"}'),
        ("plain@example.com", None, None, '{"role":""}'),
    ]
    assert rows(project, "SELECT source, date, basis FROM consent ORDER BY subscriber_id") == [
        ("network sign-up form", "2016-12-05", "consent"),
        ("network sign-up form", "2016-12-05", "legitimate interests"),
        ("old mailing list", None, "consent"),
        ("network sign-up form", "2016-12-01", "consent"),
        ("network sign-up form", None, "consent"),
    ]


def test_a_dry_run_reports_and_changes_nothing(project: Project, engine: str) -> None:
    import_sample(project)
    project.run("subscribers", "unsubscribe", "a.hussain@west.example.org")
    before = snapshot(project)
    project.write("subscribers/more.csv", "email,consent_source\r\nnew.person@example.org,form"
                  "\r\nA.Hussain@west.example.org,form\r\nd.okafor@west.example.org,form\r\n")
    result = project.run("subscribers", "import", "subscribers/more.csv", "--list", "news",
                         "--dry-run")
    assert result.code == 0, result.err
    assert result.out == (
        "news: would add 1 new, 1 already subscribed, 1 skipped (unsubscribed, bounced or "
        "removed)\n"
        "subscribers/more.csv:3: skipped: a.hussain@west.example.org left or was removed "
        "earlier (an import never resubscribes anyone)\n"
        "dry run: nothing was changed\n")
    assert snapshot(project) == before


def test_a_dry_run_before_any_import_creates_no_database(project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news",
                         "--dry-run")
    assert result.code == 0, result.err
    assert result.out.startswith("news: would add 50 new, 0 already subscribed, 0 skipped")
    assert not project.has_database()


# --------------------------------------------------------------------------- suppression


def test_an_import_never_resubscribes_someone_who_unsubscribed(
        project: Project, engine: str) -> None:
    import_sample(project)
    result = project.run("subscribers", "unsubscribe", "D.Okafor@WEST.example.org", "--list",
                         "news")
    assert (result.code, result.out) == (0, "d.okafor@west.example.org: unsubscribed from news\n")
    again = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert again.code == 0, again.err
    assert again.out.splitlines() == [
        "news: added 0 new, 49 already subscribed, 1 skipped (unsubscribed, bounced or removed)",
        "subscribers/members.csv:3: skipped: d.okafor@west.example.org left or was removed "
        "earlier (an import never resubscribes anyone)",
    ]
    assert rows(project, "SELECT m.status FROM memberships m JOIN subscribers s "
                "ON s.id = m.subscriber_id WHERE s.email = 'd.okafor@west.example.org'") == [
        ("unsubscribed",)]


def test_after_remove_the_address_is_erased_and_a_reimport_skips_it(
        project: Project, engine: str, request: pytest.FixtureRequest) -> None:
    import_sample(project)
    result = project.run("subscribers", "remove", "S.Whitfield@staffordshire.example.org")
    assert result.code == 0, result.err
    assert rows(project, "SELECT email, email_hash, name, organisation, extra FROM subscribers "
                "WHERE id = 3") == [(None, None, None, None, "{}")]
    assert rows(project, "SELECT count(*) FROM subscribers") == [(50,)]  # ids stay valid
    if project.postgresql:
        # The members' table's file on the server after a checkpoint: remove's VACUUM left
        # no copy of the old row there. (The server's WAL still holds it until recycled.)
        postgres = request.getfixturevalue("postgres")
        conn = project.connect()
        try:
            table = conn.execute("SELECT pg_relation_filepath('subscribers')").fetchone()[0]
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        stored = (postgres.data / table).read_bytes()
    else:
        stored = b"".join(p.read_bytes() for p in project.root.glob("newsletter.db*"))
    assert b"s.whitfield" not in stored and b"Sarah Whitfield" not in stored
    assert b"a.hussain@west.example.org" in stored  # the right bytes were read
    again = project.run("subscribers", "import", "subscribers/members.csv", "--list", "events")
    assert again.out.splitlines()[:2] == [
        "events: added 49 new, 0 already subscribed, 1 skipped (unsubscribed, bounced or "
        "removed)",
        "subscribers/members.csv:4: skipped: s.whitfield@staffordshire.example.org left or "
        "was removed earlier (an import never resubscribes anyone)",
    ]
    twice = project.run("subscribers", "remove", "s.whitfield@staffordshire.example.org")
    assert twice.code == 1
    assert twice.err == ("command line: EMAIL: 's.whitfield@staffordshire.example.org' was "
                         "already removed (only its suppression hash is kept)\n")


def test_list_and_count_show_members_by_status(project: Project, engine: str) -> None:
    import_sample(project)
    project.run("subscribers", "unsubscribe", "a.hussain@west.example.org")
    counted = project.run("subscribers", "count")
    assert counted.out == "news\tsubscribed\t49\nnews\tunsubscribed\t1\n"
    listed = project.run("subscribers", "list", "--list", "news").out.splitlines()
    assert len(listed) == 50
    assert listed[0].split()[:3] == ["a.hussain@west.example.org", "news", "unsubscribed"]
    assert listed[0].endswith("Amira Hussain (West Midlands Police)")


# --------------------------------------------------------------------------- export


def test_export_then_import_then_export_gives_the_same_bytes(
        project: Project, engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import_sample(project)
    shutil.copy(FIXTURES / "messy.csv", project.root / "subscribers" / "messy.csv")
    project.run("subscribers", "import", "subscribers/messy.csv", "--list", "news",
                "--consent", "old mailing list")
    first = project.run("subscribers", "export", "--list", "news", "-o", "first.csv")
    assert first.code == 0, first.err
    exported = (project.root / "first.csv").read_bytes()
    assert exported.startswith(b"\xef\xbb\xbfemail,name,organisation,consent_source,"
                               b"consent_date,consent_basis,role,sector\r\n")
    assert b"\r\n'-minus@example.org,Formula Test,\"'=HYPERLINK(\"\"http://evil.example\"\")\"" \
        b",network sign-up form,2016-12-01,consent,'@SUM(A1),\r\n" in exported

    shutil.copytree(project.root, tmp_path / "fresh",
                    ignore=shutil.ignore_patterns("newsletter.db*", "first.csv"))
    fresh = use_database(tmp_path / "fresh", new_database(request, engine))
    shutil.copy(project.root / "first.csv", fresh.root / "subscribers" / "first.csv")
    imported = fresh.run("subscribers", "import", "subscribers/first.csv", "--list", "news")
    assert imported.code == 0, imported.err
    assert imported.out.startswith("news: added 55 new,")
    second = fresh.run("subscribers", "export", "--list", "news", "-o", "second.csv")
    assert second.code == 0, second.err
    assert (fresh.root / "second.csv").read_bytes() == exported


def test_export_leaves_out_people_who_left(project: Project, engine: str) -> None:
    import_sample(project)
    project.run("subscribers", "unsubscribe", "a.hussain@west.example.org")
    project.run("subscribers", "remove", "d.okafor@west.example.org")
    out = project.run("subscribers", "export").out
    assert len(out.splitlines()) == 49  # header + 48 members
    assert "hussain" not in out and "okafor" not in out


def test_export_to_a_missing_folder_is_a_message(project: Project, engine: str) -> None:
    import_sample(project)
    result = project.run("subscribers", "export", "-o", "no/such/folder/out.csv")
    assert result.code == 1
    assert result.err == ("no/such/folder/out.csv: cannot write the file (No such file or "
                          "directory)\n")


def test_export_to_a_place_nobody_may_write_is_a_message(project: Project, engine: str) -> None:
    import_sample(project)
    result = project.run("subscribers", "export", "-o", "/proc/out.csv")  # even root may not
    assert (result.code, result.out) == (1, "")
    assert result.err == "/proc/out.csv: cannot write the file (No such file or directory)\n"


def test_export_of_an_unknown_list_names_the_lists(project: Project, engine: str) -> None:
    import_sample(project)
    result = project.run("subscribers", "export", "--list", "events")
    assert (result.code, result.err) == (1, "--list: no list named 'events' (lists: news)\n")


# --------------------------------------------------------------------------- scale


def test_one_hundred_thousand_rows_import_in_a_few_seconds(project: Project, engine: str) -> None:
    lines = ["email,name,organisation,consent_source,consent_date,consent_basis"]
    lines += [f"Member.{i}@Partner{i % 97}.example.org,Member {i},Org {i % 500},sign-up form,"
              "2016-12-05,consent" for i in range(100_000)]
    project.write("subscribers/big.csv", "\r\n".join(lines) + "\r\n")
    start = time.monotonic()
    result = project.run("subscribers", "import", "subscribers/big.csv", "--list", "news")
    elapsed = time.monotonic() - start
    assert result.code == 0, result.err
    assert result.out.startswith("news: added 100000 new, 0 already subscribed, 0 skipped")
    assert rows(project, "SELECT count(*) FROM memberships WHERE status = 'subscribed'") == [
        (100_000,)]
    assert elapsed < 30, f"took {elapsed:.1f} s"


# --------------------------------------------------------------------------- the rules


def test_addresses_are_normalised_to_one_form() -> None:
    assert normalise_address("  Jane.Smith@Example.ORG ") == "jane.smith@example.org"
    assert normalise_address("li@Bücher.example") == "li@xn--bcher-kva.example"
    assert normalise_address("li@XN--BCHER-KVA.example") == "li@xn--bcher-kva.example"


@pytest.mark.parametrize(("text", "message"), [
    ("jöe@example.org", "'jöe@example.org' is not a valid address (non-ASCII characters "
                        "before the @-sign need SMTPUTF8, which is not supported)"),
    ("a@b@c", "'a@b@c' is not a valid address (The part after the @-sign contains invalid "
              "characters: '@'.)"),
    ("", "empty (every member needs an address)"),
    ("x@localhost", "'x@localhost' is not a valid address (The part after the @-sign is not "
                    "valid. It should have a period.)"),
])
def test_unusable_addresses_say_why(text: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        normalise_address(text)
    assert str(caught.value) == message


def _validator_form(text: str) -> str | None:
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    local, _, domain = (valid.ascii_email or "").rpartition("@")
    return f"{local.lower()}@{domain.lower()}"


@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
@example("a@example.test")
@example("a@xn--zz.org")
@example("a@ab--cd.org")
@example(("a" * 65) + "@example.org")
def test_the_fast_path_agrees_with_email_validator(text: str) -> None:
    expected = _validator_form(text)
    try:
        got: str | None = normalise_address(text)
    except AddressError:
        got = None
    assert got == expected


@given(st.text())
@example("'=1+1")
@example("''")
@example("'")
def test_neutralising_a_cell_is_undone_exactly(cell: str) -> None:
    safe = neutralise(cell)
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert unneutralise(safe) == cell


_SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                     max_size=30).map(str.strip).filter(lambda s: "=?" not in s)


@given(st.lists(st.tuples(_SAFE_TEXT, _SAFE_TEXT, st.text(max_size=20).filter(
    lambda s: "\x00" not in s)), max_size=5))
def test_export_and_parse_are_inverse_for_any_names(people: list[tuple[str, str, str]]
                                                    ) -> None:
    import json

    exported = [ExportRow(email=f"m{i}@example.org", name=name or None,
                          organisation=org or None, extra=json.dumps({"note": note}),
                          consent_source="form", consent_date=None, consent_basis="consent")
                for i, (name, org, note) in enumerate(people)]
    if not exported:
        return
    text = export_csv(exported)
    parsed = parse_csv(text.encode(), "x.csv", consent=None)
    assert parsed.problems == ()
    assert [(r.name, r.organisation, json.loads(r.extra)["note"]) for r in parsed.rows] == [
        (name or None, org or None, note) for name, org, note in people]
    again = export_csv(ExportRow(r.email, r.name, r.organisation, r.extra, r.consent_source,
                                 r.consent_date, r.consent_basis) for r in parsed.rows)
    assert again == text


def test_subscribers_module_has_no_database_code() -> None:
    assert "sqlite3" not in Path(subscribers.__file__).read_text(encoding="utf-8")


@given(st.binary(max_size=300) | st.text(alphabet="email,;\"'\r\n\x00=@a.éx", max_size=120)
       .map(lambda t: ("email,consent_source\n" + t).encode()))
@example(b"email\n\"a@example.org")
@example(b"email,consent_source\n\x00@example.org,form\n")
def test_no_input_makes_the_parser_fail_any_other_way(data: bytes) -> None:
    from newsletter.errors import InputError

    try:
        parsed = parse_csv(data, "x.csv", consent=None)
    except InputError as e:
        assert all(str(p).startswith("x.csv") for p in e.problems)
    else:
        assert all(str(p).startswith("x.csv:") for p in parsed.problems)


# --------------------------------------------------------------------------- files that are no CSV


NOT_REGULAR = ("cannot read the file: not a regular file (save the members as a CSV file "
               "and give its name)\n")


@pytest.mark.parametrize("name", ["/dev/zero", "zero-link.csv"])
def test_a_device_is_refused_by_what_it_is_not_read(
        project: Project, engine: str, name: str) -> None:
    (project.root / "zero-link.csv").symlink_to("/dev/zero")
    result = project.run("subscribers", "import", name, "--list", "news", timeout=30)
    assert (result.code, result.out, result.err) == (1, "", f"{name}: {NOT_REGULAR}")
    assert not project.has_database()


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(
        project: Project, engine: str) -> None:
    os.mkfifo(project.root / "members.csv")
    started = time.monotonic()
    # a regression would wait for ever: the timeout fails the test instead of the suite
    result = project.run("subscribers", "import", "members.csv", "--list", "news",
                         timeout=30)
    assert time.monotonic() - started < 30
    assert (result.code, result.out, result.err) == (1, "", f"members.csv: {NOT_REGULAR}")
    assert not project.has_database()


def test_a_folder_is_refused_on_the_command_line_and_by_the_reader(
        project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", "subscribers", "--list", "news")
    assert result.code == 2 and "'subscribers' is a directory" in result.err
    from newsletter.errors import InputError

    with pytest.raises(InputError) as refused:
        subscribers.read_csv(project.root / "subscribers", consent=None, shown_as="subscribers")
    assert str(refused.value) == ("subscribers: cannot read the file: a folder (save the "
                                  "members as a CSV file and give its name)")


def test_a_file_over_the_limit_is_refused_by_its_size_before_it_is_read(
        project: Project, engine: str) -> None:
    huge = project.root / "subscribers" / "huge.csv"
    with huge.open("wb") as f:  # sparse: the size without the bytes
        f.write(b"email,consent_source\n")
        f.truncate(subscribers.MAX_FILE_BYTES + 2 * 1_048_576)
    started = time.monotonic()
    result = project.run("subscribers", "import", "subscribers/huge.csv", "--list", "news")
    assert time.monotonic() - started < 10
    assert (result.code, result.out, result.err) == (
        1, "", "subscribers/huge.csv: file is 52.0 MB; the limit is 50.0 MB (split it into "
               "several files and import each)\n")
    assert not project.has_database()


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    head = b"email,consent_source\na@example.org,form\n"
    path.write_bytes(head + b"\n" * (subscribers.MAX_FILE_BYTES - len(head)))
    parsed = subscribers.read_csv(path, consent=None)
    assert [r.email for r in parsed.rows] == ["a@example.org"]


# --------------------------------------------------------------------------- bidi controls


@pytest.mark.parametrize("control", [chr(c) for c in (*range(0x202A, 0x202F),
                                                      *range(0x2066, 0x206A))])
@pytest.mark.parametrize("column", ["name", "organisation"])
def test_every_bidi_control_is_refused_in_names_and_organisations(control: str,
                                                                  column: str) -> None:
    value = f"Amira {control}nosretaP"
    cells = {"name": "Amira Hussain", "organisation": "West Midlands Police", column: value}
    text = ("email,name,organisation,consent_source\n"
            f"a.hussain@example.org,{cells['name']},{cells['organisation']},form\n")
    parsed = parse_csv(text.encode(), "m.csv", consent=None)
    assert parsed.rows == ()
    (problem,) = parsed.problems
    assert str(problem).startswith(f"m.csv:2: {column}: 'Amira \\u{ord(control):04x}"
                                   f"nosretaP' contains U+{ord(control):04X} ")
    assert "invisible bidirectional control" in str(problem)
    assert control not in str(problem)  # the message itself cannot be reordered


def test_skip_invalid_imports_the_rows_without_bidi_controls(project: Project, engine: str) -> None:
    shutil.copy(FIXTURES / "bad" / "bidi-controls.csv", project.root / "subscribers" / "b.csv")
    result = project.run("subscribers", "import", "subscribers/b.csv", "--list", "news",
                         "--skip-invalid")
    assert result.code == 0, result.err
    assert result.out.startswith("news: added 2 new")
    assert result.err.count("invisible bidirectional control") == 6
    names = [r[0] for r in rows(project, "SELECT name FROM subscribers ORDER BY id")]
    assert names == ["Jane Smith", "\u0641\u0627\u0637\u0645\u0629 Ali"]  # RTL text is fine


def test_a_bidi_control_in_consent_evidence_is_refused_too(project: Project, engine: str) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news",
                         "--consent", "signed up \u202eat the conference")
    assert result.code == 1
    assert result.err.startswith("--consent: 'signed up \\u202eat the conference' contains "
                                 "U+202E RIGHT-TO-LEFT OVERRIDE")
    assert not project.has_database()
