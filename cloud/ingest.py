"""Apply a node's events exactly once and in its order, inside one transaction.

The node's cursor row is the lock: on PostgreSQL it is taken FOR UPDATE, on
SQLite the transaction takes the write lock up front (BEGIN IMMEDIATE). So two
ingest processes that receive the same node's events apply them once, in
order, whoever wins the race. An event that comes early is held back in
``HeldEvent`` until the gap before it fills; the caller then asks the node to
resend from the first missing seq.

Each event's copy facts go to cloud/copies.py, everything else to the handlers
(cloud/handlers.py). Then, in the same transaction: holds whose copies moved
are settled (cloud/holds.py), the readers concerned have the checkouts a
node allowed judged again (cloud/flags.py) and their debts and blocks brought
up to date (cloud/debts.py), and every node is told.
"""
from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass, field
from datetime import datetime

from peewee import InterfaceError, OperationalError, fn

from cloud import (
    clocks,
    copies,
    debts,
    devices,  # noqa: F401 - registers its handlers
    feed,
    flags,
    holds,
    node_requests,  # noqa: F401 - registers its handlers
    reconcile,
    service_events,  # noqa: F401 - registers its handlers
)
from cloud import store as s
from cloud.handlers import HANDLERS
from protocol.envelope import Event, parse_envelope

logger = logging.getLogger(__name__)

# PostgreSQL may abort one of two transactions that wait on each other's rows
# (deadlock, 40P01) or on a serialization conflict (40001): the batch is simply
# tried again; a few times is plenty, as the other transaction has finished.
RETRIES = 4
RETRY_CODES = ("40P01", "40001")
# How far past the cursor an early event is held. A node sends at most its
# window (edge/sync.py WINDOW, 2,000) past the cloud's ack; five times that
# leaves room for a cloud restored from a backup, and bounds what a node gone
# wrong can make the cloud store. Beyond it an event is refused (counted, kept
# as a RejectedMessage); the node sends it again once the gap has filled.
MAX_AHEAD = 10_000
# Errors of the store itself (down, locked, a lost connection): no event is to
# blame, so a batch that meets one is not searched for a poison event.
STORE_ERRORS = (OperationalError, InterfaceError)
# What of a crash's traceback a quarantined event keeps for staff.
KEEP_TRACEBACK_CHARS = 4000
# Seconds a gap may wait before the node is asked to resend. Several ingest
# workers share the nodes' messages (an MQTT 5 shared subscription hands them
# out one by one), so a node's batch may reach one worker while another is
# still applying the batch before it: that gap fills by itself within a commit
# or two. A lost message is still asked for after this; and a node resends by
# itself after 10 s without an ack (edge/sync.py RESEND_AFTER).
RESEND_GRACE = 3.0


class UnknownNode(Exception):
    """Events from a node the cloud has no record of."""


@dataclass(frozen=True)
class IngestResult:
    """What one batch did, and what to tell the node."""

    node: str
    applied_seq: int   # highest contiguous seq applied: the ack
    applied: int       # events applied by this call
    duplicates: int    # events already applied before
    held: int          # events waiting for a gap to fill (after this call)
    too_far: tuple[Event, ...] = ()  # refused: more than MAX_AHEAD past the cursor
    gap_age: float = 0.0  # seconds the oldest event held behind the gap has waited

    @property
    def resend_from(self) -> int | None:
        """The first seq the cloud is missing, once events have waited behind a gap a while."""
        return self.applied_seq + 1 if self.held and self.gap_age >= RESEND_GRACE else None


@dataclass
class _Batch:
    """What one transaction touched, to settle at its end."""

    node: s.Node
    received: datetime
    now: datetime
    readers: set[str] = field(default_factory=set)
    copies: set[str] = field(default_factory=set)


def _lock_cursor(node: str) -> s.NodeCursor:
    query = s.NodeCursor.select().where(s.NodeCursor.node == node)
    if s.is_postgres():
        query = query.for_update()
    row: s.NodeCursor | None = query.first()
    if row is None:
        s.NodeCursor.insert(node=node, applied_seq=0).on_conflict_ignore().execute()
        row = query.clone().get()
    return row


def ingest(node: str, events: list[Event], received: datetime | None = None) -> IngestResult:
    """Apply ``events`` (any order, duplicates allowed) from ``node``; one transaction.

    If applying the batch fails for any reason but the store's, it is rolled
    back and applied again event by event, each in a savepoint: the event that
    fails is quarantined with its traceback and the cursor moves past it, so
    one bad event never blocks its node's queue.
    """
    received = received or s.utcnow()
    try:
        return _retrying(node, events, received, careful=False)
    except (UnknownNode, *STORE_ERRORS):
        raise
    except Exception:
        logger.exception("a batch of %d events of %s failed; applying them one by one",
                         len(events), node)
        return _retrying(node, events, received, careful=True)


def _retrying(node: str, events: list[Event], received: datetime, *,
              careful: bool) -> IngestResult:
    for attempt in range(1, RETRIES + 1):
        try:
            return _ingest(node, events, received, careful)
        except OperationalError as exc:
            code = getattr(getattr(exc, "orig", None), "pgcode", None)
            if code not in RETRY_CODES or attempt == RETRIES:
                raise
            logger.info("ingest of %s: transaction aborted (%s), attempt %d; trying again",
                        node, code, attempt)
    raise AssertionError("unreachable")


def _ingest(node: str, events: list[Event], received: datetime, careful: bool) -> IngestResult:
    with feed.transaction():
        node_row = s.Node.get_or_none(s.Node.id == node)
        if node_row is None:
            raise UnknownNode(node)
        cursor = _lock_cursor(node)
        applied_seq = cursor.applied_seq
        incoming: dict[int, Event] = {}
        too_far: list[Event] = []
        duplicates = 0
        for ev in events:
            if ev.seq <= applied_seq or ev.seq in incoming:
                duplicates += 1
            elif ev.seq > applied_seq + MAX_AHEAD:
                too_far.append(ev)
            else:
                incoming[ev.seq] = ev
        applied = 0
        batch = _Batch(node_row, received, s.utcnow())
        while True:
            nxt = applied_seq + 1
            found = incoming.pop(nxt, None)
            at = received
            if found is None:
                held = s.HeldEvent.get_or_none((s.HeldEvent.node == node) &
                                               (s.HeldEvent.seq == nxt))
                if held is None:
                    break
                found = parse_envelope(json.loads(held.envelope))
                at = held.received_at  # its clock is judged by when it came
                held.delete_instance()
            if careful:
                _apply_alone(batch, found, at)
            else:
                _apply(batch, found, at)
            applied_seq = nxt
            applied += 1
        if incoming:
            s.HeldEvent.insert_many([
                {"node": node, "seq": seq, "envelope": json.dumps(ev.raw, ensure_ascii=False),
                 "received_at": received}
                for seq, ev in incoming.items()
            ]).on_conflict_ignore().execute()
        if applied:
            s.NodeCursor.update(applied_seq=applied_seq).where(
                s.NodeCursor.node == node).execute()
            # A held event may also have come again in this batch and been applied
            # from it: its held copy is now stale.
            s.HeldEvent.delete().where((s.HeldEvent.node == node) &
                                       (s.HeldEvent.seq <= applied_seq)).execute()
            if not careful:  # careful: settled event by event already
                _settle(batch)
        for card in sorted(batch.readers):
            feed.reader_changed(card)
        held_count = (s.HeldEvent.select(fn.COUNT(s.HeldEvent.seq))
                      .where(s.HeldEvent.node == node).scalar()) or 0
        oldest = held_count and (s.HeldEvent.select(s.HeldEvent.received_at)
                                 .where(s.HeldEvent.node == node)
                                 .order_by(s.HeldEvent.received_at).first())
        age = (received - oldest.received_at).total_seconds() if oldest else 0.0
    return IngestResult(node, applied_seq, applied, duplicates, held_count, tuple(too_far), age)


def _settle(batch: _Batch) -> None:
    """The holds, flags, debts and blocks of what the batch touched."""
    holds.settle_copies(batch.copies, batch.now, batch.readers)
    flags.review(batch.readers, batch.now)
    debts.copies_changed(batch.copies, batch.readers)
    debts.refresh_readers(batch.readers, batch.now)


def _apply_alone(batch: _Batch, ev: Event, received: datetime) -> None:
    """The slow path, after the batch failed: one event and its settling in a savepoint.

    An event whose applying fails is rolled back alone and quarantined, with the
    traceback for staff; the cursor moves past it.
    """
    one = _Batch(batch.node, batch.received, batch.now)
    try:
        with feed.transaction():  # nested: a savepoint, its feed changes dropped with it
            _apply(one, ev, received)
            _settle(one)
    except STORE_ERRORS:
        raise
    except Exception as exc:
        trace = traceback.format_exc()[-KEEP_TRACEBACK_CHARS:]
        _record(batch, ev, f"the cloud failed to apply it ({type(exc).__name__}: {exc}); "
                           f"nothing of it was applied\n{trace}")
        return
    batch.readers |= one.readers
    batch.copies |= one.copies


# Events that are not facts about copies (fees, readers, ...) are applied by
# the handlers registered in cloud/handlers.py (HANDLERS, imported above).


def _apply(batch: _Batch, ev: Event, received: datetime) -> None:
    """Apply one event (the cursor says it is the next one) and record it."""
    node = batch.node
    seen = ev  # as the node sent it: what the Event row keeps
    error = ev.body_error
    applied = False
    if error is None:
        ev = clocks.correct(node, ev, received)
        facts = reconcile.copy_facts(ev.type, ev.body)
        for i, (barcode, body) in enumerate(facts):
            key = reconcile.fact_key(ev.hlc, node.id, ev.seq)
            if len(facts) > 1:
                key += f".{i:04d}"
            copies.apply_fact(barcode, reconcile.Fact(key, node.id, node.kind, ev.seq, ev.type,
                                                      clocks.happened_at(ev), body),
                              batch.now, batch.readers)
            batch.copies.add(barcode)
        handler = HANDLERS.get(ev.type)
        if handler is not None:
            batch.readers.update(handler(node, ev, batch.now) or ())
        applied = bool(facts) or handler is not None
        if not applied:
            error = f"no handler for {ev.type}"
    _record(batch, seen, None if applied else error)


def _record(batch: _Batch, seen: Event, error: str | None) -> None:
    """Keep the event as the node sent it; quarantined (for staff) if ``error``."""
    node = batch.node
    if error is not None:
        # A poison event must not block the node's queue: it is kept, quarantined,
        # and shown to staff; the cursor moves past it.
        logger.warning("quarantined %s seq %d: %s", node.id, seen.seq, error.splitlines()[0])
        s.StaffException.create(kind="quarantined_event", node=node.id, seq=seen.seq,
                                detail=error, created_at=batch.now)
    s.Event.create(node=node.id, seq=seen.seq, type=seen.type, hlc=seen.hlc, ts=seen.ts,
                   body=json.dumps(seen.raw.get("body", {}), ensure_ascii=False),
                   applied_at=batch.now, quarantined=error is not None, error=error)
