"""The per-recipient message function and the recipients it is called for: part of delivery.

In: a Network and one RenderedIssue (rendered once). Out: ``message_builder``, a function
from (Recipient, Date) to the exact bytes to send (personalize.assemble, then the DKIM
signature when one is configured), and ``recipients``, each member of a list due this
issue as (subscriber id, Recipient).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from newsletter.delivery.dkim import signer_for
from newsletter.delivery.engine import Build
from newsletter.email.personalize import assemble, prepare
from newsletter.members import store as members
from newsletter.members.recipients import recipient_for
from newsletter.members.tokens import Secrets
from newsletter.model import Network, Recipient, RenderedIssue


def message_builder(network: Network, rendered: RenderedIssue, *,
                    subject_prefix: str = "") -> Build:
    """The per-recipient function: prepare once, then assemble (and sign) per message."""
    prepared = prepare(rendered, network, subject_prefix=subject_prefix)
    signer = signer_for(network.smtp, network.sender_domain)
    if signer is None:
        return lambda recipient, date: assemble(prepared, recipient, date)
    sign = signer.sign
    return lambda recipient, date: sign(assemble(prepared, recipient, date))


def recipients(conn: sqlite3.Connection, network: Network, list_name: str,
               slug: str, secrets: Secrets) -> Iterator[tuple[int, Recipient]]:
    """Every member of the list who may be sent to, as (subscriber id, Recipient)."""
    for subscriber in members.recipients(conn, list_name):
        yield subscriber.id, recipient_for(subscriber, list_name, slug, network, secrets)
