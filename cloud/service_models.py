"""The services' tables in the central store: partners, discount rules, services, sessions,
bookings and memberships (cloud/services.py applies them; cloud/store.py creates them).

Importing this module adds its tables to ``store.TABLES``, so ``store.connect``
creates (and extends) them with the rest.
"""
from __future__ import annotations

from peewee import AutoField, BooleanField, CharField, DateField, IntegerField, TextField

from cloud.store import TABLES, BaseModel, UTCDateTimeField


class Partner(BaseModel):
    """A partner organisation: its supported clients and its staff get discounts."""

    id = CharField(primary_key=True)  # a short code, e.g. "p-umit"
    name = TextField()
    note = TextField(default="")
    created_at = UTCDateTimeField()


class DiscountRule(BaseModel):
    """A discount: who (category, partner), on what (kind, service), when, how much.

    "*" means any; ``kind`` is one of ``edge.pricing.TARGETS``. Rows here come
    on top of ``edge.pricing.DEFAULT_RULES`` (an undated row with the same who
    and what replaces a default).
    """

    id = AutoField()
    category = CharField()
    partner = CharField(default="*")
    kind = CharField()
    service = CharField(default="*")
    percent = IntegerField()
    valid_from = DateField(null=True)
    valid_to = DateField(null=True)
    note = TextField(default="")
    created_by = CharField(default="")
    created_at = UTCDateTimeField()


class Service(BaseModel):
    """Something the library offers besides loans: a membership, counselling, a workshop."""

    id = CharField(primary_key=True)  # a short code, e.g. "workshop-business"
    kind = CharField()  # membership | counselling | workshop | event (edge.pricing.KINDS)
    name_kk = TextField()
    name_ru = TextField()
    name_en = TextField()
    about_kk = TextField(default="")
    about_ru = TextField(default="")
    about_en = TextField(default="")
    price = IntegerField(default=0)  # the base price in tiyn; 0 is free
    term_days = IntegerField(null=True)  # a membership's term
    capacity = IntegerField(default=1)  # seats a new session gets unless told otherwise
    branch = CharField(null=True)  # where it is held; None: at every branch
    active = BooleanField(default=True)  # offered now (old bookings keep their service)
    created_at = UTCDateTimeField()


class ServiceSession(BaseModel):
    """One occasion of a service: a counselling slot, a workshop's evening, with its seats."""

    id = CharField(primary_key=True)
    service = CharField(index=True)
    branch = CharField(index=True)
    starts_at = UTCDateTimeField(index=True)
    ends_at = UTCDateTimeField()
    room = TextField(default="")
    host = TextField(default="")  # the counsellor, the teacher
    capacity = IntegerField()
    status = CharField(default="scheduled")  # scheduled | cancelled
    created_at = UTCDateTimeField()


class Booking(BaseModel):
    """A reader's place at a session; the cloud decides who holds the seats (``seat``)."""

    id = CharField(primary_key=True)
    session = CharField(index=True)
    reader = CharField(index=True)
    node = CharField()  # where it was booked: a node, or "cloud" (online)
    seq = IntegerField(default=0)
    # The order that decides the seats: hlc|node|seq (cloud/reconcile.py fact_key).
    key = CharField(index=True)
    status = CharField(default="active", index=True)  # active | cancelled
    seat = CharField(default="waitlisted")  # seated | waitlisted
    told = CharField()  # what the reader was last told: seated | waitlisted
    promised = BooleanField(default=False)  # ever told "you have a seat"
    attendance = CharField(null=True)  # attended | no_show
    base = IntegerField(default=0)
    percent = IntegerField(default=0)
    price = IntegerField(default=0)
    paid = IntegerField(default=0)  # taken, less what was refunded (tiyn)
    rule = TextField(default="")
    category = CharField(default="")  # the reader's category when it was booked
    booked_at = UTCDateTimeField()
    cancelled_at = UTCDateTimeField(null=True)
    cancel_reason = TextField(default="")
    marked_at = UTCDateTimeField(null=True)
    marked_by = CharField(null=True)
    exception = IntegerField(null=True)  # the open "lost its seat" exception, if any


class Membership(BaseModel):
    """A reader's library membership for a term (both days included)."""

    id = CharField(primary_key=True)
    reader = CharField(index=True)
    service = CharField()
    starts = DateField()
    ends = DateField(index=True)
    base = IntegerField(default=0)
    percent = IntegerField(default=0)
    price = IntegerField(default=0)
    paid = IntegerField(default=0)
    rule = TextField(default="")
    category = CharField(default="")
    node = CharField()
    sold_at = UTCDateTimeField()
    renewal_of = CharField(null=True)


SERVICE_TABLES = [Partner, DiscountRule, Service, ServiceSession, Booking, Membership]
TABLES.extend(m for m in SERVICE_TABLES if m not in TABLES)
