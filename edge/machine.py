"""A vending machine's circulation: the rules, the store and the controller together.

Checkout at a machine: the reader's card must be in the reader; the rules are
checked; the intent to dispense is written BEFORE the motor turns; the loan is
written only when the controller says the book was taken. A jam, an empty slot
or a book left in the door ends in no loan and the copy still accounted for.
Returns: a tag read in the chute is checked in (any copy of the network) and
the book dropped into the bin.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from edge.circulation import Refusal
from edge.hardware import DispenseOutcome, MachineDriver
from edge.store import CirculationRefused, Copy, DispenseIntent, EdgeStore, LoanResult
from protocol.frames import Cmd, Frame

logger = logging.getLogger(__name__)

# A card presented at the reader stays "in session" this long without activity:
# long enough to choose a book on the touch screen, short enough that the next
# person in the queue cannot borrow on it.
SESSION_SECONDS = 120.0
DISPENSE_TIMEOUT = 60.0

_REFUSALS = {
    "jam": Refusal("jam", "The machine jammed; the book was not dispensed. Staff are notified."),
    "empty": Refusal("empty_slot", "That slot is empty; the book is not in this machine."),
    "not_taken": Refusal("not_taken", "The book was not taken in time and went back in."),
    "offline": Refusal("machine_offline", "The machine's controller is not responding."),
    "unknown": Refusal("outcome_unknown", "The machine stopped answering during the dispense. "
                       "If the book came out it is lent to you; the receipt follows."),
    "error": Refusal("machine_error", "The machine reported an error."),
}


@dataclass
class Session:
    """The card in the reader."""

    card: str
    since: float


class MachineService:
    """Drives one machine's controller on behalf of readers."""

    def __init__(self, store: EdgeStore, port: str) -> None:
        self.store = store
        self.session: Session | None = None
        self._lock = threading.Lock()  # one dispense at a time: one delivery door
        self.returns_accepted = 0
        self.returns_rejected = 0
        self.driver = MachineDriver(port, on_event=self._on_event)

    def start(self) -> None:
        """Open the serial line (in the background if the controller is not there)."""
        self.driver.start()

    def stop(self) -> None:
        """Close the serial line."""
        self.driver.stop()

    @property
    def online(self) -> bool:
        """True when the controller answers."""
        return self.driver.online

    def card_in_session(self) -> str | None:
        """The card presented in the last SESSION_SECONDS, if any."""
        s = self.session
        if s and time.monotonic() - s.since < SESSION_SECONDS:
            return s.card
        return None

    def checkout(self, card: str, barcode: str) -> LoanResult:
        """Dispense ``barcode`` to ``card``; CirculationRefused if no loan was made."""
        if self.card_in_session() != card:
            raise CirculationRefused(Refusal("no_card", "Present your card at the reader first."))
        refusal = self.store.check_checkout(card, barcode)
        if refusal:
            raise CirculationRefused(refusal)
        copy = Copy.get_or_none(Copy.barcode == barcode)
        if copy is None or copy.slot is None:
            raise CirculationRefused(Refusal("not_here", "This copy is not in this machine."))
        with self._lock:
            intent = self.store.begin_dispense(card, barcode, copy.slot)
            outcome: DispenseOutcome = self.driver.dispense(copy.slot, timeout=DISPENSE_TIMEOUT)
            if outcome.result == "unknown":
                # Keep the intent open: the controller's late ITEM_TAKEN or
                # ITEM_RETRACTED (or, after a crash, a slot scan) settles it.
                logger.warning("dispense of %s from slot %d: outcome unknown (%s)",
                               barcode, copy.slot, outcome.reason)
                raise CirculationRefused(_REFUSALS["unknown"])
            if outcome.result != "taken":
                self.store.fail_dispense(intent)
                logger.warning("dispense of %s from slot %d: %s %s", barcode, copy.slot,
                               outcome.result, outcome.reason)
                raise CirculationRefused(_REFUSALS.get(outcome.result, _REFUSALS["error"]))
            if outcome.tag and outcome.tag != barcode:
                logger.warning("slot %d held %s, not %s: lending what left the machine",
                               copy.slot, outcome.tag, barcode)
                barcode = outcome.tag
            result = self.store.checkout(card, barcode, slot=copy.slot, intent_id=intent)
        if self.session and self.session.card == card:
            self.session.since = time.monotonic()
        return result

    def _settle_late(self, cmd: int, data: dict[str, Any]) -> None:
        """A dispense outcome that arrived after its caller gave up: physical truth wins."""
        slot = data.get("slot")
        intent = (DispenseIntent.select()
                  .where((DispenseIntent.state == "pending") & (DispenseIntent.slot == slot))
                  .order_by(DispenseIntent.created_at.desc()).first())
        if intent is None:
            return
        if cmd == Cmd.ITEM_TAKEN:
            tag = str(data.get("tag") or intent.copy)
            logger.warning("late ITEM_TAKEN for slot %s: lending %s to %s", slot, tag,
                           intent.reader)
            self.store.checkout(intent.reader, tag, slot=slot, intent_id=intent.id)
        else:
            self.store.fail_dispense(intent.id)

    def _on_event(self, frame: Frame) -> None:
        """Unsolicited controller events (called from the driver's dispatch thread)."""
        data: dict[str, Any] = frame.json()
        if frame.cmd == Cmd.CARD_PRESENTED:
            self.session = Session(str(data["card"]), time.monotonic())
            logger.info("card %s presented", data["card"])
        elif frame.cmd == Cmd.RETURN_ITEM_READ:
            tag = str(data["tag"])
            # The return is recorded only once the book is physically in the bin:
            # if the controller does not take ACCEPT_RETURN, the reader keeps it.
            self.driver.accept_return(tag)
            self.store.checkin(tag)
            self.returns_accepted += 1
        elif frame.cmd in (Cmd.ITEM_TAKEN, Cmd.ITEM_RETRACTED, Cmd.JAM):
            self._settle_late(frame.cmd, data)
        elif frame.cmd == Cmd.POWER_UP:
            logger.warning("controller powered up (boot %s)", data.get("boot_id"))
