"""Files that hold members' addresses are created readable by their owner only (0600).

The state database (and the -wal and -shm files SQLite makes beside it), `subscribers
export -o`, `status --csv` and the messages of `send --dry-run`: each made by the real CLI,
under the usual umask and under an empty one, and its mode read from the real file.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from smtp_servers import SmtpServer
from test_send_e2e import ISSUE, PASSWORD, USER, send, setup


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The umask the CLI inherits (0o000: what a careless service manager may give)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def import_members(project: Project) -> None:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err


def test_the_state_database_and_its_wal_and_shm_are_owner_only(
        project: Project, umask: int) -> None:
    import_members(project)
    database = project.root / "newsletter.db"
    assert mode(database) == 0o600
    # while a connection is open SQLite keeps the -wal and -shm files beside it, made with
    # the database's own permissions whoever opens it
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 50
        more = project.run("subscribers", "import", "subscribers/members.csv", "--list",
                           "other")
        assert more.code == 0, more.err
        for suffix in ("-wal", "-shm"):
            assert mode(project.root / f"newsletter.db{suffix}") == 0o600, suffix
    finally:
        conn.close()


def test_a_database_created_by_any_command_is_owner_only(project: Project,
                                                           umask: int) -> None:
    result = project.run("send", ISSUE, "--list", "news", "--dry-run", "outbox")
    assert result.code == 1 and "no list named 'news'" in result.err  # but it made the file
    assert mode(project.root / "newsletter.db") == 0o600


def test_an_existing_database_keeps_the_permissions_its_owner_gave_it(
        project: Project) -> None:
    import_members(project)
    database = project.root / "newsletter.db"
    database.chmod(0o640)  # e.g. readable by a backup group, on purpose
    import_members(project)
    assert mode(database) == 0o640


def test_an_export_is_owner_only_even_over_a_readable_file(project: Project,
                                                           umask: int) -> None:
    import_members(project)
    out = project.write("members-export.csv", "old")
    out.chmod(0o644)
    result = project.run("subscribers", "export", "-o", "members-export.csv")
    assert result.code == 0, result.err
    assert "a.hussain@west.example.org" in out.read_text(encoding="utf-8-sig")
    assert mode(out) == 0o600
    assert not (project.root / "members-export.csv.partial").exists()


def test_dry_run_messages_are_owner_only(project: Project, umask: int) -> None:
    n = setup(project)
    result = project.run("send", ISSUE, "--list", "members", "--dry-run", "outbox")
    assert result.code == 0, result.err
    files = sorted((project.root / "outbox").glob("*.eml"))
    assert len(files) == n
    assert {mode(path) for path in files} == {0o600}


def test_the_status_csv_is_owner_only(project: Project, umask: int) -> None:
    setup(project)
    with SmtpServer(users={USER: PASSWORD}) as server:
        assert send(project, server).code == 0
    result = project.run("status", ISSUE, "--csv", "status.csv")
    assert result.code == 0, result.err
    out = project.root / "status.csv"
    assert "a.hussain@west.example.org" in out.read_text(encoding="utf-8-sig")
    assert mode(out) == 0o600
