"""SpamAssassin (local rules only) scores every sample issue's built .eml as clean.

One run per sample plus one known-bad control; spamassassin takes a second or two to
start, so the runs happen once per module.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import Project, require_tool

SAMPLES = ("2014-06-network-update", "2016-12-newsletter", "2017-02-news")
FORBIDDEN = re.compile(r"^(MISSING_\w+|MIME_\w+|MPART_ALT_DIFF|HTML_FONT_LOW_CONTRAST|"
                       r"FONT_INVIS_\w+|HTML_IMAGE_ONLY_\w+|SUBJ_ALL_CAPS|INVALID_DATE|"
                       r"DATE_IN_FUTURE_\w+|DATE_IN_PAST_\w+)$")


def score(eml: bytes, home: Path) -> tuple[float, set[str]]:
    """(score, rule names) from `spamassassin -t -L`."""
    tool = require_tool("spamassassin")
    proc = subprocess.run([tool, "-t", "-L"], input=eml, capture_output=True, timeout=120,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    out = proc.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+).*?tests=(.*?)\s+autolearn",
                       out, re.M | re.S)
    assert status, out[-2000:] + proc.stderr.decode("utf-8", "replace")
    rules = {r for r in re.split(r"[\s,]+", status.group(2)) if r and r != "none"}
    return float(status.group(1)), rules


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, set[str]]]:
    import shutil

    from conftest import REPO

    require_tool("spamassassin")
    root = tmp_path_factory.mktemp("sa") / "project"
    root.mkdir()
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    for folder in ("issues", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    project = Project(root)
    home = tmp_path_factory.mktemp("sa-home")
    results: dict[str, tuple[float, set[str]]] = {}
    for slug in SAMPLES:
        built = project.run("build", f"issues/{slug}.yaml", "-o", f"out/{slug}")
        assert built.code == 0, built.err
        results[slug] = score((root / "out" / slug / "email.eml").read_bytes(), home)
    good = (root / "out" / SAMPLES[1] / "email.eml").read_bytes()
    undated = re.sub(rb"^Date: [^\r]*\r\n", b"", good, count=1, flags=re.M)
    assert undated != good
    results["control: no Date"] = score(undated, home)
    return results


@pytest.mark.parametrize("slug", SAMPLES)
def test_each_sample_issue_scores_below_one_with_no_structural_rules(
        scores: dict[str, tuple[float, set[str]]], slug: str) -> None:
    points, rules = scores[slug]
    assert points < 1.0, (points, rules)
    assert not {r for r in rules if FORBIDDEN.match(r)}, rules


def test_the_gate_fails_a_message_without_a_date(
        scores: dict[str, tuple[float, set[str]]]) -> None:
    points, rules = scores["control: no Date"]
    assert "MISSING_DATE" in rules
    assert points > max(scores[s][0] for s in SAMPLES) + 1.0
