"""The `postgres` and `pg_url` fixtures: a real PostgreSQL server started by the tests."""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlsplit

import psycopg
import pytest
from pg_server import SUPERUSER, PostgresServer


def test_the_server_listens_on_127_0_0_1_only(postgres: PostgresServer) -> None:
    with postgres.connect() as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
    assert listen == ("127.0.0.1",)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", postgres.port)) == 0
    # not on the machine's other addresses (when it has one)
    for address in _other_addresses():
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, postgres.port)) != 0, address


def _other_addresses() -> set[str]:
    addresses = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        addresses.add(str(udp.getsockname()[0]))
    with contextlib.suppress(OSError):
        addresses |= {str(info[4][0]) for info in socket.getaddrinfo(
            socket.gethostname(), None, socket.AF_INET)}
    return {a for a in addresses if not a.startswith("127.")}

def test_a_password_is_required(postgres: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        postgres.connect(password="wrong-" + postgres.password)
    with pytest.raises(psycopg.OperationalError):
        postgres.connect(password="")
    assert os.environ["NEWSLETTER_DATABASE_PASSWORD"] == postgres.password


def test_the_url_carries_no_password(pg_url: str, postgres: PostgresServer) -> None:
    parts = urlsplit(pg_url)
    assert parts.scheme == "postgresql"
    assert (parts.username, parts.password) == (SUPERUSER, None)
    assert (parts.hostname, parts.port) == ("127.0.0.1", postgres.port)
    assert postgres.password not in pg_url
    with psycopg.connect(pg_url, password=os.environ["NEWSLETTER_DATABASE_PASSWORD"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (SUPERUSER,)


@pytest.fixture
def second_pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()


def test_each_pg_url_is_a_different_empty_database(pg_url: str, second_pg_url: str) -> None:
    assert pg_url != second_pg_url
    password = os.environ["NEWSLETTER_DATABASE_PASSWORD"]
    with psycopg.connect(pg_url, password=password, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE marker (n int)")
    with psycopg.connect(second_pg_url, password=password) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
