"""Shared fixtures: a project in a temp folder, the real CLI, Debian's chromium, PostgreSQL.

Tools that a test needs (chromium, spamassassin, node, postgresql) skip the test when
missing on a developer machine, and fail it under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import pytest

from newsletter.members import database as db

if TYPE_CHECKING:
    from pg_server import PostgresServer

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_tool(path_or_name: str) -> str:
    """Return the tool's path; skip (locally) or fail (CI=true) when it is missing."""
    found = path_or_name if os.path.isabs(path_or_name) and os.path.exists(path_or_name) \
        else shutil.which(path_or_name)
    if not found:
        missing_tool(f"{path_or_name} is not installed (.ci/run installs it)")
    return found


def missing_tool(message: str) -> NoReturn:
    """Skip the test on a developer machine; fail it under CI (CI=true)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    """A copy of the sample project in a temp folder, and the CLI run inside it."""

    root: Path
    # The state database: the SQLite file, or a PostgreSQL URL (the engine fixture decides).
    database: db.Target = ""

    def __post_init__(self) -> None:
        if not self.database:
            self.database = self.root / "newsletter.db"

    @property
    def config(self) -> Path:
        return self.root / "newsletter.yaml"

    @property
    def postgresql(self) -> bool:
        return db.is_postgresql(self.database)

    def connect(self) -> db.Connection:
        """The project's state database (created and migrated if need be), either engine."""
        return db.connect(self.database)

    def has_database(self) -> bool:
        """Whether the state database was made: for SQLite any newsletter.db* file at all
        (-wal, -shm, -journal), for PostgreSQL a schema in the test's database."""
        if not self.postgresql:
            path = Path(self.database)
            return any(path.parent.glob(path.name + "*"))
        return db.exists(self.database)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """A query's rows as tuples, on either engine."""
        conn = self.connect()
        try:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def dump(self) -> list[str]:
        """The whole state database as text to compare before and after, or [] when there
        is none: SQLite's iterdump; on PostgreSQL, every table's rows, sorted."""
        if not self.has_database():
            return []
        if not self.postgresql:
            lite = sqlite3.connect(self.database)
            try:
                return list(lite.iterdump())
            finally:
                lite.close()
        conn = db.open_read_only(self.database)
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' ORDER BY table_name")]
            out = []
            for table in tables:
                out.append(f"TABLE {table}")
                out.extend(sorted(repr(tuple(r)) for r in conn.execute(
                    f"SELECT * FROM {table}")))
            return out
        finally:
            conn.close()

    def write(self, relative: str, text: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def run(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> Result:
        full_env = {**os.environ, "NEWSLETTER_SECRET": "test-secret-0123456789abcdef",
                    "SOURCE_DATE_EPOCH": "1480896000", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=self.root, env=full_env, input=input, capture_output=True, text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the test is about SQLite itself (its file, "
        "permissions, WAL, pragmas, locks): the engine fixture gives it sqlite alone")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that ask for ``engine`` (or ``state_db``) run once per state database engine;
    those marked ``sqlite_only`` run on SQLite alone."""
    if "engine" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    metafunc.parametrize("engine", ENGINES[:1] if only else ENGINES, indirect=True)


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> str:
    """The state database engine under test: "sqlite" or "postgresql" (parametrised).

    Module-scoped so that a module's expensive fixtures (test_inbox's sent project) can be
    built once per engine; function-scoped fixtures read it as usual.
    """
    name: str = getattr(request, "param", "sqlite")
    return name


@pytest.fixture
def state_db(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> db.Target:
    """Where a test's state database is: a new SQLite file, or a new PostgreSQL database."""
    if engine == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return tmp_path / "state.db"


_DATABASE_LINE = re.compile(r"^database:.*$", re.MULTILINE)


def use_database(root: Path, database: db.Target | None) -> Project:
    """The project in ``root``, its newsletter.yaml pointed at ``database`` when that is a
    PostgreSQL URL (None or a path: the newsletter.db file the sample names)."""
    if database is None or not db.is_postgresql(database):
        return Project(root)
    config = root / "newsletter.yaml"
    text = config.read_text(encoding="utf-8")
    line = f"database: {database}"
    text, found = _DATABASE_LINE.subn(line, text)
    if not found:
        text = text.rstrip("\n") + "\n" + line + "\n"
    config.write_text(text, encoding="utf-8")
    return Project(root, database)


def make_project(root: Path, database: db.Target | None = None) -> Project:
    """A copy of the sample project in ``root`` whose state database is ``database`` (a
    PostgreSQL URL; None: the default newsletter.db file)."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    for folder in ("issues", "templates", "subscribers"):
        if (REPO / folder).exists():
            shutil.copytree(REPO / folder, root / folder)
    return use_database(root, database)


def new_database(request: pytest.FixtureRequest, engine: str) -> str | None:
    """Another new, empty PostgreSQL database when the engine is "postgresql" (its URL);
    None for SQLite (a project's own newsletter.db file)."""
    if engine != "postgresql":
        return None
    url: str = request.getfixturevalue("postgres").create_database()
    return url


def copy_project(request: pytest.FixtureRequest, source: Project, root: Path) -> Project:
    """A copy of ``source`` in ``root``, its state database too (a SQLite backup, or a
    PostgreSQL database made from it as a template)."""
    shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("newsletter.db*"))
    if not source.postgresql:
        lite_source = sqlite3.connect(source.database)
        lite_target = sqlite3.connect(root / "newsletter.db")
        lite_source.backup(lite_target)
        lite_source.close()
        lite_target.close()
        return Project(root)
    from psycopg import sql

    postgres = request.getfixturevalue("postgres")
    name = urlsplit(str(source.database)).path.lstrip("/")
    copy_name = f"{name}_{secrets.token_hex(4)}"
    with postgres.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(copy_name), sql.Identifier(name)))
    return use_database(root, postgres.url(copy_name))


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """The repository's newsletter.yaml, issues/, templates/ and subscribers/ in a temp folder.

    When the test asks for ``engine`` too and it is "postgresql", the project's state
    database is a new PostgreSQL database (``database:`` in its newsletter.yaml).
    """
    url = None
    if "engine" in request.fixturenames and request.getfixturevalue("engine") == "postgresql":
        url = request.getfixturevalue("pg_url")
    return make_project(tmp_path / "project", url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread
    while it is open, and tests in other modules call asyncio.run().
    """
    require_tool(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (tests/pg_server.py), on 127.0.0.1.

    NEWSLETTER_DATABASE_PASSWORD holds its password while the session runs (the URLs carry
    none), and is restored afterwards.
    """
    from pg_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing_tool("PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/pg_ctl "
                     "(.ci/run installs it)")
    server = PostgresServer.start(bin_dir)
    previous = os.environ.get("NEWSLETTER_DATABASE_PASSWORD")
    os.environ["NEWSLETTER_DATABASE_PASSWORD"] = server.password
    try:
        yield server
    finally:
        if previous is None:
            os.environ.pop("NEWSLETTER_DATABASE_PASSWORD", None)
        else:
            os.environ["NEWSLETTER_DATABASE_PASSWORD"] = previous
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server (no password in it)."""
    return postgres.create_database()
