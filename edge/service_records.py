"""The services' tables in a node's SQLite, and how the cloud's feed fills them.

Every node keeps every branch's services, sessions and bookings (any desk sells
any branch's sessions), the partners and discount rules its prices come from,
and the memberships that make readers members. The cloud's word on a booking
wins for its seat (the cloud decides who holds the seats); what this node did
to a booking and the cloud has not acknowledged yet — a cancellation, a mark of
attendance, a payment — stays as done here.
"""
from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

from peewee import BooleanField, CharField, DateField, DateTimeField, IntegerField, TextField

from edge.store import BaseModel, Outbox

logger = logging.getLogger(__name__)

ENTITIES = ("partner", "discount", "service", "session", "booking", "membership")
# The events that name a booking or a membership; while one is unacknowledged, its
# local state (not a booking's seat) is this node's.
PENDING_EVENTS = ("service.booked", "service.cancelled", "service.attended", "service.paid",
                  "membership.sold")


class Partner(BaseModel):
    """A partner organisation (its people get discounts)."""

    id = CharField(primary_key=True)
    name = TextField(default="")


class DiscountRule(BaseModel):
    """A discount rule from the cloud (edge/pricing.py Rule)."""

    id = IntegerField(primary_key=True)
    category = CharField()
    partner = CharField(default="*")
    kind = CharField()
    service = CharField(default="*")
    percent = IntegerField()
    valid_from = DateField(null=True)
    valid_to = DateField(null=True)


class Service(BaseModel):
    """A membership, counselling, a workshop or an event, with its base price (tiyn)."""

    id = CharField(primary_key=True)
    kind = CharField()
    name_kk = TextField(default="")
    name_ru = TextField(default="")
    name_en = TextField(default="")
    about_kk = TextField(default="")
    about_ru = TextField(default="")
    about_en = TextField(default="")
    price = IntegerField(default=0)
    term_days = IntegerField(null=True)
    capacity = IntegerField(default=1)
    branch = CharField(null=True)
    active = BooleanField(default=True)


class ServiceSession(BaseModel):
    """A session at a branch; ``seated``/``waiting`` are the cloud's counts as last heard."""

    id = CharField(primary_key=True)
    service = CharField(index=True)
    branch = CharField(index=True)
    starts_at = DateTimeField(index=True)
    ends_at = DateTimeField()
    room = TextField(default="")
    host = TextField(default="")
    capacity = IntegerField(default=1)
    status = CharField(default="scheduled")
    seated = IntegerField(default=0)
    waiting = IntegerField(default=0)


class Booking(BaseModel):
    """A booking: made here (``key`` empty until the cloud's version arrives) or anywhere."""

    id = CharField(primary_key=True)
    session = CharField(index=True)
    reader = CharField(index=True)
    node = CharField(default="")
    key = CharField(default="")  # the cloud's order key; "" while only this node knows it
    status = CharField(default="active")  # active | cancelled | duplicate
    seat = CharField(default="seated")  # seated | waitlisted
    attendance = CharField(null=True)
    base = IntegerField(default=0)
    percent = IntegerField(default=0)
    price = IntegerField(default=0)
    paid = IntegerField(default=0)
    rule = TextField(default="")
    booked_at = DateTimeField()


class Membership(BaseModel):
    """A reader's membership term (both days included)."""

    id = CharField(primary_key=True)
    reader = CharField(index=True)
    service = CharField()
    starts = DateField()
    ends = DateField(index=True)
    price = IntegerField(default=0)
    paid = IntegerField(default=0)
    node = CharField(default="")


TABLES = [Partner, DiscountRule, Service, ServiceSession, Booking, Membership]


def _date(value: Any) -> date | None:
    return date.fromisoformat(value) if value else None


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _row(entity: str, d: dict[str, Any]) -> dict[str, Any]:
    """A change's data as the row of its table."""
    if entity == "partner":
        return {"id": d["id"], "name": d.get("name", "")}
    if entity == "discount":
        return {"id": int(d["id"]), "category": d["category"], "partner": d.get("partner", "*"),
                "kind": d["kind"], "service": d.get("service", "*"),
                "percent": int(d["percent"]), "valid_from": _date(d.get("valid_from")),
                "valid_to": _date(d.get("valid_to"))}
    if entity == "service":
        keys = ("name_kk", "name_ru", "name_en", "about_kk", "about_ru", "about_en")
        return {"id": d["id"], "kind": d["kind"], **{k: d.get(k) or "" for k in keys},
                "price": int(d.get("price", 0)), "term_days": d.get("term_days"),
                "capacity": int(d.get("capacity", 1)), "branch": d.get("branch"),
                "active": bool(d.get("active", True))}
    if entity == "session":
        return {"id": d["id"], "service": d["service"], "branch": d["branch"],
                "starts_at": _instant(d["starts_at"]), "ends_at": _instant(d["ends_at"]),
                "room": d.get("room", ""), "host": d.get("host", ""),
                "capacity": int(d.get("capacity", 1)), "status": d.get("status", "scheduled"),
                "seated": int(d.get("seated", 0)), "waiting": int(d.get("waiting", 0))}
    if entity == "booking":
        return {"id": d["id"], "session": d["session"], "reader": d["reader"],
                "node": d.get("node", ""), "key": d.get("key", ""),
                "status": d.get("status", "active"), "seat": d.get("seat", "seated"),
                "attendance": d.get("attendance"), "base": int(d.get("base", 0)),
                "percent": int(d.get("percent", 0)), "price": int(d.get("price", 0)),
                "paid": int(d.get("paid", 0)), "rule": d.get("rule", ""),
                "booked_at": _instant(d.get("booked_at"))}
    return {"id": d["id"], "reader": d["reader"], "service": d["service"],
            "starts": _date(d["starts"]), "ends": _date(d["ends"]),
            "price": int(d.get("price", 0)), "paid": int(d.get("paid", 0)),
            "node": d.get("node", "")}


MODELS: dict[str, Any] = {"partner": Partner, "discount": DiscountRule, "service": Service,
                          "session": ServiceSession, "booking": Booking,
                          "membership": Membership}


def pending_ids() -> set[str]:
    """Bookings and memberships named by events the cloud has not acknowledged yet."""
    out = set()
    for r in Outbox.select(Outbox.envelope).where(
            (Outbox.acked == False) & Outbox.type.in_(PENDING_EVENTS)):  # noqa: E712
        body = json.loads(r.envelope)["body"]
        out.add(body.get("booking_id") or body["membership_id"])
    return out


def apply_change(ch: dict[str, Any], pending: set[str]) -> None:
    """One change from the feed (inside the applier's transaction)."""
    model = MODELS[ch["entity"]]
    key: Any = int(ch["key"]) if ch["entity"] == "discount" else ch["key"]
    if ch["op"] == "delete":
        model.delete().where(model._meta.primary_key == key).execute()
        return
    row = _row(ch["entity"], ch["data"])
    if ch["entity"] == "booking" and row["id"] in pending:
        # The cloud decides the seat; what this node did and the cloud has not seen
        # yet (a cancellation, attendance, a payment) stays as done here.
        if Booking.get_or_none(Booking.id == row["id"]) is not None:
            Booking.update(seat=row["seat"], key=row["key"]).where(
                Booking.id == row["id"]).execute()
            return
    model.insert(**row).on_conflict_replace().execute()


def apply_snapshot(by_entity: dict[str, list[dict[str, Any]]], pending: set[str]) -> None:
    """The services' part of a snapshot: replace what only the cloud decides."""
    for entity in ("partner", "discount", "service", "session"):
        MODELS[entity].delete().execute()
    # What this node did and the cloud has not acknowledged survives the snapshot.
    keep = list(pending) or [""]
    Booking.delete().where(Booking.id.not_in(keep)).execute()
    Membership.delete().where(Membership.id.not_in(keep)).execute()
    for entity in ENTITIES:
        for d in by_entity.get(entity, []):
            apply_change({"entity": entity, "key": str(d["id"]), "op": "upsert", "data": d},
                         pending)
