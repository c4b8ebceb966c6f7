"""What the cloud does with a machine's own news: device faults, and what its slot scans say.

A ``device.fault`` raised becomes an open StaffException of kind
``device_fault.<kind>`` (e.g. ``device_fault.jam``); the same fault cleared by
the machine closes it, with the seq that cleared it. The copies a
``stock.audit`` names are copy facts (cloud/reconcile.py); this module adds the
one check a pure fact cannot make: a copy the CLOUD places in a slot of that
machine which the scan did not find there becomes a StaffException too.
Handlers run inside the ingest transaction (cloud/handlers.py).
"""
from __future__ import annotations

import logging
from datetime import datetime

from cloud import store as s
from cloud.handlers import handles
from protocol.envelope import Event

logger = logging.getLogger(__name__)

FAULT_PREFIX = "device_fault."


def _where(slot: int | None) -> str:
    return f"slot {slot}: " if slot is not None else ""


@handles("device.fault")
def device_fault(node: s.Node, ev: Event, now: datetime) -> None:
    """Open a staff exception for a raised fault; close the open ones a clearing names."""
    b = ev.body
    kind = FAULT_PREFIX + b["kind"]
    where = _where(b.get("slot"))
    if b["state"] == "raised":
        s.StaffException.create(kind=kind, node=node.id, seq=ev.seq,
                                detail=f"{where}{b['detail'] or b['kind']}", created_at=now)
        logger.info("%s: device fault %s raised %s", node.id, b["kind"], where)
        return
    query = s.StaffException.select().where(
        (s.StaffException.kind == kind) & (s.StaffException.node == node.id)
        & s.StaffException.closed_at.is_null())
    if where:
        query = query.where(s.StaffException.detail.startswith(where))
    for exc in query:
        exc.closed_at = now
        exc.resolution = f"cleared by {node.id} (seq {ev.seq})" + (
            f": {b['detail']}" if b["detail"] else "")
        exc.save()


@handles("stock.audit")
def audit_against_the_cloud(node: s.Node, ev: Event, now: datetime) -> None:
    """Flag copies the cloud places in this machine's slots that the scan did not find."""
    slots: dict[str, str | None] = ev.body["slots"]
    found = {tag for tag in slots.values() if tag}
    # The node's own "missing" list became facts already (status missing).
    named = found | {m["copy"] for m in ev.body.get("missing", [])}
    for c in s.Copy.select().where((s.Copy.location_node == node.id)
                                   & (s.Copy.status == "in_slot")):
        if c.barcode in named:
            continue
        there = slots.get(str(c.slot))
        s.StaffException.create(
            kind="audit_cloud_mismatch", node=node.id, seq=ev.seq, copy=c.barcode,
            detail=f"the cloud places copy {c.barcode} in slot {c.slot} of {node.id}, but the "
                   f"slot scan ({ev.body['reason']}) found "
                   + (f"copy {there}" if there else "that slot empty"),
            created_at=now)
