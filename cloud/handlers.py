"""How the cloud applies events that are not facts about where copies are.

Each handler runs inside the ingest transaction, after the cursor said the
event is the node's next one; copy facts go through cloud/reconcile.py instead.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from cloud import feed
from cloud import store as s
from protocol.envelope import Event

EventHandler = Callable[[s.Node, Event, datetime], None]
HANDLERS: dict[str, EventHandler] = {}


def handles(type_: str) -> Callable[[EventHandler], EventHandler]:
    """Register a handler for an event type."""
    def deco(fn: EventHandler) -> EventHandler:
        HANDLERS[type_] = fn
        return fn
    return deco


def _exception(kind: str, node: s.Node, ev: Event, detail: str, copy: Any = None) -> None:
    s.StaffException.create(kind=kind, node=node.id, seq=ev.seq, copy=copy, detail=detail,
                            created_at=s.utcnow())


@handles("fee.paid")
def fee_paid(node: s.Node, ev: Event, now: datetime) -> None:
    """Keep the payment; a fee lowers what the reader owes."""
    b = ev.body
    s.Payment.insert(id=b["payment_id"], reader=b["reader"], node=node.id, amount=b["amount"],
                     kind=b["kind"], description=b["description"],
                     paid_at=ev.ts).on_conflict_ignore().execute()
    reader = s.Reader.get_or_none(s.Reader.card == b["reader"])
    if reader is None:
        _exception("payment_from_unknown_reader", node, ev,
                   f"{node.id} took {b['amount']} tiyn from card {b['reader']}, unknown here")
        return
    if b["kind"] == "fee":
        s.Reader.update(fees_owed=s.Reader.fees_owed - b["amount"]).where(
            s.Reader.card == b["reader"]).execute()
    feed.reader_changed(b["reader"])


@handles("reader.registered")
def reader_registered(node: s.Node, ev: Event, now: datetime) -> None:
    """A card issued at a desk becomes a reader of the whole network."""
    b = ev.body
    existing = s.Reader.get_or_none(s.Reader.card == b["card"])
    if existing is not None:
        # Two desks issued the same card number while offline: keep the first,
        # and let staff sort out the second reader.
        _exception("card_issued_twice", node, ev,
                   f"{node.id} issued card {b['card']} to {b['name']!r}, already held by "
                   f"{existing.name!r} (registered at {existing.registered_at or 'the cloud'})")
        return
    s.Reader.create(card=b["card"], name=b["name"], category=b["category"],
                    pin_hash=b["pin_hash"], registered_at=node.id)
    feed.reader_changed(b["card"])


@handles("loan.renew")
def loan_renew(node: s.Node, ev: Event, now: datetime) -> None:
    """A loan's due date moved."""
    b = ev.body
    if not s.Loan.update(due=b["due"]).where(s.Loan.id == b["loan_id"]).execute():
        _exception("renewal_of_unknown_loan", node, ev,
                   f"{node.id} renewed loan {b['loan_id']} of copy {b['copy']}, "
                   "which the cloud has no record of", copy=b["copy"])


@handles("hold.picked_up")
def hold_picked_up(node: s.Node, ev: Event, now: datetime) -> None:
    """The reader collected the hold."""
    b = ev.body
    h = s.Hold.get_or_none(s.Hold.id == b["hold_id"])
    if h is None:
        _exception("pickup_of_unknown_hold", node, ev,
                   f"{node.id} handed out hold {b['hold_id']}, unknown here", copy=b["copy"])
        return
    h.status, h.copy = "picked_up", b["copy"]
    h.save()
    feed.hold_changed(h)
