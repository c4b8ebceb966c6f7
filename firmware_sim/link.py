"""The controller's end of the serial link, sans-IO: ACK/NAK, duplicates, stop-and-wait.

The rules are in docs/serial-protocol.md. This class holds no port and no clock:
the owner feeds it bytes with ``receive(data, now)``, calls ``tick(now)`` for the
retransmit timer, and writes out what ``data_to_send()`` returns.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from protocol.frames import (
    ACK_TIMEOUT,
    NEED_DATA,
    RETRIES,
    BadFrame,
    Cmd,
    Decoder,
    Frame,
    check_payload,
    describe,
    encode,
)

logger = logging.getLogger(__name__)
trace = logging.getLogger("kitap.serial.trace")

# With the link down, the head of the queue is offered again this often: the host
# may come back at any time, and one frame a second is no burden on a dead line.
PROBE_INTERVAL: Final = 1.0
# Events waiting for a host that does not answer; beyond this the oldest go. A
# real controller's RAM is small; 64 covers hours of a busy machine's facts.
MAX_QUEUE: Final = 64
# Host -> controller commands live in 0x01..0x3F (see protocol.frames.Cmd).
HOST_CMD_MAX: Final = 0x3F

# Returns None to ACK the frame, or the reason to NAK it with.
Handler = Callable[[Cmd, dict[str, Any], float], str | None]


@dataclass
class Outgoing:
    """An event or reply waiting for the host's ACK."""

    cmd: Cmd
    payload: dict[str, Any]
    fact: bool  # kept while the link is down (physical facts); others are dropped
    seq: int | None = None  # given when first sent
    sent_at: float = 0.0
    tries: int = 0


class Link:
    """Stop-and-wait sender and duplicate-detecting receiver for the controller."""

    def __init__(self, handler: Handler, *, ack_timeout: float = ACK_TIMEOUT,
                 retries: int = RETRIES,
                 on_drop: Callable[[Outgoing], None] | None = None,
                 on_transmit: Callable[[Outgoing], None] | None = None) -> None:
        self._handler = handler
        self._on_drop = on_drop
        self._on_transmit = on_transmit
        self.ack_timeout = ack_timeout
        self.retries = retries
        self._decoder = Decoder()
        self._out = bytearray()
        self._queue: deque[Outgoing] = deque()
        self._tx_seq = 0
        self._last_rx_seq: int | None = None
        # Optimistic at boot: POWER_UP gets its full set of tries.
        self.up = True
        self.naks_sent = 0

    # -- output ---------------------------------------------------------------

    def send(self, cmd: Cmd, payload: dict[str, Any], *, fact: bool = False) -> None:
        """Queue a frame for the host; it goes out when the ones before it are ACKed.

        With the link down, only facts are queued: anything else would be stale
        by the time a host listens again, so it is dropped at once.
        """
        if not self.up and not fact:
            o = Outgoing(cmd, payload, fact)
            logger.info("link down: %s %s not sent", cmd.name, payload)
            if self._on_drop:
                self._on_drop(o)
            return
        if len(self._queue) >= MAX_QUEUE:
            oldest = 1 if self._queue[0].seq is not None else 0  # never the one in flight
            lost = self._queue[oldest]
            del self._queue[oldest]
            logger.warning("event queue full: dropping %s %s", lost.cmd.name, lost.payload)
        self._queue.append(Outgoing(cmd, payload, fact))

    def drop(self, predicate: Callable[[Outgoing], bool]) -> None:
        """Forget queued frames (sent or not) that match ``predicate``."""
        kept = deque(o for o in self._queue if not predicate(o))
        dropped = [o for o in self._queue if predicate(o)]
        self._queue = kept
        for o in dropped:
            logger.info("dropping %s %s (not acknowledged)", o.cmd.name, o.payload)
            if self._on_drop:
                self._on_drop(o)

    def pending(self) -> list[Outgoing]:
        """The frames not yet ACKed, oldest first."""
        return list(self._queue)

    def data_to_send(self) -> bytes:
        """Bytes to write to the line now (and forget)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def _emit(self, seq: int, cmd: int, payload: dict[str, Any] | None = None) -> None:
        raw = encode(seq, cmd, payload)
        self._out += raw
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(">>> %s", describe(Frame(seq, cmd, raw[5:-2])))

    def _nak(self, seq: int, reason: str | None = None) -> None:
        self.naks_sent += 1
        self._emit(seq, Cmd.NAK, {"reason": reason} if reason else None)

    def _transmit(self, head: Outgoing, now: float) -> None:
        if head.seq is None:
            head.seq = self._tx_seq
            self._tx_seq = (self._tx_seq + 1) % 256
        head.sent_at = now
        head.tries += 1
        self._emit(head.seq, head.cmd, head.payload)
        if self._on_transmit is not None:
            self._on_transmit(head)

    # -- timers ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send the next frame, or retransmit the outstanding one when its ACK is late."""
        if not self._queue:
            return
        head = self._queue[0]
        if head.seq is None:
            self._transmit(head, now)
            return
        wait = self.ack_timeout if self.up else PROBE_INTERVAL
        if now - head.sent_at < wait:
            return
        if self.up and head.tries > self.retries:
            self._declare_down()
            if self._queue:  # a fact survived: offer it again at the probe rate
                self._queue[0].sent_at = now
            return
        self._transmit(head, now)

    def _declare_down(self) -> None:
        logger.warning("link down: no ACK from the host after %d tries", self.retries + 1)
        self.up = False
        self.drop(lambda o: not o.fact)

    # -- input ----------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Take bytes from the line: ACK/NAK them, and hand new commands to the handler."""
        self._decoder.feed(data)
        while True:
            item = self._decoder.next_frame()
            if item is NEED_DATA:
                break
            if isinstance(item, BadFrame):
                trace.debug("<<< %s", describe(item))
                self._nak(0)
            elif isinstance(item, Frame):
                trace.debug("<<< %s", describe(item))
                self._on_frame(item, now)
        self.tick(now)

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.cmd == Cmd.ACK:
            head = self._queue[0] if self._queue else None
            if head is not None and head.seq == frame.seq:
                self._queue.popleft()
                self._heard(now)
            return
        if frame.cmd == Cmd.NAK:
            self._on_nak(frame, now)
            return
        self._heard(now)
        try:
            doc = check_payload(frame)
            if frame.cmd > HOST_CMD_MAX:
                raise ValueError(f"{Cmd(frame.cmd).name} is not a host command")
        except ValueError as exc:
            logger.warning("refusing frame seq=%d: %s", frame.seq, exc)
            self._nak(frame.seq, str(exc))
            return
        cmd = Cmd(frame.cmd)
        # HELLO opens a session: a restarted host counts from 0 again, so it is never
        # a duplicate (answering it twice is harmless).
        if cmd != Cmd.HELLO and frame.seq == self._last_rx_seq:
            trace.debug("duplicate seq=%d: ACK again, not handled", frame.seq)
            self._emit(frame.seq, Cmd.ACK)
            return
        reason = self._handler(cmd, doc, now)
        if reason is not None:
            logger.info("NAK %s seq=%d: %s", cmd.name, frame.seq, reason)
            self._nak(frame.seq, reason)
            return
        self._last_rx_seq = frame.seq
        self._emit(frame.seq, Cmd.ACK)

    def _on_nak(self, frame: Frame, now: float) -> None:
        head = self._queue[0] if self._queue else None
        if head is None or head.seq is None:
            return
        reason = ""
        if frame.payload:
            try:
                reason = str(frame.json().get("reason", ""))
            except ValueError:
                reason = "?"
        if not reason:  # the host saw a bad frame: ours, most likely
            self._transmit(head, now)
        elif frame.seq == head.seq:
            logger.warning("host refused %s %s: %s", head.cmd.name, head.payload, reason)
            self._queue.popleft()
            self._heard(now)

    def _heard(self, now: float) -> None:
        if not self.up:
            logger.info("link up: the host answers again")
            self.up = True
            if self._queue and self._queue[0].seq is not None:
                head = self._queue[0]
                head.tries = 0
                head.sent_at = now - self.ack_timeout  # resend at the next tick
