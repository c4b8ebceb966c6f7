"""Hybrid logical clock: wall-clock milliseconds plus a counter, sortable as a string.

Every event carries the node's HLC beside its wall-clock timestamp. The HLC never
goes backwards on a node, even when the wall clock does, and it moves past any
clock it has seen from the cloud, so the cloud can order events from different
nodes and notice a node whose wall clock is skewed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# A counter beyond this within one millisecond means something is badly wrong.
MAX_COUNTER = 0xFFFF


@dataclass(frozen=True, order=True)
class Timestamp:
    """One HLC reading."""

    wall_ms: int
    counter: int

    def encode(self) -> str:
        """Fixed-width text, so string order is time order."""
        return f"{self.wall_ms:013d}-{self.counter:05d}"

    @classmethod
    def decode(cls, text: str) -> Timestamp:
        """Parse ``encode()``'s output; ValueError on anything else."""
        wall, sep, counter = text.partition("-")
        if not sep or len(wall) != 13 or len(counter) != 5 or not (wall + counter).isdigit():
            raise ValueError(f"not an HLC timestamp: {text!r}")
        return cls(int(wall), int(counter))


class HybridClock:
    """The clock of one node; not thread-safe, the caller serialises (the outbox does)."""

    def __init__(self, now_ms: Callable[[], int] | None = None, last: Timestamp | None = None):
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.last = last or Timestamp(0, 0)

    def now(self) -> Timestamp:
        """A reading for a local event: strictly greater than every earlier one."""
        wall = self._now_ms()
        if wall > self.last.wall_ms:
            self.last = Timestamp(wall, 0)
        else:
            self.last = self._bump(self.last.wall_ms, self.last.counter)
        return self.last

    def observe(self, remote: Timestamp) -> Timestamp:
        """Merge a reading received from elsewhere; the next ``now()`` is past it."""
        wall = self._now_ms()
        top = max(wall, self.last.wall_ms, remote.wall_ms)
        if top == self.last.wall_ms == remote.wall_ms:
            counter = max(self.last.counter, remote.counter)
        elif top == self.last.wall_ms:
            counter = self.last.counter
        elif top == remote.wall_ms:
            counter = remote.counter
        else:
            self.last = Timestamp(top, 0)
            return self.last
        self.last = self._bump(top, counter)
        return self.last

    @staticmethod
    def _bump(wall: int, counter: int) -> Timestamp:
        if counter >= MAX_COUNTER:
            return Timestamp(wall + 1, 0)
        return Timestamp(wall, counter + 1)
