"""What a Finding changes: part of the inbox stage, through store.py and ledger.py only.

In: a Finding (classify.py), the signing secrets, the soft-bounce rule and a connection
inside the caller's transaction. Out: an Outcome: the kind the message counts as (a
report that cannot be trusted becomes ``ignored``, with the reason), and the effect on the
member, if any.

Nobody is forged out. A report changes a member only when it names one delivery of ours
by a key we can check: the token of its envelope sender (signed: tokens.py), or else the
Message-ID of the returned original; and a bounce only when it reports the very address
that delivery went to. A token that does not verify, a token or Message-ID the ledger does
not hold, or an address we never sent that issue to changes nothing.

    bounce      delivery sent -> bounced (status, diagnostic); member bounced, everywhere
    soft        recorded; N soft bounces about M different issues -> member bounced
    complaint   member complained: suppressed on every list
    unsubscribe the token's member leaves the token's list (as the one-click POST does)
"""

from __future__ import annotations

import re

import msgspec

from newsletter.delivery import ledger
from newsletter.errors import AddressError
from newsletter.inbox.classify import Finding, Kind, Recipient, printable
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.csvfiles import normalise_address
from newsletter.members.tokens import Secrets, read_return_token, read_token
from newsletter.model import Bounces, DeliveryState, MemberStatus

_CODE = re.compile(r"(?:^|;)\s*([245]\d\d)\b")
# Feedback reports often hide the recipient ("redacted", "xxxxxx@...", "***@..."): such a
# name cannot be compared with anything, so it is not.
_REDACTED = re.compile(r"redacted|^[x*#.]+@|@[x*#.]+$", re.IGNORECASE)


class Effect(msgspec.Struct, frozen=True):
    """What a report did to a member."""

    kind: Kind  # bounce, soft, complaint, unsubscribe
    address: str
    list_name: str
    issue: str | None  # the issue the report was about (None: an emailed unsubscribe)
    detail: str  # the status and diagnostic, or why
    status: MemberStatus | None  # the member's new status; None: unchanged


class Outcome(msgspec.Struct, frozen=True):
    kind: Kind  # what the message counts as, after checking
    why: str
    effect: Effect | None = None


def apply(conn: db.Connection, finding: Finding, secrets: Secrets, rule: Bounces,
          now: float, fingerprint: str) -> Outcome:
    """Act on one finding (inside the caller's transaction)."""
    kind = finding.kind
    if kind is Kind.UNSUBSCRIBE:
        return _unsubscribe(conn, finding, secrets)
    if kind not in (Kind.BOUNCE, Kind.SOFT, Kind.COMPLAINT):
        return Outcome(kind, finding.why)
    found = _delivery(conn, finding, secrets)
    if isinstance(found, str):
        return Outcome(Kind.IGNORED, found)
    reported, key = found
    if not reported.address:
        return Outcome(Kind.IGNORED, f"about a member since removed ({reported.issue})")
    if kind is Kind.COMPLAINT:
        return _complaint(conn, finding, reported, key, now, fingerprint)
    failed = _matching(finding.recipients, reported.address)
    if failed is None:
        named = ", ".join(r.address for r in finding.recipients[:3]) or "no address"
        return Outcome(Kind.IGNORED, f"reports {printable(named, 120)}, but {reported.issue} "
                       f"was not sent to that address (matched by {key})")
    if kind is Kind.BOUNCE:
        return _bounce(conn, finding, reported, failed, now, fingerprint)
    return _soft(conn, finding, reported, failed, rule, now, fingerprint)


# --------------------------------------------------------------------------- the delivery


def _delivery(conn: db.Connection, finding: Finding, secrets: Secrets
              ) -> tuple[ledger.Reported, str] | str:
    """The delivery a report is about and the key that named it, or why there is none."""
    if finding.return_tokens:
        for candidate in finding.return_tokens:
            token = read_return_token(secrets, candidate)
            if token is None:
                continue
            reported = ledger.reported_by_token(conn, token)
            if reported is None:
                return "its return-path token verifies but names no message in this ledger"
            return reported, "its return-path token"
        return ("its return-path token does not verify (forged, or signed with a key no "
                "longer in NEWSLETTER_SECRET or NEWSLETTER_OLD_SECRETS)")
    for message_id in finding.message_ids:
        reported = ledger.reported_by_message_id(conn, message_id)
        if reported is not None:
            return reported, "the Message-ID of the returned message"
    return ("names no message of ours (no return-path token, and no Message-ID we sent)")


def _normal(address: str) -> str:
    try:
        return normalise_address(address)
    except AddressError:
        return address.strip().lower()


def _matching(recipients: tuple[Recipient, ...], address: str) -> Recipient | None:
    """The reported recipient that is the delivery's address (final or original)."""
    want = _normal(address)
    for r in recipients:
        if _normal(r.address) == want or (r.original and _normal(r.original) == want):
            return r
    return None


# --------------------------------------------------------------------------- verdicts


def _bounce(conn: db.Connection, finding: Finding, reported: ledger.Reported,
            failed: Recipient, now: float, fingerprint: str) -> Outcome:
    status = failed.status or "5.0.0"
    detail = " ".join(x for x in (status, failed.diagnostic) if x)
    code = _CODE.search(failed.diagnostic)
    moved = ledger.late_bounce(conn, reported.id, int(code.group(1)) if code else None,
                               status, failed.diagnostic or finding.why)
    if moved or reported.state is not DeliveryState.BOUNCED:
        ledger.add_feedback(conn, reported, "bounce", status, failed.diagnostic, now,
                            fingerprint)
    changed = members.mark_bounced(conn, reported.subscriber_id, reported.list_name,
                                   f"{reported.issue}: bounced later, {detail}")
    return Outcome(Kind.BOUNCE, finding.why, Effect(
        Kind.BOUNCE, reported.address, reported.list_name, reported.issue, detail,
        MemberStatus.BOUNCED if changed else None))


def _soft(conn: db.Connection, finding: Finding, reported: ledger.Reported,
          failed: Recipient, rule: Bounces, now: float, fingerprint: str) -> Outcome:
    status = failed.status or "4.0.0"
    detail = " ".join(x for x in (status, failed.diagnostic) if x)
    ledger.add_feedback(conn, reported, "soft", status, failed.diagnostic, now, fingerprint)
    count, issues = ledger.soft_bounces(conn, reported.subscriber_id)
    tally = (f"soft bounce {count} of {rule.soft_limit}, about {issues} of "
             f"{rule.soft_issues} different issues")
    changed = False
    if count >= rule.soft_limit and issues >= rule.soft_issues:
        changed = members.mark_bounced(
            conn, reported.subscriber_id, reported.list_name,
            f"{count} soft bounces about {issues} issues, the last {reported.issue}: {detail}")
    return Outcome(Kind.SOFT, finding.why, Effect(
        Kind.SOFT, reported.address, reported.list_name, reported.issue,
        f"{detail} ({tally})", MemberStatus.BOUNCED if changed else None))


def _complaint(conn: db.Connection, finding: Finding, reported: ledger.Reported,
               key: str, now: float, fingerprint: str) -> Outcome:
    named = [r for r in finding.recipients if not _REDACTED.search(r.address)]
    if named and _matching(tuple(named), reported.address) is None:
        return Outcome(Kind.IGNORED, f"a complaint about {printable(named[0].address, 80)}, "
                       f"but {reported.issue} was not sent to that address (matched by {key})")
    before = members.membership_status(conn, reported.subscriber_id, reported.list_name)
    if before is not MemberStatus.COMPLAINED:
        ledger.add_feedback(conn, reported, "complaint", "abuse", None, now, fingerprint)
    changed = members.mark_complained(conn, reported.subscriber_id, reported.list_name,
                                      f"{reported.issue}: reported as spam (feedback report)")
    return Outcome(Kind.COMPLAINT, finding.why, Effect(
        Kind.COMPLAINT, reported.address, reported.list_name, reported.issue,
        "reported the newsletter as spam", MemberStatus.COMPLAINED if changed else None))


def _unsubscribe(conn: db.Connection, finding: Finding, secrets: Secrets) -> Outcome:
    token = read_token(secrets, finding.unsubscribe_token or "")
    if token is None:
        return Outcome(Kind.IGNORED, "its unsubscribe token does not verify (forged, or "
                       "signed with a key no longer in NEWSLETTER_SECRET or "
                       "NEWSLETTER_OLD_SECRETS)")
    member = members.member_id_for(conn, token.uid, token.list_name)
    if member is None:
        return Outcome(Kind.IGNORED, f"its unsubscribe token names no member of list "
                       f"{token.list_name}")
    address = members.address_of(conn, member)
    if address is None:
        return Outcome(Kind.IGNORED, "its unsubscribe token names a member since removed")
    changed = members.unsubscribe(conn, member, token.list_name,
                                  "unsubscribed by email (the List-Unsubscribe mailto)")
    return Outcome(Kind.UNSUBSCRIBE, finding.why, Effect(
        Kind.UNSUBSCRIBE, address, token.list_name, None, "asked by email",
        MemberStatus.UNSUBSCRIBED if changed else None))
