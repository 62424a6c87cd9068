"""The console script itself: what it does before and after a command runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs the console script's entry point, then says whether the cycle collector is on.
_SCRIPT = """
import atexit, gc, sys
atexit.register(lambda: print("collector on:", gc.isenabled(), file=sys.stderr))
from newsletter.cli import run
sys.argv = ["newsletter", *sys.argv[1:]]
run()
"""


@pytest.mark.parametrize(("args", "collecting"), [
    (("build", "issues/2016-12-newsletter.yaml"), False),
    (("check", "issues/2016-12-newsletter.yaml"), False),
    (("subscribers", "count"), True),
    (("archive", "--no-members", "-o", "site"), True),
])
def test_the_collector_stays_paused_only_for_bounded_commands(
        project, args: tuple[str, ...], collecting: bool) -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, *args], cwd=project.root,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1480896000"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == (1 if args[0] == "subscribers" else 0), proc.stderr  # no members
    assert f"collector on: {collecting}" in proc.stderr


def test_python_dash_m_runs_the_same_entry_point(project) -> None:
    result = project.run("build", "issues/2016-12-newsletter.yaml", "-o", "out")
    assert result.code == 0, result.err
    assert (project.root / "out" / "email.eml").is_file()
