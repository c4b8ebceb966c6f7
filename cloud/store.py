"""The central store: peewee models bound late to SQLite (default) or PostgreSQL by URL."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateField,
    DateTimeField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.db_url import connect as url_connect

# As on the edge: an ack goes out only after the commit is on disk, so the
# cloud's commit must survive a power cut (synchronous=FULL), and ingest
# transactions take the write lock up front (BEGIN IMMEDIATE) so two writers
# queue instead of deadlocking on a lock upgrade.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "cache_size": -64_000,  # 64 MB
    "busy_timeout": 30_000,
}
DEFAULT_URL = "sqlite:///kitap-cloud.db"

db: Any = DatabaseProxy()


class BaseModel(Model):
    """Every cloud table lives in the late-bound ``db``."""

    class Meta:
        database = db


class Node(BaseModel):
    """A machine or branch; events from a node not in this table are refused."""

    id = CharField(primary_key=True)
    kind = CharField()  # machine | branch
    name = TextField(default="")
    online = BooleanField(default=False)
    last_seen = DateTimeField(null=True)
    status = TextField(default="{}")  # the last retained status message, as JSON


class NodeCursor(BaseModel):
    """Highest contiguous seq applied per node; its row is the lock that orders a node."""

    node = CharField(primary_key=True)
    applied_seq = IntegerField(default=0)


class Event(BaseModel):
    """Every event applied (or quarantined), once: ``(node, seq)`` is unique."""

    id = AutoField()
    node = CharField()
    seq = IntegerField()
    type = CharField()
    hlc = CharField()
    ts = DateTimeField()
    body = TextField()
    applied_at = DateTimeField()
    quarantined = BooleanField(default=False)
    error = TextField(null=True)

    class Meta:
        indexes = ((("node", "seq"), True),)


class HeldEvent(BaseModel):
    """An event that arrived before its predecessors; applied when the gap fills."""

    node = CharField()
    seq = IntegerField()
    envelope = TextField()
    received_at = DateTimeField()

    class Meta:
        primary_key = CompositeKey("node", "seq")


class Title(BaseModel):
    """A catalogue record."""

    id = CharField(primary_key=True)
    title = TextField()
    author = TextField(default="")
    isbn = CharField(default="")
    language = CharField(default="")
    year = IntegerField(null=True)
    item_type = CharField(default="book")


class Copy(BaseModel):
    """Where one copy is: exactly one of in a slot, on a shelf, in a bin, on loan."""

    barcode = CharField(primary_key=True)
    title_id = CharField(null=True)
    home_node = CharField(null=True)
    status = CharField(index=True)  # in_slot | on_shelf | in_bin | on_loan
    location_node = CharField(null=True, index=True)
    slot = IntegerField(null=True)
    loan_id = CharField(null=True)
    # Where the copy was before the first fact any node reported about it: the
    # starting point when its facts must be replayed in hybrid-clock order.
    origin_status = CharField(null=True)
    origin_node = CharField(null=True)
    origin_slot = IntegerField(null=True)
    # The order key of the latest fact applied (see reconcile.fact_key).
    last_key = CharField(null=True)


class CopyFact(BaseModel):
    """Every physical fact about a copy, kept so late facts can be put in their place."""

    id = AutoField()
    copy = CharField()
    key = CharField()
    node = CharField()
    node_kind = CharField()
    seq = IntegerField()
    type = CharField()
    at = DateTimeField()
    body = TextField()

    class Meta:
        indexes = ((("copy", "key"), True),)


class Reader(BaseModel):
    """A reader card."""

    card = CharField(primary_key=True)
    name = TextField(default="")
    category = CharField(default="adult")
    pin_hash = CharField(default="")
    blocked_reason = TextField(null=True)
    fees_owed = IntegerField(default=0)  # tiyn
    registered_at = CharField(null=True)  # the node that issued the card, if a node did


class Hold(BaseModel):
    """A reservation: a title for a reader, to collect at a pickup node."""

    id = CharField(primary_key=True)
    title_id = CharField(index=True)
    reader = CharField(index=True)
    pickup_node = CharField(index=True)
    copy = CharField(null=True)          # the copy set aside, once one is
    status = CharField(default="waiting", index=True)  # waiting|ready|picked_up|expired|cancelled
    created_at = DateTimeField()
    expires = DateField(null=True)


class Policy(BaseModel):
    """A loan policy row; "*" matches any item type or reader category."""

    item_type = CharField()
    category = CharField()
    loan_days = IntegerField()
    max_items = IntegerField()
    renewals = IntegerField()

    class Meta:
        primary_key = CompositeKey("item_type", "category")


class Setting(BaseModel):
    """Network-wide configuration sent to every node (e.g. the offline cap)."""

    key = CharField(primary_key=True)
    value = TextField()


class Payment(BaseModel):
    """Money taken at a node."""

    id = CharField(primary_key=True)
    reader = CharField(index=True)
    node = CharField()
    amount = IntegerField()
    kind = CharField()
    description = TextField(default="")
    paid_at = DateTimeField()


class Change(BaseModel):
    """The change feed: every change a node must learn, with a global revision."""

    rev = AutoField()
    entity = CharField()
    key = CharField()
    scope = CharField(index=True)  # "*" or a node id
    op = CharField()               # upsert | delete
    data = TextField()
    at = DateTimeField()


class Loan(BaseModel):
    """A loan as the cloud knows it."""

    id = CharField(primary_key=True)
    copy = CharField(index=True)
    reader = CharField(index=True)
    node = CharField(index=True)
    checked_out_at = DateTimeField()
    due = DateField()
    returned_at = DateTimeField(null=True, index=True)
    returned_node = CharField(null=True)
    close_reason = CharField(null=True)  # returned | returned_unseen


class StaffException(BaseModel):
    """A repair reconciliation made, for staff to see and close."""

    id = AutoField()
    kind = CharField(index=True)
    node = CharField()
    seq = IntegerField()
    copy = CharField(null=True)
    detail = TextField()
    created_at = DateTimeField()
    closed_at = DateTimeField(null=True)
    resolution = TextField(null=True)


class RejectedMessage(BaseModel):
    """A message refused at the door, kept for inspection."""

    id = AutoField()
    topic = TextField()
    node = CharField(null=True)
    reason = TextField()
    payload = TextField()
    received_at = DateTimeField()


TABLES = [Node, NodeCursor, Event, HeldEvent, Title, Copy, CopyFact, Reader, Hold, Policy,
          Setting, Payment, Loan, StaffException, RejectedMessage, Change]


def connect(url: str = DEFAULT_URL) -> Any:
    """Bind the store to ``url`` (sqlite:///path or postgresql://...) and create tables."""
    if url.startswith("sqlite"):
        database = url_connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                               lock_type="IMMEDIATE")
    else:
        database = url_connect(url)
    db.initialize(database)
    db.connect(reuse_if_open=True)
    db.create_tables(TABLES)
    return database


def is_postgres() -> bool:
    """True when bound to PostgreSQL (row locks with FOR UPDATE)."""
    return type(db.obj).__name__.startswith("Postgres")


def utcnow() -> datetime:
    """Now, in UTC, aware."""
    return datetime.now(UTC)


def seed(*, nodes: list[dict[str, Any]], titles: list[dict[str, Any]],
         copies: list[dict[str, Any]], readers: list[dict[str, Any]]) -> None:
    """Load reference data in bulk (demo and tests); replaces rows with the same key."""
    copies = [{"origin_status": c.get("status"), "origin_node": c.get("location_node"),
               "origin_slot": c.get("slot"), **c} for c in copies]
    with db.atomic():
        for model, rows in ((Node, nodes), (Title, titles), (Copy, copies), (Reader, readers)):
            for i in range(0, len(rows), 500):
                model.insert_many(rows[i : i + 500]).on_conflict_replace().execute()
