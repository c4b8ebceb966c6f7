"""The central store: peewee models bound late to SQLite (default) or PostgreSQL by URL."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateField,
    DateTimeField,
    FloatField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    TextField,
)
from playhouse.db_url import connect as url_connect
from playhouse.migrate import SchemaMigrator, migrate

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
# Held while creating tables, so two cloud processes starting on one fresh
# PostgreSQL database do not race on CREATE TABLE (an arbitrary, fixed key).
SCHEMA_LOCK = 0x6B69_7461_7000

db: Any = DatabaseProxy()


class UTCDateTimeField(DateTimeField):
    """An instant, always aware and in UTC: timestamptz on PostgreSQL, ISO text on SQLite.

    The text form has a fixed width (microseconds always written), so SQLite
    compares instants correctly as strings.
    """

    field_type = "TIMESTAMPTZ"

    def db_value(self, value: Any) -> Any:
        """Aware UTC for PostgreSQL, fixed-width ISO text for SQLite."""
        if value is None or not isinstance(value, datetime):
            return value
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if is_postgres():
            return value
        return value.isoformat(sep=" ", timespec="microseconds")

    def python_value(self, value: Any) -> Any:
        """An aware datetime in UTC."""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


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
    last_seen = UTCDateTimeField(null=True)
    status = TextField(default="{}")  # the last retained status message, as JSON
    # The node's wall clock minus the cloud's, as last measured (seconds), and
    # since when it is flagged as wrong (cloud/clocks.py); None when it agrees.
    clock_offset_s = FloatField(null=True)
    clock_flagged_at = UTCDateTimeField(null=True)
    clock_note = TextField(null=True)


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
    ts = UTCDateTimeField()  # the node's own clock, as it said (see Loan.due_node)
    body = TextField()
    applied_at = UTCDateTimeField()
    quarantined = BooleanField(default=False)
    error = TextField(null=True)

    class Meta:
        indexes = ((("node", "seq"), True),)


class HeldEvent(BaseModel):
    """An event that arrived before its predecessors; applied when the gap fills."""

    node = CharField()
    seq = IntegerField()
    envelope = TextField()
    received_at = UTCDateTimeField()

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


class Collection(BaseModel):
    """A group of copies with one return policy (Copy.collection names it).

    A floating copy stays where it is returned; a fixed one is sent home
    (in transit). Copies with no collection follow ``cloud.floating_default``.
    """

    id = CharField(primary_key=True)
    name = TextField(default="")
    floating = BooleanField(default=True)


class Copy(BaseModel):
    """Where one copy is: exactly one place (reconcile.PLACES)."""

    barcode = CharField(primary_key=True)
    title_id = CharField(null=True, index=True)
    home_node = CharField(null=True)
    collection = CharField(null=True)
    # in_slot | on_shelf | in_bin | on_loan | in_transit | missing | lost | withdrawn
    status = CharField(index=True)
    location_node = CharField(null=True, index=True)
    slot = IntegerField(null=True)
    loan_id = CharField(null=True)
    transit_to = CharField(null=True)  # where a copy in transit is going
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
    at = UTCDateTimeField()
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
    blocked_at = UTCDateTimeField(null=True)
    blocked_by = CharField(null=True)  # staff | auto (a threshold; lifted by itself)
    # What the reader owes, in tiyn: always the sum of their LedgerEntry rows.
    fees_owed = BigIntegerField(default=0)
    registered_at = CharField(null=True)  # the node that issued the card, if a node did
    contact = TextField(null=True)  # where notices go (e-mail or phone), if known
    partner = CharField(null=True)  # the partner organisation (a supported client, its staff)


class Hold(BaseModel):
    """A reservation: a title for a reader, to collect at a pickup node."""

    id = CharField(primary_key=True)
    title_id = CharField(index=True)
    reader = CharField(index=True)
    pickup_node = CharField(index=True)
    copy = CharField(null=True)          # the copy set aside, once one is
    status = CharField(default="waiting", index=True)  # waiting|ready|picked_up|expired|cancelled
    created_at = UTCDateTimeField()
    ready_at = UTCDateTimeField(null=True)
    expires = DateField(null=True)  # the last day to collect, once ready


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
    """Configuration: sent to every node, except keys under ``cloud.`` (cloud/settings.py)."""

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
    paid_at = UTCDateTimeField()


class Change(BaseModel):
    """The change feed: every change a node must learn, with a global revision."""

    rev = AutoField()
    entity = CharField()
    key = CharField()
    scope = CharField(index=True)  # "*" or a node id
    op = CharField()               # upsert | delete
    data = TextField()
    at = UTCDateTimeField()

    class Meta:
        # Compaction finds the latest change of each (entity, key, scope).
        indexes = ((("entity", "key", "scope"), False),)


class Loan(BaseModel):
    """A loan as the cloud knows it."""

    id = CharField(primary_key=True)
    copy = CharField(index=True)
    reader = CharField(index=True)
    node = CharField(index=True)
    checked_out_at = UTCDateTimeField()
    due = DateField(index=True)
    due_node = DateField(null=True)  # the due date the node computed, when its clock was wrong
    returned_at = UTCDateTimeField(null=True, index=True)  # when it was closed, for any reason
    returned_node = CharField(null=True)
    close_reason = CharField(null=True)  # returned | returned_unseen | lost
    # True once the loan is closed and its fines are in the ledger (cloud/debts.py);
    # reset when a late fact rewrites the loan.
    fine_settled = BooleanField(default=False, index=True)


class StaffException(BaseModel):
    """A repair reconciliation made, for staff to see and close."""

    id = AutoField()
    kind = CharField(index=True)
    node = CharField()
    seq = IntegerField()
    copy = CharField(null=True)
    detail = TextField()
    created_at = UTCDateTimeField()
    closed_at = UTCDateTimeField(null=True)
    resolution = TextField(null=True)
    # Derived from a copy's facts: a replay keeps, adds or closes these (and only these).
    derived = BooleanField(default=False)
    # The reader and loan it is about, when it is about one (cloud/flags.py judges
    # these again when events arrive late).
    reader = CharField(null=True, index=True)
    loan = CharField(null=True)


class RejectedMessage(BaseModel):
    """A message refused at the door, kept for inspection."""

    id = AutoField()
    topic = TextField()
    node = CharField(null=True)
    reason = TextField()
    payload = TextField()
    received_at = UTCDateTimeField()


class Transfer(BaseModel):
    """A copy to be carried between nodes: home after a return elsewhere, or to a pickup."""

    id = AutoField()
    copy = CharField(index=True)
    from_node = CharField(null=True, index=True)
    to_node = CharField(index=True)
    reason = CharField()  # home | hold
    hold = CharField(null=True)
    status = CharField(default="open", index=True)  # open | arrived | cancelled
    created_at = UTCDateTimeField()
    closed_at = UTCDateTimeField(null=True)
    note = TextField(default="")


class LedgerEntry(BaseModel):
    """One line of a reader's account, in tiyn: charges positive, payments and waivers negative."""

    id = AutoField()
    reader = CharField(index=True)
    kind = CharField()  # opening | fine | replacement | payment | waiver
    amount = BigIntegerField()
    loan = CharField(null=True, index=True)
    node = CharField(null=True)
    ref = CharField(null=True, unique=True)  # makes a payment count once
    note = TextField(default="")
    at = UTCDateTimeField()


class FinePolicy(BaseModel):
    """Fines for one item type ("*" for any); no row means the library charges none."""

    item_type = CharField(primary_key=True)
    per_day = IntegerField(default=0)        # tiyn per day overdue
    cap = IntegerField(null=True)            # most a loan's fine can reach; None: no cap
    grace_days = IntegerField(default=0)     # days overdue that cost nothing
    replacement = IntegerField(default=0)    # charged when the copy is declared lost


class Discount(BaseModel):
    """A reader category's discount on a kind of charge (cloud/debts.py has the defaults)."""

    category = CharField()
    kind = CharField()  # membership | service | fine | replacement | "*"
    percent = IntegerField()

    class Meta:
        primary_key = CompositeKey("category", "kind")


class Notice(BaseModel):
    """A message to a reader, queued until a sender delivers it (cloud/notices.py)."""

    id = CharField(primary_key=True)  # kind/what/when: the same notice is queued once
    reader = CharField(index=True)
    kind = CharField()  # due_soon | overdue | hold_ready | blocked
    subject = TextField()
    body = TextField()
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(null=True, index=True)
    claimed_at = UTCDateTimeField(null=True)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)


TABLES = [Node, NodeCursor, Event, HeldEvent, Title, Collection, Copy, CopyFact, Reader, Hold,
          Policy, Setting, Payment, Loan, StaffException, RejectedMessage, Change, Transfer,
          LedgerEntry, FinePolicy, Discount, Notice]


# -- the ops console and the readers' catalogue (cloud/console/, cloud/catalogue.py) ------

class StaffUser(BaseModel):
    """A console login: administrator, operator, or branch staff of one branch."""

    username = CharField(primary_key=True)
    name = TextField(default="")
    password_hash = CharField()  # werkzeug scrypt
    role = CharField()  # administrator | operator | branch_staff (cloud/accounts.py)
    branch = CharField(null=True)  # the node a branch_staff account acts for
    created_at = UTCDateTimeField()
    last_login_at = UTCDateTimeField(null=True)
    disabled = BooleanField(default=False)


class AuditEntry(BaseModel):
    """One staff (or reader) action taken through the console or the catalogue."""

    id = AutoField()
    at = UTCDateTimeField(index=True)
    actor = CharField(index=True)  # a staff username, "reader:CARD" or "cli"
    role = CharField(default="")
    action = CharField(index=True)
    target = CharField(index=True, default="")  # e.g. "reader:R0001", "exception:17"
    node = CharField(null=True)
    detail = TextField(default="")
    ip = CharField(null=True)


class LoginThrottle(BaseModel):
    """Failed logins per key ("staff:NAME", "reader:CARD"), shared by every cloud process."""

    key = CharField(primary_key=True)
    failures = IntegerField(default=0)
    locked_until = UTCDateTimeField(null=True)


class PreRegistration(BaseModel):
    """An online application to join the readers' club, completed when a branch issues a card."""

    id = CharField(primary_key=True)  # a short code the reader brings to the branch
    name = TextField()
    contact = TextField(default="")
    category = CharField(default="adult")
    birth_year = IntegerField(null=True)
    branch = CharField(index=True)
    pin_hash = CharField(default="")
    lang = CharField(default="kk")
    created_at = UTCDateTimeField()
    status = CharField(default="pending", index=True)  # pending | completed | cancelled
    card = CharField(null=True)
    completed_by = CharField(null=True)
    completed_at = UTCDateTimeField(null=True)


class TitleSearch(BaseModel):
    """A title folded for search across case and script (cloud/catalogue_search.py)."""

    title_id = CharField(primary_key=True)
    skeleton = TextField()
    isbn = CharField(default="", index=True)
    source = TextField(default="")  # title|author|isbn as indexed: a change means reindex


class LoanExtension(BaseModel):
    """A due date moved in the cloud: a reader's online renewal or a staff extension."""

    id = AutoField()
    loan = CharField(index=True)
    reader = CharField(index=True)
    kind = CharField()  # renew | extend
    by = CharField()
    old_due = DateField()
    new_due = DateField()
    at = UTCDateTimeField()


class MarcImport(BaseModel):
    """A MARC 21 import and how far it has got (the console shows its progress)."""

    id = AutoField()
    filename = TextField()
    started_by = CharField(default="")
    status = CharField(default="running")  # running | done | failed
    started_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    finished_at = UTCDateTimeField(null=True)
    total_bytes = BigIntegerField(default=0)
    done_bytes = BigIntegerField(default=0)
    records = IntegerField(default=0)
    created = IntegerField(default=0)
    updated = IntegerField(default=0)
    errors = IntegerField(default=0)
    message = TextField(default="")


TABLES += [StaffUser, AuditEntry, LoginThrottle, PreRegistration, TitleSearch, LoanExtension,
           MarcImport]


def connect(url: str = DEFAULT_URL) -> Any:
    """Bind the store to ``url`` (sqlite:///path or postgresql://...), create or extend tables."""
    if url.startswith("sqlite"):
        database = url_connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                               lock_type="IMMEDIATE")
    else:
        database = url_connect(url)
    db.initialize(database)
    db.connect(reuse_if_open=True)
    from cloud import service_models, settings  # settings reads this store

    del service_models  # importing it adds the services' tables to TABLES

    settings.clear_cache()
    with db.atomic():
        if is_postgres():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        db.create_tables(TABLES)
        _add_missing_columns()
    return database


def _add_missing_columns() -> None:
    """Add the columns a newer build defines to tables an older build created."""
    migrator = SchemaMigrator.from_database(db.obj)
    ops = []
    for model in TABLES:
        table = model._meta.table_name
        have = {c.name for c in db.get_columns(table)}
        for f in model._meta.sorted_fields:
            if f.column_name not in have and (f.null or f.default is not None):
                ops.append(migrator.add_column(table, f.column_name, f))
    if ops:
        migrate(*ops)


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples (typed: peewee's stubs type rows as models)."""
    return list(query.tuples())


def is_postgres() -> bool:
    """True when bound to PostgreSQL (row locks with FOR UPDATE, advisory locks)."""
    return isinstance(db.obj, PostgresqlDatabase)


def is_lock_error(exc: Exception) -> bool:
    """True if a statement gave up waiting for a lock (SQLite busy, a PostgreSQL timeout)."""
    text = str(exc).lower()
    return any(w in text for w in ("locked", "busy", "lock timeout", "could not obtain lock",
                                   "canceling statement"))


def upsert(model: Any, rows: list[dict[str, Any]], keys: list[Any]) -> None:
    """Insert ``rows``, replacing the other columns of rows with the same ``keys``.

    ON CONFLICT ... DO UPDATE: the same statement on SQLite and PostgreSQL.
    """
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        names = {k for row in chunk for k in row}
        # Compared by name: ``field in keys`` would use peewee's ``==``, which builds an
        # expression (always truthy), so no column would ever be updated.
        key_names = {k.name for k in keys}
        preserve = [f for f in model._meta.sorted_fields
                    if f.name in names and f.name not in key_names]
        query = model.insert_many(chunk)
        if preserve:
            query = query.on_conflict(conflict_target=keys, preserve=preserve)
        else:
            query = query.on_conflict_ignore()
        query.execute()


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
            # insert_many takes its columns from the first row: give every row all of them.
            names = sorted({k for row in rows for k in row})
            full = [{k: row.get(k, _default(model, k)) for k in names} for row in rows]
            upsert(model, full, [model._meta.primary_key])
        # A reader loaded with a debt starts their ledger with it.
        now = utcnow()
        for r in readers:
            if r.get("fees_owed") and not LedgerEntry.select().where(
                    LedgerEntry.reader == r["card"]).exists():
                LedgerEntry.create(reader=r["card"], kind="opening", amount=r["fees_owed"],
                                   note="balance when loaded", at=now)


def _default(model: Any, name: str) -> Any:
    field = model._meta.fields[name]
    return field.default() if callable(field.default) else field.default
