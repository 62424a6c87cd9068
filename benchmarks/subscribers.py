"""Benchmark: importing 100,000 members, beside a bare executemany of the same rows.

    .venv/bin/python benchmarks/subscribers.py [ROWS [REPEATS]]

Both runs use a fresh state database with the same schema, opened the same way (WAL,
synchronous=FULL), in one transaction each. The import is the whole path a user runs:
read and decode the CSV, validate and normalise every address, merge duplicates, check
the suppression list and write members, memberships and consent evidence. The baseline
only inserts rows that are already clean. Target: the import within 3x of the baseline.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

from newsletter.members import csvfiles as subscribers
from newsletter.members import database as db
from newsletter.members import store as members

NOW = "2026-01-01T00:00:00Z"


def generate(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(["email", "name", "organisation", "consent_source", "consent_date",
                         "consent_basis"])
        for i in range(rows):
            writer.writerow([f"Member.{i}@Partner{i % 97}.example.org", f"Member {i}",
                             f"Organisation {i % 500}", "network sign-up form", "2016-12-05",
                             "consent"])


def bare(folder: Path, rows: list[tuple[str, str, str]], run: int) -> float:
    conn = db.connect(folder / f"bare-{run}.db")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO lists (name, created_at) VALUES ('news', ?)", (NOW,))
    conn.executemany(
        "INSERT INTO subscribers (email, email_hash, name, organisation, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        ((email, email, name, organisation, NOW) for email, name, organisation in rows))
    conn.executemany(
        "INSERT INTO memberships (subscriber_id, list_id, status, changed_at) "
        "VALUES (?, 1, 'subscribed', ?)", ((i, NOW) for i in range(1, len(rows) + 1)))
    conn.executemany(
        "INSERT INTO consent (subscriber_id, list_id, source, date, basis, recorded_at) "
        "VALUES (?, 1, 'network sign-up form', '2016-12-05', 'consent', ?)",
        ((i, NOW) for i in range(1, len(rows) + 1)))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def full_import(folder: Path, csv_path: Path, run: int) -> tuple[float, int]:
    conn = db.connect(folder / f"import-{run}.db")
    start = time.perf_counter()
    parsed = subscribers.read_csv(csv_path, consent=None)
    result = members.import_rows(conn, "news", parsed.rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, result.new


def main(rows: int, repeats: int) -> float:
    """Alternate the two runs ``repeats`` times and compare the best of each (less noise)."""
    baselines, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv_path = folder / "members.csv"
        generate(csv_path, rows)
        clean = [(f"member.{i}@partner{i % 97}.example.org", f"Member {i}",
                  f"Organisation {i % 500}") for i in range(rows)]
        for run in range(repeats):
            baselines.append(bare(folder, clean, run))
            elapsed, added = full_import(folder, csv_path, run)
            assert added == rows, f"imported {added} of {rows}"
            ours.append(elapsed)
    ratio = min(ours) / min(baselines)
    print(f"rows:                  {rows:,} (best of {repeats} runs each)")
    print(f"bare executemany:      {min(baselines):.3f} s")
    print(f"newsletter import:     {min(ours):.3f} s  (CSV parse + validate + suppression check)")
    print(f"ratio:                 {ratio:.2f}x (target: within 3x)")
    return ratio


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
