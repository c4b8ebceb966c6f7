"""A machine's own records in the node's SQLite: intents, device faults, the controller's id.

An intent is written BEFORE the controller is asked to act (dispense a book, let
a returned one drop into the bin) and closed in the SAME transaction as the loan
or the return it proves: a crash anywhere leaves either an open intent (settled
later from the controller's log) or a closed one with its loan, never a loan
without its intent closed or the other way round. Closing is idempotent: the
second of two paths that learn the outcome (a late event, a reconcile) finds
the intent closed and does nothing.

A fault is a row while active; raising and clearing it each write a
``device.fault`` event in the same transaction.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from peewee import AutoField, CharField, DateTimeField, IntegerField, TextField

from edge.store import (
    BaseModel,
    DispenseIntent,
    EdgeStore,
    LoanResult,
    Meta,
    ReturnResult,
    db,
    utcnow,
)

logger = logging.getLogger(__name__)

# The controller board this node drives, pinned at the first handshake.
SERIAL_KEY = "machine.controller_serial"
# The controller's service-door counter when the node last scanned the slots.
DOOR_OPENS_KEY = "machine.door_opens"


class ReturnIntent(BaseModel):
    """Written before ACCEPT_RETURN, closed with the check-in once the book is in the bin."""

    id = CharField(primary_key=True)
    copy = CharField()
    state = CharField(default="pending")  # pending | done | failed
    created_at = DateTimeField()


class DeviceFault(BaseModel):
    """A fault of this machine; active while ``cleared_at`` is null."""

    id = AutoField()
    kind = CharField(index=True)
    slot = IntegerField(null=True)
    detail = TextField(default="")
    raised_at = DateTimeField()
    cleared_at = DateTimeField(null=True)


MACHINE_TABLES = [ReturnIntent, DeviceFault]


class MachineRecords:
    """Reads and writes a machine's intents and faults through the node's store."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        db.create_tables(MACHINE_TABLES)

    # -- dispenses ------------------------------------------------------------

    def begin_dispense(self, card: str, barcode: str, slot: int) -> str:
        """Write the intent to dispense (durable before the motor turns); returns its id."""
        return self.store.begin_dispense(card, barcode, slot)

    def open_dispenses(self) -> list[DispenseIntent]:
        """Dispense intents whose outcome is not known yet, oldest first."""
        return list(DispenseIntent.select().where(DispenseIntent.state == "pending")
                    .order_by(DispenseIntent.created_at))

    def dispense_intent(self, intent_id: str) -> DispenseIntent | None:
        """One dispense intent, or None."""
        return DispenseIntent.get_or_none(DispenseIntent.id == intent_id)

    def complete_dispense(self, intent_id: str, tag: str | None = None) -> LoanResult | None:
        """The book left the machine: the loan and the closed intent, in one transaction.

        ``tag`` is what the controller says left (it lends what physically went,
        even if the slot held another copy than the node thought). None if the
        intent was already closed (another path settled it first).
        """
        with self.store.writing():
            it = DispenseIntent.get_or_none(DispenseIntent.id == intent_id)
            if it is None or it.state != "pending":
                return None
            barcode = tag or it.copy
            if barcode != it.copy:
                logger.warning("slot %d held %s, not %s: lending what left the machine",
                               it.slot, barcode, it.copy)
            return self.store.checkout(it.reader, barcode, slot=it.slot, intent_id=it.id)

    def fail_dispense(self, intent_id: str, why: str) -> bool:
        """The book did not leave the machine: no loan. False if already closed."""
        with self.store.writing():
            n = DispenseIntent.update(state="failed").where(
                (DispenseIntent.id == intent_id) & (DispenseIntent.state == "pending")).execute()
        if n:
            logger.info("dispense intent %s closed without a loan: %s", intent_id, why)
        return bool(n)

    # -- returns --------------------------------------------------------------

    def begin_return(self, tag: str) -> str:
        """Write the intent to take a book into the bin; returns its id."""
        intent_id = uuid.uuid4().hex
        with self.store.writing():
            ReturnIntent.create(id=intent_id, copy=tag, created_at=utcnow())
        return intent_id

    def open_returns(self) -> list[ReturnIntent]:
        """Return intents whose outcome is not known yet, oldest first."""
        return list(ReturnIntent.select().where(ReturnIntent.state == "pending")
                    .order_by(ReturnIntent.created_at))

    def complete_return(self, intent_id: str) -> ReturnResult | None:
        """The book is in the bin: the check-in and the closed intent, in one transaction."""
        with self.store.writing():
            it = ReturnIntent.get_or_none(ReturnIntent.id == intent_id)
            if it is None or it.state != "pending":
                return None
            ReturnIntent.update(state="done").where(ReturnIntent.id == intent_id).execute()
            return self.store.checkin(it.copy)

    def fail_return(self, intent_id: str, why: str) -> bool:
        """The book went back to the reader: nothing is recorded. False if already closed."""
        with self.store.writing():
            n = ReturnIntent.update(state="failed").where(
                (ReturnIntent.id == intent_id) & (ReturnIntent.state == "pending")).execute()
        if n:
            logger.info("return intent %s closed without a return: %s", intent_id, why)
        return bool(n)

    # -- faults ---------------------------------------------------------------

    def raise_fault(self, kind: str, detail: str, slot: int | None = None,
                    now: datetime | None = None) -> bool:
        """Record a fault and its ``device.fault`` event; False if it is already active."""
        now = now or utcnow()
        with self.store.writing():
            if self._active(kind, slot).exists():
                return False
            DeviceFault.create(kind=kind, slot=slot, detail=detail, raised_at=now)
            self.store.emit("device.fault", {"kind": kind, "state": "raised", "slot": slot,
                                             "detail": detail[:500]}, now)
        logger.warning("fault raised: %s%s %s", kind, f" (slot {slot})" if slot else "", detail)
        return True

    def clear_fault(self, kind: str, slot: int | None = None, *, any_slot: bool = False,
                    detail: str = "", now: datetime | None = None) -> int:
        """Clear an active fault (every slot's with ``any_slot``); one event each cleared."""
        now = now or utcnow()
        with self.store.writing():
            rows = list(DeviceFault.select().where(
                (DeviceFault.kind == kind) & DeviceFault.cleared_at.is_null())
                if any_slot else self._active(kind, slot))
            for row in rows:
                DeviceFault.update(cleared_at=now).where(DeviceFault.id == row.id).execute()
                self.store.emit("device.fault", {"kind": kind, "state": "cleared",
                                                 "slot": row.slot, "detail": detail[:500]}, now)
        for row in rows:
            logger.info("fault cleared: %s%s", kind, f" (slot {row.slot})" if row.slot else "")
        return len(rows)

    @staticmethod
    def _active(kind: str, slot: int | None) -> Any:
        query = DeviceFault.select().where(
            (DeviceFault.kind == kind) & DeviceFault.cleared_at.is_null())
        return query.where(DeviceFault.slot.is_null() if slot is None
                           else DeviceFault.slot == slot)

    def active_faults(self) -> list[DeviceFault]:
        """The faults not cleared yet, oldest first."""
        return list(DeviceFault.select().where(DeviceFault.cleared_at.is_null())
                    .order_by(DeviceFault.raised_at))

    def fault_active(self, kind: str, slot: int | None = None) -> bool:
        """True if ``kind`` (for ``slot``) is active."""
        return bool(self._active(kind, slot).exists())

    # -- the controller's identity --------------------------------------------

    def pinned_serial(self) -> str | None:
        """The serial number of the controller this node drives, once it has seen one."""
        row = Meta.get_or_none(Meta.key == SERIAL_KEY)
        return row.value if row else None

    def pin_serial(self, serial: str) -> None:
        """Remember ``serial`` as this node's controller."""
        with self.store.writing():
            Meta.insert(key=SERIAL_KEY, value=serial).on_conflict_replace().execute()

    def unpin_serial(self) -> None:
        """Forget the controller (a technician replaced the board)."""
        with self.store.writing():
            Meta.delete().where(Meta.key.in_([SERIAL_KEY, DOOR_OPENS_KEY])).execute()

    def door_opens_seen(self) -> int | None:
        """The controller's door counter at the last slot scan, if there was one."""
        row = Meta.get_or_none(Meta.key == DOOR_OPENS_KEY)
        return int(row.value) if row else None

    def saw_door_opens(self, count: int) -> None:
        """Remember the controller's door counter as of this slot scan."""
        with self.store.writing():
            Meta.insert(key=DOOR_OPENS_KEY, value=str(count)).on_conflict_replace().execute()
