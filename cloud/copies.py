"""Where copies are: facts about a copy applied in hybrid-clock order, late ones by replay.

Every physical fact (a node's checkout, return, load, removal, slot scan) and
every decision the cloud makes about a copy (send it to a pickup node, declare
it lost, withdraw it) is kept as a ``CopyFact`` keyed ``hlc|node|seq``. A fact
newer than the copy's ``last_key`` is applied at once (``reconcile.step``); an
older one makes the cloud replay the copy's facts in key order from its
``origin_*`` state (``reconcile.replay``), rewriting its place, its loans and
the staff exceptions derived from them. Runs inside the caller's transaction.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from cloud import feed, reconcile, settings
from cloud import store as s

logger = logging.getLogger(__name__)

# The status of a row made only to be locked, for a copy no node had spoken of;
# the fact that follows in the same transaction gives it a real one.
PLACEHOLDER = "unknown"
EXPLAINED = "explained by an event that arrived late"


def copy_row(barcode: str) -> s.Copy:
    """The copy's row, locked against other ingest processes (created if unknown).

    Two workers may hold facts of different nodes about one copy: on
    PostgreSQL the row is taken FOR UPDATE; a copy nobody knew gets a
    placeholder row first, so there is always a row to lock.
    """
    query = s.Copy.select().where(s.Copy.barcode == barcode)
    if s.is_postgres():
        query = query.for_update()
    row: s.Copy | None = query.first()
    if row is None:
        s.Copy.insert(barcode=barcode, status=PLACEHOLDER).on_conflict_ignore().execute()
        row = query.clone().get()
    return row


def floating(row: s.Copy, table: dict[str, bool] | None = None) -> bool:
    """The copy's return policy: its collection's, else the network default.

    ``table``: every collection's policy (``collections()``), read once for many copies.
    """
    if row.collection:
        if table is not None:
            if row.collection in table:
                return table[row.collection]
        else:
            coll = s.Collection.get_or_none(s.Collection.id == row.collection)
            if coll is not None:
                return bool(coll.floating)
    return settings.get_bool("cloud.floating_default")


def collections() -> dict[str, bool]:
    """Every collection's return policy: floating or not, by id."""
    return {c.id: bool(c.floating) for c in s.Collection.select()}


def state(row: s.Copy) -> reconcile.CopyState:
    """The cloud's belief about a copy, for the pure rules."""
    if row.status == PLACEHOLDER:
        return reconcile.CopyState(row.barcode, False, home_node=row.home_node,
                                   floating=floating(row))
    return reconcile.CopyState(row.barcode, True, row.status, row.location_node, row.slot,
                               row.loan_id, row.transit_to, row.home_node, floating(row))


def _origin(row: s.Copy) -> reconcile.CopyState:
    if row.origin_status is None:
        return reconcile.CopyState(row.barcode, False, home_node=row.home_node,
                                   floating=floating(row))
    return reconcile.CopyState(row.barcode, True, row.origin_status, row.origin_node,
                               row.origin_slot, home_node=row.home_node, floating=floating(row))


def apply_fact(barcode: str, fact: reconcile.Fact, now: datetime, touched: set[str]) -> None:
    """Record a copy fact; apply it at once if it is the newest, else replay the copy.

    The readers whose loans changed are added to ``touched``; the nodes that
    hold the copy, before and after, are told through the feed.
    """
    row = copy_row(barcode)
    old_node = row.location_node
    s.CopyFact.insert(copy=barcode, key=fact.key, node=fact.node, node_kind=fact.node_kind,
                      seq=fact.seq, type=fact.type, at=fact.at,
                      body=json.dumps(fact.body, default=str, ensure_ascii=False)).execute()
    if row.last_key is None or fact.key > row.last_key:
        out = reconcile.step(state(row), fact)
        _write_outcome(out, fact, now)
        touched.update(o.reader for o in out.opens)
        touched.update(_loan_readers(c.loan_id for c in out.closes))
    else:
        logger.info("late fact %s for %s (latest %s): replaying the copy", fact.key, barcode,
                    row.last_key)
        touched.update(_replay(row, now))
    feed.copy_moved(barcode, old_node, s.Copy.get_or_none(s.Copy.barcode == barcode))


def apply_cloud_fact(barcode: str, type_: str, body: dict[str, Any], now: datetime,
                     touched: set[str] | None = None) -> s.Copy:
    """Apply a decision of the cloud's about a copy as the newest fact it has."""
    row = copy_row(barcode)
    key = reconcile.cloud_fact_key(row.last_key, int(now.timestamp() * 1000))
    fact = reconcile.Fact(key, reconcile.CLOUD_NODE, reconcile.CLOUD_NODE, 0, type_, now, body)
    apply_fact(barcode, fact, now, touched if touched is not None else set())
    result: s.Copy = s.Copy.get(s.Copy.barcode == barcode)
    return result


def _loan_readers(loan_ids: Iterable[str]) -> set[str]:
    ids = list(loan_ids)
    if not ids:
        return set()
    return {ln.reader for ln in s.Loan.select(s.Loan.reader).where(s.Loan.id.in_(ids))}


def _write_copy(c: reconcile.CopyState, last_key: str) -> None:
    s.Copy.update(status=c.status, location_node=c.location_node, slot=c.slot,
                  loan_id=c.loan_id, transit_to=c.transit_to, last_key=last_key).where(
        s.Copy.barcode == c.barcode).execute()


def _write_outcome(out: reconcile.Outcome, fact: reconcile.Fact, now: datetime) -> None:
    for close in out.closes:
        s.Loan.update(returned_at=close.at, returned_node=close.node,
                      close_reason=close.reason).where(
            (s.Loan.id == close.loan_id) & s.Loan.returned_at.is_null()).execute()
    for op in out.opens:
        s.Loan.insert(id=op.loan_id, copy=op.copy, reader=op.reader, node=op.node,
                      checked_out_at=op.at, due=op.due,
                      due_node=fact.body.get("due_node")).on_conflict_ignore().execute()
    _write_copy(out.copy, fact.key)
    for rep in out.repairs:
        s.StaffException.create(kind=rep.kind, node=fact.node, seq=fact.seq,
                                copy=out.copy.barcode, detail=rep.detail, created_at=now,
                                derived=True)


def _replay(row: s.Copy, now: datetime) -> set[str]:
    """Recompute a copy's place, loans and open repairs from all its facts in order.

    Returns the readers whose loans it rewrote.
    """
    barcode = row.barcode
    facts = [
        reconcile.Fact(f.key, f.node, f.node_kind, f.seq, f.type, f.at, _fact_body(f.body))
        for f in s.CopyFact.select().where(s.CopyFact.copy == barcode).order_by(s.CopyFact.key)
    ]
    result = reconcile.replay(_origin(row), facts)
    due_node = {f.body["loan_id"]: f.body.get("due_node") for f in facts
                if f.type == "loan.checkout"}
    for lv in result.loans.values():
        # A loan rewritten may owe other fines: debts recomputes it. Its due date
        # is left alone: a renewal may have moved it since the checkout.
        fields = {"reader": lv.reader, "node": lv.node, "checked_out_at": lv.at,
                  "returned_at": lv.returned_at, "returned_node": lv.returned_node,
                  "close_reason": lv.close_reason, "fine_settled": False}
        if not s.Loan.update(**fields).where(s.Loan.id == lv.loan_id).execute():
            s.Loan.insert(id=lv.loan_id, copy=barcode, due=lv.due,
                          due_node=due_node.get(lv.loan_id), **fields).execute()
    for close in result.other_closes:
        s.Loan.update(returned_at=close.at, returned_node=close.node,
                      close_reason=close.reason).where(
            (s.Loan.id == close.loan_id) & s.Loan.returned_at.is_null()).execute()
    _write_copy(result.copy, facts[-1].key)
    # Repairs are derived from the facts: keep those the replay still finds,
    # add the new ones, and close (with the reason) those a late fact explained.
    # One closed by staff stays closed; one a replay closed opens again if needed.
    wanted = {(f.node, f.seq, r.kind): r for f, r in result.repairs}
    for exc in s.StaffException.select().where(
            (s.StaffException.copy == barcode)
            & (s.StaffException.derived == True)):  # noqa: E712 - SQL, not Python
        still = wanted.pop((exc.node, exc.seq, exc.kind), None) is not None
        if not still and exc.closed_at is None:
            exc.closed_at, exc.resolution = now, EXPLAINED
            exc.save()
        elif still and exc.resolution == EXPLAINED:
            exc.closed_at = exc.resolution = None
            exc.save()
    for (node, seq, kind), rep in wanted.items():
        s.StaffException.create(kind=kind, node=node, seq=seq, copy=barcode, detail=rep.detail,
                                created_at=now, derived=True)
    return {lv.reader for lv in result.loans.values()} | _loan_readers(
        c.loan_id for c in result.other_closes)


def _fact_body(text: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(text)
    for k in ("due", "due_node"):
        if isinstance(body.get(k), str):
            body[k] = date.fromisoformat(body[k])
    return body
