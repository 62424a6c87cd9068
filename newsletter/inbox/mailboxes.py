"""The mailbox ``newsletter inbox`` reads: a Maildir, an mbox file, or IMAP over TLS.

In: where the mailbox is (newsletter.yaml's ``inbox:`` section, or ``--maildir`` /
``--mbox``) and what to do with a message once it is dealt with. Out: each message as an
``Incoming`` (its bytes, at most MAX_KEEP of them, and the sha256 of all of them), and
``processed(key)`` to move it to the processed folder, flag it, or (only when asked)
delete it. Messages left for a person are never touched.

    Maildir  move: into the Maildir++ folder ``.<processed_folder>`` (marked seen);
             flag: marked seen (``:2,S``) where it is; delete: unlinked
    mbox     move: appended, byte for byte, to the file ``<processed_folder>`` beside it,
             then removed; flag: left as it is (the database remembers it); delete:
             removed. The file is locked (dot-lock and fcntl, as MTAs do) while it is read.
    IMAP     move: MOVE (or COPY, \\Deleted, UID EXPUNGE of that one message) to the
             processed folder, created if missing; flag: \\Seen; delete: \\Deleted and
             UID EXPUNGE. Bodies are fetched with BODY.PEEK, so nothing is marked read by
             reading. TLS with the certificate checked (implicit or STARTTLS); plaintext
             only to this machine; the password from the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import mailbox
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from newsletter.errors import MailboxError
from newsletter.model import AfterReading, ImapSettings, TlsMode
from newsletter.text.addresses import is_loopback

MAX_KEEP = 4 * 1024 * 1024  # bytes kept for classifying; the fingerprint covers them all
CHUNK = 1024 * 1024
FETCH_BATCH = 50


class Incoming(msgspec.Struct, frozen=True):
    key: str  # the mailbox's own name for the message
    data: bytes  # the message, or its first MAX_KEEP bytes
    fingerprint: str  # sha256 of every byte: a message is handled once
    size: int


class Mailbox(Protocol):
    where: str  # for messages: "Maildir /srv/mail/bounces"

    def messages(self) -> Iterator[Incoming]:
        """Every message in the mailbox (not its processed folder), oldest first."""

    def processed(self, key: str) -> None:
        """Move, flag or delete a message that was dealt with (as the settings say)."""

    def close(self) -> None:
        """Finish: write what must be written, release locks and connections."""


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- Maildir


class MaildirBox:
    """A Maildir: ``new/`` and ``cur/``, each message a file, renamed to move it."""

    def __init__(self, path: Path, after: AfterReading, processed_folder: str) -> None:
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise MailboxError(f"{path}: not a Maildir (it needs cur/, new/ and tmp/ "
                               "folders)")
        self.path = path
        self.after = after
        self.folder = path / f".{processed_folder}"
        self.where = f"Maildir {path}"

    def messages(self) -> Iterator[Incoming]:
        names = []
        for sub in ("new", "cur"):
            try:
                entries = os.listdir(self.path / sub)
            except OSError as e:
                raise MailboxError(f"{self.path / sub}: cannot read ({e.strerror})") from e
            names += [(name.split(":")[0], f"{sub}/{name}") for name in entries
                      if not name.startswith(".")]
        for _, key in sorted(names):
            found = self._read(key)
            if found is not None:
                yield found

    def _read(self, key: str) -> Incoming | None:
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        try:
            with open(self.path / key, "rb") as f:
                if not os.path.isfile(f.name):
                    return None
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if len(kept) < MAX_KEEP:
                        kept += chunk[:MAX_KEEP - len(kept)]
        except (FileNotFoundError, IsADirectoryError):
            return None  # moved by another run, or not a message
        except OSError as e:
            raise MailboxError(f"{self.path / key}: cannot read ({e.strerror})") from e
        return Incoming(key, bytes(kept), digest.hexdigest(), size)

    def processed(self, key: str) -> None:
        source = self.path / key
        base, _, flags = source.name.partition(":2,")
        seen = "".join(sorted(set(flags) | {"S"}))
        try:
            if self.after is AfterReading.DELETE:
                source.unlink()
            elif self.after is AfterReading.FLAG:
                os.rename(source, self.path / "cur" / f"{base}:2,{seen}")
            else:
                for sub in ("cur", "new", "tmp"):
                    (self.folder / sub).mkdir(parents=True, exist_ok=True)
                (self.folder / "maildirfolder").touch()
                os.rename(source, self.folder / "cur" / f"{base}:2,{seen}")
        except FileNotFoundError:
            return  # another run got there first
        except OSError as e:
            raise MailboxError(f"{source}: cannot move ({e.strerror})") from e

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- mbox


class MboxBox:
    """An mbox file, locked while it is read; moved messages are copied byte for byte."""

    def __init__(self, path: Path, after: AfterReading, processed_folder: str) -> None:
        if not path.is_file():
            raise MailboxError(f"{path}: no such mbox file")
        self.path = path
        self.after = after
        self.target = path.parent / processed_folder
        self.where = f"mbox {path}"
        self._keys: dict[str, str] = {}  # as shown -> as mailbox.mbox has it (an int, really)
        self._done: list[str] = []
        try:
            self.box = mailbox.mbox(path, create=False)
            self.box.lock()
        except (OSError, mailbox.Error) as e:
            raise MailboxError(f"{path}: cannot open or lock the mbox file ({e})") from e

    def messages(self) -> Iterator[Incoming]:
        for key in list(self.box.iterkeys()):
            data = self.box.get_bytes(key)
            self._keys[str(key)] = key
            yield Incoming(str(key), data[:MAX_KEEP], _fingerprint(data), len(data))

    def processed(self, key: str) -> None:
        if self.after is not AfterReading.FLAG:
            self._done.append(self._keys[key])

    def close(self) -> None:
        try:
            if self._done:
                if self.after is AfterReading.MOVE:
                    self._append([self.box.get_bytes(key, from_=True) for key in self._done])
                for key in self._done:
                    self.box.discard(key)
                self.box.flush()
        except (OSError, mailbox.Error) as e:
            raise MailboxError(f"{self.path}: cannot write ({e})") from e
        finally:
            with contextlib.suppress(OSError, mailbox.Error):
                self.box.unlock()
            self.box.close()

    def _append(self, messages: list[bytes]) -> None:
        target = mailbox.mbox(self.target, create=True)
        target.lock()
        try:
            for raw in messages:
                target.add(raw)
            target.flush()
        finally:
            target.unlock()
            target.close()


# --------------------------------------------------------------------------- IMAP


class ImapBox:
    """An IMAP folder over TLS (imapclient); nothing is read as \\Seen by reading it."""

    def __init__(self, settings: ImapSettings, after: AfterReading, processed_folder: str,
                 environ: Mapping[str, str] | None = None) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError, LoginError

        env = os.environ if environ is None else environ
        self.settings = settings
        self.after = after
        self.processed_folder = processed_folder
        where = f"{settings.host}:{settings.port}"
        self.where = f"IMAP {where} folder {settings.folder}"
        password = env.get(settings.password_env)
        if not password:
            raise MailboxError(f"inbox.imap: the password is not set: put it in the "
                               f"environment variable {settings.password_env} (never in "
                               "newsletter.yaml)")
        if settings.tls is TlsMode.NONE and not is_loopback(settings.host):
            raise MailboxError(f"inbox.imap.tls is none but {settings.host} is not this "
                               "machine: refusing to send the password in the clear")
        context = ssl.create_default_context()
        self._done: list[int] = []
        try:
            self.client: Any = IMAPClient(settings.host, port=settings.port,
                                          ssl=settings.tls is TlsMode.IMPLICIT,
                                          ssl_context=context, timeout=settings.timeout)
        except ssl.SSLCertVerificationError as e:
            raise MailboxError(f"{where}: the certificate could not be verified "
                               f"({e.verify_message}); nothing was read") from e
        except (OSError, IMAPClientError) as e:
            raise MailboxError(f"{where}: cannot connect ({_said(e)}); check "
                               "inbox.imap.host and port") from e
        try:
            if settings.tls is TlsMode.STARTTLS:
                self.client.starttls(context)
            self.client.login(settings.user, password)
            self.client.select_folder(settings.folder)
        except ssl.SSLCertVerificationError as e:
            self._abandon()
            raise MailboxError(f"{where}: the certificate could not be verified "
                               f"({e.verify_message}); nothing was read") from e
        except LoginError as e:
            self._abandon()
            raise MailboxError(f"{where}: login refused for {settings.user} ({_said(e)}); "
                               f"check inbox.imap.user and {settings.password_env}") from e
        except (OSError, IMAPClientError) as e:
            self._abandon()
            raise MailboxError(f"{where}: {_said(e)}") from e

    def _abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.client.shutdown()

    def messages(self) -> Iterator[Incoming]:
        from imapclient.exceptions import IMAPClientError

        try:
            uids = sorted(self.client.search(["NOT", "DELETED"]))
            for start in range(0, len(uids), FETCH_BATCH):
                batch = uids[start:start + FETCH_BATCH]
                sizes = self.client.fetch(batch, ["RFC822.SIZE"])
                whole = [uid for uid in batch
                         if int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0)) <= MAX_KEEP]
                fetched = self.client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
                for uid in batch:
                    size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                    if uid in fetched:
                        data = bytes(fetched[uid].get(b"BODY[]") or b"")
                        yield Incoming(str(uid), data, _fingerprint(data), size)
                    elif uid not in whole:
                        part = self.client.fetch([uid], [f"BODY.PEEK[]<0.{MAX_KEEP}>"])
                        data = bytes(part.get(uid, {}).get(b"BODY[]<0>") or b"")
                        # the bytes not fetched are stood for by the size
                        digest = _fingerprint(f"{size}:".encode() + data)
                        yield Incoming(str(uid), data, digest, size)
        except (OSError, IMAPClientError) as e:
            raise MailboxError(f"{self.where}: {_said(e)}") from e

    def processed(self, key: str) -> None:
        self._done.append(int(key))

    def close(self) -> None:
        from imapclient.exceptions import IMAPClientError

        try:
            if self._done:
                self._finish(self._done)
            with contextlib.suppress(OSError, IMAPClientError):
                self.client.logout()
        except (OSError, IMAPClientError) as e:
            self._abandon()
            raise MailboxError(f"{self.where}: {_said(e)}") from e

    def _finish(self, uids: list[int]) -> None:
        client = self.client
        if self.after is AfterReading.FLAG:
            client.add_flags(uids, [b"\\Seen"])
            return
        if self.after is AfterReading.MOVE:
            folder = self.processed_folder
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.add_flags(uids, [b"\\Seen"])
            if client.has_capability("MOVE"):
                client.move(uids, folder)
                return
            client.copy(uids, folder)
        client.delete_messages(uids)
        # without UIDPLUS there is no expunging only these: they stay marked \Deleted
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)


def _said(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    text = str(error)
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return text.strip() or type(error).__name__


# --------------------------------------------------------------------------- choosing


def open_mailbox(*, maildir: Path | None = None, mbox: Path | None = None,
                 imap: ImapSettings | None = None, after: AfterReading = AfterReading.MOVE,
                 processed_folder: str = "Processed",
                 environ: Mapping[str, str] | None = None) -> Mailbox:
    """The one mailbox named (exactly one of maildir, mbox, imap)."""
    if maildir is not None:
        return MaildirBox(maildir, after, processed_folder)
    if mbox is not None:
        return MboxBox(mbox, after, processed_folder)
    if imap is not None:
        return ImapBox(imap, after, processed_folder, environ)
    raise MailboxError("no mailbox to read: add an inbox: section to newsletter.yaml "
                       "(maildir, mbox or imap), or give --maildir PATH or --mbox PATH")
