"""Serial frame codec between the edge node and the machine controller, sans-IO.

    +------+--------+--------+-----+-----+-----------+--------+
    | 0x7E | LEN hi | LEN lo | SEQ | CMD | PAYLOAD   | CRC16  |
    +------+--------+--------+-----+-----+-----------+--------+

LEN is the payload length (0..MAX_PAYLOAD). CRC-16/CCITT-FALSE (poly 0x1021,
init 0xFFFF) covers LEN, SEQ, CMD and PAYLOAD, sent big-endian. The payload is
UTF-8 JSON (an object) or empty. The decoder never trusts a start byte: on a
bad length or CRC it drops that one byte and hunts for the next 0x7E, so noise
between frames and torn frames cost at most the frames they touch. A frame whose
length byte was corrupted upwards would make a naive decoder wait for kilobytes
that never come; this one gives up on it as soon as a complete, good frame
follows it in the buffer (see ``Decoder.next_frame``).

Use: ``dec.feed(data)`` then call ``dec.next_frame()`` until it returns
``NEED_DATA``. It answers a ``Frame``, or a ``BadFrame`` (so the receiver can NAK).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

SOF: Final = 0x7E
HEADER_LEN: Final = 5  # SOF, LEN(2), SEQ, CMD
CRC_LEN: Final = 2
# Controllers have small buffers; a slot scan of 120 slots with 24-char tags fits.
MAX_PAYLOAD: Final = 4096
# Bytes kept while hunting for a frame; beyond this the oldest garbage is dropped.
MAX_BUFFER: Final = 4 * (MAX_PAYLOAD + HEADER_LEN + CRC_LEN)

# Link layer, agreed by both ends (docs/serial-protocol.md).
# The version HELLO carries; a controller speaking another one answers NAK.
PROTO_VERSION: Final = 1
# A controller ACKs within a few ms; 0.25 s covers a busy host without making a
# lost frame cost the reader a noticeable wait.
ACK_TIMEOUT: Final = 0.25
# Retransmissions after the first send: six tries ride out a burst of line noise;
# more would only delay declaring a dead line down (about 1.5 s with ACK_TIMEOUT).
RETRIES: Final = 5


class Cmd(IntEnum):
    """Frame types. 0x01-0x3F host -> controller, 0x40-0x7F controller -> host."""

    ACK = 0x06
    NAK = 0x15
    # host -> controller
    HELLO = 0x01
    STATUS = 0x02
    DISPENSE = 0x03
    CHUTE_OPEN = 0x04
    CHUTE_CLOSE = 0x05
    ACCEPT_RETURN = 0x07
    REJECT_RETURN = 0x08
    SLOT_SCAN = 0x09
    SERVICE_LOCK = 0x0A
    SERVICE_UNLOCK = 0x0B
    DISPLAY = 0x0C
    # controller -> host
    HELLO_REPLY = 0x41
    STATUS_REPLY = 0x42
    ITEM_DISPENSED = 0x43
    ITEM_TAKEN = 0x44
    JAM = 0x45
    DISPENSE_FAILED = 0x46
    ITEM_RETRACTED = 0x47
    CARD_PRESENTED = 0x50
    PIN_ENTERED = 0x51
    RETURN_ITEM_READ = 0x52
    BIN_FULL = 0x53
    SERVICE_DOOR = 0x54
    SLOT_SCAN_RESULT = 0x55
    POWER_UP = 0x56


# Commands that are defined but not implemented: answered NAK "reserved". Every
# command of version 1 is implemented; the set stays for the next additions.
RESERVED: Final[frozenset[Cmd]] = frozenset()

# The fields each payload must carry (more are allowed); a frame missing one is NAKed.
PAYLOAD_FIELDS: Final[dict[Cmd, dict[str, type]]] = {
    Cmd.HELLO: {"proto": int},
    Cmd.STATUS: {},
    Cmd.DISPENSE: {"slot": int},
    Cmd.CHUTE_OPEN: {},
    Cmd.CHUTE_CLOSE: {},
    Cmd.ACCEPT_RETURN: {"tag": str},
    Cmd.REJECT_RETURN: {"tag": str, "reason": str},
    Cmd.SLOT_SCAN: {},
    Cmd.SERVICE_LOCK: {},
    Cmd.SERVICE_UNLOCK: {},
    Cmd.DISPLAY: {"text": str},
    Cmd.HELLO_REPLY: {"proto": int, "fw": str, "slots": int, "boot_id": str, "serial": str},
    Cmd.STATUS_REPLY: {"boot_id": str, "bin": int, "bin_capacity": int, "door": str,
                       "chute": str},
    Cmd.ITEM_DISPENSED: {"slot": int, "tag": str},
    Cmd.ITEM_TAKEN: {"slot": int, "tag": str},
    Cmd.JAM: {"slot": int},
    Cmd.DISPENSE_FAILED: {"slot": int, "reason": str},
    Cmd.ITEM_RETRACTED: {"slot": int, "tag": str},
    Cmd.CARD_PRESENTED: {"card": str},
    Cmd.PIN_ENTERED: {"pin": str},
    Cmd.RETURN_ITEM_READ: {"tag": str},
    Cmd.BIN_FULL: {"bin": int, "bin_capacity": int},
    Cmd.SERVICE_DOOR: {"open": bool},
    Cmd.SLOT_SCAN_RESULT: {"slots": dict},
    Cmd.POWER_UP: {"boot_id": str},
}
# Fields that may be there and must then have this type (a host's dispense or
# return intent, echoed by the controller so an outcome names what it ends).
OPTIONAL_FIELDS: Final[dict[Cmd, dict[str, type]]] = {
    Cmd.STATUS: {"logs": bool},
    Cmd.DISPENSE: {"intent": str},
    Cmd.ACCEPT_RETURN: {"intent": str},
    Cmd.SERVICE_UNLOCK: {"seconds": int},
    Cmd.ITEM_DISPENSED: {"intent": str},
    Cmd.ITEM_TAKEN: {"intent": str},
    Cmd.JAM: {"intent": str},
    Cmd.DISPENSE_FAILED: {"intent": str},
    Cmd.ITEM_RETRACTED: {"intent": str},
}
# An intent id is a host's uuid4 hex (32 chars); the bound keeps a log entry small.
MAX_INTENT_LEN: Final = 40


@dataclass(frozen=True)
class Frame:
    """One good frame. ``cmd`` is an int (a ``Cmd`` when known) so unknown ones can be NAKed."""

    seq: int
    cmd: int
    payload: bytes = b""

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object ({} when empty); ValueError if it is not one."""
        if not self.payload:
            return {}
        doc = json.loads(self.payload.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("payload is not a JSON object")
        return doc


@dataclass(frozen=True)
class BadFrame:
    """Something that looked like a frame and was not; ``reason`` says why."""

    reason: str


def cmd_name(cmd: int) -> str:
    """``DISPENSE`` for a known command, ``0x3F`` for an unknown one."""
    try:
        return Cmd(cmd).name
    except ValueError:
        return f"0x{cmd:02X}"


def check_payload(frame: Frame) -> dict[str, Any]:
    """The frame's payload if its command is implemented and its fields are there.

    ValueError (with a reason fit for a NAK) for an unknown or reserved command,
    a payload that is not a JSON object, or a missing or mistyped field.
    """
    try:
        cmd = Cmd(frame.cmd)
    except ValueError:
        raise ValueError(f"unknown command 0x{frame.cmd:02X}") from None
    if cmd in RESERVED:
        raise ValueError(f"command {cmd.name} is reserved (not implemented)")
    try:
        doc = frame.json()
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{cmd.name}: payload is not a JSON object ({exc})") from None
    for name, kind in PAYLOAD_FIELDS.get(cmd, {}).items():
        if not _is(doc.get(name), kind):
            raise ValueError(f"{cmd.name}: field {name!r} missing or not {kind.__name__}")
    for name, kind in OPTIONAL_FIELDS.get(cmd, {}).items():
        if doc.get(name) is not None and not _is(doc[name], kind):
            raise ValueError(f"{cmd.name}: field {name!r} is not {kind.__name__}")
    intent = doc.get("intent")
    if isinstance(intent, str) and not 0 < len(intent) <= MAX_INTENT_LEN:
        raise ValueError(f"{cmd.name}: field 'intent' must be 1..{MAX_INTENT_LEN} characters")
    return doc


def _is(value: Any, kind: type) -> bool:
    # bool is an int to Python but never a slot number or a version.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def describe(frame: Frame | BadFrame) -> str:
    """One line for the serial trace: ``DISPENSE seq=4 {"slot":3}``."""
    if isinstance(frame, BadFrame):
        return f"bad frame ({frame.reason})"
    text = frame.payload.decode("utf-8", "replace")
    if len(text) > TRACE_PAYLOAD_CHARS:
        text = text[:TRACE_PAYLOAD_CHARS] + "..."
    return f"{cmd_name(frame.cmd)} seq={frame.seq} {text}".rstrip()


# A slot scan is kilobytes; the trace keeps a line readable.
TRACE_PAYLOAD_CHARS: Final = 200


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode(seq: int, cmd: int, payload: bytes | dict[str, Any] | None = None) -> bytes:
    """The bytes of one frame; a dict payload is sent as compact UTF-8 JSON."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    payload = payload or b""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq {seq} out of range 0..255")
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"cmd {cmd} out of range 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = len(payload).to_bytes(2, "big") + bytes((seq, cmd)) + payload
    return bytes((SOF,)) + body + crc16(body).to_bytes(2, "big")


class Decoder:
    """Turns a byte stream into frames; holds no I/O and never raises on input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_frames = 0
        self.discarded_bytes = 0

    def feed(self, data: bytes) -> None:
        """Add bytes as they arrive, in any chunking."""
        self._buf += data
        if len(self._buf) > MAX_BUFFER:
            cut = len(self._buf) - MAX_BUFFER
            del self._buf[:cut]
            self.discarded_bytes += cut

    def next_frame(self) -> Frame | BadFrame | _NeedData:
        """The next frame, a BadFrame, or NEED_DATA."""
        while True:
            start = self._buf.find(SOF)
            if start < 0:
                self.discarded_bytes += len(self._buf)
                self._buf.clear()
                return NEED_DATA
            if start:
                del self._buf[:start]
                self.discarded_bytes += start
            if len(self._buf) < HEADER_LEN:
                return NEED_DATA
            length = int.from_bytes(self._buf[1:3], "big")
            if length > MAX_PAYLOAD:
                self._drop_one()
                return BadFrame(f"length {length} exceeds {MAX_PAYLOAD}")
            total = HEADER_LEN + length + CRC_LEN
            if len(self._buf) < total:
                if self._good_frame_after_start():
                    self._drop_one()
                    return BadFrame("truncated frame (a complete frame follows it)")
                return NEED_DATA
            body = bytes(self._buf[1 : HEADER_LEN + length])
            got = int.from_bytes(self._buf[HEADER_LEN + length : total], "big")
            if crc16(body) != got:
                self._drop_one()
                return BadFrame("CRC mismatch")
            del self._buf[:total]
            seq, cmd = body[2], body[3]
            return Frame(seq=seq, cmd=cmd, payload=body[4:])

    def _good_frame_after_start(self) -> bool:
        """True if a complete frame with a good CRC starts after the buffer's first byte.

        The frame at the start is then garbage (a corrupted length, or bytes lost
        from it), not a long frame still arriving: a JSON payload never holds a
        raw control byte, so it cannot hide a SOF followed by a LEN hi byte
        (0x00..0x10) -- a good frame inside the buffer is a real one.
        """
        pos = self._buf.find(SOF, 1)
        while pos >= 0:
            if len(self._buf) - pos < HEADER_LEN + CRC_LEN:
                return False
            length = int.from_bytes(self._buf[pos + 1 : pos + 3], "big")
            end = pos + HEADER_LEN + length + CRC_LEN
            if length <= MAX_PAYLOAD and end <= len(self._buf):
                body = bytes(self._buf[pos + 1 : pos + HEADER_LEN + length])
                if crc16(body) == int.from_bytes(self._buf[end - CRC_LEN : end], "big"):
                    return True
            pos = self._buf.find(SOF, pos + 1)
        return False

    def _drop_one(self) -> None:
        del self._buf[:1]
        self.discarded_bytes += 1
        self.bad_frames += 1
