"""The hybrid logical clock never goes backwards and moves past what it observes."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.hlc import HybridClock, Timestamp


def test_encode_decode_round_trip_and_order() -> None:
    a, b = Timestamp(1795300000000, 3), Timestamp(1795300000001, 0)
    assert Timestamp.decode(a.encode()) == a
    assert a.encode() < b.encode()


@pytest.mark.parametrize("text", ["", "123-1", "1795300000000-1", "x795300000000-00001",
                                  "1795300000000_00001"])
def test_decode_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Timestamp.decode(text)


@given(st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=50))
def test_readings_strictly_increase_even_when_the_wall_clock_jumps_back(walls: list[int]) -> None:
    it = iter(walls)
    clock = HybridClock(lambda: next(it))
    readings = [clock.now() for _ in walls]
    assert all(x < y for x, y in zip(readings, readings[1:], strict=False))


def test_observe_moves_past_a_clock_from_the_future() -> None:
    clock = HybridClock(lambda: 1000)
    remote = Timestamp(5000, 7)
    clock.observe(remote)
    assert clock.now() > remote
