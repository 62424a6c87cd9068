"""The order of work for every command, readable in one place.

Each function here is what one CLI command does: load what it needs, run the stages in
order, write outputs at the edge. Stage modules do the work; this file only sequences it.
"""

from __future__ import annotations

from pathlib import Path


# --------------------------------------------------------------------------- editors


def check(config: Path, issues: list[Path], *, strict: bool = False) -> None:
    """Validate newsletter.yaml and the issues; report every problem at once."""
    raise NotImplementedError


def build(config: Path, issue: Path, output: Path | None, *, strict: bool = False) -> Path:
    """Render one issue to email.html, email.txt and email.eml; return the folder."""
    raise NotImplementedError


def preview(config: Path, issue: Path, *, port: int, open_browser: bool) -> None:
    """Serve a live preview of one issue on 127.0.0.1."""
    raise NotImplementedError


def archive(config: Path, output: Path) -> Path:
    """Build the static archive site from every issue."""
    raise NotImplementedError


# --------------------------------------------------------------------------- members


def import_subscribers(config: Path, csv_file: Path, list_name: str, *, consent: str | None,
                       skip_invalid: bool, dry_run: bool) -> None:
    raise NotImplementedError


def export_subscribers(config: Path, list_name: str | None, output: Path | None) -> None:
    raise NotImplementedError


def list_subscribers(config: Path, list_name: str | None) -> None:
    raise NotImplementedError


def count_subscribers(config: Path, list_name: str | None) -> None:
    raise NotImplementedError


def unsubscribe(config: Path, email: str, list_name: str | None) -> None:
    raise NotImplementedError


def remove_subscriber(config: Path, email: str) -> None:
    raise NotImplementedError


def serve(config: Path, directory: Path, *, host: str, port: int) -> None:
    raise NotImplementedError


# --------------------------------------------------------------------------- delivery


def send(config: Path, issue: Path, list_name: str | None, *, proof_to: str | None,
         dry_run: Path | None, assume_yes: bool, retry_unknown: bool) -> int:
    """Send (or resume sending) an issue; return the exit code."""
    raise NotImplementedError


def status(config: Path, issue: Path | None, csv_out: Path | None) -> None:
    raise NotImplementedError


def demo(config: Path, output: Path) -> None:
    raise NotImplementedError
