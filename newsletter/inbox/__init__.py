"""The inbox stage: what comes back after sending, read and acted on once.

In: a mailbox (mailboxes.py: Maildir, mbox or IMAP), the state database, the signing
secrets and the soft-bounce rule. Out: an InboxReport the command line turns into words.
For each message, in order:

    already handled (the sha256 of its bytes is in the database)?  -> only finish its move
    classify.py: what it is (bounce, soft, complaint, unsubscribe, auto-reply, person)
    apply.py:    what it changes, once its keys are checked (else: ignored, with why)
    one transaction: the changes and the record that this message was handled
    then the mailbox: a message acted on or ignored is moved (or flagged, or deleted when
    asked); auto-replies and mail from people are left where they are, for a person

A crash between the commit and the move leaves the message in the inbox: the next run
finds it handled and only moves it. Two runs at once change nothing twice (the record is
written in the same transaction as the changes, under SQLite's write lock).
"""

from __future__ import annotations

import msgspec

from newsletter.clock import Clock
from newsletter.delivery import ledger
from newsletter.inbox.apply import Effect, apply
from newsletter.inbox.classify import Finding, Kind, classify
from newsletter.inbox.mailboxes import Mailbox
from newsletter.members import database as db
from newsletter.members.database import transaction
from newsletter.members.tokens import Secrets
from newsletter.model import AfterReading, Bounces

# Kinds whose message has been dealt with and leaves the inbox; the others wait for a person.
DEALT_WITH = frozenset({Kind.BOUNCE, Kind.SOFT, Kind.COMPLAINT, Kind.UNSUBSCRIBE,
                        Kind.IGNORED})


class Note(msgspec.Struct, frozen=True):
    """A message listed for a person: one to read, or one ignored (with why)."""

    kind: Kind
    sender: str
    subject: str
    why: str


class InboxReport(msgspec.Struct, frozen=True):
    where: str  # the mailbox, as mailboxes.py names it
    after: AfterReading
    read: int  # messages in the mailbox
    already: int  # handled by an earlier run (nothing done again)
    counts: dict[Kind, int]  # the new messages, by kind
    effects: tuple[Effect, ...]  # what each report did to a member
    to_read: tuple[Note, ...]  # auto-replies and mail from people, left in the mailbox
    ignored: tuple[Note, ...]  # changed nothing, with the reason

    @property
    def changed(self) -> tuple[Effect, ...]:
        """The effects that changed a member's status."""
        return tuple(e for e in self.effects if e.status is not None)


def read_inbox(conn: db.Connection, box: Mailbox, secrets: Secrets, rule: Bounces,
               clock: Clock, after: AfterReading) -> InboxReport:
    """Handle every message of the mailbox not handled before; close the mailbox."""
    read = already = 0
    counts = {kind: 0 for kind in Kind}
    effects: list[Effect] = []
    to_read: list[Note] = []
    ignored: list[Note] = []
    try:
        for incoming in box.messages():
            read += 1
            before = ledger.inbox_handled(conn, incoming.fingerprint)
            if before is not None:
                already += 1
                if Kind(before) in DEALT_WITH:
                    box.processed(incoming.key)  # a run stopped between commit and move
                continue
            finding = classify(incoming.data)
            with transaction(conn):
                if ledger.inbox_handled(conn, incoming.fingerprint) is not None:
                    already += 1  # another run, between our two looks
                    continue
                outcome = apply(conn, finding, secrets, rule, clock.now(),
                                incoming.fingerprint)
                ledger.record_inbox_message(conn, incoming.fingerprint, str(outcome.kind),
                                            clock.now())
            counts[outcome.kind] += 1
            if outcome.effect is not None:
                effects.append(outcome.effect)
            note = _note(finding, outcome.kind, outcome.why)
            if outcome.kind is Kind.IGNORED:
                ignored.append(note)
            elif outcome.kind in (Kind.AUTO_REPLY, Kind.PERSON):
                to_read.append(note)
            if outcome.kind in DEALT_WITH:
                box.processed(incoming.key)
    finally:
        box.close()
    return InboxReport(box.where, after, read, already, counts, tuple(effects),
                       tuple(to_read), tuple(ignored))


def _note(finding: Finding, kind: Kind, why: str) -> Note:
    return Note(kind, finding.sender or "(no sender)", finding.subject or "(no subject)", why)
