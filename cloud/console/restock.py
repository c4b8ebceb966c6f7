"""Restock planning for the machines: what to load where, and what to take out.

For each machine the plan weighs what its readers borrowed there over the last
``WINDOW_DAYS`` and what they reserved for pickup there, against the copies in
its slots now; titles short of what that demand asks for are proposed, with the
branches whose shelves hold free copies. A machine with too little history of
its own borrows the taste of all machines. Copies sitting in a slot that nobody
borrowed for the whole window are proposed for removal: a slot is worth more
than a book nobody takes (judged only where the machine has history enough).
Read-only: the technician's run happens at the machine.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import abort, render_template, request
from peewee import fn

from cloud import holds
from cloud import store as s
from cloud.console.auth import bp, require
from cloud.console.common import int_arg
from cloud.console.readers import csv_response

WINDOW_DAYS = 30
# A copy in a machine turns over about this many times a month when it is wanted:
# demand beyond that asks for another copy.
LOANS_PER_COPY = 4
# No title gets more than this many slots of one machine: variety sells.
MAX_COPIES_PER_TITLE = 3
# Below this many loans in the window a machine's own history is too thin.
THIN_HISTORY = 20
SUGGESTIONS = 15
HOLD_WEIGHT = 3  # a reader who reserved is worth several who might borrow


@dataclass
class Suggestion:
    """Load ``want`` copies of a title, from these branches."""

    title_id: str
    title: str
    author: str
    loans: int
    holds: int
    in_slots: int
    want: int
    sources: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Idle:
    """A copy in a slot nobody borrowed for the whole window."""

    barcode: str
    title: str
    slot: int | None
    last_loan: datetime | None


@dataclass
class Plan:
    """One machine's restock plan."""

    node: s.Node
    days: int
    in_slots: int
    slots_known: int
    bin: int
    loans: int
    from_network: bool
    load: list[Suggestion]
    remove: list[Idle]
    incoming: list[Any]


def _free_on_shelves(title_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    if not title_ids:
        return {}
    taken = s.Hold.select(s.Hold.copy).where(s.Hold.status.in_(holds.ACTIVE)
                                             & s.Hold.copy.is_null(False))
    out: dict[str, list[tuple[str, int]]] = {}
    for tid, node, n in (s.Copy.select(s.Copy.title_id, s.Copy.location_node,
                                       fn.COUNT(s.Copy.barcode))
                         .join(s.Node, on=(s.Node.id == s.Copy.location_node))
                         .where(s.Copy.title_id.in_(title_ids) & (s.Copy.status == "on_shelf")
                                & (s.Node.kind == "branch") & s.Copy.barcode.not_in(taken))
                         .group_by(s.Copy.title_id, s.Copy.location_node).tuples()):
        out.setdefault(tid, []).append((node, n))
    return {k: sorted(v, key=lambda x: -x[1])[:3] for k, v in out.items()}


def plan_for(node_id: str, days: int = WINDOW_DAYS, now: datetime | None = None) -> Plan:
    """The restock plan of one machine."""
    node = s.Node.get(s.Node.id == node_id)
    now = now or s.utcnow()
    since = now - timedelta(days=days)
    lent = Counter(dict(s.Loan.select(s.Copy.title_id, fn.COUNT(s.Loan.id))
                        .join(s.Copy, on=(s.Copy.barcode == s.Loan.copy))
                        .where((s.Loan.node == node_id) & (s.Loan.checked_out_at >= since))
                        .group_by(s.Copy.title_id).tuples()))
    own = sum(lent.values())
    from_network = own < THIN_HISTORY
    if from_network:
        machines = s.Node.select(s.Node.id).where(s.Node.kind == "machine")
        lent = Counter(dict(s.Loan.select(s.Copy.title_id, fn.COUNT(s.Loan.id))
                            .join(s.Copy, on=(s.Copy.barcode == s.Loan.copy))
                            .where(s.Loan.node.in_(machines) & (s.Loan.checked_out_at >= since))
                            .group_by(s.Copy.title_id).tuples()))
    reserved = Counter(dict(s.Hold.select(s.Hold.title_id, fn.COUNT(s.Hold.id))
                            .where((s.Hold.pickup_node == node_id)
                                   & (s.Hold.status == "waiting"))
                            .group_by(s.Hold.title_id).tuples()))
    here = list(s.Copy.select().where((s.Copy.location_node == node_id)
                                      & s.Copy.status.in_(["in_slot", "in_bin"])))
    in_slot = [c for c in here if c.status == "in_slot"]
    stock = Counter(c.title_id for c in in_slot)
    wants = {}
    for tid in set(lent) | set(reserved):
        target = min(MAX_COPIES_PER_TITLE,
                     math.ceil(lent[tid] / LOANS_PER_COPY) + reserved[tid])
        if target - stock[tid] > 0:
            wants[tid] = target - stock[tid]
    ranked = sorted(wants, key=lambda t: -(lent[t] + HOLD_WEIGHT * reserved[t]))[:SUGGESTIONS]
    titles = {t.id: t for t in s.Title.select().where(s.Title.id.in_(
        ranked + [c.title_id for c in in_slot] or [""]))}
    sources = _free_on_shelves(ranked)
    load = [Suggestion(t, titles[t].title if t in titles else t,
                       titles[t].author if t in titles else "", lent[t], reserved[t],
                       stock[t], wants[t], sources.get(t, [])) for t in ranked]
    last = dict(s.Loan.select(s.Loan.copy, fn.MAX(s.Loan.checked_out_at))
                .where(s.Loan.copy.in_([c.barcode for c in in_slot] or [""]))
                .group_by(s.Loan.copy).tuples())
    remove = []
    # With too little history of its own, "nobody borrowed it here" proves nothing.
    for c in sorted(in_slot if not from_network else [], key=lambda c: c.slot or 0):
        when = last.get(c.barcode)
        when = s.UTCDateTimeField().python_value(when) if when is not None else None
        if when is None or when < since:
            t = titles.get(c.title_id)
            remove.append(Idle(c.barcode, t.title if t else c.title_id or "", c.slot, when))
    return Plan(node, days, len(in_slot), max([c.slot or 0 for c in in_slot] + [0]),
                sum(1 for c in here if c.status == "in_bin"), own, from_network, load,
                remove, holds.transfers(node_id, outgoing=False))


@bp.get("/restock")
@require()
def restock() -> Any:
    """Every machine's plan in brief."""
    days = int_arg("days", WINDOW_DAYS, 7, 365) or WINDOW_DAYS
    plans = [plan_for(n.id, days) for n in
             s.Node.select().where(s.Node.kind == "machine").order_by(s.Node.id)]
    return render_template("console/restock.html", plans=plans, days=days)


@bp.get("/restock/<node_id>")
@require()
def restock_node(node_id: str) -> Any:
    """One machine's plan in full; CSV as the technician's pick list."""
    n = s.Node.get_or_none(s.Node.id == node_id)
    if n is None or n.kind != "machine":
        abort(404)
    days = int_arg("days", WINDOW_DAYS, 7, 365) or WINDOW_DAYS
    plan = plan_for(node_id, days)
    if request.args.get("format") == "csv":
        rows = [["load", x.title_id, x.title, x.author, x.want,
                 " ".join(f"{n}:{k}" for n, k in x.sources), ""] for x in plan.load]
        rows += [["remove", c.barcode, c.title, "", 1, "", c.slot or ""] for c in plan.remove]
        return csv_response(f"restock-{node_id}", ["action", "item", "title", "author",
                                                   "copies", "from", "slot"], rows)
    return render_template("console/restock_node.html", plan=plan, days=days)
