"""The per-recipient message function and the recipients it is called for: part of delivery.

In: a Network and one RenderedIssue (rendered once). Out: ``message_builder``, a function
from (Recipient, Date) to the exact bytes to send (personalize.assemble_outgoing, then the DKIM
signature when one is configured), and ``recipients``, each member of a list due this
issue as (subscriber id, Recipient).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from newsletter.delivery.dkim import signer_for
from newsletter.email.personalize import assemble_outgoing, prepare
from newsletter.email.wire import Outgoing
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.recipients import recipient_for
from newsletter.members.tokens import Secrets
from newsletter.model import Network, Recipient, RenderedIssue


def message_builder(network: Network, rendered: RenderedIssue, *,
                    subject_prefix: str = "") -> Callable[[Recipient, dt.datetime], Outgoing]:
    """The per-recipient function: prepare once, then assemble (and sign) per message.

    Each call gives the message and its DATA-phase form (wire.Outgoing): the sender writes
    that as it is, and ``--dry-run`` writes the message.
    """
    prepared = prepare(rendered, network, subject_prefix=subject_prefix)
    signer = signer_for(network.smtp, network.sender_domain)
    if signer is None:
        return lambda recipient, date: assemble_outgoing(prepared, recipient, date)
    header = signer.header

    def signed(recipient: Recipient, date: dt.datetime) -> Outgoing:
        outgoing = assemble_outgoing(prepared, recipient, date)
        return outgoing.signed(header(outgoing.message))

    return signed


def recipients(conn: db.Connection, network: Network, list_name: str,
               slug: str, secrets: Secrets) -> Iterator[tuple[int, Recipient]]:
    """Every member of the list who may be sent to, as (subscriber id, Recipient)."""
    for subscriber in members.recipients(conn, list_name):
        yield subscriber.id, recipient_for(subscriber, list_name, slug, network, secrets)
