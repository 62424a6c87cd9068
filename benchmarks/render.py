"""Benchmark: one 12-block issue from YAML to HTML + text + .eml, beside the official MJML.

    .venv/bin/python benchmarks/render.py [ROUNDS] [--instructions]

In this process, each stage is timed ROUNDS times (default 50; the median is shown):
load (newsletter.yaml + the issue YAML), jinja (-> MJML), mjml (MRML -> HTML), inline
(css-inline; premailer is timed on the same HTML for comparison), text, prepare (once per
issue) and assemble (per recipient). Then the official MJML compiler (node_modules/mjml)
compiles the very same MJML 5 x ROUNDS times in one node process: the median of its first
ROUNDS compiles (as ours) and of its last ROUNDS (V8 has optimised it by then) are compared
with our whole in-process render.

As a user runs them: `newsletter build` as a whole process beside the `mjml` command line
(node_modules/.bin/mjml) on the same MJML, taking turns 11 times (medians).

Targets: the whole in-process render no slower than the official MJML compile alone;
`newsletter build` at least 3x faster than the mjml command.

With --instructions (needs valgrind; minutes), the same comparisons are also made in
instructions executed, counted by callgrind over every thread: the same count run after
run, however busy this shared machine is, where the times above drift by 30% between
runs. A render's share is the difference between a process that renders ROUNDS times
more and one that does not; the official compile's is taken once V8 has optimised it
(its rounds 4 x ROUNDS + 1 to 5 x ROUNDS, as timed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from newsletter.email.personalize import anonymous_recipient, assemble, prepare
from newsletter.email.render import (
    inline_css,
    mjml_to_html,
    render_issue,
    render_mjml,
    render_text,
)
from newsletter.input.config import load_network
from newsletter.input.issues import load_issue
from newsletter.text import markdown

REPO = Path(__file__).resolve().parent.parent
ISSUE = REPO / "tests" / "fixtures" / "twelve-blocks.yaml"
NODE_MODULES = REPO / "node_modules"
NODE_SCRIPT = """
const mjml2html = require(process.argv[2]);
const fs = require("fs");
const source = fs.readFileSync(process.argv[3], "utf8");
const rounds = parseInt(process.argv[4], 10);
(async () => {
  const options = {validationLevel: "skip", fonts: {}, keepComments: false};
  await mjml2html(source, options);  // warm up: module loading, JIT
  if (process.argv[5] === "count") {  // for --instructions: just compile, rounds times
    for (let i = 0; i < rounds; i++) await mjml2html(source, options);
    return;
  }
  const times = [];
  for (let i = 0; i < 5 * rounds; i++) {
    const t = process.hrtime.bigint();
    const out = await mjml2html(source, options);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (!out.html) throw new Error("no html");
  }
  const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  // the first rounds (as many as ours), and the last ones, once V8 has optimised the compiler
  console.log(JSON.stringify({median_ms: median(times.slice(0, rounds)),
                              warm_ms: median(times.slice(4 * rounds))}));
})();
"""


def median_ms(func: Callable[[], Any], rounds: int) -> float:
    func()  # warm up: templates compiled, modules loaded
    times = []
    for _ in range(rounds):
        markdown.clear_cache()  # each round parses the issue's Markdown afresh
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def processes_ms(commands: dict[str, tuple[list[str], Path]], runs: int = 11
                 ) -> dict[str, tuple[float, float]]:
    """Median wall-clock and CPU (user + system) milliseconds of each command.

    The commands take turns, run after run, so a slow spell of this shared machine falls
    on all of them alike instead of on whichever happened to be running. One untimed run
    of each first, with bytecode caching allowed, as an installed program has it (a
    PYTHONDONTWRITEBYTECODE left in the environment would recompile every module).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for command, cwd in commands.values():
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, cwd) in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env)
            walls[name].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[name].append(after.ru_utime - before.ru_utime
                              + after.ru_stime - before.ru_stime)
    return {name: (statistics.median(walls[name]) * 1000, statistics.median(cpus[name]) * 1000)
            for name in commands}


def instructions(command: list[str], cwd: Path) -> int:
    """Instructions ``command`` executes, every thread of it, counted by valgrind's callgrind.

    One untimed run first, as for the times (bytecode and template caches written).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=env)
    proc = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *command], cwd=cwd, check=True, capture_output=True, text=True,
                          env=env)
    counted = re.search(r"Collected : (\d+)", proc.stderr)
    if counted is None:
        raise RuntimeError(f"valgrind printed no count for {command}: {proc.stderr[-500:]}")
    return int(counted.group(1))


def renders(count: int) -> None:
    """Load, render and assemble the 12-block issue ``count`` times after one warm-up (the
    body of the in-process figure, for --instructions to count)."""
    config = REPO / "newsletter.yaml"
    network = load_network(config)
    issue = load_issue(ISSUE, network)
    reader = anonymous_recipient(network, issue.slug)
    when = dt.datetime(2017, 3, 6, 9, tzinfo=dt.UTC)
    for _ in range(count + 1):
        markdown.clear_cache()
        assemble(prepare(render_issue(load_issue(ISSUE, load_network(config)), network),
                         network), reader, when)


def count_instructions(rounds: int, folder: Path, project: Path, newsletter: list[str]
                       ) -> None:
    """The comparisons again, in instructions executed (see the module docstring)."""
    node = shutil.which("node") or "node"
    ours_one = (instructions([sys.executable, __file__, "--renders", str(rounds)], REPO)
                - instructions([sys.executable, __file__, "--renders", "0"], REPO)) / rounds
    official = [node, "bench.js", str(NODE_MODULES / "mjml"), "issue.mjml"]
    theirs_one = (instructions([*official, str(5 * rounds), "count"], folder)
                  - instructions([*official, str(4 * rounds), "count"], folder)) / rounds
    build = instructions([*newsletter, "build", "issue.yaml", "-o", "out"], project)
    cli = instructions([node, str(NODE_MODULES / "mjml" / "bin" / "mjml"),
                        str(folder / "issue.mjml"), "-o", str(folder / "official.html"),
                        "--config.validationLevel", "skip"], folder)
    print("\nIn instructions executed (valgrind callgrind; the same count every run):")
    print(f"  our whole render YAML -> .eml:        {ours_one / 1e6:8.1f} M per render")
    print(f"  official MJML compile, V8 optimised:  {theirs_one / 1e6:8.1f} M per compile "
          f"(ours is {versus(theirs_one, ours_one)})")
    print(f"  newsletter build process:             {build / 1e6:8.1f} M")
    print(f"  mjml command line process:            {cli / 1e6:8.1f} M "
          f"(newsletter build is {versus(cli, build)})")


def versus(theirs: float, ours: float) -> str:
    """``1.8x faster`` or ``1.2x slower``: how our time compares with theirs."""
    if ours <= theirs:
        return f"{theirs / ours:.1f}x faster"
    return f"{ours / theirs:.1f}x slower"


def main(rounds: int, count: bool = False) -> None:
    config = REPO / "newsletter.yaml"
    network = load_network(config)
    issue = load_issue(ISSUE, network)
    mjml_source = render_mjml(issue, network)
    raw_html = mjml_to_html(mjml_source, issue)
    rendered = render_issue(issue, network)
    ready = prepare(rendered, network)
    reader = anonymous_recipient(network, issue.slug)
    when = dt.datetime(2017, 3, 6, 9, tzinfo=dt.UTC)

    stages = {
        "load": median_ms(lambda: load_issue(ISSUE, load_network(config)), rounds),
        "jinja": median_ms(lambda: render_mjml(issue, network), rounds),
        "mjml": median_ms(lambda: mjml_to_html(mjml_source, issue), rounds),
        "inline css": median_ms(lambda: inline_css(raw_html), rounds),
        "text": median_ms(lambda: render_text(issue, network), rounds),
        "prepare": median_ms(lambda: prepare(rendered, network), rounds),
        "assemble": median_ms(lambda: assemble(ready, reader, when), rounds * 20),
    }
    whole = median_ms(lambda: assemble(prepare(render_issue(
        load_issue(ISSUE, load_network(config)), network), network), reader, when), rounds)

    print(f"12-block issue: {len(rendered.html.encode()) / 1024:.1f} KB HTML, "
          f"{len(rendered.text.encode()) / 1024:.1f} KB text, "
          f"{len(assemble(ready, reader, when)) / 1024:.1f} KB message; median of {rounds}")
    for name, ms in stages.items():
        print(f"  {name:<12} {ms:8.3f} ms")
    print(f"  {'total':<12} {sum(stages.values()):8.3f} ms (sum of stages)")
    print(f"  {'whole':<12} {whole:8.3f} ms (YAML -> .eml bytes, one call chain)")
    print(f"  assemble: {stages['assemble'] * 1000:.1f} µs per recipient")

    try:
        import premailer

        def with_premailer() -> str:
            out: str = premailer.Premailer(
                raw_html, keep_style_tags=True, disable_validation=True, allow_network=False,
                cssutils_logging_level=logging.CRITICAL,  # not a warning per vendor property
            ).transform()
            return out

        premailer_ms = median_ms(with_premailer, max(5, rounds // 5))
        print(f"  inline css with premailer instead: {premailer_ms:.1f} ms "
              f"({premailer_ms / stages['inline css']:.0f}x css-inline)")
    except ImportError:
        pass

    node = shutil.which("node")
    mjml_module = NODE_MODULES / "mjml"
    mjml_cli = NODE_MODULES / ".bin" / "mjml"
    if not node or not mjml_module.is_dir():
        print("official MJML: node or node_modules/mjml missing (npm ci); skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "issue.mjml").write_text(mjml_source, encoding="utf-8")
        (folder / "bench.js").write_text(NODE_SCRIPT, encoding="utf-8")
        proc = subprocess.run([node, "bench.js", str(mjml_module), "issue.mjml", str(rounds)],
                              cwd=folder, check=True, capture_output=True, text=True)
        figures = json.loads(proc.stdout)
        official, warm = float(figures["median_ms"]), float(figures["warm_ms"])
        print("\nIn process, same MJML, same run:")
        print(f"  official MJML compile (node, mjml 5): {official:8.3f} ms "
              f"(rounds 1-{rounds} after one warm-up, as ours)")
        print(f"  ... once V8 has optimised it:         {warm:8.3f} ms "
              f"(rounds {4 * rounds + 1}-{5 * rounds}; our whole render is "
              f"{versus(warm, whole)})")
        print(f"  MRML compile alone:                   {stages['mjml']:8.3f} ms "
              f"({versus(official, stages['mjml'])})")
        print(f"  our whole render YAML -> .eml:        {whole:8.3f} ms "
              f"({versus(official, whole)} than the official compile's first rounds)")
        rendering = sum(ms for name, ms in stages.items() if name != "load")
        print(f"  the same without loading the YAML:    {rendering:8.3f} ms "
              f"({versus(official, rendering)}; loading the config and issue is "
              f"{stages['load']:.1f} ms of the whole)")

        project = folder / "project"
        project.mkdir()
        shutil.copy(config, project / "newsletter.yaml")
        shutil.copytree(REPO / "templates", project / "templates")
        shutil.copy(ISSUE, project / "issue.yaml")
        shutil.copytree(ISSUE.with_suffix(""), project / ISSUE.with_suffix("").name)
        installed = shutil.which("newsletter", path=str(Path(sys.executable).parent))
        # the installed command, as an editor runs it
        newsletter = [installed] if installed else [sys.executable, "-m", "newsletter"]
        times = processes_ms({
            "ours": ([*newsletter, "build", "issue.yaml", "-o", "out"], project),
            "theirs": ([str(mjml_cli), str(folder / "issue.mjml"), "-o",
                        str(folder / "official.html"), "--config.validationLevel", "skip"],
                       folder),
        })
        (ours, ours_cpu), (theirs, theirs_cpu) = times["ours"], times["theirs"]
        print("\nWhole processes (median of 11, taking turns; wall clock, then CPU time):")
        print(f"  newsletter build (YAML -> html, txt, eml, images): {ours:7.1f} ms wall "
              f"{ours_cpu:7.1f} ms CPU")
        print(f"  mjml command line (MJML -> html only):             {theirs:7.1f} ms wall "
              f"{theirs_cpu:7.1f} ms CPU")
        print(f"  ratio: newsletter build is {theirs / ours:.1f}x faster by the clock, "
              f"{theirs_cpu / ours_cpu:.1f}x by CPU time (target >= 3x)")
        if count:
            count_instructions(rounds, folder, project, newsletter)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renders"]:  # the body --instructions counts
        renders(int(sys.argv[2]))
    else:
        numbers = [a for a in sys.argv[1:] if a != "--instructions"]
        main(int(numbers[0]) if numbers else 50, count="--instructions" in sys.argv[1:])
