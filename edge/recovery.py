"""Settle what a crash or a lost link left open: exactly one loan, or none, per dispense.

Runs after every handshake (a restart of the node, a reboot of the controller,
a link that came back) before the machine serves anyone, with the dispense
lock held. The controller's word is final because it is physical and durable:
its STATUS carries the last dispenses and chute decisions with the host's
intent ids and their outcomes (written to its state file with the motion they
describe), and SLOT_SCAN what the slot sensors read now.

For each open dispense intent, by what the controller's log says of it:

============  =======================================================
no entry      the DISPENSE never reached it: no loan
``in_door``   the book waits in the door: still open (ITEM_TAKEN or
              ITEM_RETRACTED, which the controller keeps until ACKed,
              settles it; a controller that reboots retracts the book)
``taken``     the book left the machine: the loan, with the intent's id
``retracted`` ``jam`` ``empty``: it did not leave: no loan
============  =======================================================

Open return intents likewise: ``accepted`` in the log means the book is in the
bin (check it in); a book still waiting in the chute is accepted now; anything
else means the reader got the book back (nothing recorded). Then the slots are
compared with the node's records (edge/stock.py), leaving out the copies in
the delivery door.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge import stock
from edge.hardware import HardwareError

if TYPE_CHECKING:
    from edge.machine import MachineService

logger = logging.getLogger(__name__)

# Dispense outcomes in the controller's log that mean the book did not leave.
NOT_LEFT = frozenset({"retracted", "jam", "empty"})


@dataclass
class Settlement:
    """What one reconcile did."""

    lent: list[str] = field(default_factory=list)        # intents that became loans
    failed: list[str] = field(default_factory=list)      # intents closed without a loan
    waiting: list[str] = field(default_factory=list)     # book still in the door
    returned: list[str] = field(default_factory=list)    # return intents checked in
    scan: stock.ScanResult | None = None
    status: dict[str, Any] = field(default_factory=dict)


def reconcile(machine: MachineService) -> Settlement:
    """Settle open intents with the controller's log, then audit the slots."""
    drv, records = machine.driver, machine.records
    out = Settlement()
    status = drv.status(logs=True)
    out.status = status
    log = {d["intent"]: d for d in status.get("dispenses", []) if d.get("intent")}
    for it in records.open_dispenses():
        entry = log.get(it.id)
        outcome = entry["outcome"] if entry else None
        if outcome == "in_door":
            out.waiting.append(it.id)
        elif outcome == "taken":
            if records.complete_dispense(it.id, entry["tag"] if entry else None):
                out.lent.append(it.id)
                logger.warning("reconcile: %s left slot %d (intent %s): lent to %s",
                               entry.get("tag") if entry else it.copy, it.slot, it.id,
                               it.reader)
        else:
            why = f"controller says {outcome}" if outcome else "DISPENSE never carried out"
            if records.fail_dispense(it.id, f"reconcile: {why}"):
                out.failed.append(it.id)
            if outcome == "jam":
                machine.raise_jam(it.slot)
    returns = {r["intent"]: r for r in status.get("returns", []) if r.get("intent")}
    for rt in records.open_returns():
        entry = returns.get(rt.id)
        if entry and entry["outcome"] == "accepted":
            if records.complete_return(rt.id):
                out.returned.append(rt.id)
        elif status.get("chute_tag") == rt.copy:
            try:
                drv.accept_return(rt.copy, intent=rt.id)
            except HardwareError as exc:
                records.fail_return(rt.id, f"reconcile: accept refused ({exc})")
            else:
                if records.complete_return(rt.id):
                    out.returned.append(rt.id)
        else:
            records.fail_return(rt.id, "reconcile: the book is not in the bin")
    out.scan = audit(machine, reason="reconcile", status=status)
    logger.info("reconcile: %d lent, %d without a loan, %d waiting in the door, %d returns; "
                "slots %s", len(out.lent), len(out.failed), len(out.waiting), len(out.returned),
                "changed" if out.scan.changed else "as recorded")
    return out


def audit(machine: MachineService, *, reason: str, status: dict[str, Any] | None = None,
          visit: bool = False) -> stock.ScanResult:
    """SLOT_SCAN and make the node's records follow it (see edge/stock.py).

    A technician's visit the node did not see (the door opened and closed while
    the node was down, its SERVICE_DOOR events still queued) is known by the
    controller's door counter: its changes are loads and removals, not
    discrepancies. With the door open now, the slots are left alone: the scan
    runs when it closes.
    """
    status = status if status is not None else machine.driver.status()
    if status.get("door") == "open" and not visit:
        return stock.ScanResult()
    opens = status.get("door_opens")
    seen = machine.records.door_opens_seen()
    if opens is not None and seen is not None and opens != seen:
        visit = True
        reason = "door_closed"
    scan = machine.driver.slot_scan()
    exclude = {it.copy for it in machine.records.open_dispenses()}
    delivery = status.get("delivery")
    if delivery:
        exclude.add(str(delivery.get("tag")))
    result = stock.apply_scan(machine.store, scan, reason=reason, visit=visit,
                              bin_count=status.get("bin"), exclude=frozenset(exclude))
    if opens is not None:
        machine.records.saw_door_opens(int(opens))
    return result
