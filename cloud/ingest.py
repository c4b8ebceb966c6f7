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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import fn

from cloud import reconcile
from cloud import store as s
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
            _apply(node_row, ev)
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
        held_count = (s.HeldEvent.select(fn.COUNT(s.HeldEvent.seq))
                      .where(s.HeldEvent.node == node).scalar()) or 0
    return IngestResult(node, applied_seq, applied, duplicates, held_count)


def _copy_state(barcode: str) -> reconcile.CopyState:
    c = s.Copy.get_or_none(s.Copy.barcode == barcode)
    if c is None:
        return reconcile.CopyState(barcode, known=False)
    return reconcile.CopyState(barcode, True, c.status, c.location_node, c.slot, c.loan_id)


def _apply(node: s.Node, ev: Event) -> None:
    """Apply one event (the cursor says it is the next one) and record it."""
    now = s.utcnow()
    error = ev.body_error
    outcome: reconcile.Outcome | None = None
    if error is None:
        body = ev.body
        if ev.type == "loan.checkout":
            outcome = reconcile.checkout(
                _copy_state(body["copy"]), node=node.id, loan_id=body["loan_id"],
                reader=body["reader"], at=ev.ts, due=body["due"])
        elif ev.type == "loan.return":
            outcome = reconcile.checkin(_copy_state(body["copy"]), node=node.id,
                                        node_kind=node.kind, at=ev.ts)
    if outcome is not None:
        _write_outcome(outcome, node.id, ev.seq, now)
    else:
        # A poison event must not block the node's queue: it is kept, quarantined,
        # and shown to staff; the cursor moves past it.
        error = error or f"no handler for {ev.type}"
        logger.warning("quarantined %s seq %d: %s", node.id, ev.seq, error)
        s.StaffException.create(kind="quarantined_event", node=node.id, seq=ev.seq,
                                detail=error, created_at=now)
    s.Event.create(node=node.id, seq=ev.seq, type=ev.type, hlc=ev.hlc, ts=ev.ts,
                   body=json.dumps(ev.raw.get("body", {}), ensure_ascii=False),
                   applied_at=now, quarantined=outcome is None, error=error)


def _write_outcome(out: reconcile.Outcome, node: str, seq: int, now: datetime) -> None:
    for close in out.closes:
        s.Loan.update(returned_at=close.at, returned_node=close.node,
                      close_reason=close.reason).where(
            (s.Loan.id == close.loan_id) & s.Loan.returned_at.is_null()).execute()
    for op in out.opens:
        s.Loan.insert(id=op.loan_id, copy=op.copy, reader=op.reader, node=op.node,
                      checked_out_at=op.at, due=op.due).on_conflict_ignore().execute()
    c = out.copy
    row: dict[str, Any] = {"barcode": c.barcode, "status": c.status,
                           "location_node": c.location_node, "slot": c.slot,
                           "loan_id": c.loan_id}
    updated = s.Copy.update(**row).where(s.Copy.barcode == c.barcode).execute()
    if not updated:
        s.Copy.insert(**row).execute()
    for rep in out.repairs:
        s.StaffException.create(kind=rep.kind, node=node, seq=seq, copy=c.barcode,
                                detail=rep.detail, created_at=now)
