"""Readers in the console: debtors and overdue lists (with CSV), a reader's page and the
actions staff take on it — block, unblock, waive, extend, hold, cancel a hold.

Every action goes through ``cloud.actions`` (or ``cloud.accounts.renew`` for an
extension, which stays in the cloud: loans are not in the feed) inside one
transaction with its audit entry, so the nodes learn it from the change feed and
the trail shows who did it.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import Response, abort, flash, redirect, render_template, request, url_for

from cloud import accounts, actions, audit, debts, settings
from cloud import store as s
from cloud.console.auth import bp, ensure_may_act_on, me, record, require
from cloud.console.common import back, int_arg, tr, writing

HISTORY_SHOWN = 50
READERS_FOUND = 50
# A staff extension when the form names no number of days: a loan's usual fortnight.
DEFAULT_EXTEND_DAYS = 14


@dataclass(frozen=True)
class OverdueRow:
    """One open loan past its due date."""

    card: str
    name: str
    copy: str
    title: str
    author: str
    node: str
    checked_out_at: datetime
    due: date
    days: int


def overdue(today: date, node: str = "", min_days: int = 1) -> list[OverdueRow]:
    """Open loans at least ``min_days`` overdue (made at ``node`` if given), longest first."""
    query = (s.Loan.select(s.Loan.reader, s.Reader.name, s.Loan.copy, s.Title.title,
                           s.Title.author, s.Loan.node, s.Loan.checked_out_at, s.Loan.due)
             .join(s.Reader, on=(s.Reader.card == s.Loan.reader))
             .switch(s.Loan).join(s.Copy, on=(s.Copy.barcode == s.Loan.copy))
             .join(s.Title, on=(s.Title.id == s.Copy.title_id))
             .where(s.Loan.returned_at.is_null()
                    & (s.Loan.due <= date.fromordinal(today.toordinal() - max(1, min_days))))
             .order_by(s.Loan.due, s.Loan.reader))
    if node:
        query = query.where(s.Loan.node == node)
    return [OverdueRow(card, name, copy, title, author, where, at, due, (today - due).days)
            for card, name, copy, title, author, where, at, due in query.tuples()]


def _filters() -> tuple[str, int, int]:
    """Location, days and amount of a list; branch staff's lists are their branch's.

    The lists name readers and the CSV carries their contacts: branch staff act
    for their own branch, so they get its list and no other (403 if they ask).
    """
    node = request.args.get("node", "")
    who = me()
    if not who.at_least("operator"):
        if node and node != who.branch:
            abort(403)
        node = who.branch or ""
    days = int_arg("days", 0, 0, 3650) or 0
    tenge = int_arg("amount", 0, 0, 10**7) or 0
    return node, days, tenge


def _cell(value: Any) -> Any:
    """A spreadsheet cell that cannot turn into a formula (a name typed as "=...")."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_response(name: str, header: list[str], rows: list[list[Any]]) -> Response:
    buf = io.StringIO()
    buf.write("\ufeff")  # Excel opens UTF-8 (Cyrillic names) only with the BOM
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    stamp = settings.today().isoformat()
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"'})


def _nodes() -> list[s.Node]:
    return list(s.Node.select().order_by(s.Node.kind.desc(), s.Node.id))


def _list_nodes() -> list[s.Node]:
    """The locations a list's filter offers this staff member."""
    who = me()
    return [n for n in _nodes() if who.at_least("operator") or n.id == who.branch]


@bp.get("/debtors")
@require()
def debtors_page() -> Any:
    """Readers who owe books or money, with filters."""
    node, days, tenge = _filters()
    rows = debts.debtors(node or None, days, tenge * 100)
    if request.args.get("format") == "csv":
        contacts = dict(s.Reader.select(s.Reader.card, s.Reader.contact).where(
            s.Reader.card.in_([d.card for d in rows] or [""])).tuples())
        audit_csv("debtors", len(rows))
        return csv_response("debtors", ["card", "name", "category", "overdue_items",
                                "max_days_overdue", "owed_tenge", "locations", "blocked",
                                "contact"],
                    [[d.card, d.name, d.category, d.overdue_items, d.max_days_overdue,
                      f"{d.owed / 100:.2f}", " ".join(d.locations), d.blocked_reason or "",
                      contacts.get(d.card) or ""] for d in rows])
    return render_template("console/debtors.html", rows=rows, nodes=_list_nodes(), node=node,
                           days=days, amount=tenge, total=sum(d.owed for d in rows),
                           orphans=debts.ledger_orphans())


@bp.get("/overdue")
@require()
def overdue_page() -> Any:
    """Loans past their due date, with filters."""
    node, days, _ = _filters()
    rows = overdue(settings.today(), node, max(1, days))
    if request.args.get("format") == "csv":
        audit_csv("overdue", len(rows))
        return csv_response("overdue", ["card", "name", "copy", "title", "author", "location",
                                "checked_out", "due", "days_overdue"],
                    [[r.card, r.name, r.copy, r.title, r.author, r.node,
                      r.checked_out_at.date().isoformat(), r.due.isoformat(), r.days]
                     for r in rows])
    return render_template("console/overdue.html", rows=rows, nodes=_list_nodes(), node=node,
                           days=days)


def audit_csv(what: str, n: int) -> None:
    """An export of readers' data is an action too."""
    with writing():
        record("export", f"list:{what}", f"{n} rows, filters {request.query_string.decode()}")


@bp.get("/readers")
@require()
def readers_page() -> Any:
    """Find a reader by card or name."""
    q = request.args.get("q", "").strip()
    found: list[s.Reader] = []
    if q:
        exact = s.Reader.get_or_none(s.Reader.card == q.upper())
        if exact is not None:
            return redirect(url_for("console.reader", card=exact.card))
        cond = s.Reader.card.startswith(q.upper())
        for variant in {q, q.lower(), q.capitalize(), q.title(), q.upper()}:
            cond = cond | s.Reader.name.contains(variant)
        found = list(s.Reader.select().where(cond).order_by(s.Reader.name).limit(READERS_FOUND))
    return render_template("console/readers.html", q=q, found=found)


@bp.get("/readers/<card>")
@require()
def reader(card: str) -> Any:
    """A reader: loans, holds, fees, history, block, and what staff may do."""
    r = s.Reader.get_or_none(s.Reader.card == card)
    if r is None:
        abort(404)
    today = settings.today()
    loans = list(s.Loan.select().where((s.Loan.reader == card) & s.Loan.returned_at.is_null())
                 .order_by(s.Loan.due))
    history = list(s.Loan.select().where((s.Loan.reader == card)
                                         & s.Loan.returned_at.is_null(False))
                   .order_by(s.Loan.returned_at.desc()).limit(HISTORY_SHOWN))
    copies = {c.barcode: c for c in s.Copy.select().where(
        s.Copy.barcode.in_([ln.copy for ln in loans + history] or [""]))}
    hold_rows = list(s.Hold.select().where(s.Hold.reader == card)
                     .order_by(s.Hold.created_at.desc()).limit(30))
    title_ids = {c.title_id for c in copies.values()} | {h.title_id for h in hold_rows}
    titles = {t.id: t for t in s.Title.select().where(s.Title.id.in_(list(title_ids) or [""]))}
    ledger = list(s.LedgerEntry.select().where(s.LedgerEntry.reader == card)
                  .order_by(s.LedgerEntry.at.desc()).limit(50))
    payments = list(s.Payment.select().where(s.Payment.reader == card)
                    .order_by(s.Payment.paid_at.desc()).limit(20))
    extensions = {e.loan: e for e in s.LoanExtension.select().where(
        s.LoanExtension.reader == card)}
    who = me()
    return render_template(
        "console/reader.html", r=r, loans=loans, history=history, copies=copies,
        holds=hold_rows, titles=titles, ledger=ledger, payments=payments, today=today,
        extensions=extensions, trail=audit.for_target(f"reader:{card}", 20),
        nodes=_nodes(), can_network=who.at_least("operator"),
        may_act_on=who.may_act_on)


def _reader_or_404(card: str) -> s.Reader:
    r = s.Reader.get_or_none(s.Reader.card == card)
    if r is None:
        abort(404)
    return r


def _done(card: str) -> Any:
    return back(url_for("console.reader", card=card))


@bp.post("/readers/<card>/block")
@require("operator")
def block(card: str) -> Any:
    """Block a reader everywhere."""
    _reader_or_404(card)
    reason = request.form.get("reason", "").strip()[:200]
    if not reason:
        flash(tr("r.need_reason"), "bad")
        return _done(card)
    with writing():
        actions.block(card, reason)
        record("reader.block", f"reader:{card}", reason)
    flash(tr("r.ok.block"), "good")
    return _done(card)


@bp.post("/readers/<card>/unblock")
@require("operator")
def unblock(card: str) -> Any:
    """Lift a reader's block everywhere."""
    r = _reader_or_404(card)
    with writing():
        actions.unblock(card)
        record("reader.unblock", f"reader:{card}", f"was: {r.blocked_reason or ''}")
    flash(tr("r.ok.unblock"), "good")
    return _done(card)


def _tiyn(text: str) -> int | None:
    try:
        value = round(float(text.replace(",", ".").replace("\u00a0", "").replace(" ", "")) * 100)
    except ValueError:
        return None
    return value if value > 0 else None


@bp.post("/readers/<card>/waive")
@require("operator")
def waive(card: str) -> Any:
    """Forgive part of a reader's debt."""
    r = _reader_or_404(card)
    amount = _tiyn(request.form.get("amount", ""))
    reason = request.form.get("reason", "").strip()[:200]
    if amount is None or not reason or amount > max(0, r.fees_owed):
        flash(tr("r.bad_waive"), "bad")
        return _done(card)
    with writing():
        actions.waive(card, amount, f"{reason} ({me().username})")
        record("reader.waive", f"reader:{card}", f"{amount / 100:.2f} KZT: {reason}")
    flash(tr("r.ok.waive"), "good")
    return _done(card)


def _days(text: str) -> int | None:
    """Days to extend by, as typed (none: the usual two weeks); None if not a sensible number."""
    try:
        days = int(text.strip() or DEFAULT_EXTEND_DAYS)
    except ValueError:
        return None
    return days if 1 <= days <= accounts.MAX_EXTEND_DAYS else None


@bp.post("/readers/<card>/extend")
@require()
def extend(card: str) -> Any:
    """Move a loan's due date (branch staff: loans made at their branch)."""
    _reader_or_404(card)
    loan = s.Loan.get_or_none((s.Loan.id == request.form.get("loan", ""))
                              & (s.Loan.reader == card))
    if loan is None:
        abort(404)
    ensure_may_act_on(loan.node)
    days = _days(request.form.get("days", ""))
    if days is None:
        return render_template("error.html", code=400,
                               message=tr("r.bad_days", n=accounts.MAX_EXTEND_DAYS)), 400
    try:
        with writing():
            done = accounts.renew(card, loan.id, settings.today(), by=me().username,
                                  extend_days=days)
            record("loan.extend", f"reader:{card}", f"loan {loan.id} copy {loan.copy}: "
                   f"{done.old_due} → {done.new_due}", node=loan.node)
    except accounts.AccountError:
        flash(tr("r.bad_extend"), "bad")
        return _done(card)
    flash(tr("r.ok.extend", due=done.new_due.strftime("%d.%m.%Y")), "good")
    return _done(card)


@bp.post("/readers/<card>/hold")
@require()
def hold(card: str) -> Any:
    """Reserve a title for the reader (branch staff: pickup at their branch)."""
    _reader_or_404(card)
    title_id = request.form.get("title", "").strip()
    pickup = request.form.get("pickup", "")
    ensure_may_act_on(pickup)
    try:
        with writing():
            h = actions.place_hold(card, title_id, pickup)
            record("hold.place", f"reader:{card}", f"{title_id} at {pickup} ({h.id})",
                   node=pickup)
    except actions.ActionError as exc:
        flash(tr("act." + exc.code), "bad")
        return _done(card)
    flash(tr("r.ok.hold"), "good")
    return _done(card)


@bp.post("/holds/<hold_id>/cancel")
@require()
def cancel_hold(hold_id: str) -> Any:
    """Cancel a hold (branch staff: holds for pickup at their branch)."""
    h = s.Hold.get_or_none(s.Hold.id == hold_id)
    if h is None:
        abort(404)
    ensure_may_act_on(h.pickup_node)
    try:
        with writing():
            actions.cancel_hold(hold_id)
            record("hold.cancel", f"reader:{h.reader}", f"{h.title_id} at {h.pickup_node}",
                   node=h.pickup_node)
    except actions.ActionError as exc:
        flash(tr("act." + exc.code), "bad")
        return _done(h.reader)
    flash(tr("r.ok.cancel"), "good")
    return _done(h.reader)
