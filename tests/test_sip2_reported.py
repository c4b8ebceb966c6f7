"""Kiosk transactions reported later, from the kiosk's socket to the cloud's tables.

A self-check that lent books while it could not reach the node uploads them
with no block = Y. The node writes them now (ts and HLC: its own clock) with
the kiosk's time as the body's ``at``. Two events in one millisecond (a
checkout that fulfils a hold, or a re-lend that first closes a loan) put the
HLC's counter above 0: the cloud must still keep the kiosk's times and due
dates and must not call the node's clock wrong. The node's HLC is fixed to one
millisecond here so the events share it; the outbox is then ingested by the
cloud (SQLite and PostgreSQL) exactly as the sync agent would hand it over.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud import clocks
from cloud import store as s
from cloud.ingest import ingest
from edge import store as es
from protocol.envelope import decode_batch, encode_batch
from protocol.hlc import HybridClock
from tests import sip2_client as sc
from tests.conftest import library_date
from tests.test_sip2_server import INST, Branch, start_branch, stop_branch


@pytest.fixture
def branch(tmp_path: Path, cloud_store: str) -> Iterator[Branch]:
    """The SIP2 tests' branch, and a cloud that knows the same fund."""
    s.seed(nodes=[{"id": "b-test", "kind": "branch"}],
           titles=[{"id": "T1", "title": "Абай жолы"}, {"id": "T3", "title": "Held title"}],
           copies=[*({"barcode": f"C0{i}", "title_id": "T1", "status": "on_shelf",
                      "location_node": "b-test"} for i in range(1, 10)),
                   {"barcode": "H01", "title_id": "T3", "status": "on_shelf",
                    "location_node": "b-test"}],
           readers=[{"card": "R0001", "name": "Әлия Қасым"}, {"card": "R0002", "name": "Ержан"}])
    now = s.utcnow()
    s.Hold.create(id="H1", title_id="T3", reader="R0002", pickup_node="b-test", copy="H01",
                  status="ready", created_at=now - timedelta(days=1), ready_at=now,
                  expires=(now + timedelta(days=7)).date())
    b = start_branch(tmp_path)
    yield b
    stop_branch(b)


def fix_clock(store: es.EdgeStore, when: datetime) -> None:
    """Every event the node writes from now on has its HLC in this one millisecond."""
    ms = int(when.timestamp() * 1000)
    store.clock = HybridClock(lambda: ms, store.clock.last)


def to_cloud(store: es.EdgeStore) -> None:
    """Hand the node's outbox to the cloud, as one batch off the wire."""
    envelopes = [env for _, env in store.pending(0, 1000)]
    ingest("b-test", decode_batch(encode_batch(envelopes), "b-test"), s.utcnow())


def clock_exceptions() -> list[str]:
    return [e.detail for e in s.StaffException.select().where(
        s.StaffException.kind.in_([clocks.KIND, clocks.CLAMPED]))]


def test_a_stored_checkout_that_fulfils_a_hold_keeps_the_kiosks_time(branch: Branch) -> None:
    fix_clock(branch.store, datetime.now(UTC))
    when = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    r = branch.kiosk().checkout(INST, "R0002", "H01", no_block=True, when=sc.sip_date(when))
    assert r.fixed["ok"] == "1"
    hlcs = [(e["type"], e["hlc"][-5:]) for e in branch.events()]
    assert hlcs == [("loan.checkout", "00000"), ("hold.picked_up", "00001")]
    to_cloud(branch.store)

    loan = s.Loan.get((s.Loan.copy == "H01") & (s.Loan.reader == "R0002"))
    assert loan.checked_out_at == when
    assert (loan.due, loan.due_node) == (library_date(when) + timedelta(days=21), None)
    assert s.Hold.get_by_id("H1").status == "picked_up"
    assert s.Node.get_by_id("b-test").clock_flagged_at is None
    assert clock_exceptions() == []


def test_a_stored_checkout_of_a_copy_on_loan_here_closes_that_loan_at_its_time(
        branch: Branch) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    fix_clock(branch.store, yesterday)            # the desk lent C05 yesterday
    branch.store.checkout("R0001", "C05", now=yesterday)
    fix_clock(branch.store, datetime.now(UTC))
    when = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    # It came back unseen and a kiosk lent it three hours ago; the upload comes now.
    r = branch.kiosk().checkout(INST, "R0002", "C05", no_block=True, when=sc.sip_date(when))
    assert r.fixed["ok"] == "1"
    last_two = [(e["type"], e["hlc"][-5:]) for e in branch.events()[-2:]]
    assert last_two == [("loan.return", "00000"), ("loan.checkout", "00001")]
    to_cloud(branch.store)

    first = s.Loan.get((s.Loan.copy == "C05") & (s.Loan.reader == "R0001"))
    second = s.Loan.get((s.Loan.copy == "C05") & (s.Loan.reader == "R0002"))
    assert first.returned_at == when
    assert second.checked_out_at == when and second.returned_at is None
    assert second.due == library_date(when) + timedelta(days=21)
    assert s.Copy.get_by_id("C05").status == "on_loan"
    assert s.Node.get_by_id("b-test").clock_flagged_at is None
    assert clock_exceptions() == []
    # What the cloud keeps as the event is what the node sent: its clock, and "at".
    ev = s.Event.get((s.Event.node == "b-test") & (s.Event.type == "loan.checkout")
                     & (s.Event.seq == 3))
    body = json.loads(ev.body)
    assert (datetime.fromisoformat(body["at"]), body["source"]) == (when, "sip2:k1")
