"""Apply a node's events exactly once and in its order, inside one transaction.

The node's cursor row is the lock: on PostgreSQL it is taken FOR UPDATE, on
SQLite the transaction takes the write lock up front (BEGIN IMMEDIATE). So two
ingest processes that receive the same node's events apply them once, in
order, whoever wins the race. An event that comes early is held back in
``HeldEvent`` until the gap before it fills; the caller then asks the node to
resend from the first missing seq.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from peewee import fn

from cloud import feed, reconcile
from cloud import store as s
from cloud.handlers import HANDLERS
from protocol.envelope import Event, parse_envelope

logger = logging.getLogger(__name__)


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

    @property
    def resend_from(self) -> int | None:
        """The first seq the cloud is missing when events wait behind a gap."""
        return self.applied_seq + 1 if self.held else None


def _lock_cursor(node: str) -> s.NodeCursor:
    s.NodeCursor.insert(node=node, applied_seq=0).on_conflict_ignore().execute()
    query = s.NodeCursor.select().where(s.NodeCursor.node == node)
    if s.is_postgres():
        query = query.for_update()
    return query.get()


def ingest(node: str, events: list[Event]) -> IngestResult:
    """Apply ``events`` (any order, duplicates allowed) from ``node``; one transaction."""
    with s.db.atomic():
        node_row = s.Node.get_or_none(s.Node.id == node)
        if node_row is None:
            raise UnknownNode(node)
        cursor = _lock_cursor(node)
        applied_seq = cursor.applied_seq
        incoming: dict[int, Event] = {}
        duplicates = 0
        for ev in events:
            if ev.seq <= applied_seq or ev.seq in incoming:
                duplicates += 1
            else:
                incoming[ev.seq] = ev
        applied = 0
        touched: set[str] = set()
        while True:
            nxt = applied_seq + 1
            ev = incoming.pop(nxt, None)
            if ev is None:
                held = s.HeldEvent.get_or_none((s.HeldEvent.node == node) &
                                               (s.HeldEvent.seq == nxt))
                if held is None:
                    break
                ev = parse_envelope(json.loads(held.envelope))
                held.delete_instance()
            _apply(node_row, ev, touched)
            applied_seq = nxt
            applied += 1
        if incoming:
            now = s.utcnow()
            s.HeldEvent.insert_many([
                {"node": node, "seq": seq, "envelope": json.dumps(ev.raw, ensure_ascii=False),
                 "received_at": now}
                for seq, ev in incoming.items()
            ]).on_conflict_ignore().execute()
        if applied:
            s.NodeCursor.update(applied_seq=applied_seq).where(
                s.NodeCursor.node == node).execute()
            # A held event may also have come again in this batch and been applied
            # from it: its held copy is now stale.
            s.HeldEvent.delete().where((s.HeldEvent.node == node) &
                                       (s.HeldEvent.seq <= applied_seq)).execute()
        for card in sorted(touched):
            feed.reader_changed(card)
        held_count = (s.HeldEvent.select(fn.COUNT(s.HeldEvent.seq))
                      .where(s.HeldEvent.node == node).scalar()) or 0
    return IngestResult(node, applied_seq, applied, duplicates, held_count)


def _copy_row(barcode: str) -> s.Copy | None:
    query = s.Copy.select().where(s.Copy.barcode == barcode)
    if s.is_postgres():
        # Two ingest workers may hold facts of different nodes about one copy.
        query = query.for_update()
    return query.first()


def _state(c: s.Copy | None, barcode: str) -> reconcile.CopyState:
    if c is None:
        return reconcile.CopyState(barcode, known=False)
    return reconcile.CopyState(barcode, True, c.status, c.location_node, c.slot, c.loan_id)


def _origin(c: s.Copy | None, barcode: str) -> reconcile.CopyState:
    if c is None or c.origin_status is None:
        return reconcile.CopyState(barcode, known=False)
    return reconcile.CopyState(barcode, True, c.origin_status, c.origin_node, c.origin_slot)


# Events that are not facts about copies (fees, readers, ...) are applied by
# the handlers registered in cloud/handlers.py (HANDLERS, imported above).


def _apply(node: s.Node, ev: Event, touched: set[str]) -> None:
    """Apply one event (the cursor says it is the next one) and record it."""
    now = s.utcnow()
    error = ev.body_error
    applied = False
    if error is None:
        facts = reconcile.copy_facts(ev.type, ev.body)
        for i, (barcode, body) in enumerate(facts):
            key = reconcile.fact_key(ev.hlc, node.id, ev.seq)
            if len(facts) > 1:
                key += f".{i:04d}"
            _apply_fact(barcode, reconcile.Fact(key, node.id, node.kind, ev.seq, ev.type,
                                                ev.ts, body), now, touched)
        handler = HANDLERS.get(ev.type)
        if handler is not None:
            handler(node, ev, now)
        applied = bool(facts) or handler is not None
        if not applied:
            error = f"no handler for {ev.type}"
    if not applied:
        # A poison event must not block the node's queue: it is kept, quarantined,
        # and shown to staff; the cursor moves past it.
        logger.warning("quarantined %s seq %d: %s", node.id, ev.seq, error)
        s.StaffException.create(kind="quarantined_event", node=node.id, seq=ev.seq,
                                detail=error, created_at=now)
    s.Event.create(node=node.id, seq=ev.seq, type=ev.type, hlc=ev.hlc, ts=ev.ts,
                   body=json.dumps(ev.raw.get("body", {}), ensure_ascii=False),
                   applied_at=now, quarantined=not applied, error=error)


def _apply_fact(barcode: str, fact: reconcile.Fact, now: datetime, touched: set[str]) -> None:
    """Record a copy fact; apply it at once if it is the newest, else replay the copy.

    The readers whose loans changed are added to ``touched``; the nodes that
    hold the copy, before and after, are told through the feed.
    """
    row = _copy_row(barcode)
    old_node = row.location_node if row is not None else None
    s.CopyFact.insert(copy=barcode, key=fact.key, node=fact.node, node_kind=fact.node_kind,
                      seq=fact.seq, type=fact.type, at=fact.at,
                      body=json.dumps(fact.body, default=str, ensure_ascii=False)).execute()
    if row is None or row.last_key is None or fact.key > row.last_key:
        out = reconcile.step(_state(row, barcode), fact)
        _write_outcome(out, fact, now, exists=row is not None)
        touched.update(o.reader for o in out.opens)
        touched.update(_loan_readers(c.loan_id for c in out.closes))
    else:
        logger.info("late fact %s for %s (latest %s): replaying the copy", fact.key, barcode,
                    row.last_key)
        touched.update(_replay(row, barcode, now))
    feed.copy_moved(barcode, old_node, s.Copy.get_or_none(s.Copy.barcode == barcode))


def _loan_readers(loan_ids: Iterable[str]) -> set[str]:
    ids = list(loan_ids)
    if not ids:
        return set()
    return {ln.reader for ln in s.Loan.select(s.Loan.reader).where(s.Loan.id.in_(ids))}


def _write_copy(c: reconcile.CopyState, last_key: str, exists: bool) -> None:
    row: dict[str, Any] = {"status": c.status, "location_node": c.location_node,
                           "slot": c.slot, "loan_id": c.loan_id, "last_key": last_key}
    if exists:
        s.Copy.update(**row).where(s.Copy.barcode == c.barcode).execute()
    else:
        s.Copy.insert(barcode=c.barcode, **row).execute()


def _write_outcome(out: reconcile.Outcome, fact: reconcile.Fact, now: datetime,
                   exists: bool) -> None:
    for close in out.closes:
        s.Loan.update(returned_at=close.at, returned_node=close.node,
                      close_reason=close.reason).where(
            (s.Loan.id == close.loan_id) & s.Loan.returned_at.is_null()).execute()
    for op in out.opens:
        s.Loan.insert(id=op.loan_id, copy=op.copy, reader=op.reader, node=op.node,
                      checked_out_at=op.at, due=op.due).on_conflict_ignore().execute()
    _write_copy(out.copy, fact.key, exists)
    for rep in out.repairs:
        s.StaffException.create(kind=rep.kind, node=fact.node, seq=fact.seq,
                                copy=out.copy.barcode, detail=rep.detail, created_at=now)


def _replay(row: s.Copy, barcode: str, now: datetime) -> set[str]:
    """Recompute a copy's place, loans and open repairs from all its facts in order.

    Returns the readers whose loans it rewrote.
    """
    facts = [
        reconcile.Fact(f.key, f.node, f.node_kind, f.seq, f.type, f.at, _fact_body(f.body))
        for f in s.CopyFact.select().where(s.CopyFact.copy == barcode).order_by(s.CopyFact.key)
    ]
    result = reconcile.replay(_origin(row, barcode), facts)
    for lv in result.loans.values():
        fields = {"reader": lv.reader, "node": lv.node, "checked_out_at": lv.at, "due": lv.due,
                  "returned_at": lv.returned_at, "returned_node": lv.returned_node,
                  "close_reason": lv.close_reason}
        if not s.Loan.update(**fields).where(s.Loan.id == lv.loan_id).execute():
            s.Loan.insert(id=lv.loan_id, copy=barcode, **fields).execute()
    for close in result.other_closes:
        s.Loan.update(returned_at=close.at, returned_node=close.node,
                      close_reason=close.reason).where(
            (s.Loan.id == close.loan_id) & s.Loan.returned_at.is_null()).execute()
    _write_copy(result.copy, facts[-1].key, exists=True)
    # Repairs are derived from the facts: keep those the replay still finds,
    # add the new ones, and close (with the reason) those a late fact explained.
    wanted = {(f.node, f.seq, r.kind): r for f, r in result.repairs}
    for exc in s.StaffException.select().where(
            (s.StaffException.copy == barcode) & s.StaffException.closed_at.is_null()):
        if wanted.pop((exc.node, exc.seq, exc.kind), None) is None:
            exc.closed_at = now
            exc.resolution = "explained by an event that arrived late"
            exc.save()
    for (node, seq, kind), rep in wanted.items():
        s.StaffException.create(kind=kind, node=node, seq=seq, copy=barcode, detail=rep.detail,
                                created_at=now)
    return {lv.reader for lv in result.loans.values()} | _loan_readers(
        c.loan_id for c in result.other_closes)


def _fact_body(text: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(text)
    if isinstance(body.get("due"), str):
        body["due"] = date.fromisoformat(body["due"])
    return body
