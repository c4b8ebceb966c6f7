"""A vending machine's circulation: the reader's session, the rules, the store and the driver.

Checkout: card (and PIN, when the reader has one) -> the copies here the reader
may take, their own reservations first (``offer``) -> choose -> the intent to
dispense is written BEFORE the motor turns -> DISPENSE -> the loan is written
only when the controller says the book was taken, in the transaction that
closes the intent. A jam, an empty slot or a book left in the door ends in no
loan and the copy still accounted for. An outcome lost to a crash or a dead
link keeps the intent open until the controller's log settles it
(edge/recovery.py, on every handshake).

Returns, the service door and faults are handled as the controller's events
come in (edge/machine_events.py).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from edge import recovery
from edge.circulation import Refusal
from edge.hardware import (
    HEARTBEAT_INTERVAL,
    RECONNECT_INTERVAL,
    DispenseOutcome,
    HardwareError,
    MachineDriver,
)
from edge.machine_events import EventHandlers, title_of
from edge.machine_records import MachineRecords
from edge.store import CirculationRefused, Copy, EdgeStore, LoanResult, Reader

logger = logging.getLogger(__name__)

# A card presented at the reader stays "in session" this long without activity:
# long enough to choose a book on the touch screen, short enough that the next
# person in the queue cannot borrow on it.
SESSION_SECONDS: Final = 120.0
# The controller's take timeout is 20 s; the rest covers the motor and the line.
DISPENSE_TIMEOUT: Final = 60.0
# A technician restocks in 10 minutes; a door open for longer was forgotten.
DOOR_OPEN_LIMIT: Final = 15 * 60.0
# A reboot or a reconnect takes a few seconds; a controller away for longer than
# this is a fault staff must hear of (the machine says "offline" at once anyway).
CONTROLLER_LOST_AFTER: Final = 30.0
# How long the technician has to open the service door after unlocking it (the
# controller refuses more than MAX_UNLOCK_SECONDS).
UNLOCK_SECONDS: Final = 60
MAX_UNLOCK_SECONDS: Final = 600
# The timers above are checked this often.
WATCH_INTERVAL: Final = 0.25
# A reconcile that failed (a reply lost on a noisy line) is tried again this often
# while the controller answers: the machine lends nothing until it succeeds.
RECONCILE_RETRY: Final = 2.0
# Fault injection for the crash tests: the node kills itself (SIGKILL) when it
# reaches this step of a dispense or a return. Never set in service.
CRASH_ENV: Final = "KITAP_MACHINE_CRASH_AT"
CRASH_STEPS: Final = ("intent_written", "dispense_acked", "book_in_door", "outcome_received",
                      "loan_written", "return_intent_written", "return_accepted")
# Tunables may come from the environment: KITAP_MACHINE_<FIELD> (e.g. ..._HEARTBEAT=1).
ENV_PREFIX: Final = "KITAP_MACHINE_"

_REFUSALS = {
    "jam": Refusal("jam", "The machine jammed; the book was not dispensed. Staff are notified."),
    "empty": Refusal("empty_slot", "That slot is empty; the book is not in this machine."),
    "not_taken": Refusal("not_taken", "The book was not taken in time and went back in."),
    "offline": Refusal("machine_offline", "The machine's controller is not responding."),
    "unknown": Refusal("outcome_unknown", "The machine stopped answering during the dispense. "
                       "If the book came out it is lent to you; the receipt follows."),
    "error": Refusal("machine_error", "The machine reported an error."),
}


@dataclass(frozen=True)
class Tunables:
    """Timings of one machine (defaults from the constants above)."""

    session_seconds: float = SESSION_SECONDS
    dispense_timeout: float = DISPENSE_TIMEOUT
    door_open_limit: float = DOOR_OPEN_LIMIT
    controller_lost_after: float = CONTROLLER_LOST_AFTER
    unlock_seconds: int = UNLOCK_SECONDS
    heartbeat: float = HEARTBEAT_INTERVAL
    reconnect: float = RECONNECT_INTERVAL

    @classmethod
    def from_mapping(cls, env: Mapping[str, Any], prefix: str = ENV_PREFIX) -> Tunables:
        """Read ``<prefix><FIELD>`` keys (e.g. KITAP_MACHINE_DOOR_OPEN_LIMIT=60)."""
        given: dict[str, Any] = {}
        for f in fields(cls):
            key = prefix + f.name.upper()
            value = env.get(key)
            if value is None or value == "":
                continue
            try:
                given[f.name] = int(value) if f.type in ("int", int) else float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a number") from None
        return cls(**given)


@dataclass
class Session:
    """The card in the reader."""

    card: str
    since: float
    pin_ok: bool = False


class MachineService:
    """Drives one machine's controller on behalf of readers and technicians."""

    def __init__(self, store: EdgeStore, port: str, *,
                 on_faults: Callable[[list[str]], None] | None = None,
                 tunables: Tunables | None = None) -> None:
        self.store = store
        self.records = MachineRecords(store)
        self.t = tunables or Tunables.from_mapping(os.environ)
        # Called with the active faults' names whenever they (or the controller's link)
        # change: the app factory hands them to the sync agent's retained MQTT status.
        self.on_faults = on_faults
        self.session: Session | None = None
        self._reconciled = 0  # the handshake (driver.handshakes) last reconciled
        self.controller: dict[str, Any] = {}  # the last STATUS_REPLY
        self.message = ""  # the last thing the machine told the reader
        self.returns_accepted = 0
        self.returns_rejected = 0
        self.lock = threading.Lock()  # one dispense (or reconcile) at a time: one door
        self._offline_since: float | None = time.monotonic()
        self._reconcile_failed_at: float | None = None
        self.door_opened_at: float | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.crash_at = os.environ.get(CRASH_ENV) or None
        if self.crash_at:
            logger.warning("FAULT INJECTION: this node kills itself at step %r", self.crash_at)
        self.events = EventHandlers(self)
        self.driver = MachineDriver(port, on_event=self.events.handle, on_link=self._on_link,
                                    check_identity=self._check_identity,
                                    heartbeat_interval=self.t.heartbeat,
                                    reconnect_interval=self.t.reconnect)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Open the serial line (in the background if the controller is not there)."""
        self.driver.start()
        self._watcher = threading.Thread(target=self._watch, name="machine-watch", daemon=True)
        self._watcher.start()
        self.notify_faults()

    def stop(self) -> None:
        """Close the serial line."""
        self._stop.set()
        self.driver.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=2)

    @property
    def online(self) -> bool:
        """True when the controller answers."""
        return self.driver.online

    @property
    def ready(self) -> bool:
        """True when the controller answers and what its last handshake left open is settled.

        Tied to the handshake's number, not a flag: right after a re-handshake the
        machine is not ready, even before the link-down notice was dispatched.
        """
        return self.driver.online and self._reconciled == self.driver.handshakes

    def crash_point(self, step: str) -> None:
        """Fault injection: die here, as a power cut would, if CRASH_ENV names ``step``."""
        if self.crash_at == step:
            logger.error("CRASH at %s (fault injection)", step)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    # -- the reader's session ----------------------------------------------------

    def card_in_session(self) -> str | None:
        """The card presented at the reader within the session time, if any."""
        s = self.session
        if s and time.monotonic() - s.since < self.t.session_seconds:
            return s.card
        return None

    def pin_ok(self, card: str) -> bool:
        """True if ``card`` is in session and its PIN was typed right on the PIN pad (or the
        reader has none). The web layer may also accept a PIN typed on the touch screen."""
        s = self.session
        return self.card_in_session() == card and s is not None and s.pin_ok

    def session_info(self) -> dict[str, Any] | None:
        """The session for the kiosk: card, name, PIN state, and what the reader may take."""
        s = self.session
        if s is None or time.monotonic() - s.since >= self.t.session_seconds:
            return None
        r = Reader.get_or_none(Reader.card == s.card)
        return {"card": s.card, "name": r.name if r else "", "pin_ok": s.pin_ok,
                "offer": self.offer(s.card) if s.pin_ok else []}

    def offer(self, card: str) -> list[dict[str, Any]]:
        """The copies in this machine ``card`` may take now, their own reservations first."""
        jammed = {f.slot for f in self.records.active_faults() if f.kind == "jam"}
        out = []
        for c in Copy.select().where((Copy.here == True) & Copy.slot.is_null(False)  # noqa: E712
                                     & (Copy.on_loan == False)).order_by(Copy.slot):  # noqa: E712
            if c.slot in jammed or self.store.check_checkout(card, c.barcode) is not None:
                continue
            view = self.store.copy_view(c.barcode)
            out.append({"copy": c.barcode, "slot": c.slot, "title": title_of(c.barcode),
                        "reserved": bool(view and view.held_for == card)})
        out.sort(key=lambda o: (not o["reserved"], o["slot"]))
        return out

    def end_session(self, text: str | None = None) -> None:
        """Forget the card in the reader (and say why on the display)."""
        self.session = None
        if text:
            self.show(text)

    # -- checkout -----------------------------------------------------------------

    def checkout(self, card: str, barcode: str) -> LoanResult:
        """Dispense ``barcode`` to ``card``; CirculationRefused if no loan was made.

        The card must be in the reader. Whether its PIN was checked (on the pad:
        ``pin_ok``; on the touch screen; or an API token) is the caller's to decide.
        """
        if self.card_in_session() != card:
            raise CirculationRefused(Refusal("no_card", "Present your card at the reader first."))
        refusal = self._machine_refusal()
        if refusal:
            raise CirculationRefused(refusal)
        refusal = self.store.check_checkout(card, barcode)
        if refusal:
            raise CirculationRefused(refusal)
        copy = Copy.get_or_none(Copy.barcode == barcode)
        if copy is None or copy.slot is None:
            raise CirculationRefused(Refusal("not_here", "This copy is not in this machine."))
        if self.records.fault_active("jam", copy.slot):
            raise CirculationRefused(Refusal("slot_out_of_order",
                                             "That slot is out of order until a technician "
                                             "has seen to it."))
        slot = copy.slot
        with self.lock:
            if self.records.open_dispenses() or not self.ready:  # re-checked under the lock
                raise CirculationRefused(self._machine_refusal() or _REFUSALS["unknown"])
            intent = self.records.begin_dispense(card, barcode, slot)
            self.crash_point("intent_written")
            self.show("Please wait: your book is coming.")
            outcome: DispenseOutcome = self.driver.dispense(
                slot, intent=intent, timeout=self.t.dispense_timeout,
                on_accepted=lambda: self.crash_point("dispense_acked"))
            self.crash_point("outcome_received")
            result = self._settle(intent, barcode, outcome)
            self.crash_point("loan_written")
        if self.session and self.session.card == card:
            self.session.since = time.monotonic()
        return result

    def _machine_refusal(self) -> Refusal | None:
        """Why the machine cannot dispense now, or None."""
        if not self.online:
            return _REFUSALS["offline"]
        if self.controller.get("door") == "open":
            return Refusal("service", "The machine is being serviced; please wait.")
        if not self.ready or self.records.open_dispenses():
            return Refusal("machine_busy", "The machine is finishing the previous loan; "
                                           "try again in a moment.")
        return None

    def _settle(self, intent: str, barcode: str, outcome: DispenseOutcome) -> LoanResult:
        """Turn the dispense's outcome into a loan or a refusal; the intent is closed."""
        if outcome.result == "taken":
            result = self.records.complete_dispense(intent, outcome.tag)
            if result is None:  # settled by another path first (a reconcile)
                raise CirculationRefused(_REFUSALS["unknown"])
            self.show(f"Enjoy your book! Due {result.due.isoformat()}.")
            if outcome.tag and outcome.tag != barcode:
                self.events.audit_later("dispense")
            return result
        if outcome.result == "unknown":
            # Keep the intent open: the controller's late ITEM_TAKEN or
            # ITEM_RETRACTED, or its log at the next reconcile, settles it.
            logger.warning("dispense of %s from slot %d: outcome unknown (%s)", barcode,
                           outcome.slot, outcome.reason)
            raise CirculationRefused(_REFUSALS["unknown"])
        self.records.fail_dispense(intent, f"{outcome.result} {outcome.reason}".strip())
        logger.warning("dispense of %s from slot %d: %s %s", barcode, outcome.slot,
                       outcome.result, outcome.reason)
        if outcome.result == "jam":
            self.raise_jam(outcome.slot)
        elif outcome.result == "empty":
            self.events.audit_later("dispense")
        self.show(_REFUSALS.get(outcome.result, _REFUSALS["error"]).message)
        raise CirculationRefused(_REFUSALS.get(outcome.result, _REFUSALS["error"]))

    def raise_jam(self, slot: int) -> None:
        """A slot jammed: out of order (not offered) until the technician's next visit."""
        if self.records.raise_fault("jam", f"slot {slot} jammed during a dispense", slot):
            self.notify_faults()

    # -- the technician ----------------------------------------------------------

    def unlock_service_door(self, seconds: int | None = None) -> None:
        """Let a technician open the service door (HardwareError if the controller refuses)."""
        self.driver.unlock_service_door(seconds or self.t.unlock_seconds)

    def set_returns(self, open_: bool) -> None:
        """Open or close the return chute (staff); HardwareError if the bin is full."""
        self.driver.set_chute(open_)
        self.refresh()

    def adopt_controller(self) -> None:
        """A new controller board was fitted: forget the old one's serial; the next is pinned."""
        self.records.unpin_serial()
        if self.records.clear_fault("controller_mismatch", detail="controller adopted"):
            self.notify_faults()

    def audit(self) -> dict[str, Any]:
        """Scan the slots now and make the records follow (staff); returns what changed."""
        with self.lock:
            res = recovery.audit(self, reason="reconcile")
        return {"loaded": res.loaded, "removed": res.removed, "missing": res.missing}

    # -- the link and the identity ---------------------------------------------------

    def _check_identity(self, info: dict[str, Any]) -> str | None:
        """Refuse a controller other than the one this node was set up with."""
        serial = str(info.get("serial"))
        pinned = self.records.pinned_serial()
        if pinned is None:
            self.records.pin_serial(serial)
            logger.info("controller %s pinned as this machine's", serial)
            return None
        if serial != pinned:
            reason = (f"controller {serial} on {self.driver.port} is not this machine's "
                      f"({pinned}); a technician must adopt it")
            if self.records.raise_fault("controller_mismatch", reason):
                self.notify_faults()
            return reason
        return None

    def _on_link(self, online: bool) -> None:
        """After each handshake: settle what was left open, then serve. Dispatch thread."""
        if not online:
            self._offline_since = self._offline_since or time.monotonic()
            self.notify_faults()  # the node's status says "controller offline" at once
            return
        self._reconcile()

    def _reconcile(self) -> None:
        try:
            with self.lock:
                session = self.driver.handshakes
                settled = recovery.reconcile(self)
                self.controller = settled.status
                self._reconciled = session
        except HardwareError as exc:
            logger.warning("reconcile failed (%s); trying again in %g s", exc, RECONCILE_RETRY)
            self._reconcile_failed_at = time.monotonic()
            return
        self._reconcile_failed_at = None
        self._offline_since = None
        self.events.after_reconcile()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                self._tick()
            except Exception:
                logger.exception("machine watch failed; going on")

    def _tick(self) -> None:
        now = time.monotonic()
        failed = self._reconcile_failed_at
        if failed is not None and self.online and now - failed >= RECONCILE_RETRY:
            self._reconcile()
        since = self._offline_since
        if since is not None and now - since >= self.t.controller_lost_after and \
                self.records.raise_fault("controller_lost", "the controller has not answered for "
                                         f"{self.t.controller_lost_after:g} s "
                                         f"({self.driver.problem or 'no reply'})"):
            self.notify_faults()
        opened = self.door_opened_at
        if opened is not None and now - opened >= self.t.door_open_limit and \
                self.records.raise_fault("door_left_open", "the service door has been open for "
                                         f"{(now - opened) / 60:.0f} min"):
            self.notify_faults()
        s = self.session
        if s is not None and now - s.since >= self.t.session_seconds:
            self.end_session("Welcome! Present your card to borrow a book.")

    # -- what the machine shows and says -------------------------------------------

    def show(self, text: str) -> None:
        """Put ``text`` on the machine's display (best effort) and keep it for the kiosk."""
        self.message = text
        try:
            self.driver.display(text)
        except HardwareError as exc:
            logger.debug("display: %s", exc)

    def refresh(self) -> dict[str, Any]:
        """Ask the controller for its STATUS and keep it (an empty dict when offline)."""
        try:
            self.controller = self.driver.status()
        except HardwareError as exc:
            logger.debug("status: %s", exc)
        return self.controller

    def fault_names(self) -> list[str]:
        """Active faults as short strings: "jam (slot 3)", "bin_full", ..."""
        return [f.kind + (f" (slot {f.slot})" if f.slot is not None else "")
                for f in self.records.active_faults()]

    def notify_faults(self) -> None:
        """Tell ``on_faults`` the current active faults."""
        if self.on_faults is not None:
            try:
                self.on_faults(self.fault_names())
            except Exception:
                logger.exception("on_faults failed")

    @property
    def returns_open(self) -> bool:
        """True when a book put in the chute would be taken."""
        return self.returns_closed_reason() is None

    @property
    def bin_full(self) -> bool | None:
        """True when the return bin is full; None while the controller's state is unknown."""
        return bool(self.controller.get("bin_full")) if self.online and self.controller else None

    @property
    def out_of_order(self) -> bool:
        """True while the controller answers but the machine cannot lend (settling after a
        reconnect, or a technician at work); ``online`` False says the rest."""
        return self.online and (not self.ready or self.controller.get("door") == "open")

    def returns_closed_reason(self) -> str | None:
        """Why the machine takes no returns now, or None when it does."""
        ctl = self.controller
        if not self.online:
            return "the machine is offline"
        if ctl.get("bin_full"):
            return "the return bin is full"
        if ctl.get("chute") == "closed":
            return "returns are closed at this machine"
        return None

    def summary(self) -> dict[str, Any]:
        """The hardware for the node's MQTT status (protocol MachineStatusSchema).

        What the controller last said (bin level, chute, door), kept while it is
        offline: ``controller_online`` tells whether it is live. No reader, no
        database: the sync agent calls this from its own threads.
        """
        ctl = self.controller
        slots = self.driver.info.get("slots")

        def count(key: str) -> int | None:
            value = ctl.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        door = ctl.get("door")
        return {"controller_online": self.online,
                "slots": slots if isinstance(slots, int) else None,
                "bin": count("bin"), "bin_capacity": count("bin_capacity"),
                "returns_open": self.returns_open if ctl or not self.online else None,
                "door": door if door in ("open", "closed") else None}

    def status(self) -> dict[str, Any]:
        """The machine for /api/status and the kiosk: link, faults, bin, returns, door."""
        ctl, info = self.controller, self.driver.info
        known = self.online and bool(ctl)
        s = self.session_info()
        return {
            "online": self.online, "ready": self.ready,
            "problem": self.driver.problem or None,
            "controller": {k: info.get(k) for k in ("serial", "fw", "slots", "boot_id")},
            "faults": [{"kind": f.kind, "slot": f.slot, "detail": f.detail,
                        "since": f.raised_at.isoformat()} for f in self.records.active_faults()],
            "bin": {"count": ctl.get("bin"), "capacity": ctl.get("bin_capacity"),
                    "full": bool(ctl.get("bin_full"))} if known else None,
            "returns_open": self.returns_open, "out_of_order": self.out_of_order,
            "returns_closed_reason": self.returns_closed_reason(),
            "door": ctl.get("door") if known else None,
            "door_locked": ctl.get("locked") if known else None,
            "delivery": ctl.get("delivery") if known else None,
            "open_intents": len(self.records.open_dispenses()),
            "message": self.message,
            # The status is public: the card only as its last digits, as the kiosk shows it.
            "session": {"card_hint": "…" + s["card"][-4:], "pin_ok": s["pin_ok"]} if s else None,
            "returns_accepted": self.returns_accepted,
            "returns_rejected": self.returns_rejected,
        }
