"""Reply classification (standards.md R-2.1): one table, read top to bottom."""

from __future__ import annotations

import pytest

from newsletter.delivery.replies import Action, Stage, classify, lost, parse_reply

S = Stage
A = Action

# code, enhanced, stage -> action, slow_down, reconnect
TABLE = [
    (250, "2.0.0", S.DOT, A.SENT, False, False),
    # 421 at any stage: the server closes; slow the whole stream; nothing delivered.
    *[(421, "4.7.0", stage, A.RETRY, True, True) for stage in Stage],
    (450, "4.2.1", S.RCPT, A.DEFER, False, False),
    (450, "4.2.1", S.DOT, A.DEFER, False, False),
    (451, "4.3.0", S.RCPT, A.DEFER, True, False),
    (451, "4.3.0", S.DATA, A.DEFER, True, False),
    (451, "4.3.0", S.DOT, A.DEFER, True, False),
    (451, "4.3.0", S.MAIL, A.DEFER, True, False),
    (451, "4.3.0", S.EHLO, A.RETRY, True, True),
    (452, "4.2.2", S.RCPT, A.DEFER, False, False),
    (452, "4.5.3", S.RCPT, A.DEFER, False, False),
    (452, "4.3.1", S.MAIL, A.RETRY, False, False),
    (454, "4.7.0", S.AUTH, A.RETRY, True, True),
    (454, "4.7.0", S.RCPT, A.DEFER, True, False),
    (450, None, S.CONNECT, A.RETRY, False, True),
    # Configuration errors stop the run wherever they come.
    (530, "5.7.0", S.MAIL, A.STOP, False, False),
    (530, "5.7.0", S.AUTH, A.STOP, False, False),
    (535, "5.7.8", S.AUTH, A.STOP, False, False),
    (534, "5.7.9", S.AUTH, A.STOP, False, False),
    (554, "5.7.1", S.CONNECT, A.STOP, False, False),
    (554, None, S.CONNECT, A.STOP, False, False),
    (550, None, S.EHLO, A.STOP, False, False),
    (553, "5.1.8", S.MAIL, A.STOP, False, False),  # the sender, never the member
    # Address failures: failed, and the member is bounced.
    (550, "5.1.1", S.RCPT, A.BOUNCE, False, False),
    (550, "5.1.1", S.DOT, A.BOUNCE, False, False),
    (551, None, S.RCPT, A.BOUNCE, False, False),
    (550, None, S.RCPT, A.BOUNCE, False, False),
    # Policy: about us, not the recipient; feeds the circuit breaker.
    (550, "5.7.1", S.RCPT, A.POLICY, False, False),
    (550, "5.7.26", S.DOT, A.POLICY, False, False),
    (554, "5.7.1", S.MAIL, A.POLICY, False, False),
    # The message itself.
    (552, "5.3.4", S.DOT, A.STOP, False, False),
    (552, "5.2.3", S.DOT, A.STOP, False, False),
    (552, "5.2.2", S.RCPT, A.FAIL, False, False),
    (554, "5.6.0", S.DOT, A.FAIL, False, False),
    (554, None, S.DOT, A.FAIL, False, False),
    # Basic and enhanced classes disagree: the temporary reading wins.
    (550, "4.2.0", S.RCPT, A.DEFER, False, False),
]


@pytest.mark.parametrize(("code", "enhanced", "stage", "action", "slow", "reconnect"), TABLE)
def test_every_reply_code_at_every_stage_has_the_documented_verdict(
        code: int, enhanced: str | None, stage: Stage, action: Action, slow: bool,
        reconnect: bool) -> None:
    verdict = classify(code, enhanced, stage)
    assert (verdict.action, verdict.slow_down, verdict.reconnect) == (action, slow, reconnect)


def test_a_5_1_x_reply_to_mail_from_never_bounces_the_member() -> None:
    for code in (550, 551, 553):
        assert classify(code, "5.1.7", Stage.MAIL).action is not Action.BOUNCE


def test_a_connection_lost_after_the_final_dot_is_unknown_and_before_it_is_retried() -> None:
    assert lost(Stage.DOT).action is Action.UNKNOWN
    for stage in (Stage.CONNECT, Stage.EHLO, Stage.AUTH, Stage.MAIL, Stage.RCPT):
        assert lost(stage).action is Action.RETRY
        assert lost(stage).reconnect


def test_an_odd_reply_to_the_final_dot_is_unknown_not_sent() -> None:
    assert classify(354, None, Stage.DOT).action is Action.UNKNOWN
    assert classify(199, None, Stage.RCPT).action is Action.DEFER


def test_enhanced_status_codes_are_read_from_the_reply_text() -> None:
    assert parse_reply("5.1.1 <x@y>: No such\n user") == ("5.1.1", "5.1.1 <x@y>: No such user")
    assert parse_reply("Ok: queued as 4FZ") == (None, "Ok: queued as 4FZ")
    assert parse_reply("4.7.0") == ("4.7.0", "4.7.0")
