"""What a vending machine's node does with the controller's events.

All of it runs in the driver's dispatch thread, one event at a time, in the
order the controller sent them:

- card and PIN: the reader's session;
- a book in the return chute: refused with a reason on the display (returns
  closed, a tag that is no library's), or an intent is written, ACCEPT_RETURN
  sent, and only once the controller ACKed -- the book is in the bin -- the
  return is recorded, in the transaction that closes the intent;
- BIN_FULL: the machine is in "returns closed" and a fault is raised;
- the service door: open starts a technician's visit; closed runs a slot scan
  that makes the records follow the slots (stock.loaded / stock.removed /
  stock.audit) and clears the faults a visit mends (jams, a full bin);
- a dispense outcome that its caller gave up on (a late ITEM_TAKEN after a
  lost link): settled by its intent id, as a fact;
- POWER_UP: the controller rebooted (a fault until the next reconcile).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from edge import recovery
from edge.hardware import HardwareError, LinkDown
from edge.store import CirculationRefused, Copy, Reader, Title, utcnow
from protocol.frames import Cmd, Frame

if TYPE_CHECKING:
    from edge.machine import MachineService

logger = logging.getLogger(__name__)

# The network's copies carry RFID tags holding their barcode: 1-3 capital letters
# and 4-12 digits (C0000123). Anything else in the chute is not ours: a shop's
# security tag, a transit card, or a misread.
LIBRARY_TAG: Final = re.compile(r"^[A-Z]{1,3}\d{4,12}$")
IDLE_TEXT: Final = "Welcome! Present your card to borrow a book."
# Faults a controller that answers again has mended.
LINK_FAULTS: Final = ("controller_lost", "controller_rebooted", "controller_mismatch")


class EventHandlers:
    """The controller's events, applied to one MachineService."""

    def __init__(self, machine: MachineService) -> None:
        self.m = machine

    def handle(self, frame: Frame) -> None:
        """One unsolicited controller event (the driver's dispatch thread)."""
        doc: dict[str, Any] = frame.json()
        cmd = frame.cmd
        if cmd == Cmd.CARD_PRESENTED:
            self._card(str(doc["card"]))
        elif cmd == Cmd.PIN_ENTERED:
            self._pin(str(doc["pin"]))
        elif cmd == Cmd.ITEM_DISPENSED:
            self.m.crash_point("book_in_door")
            self.m.show("Please take your book from the door.")
        elif cmd in (Cmd.ITEM_TAKEN, Cmd.ITEM_RETRACTED, Cmd.JAM, Cmd.DISPENSE_FAILED):
            self._late_outcome(cmd, doc)
        elif cmd == Cmd.RETURN_ITEM_READ:
            self._chute(str(doc["tag"]))
        elif cmd == Cmd.BIN_FULL:
            self._bin_full(doc)
        elif cmd == Cmd.SERVICE_DOOR:
            self._door(bool(doc["open"]))
        elif cmd == Cmd.POWER_UP:
            # Only a reboot of the controller this node was talking to: the POWER_UP of
            # a controller met for the first time since the node started says nothing.
            if self.m.driver.info.get("boot_id") not in (None, doc["boot_id"]):
                self.m.records.raise_fault("controller_rebooted",
                                           f"the controller rebooted (boot {doc['boot_id']})")
                self.m.notify_faults()

    # -- the reader ------------------------------------------------------------

    def _card(self, card: str) -> None:
        from edge.machine import Session

        m = self.m
        r = Reader.get_or_none(Reader.card == card)
        needs_pin = bool(r and r.pin_hash)
        m.session = Session(card, time.monotonic(), pin_ok=not needs_pin)
        logger.info("card %s presented%s", card, " (PIN needed)" if needs_pin else "")
        if r is None:
            m.show("This card is not known here yet. Please ask at a library branch.")
        elif needs_pin:
            m.show("Enter your PIN, then press OK.")
        else:  # no name: the display (and the machine's public status) is for anyone to read
            m.show("Hello! Choose a book on the screen.")

    def _pin(self, pin: str) -> None:
        m = self.m
        s = m.session
        if s is None or time.monotonic() - s.since >= m.t.session_seconds:
            m.show("Present your card first.")
            return
        try:
            ok = m.store.verify_pin(s.card, pin)
        except CirculationRefused as exc:
            m.end_session(exc.refusal.message)
            return
        if ok:
            s.pin_ok, s.since = True, time.monotonic()
            m.show("PIN accepted: choose a book on the screen.")
            return
        r = Reader.get_or_none(Reader.card == s.card)
        if r is not None and r.locked_until and r.locked_until > utcnow():
            m.end_session("Too many wrong PINs: this card is locked here for a while.")
        else:
            m.show("Wrong PIN. Try again.")

    # -- dispenses that their caller gave up on ----------------------------------

    def _late_outcome(self, cmd: int, doc: dict[str, Any]) -> None:
        m = self.m
        intent_id = doc.get("intent")
        if intent_id:
            it = m.records.dispense_intent(str(intent_id))
        else:  # a controller that does not echo intents: the newest open one for the slot
            it = next((i for i in reversed(m.records.open_dispenses())
                       if i.slot == doc.get("slot")), None)
        if it is None or it.state != "pending":
            return
        if cmd == Cmd.ITEM_TAKEN:
            if m.records.complete_dispense(it.id, str(doc.get("tag") or it.copy)):
                logger.warning("late ITEM_TAKEN for slot %s: lent %s to %s", it.slot,
                               doc.get("tag"), it.reader)
            return
        m.records.fail_dispense(it.id, f"late {Cmd(cmd).name}")
        if cmd == Cmd.JAM:
            m.raise_jam(it.slot)
        elif cmd == Cmd.DISPENSE_FAILED:
            self.audit_later("dispense")

    # -- returns -----------------------------------------------------------------

    def _refusal(self, tag: str) -> str | None:
        closed = self.m.returns_closed_reason()
        if closed:
            return f"Returns are closed here ({closed}). Please use another machine or a branch."
        if not LIBRARY_TAG.match(tag):
            return "This is not a book of the library network. Please take it back."
        return None

    def _chute(self, tag: str) -> None:
        m = self.m
        refusal = self._refusal(tag)
        if refusal:
            m.returns_rejected += 1
            m.message = refusal
            try:
                m.driver.reject_return(tag, refusal)
            except HardwareError as exc:
                logger.warning("reject of %s not delivered: %s", tag, exc)
            logger.info("return of %r refused: %s", tag, refusal)
            return
        # The return is recorded only once the book is physically in the bin: the
        # intent first, then ACCEPT_RETURN, then (ACKed) the check-in with the
        # intent closed. A crash or a lost ACK in between is settled by reconcile.
        rid = m.records.begin_return(tag)
        m.crash_point("return_intent_written")
        try:
            m.driver.accept_return(tag, intent=rid)
        except LinkDown as exc:
            logger.warning("accept of %s: %s; the next reconcile settles it", tag, exc)
            return
        except HardwareError as exc:  # refused: nothing moved, the reader has the book
            m.records.fail_return(rid, str(exc))
            return
        m.crash_point("return_accepted")
        result = m.records.complete_return(rid)
        m.returns_accepted += 1
        if m.controller.get("bin") is not None:
            m.controller["bin"] += 1
        title = title_of(tag)
        m.show(f"Thank you! {title or tag} is returned." if result else "Thank you!")

    def _bin_full(self, doc: dict[str, Any]) -> None:
        m = self.m
        m.controller.update(bin=doc["bin"], bin_capacity=doc["bin_capacity"], bin_full=True,
                            chute="closed")
        if m.records.raise_fault("bin_full", f"the return bin is full ({doc['bin']}/"
                                 f"{doc['bin_capacity']}): returns are closed"):
            m.notify_faults()
        m.show("Returns are closed: the return bin is full.")

    # -- the technician ------------------------------------------------------------

    def _door(self, open_: bool) -> None:
        m = self.m
        m.controller["door"] = "open" if open_ else "closed"
        if open_:
            m.door_opened_at = time.monotonic()
            m.end_session("Service in progress.")
            logger.info("service door opened")
            return
        m.door_opened_at = None
        logger.info("service door closed: scanning the slots")
        try:
            with m.lock:
                res = recovery.audit(m, reason="door_closed", visit=True)
                status = m.refresh()
        except HardwareError as exc:
            logger.warning("slot scan after the visit failed (%s); the next reconcile "
                           "compares the slots", exc)
            return
        cleared = m.records.clear_fault("jam", any_slot=True, detail="technician's visit")
        cleared += m.records.clear_fault("door_left_open", detail="door closed")
        cleared += self._bin_state(status)
        if cleared:
            m.notify_faults()
        logger.info("visit: %d loaded, %d removed from slots, %d out of the bin",
                    len(res.loaded), len(res.removed), len(res.from_bin))
        m.show(IDLE_TEXT)

    def _bin_state(self, status: dict[str, Any]) -> int:
        """Raise or clear bin_full by the controller's word; reopen the chute it closed."""
        m = self.m
        if status.get("bin_full"):
            return int(m.records.raise_fault("bin_full", "the return bin is full: returns are "
                                             "closed"))
        if not m.records.fault_active("bin_full"):
            return 0
        n = m.records.clear_fault("bin_full", detail="bin emptied")
        if status.get("chute") == "closed":
            try:
                m.set_returns(True)
            except HardwareError as exc:
                logger.warning("reopening the chute: %s", exc)
        return n

    # -- after a handshake -----------------------------------------------------------

    def after_reconcile(self) -> None:
        """The controller answers and intents are settled: bring faults in line with it."""
        m = self.m
        changed = 0
        for kind in LINK_FAULTS:
            changed += m.records.clear_fault(kind, detail="controller back and reconciled")
        if m.controller.get("door") == "open":
            m.door_opened_at = m.door_opened_at or time.monotonic()
        else:
            m.door_opened_at = None
            changed += m.records.clear_fault("door_left_open", detail="door closed")
        changed += self._bin_state(m.controller)
        m.notify_faults()
        if not m.message or changed:
            m.show(IDLE_TEXT)

    def audit_later(self, reason: str) -> None:
        """Scan the slots once the current dispense has released the machine."""
        def run() -> None:
            try:
                with self.m.lock:
                    recovery.audit(self.m, reason=reason)
            except HardwareError as exc:
                logger.warning("slot scan (%s) failed: %s", reason, exc)
        threading.Thread(target=run, name="machine-audit", daemon=True).start()


def title_of(barcode: str) -> str | None:
    """The title of a copy, if this node knows it."""
    c = Copy.get_or_none(Copy.barcode == barcode)
    t = Title.get_or_none(Title.id == c.title_id) if c and c.title_id else None
    return t.title if t else None

