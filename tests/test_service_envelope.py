"""The services' events on the wire: what each body must hold, and what is refused with a
reason (the cloud then quarantines the event, never half-applies it)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from protocol.envelope import parse_envelope

BOOKED = {"booking_id": "B1", "session": "S1", "reader": "R1", "seat": "seated",
          "base": 200_000, "percent": 40, "price": 120_000, "rule": "40 % off: partner_staff",
          "paid": 120_000, "payment_id": "P1"}
SOLD = {"membership_id": "M1", "reader": "R1", "service": "membership-year",
        "starts": "2026-11-22", "ends": "2027-11-21", "base": 500_000, "percent": 100,
        "price": 0, "rule": "100 % off: supported"}


def envelope(type_: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "node": "b-a", "seq": 1, "hlc": "1795300000000-00000",
            "ts": datetime(2026, 11, 22, 10, tzinfo=UTC).isoformat(), "type": type_,
            "body": body}


@pytest.mark.parametrize(("type_", "body"), [
    ("service.booked", BOOKED),
    ("service.booked", {**BOOKED, "seat": "waitlisted", "paid": 0, "payment_id": None}),
    ("service.booked", {k: v for k, v in BOOKED.items() if k not in ("paid", "payment_id",
                                                                     "rule")}),
    ("service.cancelled", {"booking_id": "B1", "session": "S1", "reader": "R1"}),
    ("service.cancelled", {"booking_id": "B1", "session": "S1", "reader": "R1",
                           "reason": "ill", "refunded": 120_000}),
    ("service.attended", {"booking_id": "B1", "session": "S1", "reader": "R1",
                          "outcome": "no_show"}),
    ("service.paid", {"payment_id": "P2", "booking_id": "B1", "reader": "R1", "amount": 5}),
    ("membership.sold", SOLD),
    ("membership.sold", {**SOLD, "starts": "2027-11-22", "ends": "2028-11-21",
                         "renewal_of": "M0", "paid": 1, "payment_id": "P3", "price": 1}),
])
def test_good_bodies_are_taken(type_: str, body: dict[str, Any]) -> None:
    ev = parse_envelope(envelope(type_, body))
    assert ev.body_error is None
    assert ev.body["reader"] == "R1"


@pytest.mark.parametrize(("type_", "body", "reason"), [
    ("service.booked", {**BOOKED, "seat": "maybe"}, "seat"),
    ("service.booked", {**BOOKED, "payment_id": None}, "payment_id"),
    ("service.booked", {**BOOKED, "price": 300_000}, "cannot exceed"),
    ("service.booked", {**BOOKED, "percent": 101}, "percent"),
    ("service.booked", {**BOOKED, "paid": -1}, "paid"),
    ("service.booked", {**BOOKED, "price": "120000"}, "price"),
    ("service.booked", {**BOOKED, "table": 4}, "Unknown field"),
    ("service.booked", {k: v for k, v in BOOKED.items() if k != "session"}, "session"),
    ("service.attended", {"booking_id": "B1", "session": "S1", "reader": "R1",
                          "outcome": "late"}, "outcome"),
    ("service.paid", {"payment_id": "P2", "booking_id": "B1", "reader": "R1", "amount": 0},
     "amount"),
    ("membership.sold", {**SOLD, "ends": "2026-11-21"}, "ends on or after"),
    ("membership.sold", {**SOLD, "starts": "tomorrow"}, "starts"),
])
def test_bad_bodies_are_refused_with_the_reason(type_: str, body: dict[str, Any],
                                                reason: str) -> None:
    ev = parse_envelope(envelope(type_, body))
    assert ev.body_error is not None and reason in ev.body_error
