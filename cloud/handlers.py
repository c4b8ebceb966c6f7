"""How the cloud applies events that are not facts about where copies are.

Each handler runs inside the ingest transaction, after the cursor said the
event is the node's next one; copy facts go through cloud/reconcile.py instead.
A handler may return the readers whose debts or figures it changed: ingest
then brings them up to date and tells every node.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from cloud import clocks, debts, feed, flags
from cloud import store as s
from protocol.envelope import Event

EventHandler = Callable[[s.Node, Event, datetime], "set[str] | None"]
HANDLERS: dict[str, EventHandler] = {}


def handles(type_: str) -> Callable[[EventHandler], EventHandler]:
    """Register a handler for an event type."""
    def deco(fn: EventHandler) -> EventHandler:
        HANDLERS[type_] = fn
        return fn
    return deco


def _exception(kind: str, node: s.Node, ev: Event, detail: str, copy: Any = None,
               reader: str | None = None) -> None:
    s.StaffException.create(kind=kind, node=node.id, seq=ev.seq, copy=copy, detail=detail,
                            created_at=s.utcnow(), reader=reader)


@handles("loan.checkout")
def loan_checkout(node: s.Node, ev: Event, now: datetime) -> None:
    """The copy fact made the loan; flag what the node allowed that the cloud would not."""
    b = ev.body
    flags.checkout(node.id, ev.seq, b["reader"], b["copy"], b["loan_id"], clocks.happened_at(ev))


@handles("fee.paid")
def fee_paid(node: s.Node, ev: Event, now: datetime) -> set[str] | None:
    """Keep the payment; a fee lowers what the reader owes (a ledger line), maybe a block."""
    b = ev.body
    s.Payment.insert(id=b["payment_id"], reader=b["reader"], node=node.id, amount=b["amount"],
                     kind=b["kind"], description=b["description"],
                     paid_at=clocks.happened_at(ev)).on_conflict_ignore().execute()
    if b["kind"] == "fee":
        # Kept in the ledger even for a card the cloud does not know yet (its
        # registration may arrive later from another node): the money was paid.
        debts.pay(b["reader"], b["amount"], payment_id=b["payment_id"], node=node.id, now=now)
    if s.Reader.get_or_none(s.Reader.card == b["reader"]) is None:
        _exception("payment_from_unknown_reader", node, ev,
                   f"{node.id} took {b['amount']} tiyn from card {b['reader']}, unknown here",
                   reader=b["reader"])
        return None
    return {b["reader"]}


@handles("reader.registered")
def reader_registered(node: s.Node, ev: Event, now: datetime) -> set[str] | None:
    """A card issued at a desk becomes a reader of the whole network."""
    b = ev.body
    debts.lock_card(b["card"])  # a payment with this card may be applied at this moment
    existing = s.Reader.get_or_none(s.Reader.card == b["card"])
    if existing is not None:
        # Two desks issued the same card number while offline: keep the first,
        # and let staff sort out the second reader.
        _exception("card_issued_twice", node, ev,
                   f"{node.id} issued card {b['card']} to {b['name']!r}, already held by "
                   f"{existing.name!r} (registered at {existing.registered_at or 'the cloud'})",
                   reader=b["card"])
        return None
    s.Reader.create(card=b["card"], name=b["name"], category=b["category"],
                    pin_hash=b["pin_hash"], registered_at=node.id,
                    fees_owed=debts.balance(b["card"]))  # a payment may have come first
    # Its checkouts and payments that came first were flagged as from an unknown
    # card; they are explained, and its loans are judged again by the batch.
    flags.card_registered(b["card"], now)
    return {b["card"]}


@handles("loan.renew")
def loan_renew(node: s.Node, ev: Event, now: datetime) -> set[str] | None:
    """A loan's due date moved (corrected like a checkout's if the node's clock is wrong).

    Its fines are owed anew: the renewal may reach the cloud after a return
    elsewhere closed the loan and settled them with the old due date.
    """
    b = ev.body
    loan = s.Loan.get_or_none(s.Loan.id == b["loan_id"])
    if loan is None:
        _exception("renewal_of_unknown_loan", node, ev,
                   f"{node.id} renewed loan {b['loan_id']} of copy {b['copy']}, "
                   "which the cloud has no record of", copy=b["copy"])
        return None
    s.Loan.update(due=b["due"], due_node=b.get("due_node"), fine_settled=False).where(
        s.Loan.id == loan.id).execute()
    return {loan.reader}


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
