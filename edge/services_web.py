"""The desk's services over HTTP: the JSON API (in the node's OpenAPI) and the staff page
``/desk/services`` — sessions with this reader's price, booking, the waiting list, a
session's roster with attendance, payments, memberships. Works with no link at all.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import current_app, make_response, render_template
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from edge import i18n
from edge.auth import require_staff
from edge.desk import strict_headers
from edge.services import ServiceDesk
from edge.store import CirculationRefused, zone_name

_ident = validate.Length(min=1, max=64)

api = Blueprint("services", __name__, url_prefix="/api",
                description="Services at this desk (memberships, counselling, workshops): "
                            "works with no link to the cloud")
page = FlaskBlueprint("services_page", __name__)


def init_app(app: Any, spec: Any) -> None:
    """Register the API (on the node's OpenAPI ``spec``) and the page."""
    app.extensions["kitap.services"] = ServiceDesk(app.extensions["kitap.store"])
    spec.register_blueprint(api)
    app.register_blueprint(page)


# Like the desk: nothing from outside the node, no framing.
page.after_request(strict_headers)


def _desk() -> ServiceDesk:
    desk: ServiceDesk = current_app.extensions["kitap.services"]
    return desk


def _refuse(exc: CirculationRefused) -> None:
    abort(409, message=exc.refusal.message, errors={"refusal": exc.refusal.code})


def _poke() -> None:
    sync = current_app.extensions.get("kitap.sync")
    if sync is not None:
        sync.poke()


def _act(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Do a desk action: its refusal is a 409 with the reason; done, the link is poked."""
    try:
        result = fn(*args, **kwargs)
    except CirculationRefused as exc:
        _refuse(exc)
    _poke()
    return getattr(result, "data", result)


def _read(fn: Any, *args: Any, missing: int = 409, **kwargs: Any) -> Any:
    """Read a view; an unknown reader or session is ``missing`` (404 or 409) with the reason."""
    try:
        return fn(*args, **kwargs)
    except CirculationRefused as exc:
        if missing == 404:
            abort(404, message=exc.refusal.message)
        _refuse(exc)


class QuoteOut(Schema):
    """What this reader pays and why."""

    base = fields.Int(metadata={"description": "The service's price, tiyn"})
    percent = fields.Int()
    discount = fields.Int(metadata={"description": "Tiyn less than the base"})
    amount = fields.Int(metadata={"description": "What the reader pays, tiyn"})
    reason = fields.Str(metadata={"description": "price.free | price.full | price.discount"})
    reason_args = fields.Dict()
    note = fields.Str(metadata={"description": "The reason in plain English"})


class SessionOut(Schema):
    """A session with its seats as known here (and this reader's price, when asked)."""

    id = fields.Str()
    service = fields.Str()
    kind = fields.Str()
    names = fields.Dict(keys=fields.Str(), values=fields.Str())
    branch = fields.Str()
    starts_at = fields.Str()
    ends_at = fields.Str()
    room = fields.Str()
    host = fields.Str()
    capacity = fields.Int()
    status = fields.Str()
    seated = fields.Int()
    waiting = fields.Int()
    free = fields.Int()
    price = fields.Int()
    cloud_seated = fields.Int()
    cloud_waiting = fields.Int()
    quote = fields.Nested(QuoteOut)
    booked = fields.Str(allow_none=True)


class BookingOut(Schema):
    """A booking: its seat (as the cloud decided once ``confirmed``), price and payment."""

    id = fields.Str()
    session = fields.Str()
    reader = fields.Str()
    name = fields.Str()
    node = fields.Str()
    status = fields.Str(metadata={"description": "active | cancelled | duplicate"})
    seat = fields.Str(metadata={"description": "seated | waitlisted"})
    attendance = fields.Str(allow_none=True)
    base = fields.Int()
    percent = fields.Int()
    price = fields.Int()
    paid = fields.Int()
    owed = fields.Int()
    rule = fields.Str()
    booked_at = fields.Str()
    confirmed = fields.Bool()
    position = fields.Int(allow_none=True)
    seq = fields.Int()
    refunded = fields.Int()
    amount = fields.Int()
    payment_id = fields.Str(allow_none=True)
    names = fields.Dict(keys=fields.Str(), values=fields.Str())
    starts_at = fields.Str(allow_none=True)
    branch = fields.Str(allow_none=True)
    room = fields.Str()
    host = fields.Str()
    reader_name = fields.Str()
    quote = fields.Nested(QuoteOut)


class RosterOut(SessionOut):
    """A session and every booking of it."""

    bookings = fields.List(fields.Nested(BookingOut))


class ServiceOut(Schema):
    """A service offered, with this reader's price when asked."""

    id = fields.Str()
    kind = fields.Str()
    names = fields.Dict(keys=fields.Str(), values=fields.Str())
    price = fields.Int()
    term_days = fields.Int(allow_none=True)
    branch = fields.Str(allow_none=True)
    quote = fields.Nested(QuoteOut)


class MembershipOut(Schema):
    """A membership sold: its term and what was paid."""

    id = fields.Str()
    seq = fields.Int()
    reader = fields.Str()
    reader_name = fields.Str()
    service = fields.Str()
    names = fields.Dict(keys=fields.Str(), values=fields.Str())
    starts = fields.Str()
    ends = fields.Str()
    renewal_of = fields.Str(allow_none=True)
    quote = fields.Nested(QuoteOut)
    paid = fields.Int()
    payment_id = fields.Str(allow_none=True)


class ListArgs(Schema):
    """Whose prices to show, and at which branch."""

    reader = fields.Str(load_default=None, validate=_ident)
    branch = fields.Str(load_default=None, validate=_ident)


class BookArgs(Schema):
    """A booking: the reader, the session; the waiting list if it is full; pay now."""

    reader = fields.Str(required=True, validate=_ident)
    session = fields.Str(required=True, validate=_ident)
    waitlist = fields.Bool(load_default=False, metadata={
        "description": "Put the reader on the waiting list when every seat is taken"})
    pay = fields.Bool(load_default=True, metadata={
        "description": "Take the price now (false: the reader pays later)"})


class CancelArgs(Schema):
    """Why, and whether what was paid is handed back."""

    reason = fields.Str(load_default="", validate=validate.Length(max=200))
    refund = fields.Bool(load_default=True)


class AttendanceArgs(Schema):
    """Did the reader come?"""

    outcome = fields.Str(required=True, validate=validate.OneOf(["attended", "no_show"]))


class MembershipArgs(Schema):
    """A membership to sell (or renew) for a reader."""

    reader = fields.Str(required=True, validate=_ident)
    service = fields.Str(required=True, validate=_ident)


@api.route("/services")
class ServicesView(MethodView):
    """What the library offers."""

    @api.arguments(ListArgs, location="query")
    @api.response(200, ServiceOut(many=True))
    @api.alt_response(409, description="Unknown reader")
    @require_staff
    def get(self, args: dict[str, Any]) -> Any:
        """The services offered, with this reader's price when ``reader`` is given."""
        return _read(_desk().services, args["reader"])


@api.route("/sessions")
class SessionsView(MethodView):
    """Sessions to book."""

    @api.arguments(ListArgs, location="query")
    @api.response(200, SessionOut(many=True))
    @api.alt_response(409, description="Unknown reader")
    @require_staff
    def get(self, args: dict[str, Any]) -> Any:
        """Sessions that have not ended, soonest first, every branch's (or one's)."""
        return _read(_desk().sessions, card=args["reader"], branch=args["branch"])


@api.route("/sessions/<session_id>")
class RosterView(MethodView):
    """One session's roster."""

    @api.response(200, RosterOut)
    @api.alt_response(404, description="Unknown session")
    @require_staff
    def get(self, session_id: str) -> Any:
        """Who holds a seat, who waits, who came, who still owes."""
        return _read(_desk().roster, session_id, missing=404)


@api.route("/readers/<card>/services")
class ReaderServicesView(MethodView):
    """A reader's bookings and memberships."""

    @api.alt_response(404, description="Unknown reader")
    @require_staff
    def get(self, card: str) -> Any:
        """Bookings (coming and recent) and memberships, as known here."""
        return _read(_desk().reader_services, card, missing=404)


@api.route("/bookings")
class BookingsView(MethodView):
    """Booking a session."""

    @api.arguments(BookArgs)
    @api.response(201, BookingOut)
    @api.alt_response(409, description="Full, already booked, blocked, unknown reader or "
                                       "session, session over")
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Book (works offline); the payment is taken in the same transaction."""
        return _act(_desk().book, args["reader"], args["session"], waitlist=args["waitlist"],
                    pay=args["pay"])


@api.route("/bookings/<booking_id>/cancel")
class CancelView(MethodView):
    """Cancelling a booking."""

    @api.arguments(CancelArgs)
    @api.response(200, BookingOut)
    @api.alt_response(409, description="No open booking")
    @require_staff
    def post(self, args: dict[str, Any], booking_id: str) -> Any:
        """Cancel; the first on the waiting list gets the seat (the cloud decides)."""
        return _act(_desk().cancel, booking_id, reason=args["reason"], refund=args["refund"])


@api.route("/bookings/<booking_id>/attendance")
class AttendanceView(MethodView):
    """Marking attendance."""

    @api.arguments(AttendanceArgs)
    @api.response(200, BookingOut)
    @api.alt_response(409, description="No open booking, another branch's, not started")
    @require_staff
    def post(self, args: dict[str, Any], booking_id: str) -> Any:
        """Attended or no-show."""
        return _act(_desk().attend, booking_id, args["outcome"])


@api.route("/bookings/<booking_id>/payment")
class BookingPaymentView(MethodView):
    """Paying for a booking made earlier."""

    @api.response(201, BookingOut)
    @api.alt_response(409, description="Nothing owed, waiting list, no open booking")
    @require_staff
    def post(self, booking_id: str) -> Any:
        """Take what the booking still owes."""
        return _act(_desk().pay, booking_id)


@api.route("/memberships")
class MembershipsView(MethodView):
    """Selling memberships."""

    @api.arguments(MembershipArgs)
    @api.response(201, MembershipOut)
    @api.alt_response(409, description="Unknown reader or membership, blocked")
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Sell (or issue, if free for this reader) a membership; a renewal runs on from
        the end of the current term."""
        return _act(_desk().sell_membership, args["reader"], args["service"])


@page.get("/desk/services")
def services_page() -> Any:
    """The desk's services page (it acts only through the API above)."""
    lang = i18n.pick()
    config = {"lang": lang, "node": current_app.config["NODE_ID"],
              "kind": current_app.config["NODE_KIND"], "tz": zone_name()}
    resp = make_response(render_template(
        "services.html", lang=lang, t=lambda key, **kw: i18n.t(key, lang, **kw),
        langs=i18n.NAMES, strings=i18n.strings(lang), config=config,
        node=current_app.config["NODE_ID"]))
    return i18n.remember(resp, lang)
