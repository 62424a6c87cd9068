"""A proof to one address, and a dry run to a folder: part of delivery, beside the campaign.

In: a Network, one RenderedIssue, and where to: an address (``send --to``) or a folder
(``send --dry-run``). Out: a Proof (where it went, what the server said; the ledger keeps
only which content was proofed, and when) or a DryRun (how many .eml files). Neither
changes any delivery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import msgspec

from newsletter.clock import Clock
from newsletter.delivery import ledger
from newsletter.delivery.messages import message_builder, recipients
from newsletter.delivery.replies import Action
from newsletter.delivery.session import send_one, transport_for
from newsletter.email.personalize import anonymous_recipient
from newsletter.errors import AddressError, DeliveryError, InputError, Problem
from newsletter.members import database as db
from newsletter.members import private
from newsletter.members import store as members
from newsletter.members.tokens import secrets_from_env
from newsletter.model import Location, Network, RenderedIssue
from newsletter.text.addresses import checked_address


class Proof(msgspec.Struct, frozen=True):
    slug: str
    to: str
    where: str  # the server, as the transport names it
    reply: str  # what the server said after the final dot


class DryRun(msgspec.Struct, frozen=True):
    list_name: str  # the lists, ", "-separated
    count: int
    folder: Path


def proof(network: Network, rendered: RenderedIssue, address: str, clock: Clock) -> Proof:
    """One test message, subject prefixed "[TEST] ", to one address; the ledger is untouched."""
    try:
        to = checked_address(address.strip())
    except AddressError as e:
        raise InputError([Problem(Location("--to"), "",
                                  f"{address!r} is not a valid address ({e})")]) from e
    transport = transport_for(network.smtp, network.sender_domain)
    build = message_builder(network, rendered, subject_prefix="[TEST] ")
    now = clock.now()
    stamp = f"{int(now * 1_000_000_000):x}"
    recipient = msgspec.structs.replace(anonymous_recipient(network, rendered.slug), address=to,
                        message_id=f"<{rendered.slug}.proof.{stamp}@{network.sender_domain}>")
    data = build(recipient, dt.datetime.fromtimestamp(now, dt.UTC))
    attempt = asyncio.run(send_one(transport, network.sender.address, to, data))
    if attempt.verdict.action is not Action.SENT:
        why, reply = attempt.verdict.why, attempt.reply
        said = "" if reply.text == why else \
            f": {reply.code} {reply.text}" if reply.code else f": {reply.text}"
        raise DeliveryError(f"proof not sent to {to}: {why}{said} (at {reply.stage})")
    with closing(db.connect(network.database)) as conn:  # the send confirmation asks
        ledger.record_proof(conn, rendered.slug, rendered.content_hash, now)
    return Proof(rendered.slug, to, transport.where, attempt.reply.text)


def dry_run(network: Network, rendered: RenderedIssue, list_name: str | Sequence[str],
            folder: Path, clock: Clock) -> DryRun:
    """Write each recipient's exact message to ``folder`` as .eml; no connection, no ledger.
    Several lists: each member once, through the first list that has them (as a send)."""
    build = message_builder(network, rendered)
    secrets = secrets_from_env()
    date = dt.datetime.fromtimestamp(clock.now(), dt.UTC)
    count = 0
    names = (list_name,) if isinstance(list_name, str) else tuple(dict.fromkeys(list_name))
    with closing(db.connect(network.database)) as conn:
        for name in names:
            members.require_list(conn, name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError([Problem(Location(str(folder)), "--dry-run",
                                      f"cannot create the folder ({e.strerror or e})")]) from e
        seen: set[int] = set()
        for name in names:
            for subscriber_id, recipient in recipients(conn, network, name, rendered.slug,
                                                       secrets):
                if subscriber_id in seen:
                    continue
                seen.add(subscriber_id)
                count += 1
                _write(folder / f"{count:06d}.eml", build(recipient, date).message)
    return DryRun(", ".join(names), count, folder)


def _write(path: Path, data: bytes) -> None:
    """Write a whole file or nothing (a .partial renamed into place): dry-run messages."""
    partial = path.with_name(path.name + ".partial")
    try:
        private.write_new(partial, data)
        partial.replace(path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise InputError([Problem(Location(str(path)), "",
                                  f"cannot write the file ({e.strerror or e})")]) from e
