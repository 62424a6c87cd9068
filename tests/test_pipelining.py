"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the server offers it.

Every outcome must be what the same server gives one command at a time: each scenario runs
twice, once with PIPELINING offered and once without, and the ledgers must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from smtp_servers import Answer, Drop, Faults, Session, SmtpServer
from test_send import FAST, Campaign, address

from newsletter.delivery import ledger
from newsletter.model import DeliveryState

ONE_AT_A_TIME = msgspec.structs.replace(FAST, concurrency=1)  # the same order both times


class Scenario(Faults):
    """Faults chosen by recipient (MAIL by the count of messages begun on the server)."""

    def __init__(self, *, mail: Callable[[int], Answer] | None = None,
                 rcpt: Callable[[str], Answer] | None = None,
                 data: Callable[[str], Answer] | None = None,
                 dot: Callable[[bytes], Answer] | None = None) -> None:
        self.mail, self.rcpt, self.data, self.dot = mail, rcpt, data, dot
        self.mails = 0
        self.seen: dict[str, int] = {}

    def on_mail(self, session: Session, sender: str) -> Answer:
        self.mails += 1
        return self.mail(self.mails) if self.mail else None

    def on_rcpt(self, session: Session, recipient: str) -> Answer:
        self.seen[recipient] = self.seen.get(recipient, 0) + 1
        return self.rcpt(recipient) if self.rcpt and self.seen[recipient] == 1 else None

    def on_data(self, session: Session) -> Answer:
        to = session.rcpt_to[0]
        return self.data(to) if self.data and self.seen.get(to) == 1 else None

    def on_dot(self, session: Session, message: bytes) -> Answer:
        return self.dot(message) if self.dot else None


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "all accepted": lambda: Scenario(),
    "unknown addresses bounce": lambda: Scenario(
        rcpt=lambda to: "550 5.1.1 No such user" if to in (address(2), address(5)) else None),
    "a temporary RCPT refusal defers": lambda: Scenario(
        rcpt=lambda to: "451 4.3.0 Try later" if to == address(3) else None),
    "MAIL refused for now": lambda: Scenario(
        mail=lambda n: "451 4.3.0 Busy" if n == 4 else None),
    "421 at MAIL closes the connection": lambda: Scenario(
        mail=lambda n: "421 4.7.0 Closing" if n == 3 else None),
    "DATA refused": lambda: Scenario(
        data=lambda to: "451 4.3.0 No room" if to == address(1) else None),
    "a dropped connection at RCPT": lambda: Scenario(
        rcpt=lambda to: Drop() if to == address(4) else None),
    "a dropped connection at DATA": lambda: Scenario(
        data=lambda to: Drop() if to == address(6) else None),
    "the final dot refused by policy": lambda: Scenario(
        dot=lambda m: "550 5.7.1 Rejected" if b"m0005@" in m else None),
    "the final dot lost": lambda: Scenario(
        dot=lambda m: Drop() if b"m0007@" in m else None),
}


def outcome(tmp_path: Path, scenario: Callable[[], Scenario], *, pipelining: bool
            ) -> tuple[list[tuple[object, ...]], list[tuple[str, ...]], int]:
    campaign = Campaign(tmp_path / ("on.db" if pipelining else "off.db"), 9)
    with SmtpServer(scenario(), pipelining=pipelining) as server:
        campaign.run(server, ONE_AT_A_TIME)
    rows = [(r.address, r.state, r.attempts, r.reply_code, r.enhanced_code, r.stage,
             None if r.state is DeliveryState.SENT else r.reply_text)
            for r in sorted(ledger.rows(campaign.conn, "issue"), key=lambda r: r.address)]
    received = sorted(r.rcpt_to for r in server.delivered)
    return rows, received, server.pipelined


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pipelining_gives_the_outcomes_of_one_command_at_a_time(tmp_path: Path,
                                                                name: str) -> None:
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    rows, received, pipelined = outcome(tmp_path, SCENARIOS[name], pipelining=True)
    plain_rows, plain_received, plain_pipelined = outcome(tmp_path, SCENARIOS[name],
                                                          pipelining=False)
    assert rows == plain_rows
    assert received == plain_received
    assert plain_pipelined == 0 and pipelined >= 1
