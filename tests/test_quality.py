"""The code itself: ruff, strict mypy, the layer contracts, and stages that do not print."""

from __future__ import annotations

import ast
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


def test_the_layer_contracts_hold_and_no_import_cycle() -> None:
    """pyproject.toml [tool.importlinter]: layers, quiet stages, no cycles."""
    proc = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def stage_modules() -> list[Path]:
    package = REPO / "newsletter"
    return [p for p in sorted(package.rglob("*.py")) if "cli" not in p.relative_to(package).parts]


def test_no_stage_module_prints() -> None:
    """Only newsletter/cli/ writes to the terminal; stages return values (and may log)."""
    offenders = []
    for path in stage_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            called = node.func if isinstance(node, ast.Call) else None
            name = getattr(called, "id", None) or getattr(called, "attr", None)
            if name == "print" or (name in {"write", "flush"} and _on_std_stream(called)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert stage_modules() and offenders == []


def _on_std_stream(func: ast.expr | None) -> bool:
    target = getattr(func, "value", None)
    return isinstance(target, ast.Attribute) and target.attr in {"stdout", "stderr"}
