"""Benchmark: the unsubscribe endpoint's throughput with one client and with 20,000.

    .venv/bin/python benchmarks/serve.py [REQUESTS [CLIENTS]]

The server is the one ``newsletter serve`` runs (newsletter.web.server.run: uvicorn on
127.0.0.1, in a child process, the sample project's settings and templates in a temp
folder), at its default limits except the rate limit, raised so that no request is
refused: every request is GET /unsubscribe/<garbage>, answered by the same "link not
recognised" page. The client is named by X-Forwarded-For (the server trusts it from
127.0.0.1, as behind a reverse proxy). After a warm-up, over 8 keep-alive connections,
3 rounds of: REQUESTS from one address, then one request from each of CLIENTS new
addresses (all within one rate window: the limiter's table fills, then each request also
forgets the oldest client). Best of the 3 rounds each.
Target: many clients within 10% of one (ratio >= 0.9): the limiter's work per request
does not grow with the number of clients. (The limiter this replaced rebuilt its whole
table on every request once it held 10,000 clients.)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONNECTIONS = 8
ROUNDS = 3
_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


def serve(config: str, site: str, port: str) -> None:
    """The child process: the server, every limit at its default but the rate."""
    from newsletter.input.config import load_network
    from newsletter.members.tokens import Secrets
    from newsletter.web import server

    server.run(load_network(Path(config)), Path(site), Secrets("benchmark-secret-0123456789"),
               host="127.0.0.1", port=int(port), limits=server.Limits(rate_limit=10**9))


async def hammer(port: int, addresses: list[str], requests: int) -> float:
    """Requests per second for ``requests`` requests, each from the next address."""
    numbers = iter(range(requests))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in numbers:  # shared: each connection takes the next request
            writer.write(f"GET /unsubscribe/garbage HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"X-Forwarded-For: {addresses[n % len(addresses)]}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            if not head.startswith(b"HTTP/1.1 400") or length is None:
                raise AssertionError(f"unexpected answer: {head[:200]!r}")
            await reader.readexactly(int(length.group(1)))
        writer.close()
        await writer.wait_closed()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return requests / (time.perf_counter() - began)


def wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def main(requests: int, clients: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
        shutil.copytree(REPO / "templates", root / "templates")
        (root / "site").mkdir()
        (root / "site" / "index.html").write_text("<!DOCTYPE html><title>Archive</title>")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = root / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(root / "newsletter.yaml"),
                 str(root / "site"), str(port)], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(port, process, log)
            asyncio.run(hammer(port, ["192.0.2.2"], min(requests, 1000)))  # warm-up
            one_rates, many_rates = [], []
            for run in range(ROUNDS):
                one_rates.append(asyncio.run(hammer(port, ["192.0.2.1"], requests)))
                fresh = [f"2001:db8:{run}::{i:x}" for i in range(clients)]
                many_rates.append(asyncio.run(hammer(port, fresh, clients)))
        finally:
            process.terminate()
            process.wait(timeout=10)
    one, many = max(one_rates), max(many_rates)
    ratio = many / one
    print(f"one client:        {one:,.0f} requests/s ({requests:,} requests, best of {ROUNDS})")
    print(f"{f'{clients:,} clients:':<19}{many:,.0f} requests/s (one request each, best of "
          f"{ROUNDS} rounds of new clients)")
    print(f"ratio:             {ratio:.2f} ({clients:,} clients / one client; target >= 0.9)")
    return ratio


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(*sys.argv[2:5])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000,
             int(sys.argv[2]) if len(sys.argv) > 2 else 20_000)
