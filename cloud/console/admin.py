"""The administrator's pages: staff logins, the audit trail, and the MARC 21 import.

A MARC file is uploaded (the browser shows the upload's progress), kept in a
temporary file, and imported by a background thread of this process; the
import's ``MarcImport`` row carries its progress, which the page polls — any
cloud process can show it.
"""
from __future__ import annotations

import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from werkzeug.utils import secure_filename

from cloud import accounts, audit, marc
from cloud import store as s
from cloud.console.auth import bp, me, record, require
from cloud.console.common import int_arg, tr, writing

# An import whose row has not moved for this long died with its process.
STALLED_AFTER = timedelta(minutes=2)
IMPORTS_SHOWN = 10


@bp.route("/staff", methods=["GET", "POST"])
@require("administrator")
def staff() -> Any:
    """Staff logins: create one, reset a password, switch one off or on."""
    if request.method == "POST":
        f = request.form
        try:
            with writing():
                user = accounts.add_staff(f.get("username", "").strip(), f.get("password", ""),
                                          f.get("role", ""), f.get("branch") or None,
                                          f.get("name", "").strip())
                record("staff.save", f"staff:{user.username}",
                       f"role {user.role}" + (f", branch {user.branch}" if user.branch else ""))
        except accounts.AccountError as exc:
            flash(tr("s.bad." + exc.code), "bad")
        else:
            flash(tr("s.ok.save", user=user.username), "good")
        return redirect(url_for("console.staff"))
    users = list(s.StaffUser.select().order_by(s.StaffUser.role, s.StaffUser.username))
    branches = list(s.Node.select().where(s.Node.kind == "branch").order_by(s.Node.id))
    return render_template("console/staff.html", users=users, branches=branches,
                           roles=accounts.ROLES, min_password=accounts.MIN_PASSWORD)


@bp.post("/staff/<username>/toggle")
@require("administrator")
def staff_toggle(username: str) -> Any:
    """Switch a login off or back on (never one's own)."""
    user = s.StaffUser.get_or_none(s.StaffUser.username == username)
    if user is None:
        abort(404)
    if user.username == me().username:
        flash(tr("s.bad.self"), "bad")
        return redirect(url_for("console.staff"))
    with writing():
        accounts.set_disabled(username, not user.disabled)
        record("staff.enable" if user.disabled else "staff.disable", f"staff:{username}")
    return redirect(url_for("console.staff"))


@bp.get("/audit")
@require("administrator")
def audit_trail() -> Any:
    """Who did what, newest first, with filters."""
    offset = int_arg("offset", 0, 0) or 0
    page = audit.entries(actor=request.args.get("actor", ""),
                         action=request.args.get("action", ""),
                         target=request.args.get("target", ""),
                         node=request.args.get("node", ""), offset=offset)
    return render_template("console/audit.html", page=page, actions=audit.actions_known(),
                           size=audit.PAGE_SIZE)


# -- MARC import --------------------------------------------------------------------------

def _job_view(job: s.MarcImport) -> dict[str, Any]:
    stalled = job.status == "running" and s.utcnow() - job.updated_at > STALLED_AFTER
    pct = 100 if job.status == "done" else (
        int(100 * job.done_bytes / job.total_bytes) if job.total_bytes else 0)
    return {"id": job.id, "filename": job.filename, "status": "stalled" if stalled else job.status,
            "percent": pct, "records": job.records, "created": job.created,
            "updated": job.updated, "errors": job.errors, "message": job.message,
            "done_bytes": job.done_bytes, "total_bytes": job.total_bytes,
            "started_by": job.started_by,
            "started_at": job.started_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


@bp.route("/import", methods=["GET", "POST"])
@require("administrator")
def marc_import() -> Any:
    """Upload a MARC 21 file (ISO 2709 or MARCXML) and import it in the background."""
    if request.method == "POST":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            flash(tr("m.no_file"), "bad")
            return redirect(url_for("console.marc_import"))
        name = secure_filename(upload.filename) or "catalogue.mrc"
        folder = Path(current_app.config.get("IMPORT_DIR") or tempfile.gettempdir())
        fd, tmp = tempfile.mkstemp(prefix="kitap-marc-", suffix="-" + name, dir=folder)
        with open(fd, "wb") as out:
            upload.save(out)
        path = Path(tmp)
        with writing():
            job = marc.start_job(name, path, me().username)
            record("marc.import", f"import:{job.id}", f"{name}, {path.stat().st_size} bytes")
        threading.Thread(target=marc.run_job, args=(job.id, path), name=f"marc-{job.id}",
                         daemon=True).start()
        if request.headers.get("Accept", "").startswith("application/json"):
            return jsonify(_job_view(job)), 202
        return redirect(url_for("console.marc_job", job_id=job.id))
    jobs = list(s.MarcImport.select().order_by(s.MarcImport.id.desc()).limit(IMPORTS_SHOWN))
    return render_template("console/import.html", jobs=[_job_view(j) for j in jobs],
                           titles=s.Title.select().count())


@bp.get("/import/<int:job_id>")
@require("administrator")
def marc_job(job_id: int) -> Any:
    """One import's progress (the page polls the JSON form)."""
    job = s.MarcImport.get_or_none(s.MarcImport.id == job_id)
    if job is None:
        abort(404)
    view = _job_view(job)
    if request.args.get("format") == "json":
        return jsonify(view)
    return render_template("console/import_job.html", job=view)
