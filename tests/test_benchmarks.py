"""The benchmarks still run (on tiny inputs): a figure in the README must stay reproducible.

Only that they finish and print their comparison; timings are not asserted here (the
machines are noisy; the benchmarks themselves report ratios against a same-run baseline).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("archive.py", ["3"], "incremental / full"),
    ("subscribers.py", ["300", "1"], "ratio:"),
    ("send.py", ["-n", "30"], "ratio"),
    ("serve.py", ["300", "500"], "ratio:"),
    ("render.py", ["3"], "newsletter build is"),
])
def test_each_benchmark_runs_on_a_tiny_input(script: str, args: list[str], expected: str
                                             ) -> None:
    if script == "render.py":  # beside the official MJML compiler: node and npm ci
        require_tool("node")
        require_tool(str(REPO / "node_modules" / ".bin" / "mjml"))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout, proc.stdout


def test_render_benchmark_counts_instructions_with_valgrind() -> None:
    # --instructions takes minutes, so only its counter runs here, on two small commands
    require_tool("valgrind")
    spec = importlib.util.spec_from_file_location("render_benchmark",
                                                  REPO / "benchmarks" / "render.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    bare = render.instructions([sys.executable, "-c", "pass"], REPO)
    more = render.instructions([sys.executable, "-c", "import email.message, json"], REPO)
    assert 1_000_000 < bare < more
