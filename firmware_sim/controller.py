"""The vending machine's controller as a state machine: slots, doors, return chute, bin, pads.

Sans-IO like the link under it: every method takes ``now`` (monotonic seconds)
and the owner writes ``data_to_send()`` to the line. The physical state lives
in ``firmware_sim.state`` and is written to its JSON file atomically on every
change, so a killed controller comes back with its books where they were.
Not thread-safe: the runner holds one lock around it.

Each dispense and each chute decision is logged in the state file with its
outcome and the host's intent id; the host asks for that log (``STATUS``) after
a crash to learn how a dispense it could not follow ended.
"""
from __future__ import annotations

import logging
import random
import re
import secrets
from collections import Counter
from pathlib import Path
from typing import Any, Final

from firmware_sim.faults import WIRE_STEPS, FaultConfig, Hang
from firmware_sim.link import Link, Outgoing
from firmware_sim.state import BIN_CAPACITY, load_state, save_state
from protocol.frames import ACK_TIMEOUT, PROTO_VERSION, RETRIES, Cmd

logger = logging.getLogger(__name__)

FIRMWARE: Final = "kitap-sim 0.2"
DEFAULT_SLOTS: Final = 60
# A slot scan of 120 slots with 24-character tags still fits in one frame.
MAX_SLOTS: Final = 120
# A reader needs a few seconds to reach into the door; 20 s and the book goes back
# in before someone else can walk off with it.
TAKE_TIMEOUT: Final = 20.0
# How long a book in the chute waits for the host's accept/reject before it is
# pushed back out; a live host answers in milliseconds.
RETURN_TIMEOUT: Final = 10.0
# After SERVICE_UNLOCK the technician has this long to open the door, then it
# locks again: an unlocked door nobody opened must not stay unlocked overnight.
UNLOCK_SECONDS: Final = 60
MAX_UNLOCK_SECONDS: Final = 600
# Outcomes of chute reads kept for the control socket to collect; older ones go.
KEEP_RETURNS: Final = 100
# The PIN pad takes 4 to 8 digits, then the reader presses OK.
PIN_RE: Final = re.compile(r"^\d{4,8}$")
# Physical facts the host must learn even after the link was down: they are kept
# and offered again. Cards, PINs, chute reads and replies are stale by then.
FACTS: Final = frozenset({Cmd.ITEM_DISPENSED, Cmd.ITEM_TAKEN, Cmd.JAM, Cmd.DISPENSE_FAILED,
                          Cmd.ITEM_RETRACTED, Cmd.BIN_FULL, Cmd.SERVICE_DOOR})


class ControllerError(Exception):
    """A technician's or reader's action the machine refuses (e.g. a locked door)."""


class Controller:
    """One machine controller: answers the host's commands and raises its events."""

    def __init__(self, state_path: str | Path, *, slots: int = DEFAULT_SLOTS,
                 take_timeout: float = TAKE_TIMEOUT, auto_take: float | None = None,
                 bin_capacity: int = BIN_CAPACITY, ack_timeout: float = ACK_TIMEOUT,
                 retries: int = RETRIES, faults: FaultConfig | None = None) -> None:
        self.state_path = Path(state_path)
        self.state = load_state(self.state_path, slots, bin_capacity)
        if len(self.state.slots) > MAX_SLOTS:
            raise ControllerError(f"{len(self.state.slots)} slots: at most {MAX_SLOTS}")
        self.faults = faults or FaultConfig()
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - faults, not secrets
        self.hang_at = self.faults.hang_at
        self.hung_on_wire: str | None = None  # a wire step was reached: stop after the flush
        self.take_timeout = take_timeout
        self.auto_take = auto_take
        self.boot_id = secrets.token_hex(4)
        self.display = ""
        self.armed: set[str] = set()  # on-demand faults waiting for their operation
        self.handled: Counter[str] = Counter()  # host commands carried out, by name
        self._take_deadline: float | None = None
        self._auto_take_at: float | None = None
        self._return: dict[str, Any] | None = None  # the book in the chute
        self._return_ids = 0
        self.returns: dict[int, dict[str, Any]] = {}  # outcome of each insert_return
        self._unlocked_until: float | None = None
        self._link = Link(self._handle, ack_timeout=ack_timeout, retries=retries,
                          on_drop=self._dropped, on_transmit=self._transmitted)
        self._link.send(Cmd.POWER_UP, {"boot_id": self.boot_id})
        self._boot()

    def _boot(self) -> None:
        st = self.state
        for slot in self.faults.empty_slots:
            if st.slots.get(slot):
                logger.warning("slot %d is empty at boot (%s is not there)", slot, st.slots[slot])
                st.slots[slot] = None
        if st.delivery is not None:
            self._retract_on_boot()
        if st.bin_full and st.chute_open:
            st.chute_open = False
        self._save()
        logger.info("controller %s up: boot %s, %d slots (%d loaded), bin %d/%d, door %s",
                    st.serial, self.boot_id, len(st.slots),
                    sum(1 for t in st.slots.values() if t), len(st.bin), st.bin_capacity,
                    "OPEN" if st.door_open else "closed")

    # -- the line -------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host."""
        self._link.receive(data, now)

    def tick(self, now: float) -> None:
        """Run the timers: retransmits, take timeout, auto-take, chute timeout, door lock."""
        if self.state.delivery is not None:
            if self._auto_take_at is not None and now >= self._auto_take_at:
                self._taken()
            elif self._take_deadline is not None and now >= self._take_deadline:
                self._retract()
        if self._return is not None and now >= self._return["deadline"]:
            logger.info("no decision on %s from the host: pushed back out", self._return["tag"])
            self._end_return("timeout", "the host did not answer")
        if self._unlocked_until is not None and now >= self._unlocked_until:
            logger.info("service door not opened in time: locked again")
            self._unlocked_until = None
        self._link.tick(now)

    def data_to_send(self) -> bytes:
        """Bytes to write to the host now."""
        return self._link.data_to_send()

    @property
    def link_up(self) -> bool:
        """False after the host stopped ACKing, until it is heard again."""
        return self._link.up

    # -- commands from the host ----------------------------------------------

    def _handle(self, cmd: Cmd, doc: dict[str, Any], now: float) -> str | None:
        """Act on one new, valid host command; a string is the NAK's reason."""
        reason = self._act(cmd, doc, now)
        if reason is None:
            self.handled[cmd.name] += 1
        return reason

    def _act(self, cmd: Cmd, doc: dict[str, Any], now: float) -> str | None:
        st = self.state
        if cmd == Cmd.HELLO:
            if doc["proto"] != PROTO_VERSION:
                return f"protocol {doc['proto']} not supported (this controller speaks " \
                       f"{PROTO_VERSION})"
            # The reply carries the boot id: a POWER_UP still queued says nothing new.
            self._link.drop(lambda o: o.cmd == Cmd.POWER_UP)
            self._link.send(Cmd.HELLO_REPLY, {
                "proto": PROTO_VERSION, "fw": FIRMWARE, "slots": len(st.slots),
                "boot_id": self.boot_id, "serial": st.serial})
        elif cmd == Cmd.STATUS:
            self._link.send(Cmd.STATUS_REPLY, self.status(logs=bool(doc.get("logs"))))
        elif cmd == Cmd.SLOT_SCAN:
            self._link.send(Cmd.SLOT_SCAN_RESULT, {"slots": st.slot_map()})
        elif cmd == Cmd.DISPLAY:
            self.display = doc["text"]
        elif cmd == Cmd.DISPENSE:
            return self._dispense(doc["slot"], doc.get("intent"), now)
        elif cmd in (Cmd.ACCEPT_RETURN, Cmd.REJECT_RETURN):
            return self._decide_return(cmd, doc)
        elif cmd == Cmd.CHUTE_OPEN:
            if st.bin_full:
                return "the return bin is full"
            st.chute_open = True
            self._save()
        elif cmd == Cmd.CHUTE_CLOSE:
            st.chute_open = False
            self._save()
        elif cmd == Cmd.SERVICE_UNLOCK:
            seconds = doc.get("seconds") or UNLOCK_SECONDS
            if not 0 < seconds <= MAX_UNLOCK_SECONDS:
                return f"seconds must be 1..{MAX_UNLOCK_SECONDS}"
            if not st.door_open:
                self._unlocked_until = now + seconds
                logger.info("service door unlocked for %d s", seconds)
        elif cmd == Cmd.SERVICE_LOCK:
            if st.door_open:
                return "the service door is open: it locks when it is closed"
            self._unlocked_until = None
        else:
            return f"{cmd.name} is not a host command"
        return None

    def status(self, logs: bool = False) -> dict[str, Any]:
        """The STATUS_REPLY payload: everything but the slots (SLOT_SCAN has those).

        The dispense and return logs (a kilobyte) only when asked: the heartbeat
        stays a short frame, which matters on a noisy line.
        """
        st = self.state
        doc = {"boot_id": self.boot_id, "bin": len(st.bin), "bin_capacity": st.bin_capacity,
               "bin_full": st.bin_full, "door": "open" if st.door_open else "closed",
               "door_opens": st.door_opens,
               "locked": not st.door_open and self._unlocked_until is None,
               "chute": "open" if st.chute_open else "closed",
               "chute_tag": self._return["tag"] if self._return else None,
               "delivery": st.delivery}
        if logs:
            doc.update(dispenses=list(st.dispenses), returns=list(st.returns))
        return doc

    def _dispense(self, slot: int, intent: str | None, now: float) -> str | None:
        st = self.state
        self._step("dispense_received")
        if slot not in st.slots:
            return f"no slot {slot} (this machine has 1..{len(st.slots)})"
        if st.door_open:
            return "the service door is open"
        if st.delivery is not None:
            return f"busy: the book from slot {st.delivery['slot']} is in the delivery door"
        done = next((d for d in st.dispenses if intent and d["intent"] == intent), None)
        if done is not None:
            return f"intent {intent} was already carried out ({done['outcome']})"
        ref = {"intent": intent} if intent else {}
        if "jam" in self.armed or self._rng.random() < self.faults.jam_rate:
            self.armed.discard("jam")
            logger.warning("slot %d jammed", slot)
            st.log_dispense(intent, slot, st.slots[slot], "jam")
            self._save()
            self._link.send(Cmd.JAM, {"slot": slot, **ref}, fact=True)
            return None
        tag = st.slots[slot]
        if tag is None:
            st.log_dispense(intent, slot, None, "empty")
            self._save()
            self._link.send(Cmd.DISPENSE_FAILED, {"slot": slot, "reason": "empty", **ref},
                            fact=True)
            return None
        st.slots[slot] = None
        st.delivery = {"slot": slot, "tag": tag, "intent": intent}
        st.log_dispense(intent, slot, tag, "in_door")
        self._save()
        self._step("book_in_door")
        self._take_deadline = now + self.take_timeout
        no_take = "no_take" in self.armed
        self.armed.discard("no_take")
        self._auto_take_at = (now + self.auto_take
                              if self.auto_take is not None and not no_take else None)
        logger.info("slot %d: %s in the delivery door", slot, tag)
        self._link.send(Cmd.ITEM_DISPENSED, {"slot": slot, "tag": tag, **ref}, fact=True)
        return None

    def _end_delivery(self, outcome: str) -> tuple[int, str, dict[str, Any]]:
        st = self.state
        assert st.delivery is not None
        slot, tag, intent = st.delivery["slot"], st.delivery["tag"], st.delivery.get("intent")
        st.delivery = None
        st.log_dispense(intent, slot, tag, outcome)
        self._take_deadline = self._auto_take_at = None
        return slot, tag, ({"intent": intent} if intent else {})

    def _taken(self) -> None:
        slot, tag, ref = self._end_delivery("taken")
        self._save()
        self._step("book_taken")
        logger.info("slot %d: %s taken", slot, tag)
        self._link.send(Cmd.ITEM_TAKEN, {"slot": slot, "tag": tag, **ref}, fact=True)

    def _retract(self) -> None:
        slot, tag, ref = self._end_delivery("retracted")
        self.state.slots[slot] = tag
        self._save()
        self._step("book_retracted")
        logger.info("slot %d: %s not taken, back in its slot", slot, tag)
        self._link.send(Cmd.ITEM_RETRACTED, {"slot": slot, "tag": tag, **ref}, fact=True)

    def _retract_on_boot(self) -> None:
        # Power came back with a book in the door: the door mechanism pulls it back.
        st = self.state
        assert st.delivery is not None
        if st.slots.get(st.delivery["slot"]) is not None:
            logger.error("book %s in the door but slot %s is occupied: left in the door",
                         st.delivery["tag"], st.delivery["slot"])
            return
        self._retract()

    def _decide_return(self, cmd: Cmd, doc: dict[str, Any]) -> str | None:
        st = self.state
        ret = self._return
        if ret is None or ret["tag"] != doc["tag"]:
            return f"no return of {doc['tag']!r} is waiting in the chute"
        if cmd == Cmd.REJECT_RETURN:
            self.display = doc["reason"]
            self._end_return("rejected", doc["reason"])
            return None
        st.bin.append(ret["physical"])
        st.log_return(doc.get("intent"), ret["tag"], "accepted")
        full = st.bin_full
        if full:
            st.chute_open = False
        self._save()
        self._step("return_binned")
        self._end_return("accepted", "")
        if full:
            logger.warning("the return bin is full (%d/%d): chute closed", len(st.bin),
                           st.bin_capacity)
            self._link.send(Cmd.BIN_FULL, {"bin": len(st.bin), "bin_capacity": st.bin_capacity},
                            fact=True)
        return None

    def _end_return(self, outcome: str, reason: str) -> None:
        assert self._return is not None
        ret, self._return = self._return, None
        self.returns[ret["id"]] = {"outcome": outcome, "tag": ret["tag"], "reason": reason}
        for old in list(self.returns)[:-KEEP_RETURNS]:
            del self.returns[old]
        if outcome != "accepted":  # an accepted one was logged with the bin
            self.state.log_return(None, ret["tag"], outcome)
            self._save()
        logger.info("return of %s: %s %s", ret["tag"], outcome, reason)
        # A chute read the host never got is stale now.
        self._link.drop(lambda o: o.cmd == Cmd.RETURN_ITEM_READ and o.seq is None
                        and o.payload["tag"] == ret["tag"])

    def _dropped(self, o: Outgoing) -> None:
        if (o.cmd == Cmd.RETURN_ITEM_READ and self._return is not None
                and self._return["tag"] == o.payload["tag"]):
            self._end_return("no_answer", "the host is not answering")

    def _transmitted(self, o: Outgoing) -> None:
        for step, cmd in WIRE_STEPS.items():
            if self.hang_at == step and o.cmd == cmd:
                self.hung_on_wire = step

    def _step(self, name: str) -> None:
        if self.hang_at == name:
            raise Hang(name)

    # -- the reader -----------------------------------------------------------

    def present_card(self, card: str, now: float) -> None:
        """A reader holds a card to the reader."""
        if not card:
            raise ControllerError("card must be a non-empty string")
        self._link.send(Cmd.CARD_PRESENTED, {"card": card})
        self._link.tick(now)

    def enter_pin(self, pin: str, now: float) -> None:
        """A reader types a PIN on the pad and presses OK."""
        if not PIN_RE.match(pin):
            raise ControllerError("a PIN is 4 to 8 digits")
        self._link.send(Cmd.PIN_ENTERED, {"pin": pin})
        self._link.tick(now)

    def insert_return(self, tag: str, now: float, timeout: float = RETURN_TIMEOUT) -> int:
        """A book goes into the chute; returns an id for ``returns`` (outcome when decided)."""
        st = self.state
        if not tag:
            raise ControllerError("tag must be a non-empty string")
        if self._return is not None:
            raise ControllerError(f"the chute is busy with {self._return['tag']}")
        where = st.where(tag)
        if where:
            raise ControllerError(f"{tag} is already inside this machine ({where})")
        self._return_ids += 1
        rid = self._return_ids
        if not st.chute_open:
            reason = "the return bin is full" if st.bin_full else "returns are closed"
            self.returns[rid] = {"outcome": "refused", "tag": tag, "reason": reason}
            logger.info("chute closed: %s not taken (%s)", tag, reason)
            return rid
        read = tag
        if "misread" in self.armed or self._rng.random() < self.faults.misread_rate:
            self.armed.discard("misread")
            read = "E2-" + secrets.token_hex(6)  # a tag that no library wrote
            logger.warning("chute read %s as %s", tag, read)
        self._return = {"id": rid, "tag": read, "physical": tag, "deadline": now + timeout}
        self._link.send(Cmd.RETURN_ITEM_READ, {"tag": read})
        self._link.tick(now)
        return rid

    def take_item(self, now: float) -> str:
        """The reader takes the book from the delivery door; returns its tag."""
        if self.state.delivery is None:
            raise ControllerError("no book is waiting in the delivery door")
        tag = str(self.state.delivery["tag"])
        self._taken()
        self._link.tick(now)
        return tag

    # -- the technician -------------------------------------------------------

    def open_door(self, now: float, *, key: bool = False) -> None:
        """Open the service door: unlocked by the host first, or with the mechanical key."""
        st = self.state
        if st.door_open:
            raise ControllerError("the service door is already open")
        if self._unlocked_until is None and not key:
            raise ControllerError("the service door is locked")
        st.door_open = True
        st.door_opens += 1
        self._unlocked_until = None
        self._save()
        logger.info("service door opened%s", " with the key" if key else "")
        self._link.send(Cmd.SERVICE_DOOR, {"open": True}, fact=True)
        self._link.tick(now)

    def close_door(self, now: float) -> None:
        """Close the service door; it locks by itself."""
        st = self.state
        if not st.door_open:
            raise ControllerError("the service door is not open")
        st.door_open = False
        self._save()
        logger.info("service door closed and locked")
        self._link.send(Cmd.SERVICE_DOOR, {"open": False}, fact=True)
        self._link.tick(now)

    def _need_open_door(self) -> None:
        if not self.state.door_open:
            raise ControllerError("open the service door first")

    def load(self, slot: int, tag: str) -> None:
        """A technician puts a book into an empty slot (the door must be open)."""
        st = self.state
        self._need_open_door()
        if slot not in st.slots:
            raise ControllerError(f"no slot {slot} (this machine has 1..{len(st.slots)})")
        if not tag:
            raise ControllerError("tag must be a non-empty string")
        if st.slots[slot] is not None:
            raise ControllerError(f"slot {slot} already holds {st.slots[slot]}")
        where = st.where(tag)
        if where:
            raise ControllerError(f"{tag} is already inside this machine ({where})")
        st.slots[slot] = tag
        self._save()
        logger.info("slot %d loaded with %s", slot, tag)

    def remove(self, slot: int) -> str:
        """A technician takes the book out of a slot; returns its tag."""
        st = self.state
        self._need_open_door()
        tag = st.slots.get(slot)
        if tag is None:
            raise ControllerError(f"slot {slot} holds no book")
        st.slots[slot] = None
        self._save()
        logger.info("slot %d: %s removed", slot, tag)
        return tag

    def empty_bin(self) -> list[str]:
        """A technician empties the return bin; returns the books taken out."""
        st = self.state
        self._need_open_door()
        books, st.bin = st.bin, []
        st.bin_blocked = False
        self._save()
        logger.info("return bin emptied: %d books", len(books))
        return books

    def arm_fault(self, kind: str, now: float, slot: int | None = None) -> None:
        """Make the machine fail the way ``kind`` says (see faults.FAULT_KINDS)."""
        st = self.state
        if kind in ("jam", "no_take", "misread"):
            self.armed.add(kind)
        elif kind == "vanish":
            if slot is None or st.slots.get(slot) is None:
                raise ControllerError("vanish needs a slot that holds a book")
            logger.warning("slot %d: %s vanished", slot, st.slots[slot])
            st.slots[slot] = None
            self._save()
        elif kind == "bin_full":
            st.bin_blocked = True
            st.chute_open = False
            self._save()
            self._link.send(Cmd.BIN_FULL, {"bin": len(st.bin), "bin_capacity": st.bin_capacity},
                            fact=True)
            self._link.tick(now)
        else:
            raise ControllerError(f"unknown fault {kind!r} (known: jam, no_take, misread, "
                                  "vanish, bin_full)")
        logger.info("fault: %s%s", kind, f" (slot {slot})" if slot is not None else "")

    def snapshot(self) -> dict[str, Any]:
        """Everything a test or a person may want to see."""
        st = self.state
        return {"serial": st.serial, "slots": st.slot_map(), "bin": list(st.bin),
                "bin_capacity": st.bin_capacity, "bin_full": st.bin_full,
                "delivery": st.delivery, "display": self.display, "boot_id": self.boot_id,
                "link_up": self._link.up, "door_open": st.door_open,
                "locked": not st.door_open and self._unlocked_until is None,
                "chute_open": st.chute_open,
                "chute_tag": self._return["tag"] if self._return else None,
                "faults": sorted(self.armed), "handled": dict(self.handled),
                "dispenses": list(st.dispenses), "returns": list(st.returns),
                "naks_sent": self._link.naks_sent,
                "pending_events": [o.cmd.name for o in self._link.pending()]}

    def _save(self) -> None:
        save_state(self.state_path, self.state)
