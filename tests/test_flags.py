"""Checkouts a node allowed offline, on SQLite and PostgreSQL: flagged by when they happened,
whatever order the nodes' links came back in."""
from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest

from cloud import actions, debts, settings
from cloud import store as s
from cloud.copies import EXPLAINED
from cloud.ingest import ingest
from protocol.envelope import Event
from tests.cloud_fixtures import NodeLog, reset_cloud

# (node, event type, body, hours after the start): what happened, in clock order.
Story = list[tuple[str, str, dict[str, Any], float]]

LEND_C1 = ("b-a", "loan.checkout", {"loan_id": "A1", "copy": "C1", "reader": "R1"}, 1)
LEND_C2 = ("b-b", "loan.checkout", {"loan_id": "B1", "copy": "C2", "reader": "R1"}, 2)


def _seed() -> None:
    s.seed(nodes=[{"id": "b-a", "kind": "branch"}, {"id": "b-b", "kind": "branch"}],
           titles=[{"id": "T1", "title": "Абай жолы"}],
           copies=[{"barcode": f"C{i}", "title_id": "T1", "status": "on_shelf",
                    "location_node": node, "home_node": node}
                   for i, node in enumerate(["b-a", "b-b", "b-b", "b-b"], start=1)],
           readers=[{"card": "R1", "name": "Айгерим", "category": "adult"}])
    actions.set_policy("*", "adult", 21, 1, 2)     # one book at a time


def _events(story: Story) -> list[Event]:
    start = s.utcnow() - timedelta(days=2)
    logs = {node: NodeLog(node, start) for node, *_ in story}
    out = []
    for node, type_, body, hours in story:
        if type_ == "loan.checkout":
            body = {**body, "due": (start + timedelta(days=21)).date()}
        out.append(logs[node].event(type_, body, start + timedelta(hours=hours)))
    return out


def _interleavings(events: list[Event]) -> list[list[Event]]:
    """Every arrival order that keeps each node's own order (the cloud enforces it)."""
    orders = []
    for perm in itertools.permutations(events):
        seen: dict[str, int] = {}
        if all(seen.setdefault(ev.node, ev.seq) <= ev.seq and not seen.update({ev.node: ev.seq})
               for ev in perm):
            orders.append(list(perm))
    return orders


def _open_flags() -> list[tuple[str, str, int]]:
    return sorted(s.StaffException.select(s.StaffException.kind, s.StaffException.node,
                                          s.StaffException.seq)
                  .where(s.StaffException.closed_at.is_null()).tuples())


def _arrive(order: list[Event]) -> list[tuple[str, str, int]]:
    reset_cloud()
    _seed()
    for ev in order:
        ingest(ev.node, [ev])
    return _open_flags()


@pytest.mark.parametrize(("story", "flagged"), [
    # Lent at b-a, then at b-b while the first was still out, then the first came back:
    # the second checkout was over the limit, even if b-a's return reaches the cloud first.
    ([LEND_C1, LEND_C2, ("b-a", "loan.return", {"copy": "C1"}, 3)],
     [("checkout_over_limit", "b-b", 1)]),
    # Back before the second was lent: nothing to flag, even if b-b's checkout arrives first.
    ([LEND_C1, ("b-a", "loan.return", {"copy": "C1"}, 1.5), LEND_C2], []),
    # Paid and borrowed with a card issued at b-a that the cloud had not heard of yet.
    ([("b-a", "reader.registered", {"card": "N1", "name": "Жаңа", "category": "adult",
                                    "pin_hash": "x"}, 0.5),
      ("b-b", "fee.paid", {"payment_id": "P1", "reader": "N1", "amount": 500, "kind": "fee",
                           "description": ""}, 1),
      ("b-b", "loan.checkout", {"loan_id": "B2", "copy": "C3", "reader": "N1"}, 1.5)], []),
])
def test_any_arrival_order_ends_with_the_flags_of_clock_order(cloud_store: str, story: Story,
                                                               flagged: list) -> None:
    events = _events(story)
    assert _arrive(events) == flagged              # clock order
    for order in _interleavings(events):
        assert _arrive(order) == flagged, [(e.node, e.type) for e in order]


def test_a_flag_a_late_event_explains_is_closed_with_the_reason(cloud_store: str) -> None:
    lend_a, back_a, lend_b = _events([LEND_C1, ("b-a", "loan.return", {"copy": "C1"}, 1.5),
                                      LEND_C2])
    _arrive([lend_a, lend_b])
    flag = s.StaffException.get(s.StaffException.kind == "checkout_over_limit")
    assert (flag.node, flag.reader, flag.loan, flag.closed_at) == ("b-b", "R1", "B1", None)
    ingest("b-a", [back_a])                      # it had come back an hour before
    flag = s.StaffException.get_by_id(flag.id)
    assert flag.closed_at is not None and flag.resolution == EXPLAINED


def test_a_flag_staff_closed_stays_closed(cloud_store: str) -> None:
    lend_a, back_a, lend_b = _events([LEND_C1, LEND_C2, ("b-a", "loan.return", {"copy": "C1"},
                                                          3)])
    _arrive([lend_a, lend_b])
    s.StaffException.update(closed_at=s.utcnow(), resolution="talked to the reader").execute()
    ingest("b-a", [back_a])
    assert _open_flags() == []


def test_registration_explains_the_unknown_card(cloud_store: str) -> None:
    reset_cloud()
    _seed()
    pay, lend = _events([("b-b", "fee.paid", {"payment_id": "P1", "reader": "N1",
                                              "amount": 500, "kind": "fee", "description": ""},
                          1),
                         ("b-b", "loan.checkout", {"loan_id": "B2", "copy": "C3",
                                                   "reader": "N1"}, 2)])
    ingest("b-b", [pay, lend])
    assert [k for k, *_ in _open_flags()] == ["checkout_by_unknown_reader",
                                              "payment_from_unknown_reader"]
    NodeLog("b-a").send("reader.registered", {"card": "N1", "name": "Жаңа",
                                              "category": "adult", "pin_hash": "x"})
    assert _open_flags() == []
    assert {e.resolution for e in s.StaffException.select()} == {EXPLAINED}
    assert s.Reader.get_by_id("N1").fees_owed == -500


def test_an_automatic_block_keeps_its_start_when_its_reason_grows(cloud_store: str) -> None:
    """An offline checkout after the block began is flagged though the reason changed since."""
    reset_cloud()
    _seed()
    actions.set_setting("cloud.block_overdue_items", "0")    # no blocks yet
    actions.set_policy("*", "adult", 21, 10, 2)
    today = settings.today()
    old = NodeLog("b-a", s.utcnow() - timedelta(days=30))
    for copy, due in (("C1", -10), ("C2", -10), ("C3", -3)):
        old.lend(copy, "R1", today + timedelta(days=due))
    s.StaffException.delete().execute()          # b-a lent b-b's copies: not the point
    actions.set_setting("cloud.block_overdue_items", "2")
    began = _noon(today - timedelta(days=5))
    assert debts.overdue_run(today - timedelta(days=5), now=began).blocked == 1
    assert s.Reader.get_by_id("R1").blocked_reason == "2 books overdue"
    debts.overdue_run(today)
    r = s.Reader.get_by_id("R1")
    assert (r.blocked_reason, r.blocked_at) == ("3 books overdue", began)
    # b-b, offline since before the block, lent R1 another book two days ago.
    NodeLog("b-b").lend("C4", "R1", today + timedelta(days=19),
                        at=_noon(today - timedelta(days=2)))
    assert [k for k, *_ in _open_flags()] == ["checkout_while_blocked"]


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12), settings.library_tz())
