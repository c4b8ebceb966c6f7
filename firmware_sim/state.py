"""The machine's physical state, as the controller keeps it in a JSON file across power cuts.

What is physical survives a power cut: which book is in which slot, in the
delivery door or in the return bin; whether the service door and the return
chute are open; and the last few dispenses and chute decisions with their
outcomes (the host asks for them after a crash, to settle an intent it wrote
but could not close). What lives in RAM does not: queued events, the card in
the reader, a book waiting in the chute for the host's decision.

The file is written atomically (tmp file, fsync, rename, fsync of the
directory) on every change, so a reader of the file -- or the controller
booting after a power cut -- sees the old state or the new one, never half.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# The return bin of the machines in service holds about 40 books.
BIN_CAPACITY: Final = 40
# Outcomes kept per log: the host settles an open intent right after each
# handshake and never runs two dispenses at once, so the last one is what it
# asks about; eight leave a margin for a host that was away a while.
LOG_KEEP: Final = 8


@dataclass
class MachineState:
    """Everything that is still true after the power comes back."""

    serial: str
    slots: dict[int, str | None]
    bin: list[str] = field(default_factory=list)
    bin_capacity: int = BIN_CAPACITY
    delivery: dict[str, Any] | None = None  # {"slot", "tag", "intent"} while a book waits
    door_open: bool = False
    door_opens: int = 0  # times the service door was opened, ever: a host tells visits by it
    chute_open: bool = True
    # The bin's level sensor says full though it may hold fewer books (a book
    # stuck across the opening); only emptying the bin clears it.
    bin_blocked: bool = False
    dispenses: list[dict[str, Any]] = field(default_factory=list)
    returns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bin_full(self) -> bool:
        """True when the bin can take no more books."""
        return self.bin_blocked or len(self.bin) >= self.bin_capacity

    def where(self, tag: str) -> str:
        """Where ``tag`` is inside the machine ("slot 3", "delivery door", ...), or ""."""
        for n, t in self.slots.items():
            if t == tag:
                return f"slot {n}"
        if self.delivery and self.delivery["tag"] == tag:
            return "delivery door"
        if tag in self.bin:
            return "return bin"
        return ""

    def slot_map(self) -> dict[str, str | None]:
        """The slots as the wire and the file carry them: {"1": tag or None, ...}."""
        return {str(n): t for n, t in sorted(self.slots.items())}

    def log_dispense(self, intent: str | None, slot: int, tag: str | None,
                     outcome: str) -> None:
        """Record (or update) the outcome of the dispense ``intent``."""
        _log(self.dispenses, {"intent": intent, "slot": slot, "tag": tag, "outcome": outcome})

    def log_return(self, intent: str | None, tag: str, outcome: str) -> None:
        """Record the outcome of a book read in the chute."""
        _log(self.returns, {"intent": intent, "tag": tag, "outcome": outcome})

    def to_doc(self) -> dict[str, Any]:
        """The JSON document written to the state file."""
        return {"serial": self.serial, "slots": self.slot_map(), "bin": list(self.bin),
                "bin_capacity": self.bin_capacity, "delivery": self.delivery,
                "door_open": self.door_open, "door_opens": self.door_opens,
                "chute_open": self.chute_open,
                "bin_blocked": self.bin_blocked, "dispenses": list(self.dispenses),
                "returns": list(self.returns)}


def _log(entries: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    intent = entry["intent"]
    for old in entries:
        if intent is not None and old["intent"] == intent:
            old.update(entry)
            return
    entries.append(entry)
    del entries[:-LOG_KEEP]


def new_serial() -> str:
    """A controller board's serial number, fixed for its life (kept in the state file)."""
    return "KS-" + secrets.token_hex(4).upper()


def load_state(path: Path, slots: int, bin_capacity: int = BIN_CAPACITY) -> MachineState:
    """The state file's content, or a new machine with ``slots`` empty slots.

    Older files (slots, bin, bin_capacity, delivery only) are read as they are:
    the missing parts take their defaults and a serial number is drawn.
    """
    if not path.exists():
        return MachineState(new_serial(), {n: None for n in range(1, slots + 1)},
                            bin_capacity=bin_capacity)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("slots"), dict):
        raise ValueError("the state file holds no slot map")
    return MachineState(
        serial=str(doc.get("serial") or new_serial()),
        slots={int(k): v for k, v in doc["slots"].items()},
        bin=list(doc.get("bin", [])),
        bin_capacity=int(doc.get("bin_capacity", bin_capacity)),
        delivery=doc.get("delivery"),
        door_open=bool(doc.get("door_open", False)),
        door_opens=int(doc.get("door_opens", 0)),
        chute_open=bool(doc.get("chute_open", True)),
        bin_blocked=bool(doc.get("bin_blocked", False)),
        dispenses=list(doc.get("dispenses", [])),
        returns=list(doc.get("returns", [])),
    )


def save_state(path: Path, state: MachineState) -> None:
    """Write ``state`` atomically: a reader of the file sees the old or the new state."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(state.to_doc(), fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
