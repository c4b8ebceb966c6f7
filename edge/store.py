"""The edge node's SQLite store: what it knows, what it did, and its outbox.

Every state change and the event that tells the cloud about it are written in
ONE transaction (the transactional outbox), so a committed loan always has its
event and an event never exists without its loan. Seqs are 1, 2, 3, ... with
no gaps, kept in ``Meta`` inside the same transaction.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from peewee import (
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from edge import circulation
from protocol.envelope import make_envelope
from protocol.hlc import HybridClock, Timestamp

logger = logging.getLogger(__name__)

# synchronous=FULL: a commit is on disk before the reader is told "done"
# (invariant 2); WAL keeps readers from blocking the writer; busy_timeout lets
# the Flask, sync and hardware threads queue for the write lock instead of failing.
PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "cache_size": -16_000,  # 16 MB
    "busy_timeout": 10_000,
}
# Acknowledged outbox rows are kept this long as the node's own journal.
JOURNAL_RETENTION_DAYS = 7

db = SqliteDatabase(None, lock_type="IMMEDIATE")


class BaseModel(Model):
    """Every edge table lives in the late-bound ``db``."""

    class Meta:
        database = db


class Meta(BaseModel):
    """Key/value facts about this node: last seq, last acked seq, HLC."""

    key = CharField(primary_key=True)
    value = TextField()


class Title(BaseModel):
    """A catalogue record relevant to this node."""

    id = CharField(primary_key=True)
    title = TextField()
    author = TextField(default="")
    isbn = CharField(default="")
    language = CharField(default="")
    item_type = CharField(default="book")


class Copy(BaseModel):
    """A copy this node knows about; ``here`` when it sits at this node."""

    barcode = CharField(primary_key=True)
    title_id = CharField(null=True)
    slot = IntegerField(null=True)
    here = BooleanField(default=True)
    on_loan = BooleanField(default=False)


class Reader(BaseModel):
    """A reader card, as far as this node knows."""

    card = CharField(primary_key=True)
    name = TextField(default="")
    category = CharField(default="adult")
    pin_hash = CharField(default="")
    blocked_reason = TextField(null=True)


class Loan(BaseModel):
    """A loan made or closed at this node."""

    id = CharField(primary_key=True)
    copy = CharField(index=True)
    reader = CharField(index=True)
    checked_out_at = DateTimeField()
    due = DateField()
    returned_at = DateTimeField(null=True)


class Outbox(BaseModel):
    """Events for the cloud, in seq order; ``acked`` once the cloud applied them."""

    seq = IntegerField(primary_key=True)
    type = CharField()
    envelope = TextField()
    created_at = DateTimeField()
    acked = BooleanField(default=False, index=True)


class DispenseIntent(BaseModel):
    """Written before a machine's motor turns, closed when the outcome is known."""

    id = CharField(primary_key=True)
    copy = CharField()
    reader = CharField()
    slot = IntegerField()
    state = CharField(default="pending")  # pending | done | failed
    created_at = DateTimeField()


TABLES = [Meta, Title, Copy, Reader, Loan, Outbox, DispenseIntent]


class CirculationRefused(Exception):
    """A checkout refused by the rules; carries the Refusal."""

    def __init__(self, refusal: circulation.Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True)
class LoanResult:
    """What the reader is told after a checkout."""

    loan_id: str
    copy: str
    reader: str
    due: date
    seq: int
    title: str | None


@dataclass(frozen=True)
class ReturnResult:
    """What the reader is told after a return."""

    copy: str
    loan_id: str | None
    known: bool
    seq: int


def open_db(path: str) -> SqliteDatabase:
    """Bind the store to the SQLite file at ``path`` and create the tables."""
    db.init(path, pragmas=PRAGMAS, check_same_thread=False)
    db.connect(reuse_if_open=True)
    db.create_tables(TABLES)
    return db


def utcnow() -> datetime:
    """Now, in UTC, aware."""
    return datetime.now(UTC)


class EdgeStore:
    """The node's store; one per process, shared by the Flask, sync and hardware threads."""

    def __init__(self, node_id: str, path: str, clock_ms: Any = None) -> None:
        self.node_id = node_id
        self.path = path
        open_db(path)
        self._lock = threading.Lock()
        last = self._meta("hlc")
        self.clock = HybridClock(clock_ms, Timestamp.decode(last) if last else None)

    # -- meta ---------------------------------------------------------------

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = Meta.get_or_none(Meta.key == key)
        return row.value if row else default

    def _set_meta(self, key: str, value: str) -> None:
        Meta.insert(key=key, value=value).on_conflict_replace().execute()

    # -- the outbox ---------------------------------------------------------

    def _append_event(self, type_: str, body: dict[str, Any], now: datetime) -> int:
        """Add an event to the outbox; the caller holds ``self._lock`` and a transaction."""
        seq = int(self._meta("last_seq", "0") or 0) + 1
        hlc = self.clock.now().encode()
        env = make_envelope(self.node_id, seq, hlc, now, type_, body)
        Outbox.create(
            seq=seq, type=type_, envelope=json.dumps(env, ensure_ascii=False), created_at=now
        )
        self._set_meta("last_seq", str(seq))
        self._set_meta("hlc", hlc)
        return seq

    def pending(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Unacknowledged events with seq > ``after_seq``, oldest first."""
        rows = (
            Outbox.select(Outbox.seq, Outbox.envelope)
            .where((Outbox.seq > after_seq) & (Outbox.acked == False))  # noqa: E712
            .order_by(Outbox.seq)
            .limit(limit)
        )
        return [(r.seq, json.loads(r.envelope)) for r in rows]

    def mark_acked(self, upto: int) -> int:
        """The cloud applied every event up to ``upto``; returns the new last acked seq."""
        with self._lock, db.atomic():
            last = self.last_acked()
            upto = min(upto, self.last_seq())
            if upto <= last:
                return last
            Outbox.update(acked=True).where(
                (Outbox.seq > last) & (Outbox.seq <= upto)
            ).execute()
            self._set_meta("last_acked", str(upto))
            return upto

    def prune_journal(self, older_than: datetime) -> int:
        """Delete acknowledged outbox rows created before ``older_than``."""
        with db.atomic():
            return (
                Outbox.delete()
                .where((Outbox.acked == True) & (Outbox.created_at < older_than))  # noqa: E712
                .execute()
            )

    def last_seq(self) -> int:
        """The seq of the newest event written."""
        return int(self._meta("last_seq", "0") or 0)

    def last_acked(self) -> int:
        """The highest seq the cloud has acknowledged."""
        return int(self._meta("last_acked", "0") or 0)

    def outbox_depth(self) -> int:
        """How many events the cloud has not yet acknowledged."""
        return self.last_seq() - self.last_acked()

    # -- circulation ----------------------------------------------------------

    def reader_view(self, card: str) -> circulation.ReaderView | None:
        """The rules' view of a reader, or None."""
        r = Reader.get_or_none(Reader.card == card)
        return circulation.ReaderView(r.card, r.category, r.blocked_reason) if r else None

    def copy_view(self, barcode: str) -> circulation.CopyView | None:
        """The rules' view of a copy, or None."""
        c = Copy.get_or_none(Copy.barcode == barcode)
        if c is None:
            return None
        t = Title.get_or_none(Title.id == c.title_id)
        return circulation.CopyView(c.barcode, t.item_type if t else "book", c.on_loan, c.here)

    def open_loans(self, card: str) -> int:
        """How many loans of this reader are open as known here."""
        return Loan.select().where((Loan.reader == card) & Loan.returned_at.is_null()).count()

    def check_checkout(self, card: str, barcode: str) -> circulation.Refusal | None:
        """Would the rules allow this checkout now?"""
        return circulation.check_checkout(
            self.reader_view(card), self.copy_view(barcode), self.open_loans(card)
        )

    def checkout(self, card: str, barcode: str, *, slot: int | None = None,
                 intent_id: str | None = None, now: datetime | None = None) -> LoanResult:
        """Record a loan and its ``loan.checkout`` event in one transaction.

        At a machine the book has already left the slot, so the rules were
        checked before the motor turned; ``intent_id`` closes that intent.
        """
        now = now or utcnow()
        with self._lock, db.atomic():
            if intent_id is None:
                refusal = self.check_checkout(card, barcode)
                if refusal:
                    raise CirculationRefused(refusal)
            view = self.copy_view(barcode)
            due = circulation.due_date(view.item_type if view else "book", now.date())
            loan_id = intent_id or uuid.uuid4().hex
            Loan.create(id=loan_id, copy=barcode, reader=card, checked_out_at=now, due=due)
            Copy.update(on_loan=True, here=False, slot=None).where(
                Copy.barcode == barcode
            ).execute()
            if intent_id:
                DispenseIntent.update(state="done").where(
                    DispenseIntent.id == intent_id
                ).execute()
            seq = self._append_event("loan.checkout", {
                "loan_id": loan_id, "copy": barcode, "reader": card, "due": due, "slot": slot,
            }, now)
        c = Copy.get_or_none(Copy.barcode == barcode)
        t = Title.get_or_none(Title.id == c.title_id) if c else None
        logger.info("checkout %s to %s due %s (seq %d)", barcode, card, due, seq)
        return LoanResult(loan_id, barcode, card, due, seq, t.title if t else None)

    def checkin(self, barcode: str, *, slot: int | None = None,
                now: datetime | None = None) -> ReturnResult:
        """Accept the return of ANY copy of the network and record its ``loan.return``."""
        now = now or utcnow()
        with self._lock, db.atomic():
            loan = (
                Loan.select()
                .where((Loan.copy == barcode) & Loan.returned_at.is_null())
                .order_by(Loan.checked_out_at.desc())
                .first()
            )
            if loan:
                Loan.update(returned_at=now).where(Loan.id == loan.id).execute()
            copy = Copy.get_or_none(Copy.barcode == barcode)
            if copy:
                Copy.update(on_loan=False, here=True, slot=slot).where(
                    Copy.barcode == barcode
                ).execute()
            else:
                Copy.create(barcode=barcode, here=True, on_loan=False, slot=slot)
            seq = self._append_event("loan.return", {
                "copy": barcode,
                "loan_id": loan.id if loan else None,
                "reader": loan.reader if loan else None,
            }, now)
        logger.info("return %s (loan %s, seq %d)", barcode, loan.id if loan else "-", seq)
        return ReturnResult(barcode, loan.id if loan else None, copy is not None, seq)

    def begin_dispense(self, card: str, barcode: str, slot: int) -> str:
        """Write the intent to dispense before the motor turns; returns its id."""
        intent_id = uuid.uuid4().hex
        with self._lock, db.atomic():
            DispenseIntent.create(id=intent_id, copy=barcode, reader=card, slot=slot,
                                  created_at=utcnow())
        return intent_id

    def fail_dispense(self, intent_id: str) -> None:
        """The book did not leave the machine: no loan."""
        with self._lock, db.atomic():
            DispenseIntent.update(state="failed").where(DispenseIntent.id == intent_id).execute()

    # -- seeding (the change feed replaces this in issue 4) -------------------

    def seed(self, *, titles: list[dict[str, Any]], copies: list[dict[str, Any]],
             readers: list[dict[str, Any]]) -> None:
        """Load reference data in bulk (demo and tests)."""
        with self._lock, db.atomic():
            for model, rows in ((Title, titles), (Copy, copies), (Reader, readers)):
                for i in range(0, len(rows), 500):
                    model.insert_many(rows[i : i + 500]).on_conflict_replace().execute()

    def summary(self) -> dict[str, Any]:
        """Counts a person or a status message wants."""
        return {
            "node": self.node_id,
            "last_seq": self.last_seq(),
            "last_acked": self.last_acked(),
            "outbox_depth": self.outbox_depth(),
            "open_loans": Loan.select().where(Loan.returned_at.is_null()).count(),
            "copies_here": Copy.select().where(Copy.here == True).count(),  # noqa: E712
            "readers": Reader.select().count(),
        }
