"""What an SMTP reply means for one recipient and for the run: part of the send stage.

In: the reply code, its enhanced status code (RFC 3463) and the stage of the session it
came at. Out: a Verdict — the action for this recipient, and whether the whole stream
slows down, reconnects or stops. Classification is by code, never by exception class, and
it is one table read top to bottom (first match wins), like Mailman's ``mta/deliver.py``
split of temporary and permanent failures. standards.md R-2.1 is the contract.

    classify(code, enhanced, stage) -> Verdict
    lost(stage)                     -> Verdict for a timeout or dropped connection
    parse_reply(code, message)      -> (enhanced code or None, text)
    Reply                           what ended an attempt, as the ledger records it
"""

from __future__ import annotations

import enum
import re

import msgspec


class Stage(enum.StrEnum):
    """Where in the session a reply (or a lost connection) came."""

    CONNECT = "connect"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, before any message byte is sent
    DOT = "dot"  # the reply to the final "." ending the message


class Action(enum.StrEnum):
    SENT = "sent"  # 2xx after the final dot: the server took responsibility
    DEFER = "defer"  # temporary: retry this recipient later, with growing delays
    RETRY = "retry"  # nothing was delivered and it is not the recipient's doing: retry soon
    BOUNCE = "bounce"  # the address does not exist: failed, and the member is suppressed
    FAIL = "fail"  # permanent for this message: failed for good
    POLICY = "policy"  # 5.7.x: the server refuses us, not the recipient: counts to the breaker
    UNKNOWN = "unknown"  # lost after the final dot: maybe delivered; resend only if asked
    STOP = "stop"  # our configuration is wrong (login, TLS, sender): stop the run now


class Verdict(msgspec.Struct, frozen=True):
    action: Action
    slow_down: bool = False  # back off the whole stream (421, 451, 454)
    reconnect: bool = False  # this session is finished (421, lost connection)
    why: str = ""


class Reply(msgspec.Struct, frozen=True):
    """What ended an attempt, as recorded: code, enhanced code, text, SMTP stage."""

    code: int | None
    enhanced: str | None
    text: str
    stage: str


class Rule(msgspec.Struct, frozen=True):
    """One line of the table; ``None`` matches anything."""

    codes: str  # "535", "4xx", "5xx", "421|451|454"
    enhanced: str | None  # "5.1.", "5.7.", "4." (a prefix of the enhanced code)
    stages: frozenset[Stage] | None
    verdict: Verdict

    def matches(self, code: int, enhanced: str | None, stage: Stage) -> bool:
        if self.stages is not None and stage not in self.stages:
            return False
        if self.enhanced is not None and not (enhanced or "").startswith(self.enhanced):
            return False
        return any(_code_matches(pattern, code) for pattern in self.codes.split("|"))


def _code_matches(pattern: str, code: int) -> bool:
    text = f"{code:03d}"
    return len(text) == 3 and all(p in ("x", c) for p, c in zip(pattern, text, strict=True))


SESSION = frozenset({Stage.CONNECT, Stage.EHLO, Stage.STARTTLS})
ENVELOPE_RECIPIENT = frozenset({Stage.RCPT, Stage.DOT})

RULES: tuple[Rule, ...] = (
    Rule("2xx", None, frozenset({Stage.DOT}), Verdict(Action.SENT)),
    # Configuration: never retried in a loop.
    Rule("535|534", None, None, Verdict(
        Action.STOP, why="the server refused the login: check smtp.user and the password "
                         "in the environment variable named by smtp.password_env")),
    Rule("530", None, None, Verdict(
        Action.STOP, why="the server requires TLS or a login first: check smtp.tls and "
                         "smtp.user")),
    # Slow down: the whole stream backs off; 421 also closes the session.
    Rule("421", None, None, Verdict(Action.RETRY, slow_down=True, reconnect=True,
                                    why="the server is closing the connection (421)")),
    Rule("451|454", None, frozenset({Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DOT}),
         Verdict(Action.DEFER, slow_down=True, why="the server asks us to slow down")),
    Rule("451|454", None, SESSION | {Stage.AUTH}, Verdict(
        Action.RETRY, slow_down=True, reconnect=True, why="temporary server failure")),
    Rule("4xx", None, SESSION | {Stage.AUTH}, Verdict(
        Action.RETRY, reconnect=True, why="temporary failure setting up the session")),
    Rule("4xx", None, frozenset({Stage.MAIL}), Verdict(
        Action.RETRY, why="the server refused the sender for now")),
    Rule("4xx", None, None, Verdict(Action.DEFER, why="temporary failure")),
    # When the basic and the enhanced code disagree, act on the temporary one (RFC 3463).
    Rule("5xx", "4.", None, Verdict(Action.DEFER, why="permanent code, temporary status")),
    # Policy and authentication refusals are about us, never the recipient.
    Rule("5xx", "5.7.", frozenset({Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DOT}), Verdict(
        Action.POLICY, why="refused by the server's policy (SPF, DKIM, DMARC, reputation)")),
    Rule("5xx", None, SESSION | {Stage.AUTH}, Verdict(
        Action.STOP, why="the server refused the session")),
    Rule("5xx", None, frozenset({Stage.MAIL}), Verdict(
        Action.STOP, why="the server refused the sender address")),
    Rule("5xx", "5.1.", ENVELOPE_RECIPIENT, Verdict(
        Action.BOUNCE, why="the address does not exist")),
    Rule("550|551|553", None, frozenset({Stage.RCPT}), Verdict(
        Action.BOUNCE, why="the mailbox is unavailable")),
    Rule("552|554", "5.3.4", None, Verdict(
        Action.STOP, why="the message is too big for the server")),
    Rule("552", "5.2.3", None, Verdict(
        Action.STOP, why="the message is too big for the server")),
    Rule("5xx", None, None, Verdict(Action.FAIL, why="permanent failure")),
)

_FALLBACK = Verdict(Action.DEFER, why="unexpected reply")


def classify(code: int, enhanced: str | None, stage: Stage) -> Verdict:
    """The verdict for a reply ``code`` (with its enhanced code) at ``stage``."""
    for rule in RULES:
        if rule.matches(code, enhanced, stage):
            return rule.verdict
    # 1xx/3xx where they do not belong, or garbage: nothing we can rely on.
    if stage is Stage.DOT:
        return Verdict(Action.UNKNOWN, reconnect=True, why="unexpected reply to the final dot")
    if stage in SESSION or stage is Stage.AUTH:
        return Verdict(Action.RETRY, reconnect=True, why="unexpected reply setting up the session")
    return _FALLBACK


def lost(stage: Stage) -> Verdict:
    """A timeout or a dropped connection at ``stage``.

    After the final dot the server may have taken the message (RFC 1047): unknown. The
    DATA command and the message are one call in aiosmtplib, so a loss during DATA is
    treated the same way, to stay on the side of no silent resend.
    """
    if stage in (Stage.DOT, Stage.DATA):
        return Verdict(Action.UNKNOWN, reconnect=True,
                       why="connection lost waiting for the reply to the message")
    if stage is Stage.CONNECT:
        return Verdict(Action.RETRY, reconnect=True, why="could not connect to the server")
    return Verdict(Action.RETRY, reconnect=True, why="connection lost before the message")


_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")


def parse_reply(message: str) -> tuple[str | None, str]:
    """``"5.1.1 No such user"`` -> ``("5.1.1", "5.1.1 No such user")`` (text kept whole)."""
    text = " ".join(message.split())
    match = _ENHANCED.match(text + " ")
    return (match.group(1) if match else None), text
