"""One SMTP session: connect, TLS, login, and one message at a time: part of the send stage.

In: a Transport (host, port, TLS mode, user and the password from the environment) and
the exact bytes of one message for one recipient. Out: an Attempt, the verdict of
outcomes.py on whatever happened, with the reply as the ledger records it. A Session never
raises for SMTP trouble; it reconnects when a verdict says the connection is finished, and
sends RSET after a failed transaction on a connection it keeps.

TLS is required (implicit, or STARTTLS with ``start_tls=True`` so a server that does not
offer it is refused, not silently used in plaintext), the certificate is checked, and
plaintext is only allowed to a loopback host.

We send MAIL, RCPT and DATA with aiosmtplib's ``execute_command`` rather than ``sendmail``:
the same raw-bytes path (no ``send_message``, nothing re-flattened), but we know which step
failed, and the final dot gets its own, longer timeout (smtp.final_dot_timeout, RFC 5321
§4.5.3.2.6). The message goes in its DATA-phase form (email/wire.py), written through the
protocol as it is: ``SMTP.data`` would rewrite the line endings and stuff the dots of the
whole message again for every recipient, most of what it costs to send one. When the server
offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write (``_pipelined``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import ssl
from collections.abc import Mapping

import aiosmtplib
import msgspec
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, MAX_RESPONSE_LENGTH, SMTPProtocol

from newsletter.delivery.replies import Action, Reply, Stage, Verdict, classify, lost, parse_reply
from newsletter.email import wire
from newsletter.email.wire import Outgoing
from newsletter.errors import DeliveryError
from newsletter.model import Smtp, TlsMode
from newsletter.text.addresses import is_loopback

# --------------------------------------------------------------------------- the transport


class Transport(msgspec.Struct, frozen=True):
    """Where and how to connect, with the password from the environment."""

    host: str
    port: int
    tls: TlsMode
    user: str | None
    password: str | None  # never in repr()
    timeout: float
    final_dot_timeout: float
    local_hostname: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Transport({self.where}, tls={self.tls}, user={self.user!r}, password=...)"


def transport_for(smtp: Smtp, sender_domain: str,
                  environ: Mapping[str, str] | None = None) -> Transport:
    """Where to connect, with the password from the environment.

    ``smtp`` already carries any NEWSLETTER_SMTP_HOST/_PORT/_USER/_TLS override (config.py
    applies and checks them); only the password is read here, from NEWSLETTER_SMTP_PASSWORD
    or the variable smtp.password_env names. Plaintext to anything but this machine is
    refused here too, where it matters, whoever built the settings.
    """
    env = os.environ if environ is None else environ
    password = env.get("NEWSLETTER_SMTP_PASSWORD") or env.get(smtp.password_env) or None
    if smtp.tls is TlsMode.NONE and not is_loopback(smtp.host):
        raise DeliveryError(
            f"smtp.tls is none but {smtp.host} is not this machine: refusing to send the "
            "password and the members' messages in the clear (use tls: starttls or implicit; "
            "none is only for a server on 127.0.0.1)")
    if smtp.user and not password:
        raise DeliveryError(
            f"smtp.user is {smtp.user} but the password is not set: put it in the environment "
            f"variable {smtp.password_env} (never in newsletter.yaml)")
    return Transport(smtp.host, smtp.port, smtp.tls, smtp.user, password, smtp.timeout,
                     smtp.final_dot_timeout, sender_domain)


# --------------------------------------------------------------------------- one session


class Attempt(msgspec.Struct, frozen=True):
    """What one transmission came to."""

    verdict: Verdict
    reply: Reply


class Session:
    """One SMTP connection, reused for many messages; reconnects when it must."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.smtp: aiosmtplib.SMTP | None = None
        self._stage = Stage.MAIL  # where the message being sent is

    async def connect(self) -> Attempt | None:
        """Open the session unless it is open: connect, TLS, EHLO, login.

        None when it is ready, else the Attempt saying what went wrong (nothing was sent).
        """
        if self.smtp is not None and self.smtp.is_connected:
            return None
        self.smtp = None
        t = self.transport
        smtp = aiosmtplib.SMTP(
            hostname=t.host, port=t.port, use_tls=t.tls is TlsMode.IMPLICIT,
            start_tls=t.tls is TlsMode.STARTTLS, validate_certs=True, timeout=t.timeout,
            local_hostname=t.local_hostname)
        stage = Stage.CONNECT
        try:
            await smtp.connect()
            stage = Stage.EHLO
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            if t.user:
                stage = Stage.AUTH
                if not smtp.supports_extension("auth"):
                    smtp.close()
                    return _stop(stage, f"{t.where} offers no login (no AUTH in its reply to "
                                 f"EHLO), but smtp.user is set ({t.user}): for a server that "
                                 "takes mail without a login, remove smtp.user from "
                                 "newsletter.yaml (and NEWSLETTER_SMTP_USER from the "
                                 "environment); otherwise check smtp.host and smtp.port")
                await smtp.login(t.user, t.password or "")
        except (aiosmtplib.SMTPException, OSError, ValueError) as e:
            smtp.close()
            return _describe(stage, e, t)
        except BaseException:
            smtp.close()
            raise
        self.smtp = smtp
        return None

    async def send(self, sender: str, address: str, message: bytes | Outgoing) -> Attempt:
        """Transmit one message to one recipient; never raises for SMTP trouble.

        An Outgoing carries the DATA phase ready to write; plain bytes are put in that form
        here (wire.data_phase), as aiosmtplib's ``data`` would.
        """
        failed = await self.connect()
        if failed is not None:
            return failed
        smtp = self.smtp
        assert smtp is not None
        self._stage = Stage.MAIL
        try:
            if isinstance(message, Outgoing):
                size, data = len(message.message), message.data
            else:
                size, data = len(message), wire.data_phase(message)
            mail = [b"MAIL", b"FROM:" + _quoted(sender)]
            if smtp.supports_extension("size"):
                mail.append(f"SIZE={size}".encode())
            rcpt = [b"RCPT", b"TO:" + _quoted(address)]
            if smtp.supports_extension("pipelining"):
                response = await self._pipelined(smtp, mail, rcpt, data)
            else:
                response = await smtp.execute_command(*mail)
                if response.code == 250:
                    self._stage = Stage.RCPT
                    response = await smtp.execute_command(*rcpt)
                    if response.code in (250, 251):
                        self._stage = Stage.DOT
                        response = await self._data(smtp, data)
            stage = self._stage
            enhanced, text = parse_reply(response.message)
            attempt = Attempt(classify(response.code, enhanced, stage),
                              Reply(response.code, enhanced, text, str(stage)))
        except (aiosmtplib.SMTPException, OSError, ValueError) as e:
            attempt = _describe(self._stage, e, self.transport)
        if attempt.verdict.reconnect or attempt.verdict.action is Action.STOP:
            self.close()
        elif attempt.verdict.action is not Action.SENT and self.smtp is not None:
            await self._reset()
        return attempt

    async def _data(self, smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
        """DATA, then the message in its DATA-phase form: the reply to the final dot (or the
        refusal of DATA). A refusal of DATA is judged as at the final dot, as before."""
        timeout = self.transport.final_dot_timeout
        start = await smtp.execute_command(b"DATA", timeout=timeout)
        if start.code != 354:
            return start
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:
            protocol.write(data)
            return await protocol.read_response(timeout=timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()  # a late reply must never be taken for the next command's
            raise

    async def _pipelined(self, smtp: aiosmtplib.SMTP, mail: list[bytes], rcpt: list[bytes],
                         data: bytes) -> aiosmtplib.SMTPResponse:
        """MAIL, RCPT and DATA in one write (RFC 2920, when the server offers PIPELINING),
        then the message once DATA is answered 354: two round trips a message, not four.

        The first refusal is the answer, at its stage, as if the commands had gone one by
        one. aiosmtplib reads one reply per command it sends, so the three replies are read
        by a _Replies protocol put on the connection's transport meanwhile (asyncio's
        ``set_protocol``), then aiosmtplib's protocol is put back.
        """
        t = self.transport
        transport, protocol = smtp.transport, smtp.protocol
        if transport is None or protocol is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        lines = [b" ".join(mail), b" ".join(rcpt), b"DATA"]
        if any(COMMAND_INJECTION_REGEX.search(line) for line in lines):
            raise ValueError("Command arg contains a prohibited control character")
        replies = _Replies(protocol)
        transport.set_protocol(replies)
        try:
            protocol.write(b"\r\n".join(lines) + b"\r\n")
            got = [await replies.next(t.timeout)]
            self._stage = Stage.RCPT
            got.append(await replies.next(t.timeout))
            self._stage = Stage.DOT  # DATA refused or lost: judged as at the final dot
            got.append(await replies.next(t.final_dot_timeout))
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()  # a late reply must never be taken for the next command's
            raise
        finally:
            if not transport.is_closing():
                transport.set_protocol(protocol)
        mail_reply, rcpt_reply, data_reply = got
        refused = None
        if mail_reply.code != 250:
            self._stage, refused = Stage.MAIL, mail_reply
        elif rcpt_reply.code not in (250, 251):
            self._stage, refused = Stage.RCPT, rcpt_reply
        if data_reply.code != 354:
            return refused or data_reply
        try:
            # A server that answers DATA with 354 after refusing the envelope gets an empty
            # message ended at once (RFC 2920 §3.1); the refusal stays the answer.
            protocol.write(data if refused is None else b".\r\n")
            final = await protocol.read_response(timeout=t.final_dot_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()
            raise
        return refused or final

    async def _reset(self) -> None:
        if self.smtp is None:
            return
        try:
            await self.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    async def quit(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.smtp.quit(timeout=5)
        self.close()


class _Replies(asyncio.Protocol):
    """Reads pipelined replies in place of aiosmtplib's protocol (which reads one per
    command it writes itself); a lost connection is passed on to that protocol."""

    def __init__(self, smtp_protocol: SMTPProtocol) -> None:
        self.smtp_protocol = smtp_protocol
        self.buffer = bytearray()
        self.replies: collections.deque[aiosmtplib.SMTPResponse] = collections.deque()
        self.error: aiosmtplib.SMTPException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        while (reply := self._parse()) is not None:
            self.replies.append(reply)
        if len(self.buffer) > MAX_RESPONSE_LENGTH:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        self.smtp_protocol.connection_lost(exc)

    async def next(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply, within ``timeout`` seconds."""
        while not self.replies:
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, timeout)
            except TimeoutError as e:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response") from e
        return self.replies.popleft()

    def _parse(self) -> aiosmtplib.SMTPResponse | None:
        """One complete reply off the buffer (``250-a`` lines continue it, ``250 b`` ends it)."""
        lines: list[bytes] = []
        offset = 0
        while (end := self.buffer.find(b"\n", offset)) != -1:
            line = bytes(self.buffer[offset:end + 1])
            offset = end + 1
            lines.append(line)
            if line[3:4] != b"-":
                try:
                    code = int(line[:3])
                except ValueError:
                    code = -1  # garbage: classify() says what that means at this stage
                del self.buffer[:offset]
                text = b"\n".join(x[4:].strip(b" \t\r\n") for x in lines)
                return aiosmtplib.SMTPResponse(code, text.decode("utf-8", "surrogateescape"))
        return None

    def _fail(self, error: aiosmtplib.SMTPException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _quoted(address: str) -> bytes:
    """``<address>`` for MAIL FROM and RCPT TO, as aiosmtplib's ``mail`` and ``rcpt`` quote
    it (ValueError for what cannot go on a command line); a plain address skips the parse."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def _describe(stage: Stage, error: Exception, t: Transport) -> Attempt:
    """An exception from aiosmtplib (or the socket) as a verdict, by reply code first."""
    if isinstance(error, aiosmtplib.SMTPResponseException):
        if isinstance(error, aiosmtplib.SMTPHeloError) and stage is Stage.CONNECT:
            stage = Stage.EHLO
        if isinstance(error, aiosmtplib.SMTPDataError):
            stage = Stage.DOT  # DATA command and final dot share one call; 5.1.x is per address
        enhanced, text = parse_reply(error.message)
        return Attempt(classify(error.code, enhanced, stage),
                       Reply(error.code, enhanced, text, str(stage)))
    text = str(error) or type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _stop(stage, f"the certificate of {t.host} could not be verified ({cause})")
        cause = cause.__cause__
    if isinstance(error, aiosmtplib.SMTPException) and "STARTTLS" in text \
            and stage is not Stage.AUTH:
        return _stop(Stage.STARTTLS,
                     f"{t.where} does not offer STARTTLS and smtp.tls is starttls: refusing to "
                     "log in or send in the clear (check the host and port, or use tls: "
                     "implicit on port 465)")
    if isinstance(error, aiosmtplib.SMTPException) and stage is Stage.AUTH:
        return _stop(stage, f"{t.where} offers no login method we can use ({text})")
    if isinstance(error, ValueError):
        return Attempt(Verdict(Action.FAIL, why="refused before sending"),
                       Reply(None, None, f"invalid address: {text}", str(stage)))
    return Attempt(lost(stage), Reply(None, None, text, str(stage)))


def _stop(stage: Stage, why: str) -> Attempt:
    return Attempt(Verdict(Action.STOP, why=why), Reply(None, None, why, str(stage)))


# --------------------------------------------------------------------------- one proof


async def send_one(transport: Transport, sender: str, address: str,
                   message: bytes | Outgoing) -> Attempt:
    """Send one message on a fresh connection (a proof); nothing is recorded."""
    session = Session(transport)
    try:
        return await session.send(sender, address, message)
    finally:
        await session.quit()
