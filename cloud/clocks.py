"""Nodes whose wall clock is wrong: flagged for staff, and their events' times corrected.

Two kinds of evidence. A node's live status message carries its wall clock:
its difference to the cloud's receive time is the node's offset (kept on the
Node row). Each event carries the wall clock and the HLC: a wall clock behind
the node's own HLC, or ahead of the moment the cloud received the event, is
wrong (``reconcile.read_clock``). A node found wrong gets ``Node.clock_flagged_at``
and one open ``clock_skew`` StaffException; its events are applied at the
corrected time, and due dates computed from the node's wrong day are moved
by the same number of days (the node's original is kept in ``Loan.due_node``).
The flag is lifted when a live reading agrees again.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, datetime

from cloud import reconcile, settings
from cloud import store as s
from protocol.envelope import Event
from protocol.hlc import Timestamp

logger = logging.getLogger(__name__)

KIND = "clock_skew"


def threshold_s() -> float:
    """How far a node's clock may be off before it is flagged."""
    return float(settings.get_int("cloud.clock_skew_seconds"))


def correct(node: s.Node, ev: Event, received: datetime) -> Event:
    """The event as it happened by the right clock; flags or clears ``node`` on the way."""
    hlc = Timestamp.decode(ev.hlc)
    reading = reconcile.read_clock(ev.ts, hlc.wall_ms, received, node.clock_offset_s,
                                   threshold_s(), hlc_counter=hlc.counter)
    if reading.cause is None:
        measured_ok = node.clock_offset_s is None or abs(node.clock_offset_s) <= threshold_s()
        if reading.live and node.clock_flagged_at is not None and measured_ok:
            _unflag(node, f"seq {ev.seq} carried a clock that agrees with the cloud's")
        return ev
    _flag(node, ev.seq, f"{reading.cause} (seq {ev.seq}, {ev.ts.isoformat()}); its events are "
                        "applied at the corrected time and due dates moved accordingly")
    body = dict(ev.body)
    if isinstance(body.get("due"), date):
        body["due_node"] = body["due"]
        body["due"] = reconcile.corrected_due(body["due"], ev.ts, reading.at)
    return replace(ev, ts=reading.at, body=body)


def observe_status(node_id: str, node_ts: datetime | None, received: datetime) -> None:
    """A live status message: measure the node's offset, flag or clear it."""
    if node_ts is None:
        return
    offset = (node_ts - received).total_seconds()
    with s.db.atomic():
        node = s.Node.get_or_none(s.Node.id == node_id)
        if node is None:
            return
        node.clock_offset_s = offset
        s.Node.update(clock_offset_s=offset).where(s.Node.id == node_id).execute()
        if abs(offset) > threshold_s():
            side = "ahead of" if offset > 0 else "behind"
            _flag(node, 0, f"its status says its wall clock is {abs(offset):.0f} s {side} the "
                           "cloud's")
        elif node.clock_flagged_at is not None:
            _unflag(node, "its status shows a clock that agrees with the cloud's")


def _flag(node: s.Node, seq: int, note: str) -> None:
    if node.clock_flagged_at is not None:
        return  # one open exception per episode, not one per event
    now = s.utcnow()
    node.clock_flagged_at, node.clock_note = now, note
    s.Node.update(clock_flagged_at=now, clock_note=note).where(s.Node.id == node.id).execute()
    s.StaffException.create(kind=KIND, node=node.id, seq=seq,
                            detail=f"the clock of {node.id} is wrong: {note}", created_at=now)
    logger.warning("clock of %s flagged: %s", node.id, note)


def _unflag(node: s.Node, why: str) -> None:
    now = s.utcnow()
    node.clock_flagged_at = node.clock_note = None
    s.Node.update(clock_flagged_at=None, clock_note=None).where(s.Node.id == node.id).execute()
    s.StaffException.update(closed_at=now, resolution=why).where(
        (s.StaffException.kind == KIND) & (s.StaffException.node == node.id)
        & s.StaffException.closed_at.is_null()).execute()
    logger.info("clock of %s agrees again: %s", node.id, why)
