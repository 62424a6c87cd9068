"""Send-stage benchmarks, each figure beside its baseline, measured in the same run.

    .venv/bin/python benchmarks/send.py              # assembly, 10,000-recipient sends, DKIM
    .venv/bin/python benchmarks/send.py --memory     # also peak memory for 100,000

1. Per-recipient assembly of a ~50 KB message: personalize.assemble (target <= 100 µs)
   against building an EmailMessage per recipient (what most senders do).
2. `newsletter send` to 10,000 recipients over 4 loopback connections, limits off, ledger
   on (synchronous=NORMAL, the default, and FULL), against a bare aiosmtplib loop pushing
   one pre-built message (``sendmail``) over as many connections to the same kind of sink.
   The sink is a minimal one in its own process: Postfix's smtp-sink (Debian's postfix;
   `make system` installs it), else tests/smtp_servers.py in a subprocess, with a note (under
   CI=true a missing smtp-sink fails). Throughput is counted at the sink, first to last
   message, so start-up is reported separately; each side's best of --rounds. Targets:
   >= 1,000 msg/s, and faster than the bare loop.
3. DKIM: per-message signing of the ~50 KB message (RSA through OpenSSL) against dkimpy's
   own `dkim.sign` (pure-Python RSA); target <= 1.5 ms. And a signed send against the
   unsigned one, same sink.
4. Peak memory (maxrss of the `newsletter send` process) for 10,000 and, with --memory,
   100,000 recipients. Target: flat, <= 150 MB.
5. The same send with the ledger on PostgreSQL (Debian's, started in a temp folder as in
   the tests): one sender, then three `newsletter send` processes sharing the send, each
   against the SQLite sender and the bare loop of this run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from msgspec.structs import replace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from newsletter.email.personalize import assemble, prepare  # noqa: E402
from newsletter.email.render import render_issue  # noqa: E402
from newsletter.input.config import load_network  # noqa: E402
from newsletter.input.issues import load_issue  # noqa: E402
from newsletter.model import Recipient, RenderedIssue  # noqa: E402

ISSUE = "issues/2017-02-news.yaml"
CONNECTIONS = 4
PYTHON = sys.executable


def recipient(i: int) -> Recipient:
    url = f"https://news.wmasn.example.org/unsubscribe/{'t' * 60}{i:06d}"
    return Recipient(address=f"member{i:06d}@example.org", greeting=f"Hello Member {i}",
                     unsubscribe_url=url,
                     list_unsubscribe=f"<{url}>, <mailto:unsubscribe@wmasn.example.org>",
                     list_unsubscribe_post="List-Unsubscribe=One-Click",
                     message_id=f"<2017-02-news.{i:032x}@wmasn.example.org>")


# --------------------------------------------------------------------------- 1. assembly


def fifty_kb(rendered: RenderedIssue) -> RenderedIssue:
    """The sample issue, its HTML padded with more paragraphs to make a ~50 KB message."""
    html = rendered.html
    filler = "<p style=\"margin:0 0 12px\">More news from the network. " * 6 + "</p>\n"
    while len(html.encode()) + len(rendered.text.encode()) < 48_000:
        html = html.replace("</body>", filler + "</body>", 1)
    return replace(rendered, html=html)


def email_message(rendered: RenderedIssue, r: Recipient, date: dt.datetime) -> bytes:
    """The baseline: what a sender typically does per recipient."""
    from email.policy import SMTP
    from email.utils import format_datetime

    m = EmailMessage(policy=SMTP)
    m["From"] = "WMASN Network News <news@wmasn.example.org>"
    m["To"] = r.address
    m["Subject"] = rendered.subject
    m["Date"] = format_datetime(date)
    m["Message-ID"] = r.message_id
    m["List-Id"] = "WMASN Network News <news.wmasn.example.org>"
    m["List-Unsubscribe"] = r.list_unsubscribe
    m["List-Unsubscribe-Post"] = r.list_unsubscribe_post
    m.set_content(rendered.text.replace("__NL_GREETING__", r.greeting)
                  .replace("__NL_UNSUBSCRIBE_URL__", r.unsubscribe_url), cte="quoted-printable")
    m.add_alternative(rendered.html.replace("__NL_GREETING__", r.greeting)
                      .replace("__NL_UNSUBSCRIBE_URL__", r.unsubscribe_url), subtype="html",
                      cte="quoted-printable")
    return m.as_bytes()


def bench_assembly() -> None:
    network = load_network(REPO / "newsletter.yaml")
    rendered = fifty_kb(render_issue(load_issue(REPO / ISSUE, network), network))
    prepared = prepare(rendered, network)
    date = dt.datetime(2017, 2, 6, 9, 0, tzinfo=dt.UTC)
    size = len(assemble(prepared, recipient(0), date))
    n = 5000
    start = time.perf_counter()
    for i in range(n):
        assemble(prepared, recipient(i), date)
    ours = (time.perf_counter() - start) / n
    m = 300
    start = time.perf_counter()
    for i in range(m):
        email_message(rendered, recipient(i), date)
    baseline = (time.perf_counter() - start) / m
    print(f"1. assembly of a {size / 1024:.0f} KB message: {ours * 1e6:.0f} µs per recipient "
          f"(target <= 100 µs); baseline EmailMessage per recipient: {baseline * 1e6:.0f} µs "
          f"({baseline / ours:.0f}x slower)")


# --------------------------------------------------------------------------- the sinks

SINK_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from smtp_servers import SmtpServer
with SmtpServer(keep=False) as sink:
    print(sink.port, flush=True)
    sys.stdin.read()  # until the benchmark closes it
    print(sink.count, sink.first_at, sink.last_at, flush=True)
"""


def smtp_sink_path() -> str | None:
    return shutil.which("smtp-sink") or next(
        (p for p in ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink") if os.access(p, os.X_OK)), None)


class Sink:
    """A minimal SMTP sink in its own process; counts messages and times first to last."""

    name = ""

    def __init__(self) -> None:
        self.port = 0

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def result(self) -> tuple[int, float]:
        """(messages received, seconds from the first to the last)."""
        raise NotImplementedError


class PostfixSink(Sink):
    """Postfix's smtp-sink (C, one process); -c prints a counter per message, read here."""

    name = "Postfix smtp-sink"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        self.proc = subprocess.Popen([path, "-c", *user, f"127.0.0.1:{self.port}", "256"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count, self.first_at, self.last_at = 0, 0.0, 0.0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for_port(self.port, self.proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        pending = b""
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            now = time.monotonic()
            *records, pending = (pending + chunk).split(b"\r")
            for record in reversed(records):  # "sess=1 quit=0 mesg=42"
                found = re.search(rb"mesg=(\d+)", record)
                if found:
                    count = int(found.group(1))
                    if count and not self.count:
                        self.first_at = now
                    if count != self.count:
                        self.count, self.last_at = count, now
                    break

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.reader.join(5)

    def result(self) -> tuple[int, float]:
        time.sleep(0.2)  # the last counter line
        return self.count, self.last_at - self.first_at


class PythonSink(Sink):
    """tests/smtp_servers.py's server, alone in a subprocess."""

    name = "tests/smtp_servers.py in its own process"

    def __init__(self) -> None:
        super().__init__()
        self.proc = subprocess.Popen([PYTHON, "-c", SINK_SCRIPT, str(REPO / "tests")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.counted: tuple[int, float] | None = None

    def result(self) -> tuple[int, float]:
        if self.counted is None:
            out, _ = self.proc.communicate("", timeout=60)
            count, first, last = out.split()
            self.counted = int(count), float(last) - float(first)
        return self.counted

    def close(self) -> None:
        if self.proc.poll() is None:
            self.result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"smtp-sink exited at once (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("smtp-sink did not start listening")


def choose_sink(choice: str) -> tuple[str, str]:
    """(smtp-sink's path, or "" for the Python sink; a note when smtp-sink is missing)."""
    if choice == "python":
        return "", ""
    path = smtp_sink_path()
    if path is not None:
        return path, ""
    if os.environ.get("CI") == "true":
        raise SystemExit("smtp-sink is not installed (Debian's postfix; `make system` installs "
                         "it): under CI the send benchmark must run against it")
    return "", ("   note: smtp-sink is not installed (Debian's postfix; `make system` installs "
                "it), so the sink is tests/smtp_servers.py in its own process, itself near "
                "the rates measured here")


def open_sink(path: str) -> Sink:
    return PostfixSink(path) if path else PythonSink()


# --------------------------------------------------------------------------- 2, 3, 4. sending

BARE_LOOP = r"""
import asyncio, sys, time
import aiosmtplib
port, n, connections, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(path, "rb").read()

async def worker(share):
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60,
                           local_hostname="wmasn.example.org")
    await smtp.connect()
    for i in range(share):
        await smtp.sendmail("news@wmasn.example.org", [f"member{i:06d}@example.org"], data)
    await smtp.quit()

async def main():
    shares = [n // connections + (i < n % connections) for i in range(connections)]
    await asyncio.gather(*(worker(s) for s in shares))

asyncio.run(main())
"""


def project(n: int) -> Path:
    """A temp copy of the sample project with n members and limits off."""
    root = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    for folder in ("issues", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    text = (root / "newsletter.yaml").read_text(encoding="utf-8")
    text = re.sub(r"limits:.*?\n(?=\S)", f"limits:\n  per_minute: 0\n  per_day: 0\n"
                  f"  concurrency: {CONNECTIONS}\n", text, flags=re.S)
    (root / "newsletter.yaml").write_text(text, encoding="utf-8")
    rows = ["email,name,organisation,consent_source"]
    rows += [f"member{i:06d}@example.org,Member {i},Org {i % 50},benchmark" for i in range(n)]
    (root / "members.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run(root, "subscribers", "import", "members.csv", "--list", "members")
    return root


def environment(port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "NEWSLETTER_SECRET": "benchmark-secret-0123456789",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(port),
            "NEWSLETTER_SMTP_TLS": "none", "NEWSLETTER_SMTP_USER": "", **extra}


def run(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run the CLI; (wall seconds, peak RSS in MB of that process)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([PYTHON, "-m", "newsletter", *args], cwd=root,
                                env=env or environment(1), stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"newsletter {' '.join(args)} failed:\n{err.read().decode()}")
    return elapsed, usage.ru_maxrss // 1024


def timed_send(root: Path, n: int, sink_path: str, **extra: str) -> tuple[float, float, int]:
    """(msg/s at the sink, wall seconds, peak MB) for one full send of the issue."""
    for stale in root.glob("newsletter.db*"):
        stale.unlink()
    use_database(root, None)
    run(root, "subscribers", "import", "members.csv", "--list", "members")
    with open_sink(sink_path) as sink:
        wall, peak = run(root, "send", ISSUE, "--list", "members", "--yes",
                         env=environment(sink.port, **extra))
        count, seconds = sink.result()
    assert count == n, (count, n)
    return rate(n, seconds), wall, peak


def use_database(root: Path, url: str | None) -> None:
    """Point the project at a PostgreSQL database (None: back to newsletter.db)."""
    config = root / "newsletter.yaml"
    text = re.sub(r"^database:.*\n", "", config.read_text(encoding="utf-8"), flags=re.M)
    config.write_text(text + (f"database: {url}\n" if url else "database: newsletter.db\n"),
                      encoding="utf-8")


def postgresql_sends(root: Path, n: int, sink_path: str, senders: int) -> float:
    """msg/s at the sink for a send on a fresh PostgreSQL database by ``senders`` processes."""
    from pg_server import PostgresServer

    server = PostgresServer.start()
    try:
        env = {**environment(1), "NEWSLETTER_DATABASE_PASSWORD": server.password}
        use_database(root, server.create_database())
        run(root, "subscribers", "import", "members.csv", "--list", "members", env=env)
        with open_sink(sink_path) as sink:
            env = {**environment(sink.port), "NEWSLETTER_DATABASE_PASSWORD": server.password}
            procs = [subprocess.Popen([PYTHON, "-m", "newsletter", "send", ISSUE, "--list",
                                       "members", "--yes"], cwd=root, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for _ in range(senders)]
            if any(p.wait() != 0 for p in procs):
                raise SystemExit("a PostgreSQL sender failed")
            count, seconds = sink.result()
        assert count == n, (count, n)
        return rate(n, seconds)
    finally:
        use_database(root, None)
        server.stop()


def bare_loop(root: Path, n: int, sink_path: str) -> float:
    """msg/s at the sink for the bare aiosmtplib loop sending the same message."""
    sample = next((root / "sample").glob("*.eml"))
    script = root / "bare.py"
    script.write_text(BARE_LOOP, encoding="utf-8")
    with open_sink(sink_path) as sink:
        subprocess.run([PYTHON, str(script), str(sink.port), str(n), str(CONNECTIONS),
                        str(sample)], check=True)
        count, seconds = sink.result()
    assert count == n, (count, n)
    return rate(n, seconds)


def rate(n: int, seconds: float) -> float:
    """Messages per second between the first and the last (n - 1 intervals)."""
    return (n - 1) / seconds if n > 1 and seconds > 0 else float("nan")


def rsa_key(folder: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def bench_send(n: int, rounds: int, sink_choice: str) -> None:
    sink_path, note = choose_sink(sink_choice)
    root = project(n)
    try:
        run(root, "send", ISSUE, "--list", "members", "--dry-run", "sample")
        size = next((root / "sample").glob("*.eml")).stat().st_size
        bare: list[float] = []
        ours: list[float] = []
        walls: list[float] = []
        peak = 0
        for _ in range(rounds):  # alternated, so drift on a noisy machine hits both
            bare.append(bare_loop(root, n, sink_path))
            speed, wall, peak = timed_send(root, n, sink_path)
            ours.append(speed)
            walls.append(wall)
        full, full_wall, _ = timed_send(root, n, sink_path, NEWSLETTER_LEDGER_SYNC="FULL")
        key = rsa_key(root)
        signed, signed_wall, _ = timed_send(root, n, sink_path, NEWSLETTER_DKIM_KEY=str(key),
                                            NEWSLETTER_DKIM_SELECTOR="bench")
        best_bare, best = max(bare), max(ours)
        sink_name = PostfixSink.name if sink_path else PythonSink.name
        print(f"2. send of a {size / 1024:.0f} KB message to {n:,} over {CONNECTIONS} loopback "
              f"connections, limits off, sink: {sink_name} (best of {rounds}):")
        if note:
            print(note)
        print(f"   bare aiosmtplib loop (sendmail, same bytes, same sink): {best_bare:,.0f} msg/s "
              f"({', '.join(f'{x:,.0f}' for x in bare)})")
        print(f"   newsletter send, SQLite ledger (synchronous=NORMAL): {best:,.0f} msg/s "
              f"({', '.join(f'{x:,.0f}' for x in ours)}); ratio to the bare loop "
              f"{best / best_bare:.2f} (targets: >= 1,000 msg/s and > 1.00); whole command "
              f"{min(walls):.1f} s")
        print(f"   newsletter send, ledger synchronous=FULL: {full:,.0f} msg/s, ratio "
              f"{full / best_bare:.2f}; whole command {full_wall:.1f} s")
        print(f"3. DKIM-signed send, same sink: {signed:,.0f} msg/s against {best:,.0f} unsigned "
              f"(ratio {signed / best:.2f}); whole command {signed_wall:.1f} s")
        bench_signing(key)
        print(f"4. peak memory of `newsletter send` to {n:,}: {peak} MB")
        one = postgresql_sends(root, n, sink_path, 1)
        three = postgresql_sends(root, n, sink_path, 3)
        print(f"5. the same send with the ledger on PostgreSQL: one sender {one:,.0f} msg/s "
              f"(ratio {one / best:.2f} to SQLite, {one / best_bare:.2f} to the bare loop); "
              f"three senders sharing it {three:,.0f} msg/s (ratio {three / best:.2f} to "
              f"SQLite, {three / best_bare:.2f} to the bare loop)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_signing(key: Path) -> None:
    """Per-message signing of the ~50 KB message: ours (OpenSSL) against dkimpy's dkim.sign."""
    import dkim

    from newsletter.delivery.dkim import SIGNED_HEADERS, Signer

    network = load_network(REPO / "newsletter.yaml")
    rendered = fifty_kb(render_issue(load_issue(REPO / ISSUE, network), network))
    message = assemble(prepare(rendered, network), recipient(0),
                       dt.datetime(2017, 2, 6, 9, 0, tzinfo=dt.UTC))
    pem = key.read_bytes()
    signer = Signer("bench", "wmasn.example.org", pem)
    signer.header(message)  # loads the key once, as a send does
    ours, ours_cpu = per_call(lambda: signer.header(message), 300)
    pure, pure_cpu = per_call(lambda: dkim.sign(
        message, b"bench", b"wmasn.example.org", pem, canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(SIGNED_HEADERS), linesep=b"\r\n"), 20)
    print(f"   signing one {len(message) / 1024:.0f} KB message: {ours_cpu * 1e3:.2f} ms of CPU, "
          f"{ours * 1e3:.2f} ms by the clock (target <= 1.5 ms; RSA through OpenSSL); "
          f"dkimpy's dkim.sign: {pure_cpu * 1e3:.1f} ms of CPU, {pure * 1e3:.1f} ms by the "
          f"clock ({pure_cpu / ours_cpu:.0f}x slower)")


def per_call(call: Callable[[], object], n: int) -> tuple[float, float]:
    """(seconds by the clock, seconds of this process's CPU) per call: the CPU time is
    what the work costs when other processes share the cores."""
    clock, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    return (time.perf_counter() - clock) / n, (time.process_time() - cpu) / n


def bench_memory(n: int, sink_choice: str) -> None:
    sink_path, _ = choose_sink(sink_choice)
    root = project(n)
    try:
        speed, wall, peak = timed_send(root, n, sink_path)
        print(f"4. peak memory of `newsletter send` to {n:,}: {peak} MB (target <= 150 MB); "
              f"{speed:,.0f} msg/s, whole command {wall:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="recipients for the send runs")
    parser.add_argument("--rounds", type=int, default=2,
                        help="bare loop and our send, alternated this many times (best kept)")
    parser.add_argument("--sink", choices=("postfix", "python"), default="postfix",
                        help="postfix: smtp-sink when installed (the default); python: ours")
    parser.add_argument("--memory", action="store_true", help="also send to 100,000")
    args = parser.parse_args()
    bench_assembly()
    bench_send(args.n, max(1, args.rounds), args.sink)
    if args.memory:
        bench_memory(100_000, args.sink)


if __name__ == "__main__":
    main()
