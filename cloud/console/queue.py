"""Work queues: the exceptions reconciliation raised for staff, the messages the cloud
refused at the door, and readers' online applications waiting for a branch to issue
their card.

Closing an exception records who closed it and why, in the exception itself and
in the audit trail. Branch staff work the queues of their own branch only.
"""
from __future__ import annotations

from typing import Any

from flask import abort, flash, render_template, request, url_for
from peewee import fn

from cloud import accounts
from cloud import store as s
from cloud.console.auth import bp, ensure_may_act_on, me, record, require
from cloud.console.common import back, int_arg, tr, writing

PAGE_SIZE = 50


@bp.get("/exceptions")
@require()
def exceptions() -> Any:
    """Open (or closed) exceptions, newest first, filtered by kind and node."""
    kind = request.args.get("kind", "")
    node = request.args.get("node", "")
    state = request.args.get("state", "open")
    query = s.StaffException.select()
    query = query.where(s.StaffException.closed_at.is_null() if state != "closed"
                        else s.StaffException.closed_at.is_null(False))
    if kind:
        query = query.where(s.StaffException.kind == kind)
    if node:
        query = query.where(s.StaffException.node == node)
    page = int_arg("page", 1, 1) or 1
    total = query.count()
    rows = list(query.order_by(s.StaffException.created_at.desc(), s.StaffException.id.desc())
                .paginate(page, PAGE_SIZE))
    kinds = (s.StaffException.select(s.StaffException.kind, fn.COUNT(s.StaffException.id))
             .where(s.StaffException.closed_at.is_null()).group_by(s.StaffException.kind)
             .order_by(fn.COUNT(s.StaffException.id).desc()).tuples())
    nodes = list(s.Node.select().order_by(s.Node.id))
    rejected = s.RejectedMessage.select().count() if me().at_least("operator") else None
    return render_template("console/exceptions.html", rows=rows, kinds=list(kinds), kind=kind,
                           node=node, state=state, nodes=nodes, page=page,
                           pages=max(1, -(-total // PAGE_SIZE)), total=total,
                           may_act_on=me().may_act_on, rejected=rejected)


@bp.get("/rejected")
@require("operator")
def rejected_messages() -> Any:
    """Messages refused at the door (bad, unknown or wrong node), newest first, by node."""
    node = request.args.get("node", "")
    query = s.RejectedMessage.select()
    if node:
        query = query.where(s.RejectedMessage.node == node)
    page = int_arg("page", 1, 1) or 1
    total = query.count()
    rows = list(query.order_by(s.RejectedMessage.received_at.desc(),
                               s.RejectedMessage.id.desc()).paginate(page, PAGE_SIZE))
    # Any node a message named, known or not (an unknown node is a reason to refuse).
    nodes = sorted(n for (n,) in s.tuples(s.RejectedMessage.select(s.RejectedMessage.node)
                                          .distinct()) if n)
    return render_template("console/rejected.html", rows=rows, node=node, nodes=nodes,
                           page=page, pages=max(1, -(-total // PAGE_SIZE)), total=total)


@bp.post("/exceptions/<int:exc_id>/close")
@require()
def close_exception(exc_id: int) -> Any:
    """Close an exception with what staff did about it."""
    exc = s.StaffException.get_or_none(s.StaffException.id == exc_id)
    if exc is None:
        abort(404)
    ensure_may_act_on(exc.node)
    resolution = request.form.get("resolution", "").strip()[:500]
    if not resolution:
        flash(tr("x.need_resolution"), "bad")
        return back(url_for("console.exceptions"))
    if exc.closed_at is not None:
        flash(tr("x.already_closed"), "bad")
        return back(url_for("console.exceptions"))
    with writing():
        s.StaffException.update(closed_at=s.utcnow(),
                                resolution=f"{resolution} — {me().username}").where(
            (s.StaffException.id == exc_id) & s.StaffException.closed_at.is_null()).execute()
        record("exception.close", f"exception:{exc_id}", f"{exc.kind}: {resolution}",
               node=exc.node)
    flash(tr("x.ok.close", id=exc_id), "good")
    return back(url_for("console.exceptions"))


# -- pre-registrations ------------------------------------------------------------------

@bp.get("/applications")
@require()
def applications() -> Any:
    """Online applications to join, for the branch each reader chose."""
    who = me()
    branch = request.args.get("branch", who.branch or "")
    state = request.args.get("state", "pending")
    query = s.PreRegistration.select().where(s.PreRegistration.status == state)
    if branch:
        query = query.where(s.PreRegistration.branch == branch)
    rows = list(query.order_by(s.PreRegistration.created_at).limit(200))
    branches = list(s.Node.select().where(s.Node.kind == "branch").order_by(s.Node.id))
    return render_template("console/applications.html", rows=rows, branch=branch,
                           state=state, branches=branches, may_act_on=who.may_act_on)


def _application(code: str) -> s.PreRegistration:
    pre = s.PreRegistration.get_or_none(s.PreRegistration.id == code.upper())
    if pre is None:
        abort(404)
    ensure_may_act_on(pre.branch)
    return pre


@bp.post("/applications/<code>/complete")
@require()
def complete_application(code: str) -> Any:
    """The branch issued the card: the applicant becomes a reader everywhere."""
    pre = _application(code)
    card = request.form.get("card", "")
    try:
        with writing():
            reader = accounts.complete_preregistration(pre.id, card, me().username)
            record("application.complete", f"reader:{reader.card}",
                   f"application {pre.id}: {pre.name}", node=pre.branch)
    except accounts.AccountError as exc:
        flash(tr("a.bad." + exc.code), "bad")
        return back(url_for("console.applications"))
    flash(tr("a.ok.complete", card=reader.card, name=reader.name), "good")
    return back(url_for("console.applications"))


@bp.post("/applications/<code>/cancel")
@require()
def cancel_application(code: str) -> Any:
    """Drop an application."""
    pre = _application(code)
    try:
        with writing():
            accounts.cancel_preregistration(pre.id, me().username)
            record("application.cancel", f"application:{pre.id}", pre.name, node=pre.branch)
    except accounts.AccountError:
        flash(tr("a.bad.not_pending"), "bad")
    return back(url_for("console.applications"))
