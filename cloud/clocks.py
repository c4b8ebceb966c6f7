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

A transaction the node reports as done earlier than it recorded it (a
self-check kiosk's store-and-forward checkout) carries that time in its body
(``at``): only ``ts`` is judged, ``at`` is the fact's time (``happened_at``) and
its due date is left alone — it was computed from ``at``, not from the node's
clock — unless ``at`` lies after the (corrected) ``ts`` or more than
``cloud.max_report_delay_days`` before it: then it is moved to that bound, the
due date with it, and staff see a ``reported_time_clamped`` exception.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, datetime, timedelta

from cloud import reconcile, settings
from cloud import store as s
from protocol.envelope import Event
from protocol.hlc import Timestamp

logger = logging.getLogger(__name__)

KIND = "clock_skew"
CLAMPED = "reported_time_clamped"


def threshold_s() -> float:
    """How far a node's clock may be off before it is flagged."""
    return float(settings.get_int("cloud.clock_skew_seconds"))


def happened_at(ev: Event) -> datetime:
    """When the event's transaction happened: the reported ``at``, else the node's ``ts``.

    Call it on an event ``correct`` returned: both are corrected and bounded there.
    """
    at = ev.body.get("at")
    return at if isinstance(at, datetime) else ev.ts


def correct(node: s.Node, ev: Event, received: datetime) -> Event:
    """The event as it happened by the right clock; flags or clears ``node`` on the way."""
    hlc = Timestamp.decode(ev.hlc)
    reading = reconcile.read_clock(ev.ts, hlc.wall_ms, received, node.clock_offset_s,
                                   threshold_s())
    if reading.cause is None:
        measured_ok = node.clock_offset_s is None or abs(node.clock_offset_s) <= threshold_s()
        if reading.live and node.clock_flagged_at is not None and measured_ok:
            _unflag(node, f"seq {ev.seq} carried a clock that agrees with the cloud's")
        return _bound_reported(node, ev)
    _flag(node, ev.seq, f"{reading.cause} (seq {ev.seq}, {ev.ts.isoformat()}); its events are "
                        "applied at the corrected time and due dates moved accordingly")
    body = dict(ev.body)
    # A due date the node computed from its own wrong day moves; one computed from a
    # reported time (``at``) does not: that time came from elsewhere.
    if isinstance(body.get("due"), date) and "at" not in body:
        body["due_node"] = body["due"]
        body["due"] = reconcile.corrected_due(body["due"], ev.ts, reading.at)
    return _bound_reported(node, replace(ev, ts=reading.at, body=body))


def _bound_reported(node: s.Node, ev: Event) -> Event:
    """Keep a reported ``at`` between ``ts`` minus the longest delay believed and ``ts``."""
    at = ev.body.get("at")
    if not isinstance(at, datetime):
        return ev
    max_delay = timedelta(days=settings.get_int("cloud.max_report_delay_days"))
    bounded = reconcile.bound_reported(at, ev.ts, max_delay)
    if bounded == at:
        return ev
    body = {**ev.body, "at": bounded}
    if isinstance(body.get("due"), date):
        body.setdefault("due_node", body["due"])
        body["due"] = reconcile.corrected_due(body["due"], at, bounded)
    moved = abs((bounded - at).total_seconds())
    if moved > threshold_s():  # a few seconds of a kiosk's clock are not worth staff's time
        why = ("after the node recorded it" if at > bounded else
               f"more than {max_delay.days} days before the node recorded it")
        source = f" by {ev.body['source']}" if ev.body.get("source") else ""
        s.StaffException.create(
            kind=CLAMPED, node=node.id, seq=ev.seq, copy=ev.body.get("copy"),
            created_at=s.utcnow(),
            detail=f"{node.id} reported {ev.type} (seq {ev.seq}) as done{source} at "
                   f"{at.isoformat()}, {why}; recorded at {bounded.isoformat()}"
                   + (f", due {body['due']}" if "due" in body else ""))
        logger.warning("%s seq %d: reported time %s moved to %s", node.id, ev.seq,
                       at.isoformat(), bounded.isoformat())
    return replace(ev, body=body)


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
