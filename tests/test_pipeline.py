"""The stages without the command line: each pipeline function returns a value and prints
nothing, so another program (or a test) can run them quietly."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import pytest
from conftest import Project
from smtp_servers import SmtpServer

from newsletter import pipeline
from newsletter.archive import Published
from newsletter.clock import FakeClock
from newsletter.delivery.campaign import Plan
from newsletter.errors import UsageError
from newsletter.model import DeliveryState
from newsletter.pipeline import Readiness

ISSUE = "issues/2017-02-news.yaml"
USER, PASSWORD = "news@wmasn.example.org", "test-password"


class Recorded:
    """pipeline.SendEvents that keeps what it is told instead of showing it."""

    def __init__(self, *, go_ahead: bool = True) -> None:
        self.go_ahead = go_ahead
        self.plans: list[Plan] = []
        self.snapshots: list[int] = []
        self.outcomes: list[str] = []
        self.ready: list[Readiness] = []
        self.waits: list[tuple[float, str]] = []

    def planned(self, plan: Plan, ready: Readiness) -> None:
        self.plans.append(plan)
        self.ready.append(ready)
        if not self.go_ahead:
            raise UsageError("declined")

    def recorded(self, count: int) -> None:
        self.snapshots.append(count)

    def __call__(self, state: str) -> None:
        self.outcomes.append(state)

    def waiting(self, seconds: float, why: str) -> None:
        self.waits.append((seconds, why))

    @contextlib.contextmanager
    def sending(self, plan: Plan) -> Iterator[Recorded]:
        yield self


@pytest.fixture
def quiet(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-secret-0123456789abcdef")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1480896000")
    text = project.config.read_text(encoding="utf-8")
    project.write("newsletter.yaml", re.sub(
        r"limits:.*?\n(?=\S)", "limits:\n  per_minute: 0\n  per_day: 0\n  concurrency: 2\n",
        text, flags=re.S))
    return project


def test_check_build_and_archive_return_what_they_did_and_print_nothing(
        quiet: Project, capfd: pytest.CaptureFixture[str]) -> None:
    checked = pipeline.check(quiet.config, [])
    assert checked.issues == len(list((quiet.root / "issues").glob("*.yaml")))
    assert checked.errors == 0
    built = pipeline.build(quiet.config, quiet.root / ISSUE, quiet.root / "out")
    assert built.slug == "2017-02-news" and built.html_bytes > 10_000
    assert (quiet.root / "out" / "email.eml").is_file()
    site = pipeline.archive(quiet.config, quiet.root / "site", no_members=True)
    assert site.members_skipped  # no state database yet: said in the value, not printed
    assert site.report.issues == checked.issues
    assert (quiet.root / "site" / "index.html").is_file()
    assert capfd.readouterr() == ("", "")


def test_a_send_through_the_pipeline_reports_to_its_caller_and_prints_nothing(
        quiet: Project, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    imported = pipeline.import_subscribers(quiet.config, quiet.root / "subscribers/members.csv",
                                           "members", consent=None, skip_invalid=True,
                                           dry_run=False)
    members = imported.result.new
    assert members > 0
    clock = FakeClock(time.time())
    events = Recorded()
    with SmtpServer(users={USER: PASSWORD}) as server:
        for name, value in (("HOST", "127.0.0.1"), ("PORT", str(server.port)),
                            ("TLS", "none"), ("PASSWORD", PASSWORD)):
            monkeypatch.setenv(f"NEWSLETTER_SMTP_{name}", value)
        loaded = pipeline.load_for_sending(quiet.config, quiet.root / ISSUE)
        report = pipeline.send(loaded, "members", events, clock, retry_unknown=False)
        assert len(server.accepted) == members
    assert [p.due for p in events.plans] == [members] and not events.plans[0].resuming
    assert events.plans[0].subject == loaded.rendered.subject
    assert events.ready == [Readiness(None, quiet.root / "site", Published.NO_SITE)]
    assert events.snapshots == [members]
    assert events.outcomes == ["sent"] * members
    assert report.counts[DeliveryState.SENT] == members and report.left == 0
    found = pipeline.status(quiet.config, quiet.root / ISSUE, None)
    assert [s.record.issue for s in found.sends] == ["2017-02-news"]
    assert found.sends[0].counts[DeliveryState.SENT] == members
    assert capfd.readouterr() == ("", "")


def test_a_send_the_caller_declines_writes_nothing(
        quiet: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline.import_subscribers(quiet.config, quiet.root / "subscribers/members.csv",
                                "members", consent=None, skip_invalid=True, dry_run=False)
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NEWSLETTER_SMTP_TLS", "none")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
    loaded = pipeline.load_for_sending(quiet.config, quiet.root / ISSUE)
    events = Recorded(go_ahead=False)
    with pytest.raises(UsageError):
        pipeline.send(loaded, "members", events, FakeClock(time.time()), retry_unknown=False)
    assert pipeline.status(quiet.config, None, None).sends == ()
