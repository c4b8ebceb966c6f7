"""Nodes with wrong clocks (SQLite and PostgreSQL): flagged for staff, their dates corrected."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from cloud import actions, clocks, debts, settings
from cloud import store as s
from protocol.envelope import make_envelope, parse_envelope


@pytest.fixture
def net(cloud_store: str) -> None:
    s.seed(nodes=[{"id": "m-a", "kind": "machine"}, {"id": "b-a", "kind": "branch"}],
           titles=[{"id": "T1", "title": "Абай жолы"}],
           copies=[{"barcode": f"C{i}", "title_id": "T1", "status": "in_slot",
                    "location_node": "m-a", "slot": i} for i in range(1, 5)],
           readers=[{"card": "R1", "name": "Айгерим"}])


def send(node: str, seq: int, type_: str, body: dict, ts: datetime,
         hlc_at: datetime | None = None, received: datetime | None = None,
         counter: int = 0) -> None:
    from cloud.ingest import ingest

    hlc = f"{int((hlc_at or ts).timestamp() * 1000):013d}-{counter:05d}"
    ingest(node, [parse_envelope(make_envelope(node, seq, hlc, ts, type_, body))], received)


def open_skew() -> list[s.StaffException]:
    return list(s.StaffException.select().where((s.StaffException.kind == clocks.KIND)
                                                & s.StaffException.closed_at.is_null()))


def test_a_clock_days_ahead_is_flagged_once_and_its_due_dates_corrected(net) -> None:
    now = s.utcnow()
    ahead = now + timedelta(days=3)
    for seq, copy in ((1, "C1"), (2, "C2")):
        send("m-a", seq, "loan.checkout", {"loan_id": f"L{seq}", "copy": copy, "reader": "R1",
                                           "due": (ahead + timedelta(days=21)).date()},
             ahead + timedelta(seconds=seq), received=now)
    node = s.Node.get_by_id("m-a")
    assert node.clock_flagged_at is not None and "ahead" in node.clock_note
    assert len(open_skew()) == 1                          # one per episode, not per event
    loan = s.Loan.get_by_id("L1")
    assert loan.due == (now + timedelta(days=21)).date()  # the loan period from the right day
    assert loan.due_node == (ahead + timedelta(days=21)).date()
    assert abs((loan.checked_out_at - now).total_seconds()) < 5
    # Someone fixes the clock: the next live event agrees, the flag lifts.
    later = s.utcnow()
    send("m-a", 3, "loan.return", {"copy": "C1"}, later, received=later)
    assert s.Node.get_by_id("m-a").clock_flagged_at is None
    assert open_skew() == []
    assert "agrees" in s.StaffException.get(s.StaffException.kind == clocks.KIND).resolution


def test_a_clock_reset_to_2000_is_caught_by_the_hybrid_clock_and_fines_nobody(net) -> None:
    actions.set_fine_policy("*", per_day=10_000)
    now = s.utcnow()
    dead = datetime(2000, 1, 1, 0, 5, tzinfo=UTC)        # the RTC battery died
    # Its HLC stayed at the last good reading and counts on from there.
    send("m-a", 1, "loan.checkout", {"loan_id": "L1", "copy": "C1", "reader": "R1",
                                     "due": (dead + timedelta(days=21)).date()},
         dead, hlc_at=now - timedelta(minutes=1), received=now, counter=4)
    loan = s.Loan.get_by_id("L1")
    assert loan.due == (now - timedelta(minutes=1) + timedelta(days=21)).date()
    assert loan.checked_out_at.year == now.year
    debts.overdue_run(settings.today())
    assert s.Reader.get_by_id("R1").fees_owed == 0        # not 26 years overdue
    assert "behind its hybrid clock" in open_skew()[0].detail


def test_a_live_status_measures_the_clock_and_corrects_what_follows(net) -> None:
    now = s.utcnow()
    clocks.observe_status("b-a", now - timedelta(hours=2), now)
    node = s.Node.get_by_id("b-a")
    assert node.clock_offset_s == pytest.approx(-7200, abs=1)
    assert node.clock_flagged_at is not None and "behind" in node.clock_note
    # A checkout stamped by that clock is put two hours later.
    ts = now - timedelta(hours=2)
    send("b-a", 1, "loan.checkout", {"loan_id": "L1", "copy": "C2", "reader": "R1",
                                     "due": (ts + timedelta(days=21)).date()}, ts, received=now)
    assert abs((s.Loan.get_by_id("L1").checked_out_at - now).total_seconds()) < 5
    clocks.observe_status("b-a", s.utcnow(), s.utcnow())
    assert s.Node.get_by_id("b-a").clock_flagged_at is None and open_skew() == []


def test_a_checkout_a_kiosk_reports_late_keeps_its_own_time(net) -> None:
    """A self-check kiosk lent offline 3 hours ago; the node (clock right) reports it now."""
    now = s.utcnow()
    then = now - timedelta(hours=3)
    due = (then + timedelta(days=21)).date()
    # The node writes it now: ts and HLC are its clock, "at" the kiosk's; two events in
    # one millisecond (a hold collected) put the HLC's counter above 0.
    send("b-a", 1, "loan.checkout", {"loan_id": "L1", "copy": "C3", "reader": "R1",
                                     "due": due, "at": then, "source": "sip2:hall-1"},
         now, received=now, counter=2)
    send("b-a", 2, "loan.return", {"copy": "C3", "loan_id": "L1", "reader": "R1",
                                   "at": then + timedelta(hours=1)}, now, received=now,
         counter=3)
    assert s.Node.get_by_id("b-a").clock_flagged_at is None and open_skew() == []
    loan = s.Loan.get_by_id("L1")
    assert (loan.checked_out_at, loan.due, loan.due_node) == (then, due, None)
    assert loan.returned_at == then + timedelta(hours=1)
    assert s.StaffException.select().where(
        s.StaffException.kind == clocks.CLAMPED).count() == 0


def test_a_reported_time_out_of_bounds_is_moved_and_shown_to_staff(net) -> None:
    """A kiosk whose clock reset to 2000, or one ahead of the node: believed within bounds."""
    now = s.utcnow()
    dead = datetime(2000, 1, 1, 9, tzinfo=UTC)
    send("b-a", 1, "loan.checkout", {"loan_id": "L1", "copy": "C1", "reader": "R1",
                                     "due": date(2000, 1, 22), "at": dead,
                                     "source": "sip2:hall-1"}, now, received=now)
    floor = now - timedelta(days=settings.get_int("cloud.max_report_delay_days"))
    loan = s.Loan.get_by_id("L1")
    assert loan.checked_out_at == floor
    assert (loan.due, loan.due_node) == (floor.date() + timedelta(days=21), date(2000, 1, 22))
    send("b-a", 2, "loan.checkout", {"loan_id": "L2", "copy": "C2", "reader": "R1",
                                     "due": (now + timedelta(days=22)).date(),
                                     "at": now + timedelta(days=1)}, now, received=now)
    assert s.Loan.get_by_id("L2").checked_out_at == now
    clamped = list(s.StaffException.select().where(s.StaffException.kind == clocks.CLAMPED)
                   .order_by(s.StaffException.seq))
    assert [(e.node, e.seq, e.copy) for e in clamped] == [("b-a", 1, "C1"), ("b-a", 2, "C2")]
    assert "by sip2:hall-1 at 2000-01-01" in clamped[0].detail
    assert "after the node recorded it" in clamped[1].detail
    assert open_skew() == []                      # the node's own clock is right
    debts.overdue_run(settings.today())
    assert s.Reader.get_by_id("R1").blocked_reason is None   # nothing 26 years overdue


def test_an_event_that_waited_offline_is_no_evidence_against_a_clock(net) -> None:
    old = s.utcnow() - timedelta(days=2)
    send("m-a", 1, "loan.checkout", {"loan_id": "L1", "copy": "C1", "reader": "R1",
                                     "due": (old + timedelta(days=21)).date()}, old)
    assert s.Node.get_by_id("m-a").clock_flagged_at is None and open_skew() == []
    assert s.Loan.get_by_id("L1").checked_out_at == old
