"""The event envelope: good events pass, bad ones are refused with a readable reason."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import (
    MAX_BATCH,
    decode_ack,
    decode_batch,
    decode_status,
    encode_ack,
    encode_batch,
    encode_status,
    make_envelope,
)
from protocol.errors import RejectedMessage

TS = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def checkout(seq: int = 1, node: str = "m-almaly", **over: object) -> dict:
    env = make_envelope(node, seq, "1795300000000-00000", TS, "loan.checkout",
                        {"loan_id": "L1", "copy": "C1", "reader": "R1", "due": date(2026, 12, 13)})
    env.update(over)
    return env


def test_round_trip_keeps_every_field() -> None:
    ev = decode_batch(encode_batch([checkout()]), "m-almaly")[0]
    assert (ev.node, ev.seq, ev.type, ev.ts) == ("m-almaly", 1, "loan.checkout", TS)
    assert ev.body["due"] == date(2026, 12, 13)
    assert ev.body_error is None


def test_a_transaction_reported_later_carries_its_own_time_and_source() -> None:
    """``at`` travels in the body (the envelope's ts stays the node's clock); left out if none."""
    kiosk = datetime(2026, 11, 21, 18, 30, tzinfo=UTC)
    bodies = {
        "loan.checkout": {"loan_id": "L1", "copy": "C1", "reader": "R1",
                          "due": date(2026, 12, 12)},
        "loan.return": {"copy": "C1", "loan_id": "L1", "reader": "R1"},
        "loan.renew": {"loan_id": "L1", "copy": "C1", "reader": "R1", "due": date(2026, 12, 30)},
        "hold.picked_up": {"hold_id": "H1", "copy": "C1", "reader": "R1", "loan_id": "L1"},
    }
    for seq, (type_, body) in enumerate(bodies.items(), start=1):
        told = make_envelope("b-a", seq, "1795300000000-00000", TS, type_,
                             {**body, "at": kiosk, "source": "sip2:hall-1"})
        assert told["body"]["at"] == "2026-11-21T18:30:00+00:00"
        ev = decode_batch(encode_batch([told]), "b-a")[0]
        assert ev.body_error is None and ev.ts == TS
        assert (ev.body["at"], ev.body["source"]) == (kiosk, "sip2:hall-1")
        plain = make_envelope("b-a", seq, "1795300000000-00000", TS, type_, body)
        assert not {"at", "source"} & set(plain["body"])   # as events always looked
    naive = {**bodies["loan.return"], "at": "2026-11-21T18:30:00"}
    ev = decode_batch(encode_batch([checkout(type="loan.return", body=naive)]), "m-almaly")[0]
    assert ev.body_error and "at" in ev.body_error          # a time without its zone
    with pytest.raises(RejectedMessage, match="source"):
        make_envelope("b-a", 1, "1795300000000-00000", TS, "loan.return",
                      {"copy": "C1", "source": "x" * 65})


@pytest.mark.parametrize("payload, reason", [
    (b"{not json", "not JSON"),
    (b"[]", "non-empty"),
    (b'"a string"', "non-empty JSON array"),
    (b"[1, 2]", "must be a JSON object"),
    (encode_batch([checkout(v=2)]), "unsupported protocol version 2"),
    (encode_batch([checkout(seq=0)]), "seq"),
    (encode_batch([checkout(seq="1")]), "seq"),
    (encode_batch([checkout(hlc="yesterday")]), "hlc"),
    (encode_batch([checkout(ts="2026-11-22T10:00:00")]), "ts"),
    (encode_batch([checkout(node="B@D")]), "node"),
    (encode_batch([checkout(extra=1)]), "extra"),
    (encode_batch([checkout(node="m-other")]), "claims node 'm-other'"),
    (encode_batch([checkout(seq=i + 1) for i in range(MAX_BATCH + 1)]), "exceeds"),
])
def test_bad_batches_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage) as exc:
        decode_batch(payload, "m-almaly")
    assert reason in exc.value.reason


@pytest.mark.parametrize("body, reason", [
    ({}, "copy: Missing data"),
    ({"loan_id": "L", "copy": "C", "reader": "R", "due": "soon"}, "due"),
    ({"loan_id": "L", "copy": "", "reader": "R", "due": "2026-12-01"}, "copy"),
    ({"loan_id": "L", "copy": "C", "reader": "R", "due": "2026-12-01", "x": 1}, "x"),
])
def test_a_bad_body_is_flagged_not_refused(body: dict, reason: str) -> None:
    # The header is good, so the cloud can quarantine this seq and move on.
    ev = decode_batch(encode_batch([checkout(body=body)]), "m-almaly")[0]
    assert ev.seq == 1
    assert ev.body_error and reason in ev.body_error


def test_unknown_type_is_flagged() -> None:
    ev = decode_batch(encode_batch([checkout(type="loan.teleport")]), "m-almaly")[0]
    assert ev.body_error == "unknown event type 'loan.teleport'"


def test_make_envelope_refuses_a_bad_body() -> None:
    with pytest.raises(RejectedMessage, match="loan.return body"):
        make_envelope("m-a", 1, "1795300000000-00000", TS, "loan.return", {"copy": ""})


def test_ack_round_trip_and_refusal() -> None:
    assert decode_ack(encode_ack("m-a", 7, 8)) == {"v": 1, "node": "m-a", "acked": 7,
                                                   "resend_from": 8}
    with pytest.raises(RejectedMessage, match="acked"):
        decode_ack(json.dumps({"v": 1, "node": "m-a", "acked": -1}).encode())


def test_a_machines_status_carries_its_hardware_and_a_bad_one_is_refused() -> None:
    hw = {"controller_online": True, "slots": 40, "bin": 38, "bin_capacity": 40,
          "returns_open": False, "door": "closed"}
    st = decode_status(encode_status("m-a", True, kind="machine", faults=["bin_full"],
                                     machine={**hw, "later_field": 1}))
    assert st["machine"] == hw and st["faults"] == ["bin_full"]   # newer fields ignored
    assert decode_status(encode_status("b-a", True, kind="branch"))["machine"] is None
    with pytest.raises(RejectedMessage, match="bin"):
        decode_status(encode_status("m-a", True, machine={**hw, "bin": -1}))
    with pytest.raises(RejectedMessage, match="door"):
        decode_status(encode_status("m-a", True, machine={**hw, "door": "ajar"}))


@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_parser(data: bytes) -> None:
    try:
        decode_batch(data, "m-a")
    except RejectedMessage:
        pass
