"""Services in the ops console: the catalogue of services, sessions and their rosters with
attendance, the discount rules and partner organisations, and the report (charts and CSV).

Who may do what: an **administrator** configures services, discount rules and partners
(and puts readers in a partner's category); an **operator** schedules and runs sessions
anywhere; **branch staff** see and run only their own branch's sessions. Every change goes
through ``cloud.service_actions`` in one transaction with its audit entry.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from peewee import fn

from cloud import service_actions, service_report, services, settings
from cloud import service_models as m
from cloud import store as s
from cloud.console import charts
from cloud.console.auth import Staff, bp, ensure_may_act_on, me, record, require
from cloud.console.common import back, int_arg, lang, tr, writing
from cloud.console.readers import csv_response
from edge import pricing

PERIODS = (7, 30, 90, 365)
SESSIONS_SHOWN = 100


def _branches() -> list[s.Node]:
    return list(s.Node.select().where(s.Node.kind == "branch").order_by(s.Node.id))


def _scope(who: Staff) -> str:
    """The branch a staff member's lists are limited to ("" for all)."""
    return "" if who.at_least("operator") else (who.branch or "-")


def _tenge(field: str) -> int:
    """A form's amount in tenge (commas or dots for tiyn) as tiyn; ActionError if not one."""
    text = request.form.get(field, "").strip().replace(" ", "").replace(",", ".")
    try:
        value = round(float(text or "0") * 100)
    except ValueError as exc:
        raise service_actions.ActionError("an amount in tenge") from exc
    return value


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError as exc:
        raise service_actions.ActionError("a day as YYYY-MM-DD") from exc


def _failed(exc: service_actions.ActionError) -> None:
    flash(tr("sv.c.refused", reason=str(exc)), "bad")


# -- services and sessions --------------------------------------------------------------------

@bp.get("/services")
@require()
def services_page() -> Any:
    """Services offered and the sessions coming (branch staff: their branch's)."""
    who = me()
    branch = _scope(who) or request.args.get("branch", "")
    now = s.utcnow()
    query = m.ServiceSession.select().where(m.ServiceSession.ends_at >= now)
    if branch:
        query = query.where(m.ServiceSession.branch == branch)
    sessions = list(query.order_by(m.ServiceSession.starts_at).limit(SESSIONS_SHOWN))
    counts = {x.id: services.seats(x.id) for x in sessions}
    svcs = list(m.Service.select().order_by(m.Service.kind, m.Service.id))
    return render_template("console/services.html", svcs=svcs, sessions=sessions,
                           counts=counts, names={v.id: services.service_name(v, lang())
                                                 for v in svcs},
                           branches=_branches(), branch=branch, kinds=pricing.KINDS,
                           bookable=[v for v in svcs if v.kind in pricing.BOOKABLE and v.active],
                           today=settings.today(now), scoped=bool(_scope(who)))


@bp.post("/services")
@require("administrator")
def save_service() -> Any:
    """Create or change a service."""
    f = request.form
    try:
        term = f.get("term_days", "").strip()
        form = service_actions.ServiceForm(
            id=f.get("id", ""), kind=f.get("kind", ""),
            names=(f.get("name_kk", ""), f.get("name_ru", ""), f.get("name_en", "")),
            price=_tenge("price"), term_days=int(term) if term.isdigit() else None,
            capacity=int(f.get("capacity", "1") or 1) if f.get("capacity", "1").isdigit()
            else 0, branch=f.get("branch") or None,
            about=(f.get("about_kk", ""), f.get("about_ru", ""), f.get("about_en", "")),
            active=f.get("active", "1") == "1")
        with writing():
            svc = service_actions.save_service(form)
            record("service.save", f"service:{svc.id}",
                   f"{svc.kind}, {svc.price} tiyn" + (f", {svc.term_days} days"
                                                     if svc.term_days else ""))
    except service_actions.ActionError as exc:
        _failed(exc)
    else:
        flash(tr("sv.c.ok.service", name=services.service_name(svc, lang())), "good")
    return redirect(url_for("console.services_page"))


@bp.post("/sessions")
@require()
def schedule_session() -> Any:
    """Schedule a session (operators anywhere, branch staff at their branch)."""
    f = request.form
    branch = f.get("branch", "")
    ensure_may_act_on(branch)
    try:
        day = _day(f.get("day", ""))
        at = time.fromisoformat(f.get("time", "") or "x")
    except (service_actions.ActionError, ValueError):
        flash(tr("sv.c.bad_time"), "bad")
        return redirect(url_for("console.services_page"))
    if day is None:
        flash(tr("sv.c.bad_time"), "bad")
        return redirect(url_for("console.services_page"))
    starts = datetime.combine(day, at, settings.library_tz())
    minutes = int_form("minutes", 60, 5, 720)
    cap = f.get("capacity", "").strip()
    try:
        with writing():
            x = service_actions.schedule(
                f.get("service", ""), branch, starts, starts + timedelta(minutes=minutes),
                room=f.get("room", ""), host=f.get("host", ""),
                capacity=int(cap) if cap.isdigit() else None)
            record("session.schedule", f"session:{x.id}",
                   f"{x.service} at {branch}, {day} {at:%H:%M}, {x.capacity} seats", node=branch)
    except service_actions.ActionError as exc:
        _failed(exc)
        return redirect(url_for("console.services_page"))
    flash(tr("sv.c.ok.scheduled"), "good")
    return redirect(url_for("console.session_page", session_id=x.id))


def int_form(name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from the form within bounds, else ``default``."""
    try:
        return max(lo, min(hi, int(request.form.get(name, ""))))
    except ValueError:
        return default


def _session(session_id: str) -> m.ServiceSession:
    x = m.ServiceSession.get_or_none(m.ServiceSession.id == session_id)
    if x is None:
        abort(404)
    scope = _scope(me())
    if scope and x.branch != scope:
        abort(403)
    return x


@bp.get("/sessions/<session_id>")
@require()
def session_page(session_id: str) -> Any:
    """A session's roster: seats, the waiting list, payments, attendance."""
    x = _session(session_id)
    bookings = list(m.Booking.select().where(m.Booking.session == session_id))
    bookings.sort(key=lambda b: (b.status != services.ACTIVE, b.seat != services.SEATED, b.key))
    readers = {r.card: r for r in s.Reader.select().where(
        s.Reader.card.in_([b.reader for b in bookings] or [""]))}
    svc = m.Service.get_or_none(m.Service.id == x.service)
    seated, waiting = services.seats(x.id)
    return render_template("console/session.html", x=x, svc=svc,
                           name=services.service_name(svc, lang()), bookings=bookings,
                           readers=readers, seated=seated, waiting=waiting,
                           may_act=me().may_act_on(x.branch), started=x.starts_at <= s.utcnow())


@bp.post("/sessions/<session_id>/capacity")
@require()
def session_capacity(session_id: str) -> Any:
    """More or fewer seats."""
    x = _session(session_id)
    ensure_may_act_on(x.branch)
    cap = int_form("capacity", 0, 0, service_actions.MAX_CAPACITY)
    try:
        with writing():
            service_actions.change_capacity(session_id, cap)
            record("session.capacity", f"session:{x.id}", f"{x.capacity} → {cap}", node=x.branch)
    except service_actions.ActionError as exc:
        _failed(exc)
    return redirect(url_for("console.session_page", session_id=session_id))


@bp.post("/sessions/<session_id>/cancel")
@require()
def session_cancel(session_id: str) -> Any:
    """Call a session off; its readers are told, paid bookings become refunds to make."""
    x = _session(session_id)
    ensure_may_act_on(x.branch)
    reason = request.form.get("reason", "").strip()[:200]
    if not reason:
        flash(tr("x.need_resolution"), "bad")
        return redirect(url_for("console.session_page", session_id=session_id))
    try:
        with writing():
            n = service_actions.cancel_session(session_id, reason)
            record("session.cancel", f"session:{x.id}", f"{reason}; {n} bookings", node=x.branch)
    except service_actions.ActionError as exc:
        _failed(exc)
    else:
        flash(tr("sv.c.ok.session_cancelled", n=n), "good")
    return redirect(url_for("console.session_page", session_id=session_id))


def _booking(booking_id: str) -> tuple[m.Booking, m.ServiceSession]:
    b = m.Booking.get_or_none(m.Booking.id == booking_id)
    if b is None:
        abort(404)
    x = _session(b.session)
    ensure_may_act_on(x.branch)
    return b, x


@bp.post("/bookings/<booking_id>/attendance")
@require()
def booking_attendance(booking_id: str) -> Any:
    """Mark whether the reader came."""
    b, x = _booking(booking_id)
    outcome = request.form.get("outcome", "")
    try:
        with writing():
            service_actions.mark_attendance(booking_id, outcome, me().username)
            record("booking.attendance", f"reader:{b.reader}", f"{x.id}: {outcome}",
                   node=x.branch)
    except service_actions.ActionError as exc:
        _failed(exc)
    return back(url_for("console.session_page", session_id=x.id))


@bp.post("/bookings/<booking_id>/cancel")
@require()
def booking_cancel(booking_id: str) -> Any:
    """Cancel a reader's booking; the waiting list moves up."""
    b, x = _booking(booking_id)
    try:
        with writing():
            service_actions.cancel_booking(booking_id, request.form.get("reason", "")[:200]
                                           or f"by {me().username}")
            record("booking.cancel", f"reader:{b.reader}", x.id, node=x.branch)
    except service_actions.ActionError as exc:
        _failed(exc)
    return back(url_for("console.session_page", session_id=x.id))


# -- discounts and partners ---------------------------------------------------------------------

@bp.get("/discounts")
@require()
def discounts_page() -> Any:
    """The discount rules (configured and the network's defaults) and the partners."""
    rules = list(m.DiscountRule.select().order_by(m.DiscountRule.category, m.DiscountRule.kind,
                                                  m.DiscountRule.id))
    configured = [services.rule_row(r) for r in rules]
    replaced = [d for d in pricing.DEFAULT_RULES if d not in pricing.rules_with_defaults(
        configured)]
    partners = list(m.Partner.select().order_by(m.Partner.name))
    people = dict(s.tuples(s.Reader.select(s.Reader.partner, fn.COUNT(s.Reader.card))
                           .where(s.Reader.partner.is_null(False)).group_by(s.Reader.partner)))
    return render_template(
        "console/discounts.html", rules=rules, defaults=pricing.DEFAULT_RULES,
        replaced=replaced, partners=partners, people=people,
        svcs=list(m.Service.select().order_by(m.Service.id)),
        categories=(*pricing.CATEGORIES, pricing.MEMBER), targets=pricing.TARGETS,
        today=settings.today(), names={v.id: services.service_name(v, lang())
                                       for v in m.Service.select()})


@bp.post("/discounts")
@require("administrator")
def save_discount() -> Any:
    """Add a discount rule."""
    f = request.form
    try:
        pct = f.get("percent", "")
        if not pct.strip().isdigit():
            raise service_actions.ActionError("a discount is a percentage from 0 to 100")
        with writing():
            rule = service_actions.save_rule(
                category=f.get("category", ""), kind=f.get("kind", ""), percent=int(pct),
                partner=f.get("partner") or "*", service=f.get("service") or "*",
                valid_from=_day(f.get("valid_from", "")), valid_to=_day(f.get("valid_to", "")),
                note=f.get("note", ""), by=me().username)
            record("discount.save", f"discount:{rule.id}", _rule_text(rule))
    except service_actions.ActionError as exc:
        _failed(exc)
    else:
        flash(tr("sv.c.ok.rule"), "good")
    return redirect(url_for("console.discounts_page"))


def _rule_text(r: m.DiscountRule) -> str:
    return (f"{r.percent} % for {r.category}/{r.partner} on {r.kind}/{r.service}, "
            f"{r.valid_from or '…'} to {r.valid_to or '…'}")


@bp.post("/discounts/<int:rule_id>/delete")
@require("administrator")
def delete_discount(rule_id: int) -> Any:
    """Remove a discount rule."""
    try:
        with writing():
            rule = service_actions.delete_rule(rule_id)
            record("discount.delete", f"discount:{rule_id}", _rule_text(rule))
    except service_actions.ActionError as exc:
        _failed(exc)
    return redirect(url_for("console.discounts_page"))


@bp.post("/partners")
@require("administrator")
def save_partner() -> Any:
    """Add or rename a partner organisation."""
    f = request.form
    try:
        with writing():
            p = service_actions.save_partner(f.get("id", ""), f.get("name", ""),
                                             f.get("note", ""))
            record("partner.save", f"partner:{p.id}", p.name)
    except service_actions.ActionError as exc:
        _failed(exc)
    return redirect(url_for("console.discounts_page"))


@bp.post("/partners/reader")
@require("administrator")
def reader_partner() -> Any:
    """Put a reader in a category and a partner organisation (or take them out of one)."""
    f = request.form
    card = f.get("card", "").strip()
    try:
        with writing():
            service_actions.set_reader_partner(card, f.get("category", ""),
                                               f.get("partner") or None)
            record("reader.category", f"reader:{card}",
                   f"{f.get('category')} / {f.get('partner') or '—'}")
    except service_actions.ActionError as exc:
        _failed(exc)
    else:
        flash(tr("sv.c.ok.reader", card=card), "good")
    return back(url_for("console.discounts_page"))


# -- the report -----------------------------------------------------------------------------------

@bp.get("/services/report")
@require()
def services_report() -> Any:
    """Attendance, revenue by service and category, discounts granted, no-shows."""
    who = me()
    days = int_arg("days", 30, 1, 365) or 30
    days = min(PERIODS, key=lambda p: abs(p - days))
    branch = _scope(who) or request.args.get("branch", "")
    rep = service_report.compute(days, branch, lang=lang())
    if request.args.get("format") == "csv":
        record("csv.services", f"report:{days}", f"{len(rep.bookings)} rows", node=branch or None)
        return csv_response("services", [
            "session_day", "branch", "service", "session", "reader", "category", "status",
            "seat", "attendance", "base_tenge", "discount_tenge", "price_tenge", "paid_tenge",
            "rule"], [[x.starts_at.astimezone(settings.library_tz()).date().isoformat(),
                       x.branch, x.service, x.id, b.reader, b.category, b.status, b.seat,
                       b.attendance or "", f"{b.base / 100:.2f}",
                       f"{(b.base - b.price) / 100:.2f}", f"{b.price / 100:.2f}",
                       f"{b.paid / 100:.2f}", b.rule] for b, x in rep.bookings])
    figures = {
        "revenue": charts.hbars([(rep.names.get(ln.key, ln.key), ln.revenue // 100)
                                 for ln in rep.by_service if ln.revenue], tr("sv.c.revenue"),
                                unit=" ₸"),
        "categories": charts.hbars([(tr("cat." + ln.key) if ln.key in pricing.CATEGORIES
                                     else ln.key, ln.revenue // 100) for ln in rep.by_category
                                    if ln.revenue], tr("sv.c.by_category"), charts.PALETTE[2],
                                   unit=" ₸"),
        "discounts": charts.hbars([(tr("cat." + ln.key) if ln.key in pricing.CATEGORIES
                                    else ln.key, ln.discounts // 100)
                                   for ln in rep.by_category if ln.discounts],
                                  tr("sv.c.discounts"), charts.PALETTE[1], unit=" ₸"),
        "attendance": charts.paired_bars([(rep.names.get(ln.key, ln.key), ln.attended,
                                           ln.no_show) for ln in rep.by_service if ln.seated],
                                         (tr("sv.c.attended"), tr("sv.c.no_show")),
                                         tr("sv.c.attendance")),
        "came": charts.donut(rep.total.attended, rep.total.attended + rep.total.no_show,
                             tr("sv.c.came_share"), tr("sv.c.attendance")),
    }
    return render_template("console/service_report.html", rep=rep, figures=figures, days=days,
                           periods=PERIODS, branch=branch, branches=_branches(),
                           scoped=bool(_scope(who)), categories=pricing.CATEGORIES)
