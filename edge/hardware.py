"""The edge node's driver for the machine controller: a thin threaded layer over protocol.frames.

Threads, after pyserial's ``serial.threaded``: a supervisor opens the port,
handshakes, sends a heartbeat on a silent line and reconnects after a failure;
a reader per connection turns bytes into frames and ACKs them; a dispatcher
hands unsolicited events to ``on_event`` so a slow handler never delays an ACK.
Callers send with stop-and-wait (one un-ACKed frame at a time). The link rules
are in docs/serial-protocol.md.

``on_event`` receives every new controller frame that no pending ``request`` or
``dispense`` is waiting for: CARD_PRESENTED, RETURN_ITEM_READ, POWER_UP, ... and
also ITEM_DISPENSED (for the log), and late outcomes (ITEM_TAKEN, ITEM_RETRACTED
arriving after ``dispense`` gave up), which the caller must treat as facts.
``on_link(True)`` follows every handshake and ``on_link(False)`` every loss of an
online link, in order with the events (same thread), so the caller can settle
what it could not follow while the controller was away.

Which controller is on the port: ``HELLO_REPLY`` carries the board's serial
number, and ``check_identity`` may refuse it (the driver then stays offline and
keeps retrying). A vanished pty's number can be given to another process by the
kernel; a host configured with that path would otherwise drive whatever opened
it next. The port is also opened exclusively (``flock``), so two nodes can never
drive one controller.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import serial

from protocol.frames import (
    ACK_TIMEOUT,
    NEED_DATA,
    PROTO_VERSION,
    RETRIES,
    BadFrame,
    Cmd,
    Decoder,
    Frame,
    check_payload,
    cmd_name,
    describe,
    encode,
)

logger = logging.getLogger(__name__)
trace = logging.getLogger("kitap.serial.trace")

# A pty that vanished or a controller that reboots: try again every second; an
# open() attempt is cheap and the reader's wait for a machine is short.
RECONNECT_INTERVAL: Final = 1.0
# HELLO_REPLY comes in milliseconds; 2 s also covers HELLO's own retransmits.
HANDSHAKE_TIMEOUT: Final = 2.0
# The reader thread looks at the stop flag this often.
READ_TIMEOUT: Final = 0.05
# A controller that stopped reading must not hang a writer (or the ACKs) forever.
WRITE_TIMEOUT: Final = 1.0
# A silent line gets a STATUS this often, so ``online`` notices a dead controller
# even on a line that reports no error (a cable pulled out of a USB adapter).
HEARTBEAT_INTERVAL: Final = 5.0
REPLY_TIMEOUT: Final = 2.0
# A slot scan of 120 slots is 4 KB: at 115200 baud about 0.4 s on the wire.
SCAN_TIMEOUT: Final = 5.0
# Controllers in service talk at 115200 8N1; ignored by ptys and socket:// URLs.
BAUDRATE: Final = 115200
# Controller -> host frames live in 0x40..0x7F (see protocol.frames.Cmd).
EVENT_CMD_MIN: Final = 0x40

_DISPENSE_ENDS: Final = frozenset({Cmd.ITEM_TAKEN, Cmd.JAM, Cmd.DISPENSE_FAILED,
                                   Cmd.ITEM_RETRACTED})
_REPLIES: Final = frozenset({Cmd.HELLO_REPLY, Cmd.STATUS_REPLY, Cmd.SLOT_SCAN_RESULT})


class HardwareError(Exception):
    """The controller refused a command (NAK with a reason) or could not be reached."""


class LinkDown(HardwareError):
    """The link is down: port closed or failed, no ACK after the retries, not handshaken."""


@dataclass(frozen=True)
class DispenseOutcome:
    """How a DISPENSE ended."""

    # "unknown": DISPENSE may have reached the controller but its outcome did
    # not come back; the caller must settle it from a later ITEM_TAKEN /
    # ITEM_RETRACTED event or a slot scan, never by guessing.
    result: str  # "taken" | "jam" | "empty" | "not_taken" | "offline" | "unknown" | "error"
    slot: int
    tag: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class _LinkChange:
    """Queued with the events: the link came up (after a handshake) or went down."""

    online: bool


class _Waiter:
    """A caller waiting for one controller frame."""

    def __init__(self, match: Callable[[Frame, dict[str, Any]], bool]) -> None:
        self.match = match
        self.done = threading.Event()
        self.frame: Frame | None = None
        self.doc: dict[str, Any] = {}
        self.lost = False  # the link went down before the frame came


class MachineDriver:
    """Talks to one machine controller over a serial port (device path or pyserial URL)."""

    def __init__(self, port: str, *, on_event: Callable[[Frame], None],
                 on_link: Callable[[bool], None] | None = None,
                 check_identity: Callable[[dict[str, Any]], str | None] | None = None,
                 ack_timeout: float = ACK_TIMEOUT, retries: int = RETRIES,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 reconnect_interval: float = RECONNECT_INTERVAL) -> None:
        self.port = port
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.heartbeat_interval = heartbeat_interval
        self.reconnect_interval = reconnect_interval
        self.info: dict[str, Any] = {}  # the last HELLO_REPLY: fw, slots, boot_id, serial
        self._on_event = on_event
        self._on_link = on_link
        self._check_identity = check_identity
        self._serial: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._send_lock = threading.Lock()  # stop-and-wait: one exchange at a time
        self._acks = threading.Condition()
        self._replies: list[Frame] = []  # ACK/NAK frames not yet looked at
        self._tx_seq = 0
        self._last_rx_seq: int | None = None
        self._last_rx_time = 0.0
        self._waiters: list[_Waiter] = []
        self._waiters_lock = threading.Lock()
        self._events: queue.Queue[Frame | _LinkChange | None] = queue.Queue()
        self._online = False
        self._broken = True  # no usable connection
        self._rehandshake = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_problem = ""
        self.bad_frames = 0
        self.handshakes = 0  # successful handshakes so far: a session's number

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (and keep reconnecting); returns at once."""
        if self._threads:
            return
        self._stopping.clear()
        for target, name in ((self._supervise, "hw-supervisor"), (self._dispatch, "hw-events")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Close the port and stop the threads."""
        self._stopping.set()
        self._link_lost("driver stopped", quiet=True)
        if self._threads:
            self._events.put(None)  # the dispatcher ends after the events before it
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()

    @property
    def online(self) -> bool:
        """True when the handshake is done and the link is up."""
        return self._online and not self._broken

    @property
    def problem(self) -> str:
        """Why the controller is not online (the last connection problem), or ""."""
        return "" if self.online else self._last_problem

    def wait_online(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``online``; returns it."""
        deadline = time.monotonic() + timeout
        while not self.online and time.monotonic() < deadline:
            self._stopping.wait(0.02)
        return self.online

    # -- the public operations ------------------------------------------------

    def command(self, cmd: Cmd, payload: dict[str, Any] | None = None) -> None:
        """Send one frame and wait for its ACK; HardwareError on a NAK, LinkDown if offline."""
        if not self.online:
            raise LinkDown("controller offline")
        self._exchange(cmd, payload)

    def request(self, cmd: Cmd, payload: dict[str, Any] | None, reply_cmd: Cmd,
                timeout: float = REPLY_TIMEOUT) -> Frame:
        """Send ``cmd`` and return the ``reply_cmd`` frame that answers it."""
        return self._request(cmd, payload, reply_cmd, timeout, need_online=True)

    def dispense(self, slot: int, *, intent: str | None = None, timeout: float = 60.0,
                 on_accepted: Callable[[], None] | None = None) -> DispenseOutcome:
        """DISPENSE ``slot`` and wait until the book is taken, jams, is missing or goes back.

        ``intent`` (the host's intent id) goes with the command; the controller
        echoes it in the outcome and keeps it in its dispense log, so an outcome
        that is lost can be looked up later (and a DISPENSE sent twice is refused).
        ``on_accepted`` is called once the controller ACKed the command.
        """
        if not self.online:
            return DispenseOutcome("offline", slot, reason="controller offline")
        waiter = self._add_waiter(
            lambda f, d: f.cmd in _DISPENSE_ENDS and d.get("slot") == slot
            and (intent is None or d.get("intent") in (None, intent)))
        payload: dict[str, Any] = {"slot": slot, **({"intent": intent} if intent else {})}
        try:
            try:
                self.command(Cmd.DISPENSE, payload)
            except LinkDown as exc:
                # The frame may have arrived and only its ACK been lost.
                return DispenseOutcome("unknown", slot, reason=str(exc))
            except HardwareError as exc:
                return DispenseOutcome("error", slot, reason=str(exc))
            if on_accepted is not None:
                on_accepted()
            if not waiter.done.wait(timeout):
                return DispenseOutcome("unknown", slot, reason=f"no outcome within {timeout:g} s")
            if waiter.lost or waiter.frame is None:
                return DispenseOutcome(
                    "unknown", slot,
                    reason="link lost after DISPENSE was accepted: outcome unknown")
        finally:
            self._remove_waiter(waiter)
        doc, cmd = waiter.doc, waiter.frame.cmd
        tag = doc.get("tag")
        if cmd == Cmd.ITEM_TAKEN:
            return DispenseOutcome("taken", slot, tag)
        if cmd == Cmd.ITEM_RETRACTED:
            return DispenseOutcome("not_taken", slot, tag)
        if cmd == Cmd.JAM:
            return DispenseOutcome("jam", slot, reason=str(doc.get("reason", "")))
        reason = str(doc.get("reason", ""))
        return DispenseOutcome("empty" if reason == "empty" else "error", slot, reason=reason)

    def accept_return(self, tag: str, intent: str | None = None) -> None:
        """Let the book in the chute drop into the bin (the controller logs ``intent``)."""
        self.command(Cmd.ACCEPT_RETURN, {"tag": tag, **({"intent": intent} if intent else {})})

    def reject_return(self, tag: str, reason: str) -> None:
        """Push the book in the chute back out to the reader (``reason`` on its display)."""
        self.command(Cmd.REJECT_RETURN, {"tag": tag, "reason": reason})

    def status(self, *, logs: bool = False) -> dict[str, Any]:
        """The controller's STATUS_REPLY: bin, doors, chute, delivery (with ``logs``: the
        recent dispenses and chute decisions with their intents and outcomes)."""
        return self.request(Cmd.STATUS, {"logs": True} if logs else None,
                            Cmd.STATUS_REPLY).json()

    def slot_scan(self) -> dict[int, str | None]:
        """What the slot sensors read now: {slot: tag or None}."""
        doc = self.request(Cmd.SLOT_SCAN, None, Cmd.SLOT_SCAN_RESULT, SCAN_TIMEOUT).json()
        slots: dict[int, str | None] = {}
        for key, tag in doc["slots"].items():
            if not str(key).isdigit() or not (tag is None or isinstance(tag, str)):
                raise HardwareError(f"SLOT_SCAN_RESULT: bad entry {key!r}: {tag!r}")
            slots[int(key)] = tag or None
        return slots

    def display(self, text: str) -> None:
        """Show ``text`` on the machine's small display."""
        self.command(Cmd.DISPLAY, {"text": text})

    def set_chute(self, open_: bool) -> None:
        """Open the return chute (NAK while the bin is full) or close it."""
        self.command(Cmd.CHUTE_OPEN if open_ else Cmd.CHUTE_CLOSE)

    def unlock_service_door(self, seconds: int | None = None) -> None:
        """Let a technician open the service door within ``seconds``."""
        self.command(Cmd.SERVICE_UNLOCK, {"seconds": seconds} if seconds else None)

    def lock_service_door(self) -> None:
        """Lock the (closed) service door again."""
        self.command(Cmd.SERVICE_LOCK)

    # -- sending --------------------------------------------------------------

    def _request(self, cmd: Cmd, payload: dict[str, Any] | None, reply_cmd: Cmd,
                 timeout: float, *, need_online: bool) -> Frame:
        waiter = self._add_waiter(lambda f, d: f.cmd == reply_cmd)
        try:
            if need_online:
                self.command(cmd, payload)
            else:
                self._exchange(cmd, payload)
            if not waiter.done.wait(timeout):
                raise HardwareError(f"no {reply_cmd.name} within {timeout:g} s")
            if waiter.lost or waiter.frame is None:
                raise LinkDown(f"link lost while waiting for {reply_cmd.name}")
            return waiter.frame
        finally:
            self._remove_waiter(waiter)

    def _exchange(self, cmd: Cmd, payload: dict[str, Any] | None) -> None:
        """Stop-and-wait: send, retransmit on timeout or bare NAK, until ACKed."""
        with self._send_lock:
            seq = self._tx_seq
            self._tx_seq = (seq + 1) % 256
            raw = encode(seq, cmd, payload or None)
            for _ in range(self.retries + 1):
                with self._acks:
                    self._replies.clear()
                self._write(raw, seq, cmd)
                if self._wait_ack(seq, cmd):
                    return
            self._link_lost(f"no ACK for {cmd.name} after {self.retries + 1} tries")
            raise LinkDown(f"no ACK for {cmd.name} after {self.retries + 1} tries")

    def _wait_ack(self, seq: int, cmd: Cmd) -> bool:
        """True on our ACK, False to retransmit; HardwareError on a NAK with a reason."""
        deadline = time.monotonic() + self.ack_timeout
        with self._acks:
            while True:
                while self._replies:
                    reply = self._replies.pop(0)
                    if reply.cmd == Cmd.ACK and reply.seq == seq:
                        return True
                    if reply.cmd == Cmd.NAK:
                        reason = _nak_reason(reply)
                        if not reason:  # the controller saw a bad frame: send again now
                            return False
                        if reply.seq == seq:
                            raise HardwareError(f"{cmd.name} refused: {reason}")
                    # anything else is a late answer to an earlier try: ignore
                if self._broken:
                    raise LinkDown(f"link lost while sending {cmd.name}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._acks.wait(remaining)

    def _write(self, raw: bytes, seq: int, cmd: int) -> None:
        with self._write_lock:
            ser = self._serial
            if ser is None or self._broken:
                raise LinkDown("port not open")
            try:
                ser.write(raw)
            except (serial.SerialException, OSError) as exc:
                self._link_lost(f"write failed: {exc}")
                raise LinkDown(f"write failed: {exc}") from exc
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug(">>> %s", describe(Frame(seq, cmd, raw[5:-2])))

    def _answer(self, cmd: Cmd, seq: int, reason: str | None = None) -> None:
        payload = {"reason": reason} if reason else None
        self._write(encode(seq, cmd, payload), seq, cmd)

    # -- receiving ------------------------------------------------------------

    def _read_loop(self, ser: serial.SerialBase) -> None:
        decoder = Decoder()
        while not self._broken:
            try:
                data = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's posix port closed under us.
                self._link_lost(f"read failed: {exc}")
                return
            if not data:
                continue
            decoder.feed(data)
            while True:
                item = decoder.next_frame()
                if item is NEED_DATA:
                    break
                try:
                    if isinstance(item, BadFrame):
                        self.bad_frames += 1
                        trace.debug("<<< %s", describe(item))
                        self._answer(Cmd.NAK, 0)
                    elif isinstance(item, Frame):
                        self._on_frame(item)
                except LinkDown:
                    return
                except Exception:  # a bug in handling must not kill the line
                    logger.exception("error handling %r", item)

    def _on_frame(self, frame: Frame) -> None:
        trace.debug("<<< %s", describe(frame))
        self._last_rx_time = time.monotonic()
        if frame.cmd in (Cmd.ACK, Cmd.NAK):
            with self._acks:
                self._replies.append(frame)
                self._acks.notify_all()
            return
        try:
            doc = check_payload(frame)
            if frame.cmd < EVENT_CMD_MIN:
                raise ValueError(f"{cmd_name(frame.cmd)} is not a controller event")
        except ValueError as exc:
            logger.warning("refusing frame from the controller: %s", exc)
            self._answer(Cmd.NAK, frame.seq, str(exc))
            return
        # POWER_UP opens a new session: a rebooted controller counts from 0 again.
        if frame.cmd != Cmd.POWER_UP and frame.seq == self._last_rx_seq:
            trace.debug("duplicate seq=%d: ACK again, not handled", frame.seq)
            self._answer(Cmd.ACK, frame.seq)
            return
        self._answer(Cmd.ACK, frame.seq)
        self._last_rx_seq = frame.seq
        if frame.cmd == Cmd.POWER_UP:
            self._power_up(doc)
        with self._waiters_lock:
            waiter = next((w for w in self._waiters
                           if not w.done.is_set() and w.match(frame, doc)), None)
            if waiter is not None:
                waiter.frame, waiter.doc = frame, doc
                waiter.done.set()
        if waiter is None and frame.cmd in _REPLIES:
            logger.debug("unsolicited %s dropped", cmd_name(frame.cmd))
        elif waiter is None or frame.cmd == Cmd.ITEM_DISPENSED:
            self._events.put(frame)

    def _power_up(self, doc: dict[str, Any]) -> None:
        if self._online and doc["boot_id"] != self.info.get("boot_id"):
            logger.warning("controller rebooted (boot %s): handshaking again", doc["boot_id"])
            self._online = False
            self._events.put(_LinkChange(False))
            self._rehandshake = True
            self._wake.set()

    def _add_waiter(self, match: Callable[[Frame, dict[str, Any]], bool]) -> _Waiter:
        waiter = _Waiter(match)
        with self._waiters_lock:
            self._waiters.append(waiter)
        return waiter

    def _remove_waiter(self, waiter: _Waiter) -> None:
        with self._waiters_lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            try:
                if isinstance(item, _LinkChange):
                    if self._on_link is not None:
                        self._on_link(item.online)
                else:
                    self._on_event(item)
            except Exception:
                what = f"link {'up' if getattr(item, 'online', False) else 'down'}" \
                    if isinstance(item, _LinkChange) else describe(item)
                logger.exception("handler failed for %s", what)

    # -- connection -----------------------------------------------------------

    def _link_lost(self, reason: str, *, quiet: bool = False) -> None:
        was = self.online
        self._broken = True
        self._online = False
        if was:
            self._events.put(_LinkChange(False))
            if not quiet:
                self._last_problem = reason
        with self._acks:
            self._acks.notify_all()
        with self._waiters_lock:
            for w in self._waiters:
                w.lost = True
                w.done.set()
        self._wake.set()
        if was and not quiet:
            logger.warning("controller link down: %s", reason)

    def _problem(self, text: str) -> None:
        """Log a connection problem once at WARNING, then at DEBUG while it lasts."""
        level = logging.DEBUG if text == self._last_problem else logging.WARNING
        logger.log(level, "controller on %s: %s", self.port, text)
        self._last_problem = text

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                ser = serial.serial_for_url(self.port, baudrate=BAUDRATE, timeout=READ_TIMEOUT,
                                            write_timeout=WRITE_TIMEOUT, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._problem(f"cannot open: {exc}")
                self._stopping.wait(self.reconnect_interval)
                continue
            self._serial = ser
            self._broken = False
            self._rehandshake = False
            reader = threading.Thread(target=self._read_loop, args=(ser,), name="hw-reader",
                                      daemon=True)
            reader.start()
            try:
                self._handshake()
                self._watch()
            except HardwareError as exc:
                self._problem(str(exc))
            finally:
                self._link_lost("closing", quiet=True)
                reader.join(timeout=2.0)
                with self._write_lock:
                    self._serial = None
                    try:
                        ser.close()
                    except (serial.SerialException, OSError) as exc:
                        logger.debug("closing %s: %s", self.port, exc)
            self._stopping.wait(self.reconnect_interval)

    def _handshake(self) -> None:
        self._online = False
        self._last_rx_seq = None  # HELLO opens a session on both sides
        reply = self._request(Cmd.HELLO, {"proto": PROTO_VERSION}, Cmd.HELLO_REPLY,
                              HANDSHAKE_TIMEOUT, need_online=False)
        try:
            info = check_payload(reply)
        except ValueError as exc:  # the reader NAKs bad frames; this is a second guard
            raise HardwareError(f"bad HELLO_REPLY: {exc}") from exc
        if info.get("proto") != PROTO_VERSION:
            raise HardwareError(f"controller speaks protocol {info.get('proto')}, "
                                f"not {PROTO_VERSION}")
        refusal = self._check_identity(info) if self._check_identity else None
        if refusal:
            raise HardwareError(refusal)
        self.info = info
        self.handshakes += 1
        self._online = True
        self._last_problem = ""
        logger.info("controller %s online on %s: %s, %s slots, boot %s", info["serial"],
                    self.port, info["fw"], info["slots"], info["boot_id"])
        self._events.put(_LinkChange(True))

    def _watch(self) -> None:
        """While connected: re-handshake when asked, heartbeat a silent line."""
        while not self._stopping.is_set() and not self._broken:
            self._wake.wait(HEARTBEAT_INTERVAL / 5)
            self._wake.clear()
            if self._stopping.is_set() or self._broken:
                return
            if self._rehandshake:
                self._rehandshake = False
                self._handshake()
            elif time.monotonic() - self._last_rx_time >= self.heartbeat_interval:
                reply = self._request(Cmd.STATUS, None, Cmd.STATUS_REPLY, REPLY_TIMEOUT,
                                      need_online=True).json()
                if reply.get("boot_id") != self.info.get("boot_id"):
                    # Its POWER_UP was lost (line noise, or we were away): same remedy.
                    logger.warning("controller rebooted (boot %s, heartbeat): handshaking "
                                   "again", reply.get("boot_id"))
                    self._online = False
                    self._events.put(_LinkChange(False))
                    self._handshake()


def _nak_reason(frame: Frame) -> str:
    if not frame.payload:
        return ""
    try:
        return str(frame.json().get("reason", "")) or "?"
    except ValueError:
        return "?"
