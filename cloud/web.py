"""The cloud's JSON API (summary, a copy's place, open loans), health and metrics.

The API is for staff and integrations: a console session (operator or
administrator; branch staff only for the summary, which names no reader) or the
cloud's API token (``KITAP_API_TOKEN``, sent as ``Authorization: Bearer ...``).
Health and metrics stay open, as on the nodes. The pages people use are the ops
console (``/console``, cloud/console/) and the readers' catalogue
(``/catalogue``, cloud/catalogue.py); ``/`` leads to the catalogue.
"""
from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, redirect, request, url_for
from flask.views import MethodView
from flask_smorest import Api, Blueprint, abort
from peewee import fn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud import store as s
from cloud.console import auth

F = TypeVar("F", bound=Callable[..., Any])

api = Blueprint("network", __name__, url_prefix="/api",
                description="The network as the cloud sees it")
pages = FlaskBlueprint("cloud_pages", __name__)

# The OpenAPI security schemes: the token, or the console's session cookie.
TOKEN_SCHEME, SESSION_SCHEME = "apiToken", "consoleSession"
SECURITY: list[dict[str, list[str]]] = [{TOKEN_SCHEME: []}, {SESSION_SCHEME: []}]
# The refusals flask-smorest has a response (with the error schema) for.
RESPONSES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}


def register(flask_api: Api) -> None:
    """Add this API and its security schemes to the app's spec."""
    flask_api.spec.components.security_scheme(
        TOKEN_SCHEME, {"type": "http", "scheme": "bearer",
                       "description": "The cloud's API token (KITAP_API_TOKEN)."})
    flask_api.spec.components.security_scheme(
        SESSION_SCHEME, {"type": "apiKey", "in": "cookie", "name": "session",
                         "description": "A logged-in ops console session (/console/login)."})
    flask_api.register_blueprint(api)


def token_ok() -> bool:
    """True if the request carries the cloud's API token (none configured: never)."""
    token = current_app.config.get("API_TOKEN")
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    # As bytes: a header may carry any character, compare_digest takes only ASCII str.
    return hmac.compare_digest(header[7:].encode(), str(token).encode())


def staff_or_token(role: str) -> Callable[[F], F]:
    """401 unless the API token or a console session comes with the request; 403 below ``role``."""
    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if token_ok():
                return fn(*args, **kwargs)
            who = auth.current()
            if who is None:
                abort(401, message="Log in to the ops console, or send the cloud's API "
                                   "token (Authorization: Bearer ...).",
                      headers={"WWW-Authenticate": "Bearer"})
            elif not who.at_least(role):
                abort(403, message="This lists readers of every branch: operators and "
                                   "administrators only.")
            return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return deco


def _documented(role: str, *refusals: int) -> Callable[[F], F]:
    """The access check, with it and the view's other ``refusals`` in the OpenAPI spec."""
    codes = [401, *([403] if role != "branch_staff" else []), *refusals]

    def deco(fn: F) -> F:
        fn = staff_or_token(role)(fn)
        for code in codes:
            fn = api.alt_response(code, response=RESPONSES[code])(fn)
        return api.doc(security=SECURITY)(fn)  # type: ignore[no-any-return]
    return deco


def summary() -> dict[str, Any]:
    """Per node: events applied, loans open by where they were made, copies held; totals."""
    cursors = {c.node: c.applied_seq for c in s.NodeCursor.select()}
    loans_open = dict(
        s.Loan.select(s.Loan.node, fn.COUNT(s.Loan.id)).where(s.Loan.returned_at.is_null())
        .group_by(s.Loan.node).tuples()
    )
    held = dict(s.Copy.select(s.Copy.location_node, fn.COUNT(s.Copy.barcode))
                .where(s.Copy.location_node.is_null(False))
                .group_by(s.Copy.location_node).tuples())
    nodes = []
    for n in s.Node.select().order_by(s.Node.kind.desc(), s.Node.id):
        st = json.loads(n.status or "{}")
        nodes.append({
            "id": n.id, "kind": n.kind, "name": n.name, "online": n.online,
            "last_seen": n.last_seen.isoformat() if n.last_seen else None,
            "applied_seq": cursors.get(n.id, 0),
            "node_last_seq": st.get("last_seq"), "outbox_depth": st.get("outbox_depth"),
            "loans_open": loans_open.get(n.id, 0), "copies_here": held.get(n.id, 0),
            # What the node's retained status says of its faults and (a machine) hardware.
            "faults": st.get("faults") or [], "machine": st.get("machine"),
        })
    return {
        "nodes": nodes,
        "events_applied": s.Event.select().count(),
        "loans_open": sum(loans_open.values()),
        "loans_total": s.Loan.select().count(),
        "copies_on_loan": s.Copy.select().where(s.Copy.status == "on_loan").count(),
        "exceptions_open": s.StaffException.select()
        .where(s.StaffException.closed_at.is_null()).count(),
        "rejected_messages": s.RejectedMessage.select().count(),
    }


@api.route("/loans/open")
class OpenLoansView(MethodView):
    """Every open loan."""

    @_documented("operator")
    def get(self) -> Any:
        """Open loans as (copy, reader, node, due), oldest first."""
        rows = (s.Loan.select().where(s.Loan.returned_at.is_null())
                .order_by(s.Loan.checked_out_at))
        return [{"copy": ln.copy, "reader": ln.reader, "node": ln.node,
                 "due": ln.due.isoformat()} for ln in rows]


@api.route("/summary")
class SummaryView(MethodView):
    """The network in numbers."""

    @_documented("branch_staff")
    def get(self) -> Any:
        """Nodes, events applied, open loans per location, open exceptions."""
        return summary()


@api.route("/copies/<barcode>")
class CopyView(MethodView):
    """Where one copy is."""

    @_documented("operator", 404)
    def get(self, barcode: str) -> Any:
        """The copy's place and its loans, newest first."""
        c = s.Copy.get_or_none(s.Copy.barcode == barcode)
        if c is None:
            abort(404, message=f"No copy {barcode} in the fund.")
        loans = s.Loan.select().where(s.Loan.copy == barcode).order_by(
            s.Loan.checked_out_at.desc())
        return {
            "barcode": c.barcode, "title_id": c.title_id, "status": c.status,
            "location_node": c.location_node, "slot": c.slot, "loan_id": c.loan_id,
            "loans": [{"id": ln.id, "reader": ln.reader, "node": ln.node,
                       "checked_out_at": ln.checked_out_at.isoformat(),
                       "returned_at": ln.returned_at.isoformat() if ln.returned_at else None,
                       "returned_node": ln.returned_node, "close_reason": ln.close_reason}
                      for ln in loans],
        }


@pages.get("/")
def index() -> Response:
    """The public front door: the readers' catalogue (staff go to /console)."""
    return redirect(url_for("catalogue.search"))  # type: ignore[return-value]


@pages.get("/healthz")
def healthz() -> Any:
    """Liveness: the store answers."""
    s.Node.select().count()
    return {"ok": True}


@pages.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of this cloud process."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
