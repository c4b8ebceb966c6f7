"""Services at a node's desk, offline like loans: quotes, bookings with their payment,
cancellations, attendance, memberships, and what the desk shows about them.

A booking is decided here from what this node knows: the cloud's bookings of the
session (every node has them from the feed) plus those made here since. A seat
is free while fewer than ``capacity`` active bookings hold or wait for one (a
reader already waiting comes first). The cloud has the last word on seats
(cloud/services.py): the booking's real status comes back down the feed.

Each change and its event (``service.booked`` and the others) are written in
one transaction with the payment taken for it (the transactional outbox).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge import pricing
from edge.circulation import Refusal
from edge.service_records import Booking, DiscountRule, Membership, Service, ServiceSession
from edge.store import CirculationRefused, EdgeStore, Payment, Reader, local_day, utcnow

logger = logging.getLogger(__name__)

SEATED, WAITLISTED = "seated", "waitlisted"
ACTIVE, CANCELLED = "active", "cancelled"
# Sessions the desk lists: those that end after now, for this many days ahead.
LIST_DAYS = 60
# Bookings of a reader the desk shows: those of sessions that ended up to this long ago.
RECENT_DAYS = 30


def refuse(code: str, message: str) -> CirculationRefused:
    """A refusal the API turns into 409 with its code."""
    return CirculationRefused(Refusal(code, message))


def is_member(card: str, now: datetime) -> bool:
    """True if the reader holds a membership today, as this node knows."""
    day = local_day(now)
    return Membership.select().where((Membership.reader == card) & (Membership.starts <= day)
                                     & (Membership.ends >= day)).exists()


def rules() -> list[pricing.Rule]:
    """The cloud's discount rules over the network's defaults."""
    return pricing.rules_with_defaults(
        pricing.Rule(r.category, r.kind, r.percent, partner=r.partner, service=r.service,
                     valid_from=r.valid_from, valid_to=r.valid_to, id=r.id)
        for r in DiscountRule.select())


def quote(reader: Reader, service: Service, now: datetime,
          table: list[pricing.Rule] | None = None) -> pricing.Quote:
    """What the reader pays for the service today."""
    buyer = pricing.Buyer(reader.category, reader.partner, is_member(reader.card, now))
    return pricing.price(service.price, service.kind, buyer, local_day(now),
                         table if table is not None else rules(), service.id)


def quote_data(q: pricing.Quote) -> dict[str, Any]:
    """A quote as the API and the receipt show it."""
    key, args = q.reason()
    return {"base": q.base, "percent": q.percent, "discount": q.discount, "amount": q.amount,
            "reason": key, "reason_args": args, "note": q.note()}


def names(svc: Service | None) -> dict[str, str]:
    """A service's names in the three languages."""
    if svc is None:
        return {"kk": "?", "ru": "?", "en": "?"}
    return {"kk": svc.name_kk, "ru": svc.name_ru, "en": svc.name_en}


def _taken(session_id: str) -> int:
    return Booking.select().where((Booking.session == session_id)
                                  & (Booking.status == ACTIVE)).count()


def _seated(session_id: str) -> int:
    return Booking.select().where((Booking.session == session_id) & (Booking.status == ACTIVE)
                                  & (Booking.seat == SEATED)).count()


def _position(b: Booking) -> int | None:
    """A waiting booking's place in line (the cloud's order; ours after it)."""
    if b.status != ACTIVE or b.seat != WAITLISTED:
        return None
    line = sorted(Booking.select().where((Booking.session == b.session)
                                         & (Booking.status == ACTIVE)
                                         & (Booking.seat == WAITLISTED)),
                  key=lambda x: (x.key or "~", x.booked_at, x.id))
    return next(i for i, x in enumerate(line, 1) if x.id == b.id)


@dataclass(frozen=True)
class Receipt:
    """What the reader is handed after booking or buying."""

    data: dict[str, Any]


class ServiceDesk:
    """Services through the node's store: one per app, shared by its threads."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store

    # -- reading ----------------------------------------------------------------------

    def session_view(self, x: ServiceSession, svc: Service | None = None,
                     reader: Reader | None = None, now: datetime | None = None,
                     table: list[pricing.Rule] | None = None) -> dict[str, Any]:
        """A session as the desk lists it, with the price ``reader`` would pay."""
        svc = svc or Service.get_or_none(Service.id == x.service)
        taken = _taken(x.id)
        out = {"id": x.id, "service": x.service, "kind": svc.kind if svc else "",
               "names": names(svc), "branch": x.branch, "starts_at": x.starts_at.isoformat(),
               "ends_at": x.ends_at.isoformat(), "room": x.room, "host": x.host,
               "capacity": x.capacity, "status": x.status, "seated": _seated(x.id),
               "waiting": max(0, taken - x.capacity), "free": max(0, x.capacity - taken),
               "price": svc.price if svc else 0, "cloud_seated": x.seated,
               "cloud_waiting": x.waiting}
        if reader is not None and svc is not None:
            out["quote"] = quote_data(quote(reader, svc, now or utcnow(), table))
            mine = Booking.get_or_none((Booking.session == x.id) & (Booking.reader == reader.card)
                                       & (Booking.status == ACTIVE))
            out["booked"] = mine.id if mine else None
        return out

    def sessions(self, *, card: str | None = None, branch: str | None = None,
                 now: datetime | None = None) -> list[dict[str, Any]]:
        """Sessions that have not ended, soonest first (with ``card``'s prices)."""
        now = now or utcnow()
        reader = Reader.get_or_none(Reader.card == card) if card else None
        if card and reader is None:
            raise refuse("unknown_reader", "This card is not known here.")
        query = ServiceSession.select().where(ServiceSession.status == "scheduled")
        if branch:
            query = query.where(ServiceSession.branch == branch)
        until = now.timestamp() + LIST_DAYS * 86400
        rows = [x for x in query if x.ends_at > now and x.starts_at.timestamp() <= until]
        svcs = {v.id: v for v in Service.select()}
        table = rules()
        return [self.session_view(x, svcs.get(x.service), reader, now, table)
                for x in sorted(rows, key=lambda x: (x.starts_at, x.id))]

    def roster(self, session_id: str) -> dict[str, Any]:
        """A session with its bookings: who holds a seat, who waits, who came, who owes."""
        x = ServiceSession.get_or_none(ServiceSession.id == session_id)
        if x is None:
            raise refuse("unknown_session", "No such session is known here.")
        rows = list(Booking.select().where(Booking.session == session_id))
        people = {r.card: r.name for r in Reader.select(Reader.card, Reader.name)
                  .where(Reader.card.in_([b.reader for b in rows] or [""]))}
        rows.sort(key=lambda b: (b.status != ACTIVE, b.seat != SEATED, b.key or "~",
                                 b.booked_at))
        out = self.session_view(x)
        out["bookings"] = [{**self.booking_view(b), "name": people.get(b.reader, "")}
                           for b in rows]
        return out

    @staticmethod
    def booking_view(b: Booking) -> dict[str, Any]:
        """A booking as the desk shows it ("confirmed": the cloud has decided its seat)."""
        return {"id": b.id, "session": b.session, "reader": b.reader, "node": b.node,
                "status": b.status, "seat": b.seat, "attendance": b.attendance,
                "base": b.base, "percent": b.percent, "price": b.price, "paid": b.paid,
                "owed": max(0, b.price - b.paid) if b.status == ACTIVE and b.seat == SEATED
                else 0, "rule": b.rule, "booked_at": b.booked_at.isoformat(),
                "confirmed": bool(b.key), "position": _position(b)}

    def reader_services(self, card: str, now: datetime | None = None) -> dict[str, Any]:
        """A reader's bookings (coming and recent) and memberships, as known here."""
        now = now or utcnow()
        if Reader.get_or_none(Reader.card == card) is None:
            raise refuse("unknown_reader", "This card is not known here.")
        sessions = {x.id: x for x in ServiceSession.select()}
        svcs = {v.id: v for v in Service.select()}
        since = now.timestamp() - RECENT_DAYS * 86400
        bookings = []
        for b in Booking.select().where(Booking.reader == card):
            x = sessions.get(b.session)
            if x is not None and x.ends_at.timestamp() < since:
                continue
            svc = svcs.get(x.service) if x else None
            bookings.append({**self.booking_view(b), "names": names(svc),
                             "starts_at": x.starts_at.isoformat() if x else None,
                             "branch": x.branch if x else None, "room": x.room if x else ""})
        bookings.sort(key=lambda b: b["starts_at"] or "")
        day = local_day(now)
        memberships = [{"id": ms.id, "service": ms.service, "names": names(svcs.get(ms.service)),
                        "starts": ms.starts.isoformat(), "ends": ms.ends.isoformat(),
                        "active": ms.starts <= day <= ms.ends, "paid": ms.paid}
                       for ms in Membership.select().where(Membership.reader == card)
                       .order_by(Membership.ends.desc())]
        return {"card": card, "member": is_member(card, now), "bookings": bookings,
                "memberships": memberships}

    def services(self, card: str | None = None, now: datetime | None = None
                 ) -> list[dict[str, Any]]:
        """The services offered (with ``card``'s prices): memberships to sell among them."""
        now = now or utcnow()
        reader = Reader.get_or_none(Reader.card == card) if card else None
        table = rules()
        out = []
        for v in Service.select().where(Service.active == True).order_by(  # noqa: E712
                Service.kind, Service.id):
            row = {"id": v.id, "kind": v.kind, "names": names(v), "price": v.price,
                   "term_days": v.term_days, "branch": v.branch}
            if reader is not None:
                row["quote"] = quote_data(quote(reader, v, now, table))
            out.append(row)
        return out

    # -- acting ------------------------------------------------------------------------

    def _reader(self, card: str) -> Reader:
        reader = Reader.get_or_none(Reader.card == card)
        if reader is None:
            raise refuse("unknown_reader", "This card is not known here.")
        if reader.blocked_reason:
            raise refuse("blocked", f"The card is blocked: {reader.blocked_reason}")
        return reader

    def book(self, card: str, session_id: str, *, waitlist: bool = False, pay: bool = True,
             now: datetime | None = None) -> Receipt:
        """Book a session for a reader, taking the payment (if any) in the same transaction."""
        now = now or utcnow()
        with self.store.writing():
            reader = self._reader(card)
            x = ServiceSession.get_or_none(ServiceSession.id == session_id)
            if x is None or x.status != "scheduled":
                raise refuse("unknown_session", "No such session to book here.")
            if x.ends_at <= now:
                raise refuse("session_over", "This session is over.")
            if Booking.select().where((Booking.session == session_id) & (Booking.reader == card)
                                      & (Booking.status == ACTIVE)).exists():
                raise refuse("already_booked", "This reader is already booked for it.")
            svc = Service.get_or_none(Service.id == x.service)
            if svc is None:
                raise refuse("unknown_service", "The session's service is not known here.")
            seat = SEATED if _taken(session_id) < x.capacity else WAITLISTED
            if seat == WAITLISTED and not waitlist:
                raise refuse("full", f"All {x.capacity} seats are taken: offer the waiting list.")
            q = quote(reader, svc, now)
            paid = q.amount if seat == SEATED and pay else 0
            bid, pid = uuid.uuid4().hex, uuid.uuid4().hex if paid else None
            Booking.create(id=bid, session=session_id, reader=card, node=self.store.node_id,
                           status=ACTIVE, seat=seat, base=q.base, percent=q.percent,
                           price=q.amount, paid=paid, rule=q.note(), booked_at=now)
            if paid:
                Payment.create(id=pid, reader=card, amount=paid, kind="service",
                               description=f"booking {bid}", taken_at=now)
            seq = self.store.emit("service.booked", {
                "booking_id": bid, "session": session_id, "reader": card, "seat": seat,
                "base": q.base, "percent": q.percent, "price": q.amount, "rule": q.note(),
                "paid": paid, "payment_id": pid}, now)
        logger.info("booked %s for %s at %s: %s, paid %d (seq %d)", card, session_id, x.branch,
                    seat, paid, seq)
        b = Booking.get(Booking.id == bid)
        return Receipt({**self.booking_view(b), "seq": seq, "names": names(svc),
                        "starts_at": x.starts_at.isoformat(), "branch": x.branch,
                        "room": x.room, "host": x.host, "quote": quote_data(q),
                        "reader_name": reader.name, "payment_id": pid})

    def cancel(self, booking_id: str, *, reason: str = "", refund: bool = True,
               now: datetime | None = None) -> dict[str, Any]:
        """Cancel a booking (any branch's); what was paid is handed back when ``refund``."""
        now = now or utcnow()
        with self.store.writing():
            b = Booking.get_or_none(Booking.id == booking_id)
            if b is None or b.status == CANCELLED:
                raise refuse("unknown_booking", "No open booking with this id is known here.")
            refunded = b.paid if refund else 0
            Booking.update(status=CANCELLED, paid=b.paid - refunded).where(
                Booking.id == booking_id).execute()
            if refunded:
                Payment.create(id=uuid.uuid4().hex, reader=b.reader, amount=-refunded,
                               kind="service", description=f"refund of booking {b.id}",
                               taken_at=now)
            seq = self.store.emit("service.cancelled", {
                "booking_id": b.id, "session": b.session, "reader": b.reader,
                "reason": reason[:200], "refunded": refunded}, now)
        return {**self.booking_view(Booking.get(Booking.id == booking_id)), "seq": seq,
                "refunded": refunded}

    def attend(self, booking_id: str, outcome: str, now: datetime | None = None
               ) -> dict[str, Any]:
        """Mark whether the reader came (at the branch that holds the session)."""
        now = now or utcnow()
        with self.store.writing():
            b = Booking.get_or_none(Booking.id == booking_id)
            if b is None or b.status == CANCELLED:
                raise refuse("unknown_booking", "No open booking with this id is known here.")
            x = ServiceSession.get_or_none(ServiceSession.id == b.session)
            if x is None or x.branch != self.store.node_id:
                raise refuse("other_branch", "Attendance is marked at the branch that holds it.")
            if x.starts_at > now:
                raise refuse("not_started", "The session has not started yet.")
            Booking.update(attendance=outcome).where(Booking.id == booking_id).execute()
            seq = self.store.emit("service.attended", {
                "booking_id": b.id, "session": b.session, "reader": b.reader,
                "outcome": outcome}, now)
        return {**self.booking_view(Booking.get(Booking.id == booking_id)), "seq": seq}

    def pay(self, booking_id: str, now: datetime | None = None) -> dict[str, Any]:
        """Take what a seated booking still owes (booked online, or unpaid at a desk)."""
        now = now or utcnow()
        with self.store.writing():
            b = Booking.get_or_none(Booking.id == booking_id)
            if b is None or b.status != ACTIVE:
                raise refuse("unknown_booking", "No open booking with this id is known here.")
            if b.seat != SEATED:
                raise refuse("waitlisted", "A booking on the waiting list is paid once seated.")
            owed = b.price - b.paid
            if owed <= 0:
                raise refuse("nothing_owed", "Nothing is owed for this booking.")
            pid = uuid.uuid4().hex
            Payment.create(id=pid, reader=b.reader, amount=owed, kind="service",
                           description=f"booking {b.id}", taken_at=now)
            Booking.update(paid=b.price).where(Booking.id == booking_id).execute()
            seq = self.store.emit("service.paid", {"payment_id": pid, "booking_id": b.id,
                                                   "reader": b.reader, "amount": owed}, now)
        return {**self.booking_view(Booking.get(Booking.id == booking_id)), "seq": seq,
                "amount": owed, "payment_id": pid}

    def sell_membership(self, card: str, service_id: str, now: datetime | None = None
                        ) -> Receipt:
        """Sell (or issue, when free) a membership; a renewal runs on from the current term."""
        now = now or utcnow()
        with self.store.writing():
            reader = self._reader(card)
            svc = Service.get_or_none(Service.id == service_id)
            if svc is None or svc.kind != "membership" or not svc.active:
                raise refuse("unknown_service", "No such membership is offered.")
            q = quote(reader, svc, now)
            running = (Membership.select().where((Membership.reader == card)
                                                 & (Membership.ends >= local_day(now)))
                       .order_by(Membership.ends.desc()).first())
            starts, ends = pricing.membership_term(local_day(now),
                                                   running.ends if running else None,
                                                   int(svc.term_days or 365))
            mid, pid = uuid.uuid4().hex, uuid.uuid4().hex if q.amount else None
            Membership.create(id=mid, reader=card, service=svc.id, starts=starts, ends=ends,
                              price=q.amount, paid=q.amount, node=self.store.node_id)
            if q.amount:
                Payment.create(id=pid, reader=card, amount=q.amount, kind="service",
                               description=f"membership {mid}", taken_at=now)
            seq = self.store.emit("membership.sold", {
                "membership_id": mid, "reader": card, "service": svc.id, "starts": starts,
                "ends": ends, "base": q.base, "percent": q.percent, "price": q.amount,
                "rule": q.note(), "paid": q.amount, "payment_id": pid,
                "renewal_of": running.id if running else None}, now)
        logger.info("membership %s to %s: %s..%s, paid %d (seq %d)", svc.id, card, starts,
                    ends, q.amount, seq)
        return Receipt({"id": mid, "seq": seq, "reader": card, "reader_name": reader.name,
                        "service": svc.id, "names": names(svc), "starts": starts.isoformat(),
                        "ends": ends.isoformat(), "renewal_of": running.id if running else None,
                        "quote": quote_data(q), "paid": q.amount, "payment_id": pid})
