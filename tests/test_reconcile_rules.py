"""Reconciliation rules, pure: returns away from home, the cloud's own facts, clocks, holds."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from cloud import fines
from cloud.reconcile import (
    Borrower,
    Candidate,
    CopyState,
    Fact,
    bound_reported,
    checkin,
    checkout_flags,
    choose_copy,
    cloud_fact_key,
    corrected_due,
    declared_lost,
    fact_key,
    hold_effect,
    read_clock,
    replay,
    step,
    transfer,
)

AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def lent(home: str = "b-home", floating: bool = False) -> CopyState:
    return CopyState("C1", True, "on_loan", None, None, "L1", home_node=home, floating=floating)


# -- returns anywhere ---------------------------------------------------------------

def test_a_fixed_copy_returned_away_from_home_goes_into_transit_home() -> None:
    out = checkin(lent(), node="b-away", node_kind="branch", at=AT)
    assert (out.copy.status, out.copy.location_node, out.copy.transit_to) == (
        "in_transit", "b-away", "b-home")
    assert [(c.loan_id, c.reason) for c in out.closes] == [("L1", "returned")]
    assert not out.repairs


def test_a_fixed_copy_returned_at_home_is_on_the_shelf() -> None:
    out = checkin(lent(), node="b-home", node_kind="branch", at=AT)
    assert (out.copy.status, out.copy.location_node, out.copy.transit_to) == (
        "on_shelf", "b-home", None)


def test_a_floating_copy_stays_where_it_is_returned() -> None:
    out = checkin(lent(floating=True), node="m-mall", node_kind="machine", at=AT)
    assert (out.copy.status, out.copy.location_node, out.copy.transit_to) == (
        "in_bin", "m-mall", None)


def test_a_copy_in_transit_arrives_when_checked_in_at_its_destination() -> None:
    going = CopyState("C1", True, "in_transit", "b-from", None, None, "b-pickup",
                      floating=True)
    passing = checkin(going, node="b-hub", node_kind="branch", at=AT)
    assert (passing.copy.status, passing.copy.location_node, passing.copy.transit_to) == (
        "in_transit", "b-hub", "b-pickup")
    arrived = checkin(going, node="b-pickup", node_kind="branch", at=AT)
    assert (arrived.copy.status, arrived.copy.location_node, arrived.copy.transit_to) == (
        "on_shelf", "b-pickup", None)
    assert not arrived.repairs and not passing.repairs


def test_a_lost_copy_that_comes_back_is_back_in_the_fund_and_flagged() -> None:
    out = checkin(CopyState("C1", True, "lost"), node="b-a", node_kind="branch", at=AT)
    assert (out.copy.status, out.copy.location_node) == ("on_shelf", "b-a")
    assert [r.kind for r in out.repairs] == ["lost_copy_returned"]


def test_a_copy_lent_while_in_transit_loses_its_destination() -> None:
    going = CopyState("C1", True, "in_transit", "b-from", None, None, "b-pickup")
    out = step(going, Fact("k", "b-from", "branch", 1, "loan.checkout", AT,
                           {"loan_id": "L9", "copy": "C1", "reader": "R2",
                            "due": date(2026, 11, 23)}))
    assert (out.copy.status, out.copy.transit_to, out.copy.loan_id) == ("on_loan", None, "L9")


# -- facts the cloud decides ---------------------------------------------------------

@pytest.mark.parametrize(("before", "status", "transit_to"), [
    (CopyState("C1", True, "on_shelf", "b-a"), "in_transit", "b-pickup"),
    (CopyState("C1", True, "in_slot", "m-a", 4), "in_transit", "b-pickup"),
    (CopyState("C1", True, "on_loan", None, None, "L1"), "on_loan", None),   # nothing to send
    (CopyState("C1", True, "lost"), "lost", None),
    (CopyState("C1", True, "in_transit", "b-pickup", None, None, "b-home"), "on_shelf", None),
])
def test_a_transfer_sends_only_a_copy_that_is_somewhere(before, status, transit_to) -> None:
    out = transfer(before, to="b-pickup", to_kind="branch")
    assert (out.copy.status, out.copy.transit_to) == (status, transit_to)


def test_a_loan_declared_lost_closes_only_if_the_copy_is_still_on_it() -> None:
    out = declared_lost(CopyState("C1", True, "on_loan", None, None, "L1"), loan_id="L1", at=AT)
    assert out.copy.status == "lost"
    assert [(c.loan_id, c.reason) for c in out.closes] == [("L1", "lost")]
    late = declared_lost(CopyState("C1", True, "on_shelf", "b-a"), loan_id="L1", at=AT)
    assert late.copy.status == "on_shelf" and not late.closes


def test_a_late_return_replayed_before_the_lost_declaration_undoes_it() -> None:
    """Declared lost in the cloud, but a node had taken the copy back before that."""
    origin = CopyState("C1", True, "on_shelf", "b-a", floating=True)
    t1, t2, t3 = AT, AT + timedelta(days=70), AT + timedelta(days=80)
    checkout = Fact(fact_key(f"{_ms(t1):013d}-00000", "b-a", 1), "b-a", "branch", 1,
                    "loan.checkout", t1, {"loan_id": "L1", "copy": "C1", "reader": "R1",
                                          "due": date(2026, 11, 23)})
    lost = Fact(cloud_fact_key(checkout.key, _ms(t3)), "cloud", "cloud", 0, "cloud.lost", t3,
                {"loan_id": "L1"})
    ret = Fact(fact_key(f"{_ms(t2):013d}-00000", "b-b", 1), "b-b", "branch", 1, "loan.return",
               t2, {"copy": "C1"})
    assert checkout.key < ret.key < lost.key
    result = replay(origin, [checkout, ret, lost])
    assert (result.copy.status, result.copy.location_node) == ("on_shelf", "b-b")
    assert result.loans["L1"].close_reason == "returned"


def test_cloud_fact_keys_come_after_every_fact_the_copy_has() -> None:
    last = fact_key("1800000000000-00007", "m-future", 3)   # a node clock far ahead
    key = cloud_fact_key(last, 1700000000000)
    assert key > last
    assert cloud_fact_key(key, 1700000000000) > key
    assert cloud_fact_key(None, 1700000000000).startswith("1700000000000-00000|cloud|")


# -- offline checkouts the cloud would have refused ----------------------------------

@pytest.mark.parametrize(("borrower", "kinds"), [
    (Borrower(True, None, None, 3, 10), []),
    (Borrower(False), ["checkout_by_unknown_reader"]),
    (Borrower(True, "3 books overdue", AT - timedelta(hours=1), 3, 10),
     ["checkout_while_blocked"]),
    (Borrower(True, "3 books overdue", AT + timedelta(hours=1), 3, 10), []),  # blocked later
    (Borrower(True, None, None, 11, 10), ["checkout_over_limit"]),
    (Borrower(True, "lost card", None, 6, 5), ["checkout_while_blocked", "checkout_over_limit"]),
])
def test_checkouts_a_node_allowed_offline_are_flagged(borrower, kinds) -> None:
    flags = checkout_flags(borrower, node="m-a", copy="C1", reader="R1", at=AT)
    assert [f.kind for f in flags] == kinds
    assert all("C1" in f.detail and "m-a" in f.detail for f in flags)


# -- clocks ----------------------------------------------------------------------------

def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.mark.parametrize(("ts", "hlc", "offset", "at", "flagged"), [
    # right clock, live event
    (AT, AT, None, AT, False),
    # right clock, an event that waited a day in an offline outbox: no evidence
    (AT - timedelta(days=1), AT - timedelta(days=1), None, AT - timedelta(days=1), False),
    # three hours ahead: the receive time bounds it
    (AT + timedelta(hours=3), AT + timedelta(hours=3), None, AT, True),
    # the wall clock fell back to 2000 after a power cut; the HLC remembers (its
    # wall part stuck at the last good reading)
    (datetime(2000, 1, 1, tzinfo=UTC), AT - timedelta(minutes=5), None,
     AT - timedelta(minutes=5), True),
    # a ts 3 hours behind the HLC, whatever its counter: the clock went back (a time the
    # node was told, as a kiosk's no-block checkout, is the body's "at", not the ts)
    (AT - timedelta(hours=3), AT, None, AT, True),
    # measured 2 hours behind by its status: corrected by that offset
    (AT - timedelta(hours=2, minutes=10), AT - timedelta(hours=2, minutes=10), -7200.0,
     AT - timedelta(minutes=10), True),
])
def test_a_wrong_clock_is_read_right(ts, hlc, offset, at, flagged) -> None:
    r = read_clock(ts, _ms(hlc), AT, offset, threshold_s=120)
    assert r.at == at
    assert (r.cause is not None) == flagged


@pytest.mark.parametrize(("at", "believed"), [
    (AT - timedelta(hours=3), AT - timedelta(hours=3)),        # stored 3 hours by a kiosk
    (AT + timedelta(minutes=5), AT),                           # not after the node wrote it
    (datetime(2000, 1, 1, tzinfo=UTC), AT - timedelta(days=14)),   # a kiosk clock reset
])
def test_a_reported_time_is_believed_within_bounds(at, believed) -> None:
    assert bound_reported(at, AT, timedelta(days=14)) == believed


def test_a_due_date_from_a_wrong_day_keeps_its_loan_period() -> None:
    ts = datetime(2000, 1, 1, 12, tzinfo=UTC)
    assert corrected_due(date(2000, 1, 22), ts, AT) == date(2026, 11, 23)


# -- holds ------------------------------------------------------------------------------

@pytest.mark.parametrize(("copy", "lent_to", "kind", "effect"), [
    (CopyState("C1", True, "on_shelf", "b-p"), None, "branch", "ready"),
    (CopyState("C1", True, "in_slot", "m-p", 2), None, "machine", "ready"),
    (CopyState("C1", True, "in_bin", "m-p"), None, "machine", "on_its_way"),  # needs a technician
    (CopyState("C1", True, "in_transit", "b-x", None, None, "b-p"), None, "branch", "on_its_way"),
    (CopyState("C1", True, "on_shelf", "b-x"), None, "branch", "astray"),
    (CopyState("C1", True, "on_loan", None, None, "L1"), "R1", "branch", "fulfilled"),
    (CopyState("C1", True, "on_loan", None, None, "L1"), "R2", "branch", "broken"),
    (CopyState("C1", True, "missing"), None, "branch", "broken"),
])
def test_what_a_copys_place_means_for_its_hold(copy, lent_to, kind, effect) -> None:
    pickup = "m-p" if kind == "machine" else "b-p"
    assert hold_effect(copy, reader="R1", pickup=pickup, pickup_kind=kind,
                       lent_to=lent_to) == effect


def test_the_copy_for_a_hold_is_the_easiest_to_hand_out() -> None:
    far_machine = Candidate("C1", "in_slot", "m-far", "machine")
    far_shelf = Candidate("C2", "on_shelf", "b-far", "branch")
    here = Candidate("C3", "on_shelf", "b-p", "branch")
    carried = Candidate("C4", "in_transit", None, None, "b-home", "b-home")
    other_hold = Candidate("C5", "in_transit", "b-x", "branch", "b-y", "b-home")
    assert choose_copy([far_machine, far_shelf, here], "b-p", "branch") == here
    assert choose_copy([far_machine, far_shelf], "b-p", "branch") == far_shelf
    assert choose_copy([far_machine, carried, other_hold], "b-p", "branch") == far_machine
    assert choose_copy([carried, other_hold], "b-p", "branch") is None


# -- fines, discounts, blocks ------------------------------------------------------------

RULE = fines.FineRule(per_day=5000, cap=100_000, grace_days=2, replacement=300_000)


@pytest.mark.parametrize(("until", "amount"), [
    (date(2026, 11, 10), 0),            # not due yet
    (date(2026, 11, 12), 0),            # within the grace days
    (date(2026, 11, 13), 15_000),       # three days overdue
    (date(2027, 1, 1), 100_000),        # capped
])
def test_fines_by_the_day_after_grace_and_capped(until, amount) -> None:
    assert fines.fine(RULE, date(2026, 11, 10), until) == amount


def test_no_policy_means_no_fine() -> None:
    assert fines.fine(fines.rule_for({}, "book"), date(2026, 1, 1), date(2026, 12, 1)) == 0
    assert fines.rule_for({"*": RULE}, "dvd") == RULE


@pytest.mark.parametrize(("category", "kind", "amount"), [
    ("supported", "membership", 0),
    ("partner_staff", "membership", 60_000),
    ("partner_staff", "service", 60_000),
    ("member", "service", 70_000),
    ("member", "membership", 100_000),
    ("adult", "service", 100_000),
    ("supported", "fine", 100_000),     # fines are not discounted unless configured
])
def test_default_discounts_by_reader_category(category, kind, amount) -> None:
    assert fines.discounted(100_000, category, kind) == amount


def test_a_configured_table_overrides_and_rounds_half_up() -> None:
    table = {**fines.DEFAULT_DISCOUNTS, ("pensioner", "*"): 50, ("supported", "membership"): 0}
    assert fines.discounted(101, "pensioner", "fine", table) == 51
    assert fines.discounted(100_000, "supported", "membership", table) == 100_000


@pytest.mark.parametrize(("kw", "decision"), [
    ({"reason": None, "blocked_by": None, "overdue_items": 3, "owed": 0},
     ("block", "3 books overdue")),
    ({"reason": None, "blocked_by": None, "overdue_items": 2, "owed": 0}, None),
    ({"reason": None, "blocked_by": None, "overdue_items": 0, "owed": 500_000},
     ("block", "owes 5\u00a0000\u00a0₸ or more")),
    ({"reason": "3 books overdue", "blocked_by": "auto", "overdue_items": 1, "owed": 0},
     ("unblock", None)),
    ({"reason": "lost card", "blocked_by": "staff", "overdue_items": 0, "owed": 0}, None),
    ({"reason": "3 books overdue", "blocked_by": "auto", "overdue_items": 4, "owed": 0},
     ("block", "4 books overdue")),
])
def test_blocks_follow_the_thresholds_but_not_staff_decisions(kw, decision) -> None:
    assert fines.block_decision(items_at=3, fees_at=500_000, **kw) == decision
