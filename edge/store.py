"""The edge node's SQLite store: what it knows, what it did, and its outbox.

Every state change and the event that tells the cloud about it are written in
ONE transaction (the transactional outbox), so a committed loan always has its
event and an event never exists without its loan. Seqs are 1, 2, 3, ... with
no gaps, kept in ``Meta`` inside the same transaction.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from peewee import (
    BooleanField,
    CharField,
    CompositeKey,
    DateField,
    DateTimeField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)
from playhouse.migrate import SqliteMigrator, migrate

from edge import circulation, routing
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
# The library's calendar until the cloud says otherwise (its setting
# cloud.timezone comes down the feed; KITAP_TIMEZONE overrides this default):
# due dates count in the library's days whatever zone the node's OS runs in,
# and a branch open all night must not lend "yesterday" after midnight.
DEFAULT_TIMEZONE = "Asia/Almaty"

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
    holds_waiting = IntegerField(default=0)  # readers waiting for it anywhere (blocks renewals)
    # The first hold waiting for it with no copy yet, and where it is collected: a copy
    # of this title returned anywhere goes there (edge/routing.py).
    next_hold = CharField(null=True)
    next_pickup = CharField(null=True)


class Copy(BaseModel):
    """A copy this node knows about; ``here`` when it sits at this node."""

    barcode = CharField(primary_key=True)
    title_id = CharField(null=True)
    slot = IntegerField(null=True)
    here = BooleanField(default=True)
    on_loan = BooleanField(default=False)
    # Its return policy, from the cloud's feed: a fixed copy (floating False) goes back
    # to home_node; transit_to: where it is being sent (edge/routing.py).
    home_node = CharField(null=True)
    floating = BooleanField(null=True)
    transit_to = CharField(null=True)
    transit_hold = CharField(null=True)   # ... for that hold there (None: home)


class Reader(BaseModel):
    """A reader card, as far as this node knows."""

    card = CharField(primary_key=True)
    name = TextField(default="")
    category = CharField(default="adult")
    pin_hash = CharField(default="")
    blocked_reason = TextField(null=True)
    blocked_by = CharField(null=True)         # staff | auto | kiosk (a self-check's 01)
    open_loans = IntegerField(default=0)      # across the network, as the cloud last said
    fees_owed = IntegerField(default=0)       # in tiyn (1/100 tenge), as the cloud last said
    partner = CharField(null=True)            # the partner organisation, for its discounts
    synced_at = DateTimeField(null=True)      # when the cloud's figures above arrived
    wrong_pins = IntegerField(default=0)
    locked_until = DateTimeField(null=True)


class Policy(BaseModel):
    """A loan policy row from the cloud; "*" matches any item type or category."""

    item_type = CharField()
    category = CharField()
    loan_days = IntegerField()
    max_items = IntegerField()
    renewals = IntegerField()

    class Meta:
        primary_key = CompositeKey("item_type", "category")


class Hold(BaseModel):
    """A reservation to hand out at this node."""

    id = CharField(primary_key=True)
    title_id = CharField()
    copy = CharField(null=True, index=True)  # the copy set aside, once one is
    reader = CharField(index=True)
    status = CharField(default="waiting")    # waiting | ready | picked_up
    expires = DateField(null=True)


class Staff(BaseModel):
    """A staff account at this node (desk login)."""

    username = CharField(primary_key=True)
    password_hash = CharField()
    role = CharField(default="librarian")


class Payment(BaseModel):
    """A payment taken at this node (a fee or a service)."""

    id = CharField(primary_key=True)
    reader = CharField(index=True)
    amount = IntegerField()                  # tiyn
    kind = CharField()                       # fee | service
    description = TextField(default="")
    taken_at = DateTimeField()


class Loan(BaseModel):
    """A loan made or closed at this node."""

    id = CharField(primary_key=True)
    copy = CharField(index=True)
    reader = CharField(index=True)
    checked_out_at = DateTimeField()
    due = DateField()
    returned_at = DateTimeField(null=True)
    renewals = IntegerField(default=0)
    hold_id = CharField(null=True)


class Outbox(BaseModel):
    """Events for the cloud, in seq order; ``acked`` once the cloud applied them."""

    seq = IntegerField(primary_key=True)
    type = CharField()
    copy = CharField(null=True, index=True)  # the copy the event names, if one
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


TABLES = [Meta, Title, Copy, Reader, Policy, Hold, Staff, Payment, Loan, Outbox, DispenseIntent]

# Wrong PINs in a row before a card is locked at this node, and for how long:
# 3 tries is what bank cards teach readers to expect; 15 minutes stops guessing
# (10,000 PINs) without locking a reader out for the day.
MAX_WRONG_PINS = 3
PIN_LOCK = timedelta(minutes=15)
# PBKDF2 iterations for reader PINs: the PIN space is tiny, so the lockout is
# the real protection; the hash only keeps PINs from being read off a stolen disk.
PIN_ITERATIONS = 2_000


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
    """What the reader is told after a return, and where the copy goes now."""

    copy: str
    loan_id: str | None
    known: bool
    seq: int
    route: routing.Route = routing.Route(routing.SHELF)
    reader: str | None = None     # whose loan it closed


def open_db(path: str) -> SqliteDatabase:
    """Bind the store to the SQLite file at ``path`` and create (or extend) the tables."""
    from edge import service_records  # the services' tables (edge/services.py)

    db.init(path, pragmas=PRAGMAS, check_same_thread=False)
    db.connect(reuse_if_open=True)
    db.create_tables(TABLES + service_records.TABLES)
    add_missing_columns(TABLES + service_records.TABLES)
    return db


def add_missing_columns(tables: list[type[Model]]) -> None:
    """Add the columns a newer build defines to tables an older build created."""
    migrator = SqliteMigrator(db)
    ops = []
    for model in tables:
        have = {c.name for c in db.get_columns(model._meta.table_name)}
        ops += [migrator.add_column(model._meta.table_name, f.column_name, f)
                for f in model._meta.sorted_fields
                if f.column_name not in have and (f.null or f.default is not None)]
    if ops:
        with db.atomic():
            migrate(*ops)


# The node's wall clock may be wrong; the chaos suite makes one wrong on purpose
# (KITAP_CLOCK_SKEW_SECONDS) to prove the hybrid clock keeps the cloud right.
_clock_skew = timedelta(0)


def set_clock_skew(seconds: float) -> None:
    """Shift this node's wall clock (a test and chaos knob; 0 in production)."""
    global _clock_skew
    _clock_skew = timedelta(seconds=seconds)


def utcnow() -> datetime:
    """Now, in UTC, aware: the node's wall clock."""
    return datetime.now(UTC) + _clock_skew


def library_tz() -> tzinfo:
    """The library's time zone: the cloud's word, else KITAP_TIMEZONE, else Almaty's."""
    row = Meta.get_or_none(Meta.key == "config.cloud.timezone")
    name = (row.value if row else "") or os.environ.get("KITAP_TIMEZONE") or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("unknown time zone %r; counting days in %s", name, DEFAULT_TIMEZONE)
        return ZoneInfo(DEFAULT_TIMEZONE)


def zone_name() -> str:
    """The library's time zone by name, for pages that show instants in it."""
    return str(getattr(library_tz(), "key", "UTC"))


def local_day(at: datetime) -> date:
    """The library's calendar day at the instant ``at``."""
    return at.astimezone(library_tz()).date()


def _reported(when: datetime | None) -> datetime | None:
    """A time someone told us (aware), in UTC like the node's own clock."""
    return when.astimezone(UTC) if when is not None else None


def _aware(when: datetime) -> datetime:
    """A time read back from SQLite, aware (the node writes UTC)."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _told(at: datetime | None, source: str | None) -> dict[str, Any]:
    """The optional body fields of a transaction done elsewhere: ``at`` and ``source``."""
    return {**({"at": at} if at is not None else {}),
            **({"source": source} if source else {})}


def hash_pin(pin: str, salt: str | None = None) -> str:
    """A salted PBKDF2 hash of a reader's PIN, as ``pbkdf2$iterations$salt$hex``."""
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), PIN_ITERATIONS).hex()
    return f"pbkdf2${PIN_ITERATIONS}${salt}${digest}"


def check_pin(pin: str, stored: str) -> bool:
    """True if ``pin`` matches a ``hash_pin`` value."""
    try:
        _, iterations, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)


class EdgeStore:
    """The node's store; one per process, shared by the Flask, sync and hardware threads."""

    def __init__(self, node_id: str, path: str, clock_ms: Any = None) -> None:
        self.node_id = node_id
        self.path = path
        open_db(path)
        # Reentrant: the machine settles an intent and writes the loan (checkout)
        # in one transaction of its own (edge/machine_records.py).
        self._lock = threading.RLock()
        last = self._meta("hlc")
        self.clock = HybridClock(clock_ms or (lambda: int(utcnow().timestamp() * 1000)),
                                 Timestamp.decode(last) if last else None)

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
            seq=seq, type=type_, copy=body.get("copy"),
            envelope=json.dumps(env, ensure_ascii=False), created_at=now
        )
        self._set_meta("last_seq", str(seq))
        self._set_meta("hlc", hlc)
        return seq

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The store's lock and one transaction: a state change and its events commit together."""
        with self._lock, db.atomic():
            yield

    def emit(self, type_: str, body: dict[str, Any], now: datetime | None = None) -> int:
        """Append an event to the outbox inside ``writing()``; returns its seq."""
        return self._append_event(type_, body, now or utcnow())

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

    def rewind_acked(self, to_seq: int) -> int:
        """Treat events after ``to_seq`` as unacknowledged again; returns the new mark.

        Only the cloud asks for this (its access list alone may write our ack
        topic), after losing events it had acknowledged. Events already pruned
        from the journal cannot be sent again: that is logged as an error.
        """
        with self._lock, db.atomic():
            to_seq = max(0, min(to_seq, self.last_acked()))
            first = Outbox.select(Outbox.seq).where(Outbox.seq > to_seq).order_by(
                Outbox.seq).first()
            if first is not None and first.seq != to_seq + 1:
                logger.error("the cloud asks again from seq %d, but the journal starts at %d: "
                             "events %d..%d are gone", to_seq + 1, first.seq, to_seq + 1,
                             first.seq - 1)
            Outbox.update(acked=False).where(Outbox.seq > to_seq).execute()
            self._set_meta("last_acked", str(to_seq))
        logger.warning("the cloud lost events after seq %d: sending them again", to_seq)
        return to_seq

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

    # -- what the rules need ----------------------------------------------------

    def policies(self) -> dict[tuple[str, str], circulation.Policy]:
        """The cloud's policy table over the built-in defaults."""
        table = dict(circulation.DEFAULT_POLICIES)
        for p in Policy.select():
            table[(p.item_type, p.category)] = circulation.Policy(p.loan_days, p.max_items,
                                                                  p.renewals)
        return table

    def offline_cap(self) -> circulation.OfflineCap:
        """The offline cap, as configured by the cloud."""
        cap = circulation.OfflineCap()
        return circulation.OfflineCap(
            float(self._meta("config.offline_cap_after_hours") or cap.after_hours),
            int(self._meta("config.offline_cap_loans") or cap.max_loans))

    def reader_view(self, card: str) -> circulation.ReaderView | None:
        """The rules' view of a reader, with loans counted across the network."""
        r = Reader.get_or_none(Reader.card == card)
        if r is None:
            return None
        return circulation.ReaderView(r.card, r.category, r.blocked_reason,
                                      self._open_loans(r))

    def _open_loans(self, r: Reader) -> int:
        # The cloud's count as of ``synced_at`` plus what happened here since,
        # which the cloud may not have heard of yet.
        since = r.synced_at or datetime.min.replace(tzinfo=UTC)
        # (A loan made and brought back here since then was never open to the cloud.)
        lent = Loan.select().where((Loan.reader == r.card) & (Loan.checked_out_at > since)
                                   & Loan.returned_at.is_null()).count()
        back = Loan.select().where((Loan.reader == r.card) & (Loan.returned_at > since)
                                   & (Loan.checked_out_at <= since)).count()
        return max(0, r.open_loans + lent - back)

    def copy_view(self, barcode: str) -> circulation.CopyView | None:
        """The rules' view of a copy, or None."""
        c = Copy.get_or_none(Copy.barcode == barcode)
        if c is None:
            return None
        hold = Hold.get_or_none((Hold.copy == barcode) & (Hold.status != "picked_up"))
        return circulation.CopyView(c.barcode, self._item_type(c.title_id), c.on_loan, c.here,
                                    hold.reader if hold else None)

    @staticmethod
    def _item_type(title_id: str | None) -> str:
        t = Title.get_or_none(Title.id == title_id) if title_id else None
        return t.item_type if t else "book"

    def offline_hours(self, now: datetime | None = None) -> float:
        """How long the link has been down (0 when up)."""
        since = self._meta("link_down_since")
        if not since:
            return 0.0
        now = now or utcnow()
        return max(0.0, (now - datetime.fromisoformat(since)).total_seconds() / 3600)

    def set_link(self, up: bool, now: datetime | None = None) -> None:
        """The sync agent reports the link; the offline cap counts from the first drop."""
        now = now or utcnow()
        with self._lock, db.atomic():
            if up:
                Meta.delete().where(Meta.key == "link_down_since").execute()
                self._set_meta("link_up_at", now.isoformat())
            elif not self._meta("link_down_since"):
                self._set_meta("link_down_since", now.isoformat())

    def check_checkout(self, card: str, barcode: str,
                       now: datetime | None = None) -> circulation.Refusal | None:
        """Would the rules allow this checkout now?"""
        reader, copy = self.reader_view(card), self.copy_view(barcode)
        policy = circulation.policy_for(self.policies(), copy.item_type if copy else "book",
                                        reader.category if reader else "*")
        hours = self.offline_hours(now)
        since = self._meta("link_down_since")
        offline_loans = Loan.select().where(
            (Loan.reader == card) & (Loan.checked_out_at >= datetime.fromisoformat(since))
        ).count() if since else 0
        required = (self._meta("config.services.borrow_requires_membership") or "0").lower() \
            in ("1", "true", "yes", "on")
        if required and reader is not None:
            from edge import services  # the services' records need this module

            reader = replace(reader, member=services.is_member(card, (now or utcnow())))
        return circulation.check_checkout(reader, copy, policy, offline_hours=hours,
                                          loans_while_offline=offline_loans,
                                          cap=self.offline_cap(), membership_required=required)

    # -- circulation ----------------------------------------------------------

    def checkout(self, card: str, barcode: str, *, slot: int | None = None,
                 intent_id: str | None = None, now: datetime | None = None,
                 happened_at: datetime | None = None, source: str | None = None
                 ) -> LoanResult:
        """Record a loan and its ``loan.checkout`` event in one transaction.

        At a machine the book has already left the slot, so the rules were
        checked before the motor turned; ``intent_id`` closes that intent. A copy
        set aside for this reader's hold also fulfils the hold (``hold.picked_up``).
        ``happened_at``: the loan was made then, somewhere that told us only now
        (a kiosk's no-block checkout); it dates the loan and its due day.
        """
        now = now or utcnow()
        at = _reported(happened_at) or now
        with self._lock, db.atomic():
            if intent_id is None:
                refusal = self.check_checkout(card, barcode, now)
                if refusal:
                    raise CirculationRefused(refusal)
            reader = Reader.get_or_none(Reader.card == card)
            c = Copy.get_or_none(Copy.barcode == barcode)
            policy = circulation.policy_for(self.policies(),
                                            self._item_type(c.title_id if c else None),
                                            reader.category if reader else "*")
            due = circulation.due_date(policy, local_day(at))
            hold = Hold.get_or_none((Hold.copy == barcode) & (Hold.reader == card)
                                    & (Hold.status != "picked_up"))
            loan_id = intent_id or uuid.uuid4().hex
            Loan.create(id=loan_id, copy=barcode, reader=card, checked_out_at=at, due=due,
                        hold_id=hold.id if hold else None)
            Copy.update(on_loan=True, here=False, slot=None, transit_to=None,
                        transit_hold=None).where(
                Copy.barcode == barcode
            ).execute()
            if intent_id:
                DispenseIntent.update(state="done").where(
                    DispenseIntent.id == intent_id
                ).execute()
            told = _told(happened_at and at, source)
            seq = self._append_event("loan.checkout", {
                "loan_id": loan_id, "copy": barcode, "reader": card, "due": due, "slot": slot,
                **told}, now)
            if hold:
                Hold.update(status="picked_up").where(Hold.id == hold.id).execute()
                self._append_event("hold.picked_up", {
                    "hold_id": hold.id, "copy": barcode, "reader": card, "loan_id": loan_id,
                    **told}, now)
        t = Title.get_or_none(Title.id == c.title_id) if c else None
        logger.info("checkout %s to %s due %s (seq %d)", barcode, card, due, seq)
        return LoanResult(loan_id, barcode, card, due, seq, t.title if t else None)

    def checkin(self, barcode: str, *, slot: int | None = None, now: datetime | None = None,
                happened_at: datetime | None = None, source: str | None = None
                ) -> ReturnResult:
        """Accept the return of ANY copy of the network and record its ``loan.return``.

        ``happened_at``: it came back then (a kiosk's no-block check-in), never
        before the loan it closes began.
        """
        now = now or utcnow()
        with self._lock, db.atomic():
            loan = (
                Loan.select()
                .where((Loan.copy == barcode) & Loan.returned_at.is_null())
                .order_by(Loan.checked_out_at.desc())
                .first()
            )
            at = _reported(happened_at)
            if at is not None and loan is not None:
                at = max(at, _aware(loan.checked_out_at))
            if loan:
                Loan.update(returned_at=at or now).where(Loan.id == loan.id).execute()
            copy = Copy.get_or_none(Copy.barcode == barcode)
            route = self._route(copy, barcode, lent_here=loan is not None)
            # Kept for 17 Item Information and a second check-in: where it is going.
            going = route.to if route.kind in (routing.HOLD_ELSEWHERE, routing.HOME) else None
            if copy:
                Copy.update(on_loan=False, here=True, slot=slot, transit_to=going,
                            transit_hold=route.hold_id if going else None).where(
                    Copy.barcode == barcode
                ).execute()
            else:
                Copy.create(barcode=barcode, here=True, on_loan=False, slot=slot)
            seq = self._append_event("loan.return", {
                "copy": barcode,
                "loan_id": loan.id if loan else None,
                "reader": loan.reader if loan else None,
                **_told(at, source)}, now)
        logger.info("return %s (loan %s, seq %d): %s %s", barcode, loan.id if loan else "-", seq,
                    route.kind, route.to or "")
        return ReturnResult(barcode, loan.id if loan else None, copy is not None, seq, route,
                            loan.reader if loan else None)

    def _route(self, c: Copy | None, barcode: str, *, lent_here: bool) -> routing.Route:
        """Where a copy coming back here goes next (``edge/routing.py``), from what we know."""
        title = Title.get_or_none(Title.id == c.title_id) if c and c.title_id else None
        held = Hold.get_or_none((Hold.copy == barcode) & (Hold.status != "picked_up"))
        nxt = Hold.get_or_none(Hold.id == title.next_hold) if title and title.next_hold else None
        known = routing.CopyKnown(
            c is not None and (c.title_id is not None or lent_here),
            c.home_node if c else None, c.floating if c else None,
            c.transit_to if c else None, c.transit_hold if c else None,
            title.next_hold if title else None,
            title.next_pickup if title else None, nxt.reader if nxt else None)
        route = routing.decide(self.node_id, known, (held.id, held.reader) if held else None)
        r = Reader.get_or_none(Reader.card == route.reader) if route.reader else None
        return replace(route, reader_name=r.name) if r else route

    def renew(self, loan_id: str, now: datetime | None = None, *,
              happened_at: datetime | None = None, source: str | None = None,
              check_rules: bool = True) -> LoanResult:
        """Extend an open loan made or known here; ``loan.renew`` tells the cloud.

        ``happened_at``: it was renewed then, somewhere that tells us only now (a
        kiosk's no-block renewal), and without ``check_rules``: the reader was
        already told the new due date, so it is recorded, not decided again.
        """
        now = now or utcnow()
        with self._lock, db.atomic():
            loan = Loan.get_or_none((Loan.id == loan_id) & Loan.returned_at.is_null())
            if loan is None:
                raise CirculationRefused(circulation.Refusal(
                    "unknown_loan", "No open loan with this id is known here."))
            at = now
            if happened_at is not None:   # never before the loan began
                at = max(_reported(happened_at) or now, _aware(loan.checked_out_at))
            c = Copy.get_or_none(Copy.barcode == loan.copy)
            title = Title.get_or_none(Title.id == c.title_id) if c else None
            reader = self.reader_view(loan.reader)
            policy = circulation.policy_for(self.policies(), title.item_type if title else "book",
                                            reader.category if reader else "*")
            refusal = circulation.check_renew(reader, policy, loan.renewals,
                                              title.holds_waiting if title else 0)
            if refusal and check_rules:
                raise CirculationRefused(refusal)
            due = circulation.renewed_due(policy, local_day(at), loan.due)
            Loan.update(due=due, renewals=Loan.renewals + 1).where(Loan.id == loan_id).execute()
            seq = self._append_event("loan.renew", {
                "loan_id": loan_id, "copy": loan.copy, "reader": loan.reader, "due": due,
                **_told(happened_at and at, source)}, now)
        return LoanResult(loan_id, loan.copy, loan.reader, due, seq, title.title if title else None)

    def register_reader(self, card: str, name: str, category: str, pin: str,
                        now: datetime | None = None) -> int:
        """Issue a card at the desk; ``reader.registered`` tells the cloud. Returns the seq."""
        now = now or utcnow()
        with self._lock, db.atomic():
            if Reader.get_or_none(Reader.card == card):
                raise CirculationRefused(circulation.Refusal(
                    "card_taken", f"Card {card} is already issued."))
            pin_hash = hash_pin(pin)
            Reader.create(card=card, name=name, category=category, pin_hash=pin_hash,
                          synced_at=now)
            return self._append_event("reader.registered", {
                "card": card, "name": name, "category": category, "pin_hash": pin_hash,
            }, now)

    def take_payment(self, card: str, amount: int, kind: str, description: str,
                     now: datetime | None = None) -> tuple[str, int]:
        """Record a payment (tiyn) and its ``fee.paid``; returns (payment id, seq)."""
        now = now or utcnow()
        with self._lock, db.atomic():
            reader = Reader.get_or_none(Reader.card == card)
            if reader is None:
                raise CirculationRefused(circulation.Refusal(
                    "unknown_reader", "This card is not known here."))
            pid = uuid.uuid4().hex
            Payment.create(id=pid, reader=card, amount=amount, kind=kind,
                           description=description, taken_at=now)
            if kind == "fee":
                Reader.update(fees_owed=max(0, reader.fees_owed - amount)).where(
                    Reader.card == card).execute()
            seq = self._append_event("fee.paid", {
                "payment_id": pid, "reader": card, "amount": amount, "kind": kind,
                "description": description,
            }, now)
        return pid, seq

    def verify_pin(self, card: str, pin: str, now: datetime | None = None) -> bool:
        """Check a reader's PIN; after MAX_WRONG_PINS wrong ones the card is locked here.

        Raises CirculationRefused while locked, so the kiosk can say so.
        """
        now = now or utcnow()
        with self._lock, db.atomic():
            r = Reader.get_or_none(Reader.card == card)
            if r is None:
                return False
            if r.locked_until and r.locked_until > now:
                raise CirculationRefused(circulation.Refusal(
                    "pin_locked", "Too many wrong PINs: this card is locked here for a while."))
            ok = bool(r.pin_hash) and check_pin(pin, r.pin_hash)
            if ok:
                Reader.update(wrong_pins=0, locked_until=None).where(Reader.card == card).execute()
                return True
            wrong = r.wrong_pins + 1
            locked = now + PIN_LOCK if wrong >= MAX_WRONG_PINS else None
            Reader.update(wrong_pins=0 if locked else wrong, locked_until=locked).where(
                Reader.card == card).execute()
            return False

    def reader_profile(self, card: str) -> dict[str, Any] | None:
        """A reader as the desk sees them: loans, holds, payments, debts, and how fresh."""
        r = Reader.get_or_none(Reader.card == card)
        if r is None:
            return None
        loans = Loan.select().where((Loan.reader == card) & Loan.returned_at.is_null())
        holds = Hold.select().where((Hold.reader == card) & (Hold.status != "picked_up"))
        titles = {t.id: t.title for t in Title.select().where(
            Title.id.in_([h.title_id for h in holds]))}
        return {
            "card": r.card, "name": r.name, "category": r.category,
            "blocked_reason": r.blocked_reason, "fees_owed": r.fees_owed,
            "open_loans": self._open_loans(r),
            "loans": [{"loan_id": ln.id, "copy": ln.copy, "due": ln.due.isoformat(),
                       "renewals": ln.renewals, "title": self._title_of(ln.copy)}
                      for ln in loans],
            "holds": [{"hold_id": h.id, "title": titles.get(h.title_id, h.title_id),
                       "copy": h.copy, "status": h.status,
                       "expires": h.expires.isoformat() if h.expires else None}
                      for h in holds],
            "as_of": r.synced_at.isoformat() if r.synced_at else None,
        }

    @staticmethod
    def _title_of(barcode: str) -> str | None:
        c = Copy.get_or_none(Copy.barcode == barcode)
        t = Title.get_or_none(Title.id == c.title_id) if c and c.title_id else None
        return t.title if t else None

    def holds_here(self) -> list[dict[str, Any]]:
        """Holds to hand out at this node, ready ones first."""
        out = []
        for h in Hold.select().where(Hold.status != "picked_up").order_by(Hold.status.desc()):
            t = Title.get_or_none(Title.id == h.title_id)
            r = Reader.get_or_none(Reader.card == h.reader)
            out.append({"hold_id": h.id, "title": t.title if t else h.title_id, "copy": h.copy,
                        "reader": h.reader, "reader_name": r.name if r else "",
                        "status": h.status,
                        "expires": h.expires.isoformat() if h.expires else None})
        return out

    def secret_key(self) -> str:
        """This node's session-signing key, made once and kept in its store."""
        with self._lock, db.atomic():
            key = self._meta("secret_key")
            if not key:
                key = secrets.token_hex(32)
                self._set_meta("secret_key", key)
            return key

    def freshness(self, now: datetime | None = None) -> dict[str, Any]:
        """How fresh this node's knowledge is: the feed revision and when it came."""
        now = now or utcnow()
        at = self._meta("feed_at")
        age = (now - datetime.fromisoformat(at)).total_seconds() if at else None
        return {"feed_rev": int(self._meta("feed_rev", "0") or 0), "as_of": at,
                "age_seconds": age, "offline_hours": round(self.offline_hours(now), 2)}

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
        """Counts a person or a status message wants, read in one snapshot of the file.

        One read transaction: a feed applied between two of the counts must not
        show a node that holds its readers but none of its copies.
        """
        with db.atomic():
            return self._summary()

    def _summary(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "last_seq": self.last_seq(),
            "last_acked": self.last_acked(),
            "outbox_depth": self.outbox_depth(),
            "open_loans": Loan.select().where(Loan.returned_at.is_null()).count(),
            "copies_here": Copy.select().where(Copy.here == True).count(),  # noqa: E712
            "readers": Reader.select().count(),
            **self.freshness(),
        }
