"""The change feed: what the cloud records for the nodes, and what it answers them.

Every write that a node must learn of calls ``record`` in the same transaction,
so the log and the state never disagree. ``changes_for`` and ``snapshot``
answer a node's sync request (protocol/feed.py describes the wire).

Revisions must become visible in order: a node that read revision 11 must
never later miss a 10 that committed after it. SQLite has one writer at a
time, so that holds. On PostgreSQL several processes write at once, so the
log is appended under a transaction-scoped advisory lock: a writer takes it
just before its first change and keeps it until commit. Inside
``transaction()`` changes are kept aside and written last, so the lock is
held only for those inserts and the commit, and is always the last lock a
transaction takes (no deadlock with the row locks of ingest).
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from peewee import fn

from cloud import settings
from cloud import store as s
from protocol.feed import CHANGES_PER_MESSAGE, ENTITIES, SNAPSHOT_PART

logger = logging.getLogger(__name__)

ALL = "*"
# Copies a node holds: where a reader may find them or a technician must act.
HERE = ("in_slot", "on_shelf", "in_bin")
# The advisory lock that orders appends to the log on PostgreSQL (an arbitrary key).
FEED_LOCK = 0x6B69_7461_7001
# Rows deleted per statement when compacting: short statements, no parameter limits.
COMPACT_CHUNK = 900

_local = threading.local()


@contextmanager
def transaction() -> Iterator[None]:
    """``db.atomic()`` whose feed changes are appended last, under the feed lock."""
    pending = getattr(_local, "pending", None)
    if pending is not None:
        # Nested: the outer transaction writes them; a savepoint rolled back
        # takes its changes with it.
        mark = len(pending)
        try:
            with s.db.atomic():
                yield
        except BaseException:
            del pending[mark:]
            raise
        return
    _local.pending = []
    try:
        with s.db.atomic():
            yield
            _append(_local.pending)
    finally:
        _local.pending = None


def record(entity: str, key: str, op: str, data: dict[str, Any] | None = None,
           scope: str = ALL) -> None:
    """Append one change to the log (call inside the transaction that made it)."""
    row = {"entity": entity, "key": key, "scope": scope, "op": op,
           "data": json.dumps(data or {}, ensure_ascii=False, default=str), "at": s.utcnow()}
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append(row)
    else:
        _append([row])


def _append(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with s.db.atomic():
        if s.is_postgres():
            s.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (FEED_LOCK,))
        for i in range(0, len(rows), 500):
            s.Change.insert_many(rows[i:i + 500]).execute()


def current_rev() -> int:
    """The newest revision in the log (0 when empty)."""
    return int(s.Change.select(fn.MAX(s.Change.rev)).scalar() or 0)


def floor() -> int:
    """Nodes asking for changes from before this revision need a snapshot."""
    # Read from the table, not the settings cache: another process may just have
    # compacted, and a node answered from a compacted log would miss deletions.
    row = s.Setting.get_or_none(s.Setting.key == "cloud.feed_floor")
    return int(row.value) if row is not None else 0


def needs_snapshot(rev: int, at_least: int = 0) -> bool:
    """A node at ``rev`` gets a snapshot: it never synced, or the log no longer reaches back."""
    return rev == 0 or rev < max(at_least, floor())


def answer(node: str, rev: int, at_least: int = 0,
           entities: tuple[str, ...] = ENTITIES) -> tuple[str, list[dict[str, Any]]]:
    """What to send a node at ``rev``: ("changes", [fields]) or ("snapshot", [parts]).

    ``entities``: the kinds of change the node's build applies (its sync request
    says); the others are left out, its revision still moves past them.
    """
    if not needs_snapshot(rev, at_least):
        msg = changes_for(node, rev, entities)
        # Compaction may have committed while we read: then the rows may lack a deletion.
        if not needs_snapshot(rev, at_least):
            return "changes", [msg]
    return "snapshot", snapshot(node, entities)


# -- what a node is told about each entity ---------------------------------------

def reader_data(r: s.Reader, open_loans: int | None = None) -> dict[str, Any]:
    """A reader as every node holds it: enough to decide offline."""
    if open_loans is None:
        open_loans = s.Loan.select().where((s.Loan.reader == r.card)
                                           & s.Loan.returned_at.is_null()).count()
    return {"card": r.card, "name": r.name, "category": r.category, "pin_hash": r.pin_hash,
            "blocked_reason": r.blocked_reason, "blocked_by": r.blocked_by,
            "open_loans": open_loans, "fees_owed": r.fees_owed, "partner": r.partner}


def title_data(t: s.Title, waiting: int | None = None,
               next_hold: s.Hold | None | bool = True) -> dict[str, Any]:
    """A title, with how many readers wait for it (a renewal is refused then).

    And the first hold waiting for it with no copy yet (``holds.next_in_line``;
    ``True``: look it up): a copy of it returned anywhere goes to that hold's
    pickup node, so a node can tell its sorter so (edge/routing.py).
    """
    if waiting is None:
        waiting = s.Hold.select().where((s.Hold.title_id == t.id)
                                        & s.Hold.status.in_(["waiting", "ready"])).count()
    if next_hold is True:
        from cloud import holds  # holds records its changes here

        next_hold = holds.next_in_line(t.id)
    nxt = next_hold if isinstance(next_hold, s.Hold) else None
    return {"id": t.id, "title": t.title, "author": t.author, "isbn": t.isbn,
            "language": t.language, "item_type": t.item_type, "holds_waiting": waiting,
            "next_hold": nxt.id if nxt else None, "next_pickup": nxt.pickup_node if nxt else None}


def copy_data(c: s.Copy, floating: bool | None = None) -> dict[str, Any]:
    """A copy as the node where it sits holds it, with its return policy.

    ``floating`` None: look it up (``copies.floating``).
    """
    if floating is None:
        from cloud import copies  # copies records its changes here

        floating = copies.floating(c)
    return {"barcode": c.barcode, "title_id": c.title_id, "slot": c.slot,
            "home_node": c.home_node, "floating": floating}


def hold_data(h: s.Hold) -> dict[str, Any]:
    """A hold as its pickup node holds it."""
    return {"id": h.id, "title_id": h.title_id, "reader": h.reader, "copy": h.copy,
            "status": h.status, "expires": h.expires.isoformat() if h.expires else None}


def policy_data(p: s.Policy) -> dict[str, Any]:
    """A loan policy row."""
    return {"item_type": p.item_type, "category": p.category, "loan_days": p.loan_days,
            "max_items": p.max_items, "renewals": p.renewals}


def reader_changed(card: str) -> None:
    """Tell every node the reader's current figures."""
    r = s.Reader.get_or_none(s.Reader.card == card)
    if r is not None:
        record("reader", card, "upsert", reader_data(r))


def title_changed(title_id: str) -> None:
    """Tell every node the title's current record."""
    t = s.Title.get_or_none(s.Title.id == title_id)
    if t is not None:
        record("title", title_id, "upsert", title_data(t))


def copy_moved(barcode: str, old_node: str | None, new: s.Copy | None) -> None:
    """A copy left ``old_node`` and/or arrived somewhere (or changed slot)."""
    new_node = new.location_node if new is not None and new.status in HERE else None
    if old_node and old_node != new_node:
        # Where the cloud sends it, if it does, and for which hold (none: home): the node
        # may see it again (its sorter, after staff pulled it from the shelf).
        going = new.transit_to if new is not None and new.status == "in_transit" else None
        hold = s.Hold.get_or_none((s.Hold.copy == barcode) & (s.Hold.pickup_node == going)
                                  & s.Hold.status.in_(["waiting", "ready"])) if going else None
        record("copy", barcode, "delete", {"barcode": barcode, "transit_to": going,
                                           "transit_hold": hold.id if hold else None},
               scope=old_node)
    if new is not None and new_node:
        record("copy", barcode, "upsert", copy_data(new), scope=new_node)


def hold_changed(h: s.Hold) -> None:
    """Tell the pickup node about a hold, and every node how many wait for the title."""
    if h.status in ("waiting", "ready"):
        record("hold", h.id, "upsert", hold_data(h), scope=h.pickup_node)
    else:
        record("hold", h.id, "delete", {"id": h.id}, scope=h.pickup_node)
    title_changed(h.title_id)


# -- answering a node ------------------------------------------------------------

def changes_for(node: str, from_rev: int,
                entities: tuple[str, ...] = ENTITIES) -> dict[str, Any]:
    """The node's changes after ``from_rev``: fields of a "changes" message."""
    # The top is read first: a change committed while we read must not be
    # skipped by an answer that claims to reach past it.
    top = current_rev()
    where = (s.Change.rev > from_rev) & (s.Change.rev <= top) & s.Change.scope.in_([ALL, node])
    if len(entities) < len(ENTITIES):  # an older node: what it cannot apply is left out
        where &= s.Change.entity.in_(list(entities))
    rows = list(s.Change.select().where(where)
                .order_by(s.Change.rev).limit(CHANGES_PER_MESSAGE + 1))
    more = len(rows) > CHANGES_PER_MESSAGE
    rows = rows[:CHANGES_PER_MESSAGE]
    # Without more to come, the node is current up to the newest revision even
    # if the last changes were for other nodes.
    to_rev = rows[-1].rev if more else max(top, from_rev)
    return {"from_rev": from_rev, "to_rev": to_rev, "more": more,
            "changes": [_wire(c.rev, c.entity, c.key, c.op, json.loads(c.data)) for c in rows]}


def _wire(rev: int, entity: str, key: str, op: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"rev": rev, "entity": entity, "key": key, "op": op, "data": data}


def snapshot(node: str, entities: tuple[str, ...] = ENTITIES) -> list[dict[str, Any]]:
    """Everything ``node`` must know, as fields of "snapshot" messages, in parts.

    ``entities``: what the node's build applies (the services only if it names them).
    """
    # One consistent read: on PostgreSQL every statement of the transaction sees
    # the same snapshot (REPEATABLE READ), so the items are exactly those at rev.
    iso = {"isolation_level": "REPEATABLE READ"} if s.is_postgres() else {}
    with s.db.atomic(**iso):
        rev = current_rev()
        if rev == 0:
            # Revision 0 means "never synced" to a node: the log starts at 1.
            record("config", "feed_started", "upsert",
                   {"key": "feed_started", "value": s.utcnow().isoformat()})
            rev = current_rev()
        items: list[dict[str, Any]] = []
        items += [_wire(rev, "config", st.key, "upsert", {"key": st.key, "value": st.value})
                  for st in s.Setting.select() if not settings.is_cloud_only(st.key)]
        items += [_wire(rev, "policy", f"{p.item_type}/{p.category}", "upsert", policy_data(p))
                  for p in s.Policy.select()]
        # Counted once for all, not once per row: 500,000 readers must stay seconds.
        loans = dict(s.tuples(s.Loan.select(s.Loan.reader, fn.COUNT(s.Loan.id))
                              .where(s.Loan.returned_at.is_null()).group_by(s.Loan.reader)))
        waiting = dict(s.tuples(s.Hold.select(s.Hold.title_id, fn.COUNT(s.Hold.id))
                                .where(s.Hold.status.in_(["waiting", "ready"]))
                                .group_by(s.Hold.title_id)))
        items += [_wire(rev, "reader", r.card, "upsert", reader_data(r, loans.get(r.card, 0)))
                  for r in s.Reader.select()]
        from cloud import copies, holds  # they record their changes here

        heads = holds.heads_of_queues()
        items += [_wire(rev, "title", t.id, "upsert",
                        title_data(t, waiting.get(t.id, 0), heads.get(t.id)))
                  for t in s.Title.select()]
        collections = copies.collections()
        items += [_wire(rev, "copy", c.barcode, "upsert",
                        copy_data(c, copies.floating(c, collections))) for c in
                  s.Copy.select().where((s.Copy.location_node == node)
                                        & s.Copy.status.in_(HERE))]
        items += [_wire(rev, "hold", h.id, "upsert", hold_data(h)) for h in
                  s.Hold.select().where((s.Hold.pickup_node == node)
                                        & s.Hold.status.in_(["waiting", "ready"]))]
        from cloud import services  # services import this module

        items += [i for i in services.snapshot_items(rev) if i["entity"] in entities]
    snap = uuid.uuid4().hex[:12]
    parts = max(1, -(-len(items) // SNAPSHOT_PART))
    return [{"snapshot": snap, "rev": rev, "part": i, "parts": parts,
             "changes": items[i * SNAPSHOT_PART:(i + 1) * SNAPSHOT_PART]} for i in range(parts)]


# -- compaction -------------------------------------------------------------------

def compact(retention: timedelta | None = None, now: datetime | None = None) -> tuple[int, int]:
    """Drop superseded changes and old deletions older than ``retention``; (dropped, floor).

    A change is superseded when a later one exists for the same entity, key and
    scope: a node that skips it still ends in the same state. A deletion
    (a tombstone) is dropped too once it is old. Nodes asking from before the
    newest dropped revision get a snapshot: the floor is raised to it.
    """
    if retention is None:
        retention = timedelta(days=settings.get_int("cloud.feed_retention_days"))
    cutoff = (now or s.utcnow()) - retention
    # The newest change always stays: SQLite would hand its revision out again.
    newest = current_rev()
    latest = (s.Change.select(s.Change.entity, s.Change.key, s.Change.scope,
                              fn.MAX(s.Change.rev).alias("top"))
              .group_by(s.Change.entity, s.Change.key, s.Change.scope).alias("latest"))
    doomed = [r for (r,) in s.tuples(s.Change.select(s.Change.rev).join(
        latest, on=((s.Change.entity == latest.c.entity) & (s.Change.key == latest.c.key)
                    & (s.Change.scope == latest.c.scope)))
        .where((s.Change.at < cutoff) & (s.Change.rev < newest)
               & ((s.Change.rev < latest.c.top) | (s.Change.op == "delete")))
        .order_by(s.Change.rev))]
    new_floor = floor()
    if doomed:
        with s.db.atomic():
            for i in range(0, len(doomed), COMPACT_CHUNK):
                s.Change.delete().where(
                    s.Change.rev.in_(doomed[i:i + COMPACT_CHUNK])).execute()
            new_floor = max(new_floor, doomed[-1])
            settings.put("cloud.feed_floor", str(new_floor))
        logger.info("feed compacted: %d changes dropped, floor now %d", len(doomed), new_floor)
    return len(doomed), new_floor
