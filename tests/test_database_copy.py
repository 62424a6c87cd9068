"""`newsletter database copy URL`: a SQLite state database moved into PostgreSQL, through the
real CLI, a real SMTP server (tests/smtp_servers.py) and the session's real PostgreSQL
server (the `postgres` and `pg_url` fixtures)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import time

import pytest
from conftest import Project, Result, free_port
from pg_server import PostgresServer
from smtp_servers import SmtpServer

ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"
REMOVED = "a.hussain@west.example.org"
SUPPRESSED = "d.okafor@west.example.org"
TABLES = {"meta", "subscribers", "lists", "memberships", "consent", "suppression", "sends",
          "deliveries", "send_lock", "proofs", "inbox_messages", "feedback", "send_lists",
          "senders", "send_permits"}


def set_database(project: Project, value: str, config: str = "newsletter.yaml") -> None:
    text = project.config.read_text(encoding="utf-8")
    project.write(config, re.sub(r"(?m)^database:.*$", f"database: {value}", text))


def send(project: Project, server: SmtpServer) -> Result:
    return project.run("send", ISSUE, "--list", "news", "--yes", env={
        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(server.port),
        "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_PASSWORD": PASSWORD})


def prepare(project: Project) -> None:
    """Members imported, one removed, one suppressed, the issue sent to the rest."""
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(
        r"limits:.*?\n(?=\S)", "limits:\n  per_minute: 0\n  per_day: 0\n  concurrency: 2\n",
        text, flags=re.S))
    for args in (("subscribers", "import", "subscribers/members.csv", "--list", "news"),
                 ("subscribers", "remove", REMOVED), ("subscribers", "suppress", SUPPRESSED)):
        result = project.run(*args)
        assert result.code == 0, result.err
    with SmtpServer(users={USER: PASSWORD}) as server:
        result = send(project, server)
        assert result.code == 0, result.err
        assert len(server.delivered) == 48


def views(project: Project) -> dict[str, str]:
    """What the commands show of the state database."""
    shown = {}
    for name, args in (("count", ("subscribers", "count")),
                       ("export", ("subscribers", "export", "--all")),
                       ("list", ("subscribers", "list")),
                       ("status", ("status", ISSUE))):
        result = project.run(*args)
        assert result.code == 0, result.err
        shown[name] = re.sub(r"\d+ (s|min|h) ago", "...", result.out)
    return shown


def copy(project: Project, url: str, *args: str) -> Result:
    result = project.run(*args, "database", "copy", url)
    assert "Traceback" not in result.out + result.err
    return result


def test_a_copy_keeps_members_ledger_and_salt_and_postgresql_carries_on(
        project: Project, pg_url: str, postgres: PostgresServer) -> None:
    prepare(project)
    before = views(project)
    with sqlite3.connect(project.root / "newsletter.db") as lite:
        salt = lite.execute("SELECT value FROM meta").fetchone()[0]
        uids = lite.execute("SELECT id, uid FROM subscribers ORDER BY id").fetchall()
        top = lite.execute("SELECT max(id) FROM subscribers").fetchone()[0]
    mtime = (project.root / "newsletter.db").stat().st_mtime_ns

    result = copy(project, pg_url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("copied newsletter.db to " + pg_url + ": ")
    counts = {m.group(1): int(m.group(2)) for line in lines
              if (m := re.fullmatch(r"  (\w+) +(\d+)", line))}
    assert set(counts) == TABLES
    assert counts["subscribers"] == 50 and counts["deliveries"] == 48
    assert counts["suppression"] >= 2 and counts["meta"] == 1
    assert f"put `database: {pg_url}` in newsletter.yaml" in lines[-1]
    assert "keep newsletter.db as a backup until the first send" in lines[-1]
    assert (project.root / "newsletter.db").stat().st_mtime_ns == mtime  # read, not written

    dbname = pg_url.rsplit("/", 1)[1]
    with postgres.connect(dbname) as pg:
        assert pg.execute("SELECT value FROM meta").fetchall() == [(salt,)]
        assert pg.execute("SELECT id, uid FROM subscribers ORDER BY id").fetchall() == uids

    set_database(project, pg_url)
    assert views(project) == before

    # the salt came along: the removed and the suppressed address stay out of a re-import
    again = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert again.code == 0, again.err
    assert "added 0 new" in again.out and "2 skipped" in again.out, again.out
    assert views(project)["count"] == before["count"]

    # new members get new ids, past the copied ones (the sequences were moved)
    project.write("subscribers/new.csv", "email,name,consent_source\n"
                  "new.one@example.org,New One,form\nnew.two@example.org,New Two,form\n")
    added = project.run("subscribers", "import", "subscribers/new.csv", "--list", "news")
    assert added.code == 0, added.err
    assert "added 2 new" in added.out
    with postgres.connect(dbname) as pg:
        new_ids = [r[0] for r in pg.execute(
            "SELECT id FROM subscribers WHERE email LIKE 'new.%' ORDER BY id")]
        assert len(new_ids) == 2 and min(new_ids) > top
        assert pg.execute("SELECT count(*) FROM consent").fetchone()[0] == 52

    # the ledger came along: the issue sent from SQLite is not sent again from PostgreSQL
    with SmtpServer(users={USER: PASSWORD}) as server:
        resent = send(project, server)
        assert resent.code == 0, resent.err
        assert server.delivered == []

    # a second copy into the same (now used) database is refused, nothing changed
    set_database(project, "newsletter.db", "sqlite.yaml")
    refused = copy(project, pg_url, "--config", "sqlite.yaml")
    assert refused.code == 1
    assert refused.out == ""
    assert refused.err.startswith(f"{pg_url}: the database is not empty (rows: ")
    assert refused.err.endswith("(nothing was changed)\n") and len(refused.err.splitlines()) == 1
    with postgres.connect(dbname) as pg:
        assert pg.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 52


def test_a_copy_is_refused_while_a_send_holds_the_lock(project: Project, pg_url: str,
                                                       postgres: PostgresServer) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err
    now = time.time()
    with sqlite3.connect(project.root / "newsletter.db") as lite:
        lite.execute("INSERT INTO send_lock VALUES ('send', '2017-02-news', ?, ?, 't', ?, ?)",
                     (os.getpid(), socket.gethostname(), now - 5, now))
    refused = copy(project, pg_url)
    assert refused.code == 1
    assert refused.err.startswith("2017-02-news is being sent right now (process ")
    with postgres.connect(pg_url.rsplit("/", 1)[1]) as pg:
        assert pg.execute("SELECT to_regclass('subscribers')").fetchone()[0] is None


def test_schemas_that_drifted_are_refused(project: Project, pg_url: str,
                                          postgres: PostgresServer) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err
    with sqlite3.connect(project.root / "newsletter.db") as lite:
        lite.execute("ALTER TABLE subscribers ADD COLUMN nickname TEXT")
    refused = copy(project, pg_url)
    assert refused.code == 1
    assert refused.err == (
        f"{pg_url}: the SQLite and PostgreSQL schemas differ (table subscribers: columns "
        "only in SQLite ['nickname'], only in PostgreSQL []); nothing was copied (upgrade "
        "newsletter, or report this as a bug)\n")
    with postgres.connect(pg_url.rsplit("/", 1)[1]) as pg:
        assert pg.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0


@pytest.mark.parametrize(("url", "message"), [
    ("newsletter.db", "command line: URL: not a PostgreSQL URL: 'newsletter.db' (write "
                      "postgresql://USER@HOST[:PORT]/NAME)"),
    ("mysql://news@localhost/news", "command line: URL: not a PostgreSQL URL: "
                                    "'mysql://news@localhost/news' (write "
                                    "postgresql://USER@HOST[:PORT]/NAME)"),
    ("postgresql://news:hunter2@localhost/news",
     "command line: URL: the database URL carries a password (remove it and set "
     "NEWSLETTER_DATABASE_PASSWORD in the environment instead: "
     "postgresql://USER@HOST[:PORT]/NAME)"),
    ("postgresql://news@localhost/", "command line: URL: a PostgreSQL URL needs a host and a "
                                     "database name (write postgresql://USER@HOST[:PORT]/NAME)"),
])
def test_a_bad_url_is_refused_in_one_line_before_anything_is_opened(
        project: Project, url: str, message: str) -> None:
    result = copy(project, url)
    assert (result.code, result.out, result.err) == (1, "", message + "\n")
    assert "hunter2" not in result.err
    assert not (project.root / "newsletter.db").exists()


def test_no_sqlite_database_is_refused(project: Project, pg_url: str) -> None:
    result = copy(project, pg_url)
    assert result.code == 1
    assert result.err == ("newsletter.db: no SQLite state database to copy "
                          "(the file does not exist) (check database: in newsletter.yaml)\n")
    assert not (project.root / "newsletter.db").exists()


def test_a_database_setting_already_on_postgresql_is_refused(project: Project,
                                                             pg_url: str) -> None:
    set_database(project, pg_url)
    result = copy(project, pg_url)
    assert result.code == 1
    assert result.err == (f"newsletter.yaml: database: already PostgreSQL ({pg_url}); the "
                          "copy reads a SQLite file (name the SQLite file in database: to "
                          "copy it)\n")


def test_an_unreachable_server_is_one_line(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err
    url = f"postgresql://news@127.0.0.1:{free_port()}/news"
    refused = copy(project, url)
    assert refused.code == 1
    assert refused.err.startswith(f"{url}: cannot open the state database: ")
    assert "Connection refused" in refused.err and len(refused.err.splitlines()) == 1


def test_the_copy_command_is_listed(project: Project) -> None:
    result = project.run("database", "--help")
    assert result.code == 0 and "copy" in result.out

