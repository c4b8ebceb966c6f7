"""Services in the readers' catalogue: sessions coming at every branch with the price THIS
reader would pay and why, booking (a seat, or the waiting list), cancelling, free
memberships issued online, and the reader's bookings and membership on their account page.

The routes are on the catalogue's blueprint (imported before it is registered). Prices come
from the one pricing rule (cloud/services.py ``quote``), so the desk and the page agree;
paid services are paid at any branch desk (the catalogue takes no money).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from cloud import audit, service_actions, services, settings
from cloud import service_models as m
from cloud import store as s
from cloud.catalogue import _login_first, _reader, bp, reader_card
from cloud.console.common import lang, tr, writing
from edge import pricing

# Sessions the page lists: those that have not ended, this many days ahead.
AHEAD_DAYS = 60
# Bookings one reader may hold open at once: a family's week, not a hoard of seats.
MAX_BOOKINGS = 8


def why(q: pricing.Quote) -> str:
    """Why this price, in the page's language."""
    key, args = q.reason()
    if key != "price.discount":
        return tr("sv.p." + key)
    cat = args["category"]
    who = tr("cat." + cat) if cat in pricing.CATEGORIES else tr(
        "sv.c.cat." + ("any" if cat == "*" else cat))
    if args["partner"]:
        p = m.Partner.get_or_none(m.Partner.id == args["partner"])
        who = f"{who} ({p.name if p else args['partner']})"
    return tr("sv.p.price.discount", percent=args["percent"], who=who)


def _places() -> dict[str, s.Node]:
    return {n.id: n for n in s.Node.select().where(s.Node.kind == "branch")}


@bp.get("/services")
def services_page() -> Any:
    """Workshops, counselling and events coming, with this reader's price; memberships."""
    r = _reader()
    now = s.utcnow()
    today = settings.today(now)
    branch = request.args.get("branch", "")
    kind = request.args.get("kind", "")
    query = m.ServiceSession.select().where(
        (m.ServiceSession.status == "scheduled") & (m.ServiceSession.ends_at > now)
        & (m.ServiceSession.starts_at < now + timedelta(days=AHEAD_DAYS)))
    if branch:
        query = query.where(m.ServiceSession.branch == branch)
    svcs = {v.id: v for v in m.Service.select()}
    sessions = [x for x in query.order_by(m.ServiceSession.starts_at)
                if x.service in svcs and (not kind or svcs[x.service].kind == kind)]
    table = services.rules()
    quotes = {v.id: services.quote(r, v, today, table) for v in svcs.values()} if r else {}
    mine = {b.session: b for b in m.Booking.select().where(
        (m.Booking.reader == r.card) & (m.Booking.status == services.ACTIVE))} if r else {}
    return render_template(
        "catalogue/services.html", sessions=sessions, svcs=svcs, quotes=quotes, mine=mine,
        seats={x.id: services.seats(x.id) for x in sessions}, places=_places(), why=why,
        name=lambda v: services.service_name(v, lang()), branch=branch, kind=kind,
        kinds=pricing.BOOKABLE, memberships=[v for v in svcs.values()
                                             if v.kind == "membership" and v.active],
        member=(services.is_member(r.card, today) if r else False))


@bp.post("/services/<session_id>/book")
def book(session_id: str) -> Any:
    """Book a session for the signed-in reader (the waiting list when asked and full)."""
    r = _reader()
    if r is None:
        return _login_first()
    back_to = url_for("catalogue.services_page")
    if m.Booking.select().where((m.Booking.reader == r.card)
                                & (m.Booking.status == services.ACTIVE)).count() >= MAX_BOOKINGS:
        flash(tr("sv.p.too_many", n=MAX_BOOKINGS), "bad")
        return redirect(back_to)
    try:
        with writing():
            done = service_actions.book_online(r.card, session_id,
                                               waitlist=request.form.get("waitlist") == "1")
            audit.record(f"reader:{r.card}", "booking.place", f"reader:{r.card}",
                         f"{session_id}: {done.booking.seat}, {done.quote.note()}",
                         role="reader", node=m.ServiceSession.get_by_id(session_id).branch,
                         ip=request.remote_addr)
    except service_actions.ActionError as exc:
        flash(tr("sv.p.full") if str(exc) == "full" else tr("sv.p.book_failed", reason=str(exc)),
              "bad")
        return redirect(back_to)
    q = done.quote
    if done.booking.seat == services.SEATED:
        flash(tr("sv.p.booked", price=tr("sv.p.free") if q.free else _money(q.amount)), "good")
    else:
        flash(tr("sv.p.waitlisted"), "good")
    return redirect(url_for("catalogue.account") + "#services")


def _money(tiyn: int) -> str:
    from cloud.fines import tenge

    return tenge(tiyn)


@bp.post("/account/bookings/<booking_id>/cancel")
def cancel_booking(booking_id: str) -> Any:
    """Cancel one of the reader's own bookings; the waiting list moves up."""
    card = reader_card()
    if card is None:
        return _login_first()
    b = m.Booking.get_or_none((m.Booking.id == booking_id) & (m.Booking.reader == card))
    if b is None:
        abort(404)  # not theirs, or not there: the same answer
    try:
        with writing():
            service_actions.cancel_booking(booking_id, "cancelled online by the reader")
            audit.record(f"reader:{card}", "booking.cancel", f"reader:{card}", b.session,
                         role="reader", ip=request.remote_addr)
    except service_actions.ActionError:
        flash(tr("c.cancel_failed"), "bad")
    else:
        flash(tr("sv.p.cancelled") + (" " + tr("sv.p.refund_at_desk") if b.paid else ""),
              "good")
    return redirect(url_for("catalogue.account") + "#services")


@bp.post("/services/memberships/<service_id>")
def take_membership(service_id: str) -> Any:
    """Issue a membership that costs this reader nothing (paid ones are bought at a desk)."""
    r = _reader()
    if r is None:
        return _login_first()
    try:
        with writing():
            ms, q = service_actions.issue_membership(r.card, service_id)
            audit.record(f"reader:{r.card}", "membership.issue", f"reader:{r.card}",
                         f"{service_id} {ms.starts}..{ms.ends}: {q.note()}", role="reader",
                         ip=request.remote_addr)
    except service_actions.ActionError as exc:
        flash(tr("sv.p.pay_at_desk") if str(exc) == "paid" else tr("sv.p.book_failed",
                                                                    reason=str(exc)), "bad")
        return redirect(url_for("catalogue.services_page"))
    flash(tr("sv.p.member_until", day=ms.ends.strftime("%d.%m.%Y")), "good")
    return redirect(url_for("catalogue.account") + "#services")


def account_services(card: str) -> dict[str, Any]:
    """The reader's bookings (coming and of the last month) and memberships, for the account."""
    now = s.utcnow()
    today = settings.today(now)
    bookings = list(m.Booking.select().where((m.Booking.reader == card)
                                             & (m.Booking.status != services.DUPLICATE)))
    sessions = {x.id: x for x in m.ServiceSession.select().where(
        m.ServiceSession.id.in_([b.session for b in bookings] or [""]))}
    since = now - timedelta(days=30)
    rows = sorted(((b, sessions[b.session]) for b in bookings
                   if b.session in sessions and sessions[b.session].ends_at >= since),
                  key=lambda bx: bx[1].starts_at)
    positions = {}
    for b, x in rows:
        if b.status == services.ACTIVE and b.seat == services.WAITLISTED:
            line = sorted(m.Booking.select().where(
                (m.Booking.session == x.id) & (m.Booking.status == services.ACTIVE)
                & (m.Booking.seat == services.WAITLISTED)), key=lambda o: (o.key, o.id))
            positions[b.id] = 1 + [o.id for o in line].index(b.id)
    memberships = list(m.Membership.select().where(m.Membership.reader == card)
                       .order_by(m.Membership.ends.desc()).limit(5))
    svcs = {v.id: v for v in m.Service.select()}
    return {"rows": rows, "positions": positions, "memberships": memberships, "svcs": svcs,
            "today": today, "now": now, "places": _places(),
            "name": lambda v: services.service_name(v, lang()),
            "member": services.is_member(card, today)}


@bp.app_context_processor
def _account_services() -> dict[str, Any]:
    if request.blueprint != "catalogue":
        return {}
    return {"services_of": account_services}
