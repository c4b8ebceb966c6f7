"""The cloud's side of a machine's stock and faults: copy facts, staff exceptions, their order
(the ingest tests on SQLite and on PostgreSQL)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud import store as s
from cloud.ingest import ingest
from cloud.reconcile import CopyState, audited, loaded, removed
from protocol.envelope import Event, make_envelope, parse_envelope

# Events happened in the last hours (a node's clock ahead of the cloud's is flagged).
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


# -- the pure rules ------------------------------------------------------------------

@pytest.mark.parametrize(("before", "repair", "closes"), [
    (CopyState("C1", True, "in_transit"), None, []),
    (CopyState("C1", True, "missing"), None, []),
    (CopyState("C1", True, "in_bin", "m-a"), None, []),
    (CopyState("C1", True, "on_shelf", "b-b"), "copy_was_elsewhere", []),
    (CopyState("C1", True, "on_loan", None, None, "L1"), "loaded_while_on_loan", ["L1"]),
    (CopyState("C1", False), "unknown_copy", []),
])
def test_loaded_puts_the_copy_in_the_slot(before: CopyState, repair: str | None,
                                          closes: list[str]) -> None:
    out = loaded(before, node="m-a", slot=4, at=T0)
    assert (out.copy.status, out.copy.location_node, out.copy.slot) == ("in_slot", "m-a", 4)
    assert [r.kind for r in out.repairs] == ([repair] if repair else [])
    assert [(c.loan_id, c.reason) for c in out.closes] == [(c, "returned_unseen") for c in closes]


@pytest.mark.parametrize(("before", "slot", "repair"), [
    (CopyState("C1", True, "in_slot", "m-a", 3), 3, None),
    (CopyState("C1", True, "in_bin", "m-a"), None, None),
    (CopyState("C1", True, "in_slot", "m-b", 3), 3, "removed_unexpected"),
    (CopyState("C1", True, "on_loan", None, None, "L1"), 3, "removed_unexpected"),
])
def test_removed_puts_the_copy_in_transit(before: CopyState, slot: int | None,
                                          repair: str | None) -> None:
    out = removed(before, node="m-a", slot=slot, at=T0)
    assert (out.copy.status, out.copy.location_node, out.copy.slot) == ("in_transit", None, None)
    assert [r.kind for r in out.repairs] == ([repair] if repair else [])


def test_audit_confirms_finds_and_misses() -> None:
    here = CopyState("C1", True, "in_slot", "m-a", 3)
    assert audited(here, node="m-a", slot=3, present=True, at=T0).repairs == ()
    moved = audited(CopyState("C1", True, "on_shelf", "b-b"), node="m-a", slot=5, present=True,
                    at=T0)
    assert (moved.copy.status, moved.copy.slot) == ("in_slot", 5)
    assert [r.kind for r in moved.repairs] == ["audit_unexpected_copy"]
    assert "on shelf at b-b" in moved.repairs[0].detail
    gone = audited(here, node="m-a", slot=3, present=False, at=T0)
    assert (gone.copy.status, gone.copy.location_node) == ("missing", None)
    assert [r.kind for r in gone.repairs] == ["audit_missing"]
    # The node's record was stale (the cloud knows it was lent since): nothing is missing.
    lent = CopyState("C1", True, "on_loan", None, None, "L1")
    assert audited(lent, node="m-a", slot=3, present=False, at=T0).copy == lent


# -- ingest, on SQLite and on PostgreSQL ---------------------------------------------------

@pytest.fixture
def cloud_db(cloud_store: str) -> Iterator[None]:
    s.seed(nodes=[{"id": "m-a", "kind": "machine"}, {"id": "b-b", "kind": "branch"}],
           titles=[], readers=[],
           copies=[{"barcode": f"C{i}", "status": "in_slot", "location_node": "m-a", "slot": i,
                    "home_node": "m-a"} for i in range(1, 5)]
           + [{"barcode": "C9", "status": "on_shelf", "location_node": "b-b",
               "home_node": "b-b"}])
    yield


class Log:
    """A node's events, numbered and clocked as the node would."""

    def __init__(self, node: str = "m-a", start: timedelta = timedelta(0)) -> None:
        self.node, self.seq, self.start = node, 0, start

    def __call__(self, type_: str, body: dict[str, Any]) -> Event:
        self.seq += 1
        ts = T0 + self.start + timedelta(minutes=self.seq)
        hlc = f"{int(ts.timestamp() * 1000):013d}-00000"
        return parse_envelope(make_envelope(self.node, self.seq, hlc, ts, type_, body))


def copy(barcode: str) -> tuple[Any, ...]:
    c = s.Copy.get_by_id(barcode)
    return c.status, c.location_node, c.slot


def exceptions() -> list[tuple[str, str | None, bool]]:
    return [(e.kind, e.copy, e.closed_at is None)
            for e in s.StaffException.select().order_by(s.StaffException.id)]


def test_a_technicians_visit_moves_copies_and_the_audit_finds_the_rest(cloud_db: None) -> None:
    ev = Log()
    slots = {"1": None, "2": "C2", "3": "C3", "4": "C9", "5": "C7"}
    ingest("m-a", [
        ev("stock.removed", {"copy": "C1", "slot": 1}),
        ev("stock.loaded", {"copy": "C9", "slot": 4}),   # C9 the cloud had at branch b-b
        ev("stock.audit", {"slots": slots, "missing": [], "reason": "door_closed"}),
    ])
    assert copy("C1") == ("in_transit", None, None)
    assert copy("C9") == ("in_slot", "m-a", 4)
    assert copy("C7") == ("in_slot", "m-a", 5)   # an unexpected copy, found by the audit
    # C4 the cloud placed in slot 4; the scan found C9 there: a discrepancy for staff.
    assert exceptions() == [("copy_was_elsewhere", "C9", True),
                            ("audit_unexpected_copy", "C7", True),
                            ("audit_cloud_mismatch", "C4", True)]
    mismatch = s.StaffException.get(s.StaffException.kind == "audit_cloud_mismatch")
    assert "slot 4" in mismatch.detail and "copy C9" in mismatch.detail


def test_a_reconcile_audit_marks_missing_copies(cloud_db: None) -> None:
    ev = Log()
    slots = {"1": "C1", "2": None, "3": "C3", "4": "C4"}
    ingest("m-a", [ev("stock.audit", {"slots": slots, "missing": [{"copy": "C2", "slot": 2}],
                                      "reason": "reconcile"})])
    assert copy("C2") == ("missing", None, None)
    assert exceptions() == [("audit_missing", "C2", True)]


def test_a_copy_back_from_transit_is_no_exception(cloud_db: None) -> None:
    ev = Log()
    ingest("m-a", [ev("stock.removed", {"copy": "C1", "slot": 1})])
    br = Log("b-b", start=timedelta(hours=1))  # the technician drove it to the branch
    ingest("b-b", [br("loan.return", {"copy": "C1"})])
    assert copy("C1") == ("on_shelf", "b-b", None)
    assert exceptions() == []


def test_device_faults_open_and_close_staff_exceptions(cloud_db: None) -> None:
    ev = Log()
    ingest("m-a", [
        ev("device.fault", {"kind": "jam", "state": "raised", "slot": 3,
                            "detail": "slot 3 jammed during a dispense"}),
        ev("device.fault", {"kind": "jam", "state": "raised", "slot": 4, "detail": ""}),
        ev("device.fault", {"kind": "bin_full", "state": "raised", "detail": "bin 40/40"}),
        ev("device.fault", {"kind": "jam", "state": "cleared", "slot": 3,
                            "detail": "technician's visit"}),
    ])
    rows = {(e.kind, e.detail): e for e in s.StaffException.select()}
    assert set(rows) == {("device_fault.jam", "slot 3: slot 3 jammed during a dispense"),
                         ("device_fault.jam", "slot 4: jam"),
                         ("device_fault.bin_full", "bin 40/40")}
    closed = rows[("device_fault.jam", "slot 3: slot 3 jammed during a dispense")]
    assert closed.closed_at is not None and "technician's visit" in closed.resolution
    assert rows[("device_fault.jam", "slot 4: jam")].closed_at is None
    assert s.Event.select().where(s.Event.quarantined == True).count() == 0  # noqa: E712


def test_a_bad_stock_body_is_quarantined_not_applied(cloud_db: None) -> None:
    ev = Log()
    good = ev("stock.loaded", {"copy": "C1", "slot": 1})
    bad = parse_envelope({**good.raw, "seq": 2, "body": {"copy": "C1", "slot": 0}})
    ingest("m-a", [good, bad])
    assert [e.kind for e in s.StaffException.select()] == ["quarantined_event"]
    assert copy("C1") == ("in_slot", "m-a", 1)
