"""Inventory: where a copy is and where it has been, what a location holds, and the
discrepancies slot audits and reconciliation found.

A copy's history is its facts (``CopyFact``) in hybrid-clock order — the same
order the cloud replays them in — beside its loans, transfers and exceptions.
"""
from __future__ import annotations

import json
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from peewee import fn

from cloud import actions
from cloud import store as s
from cloud.console.auth import bp, record, require
from cloud.console.common import back, int_arg, tr, writing
from cloud.console.readers import csv_response

# Exception kinds that say the cloud's picture and a shelf or slot disagree.
DISCREPANCY_KINDS = ("audit_cloud_mismatch", "audit_missing", "audit_unexpected_copy",
                     "copy_was_elsewhere", "unknown_copy", "removed_unexpected",
                     "loaded_while_on_loan", "return_of_copy_not_on_loan",
                     "checkout_of_copy_on_loan")
STATUSES = ("in_slot", "on_shelf", "in_bin", "in_transit", "on_loan", "missing", "lost",
            "withdrawn")
PAGE_SIZE = 100


def holdings() -> list[dict[str, Any]]:
    """Per node: copies by status."""
    counts: dict[str, dict[str, int]] = {}
    for node, status, n in (s.Copy.select(s.Copy.location_node, s.Copy.status,
                                          fn.COUNT(s.Copy.barcode))
                            .group_by(s.Copy.location_node, s.Copy.status).tuples()):
        counts.setdefault(node or "", {})[status] = n
    out = []
    for node in s.Node.select().order_by(s.Node.kind.desc(), s.Node.id):
        c = counts.get(node.id, {})
        out.append({"node": node, "counts": c, "total": sum(c.values())})
    return out


def discrepancies(limit: int = 200) -> list[s.StaffException]:
    """Open exceptions where a shelf, slot or return disagreed with the cloud."""
    return list(s.StaffException.select().where(
        s.StaffException.closed_at.is_null() & s.StaffException.kind.in_(DISCREPANCY_KINDS))
        .order_by(s.StaffException.created_at.desc()).limit(limit))


@bp.get("/inventory")
@require()
def inventory() -> Any:
    """Find a copy; what each location holds; discrepancies."""
    barcode = request.args.get("copy", "").strip().upper()
    if barcode:
        if s.Copy.get_or_none(s.Copy.barcode == barcode) is not None:
            return redirect(url_for("console.copy", barcode=barcode))
        flash(tr("i.no_copy", copy=barcode), "bad")
    missing = s.Copy.select().where(s.Copy.status.in_(["missing", "lost"])).count()
    return render_template("console/inventory.html", holdings=holdings(),
                           discrepancies=discrepancies(), missing=missing, statuses=STATUSES)


def _fact_text(f: s.CopyFact) -> str:
    try:
        body = json.loads(f.body)
    except ValueError:
        body = {}
    bits = [f"{k} {v}" for k, v in body.items()
            if k in ("reader", "slot", "due", "to", "reason", "loan_id") and v not in (None, "")]
    return " · ".join(bits)


@bp.get("/copies/<barcode>")
@require()
def copy(barcode: str) -> Any:
    """Where a copy is now and where it has been."""
    c = s.Copy.get_or_none(s.Copy.barcode == barcode)
    if c is None:
        abort(404)
    title = s.Title.get_or_none(s.Title.id == c.title_id)
    facts = list(s.CopyFact.select().where(s.CopyFact.copy == barcode)
                 .order_by(s.CopyFact.key.desc()).limit(200))
    loans = list(s.Loan.select().where(s.Loan.copy == barcode)
                 .order_by(s.Loan.checked_out_at.desc()).limit(50))
    transfers = list(s.Transfer.select().where(s.Transfer.copy == barcode)
                     .order_by(s.Transfer.created_at.desc()).limit(20))
    exceptions = list(s.StaffException.select().where(s.StaffException.copy == barcode)
                      .order_by(s.StaffException.created_at.desc()).limit(20))
    held = s.Hold.get_or_none((s.Hold.copy == barcode)
                              & s.Hold.status.in_(["waiting", "ready"]))
    return render_template("console/copy.html", c=c, title=title, facts=facts, loans=loans,
                           transfers=transfers, exceptions=exceptions, held=held,
                           fact_text=_fact_text)


@bp.post("/copies/<barcode>/withdraw")
@require("operator")
def withdraw(barcode: str) -> Any:
    """Take a copy out of the fund."""
    reason = request.form.get("reason", "").strip()[:200]
    if not reason:
        flash(tr("r.need_reason"), "bad")
        return back(url_for("console.copy", barcode=barcode))
    try:
        with writing():
            actions.withdraw(barcode, reason)
            record("copy.withdraw", f"copy:{barcode}", reason)
    except actions.ActionError as exc:
        flash(tr("act." + exc.code), "bad")
    else:
        flash(tr("i.ok.withdraw"), "good")
    return back(url_for("console.copy", barcode=barcode))


@bp.get("/locations/<node_id>")
@require()
def location(node_id: str) -> Any:
    """What a location holds (by status), with titles; CSV for a stocktake."""
    n = s.Node.get_or_none(s.Node.id == node_id)
    if n is None:
        abort(404)
    status = request.args.get("status", "")
    query = (s.Copy.select(s.Copy, s.Title.title, s.Title.author)
             .join(s.Title, on=(s.Title.id == s.Copy.title_id))
             .where(s.Copy.location_node == node_id))
    if status in STATUSES:
        query = query.where(s.Copy.status == status)
    query = query.order_by(s.Copy.status, s.Copy.slot, s.Title.title, s.Copy.barcode)
    if request.args.get("format") == "csv":
        rows = [[c.barcode, c.status, c.slot or "", c.title.title, c.title.author]
                for c in query]
        return csv_response(f"holdings-{node_id}",
                            ["copy", "status", "slot", "title", "author"], rows)
    page = int_arg("page", 1, 1) or 1
    total = query.count()
    rows = list(query.paginate(page, PAGE_SIZE))
    pages = max(1, -(-total // PAGE_SIZE))
    return render_template("console/location.html", n=n, rows=rows, status=status,
                           statuses=STATUSES, page=page, pages=pages, total=total)
