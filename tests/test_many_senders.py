"""Several senders on one send (PostgreSQL): three `newsletter send` processes share an
issue, two are killed with SIGKILL at random moments, the third finishes the send.

Afterwards the SMTP server and the ledger agree: everybody got the issue, nobody was
skipped, a message arrived twice only when its row was in flight at a kill (and then with
the same Message-ID), and the shared limit held in every one-second window.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from email.parser import BytesHeaderParser
from pathlib import Path

from conftest import Project, make_project
from smtp_servers import SmtpServer

from newsletter.members import database as db

ISSUE = "issues/2017-02-news.yaml"
MEMBERS = 240
PER_SECOND = 30
LEASE = "2"


def prepared(tmp_path: Path, url: str) -> Project:
    project = make_project(tmp_path / "project", url)
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(
        r"limits:.*?\n(?=\S)",
        f"limits:\n  per_second: {PER_SECOND}\n  per_minute: 0\n  per_day: 0\n"
        "  concurrency: 2\n", text, flags=re.S))
    project.write("subscribers/many.csv", "email,name,consent_source\n" + "".join(
        f"m{n:04d}@example.org,Member {n},form\n" for n in range(MEMBERS)))
    result = project.run("subscribers", "import", "subscribers/many.csv", "--list", "news")
    assert result.code == 0, result.err
    return project


def start_sender(project: Project, server: SmtpServer, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEWSLETTER_SECRET": "test-secret-0123456789abcdef",
           "SOURCE_DATE_EPOCH": "1480896000", "NEWSLETTER_SMTP_HOST": "127.0.0.1",
           "NEWSLETTER_SMTP_PORT": str(server.port), "NEWSLETTER_SMTP_TLS": "none",
           "NEWSLETTER_SMTP_USER": "", "NEWSLETTER_SEND_LEASE": LEASE}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "newsletter", "send", ISSUE,
                                 "--list", "news", "--yes"], cwd=project.root, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def test_three_senders_two_killed_lose_nobody_and_keep_the_limits(
        tmp_path: Path, pg_url: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    project = prepared(tmp_path, pg_url)
    with SmtpServer() as server:
        t0 = time.monotonic()
        senders = [start_sender(project, server, tmp_path / f"sender{n}.log") for n in range(3)]
        victims = rng.sample(senders, 2)
        # The send takes MEMBERS / PER_SECOND = 8 s; the kills fall inside it.
        for victim, moment in zip(victims, sorted(rng.uniform(2.0, 6.5) for _ in victims),
                                  strict=True):
            time.sleep(max(0.0, moment - (time.monotonic() - t0)))
            victim.send_signal(signal.SIGKILL)
        survivor = next(s for s in senders if s not in victims)
        assert survivor.wait(timeout=180) == 0, \
            f"seed {seed}: " + (tmp_path / f"sender{senders.index(survivor)}.log").read_text()
        for victim in victims:
            victim.wait(timeout=10)
        received = list(server.accepted)

    conn = db.connect(pg_url)
    try:
        rows = conn.execute("SELECT address, state, message_id, resent_after_crash, "
                            "last_attempt_at FROM deliveries").fetchall()
        permits = [float(r[0]) for r in conn.execute(
            "SELECT at FROM send_permits ORDER BY at")]
        left = conn.execute("SELECT count(*) FROM senders").fetchone()[0]
    finally:
        conn.close()

    # nobody skipped: every member's row is sent, and the server has each of them
    assert len(rows) == MEMBERS
    assert {r[1] for r in rows} == {"sent"}, f"seed {seed}"
    got: dict[str, list[str]] = defaultdict(list)
    parser = BytesHeaderParser()
    for message in received:
        (address,) = message.rcpt_to
        got[address].append(str(parser.parsebytes(message.data)["Message-ID"]))
    assert set(got) == {r[0] for r in rows}
    # a repeat only where a killed sender had the message in flight, with the same id
    by_address = {r[0]: r for r in rows}
    for address, ids in got.items():
        row = by_address[address]
        assert set(ids) == {row[2]}, f"seed {seed}: {address} got another Message-ID"
        if len(ids) > 1:
            assert row[3] > 0, f"seed {seed}: {address} repeated without a crash"
    assert sum(len(ids) for ids in got.values()) <= len(permits)
    # the limit held for all three together, in every one-second window
    assert len(permits) >= MEMBERS
    for first, later in zip(permits, permits[PER_SECOND:], strict=False):
        assert later - first >= 1.0, f"seed {seed}: {PER_SECOND + 1} starts within 1 s"
    starts = sorted(float(r[4]) for r in rows)
    for first, later in zip(starts, starts[PER_SECOND:], strict=False):
        assert later - first >= 1.0
    # the survivor left the send; the killed senders' entries are what remains
    assert left <= 2

