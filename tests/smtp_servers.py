"""SMTP servers for tests: a small asyncio server on 127.0.0.1 with fault injection.

    with SmtpServer(Faults()) as server:      # a thread running its own event loop
        ... send to server.port ...
        server.accepted                       # messages answered 250 after the final dot
        server.received                       # every message whose final dot arrived

Faults decide each reply. Override a hook (or pass a subclass) to inject a failure: a reply
line ("451 4.3.0 try later"), a Drop() to close the connection without replying, or a
Delay(seconds, reply) to answer late. The server speaks enough ESMTP for aiosmtplib:
EHLO/HELO, AUTH PLAIN and LOGIN (when ``users`` is set), MAIL, RCPT, DATA, RSET, NOOP,
QUIT, and PIPELINING when asked (``pipelining=True``); it never offers STARTTLS. It is also
fast enough to be a benchmark's sink.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import mailbox
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Drop:
    """Close the connection without a reply."""


@dataclass(frozen=True)
class Delay:
    seconds: float
    then: str | Drop


Answer = str | Drop | Delay | None  # None: the default reply


@dataclass
class Session:
    number: int
    peer: str
    messages: int = 0  # messages completed on this session
    authenticated: str | None = None
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes  # as transmitted, dot-unstuffed, CRLF line ends, without the final dot
    session: int
    outcome: str  # "accepted", "rejected" (4xx/5xx after the dot) or "dropped" (no reply)


class Faults:
    """Every hook returns None for the normal reply; subclasses inject failures."""

    def on_connect(self, session: Session) -> Answer:
        return None

    def on_ehlo(self, session: Session) -> Answer:
        return None

    def on_auth(self, session: Session, user: str, password: str) -> Answer:
        return None

    def on_mail(self, session: Session, sender: str) -> Answer:
        return None

    def on_rcpt(self, session: Session, recipient: str) -> Answer:
        return None

    def on_data(self, session: Session) -> Answer:
        return None

    def on_dot(self, session: Session, message: bytes) -> Answer:
        return None


class Scripted(Faults):
    """Faults from plain functions, for one-off tests."""

    def __init__(self, *, rcpt: Callable[[Session, str], Answer] | None = None,
                 dot: Callable[[Session, bytes], Answer] | None = None,
                 mail: Callable[[Session, str], Answer] | None = None,
                 auth: Callable[[Session, str, str], Answer] | None = None,
                 connect: Callable[[Session], Answer] | None = None) -> None:
        self._rcpt, self._dot, self._mail, self._auth = rcpt, dot, mail, auth
        self._connect = connect

    def on_connect(self, session: Session) -> Answer:
        return self._connect(session) if self._connect else None

    def on_auth(self, session: Session, user: str, password: str) -> Answer:
        return self._auth(session, user, password) if self._auth else None

    def on_mail(self, session: Session, sender: str) -> Answer:
        return self._mail(session, sender) if self._mail else None

    def on_rcpt(self, session: Session, recipient: str) -> Answer:
        return self._rcpt(session, recipient) if self._rcpt else None

    def on_dot(self, session: Session, message: bytes) -> Answer:
        return self._dot(session, message) if self._dot else None


class SmtpServer:
    """A threaded asyncio SMTP server on 127.0.0.1 (port 0 unless given)."""

    def __init__(self, faults: Faults | None = None, *, users: dict[str, str] | None = None,
                 maildir: Path | None = None, keep: bool = True, port: int = 0,
                 pipelining: bool = False) -> None:
        self.faults = faults or Faults()
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920); commands are read in turn
        self.users = users
        self.maildir = mailbox.Maildir(maildir, create=True) if maildir else None
        self.keep = keep  # False: count only (benchmark sink)
        self.port = port
        self.received: list[Received] = []
        self.count = 0
        self.first_at = 0.0  # time.monotonic() of the first and last message stored
        self.last_at = 0.0
        self.sessions = 0
        self.auth_attempts = 0
        self.commands: list[str] = []  # every command verb, in order (all sessions)
        self.pipelined = 0  # MAIL commands whose next command had already arrived
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="smtp-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("SMTP test server did not start")

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(
            self._session, "127.0.0.1", self.port, limit=64 * 1024 * 1024))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    # ---------------------------------------------------------------- results

    @property
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.outcome == "accepted"]

    @property
    def delivered(self) -> list[Received]:
        """Accepted, or dropped after the final dot (the server may well deliver those)."""
        with self._lock:
            return [r for r in self.received if r.outcome in ("accepted", "dropped")]

    def _store(self, received: Received) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            self.first_at = self.first_at or now
            self.last_at = now
            if self.keep:
                self.received.append(received)
        if self.maildir is not None and received.outcome == "accepted":
            self.maildir.add(received.data)

    # ---------------------------------------------------------------- the protocol

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.sessions += 1
            number = self.sessions
        session = Session(number, str(writer.get_extra_info("peername")))
        try:
            if await self._answer(writer, self.faults.on_connect(session),
                                  "220 localhost ESMTP test server"):
                return
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb, _, arg = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
                verb = verb.upper()
                self.commands.append(verb)
                if verb == "MAIL" and reader._buffer:  # RCPT came before MAIL was answered
                    self.pipelined += 1
                if not await self._command(verb, arg, session, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer, default: str) -> bool:
        """Send the reply; True when the connection is to be closed."""
        if isinstance(answer, Delay):
            await asyncio.sleep(answer.seconds)
            answer = answer.then
        if isinstance(answer, Drop):
            return True
        reply = answer or default
        writer.write(reply.encode() + b"\r\n")
        await writer.drain()
        return reply.startswith("421")

    async def _command(self, verb: str, arg: str, session: Session,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one command; False ends the session."""
        if verb in ("EHLO", "HELO"):
            answer = self.faults.on_ehlo(session)
            if answer is not None:
                return not await self._answer(writer, answer, "")
            lines = ["localhost", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 52428800"]
            if self.pipelining:
                lines.append("PIPELINING")
            if self.users is not None:
                lines.append("AUTH PLAIN LOGIN")
            text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
            writer.write(text.encode())
            await writer.drain()
            return True
        if verb == "AUTH":
            return await self._auth(arg, session, reader, writer)
        if verb == "MAIL":
            if self.users is not None and session.authenticated is None:
                return not await self._answer(writer, "530 5.7.0 Authentication required", "")
            session.mail_from = _address(arg)
            session.rcpt_to = []
            return not await self._answer(
                writer, self.faults.on_mail(session, session.mail_from), "250 2.1.0 Ok")
        if verb == "RCPT":
            if session.mail_from is None:
                return not await self._answer(writer, "503 5.5.1 MAIL first", "")
            recipient = _address(arg)
            answer = self.faults.on_rcpt(session, recipient)
            if answer is None or (isinstance(answer, str) and answer.startswith("2")):
                session.rcpt_to.append(recipient)
            return not await self._answer(writer, answer, "250 2.1.5 Ok")
        if verb == "DATA":
            if not session.rcpt_to:
                return not await self._answer(writer, "503 5.5.1 RCPT first", "")
            answer = self.faults.on_data(session)
            if answer is not None:
                return not await self._answer(writer, answer, "")
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            await writer.drain()
            data = await _read_data(reader)
            answer = self.faults.on_dot(session, data)
            queue_id = f"Q{next(self._ids):06d}"
            outcome = "accepted"
            if isinstance(answer, Drop) or (isinstance(answer, Delay)
                                            and isinstance(answer.then, Drop)):
                outcome = "dropped"
            elif answer is not None:
                reply = answer.then if isinstance(answer, Delay) else answer
                outcome = "accepted" if str(reply).startswith("2") else "rejected"
            received = Received(session.mail_from or "", tuple(session.rcpt_to), data,
                                session.number, outcome)
            if outcome == "dropped":
                self._store(received)  # the server got it all: it may deliver it
            closing = await self._answer(writer, answer, f"250 2.0.0 Ok: queued as {queue_id}")
            if outcome != "dropped":
                self._store(received)
            session.messages += 1
            session.mail_from, session.rcpt_to = None, []
            return not closing
        if verb == "RSET":
            session.mail_from, session.rcpt_to = None, []
            return not await self._answer(writer, "250 2.0.0 Ok", "")
        if verb == "NOOP":
            return not await self._answer(writer, "250 2.0.0 Ok", "")
        if verb == "QUIT":
            await self._answer(writer, "221 2.0.0 Bye", "")
            return False
        return not await self._answer(writer, "502 5.5.2 Command not recognised", "")

    async def _auth(self, arg: str, session: Session, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> bool:
        with self._lock:
            self.auth_attempts += 1
        mechanism, _, initial = arg.partition(" ")
        if self.users is None:
            return not await self._answer(writer, "502 5.5.1 AUTH not available", "")
        if mechanism.upper() == "PLAIN":
            if not initial:
                writer.write(b"334 \r\n")
                await writer.drain()
                initial = (await reader.readline()).decode().strip()
            _, user, password = base64.b64decode(initial).decode().split("\0")
        elif mechanism.upper() == "LOGIN":
            if initial:
                user = base64.b64decode(initial).decode()
            else:
                writer.write(b"334 VXNlcm5hbWU6\r\n")
                await writer.drain()
                user = base64.b64decode((await reader.readline()).strip()).decode()
            writer.write(b"334 UGFzc3dvcmQ6\r\n")
            await writer.drain()
            password = base64.b64decode((await reader.readline()).strip()).decode()
        else:
            return not await self._answer(writer, "504 5.5.4 Unrecognised mechanism", "")
        answer = self.faults.on_auth(session, user, password)
        if answer is None and self.users.get(user) != password:
            answer = "535 5.7.8 Authentication credentials invalid"
        if answer is None:
            session.authenticated = user
        return not await self._answer(writer, answer, "235 2.7.0 Authentication successful")


async def _read_data(reader: asyncio.StreamReader) -> bytes:
    """The message up to the final dot, dot-unstuffed."""
    raw = await reader.readuntil(b"\r\n.\r\n")  # messages are never empty
    body = raw[: -len(b".\r\n")]
    if b"\r\n.." in body or body.startswith(b".."):
        if body.startswith(b".."):
            body = body[1:]
        body = body.replace(b"\r\n..", b"\r\n.")
    return body


def _address(arg: str) -> str:
    """``FROM:<a@b> SIZE=12`` -> ``a@b``."""
    _, _, rest = arg.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1:rest.index(">")] if ">" in rest else rest[1:]
    return rest.split(" ")[0]
