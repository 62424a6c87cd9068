"""Per-recipient header values: one member + one issue -> a ``Recipient``.

Stage: between the member list (store.py, which yields ``Subscriber`` values) and the
delivery snapshot (delivery/campaign.py), which writes these values into the ledger before
the first connection. Pure: no database, no clock. In: the member, the list, the issue's
slug, the network and the signing secrets. Out: the greeting, the unsubscribe links
(a signed token per member and list, in the https link and in the mailto's subject), and
a Message-ID and an envelope sender (``bounces+<token>@...`` when bounces.address is set)
stable for (issue, member), so a retry or a resend after a crash carries the same ones.
"""

from __future__ import annotations

from urllib.parse import quote

from newsletter.members.tokens import Secrets, make_return_token, make_token
from newsletter.model import Network, Recipient, Subscriber


def recipient_for(subscriber: Subscriber, list_name: str, issue_slug: str, network: Network,
                  secret: Secrets) -> Recipient:
    """The per-message values for one member: greeting, unsubscribe links, Message-ID."""
    greeting = f"Hello {subscriber.name}" if subscriber.name else "Hello"
    links: list[str] = []
    url = ""
    post = ""
    token = make_token(secret, subscriber.uid, list_name)
    if network.unsubscribe.url:
        url = f"{network.unsubscribe.url.rstrip('/')}/{token}"
        links.append(f"<{url}>")
        post = "List-Unsubscribe=One-Click"
    if network.unsubscribe.mailto:
        # the token in the subject: `newsletter inbox` unsubscribes whoever it names
        mailto = f"mailto:{network.unsubscribe.mailto}?subject={mailto_subject(token)}"
        links.append(f"<{mailto}>")
        url = url or mailto
    return_path = ""
    if network.bounces.address:
        local, _, domain = network.bounces.address.rpartition("@")
        return_path = (f"{local}+{make_return_token(secret, issue_slug, subscriber.uid)}"
                       f"@{domain}")
    return Recipient(
        address=subscriber.email,
        greeting=greeting,
        unsubscribe_url=url,
        list_unsubscribe=", ".join(links),
        list_unsubscribe_post=post,
        message_id=f"<{issue_slug}.{subscriber.uid}@{network.sender_domain}>",
        return_path=return_path,
    )


def mailto_subject(token: str) -> str:
    """The subject of a mailto: unsubscribe, percent-encoded: ``unsubscribe <token>``."""
    return quote(f"unsubscribe {token}", safe="")
