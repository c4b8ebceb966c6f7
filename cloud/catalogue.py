"""The readers' online catalogue: search, availability, reservations, the reader's account
and online pre-registration ("join the city's readers' club").

Public pages need no login; reserving and the account need the reader's card
number and PIN (the PIN the nodes know). A reader's session names one card and
every account page reads only that card's rows, so no URL shows another
reader. Reservations go through ``cloud.actions.place_hold`` and reach the
pickup node through the change feed like any staff decision.
"""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from peewee import InterfaceError, OperationalError, fn

from cloud import accounts, actions, audit, catalogue_search, settings
from cloud import store as s
from cloud.console.common import busy_words, csrf_token, install, local_path, tr, writing

bp = Blueprint("catalogue", __name__, url_prefix="/catalogue")
install(bp)

# A reader's session on a shared computer should not outlive the visit by much.
READER_SESSION_S = 2 * 3600
# Reservations one reader may have open at once: enough for a family, not a hoard.
MAX_HOLDS = 5
POPULAR_DAYS = 30
POPULAR_SHOWN = 8


def reader_card() -> str | None:
    """The card of the logged-in reader, if the session is still young."""
    card = session.get("reader")
    if card and time.time() - float(session.get("reader_at", 0)) < READER_SESSION_S:
        return str(card)
    return None


def _reader() -> s.Reader | None:
    card = reader_card()
    if not card:
        return None
    try:
        reader: s.Reader | None = s.Reader.get_or_none(s.Reader.card == card)
    except (OperationalError, InterfaceError):
        return None  # the database is down: the error page renders without the account
    return reader


@bp.app_context_processor
def _who() -> dict[str, Any]:
    if request.blueprint != "catalogue":
        return {}
    return {"reader": _reader()}


def _login_first() -> Any:
    return redirect(url_for("catalogue.login", next=request.full_path))


def _nodes() -> list[s.Node]:
    return list(s.Node.select().order_by(s.Node.kind.desc(), s.Node.name))


def popular(days: int = POPULAR_DAYS, limit: int = POPULAR_SHOWN) -> list[s.Title]:
    """The titles borrowed most lately (for the front page)."""
    since = s.utcnow() - timedelta(days=days)
    ids = [t for t, _ in (s.Loan.select(s.Copy.title_id, fn.COUNT(s.Loan.id))
                          .join(s.Copy, on=(s.Copy.barcode == s.Loan.copy))
                          .where(s.Loan.checked_out_at >= since)
                          .group_by(s.Copy.title_id).order_by(fn.COUNT(s.Loan.id).desc())
                          .limit(limit).tuples())]
    if len(ids) < limit:
        ids += [t for (t,) in s.Title.select(s.Title.id).where(s.Title.id.not_in(ids or [""]))
                .order_by(s.Title.id).limit(limit - len(ids))
                .tuples()]
    by_id = {t.id: t for t in s.Title.select().where(s.Title.id.in_(ids or [""]))}
    return [by_id[i] for i in ids if i in by_id]


@bp.get("/")
def search() -> Any:
    """Search by title, author or ISBN in any script; popular titles when idle."""
    q = request.args.get("q", "").strip()[:200]
    language = request.args.get("language", "")
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    if q:
        results = catalogue_search.search(q, page, language if language in
                                          ("kk", "ru", "en") else "")
        titles = results.titles
    else:
        results, titles = None, popular()
    avail = catalogue_search.availability([t.id for t in titles])
    return render_template("catalogue/search.html", q=q, results=results, titles=titles,
                           avail=avail, language=language)


@bp.get("/titles/<title_id>")
def title(title_id: str) -> Any:
    """A title: where to take a copy now, how fresh that is, and the reservation form."""
    t = s.Title.get_or_none(s.Title.id == title_id)
    if t is None:
        abort(404)
    avail = catalogue_search.availability([t.id])[t.id]
    card = reader_card()
    mine = (s.Hold.get_or_none((s.Hold.reader == card) & (s.Hold.title_id == t.id)
                               & s.Hold.status.in_(["waiting", "ready"])) if card else None)
    counts = {p.node: p.count for p in avail.places}
    nodes = _nodes()
    default = next((p.node for p in avail.places), nodes[0].id if nodes else "")
    return render_template("catalogue/title.html", book=t, avail=avail, nodes=nodes,
                           counts=counts, default=default, mine=mine)


@bp.post("/titles/<title_id>/reserve")
def reserve(title_id: str) -> Any:
    """Reserve a title for pickup at a chosen machine or branch."""
    r = _reader()
    if r is None:
        return _login_first()
    pickup = request.form.get("pickup", "")
    back_to = url_for("catalogue.title", title_id=title_id)
    if r.blocked_reason:
        flash(tr("c.blocked", reason=r.blocked_reason), "bad")
        return redirect(back_to)
    active = s.Hold.select().where((s.Hold.reader == r.card)
                                   & s.Hold.status.in_(["waiting", "ready"])).count()
    if active >= MAX_HOLDS:
        flash(tr("c.too_many", n=MAX_HOLDS), "bad")
        return redirect(back_to)
    try:
        with writing():
            h = actions.place_hold(r.card, title_id, pickup)
            audit.record(f"reader:{r.card}", "hold.place", f"reader:{r.card}",
                         f"{title_id} at {pickup} ({h.id})", role="reader", node=pickup,
                         ip=request.remote_addr)
    except actions.ActionError:
        flash(tr("c.reserve_failed"), "bad")
        return redirect(back_to)
    node = s.Node.get_or_none(s.Node.id == pickup)
    flash(tr("c.reserved." + ("ready" if h.status == "ready" else "waiting"),
             place=node.name if node else pickup), "good")
    return redirect(url_for("catalogue.account"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Card number and PIN."""
    nxt = request.values.get("next", "")
    if not local_path(nxt, "/catalogue"):
        nxt = url_for("catalogue.account")
    error, status = "", 200
    if request.method == "POST":
        try:
            r = accounts.reader_login(request.form.get("card", ""), request.form.get("pin", ""),
                                      request.remote_addr or "")
        except accounts.AuthError as exc:
            error, status = tr("c.login." + exc.code, m=max(1, exc.retry_after // 60)), 401
        except OperationalError as exc:
            error, status = busy_words(exc), 503
        else:
            for key in ("staff", "staff_at"):
                session.pop(key, None)
            session["reader"] = r.card
            session["reader_at"] = time.time()
            session.pop("csrf", None)
            csrf_token()
            return redirect(nxt)
    return render_template("catalogue/login.html", error=error, next=nxt,
                           card=request.form.get("card", "")), status


@bp.post("/logout")
def logout() -> Any:
    """End the reader's session."""
    session.pop("reader", None)
    session.pop("reader_at", None)
    return redirect(url_for("catalogue.search"))


@bp.get("/account")
def account() -> Any:
    """The reader's loans with due dates, reservations and debts: theirs only."""
    r = _reader()
    if r is None:
        return _login_first()
    loans = list(s.Loan.select().where((s.Loan.reader == r.card) & s.Loan.returned_at.is_null())
                 .order_by(s.Loan.due))
    copies = {c.barcode: c for c in s.Copy.select().where(
        s.Copy.barcode.in_([ln.copy for ln in loans] or [""]))}
    holds = list(s.Hold.select().where((s.Hold.reader == r.card)
                                       & s.Hold.status.in_(["waiting", "ready"]))
                 .order_by(s.Hold.created_at))
    ids = {c.title_id for c in copies.values()} | {h.title_id for h in holds}
    titles = {t.id: t for t in s.Title.select().where(s.Title.id.in_(list(ids) or [""]))}
    ledger = list(s.LedgerEntry.select().where(s.LedgerEntry.reader == r.card)
                  .order_by(s.LedgerEntry.at.desc()).limit(20))
    queue_pos = {}
    for h in holds:
        if h.status == "waiting":
            queue_pos[h.id] = 1 + s.Hold.select().where(
                (s.Hold.title_id == h.title_id) & (s.Hold.status == "waiting")
                & (s.Hold.created_at < h.created_at)).count()
    nodes = {n.id: n for n in s.Node.select()}
    return render_template("catalogue/account.html", r=r, loans=loans, copies=copies,
                           holds=holds, titles=titles, ledger=ledger, nodes=nodes,
                           today=settings.today(), queue_pos=queue_pos)


@bp.post("/account/holds/<hold_id>/cancel")
def cancel(hold_id: str) -> Any:
    """Cancel one of the reader's own reservations."""
    card = reader_card()
    if card is None:
        return _login_first()
    h = s.Hold.get_or_none((s.Hold.id == hold_id) & (s.Hold.reader == card))
    if h is None:
        abort(404)  # not theirs, or not there: the same answer
    try:
        with writing():
            actions.cancel_hold(hold_id)
            audit.record(f"reader:{card}", "hold.cancel", f"reader:{card}",
                         f"{h.title_id} at {h.pickup_node}", role="reader",
                         node=h.pickup_node, ip=request.remote_addr)
    except actions.ActionError:
        flash(tr("c.cancel_failed"), "bad")
    else:
        flash(tr("c.cancelled"), "good")
    return redirect(url_for("catalogue.account"))


@bp.post("/account/loans/<loan_id>/renew")
def renew(loan_id: str) -> Any:
    """Renew one of the reader's own loans, by the same rules as at the desk."""
    card = reader_card()
    if card is None:
        return _login_first()
    try:
        with writing():
            done = accounts.renew(card, loan_id, settings.today())
            audit.record(f"reader:{card}", "loan.renew", f"reader:{card}",
                         f"loan {loan_id}: {done.old_due} → {done.new_due}", role="reader",
                         ip=request.remote_addr)
    except accounts.AccountError as exc:
        if exc.code == "unknown_loan":
            abort(404)
        flash(tr("c.renew." + exc.code), "bad")
    else:
        flash(tr("c.renewed", due=done.new_due.strftime("%d.%m.%Y")), "good")
    return redirect(url_for("catalogue.account"))


@bp.route("/join", methods=["GET", "POST"])
def join() -> Any:
    """Apply online to join the readers' club; a branch completes it when it issues the card."""
    branches = list(s.Node.select().where(s.Node.kind == "branch").order_by(s.Node.name))
    form = request.form
    error = ""
    if request.method == "POST":
        name = form.get("name", "").strip()
        year = form.get("birth_year", "").strip()
        if len(name) < 3 or len(name) > 200:
            error = tr("j.bad.name")
        elif form.get("pin", "") != form.get("pin2", ""):
            error = tr("j.bad.pin2")
        elif year and not (year.isdigit() and 1900 <= int(year) <= settings.today().year):
            error = tr("j.bad.year")
        elif not form.get("consent"):
            error = tr("j.bad.consent")
        else:
            try:
                with writing():
                    pre = accounts.pre_register(
                        name=name, contact=form.get("contact", "")[:200],
                        category=form.get("category", "adult"),
                        birth_year=int(year) if year else None, branch=form.get("branch", ""),
                        pin=form.get("pin", ""), lang=request.args.get("lang", "") or "kk")
                    audit.record("public", "application.new", f"application:{pre.id}",
                                 pre.branch, role="public", node=pre.branch,
                                 ip=request.remote_addr)
            except accounts.AccountError as exc:
                error = tr("j.bad." + exc.code)
            else:
                session["joined"] = pre.id
                return redirect(url_for("catalogue.joined"))
    return render_template("catalogue/join.html", branches=branches, error=error, form=form,
                           categories=accounts.CATEGORIES), (422 if error else 200)


@bp.get("/join/done")
def joined() -> Any:
    """The application's code, to bring to the branch."""
    code = session.get("joined")
    pre = s.PreRegistration.get_or_none(s.PreRegistration.id == code) if code else None
    if pre is None:
        return redirect(url_for("catalogue.join"))
    branch = s.Node.get_or_none(s.Node.id == pre.branch)
    return render_template("catalogue/joined.html", pre=pre, branch=branch)
