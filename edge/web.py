"""The edge node's HTTP face: the JSON API (OpenAPI by flask-smorest), status page, metrics."""
from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, render_template_string, session
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from edge import auth, kiosk
from edge.auth import require_staff
from edge.store import CirculationRefused, EdgeStore, Hold

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


class RouteOut(Schema):
    """Where a returned copy goes next (edge/routing.py): what the sorter is told too."""

    kind = fields.Str(metadata={"description": "hold_here (the hold shelf here), hold_elsewhere "
                                               "(send it to `to` for a hold there), home (send "
                                               "it home to `to`), shelf, or unknown (never "
                                               "held here: staff look it up)"})
    to = fields.Str(allow_none=True, metadata={"description": "the node it goes to"})
    hold_id = fields.Str(allow_none=True)
    reader = fields.Str(allow_none=True, metadata={"description": "a hold here: whose"})
    reader_name = fields.Str()


class ReturnOut(Schema):
    """A return receipt."""

    copy = fields.Str()
    loan_id = fields.Str(allow_none=True)
    known = fields.Bool(metadata={"description": "False when this node had never seen the copy"})
    seq = fields.Int()
    reader = fields.Str(allow_none=True, metadata={"description": "whose loan it closed"})
    route = fields.Nested(RouteOut)


def _store() -> EdgeStore:
    store: EdgeStore = current_app.extensions["kitap.store"]
    return store


def _refuse(exc: CirculationRefused) -> None:
    abort(409, message=exc.refusal.message, errors={"refusal": exc.refusal.code})


class RenewArgs(Schema):
    """A renewal: the loan's id."""

    loan_id = fields.Str(required=True, validate=_ident)


class RegisterArgs(Schema):
    """A new reader: the card handed over at the desk, and who they are."""

    card = fields.Str(required=True, validate=validate.Regexp(r"^[A-Za-z0-9-]{4,32}$"))
    name = fields.Str(required=True, validate=validate.Length(min=2, max=200))
    category = fields.Str(load_default="adult", validate=validate.OneOf(
        ["adult", "child", "student", "pensioner", "partner_staff", "supported"]))
    pin = fields.Str(required=True, validate=validate.Regexp(r"^[0-9]{4}$",
                                                             error="The PIN is 4 digits."))


class PaymentArgs(Schema):
    """Money taken at the desk, in tiyn (100 tiyn = 1 tenge)."""

    reader = fields.Str(required=True, validate=_ident)
    amount = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=10**9))
    kind = fields.Str(required=True, validate=validate.OneOf(["fee", "service"]))
    description = fields.Str(load_default="", validate=validate.Length(max=200))


class LoginArgs(Schema):
    """A staff login."""

    username = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    password = fields.Str(required=True, validate=validate.Length(min=1, max=200))


@api.route("/checkout")
class CheckoutView(MethodView):
    """Lend a copy."""

    @api.arguments(CheckoutArgs)
    @api.response(201, LoanOut)
    @api.alt_response(409, description="Refused by the loan rules or by the machine")
    def post(self, args: dict[str, Any]) -> Any:
        """Check a copy out (at a branch: staff; at a machine: the card in the reader)."""
        machine = current_app.extensions.get("kitap.machine")
        try:
            if machine is not None:
                if not (kiosk.pin_verified(args["reader"]) or auth.current_staff() == "api-token"):
                    abort(403, message="Enter the card's PIN on the machine's screen first "
                          "(or use the node's API token).", errors={"refusal": "pin_required"})
                result = machine.checkout(args["reader"], args["copy"])
            else:
                _staff_only()
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
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Check a copy in at the desk: any copy of the network is accepted."""
        result = _store().checkin(args["copy"])
        _poke()
        return result


@api.route("/renew")
class RenewView(MethodView):
    """Extend a loan."""

    @api.arguments(RenewArgs)
    @api.response(201, LoanOut)
    @api.alt_response(409, description="No renewals left, reserved by another reader, blocked")
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Renew a loan known at this node."""
        try:
            result = _store().renew(args["loan_id"])
        except CirculationRefused as exc:
            _refuse(exc)
        _poke()
        return result


@api.route("/readers")
class ReadersView(MethodView):
    """Readers."""

    @api.arguments(RegisterArgs)
    @api.response(201)
    @api.alt_response(409, description="The card is already issued")
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Register a reader and issue the card (works offline)."""
        try:
            seq = _store().register_reader(args["card"], args["name"], args["category"],
                                           args["pin"])
        except CirculationRefused as exc:
            _refuse(exc)
        _poke()
        return {"card": args["card"], "name": args["name"], "category": args["category"],
                "seq": seq}


@api.route("/readers/<card>")
class ReaderView(MethodView):
    """A reader as known at this node."""

    @require_staff
    def get(self, card: str) -> Any:
        """Loans, holds, debts as known here, and how fresh that knowledge is."""
        profile = _store().reader_profile(card)
        if profile is None:
            abort(404, message=f"Card {card} is not known at this node.")
        return profile


@api.route("/payments")
class PaymentsView(MethodView):
    """Payments."""

    @api.arguments(PaymentArgs)
    @api.response(201)
    @api.alt_response(409, description="Unknown reader")
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Take a payment for a fee or a service (works offline)."""
        try:
            pid, seq = _store().take_payment(args["reader"], args["amount"], args["kind"],
                                             args["description"])
        except CirculationRefused as exc:
            _refuse(exc)
        _poke()
        return {"payment_id": pid, "seq": seq, **args}


@api.route("/holds")
class HoldsView(MethodView):
    """Reservations to hand out here."""

    @require_staff
    def get(self) -> Any:
        """Holds to hand out at this node, ready ones first."""
        return _store().holds_here()


@api.route("/holds/<hold_id>/pickup")
class HoldPickupView(MethodView):
    """Hand out a held copy."""

    @api.response(201, LoanOut)
    @api.alt_response(409, description="Not ready, or refused by the rules")
    @require_staff
    def post(self, hold_id: str) -> Any:
        """Lend the copy set aside for this hold to its reader."""
        hold = Hold.get_or_none(Hold.id == hold_id)
        if hold is None or hold.status == "picked_up":
            abort(404, message="No such hold to hand out here.")
        if not hold.copy:
            abort(409, message="No copy has reached this location for this hold yet.",
                  errors={"refusal": "not_ready"})
        try:
            result = _store().checkout(hold.reader, hold.copy)
        except CirculationRefused as exc:
            _refuse(exc)
        _poke()
        return result


@api.route("/session")
class SessionView(MethodView):
    """Staff login at the desk."""

    @api.arguments(LoginArgs)
    def post(self, args: dict[str, Any]) -> Any:
        """Log in; the answer carries the CSRF token to send as X-CSRF-Token."""
        return auth.login(args["username"], args["password"])

    def get(self) -> Any:
        """Who is logged in."""
        staff = auth.current_staff()
        if staff is None:
            abort(401, message="Not logged in.")
        return {"username": staff, "role": session.get("role"), "csrf": session.get("csrf")}

    def delete(self) -> Any:
        """Log out."""
        session.clear()
        return {"ok": True}


@api.route("/status")
class StatusView(MethodView):
    """How this node is doing."""

    def get(self) -> Any:
        """Outbox, link, feed freshness and hardware state."""
        return status()


def status() -> dict[str, Any]:
    """The node's state for the status page, the API and metrics."""
    out = _store().summary()
    out["kind"] = current_app.config["NODE_KIND"]
    sync = current_app.extensions.get("kitap.sync")
    out["link"] = sync.state() if sync else {"connected": False, "broker": None}
    machine = current_app.extensions.get("kitap.machine")
    out["controller_online"] = machine.online if machine else None
    # A machine's hardware as /api/machine/status shows it: faults, bin level against
    # capacity, returns open or closed (and why), service door, slots (controller.slots).
    out["machine"] = machine.status() if machine else None
    return out


def _staff_only() -> None:
    if auth.current_staff() is None:
        abort(401, message="Staff login required (or the node's API token).")


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
{% if s.machine %}{% set m = s.machine %}<tr><td>Machine controller</td>
<td class="{{ 'ok' if m.online else 'bad' }}">
{{ 'online' if m.online else 'not responding' }}{% if m.problem %} ({{ m.problem }}){% endif %}
{% if m.controller.serial %}· {{ m.controller.serial }}, {{ m.controller.slots }} slots{% endif %}
</td></tr>
<tr><td>Faults</td><td class="{{ 'bad' if m.faults else 'ok' }}" id="faults">
{% for f in m.faults %}{{ f.kind }}{% if f.slot is not none %} (slot {{ f.slot }}){% endif %}:
{{ f.detail }}, since {{ f.since[:19] }} UTC{% if not loop.last %}<br>{% endif %}
{% else %}none{% endfor %}</td></tr>
<tr><td>Return bin</td><td>{% if m.bin %}{{ m.bin.count }}/{{ m.bin.capacity }}
{% if m.bin.full %}(full){% endif %}{% else %}unknown{% endif %}</td></tr>
<tr><td>Returns</td><td class="{{ 'ok' if m.returns_open else 'bad' }}">
{{ 'open' if m.returns_open else 'closed: ' ~ m.returns_closed_reason }}</td></tr>
<tr><td>Service door</td><td>{{ m.door or 'unknown' }}{% if m.door_locked %}, locked{% endif %}
</td></tr>{% endif %}
<tr><td>Events written</td><td>{{ s.last_seq }}</td></tr>
<tr><td>Acknowledged by the cloud</td><td>{{ s.last_acked }}</td></tr>
<tr><td>Waiting in the outbox</td><td>{{ s.outbox_depth }}</td></tr>
<tr><td>Open loans made here</td><td>{{ s.open_loans }}</td></tr>
<tr><td>Copies here</td><td>{{ s.copies_here }}</td></tr>
<tr><td>Readers known</td><td>{{ s.readers }}</td></tr>
<tr><td>Knowledge from the cloud</td><td>revision {{ s.feed_rev }}{% if s.as_of %},
as of {{ s.as_of[:19] }} UTC{% else %} (never synced){% endif %}</td></tr>
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
        ("kitap_edge_feed_rev", "Change-feed revision applied", s["feed_rev"]),
        ("kitap_edge_feed_age_seconds", "Seconds since the feed last changed anything",
         s["age_seconds"] if s["age_seconds"] is not None else float("nan")),
        ("kitap_edge_offline_hours", "Hours the link has been down (0 when up)",
         s["offline_hours"]),
        ("kitap_edge_resends_asked", "Times the cloud asked for events again (a gap)",
         s["link"].get("resends_asked", 0)),
        ("kitap_edge_resends_no_ack", "Times no ack came in time and events were sent again",
         s["link"].get("resends_no_ack", 0)),
    ):
        Gauge(name, help_, registry=registry).set(value)
    m = s["machine"]
    if m is not None:
        Gauge("kitap_edge_controller_online", "1 when the machine's controller answers",
              registry=registry).set(int(m["online"]))
        Gauge("kitap_edge_machine_faults", "Faults of the machine not cleared yet",
              registry=registry).set(len(m["faults"]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
