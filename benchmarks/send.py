"""Send-stage benchmarks, each figure beside its baseline, measured in the same run.

    .venv/bin/python benchmarks/send.py              # assembly, 10,000-recipient send
    .venv/bin/python benchmarks/send.py --memory     # also peak memory for 100,000

1. Per-recipient assembly of a ~50 KB message: personalize.assemble (target <= 100 µs)
   against building an EmailMessage per recipient (what most senders do).
2. `newsletter send` to 10,000 recipients over loopback, limits off, against a bare
   aiosmtplib loop pushing one pre-built message over the same number of connections to
   the same sink (tests/smtp_servers.py, in this process). Throughput is measured at the
   sink (first to last message), so start-up is reported separately. Target ratio >= 0.7.
   Run with the ledger at synchronous=NORMAL (the default, see delivery.py) and FULL.
3. Peak memory (maxrss of the `newsletter send` process) for 10,000 and, with --memory,
   100,000 recipients. Target: flat, <= 150 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from msgspec.structs import replace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from smtp_servers import SmtpServer  # noqa: E402

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


# --------------------------------------------------------------------------- 2, 3. sending

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


def timed_send(root: Path, n: int, **extra: str) -> tuple[float, float, int]:
    """(sink seconds first to last, wall seconds, peak MB) for one full send of the issue."""
    for stale in root.glob("newsletter.db*"):
        stale.unlink()
    run(root, "subscribers", "import", "members.csv", "--list", "members")
    with SmtpServer(keep=False) as sink:
        wall, peak = run(root, "send", ISSUE, "--list", "members", "--yes",
                         env=environment(sink.port, **extra))
        assert sink.count == n, (sink.count, n)
        return sink.last_at - sink.first_at, wall, peak


def bare_loop(root: Path, n: int) -> float:
    run(root, "send", ISSUE, "--list", "members", "--dry-run", "sample")
    sample = next((root / "sample").glob("*.eml"))
    script = root / "bare.py"
    script.write_text(BARE_LOOP, encoding="utf-8")
    with SmtpServer(keep=False) as sink:
        subprocess.run([PYTHON, str(script), str(sink.port), str(n), str(CONNECTIONS),
                        str(sample)], check=True)
        assert sink.count == n
        return sink.last_at - sink.first_at


def bench_send(n: int) -> None:
    root = project(n)
    try:
        bare = bare_loop(root, n)
        normal, wall, peak = timed_send(root, n)
        full, full_wall, _ = timed_send(root, n, NEWSLETTER_LEDGER_SYNC="FULL")
        print(f"2. send to {n:,} over {CONNECTIONS} loopback connections, limits off:")
        print(f"   bare aiosmtplib loop (same bytes, same sink): {n / bare:,.0f} msg/s")
        print(f"   newsletter send, ledger NORMAL: {n / normal:,.0f} msg/s, ratio "
              f"{bare / normal:.2f} (target >= 0.7); whole command {wall:.1f} s")
        print(f"   newsletter send, ledger FULL:   {n / full:,.0f} msg/s, ratio "
              f"{bare / full:.2f}; whole command {full_wall:.1f} s")
        print(f"3. peak memory of `newsletter send` to {n:,}: {peak} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_memory(n: int) -> None:
    root = project(n)
    try:
        seconds, wall, peak = timed_send(root, n)
        print(f"3. peak memory of `newsletter send` to {n:,}: {peak} MB (target <= 150 MB); "
              f"{n / seconds:,.0f} msg/s, whole command {wall:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="recipients for the send run")
    parser.add_argument("--memory", action="store_true", help="also send to 100,000")
    args = parser.parse_args()
    bench_assembly()
    bench_send(args.n)
    if args.memory:
        bench_memory(100_000)


if __name__ == "__main__":
    main()
