"""Applying the cloud's change feed to the node's store: in order, once, atomically.

A "changes" message is applied only if it starts at this node's revision
(``from_rev``), in one transaction that also moves the revision, so a duplicate
or stale message changes nothing and a gap cannot happen. A snapshot is applied
when all its parts are in. Local truth wins over the cloud's older picture: a
copy named by an event the cloud has not yet acknowledged keeps its local state,
and so does the block of a card this node blocked or unblocked itself.
"""
from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

from edge import service_records
from edge.store import Copy, EdgeStore, Hold, Loan, Meta, Outbox, Policy, Reader, Title, db, utcnow
from protocol.feed import BASE_ENTITIES, ENTITIES

logger = logging.getLogger(__name__)

# Events by which this node itself changed a reader's block (edge/sip2/patron.py).
BLOCK_EVENTS = ("reader.blocked", "reader.unblocked")
# Snapshot parts kept while waiting for the rest; an abandoned snapshot (the
# link dropped half-way) is dropped when a newer one starts.
MAX_PENDING_SNAPSHOTS = 2
BULK = 500


class FeedApplier:
    """Keeps one node's store current from the cloud's feed."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self._parts: dict[str, dict[int, list[dict[str, Any]]]] = {}
        self.applied_changes = 0
        self.snapshots = 0

    def rev(self) -> int:
        """The revision this node's knowledge is at (0: never bootstrapped)."""
        return int(self.store._meta("feed_rev", "0") or 0)

    def asking_rev(self) -> int:
        """The revision to ask the cloud from: 0 (a snapshot) when this build applies
        kinds of change that the node's knowledge was built without (an upgrade)."""
        known = self.store._meta("feed_entities")
        had = set(known.split(",")) if known else set(BASE_ENTITIES)
        return 0 if set(ENTITIES) - had else self.rev()

    def apply_changes(self, msg: dict[str, Any]) -> bool:
        """Apply a "changes" message if it starts at our revision; True if applied."""
        with self.store._lock, db.atomic():
            if msg["from_rev"] != self.rev() or self.rev() == 0:
                return False
            protected, told = self._protected(), self._blocks_told()
            pending = service_records.pending_ids()
            now = utcnow()
            for ch in msg["changes"]:
                if ch["entity"] in service_records.ENTITIES:
                    service_records.apply_change(ch, pending)
                else:
                    self._apply(ch, protected, now, told)
            self._set_rev(msg["to_rev"], now)
        self.applied_changes += len(msg["changes"])
        return True

    def add_snapshot_part(self, msg: dict[str, Any]) -> bool:
        """Keep a snapshot part; True when the snapshot was complete and applied."""
        parts = self._parts.setdefault(msg["snapshot"], {})
        parts[msg["part"]] = msg["changes"]
        if len(self._parts) > MAX_PENDING_SNAPSHOTS:
            for old in list(self._parts)[:-MAX_PENDING_SNAPSHOTS]:
                del self._parts[old]
        if len(parts) < msg["parts"]:
            return False
        del self._parts[msg["snapshot"]]
        items = [ch for i in range(msg["parts"]) for ch in parts[i]]
        self._apply_snapshot(items, msg["rev"])
        return True

    # -- internals ------------------------------------------------------------------

    def _set_rev(self, rev: int, now: datetime) -> None:
        self.store._set_meta("feed_rev", str(rev))
        self.store._set_meta("feed_at", now.isoformat())

    @staticmethod
    def _blocks_told() -> set[str]:
        # Cards this node blocked or unblocked (a self-check's 01 / 25) in events the
        # cloud has not acknowledged: the feed's older word on their block waits.
        rows = Outbox.select(Outbox.envelope).where(
            (Outbox.acked == False) & Outbox.type.in_(BLOCK_EVENTS))  # noqa: E712
        return {json.loads(r.envelope)["body"]["card"] for r in rows}

    @staticmethod
    def _protected() -> set[str]:
        # Copies named by events the cloud has not acknowledged, or lent here and
        # not back: what this node saw happen is newer than what the cloud says.
        pending = {r.copy for r in Outbox.select(Outbox.copy).where(
            (Outbox.acked == False) & Outbox.copy.is_null(False))}  # noqa: E712
        lent = {r.copy for r in Loan.select(Loan.copy).where(Loan.returned_at.is_null())}
        return pending | lent

    def _apply_snapshot(self, items: list[dict[str, Any]], rev: int) -> None:
        now = utcnow()
        with self.store._lock, db.atomic():
            protected = self._protected()
            by: dict[str, list[dict[str, Any]]] = {}
            for ch in items:
                by.setdefault(ch["entity"], []).append(ch["data"])
            # Replace what only the cloud decides; keep readers this node issued.
            Title.delete().execute()
            Policy.delete().execute()
            Hold.delete().execute()
            Meta.delete().where(Meta.key.startswith("config.")).execute()
            _bulk(Title, [_title(d) for d in by.get("title", [])])
            _bulk(Policy, [_policy(d) for d in by.get("policy", [])])
            _bulk(Hold, [_hold(d) for d in by.get("hold", [])])
            for d in by.get("config", []):
                self.store._set_meta(f"config.{d['key']}", str(d["value"]))
            told = self._blocks_told()
            readers = [_reader(d, now) for d in by.get("reader", []) if d["card"] not in told]
            readers_told = [_reader(d, now, keep_block=True) for d in by.get("reader", [])
                            if d["card"] in told]
            for rows in (readers, readers_told):
                for i in range(0, len(rows), BULK):
                    chunk = rows[i:i + BULK]
                    Reader.insert_many(chunk).on_conflict(
                        conflict_target=[Reader.card],
                        preserve=[getattr(Reader, k) for k in chunk[0] if k != "card"],
                    ).execute()
            # Everything here that the snapshot does not name has left, except what
            # an unacknowledged event of ours names (a subquery: no parameter limit).
            pending = Outbox.select(Outbox.copy).where(
                (Outbox.acked == False) & Outbox.copy.is_null(False))  # noqa: E712
            Copy.update(here=False, slot=None).where(
                (Copy.here == True) & Copy.barcode.not_in(pending)).execute()  # noqa: E712
            _bulk(Copy, [_copy(d) for d in by.get("copy", []) if d["barcode"] not in protected],
                  replace=True)
            service_records.apply_snapshot(by, service_records.pending_ids())
            self._set_rev(rev, now)
            self.store._set_meta("feed_entities", ",".join(ENTITIES))
        self.snapshots += 1
        logger.info("snapshot at rev %d applied: %d items", rev, len(items))

    def _apply(self, ch: dict[str, Any], protected: set[str], now: datetime,
               blocks_told: set[str]) -> None:
        entity, op, d = ch["entity"], ch["op"], ch["data"]
        if entity == "reader":
            if op == "delete":
                Reader.delete().where(Reader.card == ch["key"]).execute()
            else:
                row = _reader(d, now, keep_block=ch["key"] in blocks_told)
                Reader.insert(**row).on_conflict(
                    conflict_target=[Reader.card],
                    preserve=[getattr(Reader, k) for k in row if k != "card"]).execute()
        elif entity == "title":
            if op == "delete":
                Title.delete().where(Title.id == ch["key"]).execute()
            else:
                Title.insert(**_title(d)).on_conflict_replace().execute()
        elif entity == "copy":
            if ch["key"] in protected:
                return
            if op == "delete":
                # It left; "transit_to" says where the cloud is sending it, if anywhere,
                # and "transit_hold" for which hold there (none: home).
                Copy.update(here=False, slot=None, transit_to=d.get("transit_to"),
                            transit_hold=d.get("transit_hold")).where(
                    Copy.barcode == ch["key"]).execute()
            else:
                Copy.insert(**_copy(d)).on_conflict_replace().execute()
        elif entity == "hold":
            if op == "delete":
                Hold.delete().where(Hold.id == ch["key"]).execute()
            else:
                Hold.insert(**_hold(d)).on_conflict_replace().execute()
        elif entity == "policy":
            item_type, _, category = ch["key"].partition("/")
            if op == "delete":
                Policy.delete().where((Policy.item_type == item_type)
                                      & (Policy.category == category)).execute()
            else:
                Policy.insert(**_policy(d)).on_conflict_replace().execute()
        elif entity == "config":
            self.store._set_meta(f"config.{ch['key']}", str(d.get("value", "")))


def _bulk(model: Any, rows: list[dict[str, Any]], replace: bool = False) -> None:
    for i in range(0, len(rows), BULK):
        q = model.insert_many(rows[i:i + BULK])
        (q.on_conflict_replace() if replace else q).execute()


def _reader(d: dict[str, Any], now: datetime, keep_block: bool = False) -> dict[str, Any]:
    """A reader row from the feed; ``keep_block``: leave this node's own word on the block."""
    row = {"card": d["card"], "name": d.get("name", ""), "category": d.get("category", "adult"),
           "partner": d.get("partner"),
           "pin_hash": d.get("pin_hash") or "", "blocked_reason": d.get("blocked_reason"),
           "blocked_by": d.get("blocked_by"), "open_loans": int(d.get("open_loans", 0)),
           "fees_owed": int(d.get("fees_owed", 0)), "synced_at": now}
    if keep_block:
        del row["blocked_reason"], row["blocked_by"]
    return row


def _title(d: dict[str, Any]) -> dict[str, Any]:
    return {"id": d["id"], "title": d.get("title", ""), "author": d.get("author", ""),
            "isbn": d.get("isbn", ""), "language": d.get("language", ""),
            "item_type": d.get("item_type", "book"),
            "holds_waiting": int(d.get("holds_waiting", 0)),
            "next_hold": d.get("next_hold"), "next_pickup": d.get("next_pickup")}


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    floating = d.get("floating")
    return {"barcode": d["barcode"], "title_id": d.get("title_id"), "slot": d.get("slot"),
            "here": True, "on_loan": False, "home_node": d.get("home_node"),
            "floating": None if floating is None else bool(floating), "transit_to": None,
            "transit_hold": None}


def _hold(d: dict[str, Any]) -> dict[str, Any]:
    exp = d.get("expires")
    return {"id": d["id"], "title_id": d["title_id"], "reader": d["reader"],
            "copy": d.get("copy"), "status": d.get("status", "waiting"),
            "expires": date.fromisoformat(exp) if exp else None}


def _policy(d: dict[str, Any]) -> dict[str, Any]:
    return {"item_type": d["item_type"], "category": d["category"],
            "loan_days": int(d["loan_days"]), "max_items": int(d["max_items"]),
            "renewals": int(d["renewals"])}
