"""Notices to readers (due soon, overdue, hold ready, blocked): an outbox and its senders.

Whatever decides a reader must be told calls ``queue`` in its own transaction:
the notice's id names what it is about (``overdue/<loan>/<due>``), so deciding
twice queues it once. ``deliver`` hands unsent notices to a ``Sender`` and marks
each sent only after the sender returned: a crash in between sends it again
(at least once), and a sender should be idempotent by the notice's id where it
can (the directory sender is: one file per notice). A claim with a lease keeps
two cloud processes from sending the same notice at the same time.

Senders are chosen by URL (``cloud.notices_url``, else ``KITAP_NOTICES_URL``):
``dir:PATH`` writes one text file per notice, ``jsonl:PATH`` appends JSON
lines, ``log:`` only logs. Others (SMTP, SMS) register a scheme with
``register``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from peewee import SqliteDatabase

from cloud import settings
from cloud import store as s

logger = logging.getLogger(__name__)

# A notice claimed by a process that then died is sent by another after this.
CLAIM_LEASE = timedelta(minutes=5)
# Notices sent per delivery round: a round stays short; the next one continues.
DELIVER_BATCH = 200
ENV_URL = "KITAP_NOTICES_URL"


@dataclass(frozen=True)
class Message:
    """A notice as a sender sees it."""

    id: str
    reader: str
    name: str
    contact: str | None
    kind: str
    subject: str
    body: str
    created_at: str


class Sender(Protocol):
    """Delivers one notice; raises if it could not (it is tried again later)."""

    def send(self, msg: Message) -> None:
        """Deliver ``msg``."""


def _safe(notice_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in notice_id)


class DirSender:
    """Development sender: one readable text file per notice in a directory."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, msg: Message) -> None:
        """Write ``<id>.txt`` (atomically: a resend overwrites, never doubles)."""
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"{_safe(msg.id)}.txt"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(f"To: {msg.name} (card {msg.reader})"
                       f"{', ' + msg.contact if msg.contact else ''}\n"
                       f"Subject: {msg.subject}\nDate: {msg.created_at}\nKind: {msg.kind}\n\n"
                       f"{msg.body}\n", encoding="utf-8")
        tmp.replace(target)


class JsonlSender:
    """Development sender: one JSON line per notice, appended to a file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def send(self, msg: Message) -> None:
        """Append the notice as a JSON line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(msg), ensure_ascii=False) + "\n")


class LogSender:
    """Sends nothing: logs the notice (when no place for them is configured)."""

    def send(self, msg: Message) -> None:
        """Log the notice."""
        logger.info("notice %s to %s: %s", msg.id, msg.reader, msg.subject)


SENDERS: dict[str, Callable[[str], Sender]] = {
    "dir": DirSender,
    "jsonl": JsonlSender,
    "log": lambda _path: LogSender(),
}


def register(scheme: str, factory: Callable[[str], Sender]) -> None:
    """Make ``scheme:...`` URLs build senders with ``factory(rest_of_url)``."""
    SENDERS[scheme] = factory


def sender_from_url(url: str) -> Sender:
    """The sender a URL names (``dir:PATH``, ``jsonl:PATH``, ``log:``)."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in SENDERS:
        raise ValueError(f"unknown notices URL {url!r} (schemes: {', '.join(sorted(SENDERS))})")
    if rest.startswith("//"):
        rest = rest[2:]
    return SENDERS[scheme](rest)


def configured_url() -> str:
    """The notices URL: the setting, the environment, or a default beside the database."""
    url = settings.get("cloud.notices_url") or os.environ.get(ENV_URL, "")
    if url:
        return url
    if isinstance(s.db.obj, SqliteDatabase) and s.db.obj.database not in ("", ":memory:"):
        return "dir:" + str(Path(s.db.obj.database).resolve().parent / "notices")
    return "log:"


def queue(reader: str, kind: str, key: str, subject: str, body: str,
          now: datetime | None = None) -> bool:
    """Queue a notice once per ``key``; True if it is new."""
    if s.Notice.select().where(s.Notice.id == key).exists():
        return False
    s.Notice.insert(id=key, reader=reader, kind=kind, subject=subject, body=body,
                    created_at=now or s.utcnow()).on_conflict_ignore().execute()
    return True


def deliver(sender: Sender | None = None, limit: int = DELIVER_BATCH,
            now: datetime | None = None) -> int:
    """Send unsent notices; returns how many were sent."""
    sender = sender or sender_from_url(configured_url())
    now = now or s.utcnow()
    due = list(s.Notice.select().where(
        s.Notice.sent_at.is_null()
        & (s.Notice.claimed_at.is_null() | (s.Notice.claimed_at < now - CLAIM_LEASE)))
        .order_by(s.Notice.created_at, s.Notice.id).limit(limit))
    sent = 0
    for n in due:
        claimed = s.Notice.update(claimed_at=now, attempts=s.Notice.attempts + 1).where(
            (s.Notice.id == n.id) & s.Notice.sent_at.is_null()
            & (s.Notice.claimed_at.is_null() | (s.Notice.claimed_at < now - CLAIM_LEASE))
        ).execute()
        if not claimed:
            continue  # another process has it
        reader = s.Reader.get_or_none(s.Reader.card == n.reader)
        msg = Message(n.id, n.reader, reader.name if reader else "", reader.contact if reader
                      else None, n.kind, n.subject, n.body, n.created_at.isoformat())
        try:
            sender.send(msg)
        except Exception as exc:  # noqa: BLE001 - any sender failure: keep it, try later
            logger.warning("notice %s not sent: %s", n.id, exc)
            s.Notice.update(claimed_at=None, last_error=str(exc)[:500]).where(
                s.Notice.id == n.id).execute()
            continue
        s.Notice.update(sent_at=s.utcnow(), last_error=None).where(s.Notice.id == n.id).execute()
        sent += 1
    return sent
