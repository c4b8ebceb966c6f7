"""The event envelope and every event body, as marshmallow schemas.

Up the wire a node sends a *batch*: a JSON array of one or more envelopes, each
with its own ``seq``. A batch is refused whole if its JSON or any envelope's
header (``v``, ``node``, ``seq``, ``hlc``, ``ts``, ``type``) is bad; an envelope
whose header is good but whose body is not is *quarantined* by the cloud under
its seq (so one poison event never blocks that node's queue).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from protocol import PROTOCOL_VERSION
from protocol.errors import RejectedMessage
from protocol.hlc import Timestamp
from protocol.topics import NODE_ID_RE

# A batch larger than this is refused: 500 events of ~300 bytes stay well under
# Mosquitto's default message limits and one SQLite transaction stays short.
MAX_BATCH = 500
MAX_PAYLOAD_BYTES = 512 * 1024

_ident = validate.Length(min=1, max=64)


def _at() -> fields.AwareDateTime:
    """When a transaction physically happened, if before the node recorded it.

    A self-check kiosk's store-and-forward checkout, reported later: the
    envelope's ``ts`` and ``hlc`` stay the node's own clock when it wrote the
    event. Left out (not null) when the node did it itself, so those events look
    as they always did.
    """
    return fields.AwareDateTime()


def _source() -> fields.Str:
    """Who did it at the node when not the node itself: "sip2:<kiosk login>"."""
    return fields.Str(validate=_ident)


def _hlc(value: str) -> bool:
    try:
        Timestamp.decode(value)
    except ValueError as exc:
        raise ValidationError("not an HLC timestamp (13 digits, dash, 5 digits)") from exc
    return True


class LoanCheckoutBody(Schema):
    """A copy left with a reader (at a machine: it physically left the slot)."""

    class Meta:
        unknown = RAISE

    loan_id = fields.Str(required=True, validate=_ident)
    copy = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    due = fields.Date(required=True)
    slot = fields.Int(load_default=None, allow_none=True, validate=validate.Range(min=0, max=999))
    at = _at()
    source = _source()


class LoanReturnBody(Schema):
    """A copy came back at this node, whoever lent it and wherever."""

    class Meta:
        unknown = RAISE

    copy = fields.Str(required=True, validate=_ident)
    # The loan as this node knew it; None when the node had never heard of the copy.
    loan_id = fields.Str(load_default=None, allow_none=True, validate=_ident)
    reader = fields.Str(load_default=None, allow_none=True, validate=_ident)
    at = _at()
    source = _source()


class LoanRenewBody(Schema):
    """A loan was extended at this node."""

    class Meta:
        unknown = RAISE

    loan_id = fields.Str(required=True, validate=_ident)
    copy = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    due = fields.Date(required=True)
    at = _at()
    source = _source()


class HoldPickedUpBody(Schema):
    """A reader collected the copy set aside for their hold (its loan.checkout precedes)."""

    class Meta:
        unknown = RAISE

    hold_id = fields.Str(required=True, validate=_ident)
    copy = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    loan_id = fields.Str(required=True, validate=_ident)
    at = _at()
    source = _source()


class FeePaidBody(Schema):
    """Money taken at this node, in tiyn (1/100 tenge): a fee or a paid service."""

    class Meta:
        unknown = RAISE

    payment_id = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    amount = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=10**9))
    kind = fields.Str(required=True, validate=validate.OneOf(["fee", "service"]))
    description = fields.Str(load_default="", validate=validate.Length(max=200))


class ReaderRegisteredBody(Schema):
    """A card issued at a branch desk."""

    class Meta:
        unknown = RAISE

    card = fields.Str(required=True, validate=_ident)
    name = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    category = fields.Str(required=True, validate=validate.Length(min=1, max=32))
    pin_hash = fields.Str(required=True, validate=validate.Length(min=1, max=200))


class ReaderBlockedBody(Schema):
    """A card blocked at the node (a self-check's 01 Block Patron): blocked everywhere."""

    class Meta:
        unknown = RAISE

    card = fields.Str(required=True, validate=_ident)
    reason = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    source = fields.Str(required=True, validate=_ident)
    card_retained = fields.Bool(load_default=False)


class ReaderUnblockedBody(Schema):
    """A block a self-check set, lifted at the node (25 Patron Enable); never anyone else's."""

    class Meta:
        unknown = RAISE

    card = fields.Str(required=True, validate=_ident)
    source = fields.Str(required=True, validate=_ident)


class HoldRequestedBody(Schema):
    """A reader reserved a title at the node, to collect there; the cloud chooses the copy."""

    class Meta:
        unknown = RAISE

    hold_id = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    title = fields.Str(required=True, validate=_ident)
    pickup = fields.Str(required=True, validate=validate.Regexp(NODE_ID_RE))
    source = _source()


class HoldCancelledBody(Schema):
    """A reader cancelled their hold at the node."""

    class Meta:
        unknown = RAISE

    hold_id = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    source = _source()


_slot = validate.Range(min=1, max=999)


class StockMoveBody(Schema):
    """A technician loaded a copy into a slot, or took one out (stock.loaded / stock.removed).

    ``slot`` None on stock.removed: the copy was taken out of the return bin.
    """

    class Meta:
        unknown = RAISE

    copy = fields.Str(required=True, validate=_ident)
    slot = fields.Int(load_default=None, allow_none=True, strict=True, validate=_slot)


class MissingCopy(Schema):
    """A copy the node expected in a slot that the slot scan found without it."""

    class Meta:
        unknown = RAISE

    copy = fields.Str(required=True, validate=_ident)
    slot = fields.Int(required=True, strict=True, validate=_slot)


class StockAuditBody(Schema):
    """What a machine's slot scan found in every slot, and what it expected but did not find."""

    class Meta:
        unknown = RAISE

    slots = fields.Dict(required=True, keys=fields.Str(validate=validate.Regexp(r"^[1-9]\d{0,2}$")),
                        values=fields.Str(allow_none=True, validate=_ident))
    missing = fields.List(fields.Nested(MissingCopy), load_default=list)
    # Why the scan ran: door_closed (after a technician's visit), reconcile
    # (after a restart or a reconnect), dispense (a slot did not hold what it should).
    reason = fields.Str(required=True, validate=validate.OneOf(
        ["door_closed", "reconcile", "dispense"]))


class DeviceFaultBody(Schema):
    """A machine's fault was raised or cleared (jam, bin_full, controller_lost, ...)."""

    class Meta:
        unknown = RAISE

    kind = fields.Str(required=True, validate=validate.Regexp(r"^[a-z][a-z_]{0,39}$"))
    state = fields.Str(required=True, validate=validate.OneOf(["raised", "cleared"]))
    slot = fields.Int(load_default=None, allow_none=True, strict=True, validate=_slot)
    detail = fields.Str(load_default="", validate=validate.Length(max=500))


_money = validate.Range(min=0, max=10**9)
_percent = validate.Range(min=0, max=100)


class _Priced:
    """What a reader was asked to pay: base price, discount, amount, why (edge/pricing.py).

    A mixin of fields: marshmallow collects them from every base of a schema.
    """

    base = fields.Int(required=True, strict=True, validate=_money)
    percent = fields.Int(required=True, strict=True, validate=_percent)
    price = fields.Int(required=True, strict=True, validate=_money)
    rule = fields.Str(load_default="", validate=validate.Length(max=200))
    # Taken at the desk in the same transaction (tiyn); payment_id names it.
    paid = fields.Int(load_default=0, strict=True, validate=_money)
    payment_id = fields.Str(load_default=None, allow_none=True, validate=_ident)

    @validates_schema
    def _paid_with_an_id(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("paid") and not data.get("payment_id"):
            raise ValidationError("a payment needs its payment_id", "payment_id")
        if data["price"] > data["base"]:
            raise ValidationError("the price cannot exceed the base price", "price")


class _BookingRef(Schema):
    """Which booking an event is about: its id, its session and its reader."""

    class Meta:
        unknown = RAISE

    booking_id = fields.Str(required=True, validate=_ident)
    session = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)


class ServiceBookedBody(_BookingRef, _Priced):
    """A reader booked a session of a service (a workshop seat, a counselling slot)."""

    # What the desk told the reader from what it knew: a seat, or the waiting list.
    # The cloud decides (the first bookings by hybrid clock hold the seats).
    seat = fields.Str(required=True, validate=validate.OneOf(["seated", "waitlisted"]))


class ServiceCancelledBody(_BookingRef):
    """A booking was cancelled at this node (by the reader or by staff)."""

    reason = fields.Str(load_default="", validate=validate.Length(max=200))
    # Money handed back at the desk (tiyn), if any.
    refunded = fields.Int(load_default=0, strict=True, validate=_money)


class ServiceAttendedBody(_BookingRef):
    """Staff marked whether the reader came to the session."""

    outcome = fields.Str(required=True, validate=validate.OneOf(["attended", "no_show"]))


class ServicePaidBody(Schema):
    """Money taken at this node for a booking made earlier (online, or unpaid at a desk)."""

    class Meta:
        unknown = RAISE

    payment_id = fields.Str(required=True, validate=_ident)
    booking_id = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    amount = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=10**9))


class MembershipSoldBody(_Priced, Schema):
    """A membership sold or issued (free) at this node: its term, from starts to ends."""

    class Meta:
        unknown = RAISE

    membership_id = fields.Str(required=True, validate=_ident)
    reader = fields.Str(required=True, validate=_ident)
    service = fields.Str(required=True, validate=_ident)
    starts = fields.Date(required=True)
    ends = fields.Date(required=True)
    # The membership this one extends (a renewal starts the day after it ends).
    renewal_of = fields.Str(load_default=None, allow_none=True, validate=_ident)

    @validates_schema
    def _a_term(self, data: dict[str, Any], **_: Any) -> None:
        if data["ends"] < data["starts"]:
            raise ValidationError("a membership ends on or after the day it starts", "ends")


BODY_SCHEMAS: dict[str, type[Schema]] = {
    "stock.loaded": StockMoveBody,
    "stock.removed": StockMoveBody,
    "stock.audit": StockAuditBody,
    "device.fault": DeviceFaultBody,
    "loan.checkout": LoanCheckoutBody,
    "loan.return": LoanReturnBody,
    "loan.renew": LoanRenewBody,
    "hold.picked_up": HoldPickedUpBody,
    "fee.paid": FeePaidBody,
    "reader.registered": ReaderRegisteredBody,
    "reader.blocked": ReaderBlockedBody,
    "reader.unblocked": ReaderUnblockedBody,
    "hold.requested": HoldRequestedBody,
    "hold.cancelled": HoldCancelledBody,
    "service.booked": ServiceBookedBody,
    "service.cancelled": ServiceCancelledBody,
    "service.attended": ServiceAttendedBody,
    "service.paid": ServicePaidBody,
    "membership.sold": MembershipSoldBody,
}
_BODY_INSTANCES: dict[str, Schema] = {k: v() for k, v in BODY_SCHEMAS.items()}


class EnvelopeHeader(Schema):
    """The envelope around every event; the body is checked apart, by its type."""

    class Meta:
        unknown = RAISE

    v = fields.Int(required=True, strict=True)
    node = fields.Str(required=True, validate=validate.Regexp(NODE_ID_RE))
    seq = fields.Int(required=True, strict=True, validate=validate.Range(min=1))
    hlc = fields.Str(required=True, validate=_hlc)
    ts = fields.AwareDateTime(required=True)
    type = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    body = fields.Dict(required=True)


_HEADER = EnvelopeHeader()


@dataclass(frozen=True)
class Event:
    """One validated envelope. ``body_error`` is set when only the body was bad."""

    node: str
    seq: int
    hlc: str
    ts: datetime
    type: str
    body: dict[str, Any]
    body_error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _reason(err: ValidationError) -> str:
    msgs = err.messages
    if isinstance(msgs, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in sorted(msgs.items(), key=str))
    return _flat(msgs)


def _flat(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_flat(x)}" for k, x in v.items())
    return str(v)


def make_envelope(
    node: str, seq: int, hlc: str, ts: datetime, type_: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A wire-ready envelope; the body is validated and serialised by its schema."""
    schema = _BODY_INSTANCES.get(type_)
    if schema is None:
        raise RejectedMessage(f"unknown event type {type_!r}")
    errors = schema.validate(body)
    if errors:
        raise RejectedMessage(f"{type_} body: {_flat(errors)}")
    return {
        "v": PROTOCOL_VERSION,
        "node": node,
        "seq": seq,
        "hlc": hlc,
        "ts": ts.isoformat(),
        "type": type_,
        "body": schema.dump(schema.load(body)),
    }


def parse_envelope(obj: Any) -> Event:
    """Validate one envelope; RejectedMessage if its header is bad."""
    if not isinstance(obj, dict):
        raise RejectedMessage("an event must be a JSON object")
    v = obj.get("v")
    if isinstance(v, int) and not isinstance(v, bool) and v != PROTOCOL_VERSION:
        raise RejectedMessage(
            f"unsupported protocol version {v} (this build speaks {PROTOCOL_VERSION})"
        )
    try:
        head = _HEADER.load(obj)
    except ValidationError as err:
        raise RejectedMessage(f"bad envelope: {_reason(err)}") from err
    body_schema = _BODY_INSTANCES.get(head["type"])
    body: dict[str, Any] = head["body"]
    body_error = None
    if body_schema is None:
        body_error = f"unknown event type {head['type']!r}"
    else:
        try:
            body = body_schema.load(head["body"])
        except ValidationError as err:
            body_error = f"{head['type']} body: {_reason(err)}"
    return Event(
        node=head["node"], seq=head["seq"], hlc=head["hlc"], ts=head["ts"],
        type=head["type"], body=body, body_error=body_error, raw=obj,
    )


def encode_batch(envelopes: list[dict[str, Any]]) -> bytes:
    """The payload of one message on a node's events topic."""
    return json.dumps(envelopes, ensure_ascii=False, separators=(",", ":")).encode()


def decode_batch(payload: bytes, topic_node: str) -> list[Event]:
    """Validate a batch that arrived on ``topic_node``'s events topic.

    Refuses the whole batch (RejectedMessage) when it is not JSON, too large,
    empty, or any envelope has a bad header or speaks for another node.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedMessage(f"payload is not JSON: {exc}") from exc
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc:
        raise RejectedMessage("payload must be a non-empty JSON array of events")
    if len(doc) > MAX_BATCH:
        raise RejectedMessage(f"batch of {len(doc)} events exceeds {MAX_BATCH}")
    events = [parse_envelope(item) for item in doc]
    for ev in events:
        if ev.node != topic_node:
            raise RejectedMessage(
                f"event seq {ev.seq} claims node {ev.node!r} on {topic_node!r}'s topic"
            )
    return events


class AckSchema(Schema):
    """cloud -> node: highest contiguous seq applied; ``resend_from`` asks for a replay."""

    class Meta:
        unknown = EXCLUDE

    v = fields.Int(required=True, strict=True, validate=validate.Equal(PROTOCOL_VERSION))
    node = fields.Str(required=True, validate=validate.Regexp(NODE_ID_RE))
    acked = fields.Int(required=True, strict=True, validate=validate.Range(min=0))
    resend_from = fields.Int(load_default=None, allow_none=True, strict=True)


_count = validate.Range(min=0)


class MachineStatusSchema(Schema):
    """A machine node's hardware in its status: controller, slots, return bin, chute, door.

    Each field is None while the node has not heard it from the controller.
    """

    class Meta:
        unknown = EXCLUDE

    controller_online = fields.Bool(load_default=None, allow_none=True)
    slots = fields.Int(load_default=None, allow_none=True, strict=True, validate=_count)
    bin = fields.Int(load_default=None, allow_none=True, strict=True, validate=_count)
    bin_capacity = fields.Int(load_default=None, allow_none=True, strict=True,
                              validate=_count)
    returns_open = fields.Bool(load_default=None, allow_none=True)
    door = fields.Str(load_default=None, allow_none=True,
                      validate=validate.OneOf(["open", "closed"]))


class StatusSchema(Schema):
    """node -> all (retained): is the node up, and how far behind is it."""

    class Meta:
        unknown = EXCLUDE

    v = fields.Int(required=True, strict=True, validate=validate.Equal(PROTOCOL_VERSION))
    node = fields.Str(required=True, validate=validate.Regexp(NODE_ID_RE))
    online = fields.Bool(required=True)
    kind = fields.Str(load_default=None, allow_none=True)
    ts = fields.AwareDateTime(load_default=None, allow_none=True)
    outbox_depth = fields.Int(load_default=None, allow_none=True)
    last_seq = fields.Int(load_default=None, allow_none=True)
    last_acked = fields.Int(load_default=None, allow_none=True)
    feed_rev = fields.Int(load_default=None, allow_none=True)
    faults = fields.List(fields.Str(), load_default=list)
    machine = fields.Nested(MachineStatusSchema, load_default=None, allow_none=True)


def _load_json(schema: Schema, payload: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
        result: dict[str, Any] = schema.load(doc)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedMessage(f"{what} is not JSON: {exc}") from exc
    except ValidationError as err:
        raise RejectedMessage(f"bad {what}: {_reason(err)}") from err
    return result


def decode_ack(payload: bytes) -> dict[str, Any]:
    """Validate an ack message."""
    return _load_json(AckSchema(), payload, "ack")


def encode_ack(node: str, acked: int, resend_from: int | None = None) -> bytes:
    """An ack message for ``node``."""
    doc = {"v": PROTOCOL_VERSION, "node": node, "acked": acked, "resend_from": resend_from}
    return json.dumps(doc).encode()


def decode_status(payload: bytes) -> dict[str, Any]:
    """Validate a status message."""
    return _load_json(StatusSchema(), payload, "status")


def encode_status(node: str, online: bool, **extra: Any) -> bytes:
    """A status message (``extra`` as in StatusSchema)."""
    return json.dumps({"v": PROTOCOL_VERSION, "node": node, "online": online, **extra}).encode()
