"""Benchmark: the archive of 200 issues, built in full, then again after editing one.

    .venv/bin/python benchmarks/archive.py [ISSUES]

A temp project gets the repository's newsletter.yaml and templates and ISSUES (default
200) synthetic issues: every block type, Markdown bodies of a few hundred words, contact
people, link lists and a local image in every fifth issue. Three builds run the whole
`newsletter archive` path in this process (load, render through MJML, pages, feed,
search index, privacy gate, swap): a full build into an empty folder, an edit of one
issue in the middle of the archive then a rebuild, and a rebuild with nothing changed.
`pipeline.archive` prints one summary line per build.
Then the same full and incremental builds as a user runs them: the CLI in a subprocess.
Targets: full build under 10 s; incremental under 5% of the full build. The CLI figures
include starting Python and importing the package (~0.4 s) in every run.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from newsletter import pipeline

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "network", "partners", "police", "health", "council", "charity", "survivors", "support",
    "referral", "mechanism", "training", "awareness", "exploitation", "labour", "agency",
    "safeguarding", "victims", "recovery", "housing", "outreach", "report", "commissioner",
    "region", "conference", "evidence", "identification", "practice", "business", "supply",
    "chains", "statement", "transparency", "first", "responders", "helpline", "data",
    "sharing", "community", "volunteers", "funding", "pilot",
)


def png(seed: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    width, height = 120, 80
    raw = b"".join(b"\0" + bytes((seed + x + y) % 256 for x in range(width * 3))
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
        words[rng.randrange(len(words))] = f"**{words[0]}**"
        out.append(" ".join(words).capitalize() + ".")
    return "\n".join(out)


def body(rng: random.Random, sentences: int, indent: str = "      ") -> str:
    return "|\n" + "\n".join(indent + line for line in prose(rng, sentences).splitlines())


def issue(n: int, project: Path, rng: random.Random) -> str:
    day = dt.date(2010, 1, 4) + dt.timedelta(days=14 * n)
    slug = f"{day:%Y-%m-%d}"
    blocks = [
        "  - type: section\n    title: News from the network",
        f"  - type: article\n    title: Partnership update {n}\n    body: {body(rng, 6)}\n"
        f"    link: {{url: 'https://www.wmasn.example.org/news/{n}', text: Read more}}",
        f"  - type: event\n    title: Training day {n}\n    date: {day + dt.timedelta(days=20)}\n"
        f"    location: Council House, Birmingham\n    body: {body(rng, 3)}",
        f"  - type: callout\n    title: Call for evidence\n    body: {body(rng, 2)}",
        "  - type: contact\n    title: Who to call\n    people:\n"
        f"      - {{name: Coordinator {n}, role: Network coordinator,"
        f" phone: '0121 496 0{n % 1000:03d}', email: coordinator@wmasn.example.org}}",
        "  - type: links\n    title: Further reading\n    items:\n"
        + "\n".join(f"      - {{url: 'https://www.gov.uk/guidance/{n}-{i}', text: Guidance {i},"
                    f" note: {rng.choice(WORDS)}}}" for i in range(3)),
        f"  - type: article\n    title: Member spotlight\n    body: {body(rng, 8)}",
    ]
    if n % 5 == 0:
        (project / "issues" / slug).mkdir(parents=True, exist_ok=True)
        (project / "issues" / slug / "photo.png").write_bytes(png(n))
        blocks.append(f"  - type: article\n    title: In pictures\n"
                      f"    image: {{src: {slug}/photo.png, alt: Members at the event {n}}}\n"
                      f"    body: {body(rng, 2)}")
    text = (f"title: Network newsletter {n}\ndate: {day}\nnumber: {n}\n"
            f"preheader: Issue {n} with news, events and reading from the network.\n"
            f"intro: {body(rng, 3, '  ')}\nblocks:\n" + "\n".join(blocks) + "\n")
    (project / "issues" / f"{slug}.yaml").write_text(text, encoding="utf-8")
    return slug


def timed(config: Path, site: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `newsletter archive` run in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline.archive(config, site, no_members=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def cli(project: Path, site: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "newsletter", "archive", "--no-members",
                    "-o", str(site)],
                   cwd=project, check=True, capture_output=True,
                   env={**os.environ, "SOURCE_DATE_EPOCH": "1480896000"})
    return time.perf_counter() - start


def show(label: str, wall: float, cpu: float | None = None) -> None:
    print(f"{label:<44} {wall:7.3f} s wall" + (f" {cpu:7.3f} s CPU" if cpu is not None else ""))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = 5
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        (project / "issues").mkdir(parents=True)
        shutil.copy(REPO / "newsletter.yaml", project / "newsletter.yaml")
        shutil.copytree(REPO / "templates", project / "templates")
        rng = random.Random(2016)
        slugs = [issue(n, project, rng) for n in range(1, count + 1)]
        config, site = project / "newsletter.yaml", project / "site"
        print(f"{count} issues, {sum(p.stat().st_size for p in project.rglob('*.yaml')):,} "
              "bytes of YAML; other jobs on this machine make single runs noisy, so the "
              f"full build is the best of 2 and each rebuild the median of {rounds}")

        fulls = []
        for _ in range(2):
            shutil.rmtree(site, ignore_errors=True)
            fulls.append(timed(config, site))
        full = min(fulls)
        show("full build (in process)", *full)

        edits = []
        for i in range(rounds):
            edited = project / "issues" / f"{slugs[(count // 2 + 7 * i) % count]}.yaml"
            edited.write_text(edited.read_text().replace("Member spotlight", "Member news"))
            edits.append(timed(config, site))
        incremental = sorted(edits)[rounds // 2]
        show("edit one issue, rebuild (in process)", *incremental)
        show("rebuild, nothing changed (in process)", *sorted(
            timed(config, site) for _ in range(rounds))[rounds // 2])

        shutil.rmtree(site)
        cli_full = cli(project, site)
        show("full build (CLI subprocess)", cli_full)
        cli_edits = []
        for i in range(rounds):
            edited = project / "issues" / f"{slugs[(count // 3 + 5 * i) % count]}.yaml"
            edited.write_text(edited.read_text().replace("Member", "Partner"))
            cli_edits.append(cli(project, site))
        cli_incremental = sorted(cli_edits)[rounds // 2]
        show("edit one issue, rebuild (CLI subprocess)", cli_incremental)

        files = sum(1 for p in site.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        print(f"site: {files} files, {size / 1e6:.1f} MB")
        print(f"incremental / full: {incremental[0] / full[0]:.1%} wall, "
              f"{incremental[1] / full[1]:.1%} CPU in process; "
              f"{cli_incremental / cli_full:.1%} through the CLI "
              "(targets: full < 10 s, incremental < 5%)")


if __name__ == "__main__":
    main()
