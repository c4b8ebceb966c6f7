"""Services in the cloud: prices by the one pricing rule, who holds a session's seats, what
every node is told, and the notices and staff exceptions when a reader's place changes.

**Seats are decided by order, not by arrival.** A session's active bookings are
ordered by their key — the booking event's hybrid clock, then the node, then its
seq (``reconcile.fact_key``); an online booking gets the cloud's own clock at
the moment it is made, after every booking the session already has
(``reconcile.cloud_fact_key``). The first ``capacity`` hold the seats, the rest
wait in that order. ``reseat`` recomputes this from the whole set after every
change, so two branches that both sold the last seat while offline end the
same way whatever order their events arrive in: the earlier keeps it.

A reader who was told "you have a seat" and is now waiting (a booking that
arrived late was earlier) gets a notice, and staff get an exception with what
was paid, to refund or seat them; if a cancellation gives the seat back, the
exception closes itself ("seated again") and a notice says so. A reader booked
twice at one session (two desks offline) keeps the earlier booking; the later
is a ``duplicate`` (an exception when it was paid).

Everything here runs inside the caller's transaction (ingest, a console or
catalogue write) and records its feed changes there.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from peewee import fn

from cloud import feed, notices, settings
from cloud import service_models as m
from cloud import store as s
from cloud.console import service_words  # noqa: F401 - the notices' words
from cloud.i18n import LANGS, t
from edge import pricing

logger = logging.getLogger(__name__)

# Sessions (and their bookings) a node is sent in a snapshot: those that end
# after this many days ago. Older ones matter only to the cloud's reports.
SNAPSHOT_PAST_DAYS = 30
# Memberships a snapshot carries: those that ended less than this long ago
# (a renewal starts from the end of the last term; older ones changed nothing).
MEMBERSHIP_PAST_DAYS = 400
SEATED, WAITLISTED = "seated", "waitlisted"
ACTIVE, CANCELLED, DUPLICATE = "active", "cancelled", "duplicate"
SEATED_AGAIN = "seated again after a cancellation or a change of seats"
EARLIER_STANDS = "the reader's earlier booking of this session stands"
# A setting sent to every node: "1" when borrowing needs an active membership
# (the library's choice; by default a lapsed membership loses member prices only).
BORROW_NEEDS_MEMBERSHIP = "services.borrow_requires_membership"


# -- prices ------------------------------------------------------------------------

def rule_row(r: m.DiscountRule) -> pricing.Rule:
    """A DiscountRule row as the pricing rule it is."""
    return pricing.Rule(r.category, r.kind, r.percent, partner=r.partner, service=r.service,
                        valid_from=r.valid_from, valid_to=r.valid_to, id=r.id)


def rules() -> list[pricing.Rule]:
    """The configured discount rules over the network's defaults."""
    return pricing.rules_with_defaults(rule_row(r) for r in m.DiscountRule.select())


def is_member(card: str, on: date) -> bool:
    """True if the reader holds a membership on ``on``."""
    return m.Membership.select().where((m.Membership.reader == card)
                                       & (m.Membership.starts <= on)
                                       & (m.Membership.ends >= on)).exists()


def buyer(reader: s.Reader, on: date) -> pricing.Buyer:
    """The reader as the pricing rule sees them on ``on``."""
    return pricing.Buyer(reader.category, reader.partner, is_member(reader.card, on))


def quote(reader: s.Reader, service: m.Service, on: date,
          table: list[pricing.Rule] | None = None) -> pricing.Quote:
    """What ``reader`` pays for ``service`` on ``on``."""
    return pricing.price(service.price, service.kind, buyer(reader, on), on,
                         table if table is not None else rules(), service.id)


def next_term(card: str, today: date, term_days: int) -> tuple[date, date, str | None]:
    """A new membership's first and last day, and the running one it renews (if any)."""
    last = (m.Membership.select().where((m.Membership.reader == card)
                                        & (m.Membership.ends >= today))
            .order_by(m.Membership.ends.desc()).first())
    starts, ends = pricing.membership_term(today, last.ends if last else None, term_days)
    return starts, ends, (str(last.id) if last else None)


def service_name(svc: m.Service | None, lang: str) -> str:
    """A service's name in ``lang`` (its id if it is gone)."""
    if svc is None:
        return "?"
    return str(getattr(svc, f"name_{lang}", "") or svc.name_en or svc.id)


# -- what the nodes are told ---------------------------------------------------------

def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def partner_data(p: m.Partner) -> dict[str, Any]:
    """A partner organisation."""
    return {"id": p.id, "name": p.name}


def rule_data(r: m.DiscountRule) -> dict[str, Any]:
    """A discount rule."""
    return {"id": r.id, "category": r.category, "partner": r.partner, "kind": r.kind,
            "service": r.service, "percent": r.percent, "valid_from": _iso(r.valid_from),
            "valid_to": _iso(r.valid_to)}


def service_data(v: m.Service) -> dict[str, Any]:
    """A service, with its names and base price."""
    return {"id": v.id, "kind": v.kind, "name_kk": v.name_kk, "name_ru": v.name_ru,
            "name_en": v.name_en, "about_kk": v.about_kk, "about_ru": v.about_ru,
            "about_en": v.about_en, "price": v.price, "term_days": v.term_days,
            "capacity": v.capacity, "branch": v.branch, "active": v.active}


def seats(session_id: str) -> tuple[int, int]:
    """(seated, waiting) at a session, as the cloud decided."""
    counts = dict(s.tuples(m.Booking.select(m.Booking.seat, fn.COUNT(m.Booking.id))
                           .where((m.Booking.session == session_id)
                                  & (m.Booking.status == ACTIVE))
                           .group_by(m.Booking.seat)))
    return int(counts.get(SEATED, 0)), int(counts.get(WAITLISTED, 0))


def session_data(x: m.ServiceSession) -> dict[str, Any]:
    """A session with its seats as the cloud knows them."""
    seated, waiting = seats(x.id)
    return {"id": x.id, "service": x.service, "branch": x.branch,
            "starts_at": _iso(x.starts_at), "ends_at": _iso(x.ends_at), "room": x.room,
            "host": x.host, "capacity": x.capacity, "status": x.status, "seated": seated,
            "waiting": waiting}


def booking_data(b: m.Booking) -> dict[str, Any]:
    """A booking with the seat the cloud gave it (the desk shows its real status)."""
    return {"id": b.id, "session": b.session, "reader": b.reader, "node": b.node,
            "key": b.key, "status": b.status, "seat": b.seat, "attendance": b.attendance,
            "base": b.base, "percent": b.percent, "price": b.price, "paid": b.paid,
            "rule": b.rule, "booked_at": _iso(b.booked_at)}


def membership_data(ms: m.Membership) -> dict[str, Any]:
    """A membership's term."""
    return {"id": ms.id, "reader": ms.reader, "service": ms.service,
            "starts": _iso(ms.starts), "ends": _iso(ms.ends), "price": ms.price,
            "paid": ms.paid, "node": ms.node}


def session_changed(x: m.ServiceSession) -> None:
    """Tell every node the session's current seats."""
    feed.record("session", x.id, "upsert", session_data(x))


def booking_changed(b: m.Booking) -> None:
    """Tell every node the booking as it now stands."""
    feed.record("booking", b.id, "upsert", booking_data(b))


def membership_changed(ms: m.Membership) -> None:
    """Tell every node about a membership (the reader is a member for its term)."""
    feed.record("membership", ms.id, "upsert", membership_data(ms))


def snapshot_items(rev: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """Everything about services a node needs, as snapshot items at ``rev``."""
    now = now or s.utcnow()
    today = settings.today(now)
    since = datetime.fromordinal(now.toordinal() - SNAPSHOT_PAST_DAYS).replace(tzinfo=now.tzinfo)

    def item(entity: str, key: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {"rev": rev, "entity": entity, "key": str(key), "op": "upsert", "data": data}

    out = [item("partner", p.id, partner_data(p)) for p in m.Partner.select()]
    out += [item("discount", r.id, rule_data(r)) for r in m.DiscountRule.select()]
    out += [item("service", v.id, service_data(v)) for v in m.Service.select()]
    recent = list(m.ServiceSession.select().where(m.ServiceSession.ends_at >= since))
    out += [item("session", x.id, session_data(x)) for x in recent]
    ids = [x.id for x in recent]
    for i in range(0, len(ids), 500):
        out += [item("booking", b.id, booking_data(b)) for b in m.Booking.select().where(
            m.Booking.session.in_(ids[i:i + 500]))]
    kept = date.fromordinal(today.toordinal() - MEMBERSHIP_PAST_DAYS)
    out += [item("membership", ms.id, membership_data(ms))
            for ms in m.Membership.select().where(m.Membership.ends >= kept)]
    return out


# -- seats ---------------------------------------------------------------------------

def session_row(session_id: str) -> m.ServiceSession | None:
    """The session's row, locked against other writers (PostgreSQL: FOR UPDATE)."""
    query = m.ServiceSession.select().where(m.ServiceSession.id == session_id)
    if s.is_postgres():
        query = query.for_update()
    row: m.ServiceSession | None = query.first()
    return row


def plan(bookings: Iterable[m.Booking], capacity: int) -> dict[str, tuple[str, str]]:
    """booking id -> (status, seat): the first by key hold the seats, one booking per reader.

    Only cancellations by people are taken as given; duplicates and seats are
    derived from the whole set, so any order of arrival ends the same.
    """
    out: dict[str, tuple[str, str]] = {}
    readers: set[str] = set()
    seated = 0
    for b in sorted(bookings, key=lambda b: (b.key, b.id)):
        if b.status == CANCELLED:
            out[b.id] = (CANCELLED, b.seat)
        elif b.reader in readers:
            out[b.id] = (DUPLICATE, WAITLISTED)
        else:
            readers.add(b.reader)
            seat = SEATED if seated < capacity else WAITLISTED
            seated += seat == SEATED
            out[b.id] = (ACTIVE, seat)
    return out


def reseat(session_id: str, now: datetime) -> set[str]:
    """Give the session's seats to its first bookings by key; tell whoever moved.

    Returns the bookings whose change was recorded for the nodes.
    """
    x = session_row(session_id)
    if x is None:
        return set()
    capacity = x.capacity if x.status == "scheduled" else 0
    bookings = list(m.Booking.select().where(m.Booking.session == session_id))
    decided = plan(bookings, capacity)
    moved = set()
    for b in bookings:
        status, seat = decided[b.id]
        if (status, seat) != (b.status, b.seat):
            _move(b, x, status, seat, now)
            moved.add(b.id)
    session_changed(x)
    return moved


def _move(b: m.Booking, x: m.ServiceSession, status: str, seat: str, now: datetime) -> None:
    told, promised = b.told, b.promised
    if status == ACTIVE and seat == SEATED:
        if told == WAITLISTED:
            notify(b, x, "seated", now)
        told, promised = SEATED, True
    elif status == ACTIVE and told == SEATED:
        notify(b, x, "waitlisted", now)
        told = WAITLISTED
    # The exception follows from where the booking ends, not from how it got there: a
    # reader once promised a seat who is now waiting; a paid booking that is a duplicate.
    if status == ACTIVE and seat == WAITLISTED and promised:
        want: str | None = "booking_lost_seat"
    else:
        want = "booking_duplicate" if status == DUPLICATE and b.paid > 0 else None
    exc = _settle_exception(b, x, want, status, now)
    m.Booking.update(status=status, seat=seat, told=told, promised=promised,
                     exception=exc).where(m.Booking.id == b.id).execute()
    booking_changed(m.Booking.get(m.Booking.id == b.id))


def _settle_exception(b: m.Booking, x: m.ServiceSession, want: str | None, status: str,
                      now: datetime) -> int | None:
    """Keep, close or open the booking's exception so it is ``want`` (a kind, or none)."""
    current = s.StaffException.get_or_none(s.StaffException.id == b.exception) \
        if b.exception is not None else None
    if current is not None and current.closed_at is None:
        if current.kind == want:
            return int(current.id)
        close_exception(current.id, now, EARLIER_STANDS if status == DUPLICATE
                        else SEATED_AGAIN)
    if want == "booking_lost_seat":
        return _exception(
            want, x, b, f"{b.reader} was told they had a seat at {_what(x)} (booked at "
            f"{b.node}), but earlier bookings hold all {x.capacity}: now on the waiting list, "
            f"paid {_tenge(b.paid)}. Refund them or find a seat", now)
    if want == "booking_duplicate":
        return _exception(
            want, x, b, f"{b.reader} was booked twice for {_what(x)}; this booking ({b.id}, "
            f"made at {b.node}) is the later one and was paid {_tenge(b.paid)}: refund it", now)
    return None


def _what(x: m.ServiceSession) -> str:
    svc = m.Service.get_or_none(m.Service.id == x.service)
    when = x.starts_at.astimezone(settings.library_tz()).strftime("%d.%m.%Y %H:%M")
    return f"«{service_name(svc, 'en')}» at {x.branch} on {when}"


def _tenge(tiyn: int) -> str:
    from cloud.fines import tenge

    return tenge(tiyn)


def _exception(kind: str, x: m.ServiceSession, b: m.Booking, detail: str,
               now: datetime) -> int:
    row = s.StaffException.create(kind=kind, node=x.branch, seq=b.seq, detail=detail,
                                  created_at=now)
    logger.info("booking %s: %s", b.id, kind)
    return int(row.id)


def close_exception(exc_id: int, now: datetime, resolution: str) -> None:
    """Close a booking's exception that events (not staff) resolved."""
    s.StaffException.update(closed_at=now, resolution=resolution).where(
        (s.StaffException.id == exc_id) & s.StaffException.closed_at.is_null()).execute()


def notify(b: m.Booking, x: m.ServiceSession, what: str, now: datetime) -> None:
    """Queue a notice to the reader in the three languages (kind booking_<what>:
    seated, waitlisted, cancelled)."""
    svc = m.Service.get_or_none(m.Service.id == x.service)
    node = s.Node.get_or_none(s.Node.id == x.branch)
    when = x.starts_at.astimezone(settings.library_tz()).strftime("%d.%m.%Y %H:%M")
    parts = [(t(f"sv.notice.{what}.subject", lang),
              t(f"sv.notice.{what}.body", lang, service=service_name(svc, lang), when=when,
                place=node.name if node and node.name else x.branch))
             for lang in LANGS]
    notices.queue(b.reader, f"booking_{what}", f"booking/{b.id}/{what}/{now:%Y%m%dT%H%M%S%f}",
                  " / ".join(p[0] for p in parts), "\n\n".join(p[1] for p in parts), now)
