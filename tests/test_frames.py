"""The serial frame codec: round trips, chunking, noise, corruption, limits."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.frames import (
    MAX_PAYLOAD,
    NEED_DATA,
    SOF,
    BadFrame,
    Cmd,
    Decoder,
    Frame,
    check_payload,
    crc16,
    encode,
)


def drain(dec: Decoder) -> list[Frame | BadFrame]:
    """Every frame (good or bad) the decoder can give now."""
    out: list[Frame | BadFrame] = []
    for _ in range(100_000):
        item = dec.next_frame()
        if item is NEED_DATA:
            return out
        assert isinstance(item, Frame | BadFrame)
        out.append(item)
    raise AssertionError("decoder never asked for more data")


def good(items: list[Frame | BadFrame]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


PAYLOADS: list[dict[str, Any] | None] = [
    None,
    {},
    {"slot": 7},
    {"card": "R0001"},
    {"text": "Кітапты алыңыз"},  # Kazakh: "take your book"
    {"text": "Возьмите книгу", "tag": "C0000123"},  # Russian
    {"slots": {str(n): f"C{n:07d}" for n in range(1, 121)}},
]


@pytest.mark.parametrize("cmd", list(Cmd))
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: str(p)[:20])
def test_round_trip(cmd: Cmd, payload: dict[str, Any] | None) -> None:
    dec = Decoder()
    dec.feed(encode(200, cmd, payload))
    [frame] = drain(dec)
    assert isinstance(frame, Frame)
    assert (frame.seq, frame.cmd) == (200, cmd)
    assert frame.json() == (payload or {})


def test_one_byte_at_a_time() -> None:
    frames = [encode(n, Cmd.CARD_PRESENTED, {"card": f"R{n:04d}", "name": "Әлия"})
              for n in range(20)]
    dec = Decoder()
    got: list[Frame | BadFrame] = []
    for byte in b"".join(frames):
        dec.feed(bytes([byte]))
        got += drain(dec)
    assert [f.seq for f in good(got)] == list(range(20))
    assert all(isinstance(f, Frame) for f in got)


garbage = st.binary(max_size=64).map(lambda b: b.replace(bytes([SOF]), b""))


@settings(max_examples=200)
@given(chunks=st.lists(st.tuples(garbage, st.integers(0, 255),
                                 st.sampled_from(list(Cmd)),
                                 st.sampled_from(PAYLOADS[:6])), max_size=8),
       tail=garbage, split=st.integers(1, 50))
def test_garbage_between_frames(chunks: list[tuple[bytes, int, Cmd, dict[str, Any] | None]],
                                tail: bytes, split: int) -> None:
    stream = b"".join(g + encode(seq, cmd, p) for g, seq, cmd, p in chunks) + tail
    dec = Decoder()
    got: list[Frame | BadFrame] = []
    for i in range(0, len(stream), split):
        dec.feed(stream[i:i + split])
        got += drain(dec)
    assert [(f.seq, f.cmd, f.json()) for f in good(got)] == \
        [(seq, cmd, p or {}) for _, seq, cmd, p in chunks]


@pytest.mark.parametrize("where", ["crc", "payload", "seq"])
def test_corrupted_frame_refused_next_one_decoded(where: str) -> None:
    bad = bytearray(encode(1, Cmd.DISPENSE, {"slot": 3}))
    index = {"crc": -1, "payload": 8, "seq": 3}[where]
    bad[index] ^= 0x01
    dec = Decoder()
    dec.feed(bytes(bad) + encode(2, Cmd.DISPENSE, {"slot": 4}))
    items = drain(dec)
    assert isinstance(items[0], BadFrame)
    assert "CRC" in items[0].reason
    frames = good(items)
    assert [(f.seq, f.json()) for f in frames] == [(2, {"slot": 4})]
    assert dec.bad_frames >= 1


def test_oversized_length_refused() -> None:
    length = MAX_PAYLOAD + 1
    body = length.to_bytes(2, "big") + bytes((5, Cmd.STATUS))
    dec = Decoder()
    dec.feed(bytes([SOF]) + body + crc16(body).to_bytes(2, "big") + encode(6, Cmd.STATUS))
    items = drain(dec)
    assert isinstance(items[0], BadFrame)
    assert "length" in items[0].reason
    assert [f.seq for f in good(items)] == [6]


def test_encode_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        encode(256, Cmd.STATUS)
    with pytest.raises(ValueError):
        encode(0, Cmd.STATUS, b"x" * (MAX_PAYLOAD + 1))


@settings(max_examples=300)
@given(st.binary(max_size=2048), st.integers(1, 64))
def test_random_bytes_never_raise(data: bytes, split: int) -> None:
    dec = Decoder()
    for i in range(0, len(data), split):
        dec.feed(data[i:i + split])
        drain(dec)


@pytest.mark.parametrize(("cmd", "payload", "error"), [
    (Cmd.DISPENSE, b'{"slot": 3}', None),
    (Cmd.DISPENSE, b'{"slot": "3"}', "slot"),
    (Cmd.DISPENSE, b'{"slot": true}', "slot"),
    (Cmd.DISPENSE, b"", "slot"),
    (Cmd.DISPENSE, b"[1, 2]", "not a JSON object"),
    (Cmd.DISPENSE, b"\xff\xfe", "not a JSON object"),
    (Cmd.HELLO, b'{"proto": 1}', None),
    (Cmd.STATUS, b"", None),
    (Cmd.BIN_FULL, b"", "bin"),
    (Cmd.BIN_FULL, b'{"bin": 40, "bin_capacity": 40}', None),
    (Cmd.SERVICE_DOOR, b'{"open": false}', None),
    (Cmd.SERVICE_DOOR, b'{"open": 1}', "open"),
    (Cmd.PIN_ENTERED, b'{"pin": 1234}', "pin"),
    (Cmd.CHUTE_OPEN, b"", None),
    (Cmd.SERVICE_UNLOCK, b'{"seconds": "60"}', "seconds"),
    (Cmd.DISPENSE, b'{"slot": 3, "intent": "9f2c"}', None),
    (Cmd.DISPENSE, b'{"slot": 3, "intent": 7}', "intent"),
    (Cmd.DISPENSE, b'{"slot": 3, "intent": ""}', "intent"),
    (Cmd.ITEM_TAKEN, b'{"slot": 3, "tag": "C1", "intent": "' + b"x" * 41 + b'"}', "intent"),
    (Cmd.HELLO_REPLY, b'{"proto": 1, "fw": "x", "slots": 3, "boot_id": "b"}', "serial"),
    (0x3F, b"", "unknown command"),
])
def test_check_payload(cmd: int, payload: bytes, error: str | None) -> None:
    frame = Frame(1, cmd, payload)
    if error is None:
        assert isinstance(check_payload(frame), dict)
    else:
        with pytest.raises(ValueError, match=error):
            check_payload(frame)


def test_a_length_corrupted_upwards_does_not_stall_the_line() -> None:
    # LEN 0x0F00 would make a naive decoder wait for 3,840 bytes that never come.
    bad = bytearray(encode(1, Cmd.DISPENSE, {"slot": 3}))
    bad[1] = 0x0F
    dec = Decoder()
    dec.feed(bytes(bad) + encode(2, Cmd.STATUS))
    items = drain(dec)
    assert [f.seq for f in good(items)] == [2]
    assert isinstance(items[0], BadFrame) and "truncated" in items[0].reason


@pytest.mark.parametrize("where", range(len(encode(7, Cmd.DISPENSE, {"slot": 12}))))
def test_a_lost_byte_costs_only_its_own_frame(where: int) -> None:
    frames = [encode(n, Cmd.DISPENSE, {"slot": 10 + n}) for n in range(6, 9)]
    damaged = bytearray(frames[1])
    del damaged[where]
    dec = Decoder()
    dec.feed(frames[0] + bytes(damaged) + frames[2])
    assert [f.seq for f in good(drain(dec))] == [6, 8]


@settings(max_examples=200)
@given(payloads=st.lists(st.sampled_from(PAYLOADS[:6]), min_size=2, max_size=6),
       victim=st.integers(0, 5), bit=st.integers(0, 7), at=st.integers(0, 10_000),
       split=st.integers(1, 40))
def test_a_flipped_bit_costs_only_its_own_frame(payloads: list[dict[str, Any] | None],
                                                victim: int, bit: int, at: int,
                                                split: int) -> None:
    frames = [bytearray(encode(n, Cmd.DISPLAY, p)) for n, p in enumerate(payloads)]
    victim %= len(frames)
    frames[victim][at % len(frames[victim])] ^= 1 << bit
    stream = b"".join(frames)
    dec = Decoder()
    got: list[Frame | BadFrame] = []
    for i in range(0, len(stream), split):
        dec.feed(stream[i:i + split])
        got += drain(dec)
    # CRC-16 catches every single-bit error: the victim never decodes, the rest all do.
    assert [f.seq for f in good(got)] == [n for n in range(len(frames)) if n != victim]
