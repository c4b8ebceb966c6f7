"""The simulator's rudeness: faults by configuration, a line that mangles bytes, named steps.

Faults come three ways, as on a bench with real hardware:

- by configuration (``FaultConfig``, from CLI options or a JSON config file):
  a jam rate, a misread rate in the chute, slots that are empty at boot though
  the library thinks them full, line noise, and a step to hang at;
- on demand, through the control socket (``Controller.arm_fault`` and the
  ``line`` and ``reboot`` ops of the runner);
- by killing the process (a power cut), at any moment or -- with ``hang_at`` --
  at exactly one named step, so a test can cut the power there.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Protocol

from protocol.frames import Cmd

logger = logging.getLogger(__name__)

# Named points of the controller's work where ``hang_at`` stops it dead (the
# process keeps its line open and answers nothing), so a test can SIGKILL it
# there. The state file holds what the step name says, and nothing after it.
HANG_STEPS: Final[dict[str, str]] = {
    "dispense_received": "a DISPENSE arrived; nothing moved, no ACK sent",
    "book_in_door": "the book left its slot for the door (saved); no ACK, no ITEM_DISPENSED",
    "dispensed_sent": "ITEM_DISPENSED went out on the line; the book waits in the door",
    "book_taken": "the reader took the book (saved); ITEM_TAKEN not sent",
    "taken_sent": "ITEM_TAKEN went out on the line",
    "book_retracted": "an untaken book went back to its slot (saved); ITEM_RETRACTED not sent",
    "return_binned": "an accepted return dropped into the bin (saved); no ACK sent",
}
# Steps reached when a frame has been written to the line, not inside a command.
WIRE_STEPS: Final[dict[str, Cmd]] = {"dispensed_sent": Cmd.ITEM_DISPENSED,
                                     "taken_sent": Cmd.ITEM_TAKEN}
# Kinds for the control socket's "fault" op (see Controller.arm_fault).
FAULT_KINDS: Final[dict[str, str]] = {
    "jam": "the next dispense jams; the book stays in its slot",
    "no_take": "the next dispensed book is not taken (even with auto-take): it goes back",
    "vanish": "the book in slot N disappears (the library still thinks it is there)",
    "bin_full": "the bin's level sensor says full: chute closed, BIN_FULL sent",
    "misread": "the next book in the chute is read as a tag that is no library's",
}


class Hang(Exception):
    """Raised inside the controller at the configured step; the runner then stops dead."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


def _rate(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {value}")
    return value


@dataclass
class FaultConfig:
    """Faults the simulator applies by itself, from the start."""

    jam_rate: float = 0.0          # probability that a dispense jams
    misread_rate: float = 0.0      # probability that a chute read is garbled
    empty_slots: list[int] = field(default_factory=list)  # emptied at boot, unannounced
    noise: float = 0.0             # per byte: one bit flipped
    drop: float = 0.0              # per byte: lost
    dup: float = 0.0               # per byte: sent twice
    seed: int | None = None        # the line's and the faults' random generator
    hang_at: str | None = None     # a step of HANG_STEPS

    def __post_init__(self) -> None:
        for name in ("jam_rate", "misread_rate", "noise", "drop", "dup"):
            _rate(float(getattr(self, name)), name)
        if self.hang_at is not None and self.hang_at not in HANG_STEPS:
            raise ValueError(f"unknown step {self.hang_at!r} (known: {', '.join(HANG_STEPS)})")


def load_config(path: str | Path) -> dict[str, Any]:
    """The options in a JSON config file: keys are the CLI's long options with underscores.

    Example: ``{"slots": 40, "take_timeout": 5, "jam_rate": 0.05, "noise": 0.001}``.
    ValueError for a file that is not a JSON object.
    """
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a config file holds one JSON object")
    return doc


def fault_config(options: dict[str, Any]) -> FaultConfig:
    """The FaultConfig among ``options`` (other keys are ignored)."""
    names = {f.name for f in fields(FaultConfig)}
    return FaultConfig(**{k: v for k, v in options.items() if k in names and v is not None})


class Port(Protocol):
    """What the runner's loop needs from a line."""

    name: str

    def read(self, timeout: float) -> bytes:
        """Bytes from the host, b"" after ``timeout``; OSError if the line failed."""
        ...

    def write(self, data: bytes) -> None:
        """Send bytes; OSError if the line failed."""
        ...

    def close(self) -> None:
        """Close the line."""
        ...


class NoisyLine:
    """Wraps a Port: flips, drops and doubles bytes both ways; can be unplugged.

    The random generator is seeded, so a run's faults depend only on the seed
    and the bytes that went through (timing changes which bytes those are).
    """

    def __init__(self, port: Port, config: FaultConfig) -> None:
        self.port = port
        self.name = port.name
        self.noise, self.drop, self.dup = config.noise, config.drop, config.dup
        self.connected = True
        self._rng = random.Random(config.seed)  # noqa: S311 - faults, not secrets
        self.counts = {"corrupted": 0, "dropped": 0, "duplicated": 0, "unplugged": 0}

    def set(self, *, noise: float | None = None, drop: float | None = None,
            dup: float | None = None, connected: bool | None = None) -> None:
        """Change the rates (or plug the cable in or out) while running."""
        if noise is not None:
            self.noise = _rate(noise, "noise")
        if drop is not None:
            self.drop = _rate(drop, "drop")
        if dup is not None:
            self.dup = _rate(dup, "dup")
        if connected is not None:
            self.connected = connected
        logger.info("line: noise %g, drop %g, dup %g, %s", self.noise, self.drop, self.dup,
                    "connected" if self.connected else "UNPLUGGED")

    def read(self, timeout: float) -> bytes:
        """Bytes from the host, after the line had its way with them."""
        return self._mangle(self.port.read(timeout))

    def write(self, data: bytes) -> None:
        """Bytes to the host, after the line had its way with them."""
        data = self._mangle(data)
        if data:
            self.port.write(data)

    def close(self) -> None:
        """Close the line under us."""
        self.port.close()

    def _mangle(self, data: bytes) -> bytes:
        if not data:
            return data
        if not self.connected:
            self.counts["unplugged"] += len(data)
            return b""
        if not (self.noise or self.drop or self.dup):
            return data
        out = bytearray()
        rng = self._rng
        for byte in data:
            r = rng.random()
            if r < self.drop:
                self.counts["dropped"] += 1
                continue
            if r < self.drop + self.noise:
                byte ^= 1 << rng.randrange(8)
                self.counts["corrupted"] += 1
            out.append(byte)
            if self.dup and rng.random() < self.dup:
                out.append(byte)
                self.counts["duplicated"] += 1
        return bytes(out)
