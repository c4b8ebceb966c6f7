"""A machine's stock: bring the node's copies in line with a slot scan, and tell the cloud.

Physical truth wins: after a scan the node's ``Copy`` rows say what the slot
sensors read. How the cloud hears of a difference depends on why it exists:

- after a technician's visit (the service door closed), a copy found in a slot
  where the node had none is ``stock.loaded``; a copy the node had in a slot and
  the scan no longer finds is ``stock.removed`` (the technician took it: in
  transit); when the bin reads empty, each copy the node had in it is
  ``stock.removed`` with no slot. Then one ``stock.audit`` with every slot;
- otherwise (a reconcile after a restart or a reconnect, or a dispense that
  found a slot empty) nobody was supposed to touch the slots: any difference is
  a discrepancy, sent as one ``stock.audit`` whose ``missing`` names the copies
  not where they should be (the cloud makes staff exceptions of both kinds).

All of it, rows and events, commits in one transaction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge.store import Copy, EdgeStore, Loan, utcnow

logger = logging.getLogger(__name__)


@dataclass
class ScanResult:
    """What a scan changed in the node's records."""

    loaded: list[tuple[str, int]] = field(default_factory=list)    # (copy, slot) found new
    removed: list[tuple[str, int]] = field(default_factory=list)   # taken out of a slot
    missing: list[tuple[str, int]] = field(default_factory=list)   # not there, no visit
    from_bin: list[str] = field(default_factory=list)              # taken out of the bin
    audit_seq: int | None = None

    @property
    def changed(self) -> bool:
        """True if the scan disagreed with the node's records."""
        return bool(self.loaded or self.removed or self.missing or self.from_bin)


def in_bin(here_only: bool = True) -> list[str]:
    """The copies the node believes are in the return bin (here, in no slot, not lent)."""
    query = Copy.select(Copy.barcode).where(
        Copy.slot.is_null() & (Copy.on_loan == False))  # noqa: E712
    if here_only:
        query = query.where(Copy.here == True)  # noqa: E712
    return [c.barcode for c in query]


def apply_scan(store: EdgeStore, scan: dict[int, str | None], *, reason: str,
               visit: bool, bin_count: int | None = None,
               exclude: frozenset[str] = frozenset()) -> ScanResult:
    """Make the node's copies follow ``scan``; write the events; returns what changed.

    ``visit``: a technician had the door open (moves are loads and removals,
    not discrepancies). ``bin_count``: the controller's bin level (0 after the
    bin was emptied). ``exclude``: copies in the delivery door or of an open
    intent, whose absence from their slot is no news.
    """
    res = ScanResult()
    now = utcnow()
    with store.writing():
        records: dict[str, int] = {
            c.barcode: c.slot for c in Copy.select(Copy.barcode, Copy.slot).where(
                (Copy.here == True) & Copy.slot.is_null(False))  # noqa: E712
            if c.slot is not None}
        in_slot = {slot: barcode for barcode, slot in records.items()}
        found = {tag: slot for slot, tag in scan.items() if tag}
        for tag, slot in sorted(found.items(), key=lambda kv: kv[1]):
            if in_slot.get(slot) != tag:
                res.loaded.append((tag, slot))
        for barcode, slot in sorted(records.items(), key=lambda kv: kv[1]):
            if barcode in found or barcode in exclude:
                continue
            (res.removed if visit else res.missing).append((barcode, slot))
        if visit and bin_count == 0:
            res.from_bin = in_bin()
        if not res.changed and not visit:
            return res
        for barcode, _ in res.removed + res.missing:
            Copy.update(here=False, slot=None).where(Copy.barcode == barcode).execute()
        for barcode in res.from_bin:
            Copy.update(here=False, slot=None).where(Copy.barcode == barcode).execute()
        for tag, slot in res.loaded:
            _place(tag, slot, now)
        if visit:
            for barcode, slot in res.removed:
                store.emit("stock.removed", {"copy": barcode, "slot": slot}, now)
            for barcode in res.from_bin:
                store.emit("stock.removed", {"copy": barcode, "slot": None}, now)
            for tag, slot in res.loaded:
                store.emit("stock.loaded", {"copy": tag, "slot": slot}, now)
        res.audit_seq = store.emit("stock.audit", {
            "slots": {str(n): t for n, t in sorted(scan.items())},
            "missing": [{"copy": b, "slot": s} for b, s in res.missing],
            "reason": reason}, now)
    if res.changed:
        logger.warning("slot scan (%s): loaded %s, removed %s, missing %s, %d out of the bin",
                       reason, res.loaded, res.removed, res.missing, len(res.from_bin))
    return res


def _place(tag: str, slot: int, now: object) -> None:
    """The copy sits in ``slot``: whatever this node thought, it is here and not lent."""
    # A copy lent here and now found in a slot came back without a return at this
    # node (a technician loaded it): the loan closes here; the cloud closes its
    # own from the stock fact, with an exception for staff.
    Loan.update(returned_at=now).where((Loan.copy == tag) & Loan.returned_at.is_null()).execute()
    if not Copy.update(here=True, slot=slot, on_loan=False).where(Copy.barcode == tag).execute():
        Copy.create(barcode=tag, here=True, slot=slot, on_loan=False)
