"""The network at a glance and one node's page: link, backlog, feed lag, faults, stock.

What the cloud knows of a node comes from its retained status message (online,
outbox depth, feed revision, active faults, and at a machine its controller,
slot count and return bin level against capacity; the broker delivers the last
will when a node drops), the events it applied, and the copies it places there.
Problems sort to the top: offline or silent first, then faults, then backlog.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app, render_template, url_for
from peewee import fn

from cloud import feed, holds
from cloud import store as s
from cloud.console import charts
from cloud.console.auth import bp, require
from cloud.console.common import tr

# A node publishes its status every 5 s while connected: one quiet for six of
# them is stuck (or its link is) even if the broker has not yet given up on it.
SILENT_AFTER_S = 30
# Backlogs worth a look: a node this far behind the feed, or holding this many
# events the cloud has not acknowledged, is not keeping up.
LAG_WARN = 100
OUTBOX_WARN = 50
EVENTS_SHOWN = 40
DEVICE_FAULT = "device_fault."


@dataclass
class NodeRow:
    """One node as the overview shows it."""

    id: str
    name: str
    kind: str
    online: bool
    last_seen: datetime | None
    outbox: int | None
    feed_rev: int | None
    lag: int | None
    pending: int
    faults: list[str]
    exceptions: int
    clock_note: str | None
    # A machine's hardware as its status last said (protocol MachineStatusSchema), or None.
    machine: dict[str, Any] | None = None
    problems: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    severity: int = 0

    @property
    def bin_level(self) -> str | None:
        """"count/capacity" of a machine's return bin, when its status said both."""
        m = self.machine or {}
        count, capacity = m.get("bin"), m.get("bin_capacity")
        if isinstance(count, int) and isinstance(capacity, int):
            return f"{count}/{capacity}"
        return None

    @property
    def slot_count(self) -> int | None:
        """How many slots the machine's controller has (its handshake), if known."""
        slots = (self.machine or {}).get("slots")
        return slots if isinstance(slots, int) and slots >= 0 else None

    @property
    def state(self) -> str:
        """ok | behind | fault | offline (a CSS class and a word)."""
        return ("ok", "behind", "fault", "offline")[self.severity]


def node_rows(now: datetime | None = None) -> list[NodeRow]:
    """Every node with its problems, worst first."""
    now = now or s.utcnow()
    top = feed.current_rev()
    cursors = {c.node: c.applied_seq for c in s.NodeCursor.select()}
    open_exc = dict(s.StaffException.select(s.StaffException.node, fn.COUNT(s.StaffException.id))
                    .where(s.StaffException.closed_at.is_null())
                    .group_by(s.StaffException.node).tuples())
    device: dict[str, dict[str, str]] = {}
    for node, kind, detail in (s.StaffException.select(s.StaffException.node,
                                                       s.StaffException.kind,
                                                       s.StaffException.detail)
                               .where(s.StaffException.closed_at.is_null()
                                      & s.StaffException.kind.startswith(DEVICE_FAULT))
                               .tuples()):
        short = kind[len(DEVICE_FAULT):]
        device.setdefault(node, {})[short] = f"{short}: {detail}"
    rows = []
    for n in s.Node.select():
        st = _status(n.status)
        # A fault the machine reports in its status ("jam (slot 3)") and as an event is
        # one fault: the event's words win over the status's short name.
        known = device.get(n.id, {})
        faults = sorted(set(known.values()) | {f for f in st.get("faults") or []
                                               if str(f).split(" (")[0] not in known})
        feed_rev = st.get("feed_rev")
        last_seq = st.get("last_seq") or 0
        row = NodeRow(n.id, n.name or n.id, n.kind, bool(n.online), n.last_seen,
                      st.get("outbox_depth"), feed_rev,
                      max(0, top - feed_rev) if isinstance(feed_rev, int) else None,
                      max(0, last_seq - cursors.get(n.id, 0)), faults,
                      open_exc.get(n.id, 0), n.clock_note, _machine(st))
        _judge(row, now)
        rows.append(row)
    rows.sort(key=lambda r: (-r.severity, r.kind != "branch", r.id))
    return rows


def _status(text: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(text or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _machine(st: dict[str, Any]) -> dict[str, Any] | None:
    machine = st.get("machine")
    return machine if isinstance(machine, dict) else None


def _judge(row: NodeRow, now: datetime) -> None:
    age = (now - row.last_seen).total_seconds() if row.last_seen else None
    p = row.problems
    if row.last_seen is None:
        p.append(("n.p.never", {}))
    elif not row.online:
        p.append(("n.p.offline", {"age": int(age or 0)}))
    elif age is not None and age > SILENT_AFTER_S:
        p.append(("n.p.silent", {"age": int(age)}))
    sev = 3 if p else 0
    if not p and row.machine and row.machine.get("controller_online") is False:
        p.append(("n.p.controller", {}))
        sev = max(sev, 2)
    if row.faults:
        p.append(("n.p.faults", {"n": len(row.faults)}))
        sev = max(sev, 2)
    if row.clock_note:
        p.append(("n.p.clock", {}))
        sev = max(sev, 2)
    if row.lag is not None and row.lag >= LAG_WARN:
        p.append(("n.p.lag", {"n": row.lag}))
        sev = max(sev, 1)
    if row.outbox is not None and row.outbox >= OUTBOX_WARN:
        p.append(("n.p.outbox", {"n": row.outbox}))
        sev = max(sev, 1)
    row.severity = sev


def totals(rows: list[NodeRow]) -> dict[str, int]:
    """The numbers above the table."""
    return {
        "nodes": len(rows), "online": sum(1 for r in rows if r.online),
        "problems": sum(1 for r in rows if r.severity),
        "exceptions": s.StaffException.select().where(
            s.StaffException.closed_at.is_null()).count(),
        "loans_open": s.Loan.select().where(s.Loan.returned_at.is_null()).count(),
        "holds_waiting": s.Hold.select().where(s.Hold.status == "waiting").count(),
        "transfers": s.Transfer.select().where(s.Transfer.status == "open").count(),
        "rev": feed.current_rev(),
        # This process's own link to the broker (None: it runs no consumer). Without
        # it no last will can arrive: every node's state is only as fresh as it says.
        "link": getattr(current_app.extensions.get("kitap.consumer"), "connected", None),
    }


def schematic(rows: list[NodeRow]) -> Any:
    """The sites drawn as a star around the cloud."""
    sites = [charts.Site(r.id, r.kind, r.severity, url_for("console.node", node_id=r.id),
                         ", ".join(tr(k, **v) for k, v in r.problems) or tr("n.ok"))
             for r in rows]
    return charts.schematic(sites, tr("n.schematic"))


@bp.get("/")
@require()
def index() -> Any:
    """The network at a glance (refreshes itself)."""
    rows = node_rows()
    return render_template("console/network.html", rows=rows, totals=totals(rows),
                           schematic=schematic(rows))


@bp.get("/network/live")
@require()
def live() -> Any:
    """The overview's changing part, for the page's refresh."""
    rows = node_rows()
    return render_template("console/_network_live.html", rows=rows, totals=totals(rows),
                           schematic=schematic(rows))


# -- one node -----------------------------------------------------------------------------

def event_summary(ev: s.Event) -> str:
    """The few fields of an event body a person scans for."""
    try:
        body = json.loads(ev.body)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = []
    for k in ("copy", "reader", "slot", "due", "kind", "state", "amount", "card", "hold_id"):
        if body.get(k) not in (None, ""):
            parts.append(f"{k} {body[k]}")
    if isinstance(body.get("slots"), dict):
        parts.append(f"{len(body['slots'])} slots scanned")
    return " · ".join(parts)


def titles_of(barcodes: list[str]) -> dict[str, s.Title]:
    """Each copy's title."""
    if not barcodes:
        return {}
    rows = (s.Copy.select(s.Copy.barcode, s.Title).join(s.Title, on=(
        s.Title.id == s.Copy.title_id)).where(s.Copy.barcode.in_(barcodes)))
    return {c.barcode: c.title for c in rows}


@bp.get("/nodes/<node_id>")
@require()
def node(node_id: str) -> Any:
    """A node: its link, slots and what is in them, bin, transfers, events, faults."""
    n = s.Node.get_or_none(s.Node.id == node_id)
    if n is None:
        return render_template("error.html", message=tr("err.notfound"), code=404), 404
    row = next(r for r in node_rows() if r.id == node_id)
    here = list(s.Copy.select().where((s.Copy.location_node == node_id)
                                      & s.Copy.status.in_(["in_slot", "in_bin"]))
                .order_by(s.Copy.slot, s.Copy.barcode))
    titles = titles_of([c.barcode for c in here])
    slots = {c.slot: c for c in here if c.status == "in_slot" and c.slot is not None}
    bin_ = [c for c in here if c.status == "in_bin"]
    # The controller's own slot count (from the node's status), else the highest slot used.
    slot_count = row.slot_count or max([*slots, 0])
    shelf = s.Copy.select().where((s.Copy.location_node == node_id)
                                  & (s.Copy.status == "on_shelf")).count()
    events = list(s.Event.select().where(s.Event.node == node_id)
                  .order_by(s.Event.seq.desc()).limit(EVENTS_SHOWN))
    exceptions = list(s.StaffException.select().where(
        (s.StaffException.node == node_id) & s.StaffException.closed_at.is_null())
        .order_by(s.StaffException.created_at.desc()).limit(50))
    pickups = list(s.Hold.select().where((s.Hold.pickup_node == node_id)
                                         & s.Hold.status.in_(["waiting", "ready"]))
                   .order_by(s.Hold.created_at))
    hold_titles = dict(s.Title.select(s.Title.id, s.Title.title).where(
        s.Title.id.in_([h.title_id for h in pickups] or [""])).tuples())
    from cloud.console import restock

    plan = restock.plan_for(node_id) if n.kind == "machine" else None
    return render_template(
        "console/node.html", n=n, row=row, slots=slots, slot_count=slot_count, bin=bin_,
        titles=titles, shelf=shelf, events=events, summary=event_summary,
        exceptions=exceptions, pickups=pickups, hold_titles=hold_titles, plan=plan,
        incoming=holds.transfers(node_id, outgoing=False),
        outgoing=holds.transfers(node_id, outgoing=True),
        bin_full=any("bin_full" in f for f in row.faults))
