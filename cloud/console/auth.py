"""Staff logins for the console: sessions with CSRF, roles, and which branch one may act for.

Roles, from most to least: an **administrator** does everything, including staff
logins, the MARC import and the audit trail; an **operator** runs the network
(every node, reader and exception); **branch staff** see the network but act
only for their own branch: its exceptions, its holds, its loans, its
pre-registrations, and its debtor and overdue lists. The role and branch are
read from the database on every request, so a login switched off or demoted
takes effect at once. The cloud's JSON API takes the same sessions
(cloud/web.py).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, abort, g, redirect, render_template, request, session, url_for
from peewee import InterfaceError, OperationalError

from cloud import accounts, audit
from cloud import store as s
from cloud.console.common import busy_words, csrf_token, install, local_path, tr

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("console", __name__, url_prefix="/console")
install(bp)
# A staff session lasts a shift; then the password is asked again.
SESSION_SECONDS = 10 * 3600


@dataclass(frozen=True)
class Staff:
    """The staff member of this request."""

    username: str
    name: str
    role: str
    branch: str | None

    def at_least(self, role: str) -> bool:
        """True if this member's role may do what ``role`` may."""
        return accounts.outranks(self.role, role)

    def may_act_on(self, node: str | None) -> bool:
        """Operators act anywhere; branch staff only for their branch."""
        return self.at_least("operator") or (node is not None and node == self.branch)


def current() -> Staff | None:
    """The logged-in staff member, checked against the database once per request."""
    if "staff" in g:
        return g.staff  # type: ignore[no-any-return]
    who: Staff | None = None
    name = session.get("staff")
    if name and time.time() - float(session.get("staff_at", 0)) < SESSION_SECONDS:
        try:
            row = s.StaffUser.get_or_none(s.StaffUser.username == name)
        except (OperationalError, InterfaceError):
            row = None  # the database is down: the error page renders without a login
        if row is not None and not row.disabled:
            who = Staff(row.username, row.name or row.username, row.role, row.branch)
    g.staff = who
    return who


def require(role: str = "branch_staff") -> Callable[[F], F]:
    """Send a visitor to the login page; refuse (403) a staff member below ``role``."""
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            who = current()
            if who is None:
                return redirect(url_for("console.login", next=request.full_path))
            if not who.at_least(role):
                abort(403)
            return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return deco


def me() -> Staff:
    """The staff member of a view behind ``require`` (never None there)."""
    who = current()
    if who is None:
        abort(401)
    return who


def ensure_may_act_on(node: str | None) -> Staff:
    """403 unless the staff member may act for ``node``."""
    who = me()
    if not who.may_act_on(node):
        abort(403)
    return who


def record(action: str, target: str, detail: str = "", node: str | None = None) -> None:
    """Put the staff member's action in the audit trail (inside the action's transaction)."""
    who = me()
    audit.record(who.username, action, target, detail, role=who.role, node=node,
                 ip=request.remote_addr)


@bp.app_context_processor
def _staff() -> dict[str, Any]:
    return {"staff": current() if request.blueprint == "console" else None}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The staff login form."""
    error, status = "", 200
    nxt = request.values.get("next", "")
    if not local_path(nxt, "/console"):
        nxt = url_for("console.index")
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        try:
            user = accounts.staff_login(username, request.form.get("password", ""))
        except accounts.AuthError as exc:
            error, status = tr("login." + exc.code, s=exc.retry_after), 401
        except OperationalError as exc:
            error, status = busy_words(exc), 503
        else:
            lang = session.get("lang")
            session.clear()
            if lang:
                session["lang"] = lang
            session["staff"] = user.username
            session["staff_at"] = time.time()
            csrf_token()
            audit.record(user.username, "login", f"staff:{user.username}", role=user.role,
                         ip=request.remote_addr)
            return redirect(nxt)
    return render_template("console/login.html", error=error, next=nxt,
                           username=request.form.get("username", "")), status


@bp.post("/logout")
def logout() -> Any:
    """End the staff session."""
    session.pop("staff", None)
    session.pop("staff_at", None)
    return redirect(url_for("console.login"))
