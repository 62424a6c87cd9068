"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary folder.

``initdb`` creates a cluster whose superuser ``newsletter`` has a random password
(scram-sha-256 over TCP); ``pg_ctl`` starts it on a free port of 127.0.0.1 only, its unix
socket inside the folder, with durability turned off (fsync, synchronous_commit,
full_page_writes) since nothing here needs to survive a crash. PostgreSQL refuses to run
as root: under root the folder belongs to the ``postgres`` system user and the server runs
as that user. ``stop()`` stops it (``-m immediate``) and removes the folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from conftest import free_port
from psycopg import sql

SUPERUSER = "newsletter"
FALLBACK_OS_USER = "newsletter-pg"  # created when the Debian package's `postgres` is missing


def find_bin_dir() -> Path | None:
    """The bin folder of the highest PostgreSQL under /usr/lib/postgresql, or None."""
    found = []
    for pg_ctl in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        version = Path(pg_ctl).parent.parent.name
        key = tuple(int(part) for part in re.findall(r"\d+", version))
        if os.access(pg_ctl, os.X_OK) and key:
            found.append((key, Path(pg_ctl).parent))
    return max(found)[1] if found else None


def _os_user() -> str | None:
    """The unprivileged user to run the server as when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
                   check=True, capture_output=True)
    return FALLBACK_OS_USER


class PostgresServer:
    """One running cluster; use ``PostgresServer.start()`` and ``stop()``."""

    def __init__(self, bin_dir: Path, folder: Path, port: int, password: str,
                 os_user: str | None) -> None:
        self.bin_dir = bin_dir
        self.folder = folder
        self.port = port
        self.password = password
        self.os_user = os_user
        self.host = "127.0.0.1"
        self._databases = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def url(self, dbname: str) -> str:
        """The database's URL, without the password (NEWSLETTER_DATABASE_PASSWORD holds it)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection as the superuser, with the password, autocommit."""
        options: dict[str, Any] = {"host": self.host, "port": self.port, "user": SUPERUSER,
                                   "password": self.password, "dbname": dbname,
                                   "autocommit": True, "connect_timeout": 10, **kwargs}
        return psycopg.connect(**options)

    def create_database(self) -> str:
        """A new, empty database with a unique name; its URL."""
        self._databases += 1
        name = f"test_{self._databases}_{secrets.token_hex(4)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    # -- starting and stopping ------------------------------------------------------------

    def _run(self, *args: str, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.os_user:
            command = ["runuser", "-u", self.os_user, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        for variable in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE",
                         "PGSERVICE", "PGPASSFILE", "PGDATA"):
            env.pop(variable, None)
        # cwd: the unprivileged user must be able to enter it
        return subprocess.run(command, cwd=self.folder, env=env, check=check, timeout=timeout,
                              capture_output=True, text=True)

    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PostgresServer:
        bin_dir = bin_dir or find_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)")
        os_user = _os_user()
        # not under pytest's tmp_path: an unprivileged server must reach its folder
        folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        server = cls(bin_dir, folder, 0, secrets.token_urlsafe(24), os_user)
        try:
            server._init()
            server._start()
        except BaseException:
            server.stop()
            raise
        return server

    def _init(self) -> None:
        self.socket_dir.mkdir()
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.os_user:
            for path in (self.folder, self.socket_dir, pwfile):
                shutil.chown(path, self.os_user)
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                      "--locale=C", "--no-sync", "--no-instructions")
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"initdb failed: {e.stdout}{e.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _start(self) -> None:
        last_error = ""
        for _attempt in range(3):  # another process may take the free port first
            self.port = port = free_port()
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"""
# tests/pg_server.py
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{self.socket_dir}'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
""")
            result = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
                               "-w", "-t", "60", check=False)
            if result.returncode == 0:
                self._wait_ready()
                return
            last_error = result.stdout + result.stderr + self._log_text()
            if "could not bind" not in last_error and "in use" not in last_error:
                break
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            ready = self._run("pg_isready", "-h", self.host, "-p", str(self.port), "-t", "5",
                              check=False)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL is not ready: {ready.stdout}{self._log_text()}")
            time.sleep(0.1)

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (immediate) and remove its folder; safe to call twice."""
        pidfile = self.data / "postmaster.pid"
        try:
            if pidfile.exists():
                pid = int(pidfile.read_text().split()[0])
                try:
                    stopped = self._run("pg_ctl", "stop", "-D", str(self.data), "-m",
                                        "immediate", "-w", check=False, timeout=60)
                    failed = stopped.returncode != 0
                except subprocess.TimeoutExpired:
                    failed = True
                if failed:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

