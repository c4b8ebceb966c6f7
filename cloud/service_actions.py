"""What staff and readers do to services from the cloud: configure partners, discount rules,
services and sessions; book, cancel and mark attendance; issue free memberships online.

Every action is one transaction with its feed changes (the nodes learn it), and
refuses bad input with ``ActionError`` before changing anything. The console
and the catalogue call these inside ``writing()`` and add the audit entry.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cloud import feed, reconcile, services, settings
from cloud import service_models as m
from cloud import store as s
from cloud.actions import ActionError
from edge import pricing

# Codes staff give partners and services: short, readable in a URL and a CSV.
CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
# The longest a session may run, and the furthest ahead one may be scheduled.
MAX_SESSION = timedelta(hours=12)
MAX_AHEAD = timedelta(days=400)
MAX_CAPACITY = 1000
MAX_PRICE = 10**8  # a million tenge: far above anything a library sells
MAX_TERM_DAYS = 3660


def _code(value: str, what: str) -> str:
    value = value.strip().lower()
    if not CODE_RE.match(value):
        raise ActionError(f"{what} code: 2–40 small letters, digits or dashes")
    return value


# -- configuration (administrators) -----------------------------------------------------

def save_partner(partner_id: str, name: str, note: str = "") -> m.Partner:
    """Create or rename a partner organisation."""
    pid = _code(partner_id, "partner")
    if not 2 <= len(name.strip()) <= 200:
        raise ActionError("a partner needs a name")
    with feed.transaction():
        s.upsert(m.Partner, [{"id": pid, "name": name.strip(), "note": note[:500],
                              "created_at": s.utcnow()}], [m.Partner.id])
        p: m.Partner = m.Partner.get(m.Partner.id == pid)
        feed.record("partner", pid, "upsert", services.partner_data(p))
    return p


def set_reader_partner(card: str, category: str, partner: str | None) -> None:
    """Put a reader in a category and (or out of) a partner organisation."""
    if category not in pricing.CATEGORIES:
        raise ActionError(f"unknown category {category!r}")
    with feed.transaction():
        if partner and m.Partner.get_or_none(m.Partner.id == partner) is None:
            raise ActionError(f"no partner {partner}")
        if not s.Reader.update(category=category, partner=partner or None).where(
                s.Reader.card == card).execute():
            raise ActionError(f"no reader with card {card}")
        feed.reader_changed(card)


def save_rule(*, category: str, kind: str, percent: int, partner: str = "*",
              service: str = "*", valid_from: date | None = None, valid_to: date | None = None,
              note: str = "", by: str = "", rule_id: int | None = None) -> m.DiscountRule:
    """Create (or change) a discount rule; "*" is any category, partner, kind or service."""
    if category not in (*pricing.CATEGORIES, pricing.MEMBER, pricing.ANY):
        raise ActionError(f"unknown category {category!r}")
    if kind not in pricing.TARGETS:
        raise ActionError(f"unknown kind {kind!r}")
    if not 0 <= percent <= 100:
        raise ActionError("a discount is a percentage from 0 to 100")
    if valid_from and valid_to and valid_to < valid_from:
        raise ActionError("a rule ends on or after the day it starts")
    with feed.transaction():
        if partner != "*" and m.Partner.get_or_none(m.Partner.id == partner) is None:
            raise ActionError(f"no partner {partner}")
        if service != "*":
            svc = m.Service.get_or_none(m.Service.id == service)
            if svc is None:
                raise ActionError(f"no service {service}")
            if kind not in (pricing.ANY, svc.kind) and not (
                    kind == pricing.SERVICE_GROUP and svc.kind in pricing.BOOKABLE):
                raise ActionError(f"{service} is a {svc.kind}, not a {kind}")
        fields = {"category": category, "kind": kind, "percent": percent, "partner": partner,
                  "service": service, "valid_from": valid_from, "valid_to": valid_to,
                  "note": note[:500]}
        if rule_id is None:
            rule = m.DiscountRule.create(**fields, created_by=by, created_at=s.utcnow())
        else:
            if not m.DiscountRule.update(**fields).where(
                    m.DiscountRule.id == rule_id).execute():
                raise ActionError(f"no rule {rule_id}")
            rule = m.DiscountRule.get(m.DiscountRule.id == rule_id)
        feed.record("discount", str(rule.id), "upsert", services.rule_data(rule))
    return rule


def delete_rule(rule_id: int) -> m.DiscountRule:
    """Remove a discount rule (a default it replaced applies again)."""
    with feed.transaction():
        rule = m.DiscountRule.get_or_none(m.DiscountRule.id == rule_id)
        if rule is None:
            raise ActionError(f"no rule {rule_id}")
        rule.delete_instance()
        feed.record("discount", str(rule_id), "delete", {"id": rule_id})
    return rule


@dataclass(frozen=True)
class ServiceForm:
    """A service as an administrator describes it."""

    id: str
    kind: str
    names: tuple[str, str, str]  # kk, ru, en
    price: int
    term_days: int | None = None
    capacity: int = 1
    branch: str | None = None
    about: tuple[str, str, str] = ("", "", "")
    active: bool = True


def save_service(form: ServiceForm) -> m.Service:
    """Create or change a service (its sessions keep their own seats)."""
    sid = _code(form.id, "service")
    if form.kind not in pricing.KINDS:
        raise ActionError(f"unknown kind {form.kind!r}")
    if not all(1 <= len(n.strip()) <= 200 for n in form.names):
        raise ActionError("a service needs its name in Kazakh, Russian and English")
    if not 0 <= form.price <= MAX_PRICE:
        raise ActionError("a price is an amount in tiyn, 0 for free")
    if form.kind == "membership" and not (form.term_days and 1 <= form.term_days
                                          <= MAX_TERM_DAYS):
        raise ActionError("a membership needs its term in days")
    if not 1 <= form.capacity <= MAX_CAPACITY:
        raise ActionError(f"capacity: 1 to {MAX_CAPACITY}")
    with feed.transaction():
        if form.branch and s.Node.get_or_none(s.Node.id == form.branch) is None:
            raise ActionError(f"no node {form.branch}")
        s.upsert(m.Service, [{
            "id": sid, "kind": form.kind, "name_kk": form.names[0].strip(),
            "name_ru": form.names[1].strip(), "name_en": form.names[2].strip(),
            "about_kk": form.about[0][:2000], "about_ru": form.about[1][:2000],
            "about_en": form.about[2][:2000], "price": form.price,
            "term_days": form.term_days if form.kind == "membership" else None,
            "capacity": form.capacity, "branch": form.branch or None, "active": form.active,
            "created_at": s.utcnow()}], [m.Service.id])
        svc: m.Service = m.Service.get(m.Service.id == sid)
        feed.record("service", sid, "upsert", services.service_data(svc))
    return svc


def schedule(service_id: str, branch: str, starts_at: datetime, ends_at: datetime, *,
             room: str = "", host: str = "", capacity: int | None = None,
             session_id: str | None = None, now: datetime | None = None) -> m.ServiceSession:
    """Schedule a session of a bookable service at a branch (a slot, an evening)."""
    now = now or s.utcnow()
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ActionError("a session's times need a time zone")
    if not timedelta(minutes=5) <= ends_at - starts_at <= MAX_SESSION:
        raise ActionError("a session lasts from 5 minutes to 12 hours")
    if starts_at > now + MAX_AHEAD:
        raise ActionError("a session is scheduled at most 400 days ahead")
    with feed.transaction():
        svc = m.Service.get_or_none(m.Service.id == service_id)
        if svc is None or svc.kind not in pricing.BOOKABLE:
            raise ActionError(f"no bookable service {service_id}")
        node = s.Node.get_or_none(s.Node.id == branch)
        if node is None or node.kind != "branch":
            raise ActionError(f"no branch {branch}")
        cap = capacity if capacity is not None else svc.capacity
        if not 1 <= cap <= MAX_CAPACITY:
            raise ActionError(f"capacity: 1 to {MAX_CAPACITY}")
        sid = session_id or f"{service_id[:24]}-{uuid.uuid4().hex[:8]}"
        m.ServiceSession.create(id=sid, service=service_id, branch=branch, starts_at=starts_at,
                                ends_at=ends_at, room=room.strip()[:200],
                                host=host.strip()[:200], capacity=cap, created_at=now)
        x: m.ServiceSession = m.ServiceSession.get(m.ServiceSession.id == sid)
        services.session_changed(x)
    return x


def change_capacity(session_id: str, capacity: int, now: datetime | None = None) -> None:
    """More or fewer seats: the waiting list moves up (or the last seated move down)."""
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ActionError(f"capacity: 1 to {MAX_CAPACITY}")
    with feed.transaction():
        x = services.session_row(session_id)
        if x is None:
            raise ActionError(f"no session {session_id}")
        m.ServiceSession.update(capacity=capacity).where(
            m.ServiceSession.id == session_id).execute()
        services.reseat(session_id, now or s.utcnow())


def cancel_session(session_id: str, reason: str, now: datetime | None = None) -> int:
    """Call a session off: every booking is cancelled and its reader told; returns how many."""
    now = now or s.utcnow()
    with feed.transaction():
        x = services.session_row(session_id)
        if x is None or x.status != "scheduled":
            raise ActionError(f"no scheduled session {session_id}")
        m.ServiceSession.update(status="cancelled").where(
            m.ServiceSession.id == session_id).execute()
        x = m.ServiceSession.get(m.ServiceSession.id == session_id)
        active = list(m.Booking.select().where((m.Booking.session == session_id)
                                               & (m.Booking.status != services.CANCELLED)))
        for b in active:
            if b.exception is not None:
                services.close_exception(b.exception, now, "the session was cancelled")
            exc = None
            if b.paid > 0:
                exc = s.StaffException.create(
                    kind="session_cancelled_paid", node=x.branch, seq=b.seq, created_at=now,
                    detail=f"session {x.id} was cancelled ({reason}); {b.reader} had paid "
                           f"{b.paid} tiyn for booking {b.id}: refund them").id
            m.Booking.update(status=services.CANCELLED, cancelled_at=now, exception=exc,
                             cancel_reason=reason[:200]).where(m.Booking.id == b.id).execute()
            services.notify(b, x, "cancelled", now)
            services.booking_changed(m.Booking.get(m.Booking.id == b.id))
        services.session_changed(x)
    return len(active)


# -- bookings (readers online, staff in the console) -----------------------------------

@dataclass(frozen=True)
class Booked:
    """A booking made in the cloud, with its quote."""

    booking: m.Booking
    quote: pricing.Quote


def book_online(card: str, session_id: str, *, waitlist: bool = False,
                now: datetime | None = None) -> Booked:
    """Book a session for a reader from the catalogue; a seat, or the waiting list if asked.

    The booking is keyed by the cloud's clock after every booking the session
    has, so it never takes a seat a node already gave. Paid services are paid
    at a desk (the catalogue takes no money).
    """
    now = now or s.utcnow()
    today = settings.today(now)
    with feed.transaction():
        x = services.session_row(session_id)
        if x is None or x.status != "scheduled":
            raise ActionError("no such session to book")
        if x.ends_at <= now:
            raise ActionError("this session is over")
        reader = s.Reader.get_or_none(s.Reader.card == card)
        if reader is None:
            raise ActionError(f"no reader with card {card}")
        if reader.blocked_reason:
            raise ActionError(f"the card is blocked: {reader.blocked_reason}")
        existing = list(m.Booking.select().where(m.Booking.session == session_id))
        if any(b.reader == card and b.status == services.ACTIVE for b in existing):
            raise ActionError("already booked for this session")
        svc = m.Service.get(m.Service.id == x.service)
        q = services.quote(reader, svc, today)
        last = max((b.key for b in existing), default=None)
        key = reconcile.cloud_fact_key(last, int(now.timestamp() * 1000))
        taken = sum(1 for b in existing if b.status == services.ACTIVE and b.seat == "seated")
        seat = services.SEATED if taken < x.capacity else services.WAITLISTED
        if seat == services.WAITLISTED and not waitlist:
            raise ActionError("full")
        b = m.Booking.create(id=uuid.uuid4().hex, session=session_id, reader=card,
                             node=reconcile.CLOUD_NODE, seq=0, key=key, seat=seat, told=seat,
                             promised=seat == services.SEATED,
                             base=q.base, percent=q.percent, price=q.amount, rule=q.note(),
                             category=reader.category, booked_at=now)
        services.reseat(session_id, now)
        services.booking_changed(m.Booking.get(m.Booking.id == b.id))
        return Booked(m.Booking.get(m.Booking.id == b.id), q)


def cancel_booking(booking_id: str, reason: str, now: datetime | None = None) -> m.Booking:
    """Cancel a booking from the cloud; the first on the waiting list gets the seat."""
    now = now or s.utcnow()
    with feed.transaction():
        bk = m.Booking.get_or_none(m.Booking.id == booking_id)
        if bk is None or bk.status == services.CANCELLED:
            raise ActionError(f"no open booking {booking_id}")
        services.session_row(bk.session)
        if bk.exception is not None:
            services.close_exception(bk.exception, now, "the booking was cancelled")
        m.Booking.update(status=services.CANCELLED, cancelled_at=now, cancel_reason=reason[:200],
                         exception=None).where(m.Booking.id == booking_id).execute()
        services.reseat(bk.session, now)
        services.booking_changed(m.Booking.get(m.Booking.id == booking_id))
        return m.Booking.get(m.Booking.id == booking_id)


def mark_attendance(booking_id: str, outcome: str, by: str,
                    now: datetime | None = None) -> m.Booking:
    """Staff mark in the console whether a reader came (attended | no_show)."""
    if outcome not in ("attended", "no_show"):
        raise ActionError("attendance is attended or no_show")
    with feed.transaction():
        bk = m.Booking.get_or_none(m.Booking.id == booking_id)
        if bk is None or bk.status == services.CANCELLED:
            raise ActionError(f"no open booking {booking_id}")
        m.Booking.update(attendance=outcome, marked_at=now or s.utcnow(),
                         marked_by=by[:64]).where(m.Booking.id == booking_id).execute()
        bk = m.Booking.get(m.Booking.id == booking_id)
        services.booking_changed(bk)
        return bk


def issue_membership(card: str, service_id: str, now: datetime | None = None
                     ) -> tuple[m.Membership, pricing.Quote]:
    """Issue a membership online: only one that costs this reader nothing (else at a desk).

    A renewal starts the day after the reader's current membership ends.
    """
    now = now or s.utcnow()
    today = settings.today(now)
    with feed.transaction():
        reader = s.Reader.get_or_none(s.Reader.card == card)
        svc = m.Service.get_or_none(m.Service.id == service_id)
        if reader is None or svc is None or svc.kind != "membership" or not svc.active:
            raise ActionError("no such membership")
        q = services.quote(reader, svc, today)
        if not q.free:
            raise ActionError("paid")
        starts, ends, current = services.next_term(card, today, int(svc.term_days or 365))
        ms = m.Membership.create(
            id=uuid.uuid4().hex, reader=card, service=svc.id, starts=starts, ends=ends,
            base=q.base,
            percent=q.percent, price=q.amount, rule=q.note(), category=reader.category,
            node=reconcile.CLOUD_NODE, sold_at=now, renewal_of=current)
        services.membership_changed(ms)
        return ms, q


__all__ = ["ActionError", "Booked", "ServiceForm", "book_online", "cancel_booking",
           "cancel_session", "change_capacity", "delete_rule", "issue_membership",
           "mark_attendance", "save_partner", "save_rule", "save_service",
           "schedule", "set_reader_partner"]
