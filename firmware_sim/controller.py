"""The vending machine's controller as a state machine: slots, delivery door, return chute.

Sans-IO like the link under it: every method takes ``now`` (monotonic seconds)
and the owner writes ``data_to_send()`` to the line. The physical state (which
book is in which slot, in the delivery door, in the return bin) is written to a
JSON file atomically on every change, so a killed controller comes back with its
books where they were. Not thread-safe: the runner holds one lock around it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Final

from firmware_sim.link import Link, Outgoing
from protocol.frames import ACK_TIMEOUT, PROTO_VERSION, RETRIES, Cmd

logger = logging.getLogger(__name__)

FIRMWARE: Final = "kitap-sim 0.1"
DEFAULT_SLOTS: Final = 60
# A slot scan of 120 slots with 24-character tags still fits in one frame.
MAX_SLOTS: Final = 120
# The return bin of the machines in service holds about 40 books.
BIN_CAPACITY: Final = 40
# A reader needs a few seconds to reach into the door; 20 s and the book goes back
# in before someone else can walk off with it.
TAKE_TIMEOUT: Final = 20.0
# How long a book in the chute waits for the host's accept/reject before it is
# pushed back out; a live host answers in milliseconds.
RETURN_TIMEOUT: Final = 10.0
FAULT_KINDS: Final = ("jam",)
# Outcomes of chute reads kept for the control socket to collect; older ones go.
KEEP_RETURNS: Final = 100
# Physical facts the host must learn even after the link was down: they are kept
# and offered again. Cards, chute reads and replies are stale by then and dropped.
FACTS: Final = frozenset({Cmd.ITEM_DISPENSED, Cmd.ITEM_TAKEN, Cmd.JAM, Cmd.DISPENSE_FAILED,
                          Cmd.ITEM_RETRACTED})


class ControllerError(Exception):
    """A technician's or reader's action the machine refuses (e.g. a full bin)."""


def load_state(path: Path, slots: int, bin_capacity: int = BIN_CAPACITY) -> dict[str, Any]:
    """The state file's content, or ``slots`` empty slots if there is no file yet."""
    if not path.exists():
        return {"slots": {str(n): None for n in range(1, slots + 1)}, "bin": [],
                "bin_capacity": bin_capacity, "delivery": None}
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc.setdefault("bin", [])
    doc.setdefault("bin_capacity", bin_capacity)
    doc.setdefault("delivery", None)
    return dict(doc)


def save_state(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically: a reader of the file sees the old or the new state."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class Controller:
    """One machine controller: answers the host's commands and raises its events."""

    def __init__(self, state_path: str | Path, *, slots: int = DEFAULT_SLOTS,
                 take_timeout: float = TAKE_TIMEOUT, auto_take: float | None = None,
                 bin_capacity: int = BIN_CAPACITY, ack_timeout: float = ACK_TIMEOUT,
                 retries: int = RETRIES) -> None:
        self.state_path = Path(state_path)
        doc = load_state(self.state_path, slots, bin_capacity)
        self.slots: dict[int, str | None] = {int(k): v for k, v in doc["slots"].items()}
        if len(self.slots) > MAX_SLOTS:
            raise ControllerError(f"{len(self.slots)} slots: at most {MAX_SLOTS}")
        self.bin: list[str] = list(doc["bin"])
        self.bin_capacity = int(doc["bin_capacity"])
        self.delivery: dict[str, Any] | None = doc["delivery"]
        self.take_timeout = take_timeout
        self.auto_take = auto_take
        self.boot_id = secrets.token_hex(4)
        self.display = ""
        self.jam_armed = False
        self._take_deadline: float | None = None
        self._auto_take_at: float | None = None
        self._return: dict[str, Any] | None = None  # the book in the chute
        self._return_ids = 0
        self.returns: dict[int, dict[str, Any]] = {}  # outcome of each insert_return
        self._link = Link(self._handle, ack_timeout=ack_timeout, retries=retries,
                          on_drop=self._dropped)
        self._link.send(Cmd.POWER_UP, {"boot_id": self.boot_id})
        if self.delivery is not None:
            self._retract_on_boot()
        self._save()
        logger.info("controller up: boot %s, %d slots (%d loaded), bin %d/%d", self.boot_id,
                    len(self.slots), sum(1 for t in self.slots.values() if t),
                    len(self.bin), self.bin_capacity)

    # -- the line -------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host."""
        self._link.receive(data, now)

    def tick(self, now: float) -> None:
        """Run the timers: retransmits, take timeout, auto-take, chute timeout."""
        if self.delivery is not None:
            if self._auto_take_at is not None and now >= self._auto_take_at:
                self._taken()
            elif self._take_deadline is not None and now >= self._take_deadline:
                self._retract()
        if self._return is not None and now >= self._return["deadline"]:
            logger.info("no decision on %s from the host: pushed back out", self._return["tag"])
            self._end_return("timeout", "the host did not answer")
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
        if cmd == Cmd.HELLO:
            if doc["proto"] != PROTO_VERSION:
                return f"protocol {doc['proto']} not supported (this controller speaks " \
                       f"{PROTO_VERSION})"
            # The reply carries the boot id: a POWER_UP still queued says nothing new.
            self._link.drop(lambda o: o.cmd == Cmd.POWER_UP)
            self._link.send(Cmd.HELLO_REPLY, {"proto": PROTO_VERSION, "fw": FIRMWARE,
                                              "slots": len(self.slots), "boot_id": self.boot_id})
        elif cmd == Cmd.STATUS:
            self._link.send(Cmd.STATUS_REPLY, {
                "slots": self._slot_map(), "bin": len(self.bin),
                "bin_capacity": self.bin_capacity, "door": "closed",
                "delivery": self.delivery})
        elif cmd == Cmd.SLOT_SCAN:
            self._link.send(Cmd.SLOT_SCAN_RESULT, {"slots": self._slot_map()})
        elif cmd == Cmd.DISPLAY:
            self.display = doc["text"]
        elif cmd == Cmd.DISPENSE:
            return self._dispense(doc["slot"], now)
        elif cmd in (Cmd.ACCEPT_RETURN, Cmd.REJECT_RETURN):
            ret = self._return
            if ret is None or ret["tag"] != doc["tag"]:
                return f"no return of {doc['tag']!r} is waiting in the chute"
            if cmd == Cmd.ACCEPT_RETURN:
                self.bin.append(ret["tag"])
                self._end_return("accepted", "")
            else:
                self._end_return("rejected", doc["reason"])
        else:
            return f"{cmd.name} is not a host command"
        return None

    def _dispense(self, slot: int, now: float) -> str | None:
        if slot not in self.slots:
            return f"no slot {slot} (this machine has 1..{len(self.slots)})"
        if self.delivery is not None:
            return f"busy: the book from slot {self.delivery['slot']} is in the delivery door"
        if self.jam_armed:
            self.jam_armed = False
            logger.warning("slot %d jammed", slot)
            self._link.send(Cmd.JAM, {"slot": slot}, fact=True)
            return None
        tag = self.slots[slot]
        if tag is None:
            self._link.send(Cmd.DISPENSE_FAILED, {"slot": slot, "reason": "empty"}, fact=True)
            return None
        self.slots[slot] = None
        self.delivery = {"slot": slot, "tag": tag}
        self._save()
        self._take_deadline = now + self.take_timeout
        self._auto_take_at = now + self.auto_take if self.auto_take is not None else None
        logger.info("slot %d: %s in the delivery door", slot, tag)
        self._link.send(Cmd.ITEM_DISPENSED, {"slot": slot, "tag": tag}, fact=True)
        return None

    def _taken(self) -> None:
        assert self.delivery is not None
        slot, tag = self.delivery["slot"], self.delivery["tag"]
        self.delivery = None
        self._take_deadline = self._auto_take_at = None
        self._save()
        logger.info("slot %d: %s taken", slot, tag)
        self._link.send(Cmd.ITEM_TAKEN, {"slot": slot, "tag": tag}, fact=True)

    def _retract(self) -> None:
        assert self.delivery is not None
        slot, tag = self.delivery["slot"], self.delivery["tag"]
        self.slots[slot] = tag
        self.delivery = None
        self._take_deadline = self._auto_take_at = None
        self._save()
        logger.info("slot %d: %s not taken, back in its slot", slot, tag)
        self._link.send(Cmd.ITEM_RETRACTED, {"slot": slot, "tag": tag}, fact=True)

    def _retract_on_boot(self) -> None:
        # Power came back with a book in the door: the door mechanism pulls it back.
        assert self.delivery is not None
        if self.slots.get(self.delivery["slot"]) is not None:
            logger.error("book %s in the door but slot %s is occupied: left in the door",
                         self.delivery["tag"], self.delivery["slot"])
            return
        self._retract()

    def _end_return(self, outcome: str, reason: str) -> None:
        assert self._return is not None
        ret, self._return = self._return, None
        self.returns[ret["id"]] = {"outcome": outcome, "tag": ret["tag"], "reason": reason}
        for old in list(self.returns)[:-KEEP_RETURNS]:
            del self.returns[old]
        if outcome == "accepted":
            self._save()
        logger.info("return of %s: %s %s", ret["tag"], outcome, reason)
        # A chute read the host never got is stale now.
        self._link.drop(lambda o: o.cmd == Cmd.RETURN_ITEM_READ and o.seq is None
                        and o.payload["tag"] == ret["tag"])

    def _dropped(self, o: Outgoing) -> None:
        if (o.cmd == Cmd.RETURN_ITEM_READ and self._return is not None
                and self._return["tag"] == o.payload["tag"]):
            self._end_return("no_answer", "the host is not answering")

    # -- the reader and the technician ---------------------------------------

    def present_card(self, card: str, now: float) -> None:
        """A reader holds a card to the reader."""
        if not card:
            raise ControllerError("card must be a non-empty string")
        self._link.send(Cmd.CARD_PRESENTED, {"card": card})
        self._link.tick(now)

    def insert_return(self, tag: str, now: float, timeout: float = RETURN_TIMEOUT) -> int:
        """A book goes into the chute; returns an id for ``returns`` (outcome when decided)."""
        if not tag:
            raise ControllerError("tag must be a non-empty string")
        if self._return is not None:
            raise ControllerError(f"the chute is busy with {self._return['tag']}")
        if len(self.bin) >= self.bin_capacity:
            raise ControllerError("the return bin is full")
        where = self._where(tag)
        if where:
            raise ControllerError(f"{tag} is already inside this machine ({where})")
        self._return_ids += 1
        self._return = {"id": self._return_ids, "tag": tag, "deadline": now + timeout}
        self._link.send(Cmd.RETURN_ITEM_READ, {"tag": tag})
        self._link.tick(now)
        return self._return_ids

    def take_item(self, now: float) -> str:
        """The reader takes the book from the delivery door; returns its tag."""
        if self.delivery is None:
            raise ControllerError("no book is waiting in the delivery door")
        tag = str(self.delivery["tag"])
        self._taken()
        self._link.tick(now)
        return tag

    def load(self, slot: int, tag: str) -> None:
        """A technician puts a book into an empty slot."""
        if slot not in self.slots:
            raise ControllerError(f"no slot {slot} (this machine has 1..{len(self.slots)})")
        if not tag:
            raise ControllerError("tag must be a non-empty string")
        if self.slots[slot] is not None:
            raise ControllerError(f"slot {slot} already holds {self.slots[slot]}")
        where = self._where(tag)
        if where:
            raise ControllerError(f"{tag} is already inside this machine ({where})")
        self.slots[slot] = tag
        self._save()
        logger.info("slot %d loaded with %s", slot, tag)

    def arm_fault(self, kind: str) -> None:
        """Make the next operation fail the way ``kind`` says (only "jam" for now)."""
        if kind not in FAULT_KINDS:
            raise ControllerError(f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
        self.jam_armed = True
        logger.info("fault armed: %s", kind)

    def snapshot(self) -> dict[str, Any]:
        """Everything a test or a person may want to see."""
        return {"slots": self._slot_map(), "bin": list(self.bin),
                "bin_capacity": self.bin_capacity, "delivery": self.delivery,
                "display": self.display, "boot_id": self.boot_id, "link_up": self._link.up,
                "chute": self._return["tag"] if self._return else None,
                "faults": ["jam"] if self.jam_armed else [],
                "pending_events": [o.cmd.name for o in self._link.pending()]}

    # -- helpers --------------------------------------------------------------

    def _slot_map(self) -> dict[str, str | None]:
        return {str(n): t for n, t in sorted(self.slots.items())}

    def _where(self, tag: str) -> str:
        for n, t in self.slots.items():
            if t == tag:
                return f"slot {n}"
        if self.delivery and self.delivery["tag"] == tag:
            return "delivery door"
        if tag in self.bin:
            return "return bin"
        return ""

    def _save(self) -> None:
        save_state(self.state_path, {"slots": self._slot_map(), "bin": self.bin,
                                     "bin_capacity": self.bin_capacity,
                                     "delivery": self.delivery})
