"""How the cloud applies a node's service events: bookings, cancellations, attendance,
payments for bookings, and memberships sold.

Each handler runs in the ingest transaction (registered with cloud/handlers.py).
A booking keeps what the desk quoted and took; the seats are the cloud's to
decide (cloud/services.py ``reseat``). Money taken at a node is a ``Payment``
(kind ``service``), counted once per payment id; it is never a debt.
"""
from __future__ import annotations

import logging
from datetime import datetime

from cloud import reconcile, services
from cloud import service_models as m
from cloud import store as s
from cloud.handlers import handles
from protocol.envelope import Event

logger = logging.getLogger(__name__)

CANCELLED_SESSION = "the session was cancelled"


def _exception(kind: str, node: s.Node, ev: Event, detail: str) -> None:
    s.StaffException.create(kind=kind, node=node.id, seq=ev.seq, detail=detail,
                            created_at=s.utcnow())


def record_payment(payment_id: str, reader: str, node: str, amount: int, what: str,
                   at: datetime) -> bool:
    """Keep money taken for a service (negative: handed back); False if already kept."""
    if s.Payment.get_or_none(s.Payment.id == payment_id) is not None:
        return False
    s.Payment.insert(id=payment_id, reader=reader, node=node, amount=amount, kind="service",
                     description=what[:200], paid_at=at).on_conflict_ignore().execute()
    return True


@handles("service.booked")
def service_booked(node: s.Node, ev: Event, now: datetime) -> None:
    """A booking made at a node: kept with its quote and payment, then the seats decided."""
    b = ev.body
    if m.Booking.get_or_none(m.Booking.id == b["booking_id"]) is not None:
        _exception("booking_twice", node, ev, f"{node.id} sent booking {b['booking_id']} "
                   "again under another seq: the first one is kept")
        return
    x = services.session_row(b["session"])
    reader = s.Reader.get_or_none(s.Reader.card == b["reader"])
    m.Booking.create(id=b["booking_id"], session=b["session"], reader=b["reader"], node=node.id,
                     seq=ev.seq, key=reconcile.fact_key(ev.hlc, node.id, ev.seq),
                     status=services.ACTIVE, seat=b["seat"], told=b["seat"],
                     promised=b["seat"] == services.SEATED, base=b["base"],
                     percent=b["percent"], price=b["price"], paid=b["paid"], rule=b["rule"],
                     category=reader.category if reader else "", booked_at=ev.ts)
    if b["paid"]:
        record_payment(b["payment_id"], b["reader"], node.id, b["paid"],
                       f"booking {b['booking_id']}", ev.ts)
    if reader is None:
        _exception("booking_by_unknown_reader", node, ev,
                   f"{node.id} booked session {b['session']} for card {b['reader']}, "
                   "unknown here")
    if x is None:
        _exception("booking_of_unknown_session", node, ev,
                   f"{node.id} booked {b['reader']} for session {b['session']}, unknown here")
        return
    if x.status != "scheduled":
        # Cancelled while the desk was offline: the booking cannot stand.
        m.Booking.update(status=services.CANCELLED, cancelled_at=now,
                         cancel_reason=CANCELLED_SESSION).where(
            m.Booking.id == b["booking_id"]).execute()
        if b["paid"]:
            _exception("booking_of_cancelled_session", node, ev,
                       f"{node.id} booked and took {b['paid']} tiyn from {b['reader']} for "
                       f"session {x.id}, which had been cancelled: refund them")
    moved = services.reseat(x.id, now)
    if b["booking_id"] not in moved:
        services.booking_changed(m.Booking.get(m.Booking.id == b["booking_id"]))


def _booking(node: s.Node, ev: Event, what: str) -> m.Booking | None:
    bk: m.Booking | None = m.Booking.get_or_none(m.Booking.id == ev.body["booking_id"])
    if bk is None:
        _exception(f"{what}_of_unknown_booking", node, ev,
                   f"{node.id} sent {ev.type} for booking {ev.body['booking_id']} of "
                   f"{ev.body['reader']}, unknown here")
    return bk


@handles("service.cancelled")
def service_cancelled(node: s.Node, ev: Event, now: datetime) -> None:
    """A booking cancelled at a node; what was handed back is a negative payment."""
    b = ev.body
    bk = _booking(node, ev, "cancel")
    if bk is None:
        return
    refunded = min(b["refunded"], bk.paid)
    if refunded:
        record_payment(f"refund-{node.id}-{ev.seq}", bk.reader, node.id, -refunded,
                       f"refund of booking {bk.id}", ev.ts)
    if bk.status != services.CANCELLED:
        if bk.exception is not None:
            services.close_exception(bk.exception, now, f"the booking was cancelled at {node.id}")
        m.Booking.update(status=services.CANCELLED, cancelled_at=ev.ts,
                         cancel_reason=b["reason"], paid=bk.paid - refunded,
                         exception=None).where(m.Booking.id == bk.id).execute()
    elif refunded:
        m.Booking.update(paid=bk.paid - refunded).where(m.Booking.id == bk.id).execute()
    moved = services.reseat(bk.session, now)
    if bk.id not in moved:
        services.booking_changed(m.Booking.get(m.Booking.id == bk.id))


@handles("service.attended")
def service_attended(node: s.Node, ev: Event, now: datetime) -> None:
    """Staff marked whether the reader came."""
    bk = _booking(node, ev, "attendance")
    if bk is None:
        return
    m.Booking.update(attendance=ev.body["outcome"], marked_at=ev.ts, marked_by=node.id).where(
        m.Booking.id == bk.id).execute()
    services.booking_changed(m.Booking.get(m.Booking.id == bk.id))


@handles("service.paid")
def service_paid(node: s.Node, ev: Event, now: datetime) -> None:
    """Money taken later for a booking (made online, or unpaid at a desk)."""
    b = ev.body
    bk = _booking(node, ev, "payment")
    what = f"booking {b['booking_id']}"
    if not record_payment(b["payment_id"], b["reader"], node.id, b["amount"], what, ev.ts):
        return
    if bk is not None:
        m.Booking.update(paid=m.Booking.paid + b["amount"]).where(
            m.Booking.id == bk.id).execute()
        services.booking_changed(m.Booking.get(m.Booking.id == bk.id))


@handles("membership.sold")
def membership_sold(node: s.Node, ev: Event, now: datetime) -> None:
    """A membership sold or issued at a node: the reader is a member for its term."""
    b = ev.body
    if m.Membership.get_or_none(m.Membership.id == b["membership_id"]) is not None:
        return
    reader = s.Reader.get_or_none(s.Reader.card == b["reader"])
    ms = m.Membership.create(
        id=b["membership_id"], reader=b["reader"], service=b["service"], starts=b["starts"],
        ends=b["ends"], base=b["base"], percent=b["percent"], price=b["price"], paid=b["paid"],
        rule=b["rule"], category=reader.category if reader else "", node=node.id,
        sold_at=ev.ts, renewal_of=b["renewal_of"])
    if b["paid"]:
        record_payment(b["payment_id"], b["reader"], node.id, b["paid"],
                       f"membership {b['membership_id']}", ev.ts)
    if reader is None:
        _exception("membership_for_unknown_reader", node, ev,
                   f"{node.id} sold membership {b['membership_id']} to card {b['reader']}, "
                   "unknown here")
    if m.Service.get_or_none(m.Service.id == b["service"]) is None:
        _exception("membership_of_unknown_service", node, ev,
                   f"{node.id} sold {b['reader']} a membership of {b['service']}, "
                   "unknown here")
    services.membership_changed(ms)
