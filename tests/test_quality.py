"""The code itself: ruff finds nothing and mypy is strict-clean on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_finds_no_problems_in_the_package_tests_and_benchmarks() -> None:
    proc = subprocess.run([str(BIN / "ruff"), "check", "newsletter", "tests", "benchmarks"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    proc = subprocess.run([str(BIN / "mypy"), "--strict", "newsletter"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
