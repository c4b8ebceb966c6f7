"""The edge node's HTTP face: the JSON API (OpenAPI by flask-smorest), status page, metrics."""
from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, render_template_string
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from edge.store import CirculationRefused, EdgeStore, Loan, Reader

_ident = validate.Length(min=1, max=64)

api = Blueprint("circulation", __name__, url_prefix="/api",
                description="Circulation at this node: works with no link to the cloud")
pages = FlaskBlueprint("pages", __name__)


class CheckoutArgs(Schema):
    """A checkout request: a reader's card and a copy's barcode."""

    reader = fields.Str(required=True, validate=_ident)
    copy = fields.Str(required=True, validate=_ident)


class ReturnArgs(Schema):
    """A return: the copy's barcode (any copy of the network)."""

    copy = fields.Str(required=True, validate=_ident)


class LoanOut(Schema):
    """A loan as the reader's receipt shows it."""

    loan_id = fields.Str()
    copy = fields.Str()
    reader = fields.Str()
    due = fields.Date()
    seq = fields.Int(metadata={"description": "The event's seq in this node's outbox"})
    title = fields.Str(allow_none=True)


class ReturnOut(Schema):
    """A return receipt."""

    copy = fields.Str()
    loan_id = fields.Str(allow_none=True)
    known = fields.Bool(metadata={"description": "False when this node had never seen the copy"})
    seq = fields.Int()


def _store() -> EdgeStore:
    store: EdgeStore = current_app.extensions["kitap.store"]
    return store


def _refuse(exc: CirculationRefused) -> None:
    abort(409, message=exc.refusal.message, errors={"refusal": exc.refusal.code})


@api.route("/checkout")
class CheckoutView(MethodView):
    """Lend a copy."""

    @api.arguments(CheckoutArgs)
    @api.response(201, LoanOut)
    @api.alt_response(409, description="Refused by the loan rules or by the machine")
    def post(self, args: dict[str, Any]) -> Any:
        """Check a copy out to a reader (at a machine: dispense it)."""
        machine = current_app.extensions.get("kitap.machine")
        try:
            if machine is not None:
                result = machine.checkout(args["reader"], args["copy"])
            else:
                result = _store().checkout(args["reader"], args["copy"])
        except CirculationRefused as exc:
            _refuse(exc)
        _poke()
        return result


@api.route("/return")
class ReturnView(MethodView):
    """Take a copy back."""

    @api.arguments(ReturnArgs)
    @api.response(201, ReturnOut)
    def post(self, args: dict[str, Any]) -> Any:
        """Check a copy in: any copy of the network is accepted."""
        result = _store().checkin(args["copy"])
        _poke()
        return result


@api.route("/readers/<card>")
class ReaderView(MethodView):
    """A reader as known at this node."""

    def get(self, card: str) -> Any:
        """The reader's open loans as known here."""
        r = Reader.get_or_none(Reader.card == card)
        if r is None:
            abort(404, message=f"Card {card} is not known at this node.")
        loans = Loan.select().where((Loan.reader == card) & Loan.returned_at.is_null())
        return {
            "card": r.card, "name": r.name, "category": r.category,
            "blocked_reason": r.blocked_reason,
            "loans": [{"loan_id": ln.id, "copy": ln.copy, "due": ln.due.isoformat()}
                      for ln in loans],
        }


@api.route("/status")
class StatusView(MethodView):
    """How this node is doing."""

    def get(self) -> Any:
        """Outbox, link and hardware state."""
        return status()


def status() -> dict[str, Any]:
    """The node's state for the status page, the API and metrics."""
    out = _store().summary()
    out["kind"] = current_app.config["NODE_KIND"]
    sync = current_app.extensions.get("kitap.sync")
    out["link"] = sync.state() if sync else {"connected": False, "broker": None}
    machine = current_app.extensions.get("kitap.machine")
    out["controller_online"] = machine.online if machine else None
    return out


def _poke() -> None:
    sync = current_app.extensions.get("kitap.sync")
    if sync is not None:
        sync.poke()


STATUS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3"><title>kitap edge {{ s.node }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:50rem}
td{padding:.2rem 1rem .2rem 0}.ok{color:#070}.bad{color:#a00}</style></head><body>
<h1>Edge node {{ s.node }} <small>({{ s.kind }})</small></h1>
<table>
<tr><td>Link to broker</td><td class="{{ 'ok' if s.link.connected else 'bad' }}">
{{ 'connected' if s.link.connected else 'offline' }} ({{ s.link.broker }})</td></tr>
{% if s.controller_online is not none %}<tr><td>Machine controller</td>
<td class="{{ 'ok' if s.controller_online else 'bad' }}">
{{ 'online' if s.controller_online else 'not responding' }}</td></tr>{% endif %}
<tr><td>Events written</td><td>{{ s.last_seq }}</td></tr>
<tr><td>Acknowledged by the cloud</td><td>{{ s.last_acked }}</td></tr>
<tr><td>Waiting in the outbox</td><td>{{ s.outbox_depth }}</td></tr>
<tr><td>Open loans made here</td><td>{{ s.open_loans }}</td></tr>
<tr><td>Copies here</td><td>{{ s.copies_here }}</td></tr>
<tr><td>Readers known</td><td>{{ s.readers }}</td></tr>
</table><p><a href="/api/openapi.json">OpenAPI</a> · <a href="/metrics">metrics</a></p>
</body></html>"""


@pages.get("/")
def index() -> str:
    """A status page a technician can read at a glance."""
    return render_template_string(STATUS_PAGE, s=status())


@pages.get("/healthz")
def healthz() -> Any:
    """Liveness: the store answers."""
    _store().last_seq()
    return {"ok": True}


@pages.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics, read fresh from the store at scrape time."""
    s = status()
    registry = CollectorRegistry()
    for name, help_, value in (
        ("kitap_edge_outbox_depth", "Events not yet acknowledged by the cloud", s["outbox_depth"]),
        ("kitap_edge_last_seq", "Seq of the newest event written", s["last_seq"]),
        ("kitap_edge_last_acked_seq", "Highest seq acknowledged by the cloud", s["last_acked"]),
        ("kitap_edge_link_up", "1 when connected to the broker", int(s["link"]["connected"])),
        ("kitap_edge_open_loans", "Open loans made at this node", s["open_loans"]),
    ):
        Gauge(name, help_, registry=registry).set(value)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
