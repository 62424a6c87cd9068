"""The web server for tests: uvicorn on 127.0.0.1 in a child process, answering real HTTP.

    start(project, *args)           the real CLI: ``newsletter serve --port N *args``
    start_app(project, limits)      the same app and server with other Limits (a short
                                    rate window, a short wait for a locked database): this
                                    file, run as a script, calls newsletter.web.server.run
    with_members(project)           the sample members imported into list "news", and a
                                    two-page archive in site/

Everything the server logs is collected as it comes (a full pipe would stop the server);
``stop()`` returns it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import Project, free_port

from newsletter.members.tokens import Secrets, make_token
from newsletter.web.server import Limits

SECRET = "serve-test-secret-0123456789"


@dataclass
class Server:
    url: str
    project: Project
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def token(self, email: str, list_name: str = "news", secret: str = SECRET) -> str:
        uid = self.query("SELECT uid FROM subscribers WHERE email = ?", email)[0][0]
        return make_token(Secrets(secret), str(uid), list_name)

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.project.root / "newsletter.db") as conn:
            return conn.execute(sql, params).fetchall()

    def status(self, email: str, list_name: str = "news") -> str:
        rows = self.query("SELECT m.status FROM memberships m JOIN subscribers s ON "
                          "s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id "
                          "WHERE s.email = ? AND l.name = ?", email, list_name)
        return str(rows[0][0])

    def snapshot(self) -> list[str]:
        with sqlite3.connect(self.project.root / "newsletter.db") as conn:
            return list(conn.iterdump())

    def log(self) -> str:
        """What the server has logged so far."""
        return "".join(self.output)

    def stop(self) -> str:
        """Stop the server; return everything it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)
        return self.log()


def _launch(project: Project, command: list[str], env: dict[str, str] | None, port: int
            ) -> Server:
    full_env = {**os.environ, "NEWSLETTER_SECRET": SECRET, **(env or {})}
    process = subprocess.Popen(command, cwd=project.root, env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    server = Server(f"http://127.0.0.1:{port}", project, process)
    assert process.stdout is not None
    stream = process.stdout
    server.reader = threading.Thread(target=lambda: server.output.extend(iter(stream.readline,
                                                                              "")),
                                     daemon=True)
    server.reader.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {server.stop()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server did not start")


def start(project: Project, *args: str, env: dict[str, str] | None = None) -> Server:
    """``newsletter serve`` in the project, as a user starts it."""
    port = free_port()
    return _launch(project, [sys.executable, "-m", "newsletter", "serve", "--port", str(port),
                             *args], env, port)


def start_app(project: Project, limits: Limits, site: str = "site") -> Server:
    """The server ``newsletter serve`` runs, with other limits."""
    import msgspec

    port = free_port()
    return _launch(project, [sys.executable, __file__, str(project.config), site, str(port),
                             msgspec.json.encode(limits).decode()], None, port)


def with_members(project: Project) -> Project:
    result = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert result.code == 0, result.err
    project.write("site/index.html", "<!DOCTYPE html><title>Archive</title><h1>Archive</h1>")
    project.write("site/2016-12/index.html", "<!DOCTYPE html><title>December</title>")
    return project


def _main(config: str, site: str, port: str, limits: str) -> None:
    import msgspec

    from newsletter.input.config import load_network
    from newsletter.members.tokens import secrets_from_env
    from newsletter.web import server

    server.run(load_network(Path(config)), Path(site), secrets_from_env(), host="127.0.0.1",
               port=int(port), limits=msgspec.json.decode(limits, type=Limits))


if __name__ == "__main__":
    _main(*sys.argv[1:])
