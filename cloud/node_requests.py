"""What a node asks on a reader's behalf: blocks a self-check set or lifted, holds placed there.

A self-check's 01 Block Patron and 25 Patron Enable, and its 15 Hold, are
events of the node like any other (``docs/sip2.md``). The cloud applies them
with the rules staff and the catalogue use: a block set by a kiosk is
``blocked_by = "kiosk"`` (the automatic thresholds never lift it; a kiosk's
Patron Enable or staff do), and reaches every node through the reader's feed
record; a hold goes through ``cloud.actions`` like one placed online, and one
the cloud refuses is taken back from the node with a deletion in the feed.
Registered with ingest's handlers; each runs inside the ingest transaction.
"""
from __future__ import annotations

import logging
from datetime import datetime

from cloud import actions, audit, clocks, feed, holds, notices
from cloud import store as s
from cloud.catalogue import MAX_HOLDS
from cloud.handlers import handles
from protocol.envelope import Event

logger = logging.getLogger(__name__)

BY_KIOSK = "kiosk"   # Reader.blocked_by for a block a self-check set


def _exception(kind: str, node: s.Node, ev: Event, detail: str) -> None:
    s.StaffException.create(kind=kind, node=node.id, seq=ev.seq, detail=detail,
                            created_at=s.utcnow())


@handles("reader.blocked")
def reader_blocked(node: s.Node, ev: Event, now: datetime) -> set[str] | None:
    """A self-check blocked the card: blocked everywhere, unless staff blocked it already."""
    b = ev.body
    retained = " and kept the card" if b["card_retained"] else ""
    reader = s.Reader.get_or_none(s.Reader.card == b["card"])
    if reader is None:
        _exception("block_of_unknown_reader", node, ev,
                   f"{b['source']} at {node.id} blocked card {b['card']}{retained}, "
                   f"unknown here: {b['reason']}")
        return None
    if reader.blocked_reason and reader.blocked_by == "staff":
        logger.info("%s: %s blocked %s, already blocked by staff: kept", node.id, b["source"],
                    reader.card)
    else:
        at = clocks.happened_at(ev)
        s.Reader.update(blocked_reason=b["reason"], blocked_by=BY_KIOSK, blocked_at=at).where(
            s.Reader.card == reader.card).execute()
        if not reader.blocked_reason:
            notices.queue(reader.card, "blocked", f"blocked/{reader.card}/{at:%Y%m%dT%H%M%S}",
                          "Your library card is blocked",
                          f"Your card is blocked at every library and machine: {b['reason']}. "
                          "Please ask staff at a library.", now)
    _exception("blocked_at_self_check", node, ev,
               f"{b['source']} at {node.id} blocked card {reader.card}{retained}: {b['reason']}")
    return {reader.card}


@handles("reader.unblocked")
def reader_unblocked(node: s.Node, ev: Event, now: datetime) -> set[str] | None:
    """A self-check lifted a block: only one a self-check set; any other block stays."""
    b = ev.body
    reader = s.Reader.get_or_none(s.Reader.card == b["card"])
    if reader is None:
        return None
    if reader.blocked_by == BY_KIOSK:
        s.Reader.update(blocked_reason=None, blocked_by=None, blocked_at=None).where(
            s.Reader.card == reader.card).execute()
        logger.info("%s: %s lifted the self-check block on %s", node.id, b["source"],
                    reader.card)
    elif reader.blocked_reason:
        logger.info("%s: %s lifted a self-check block on %s, blocked by %s meanwhile: kept",
                    node.id, b["source"], reader.card, reader.blocked_by)
    # Either way the reader's record goes down again: the node learns what holds.
    return {reader.card}


@handles("hold.requested")
def hold_requested(node: s.Node, ev: Event, now: datetime) -> None:
    """A reader reserved a title at a self-check: placed as online, or taken back from the node."""
    b = ev.body
    reader = s.Reader.get_or_none(s.Reader.card == b["reader"])
    active = s.Hold.select().where((s.Hold.reader == b["reader"])
                                   & s.Hold.status.in_(holds.ACTIVE)).count()
    try:
        if reader is not None and reader.blocked_reason:
            raise actions.ActionError(f"{b['reader']} is blocked ({reader.blocked_reason})")
        if active >= MAX_HOLDS:
            raise actions.ActionError(f"{b['reader']} has {active} holds, the most allowed")
        h = actions.place_hold(b["reader"], b["title"], b["pickup"], hold_id=b["hold_id"])
    except actions.ActionError as exc:
        _exception("hold_request_refused", node, ev,
                   f"{b.get('source') or node.id} placed hold {b['hold_id']} on {b['title']} "
                   f"for {b['reader']} at {b['pickup']}; refused: {exc}")
        # The node keeps a provisional row for it until told: it goes.
        feed.record("hold", b["hold_id"], "delete", {"id": b["hold_id"]}, scope=b["pickup"])
        return
    audit.record(f"reader:{b['reader']}", "hold.place", f"reader:{b['reader']}",
                 f"{b['title']} at {b['pickup']} ({h.id}) at {b.get('source') or node.id}",
                 role="reader", node=node.id, at=clocks.happened_at(ev))


@handles("hold.cancelled")
def hold_cancelled(node: s.Node, ev: Event, now: datetime) -> None:
    """A reader cancelled their hold at a self-check; its copy goes to the next in line."""
    b = ev.body
    h = s.Hold.get_or_none(s.Hold.id == b["hold_id"])
    if h is None or h.reader != b["reader"] or h.status not in holds.ACTIVE:
        _exception("hold_cancel_refused", node, ev,
                   f"{b.get('source') or node.id} cancelled hold {b['hold_id']} of "
                   f"{b['reader']}: " + ("unknown here" if h is None else
                                         f"it is {h.status}, of {h.reader}"))
        if h is not None:
            feed.hold_changed(h)    # the node learns what the hold really is
        return
    holds.cancel(h, now)
    audit.record(f"reader:{b['reader']}", "hold.cancel", f"reader:{b['reader']}",
                 f"{h.title_id} at {h.pickup_node} ({h.id}) at {b.get('source') or node.id}",
                 role="reader", node=node.id, at=clocks.happened_at(ev))
