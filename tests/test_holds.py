"""Reservations on SQLite and PostgreSQL: a copy set aside or sent, ready, broken, expired."""
from __future__ import annotations

from datetime import timedelta

import pytest

from cloud import actions, feed, holds, settings
from cloud import store as s
from tests.cloud_fixtures import NodeLog

NODES = [{"id": "b-a", "kind": "branch"}, {"id": "b-b", "kind": "branch"},
         {"id": "b-p", "kind": "branch"}, {"id": "m-p", "kind": "machine"}]


@pytest.fixture
def fund(cloud_store: str) -> None:
    """Title T1 has one copy at b-a and one at b-b; T2 one copy at b-p."""
    s.seed(nodes=NODES,
           titles=[{"id": "T1", "title": "Көшпенділер", "item_type": "book"},
                   {"id": "T2", "title": "Ақ кеме", "item_type": "book"}],
           copies=[{"barcode": "A1", "title_id": "T1", "status": "on_shelf",
                    "location_node": "b-a", "home_node": "b-a"},
                   {"barcode": "B1", "title_id": "T1", "status": "on_shelf",
                    "location_node": "b-b", "home_node": "b-b"},
                   {"barcode": "P2", "title_id": "T2", "status": "on_shelf",
                    "location_node": "b-p", "home_node": "b-p"}],
           readers=[{"card": f"R{i}", "name": f"Reader {i}"} for i in range(1, 4)])


def changes(node: str, since: int, entity: str) -> list[dict]:
    """What ``node`` is told about ``entity`` after revision ``since``."""
    return [c for c in feed.changes_for(node, since)["changes"] if c["entity"] == entity]


def now_log(node: str) -> NodeLog:
    """A node online now: its events happen after the cloud's decisions so far."""
    return NodeLog(node)


def test_a_hold_where_a_copy_sits_is_ready_at_once_and_the_reader_is_told(fund) -> None:
    rev = feed.current_rev()
    h = actions.place_hold("R1", "T2", "b-p")
    assert (h.status, h.copy) == ("ready", "P2")
    assert h.expires == settings.today() + timedelta(days=7)
    [pushed] = changes("b-p", rev, "hold")
    assert (pushed["op"], pushed["data"]["status"], pushed["data"]["copy"]) == (
        "upsert", "ready", "P2")
    assert changes("b-a", rev, "hold") == []                   # only the pickup node
    notice = s.Notice.get(s.Notice.kind == "hold_ready")
    assert notice.reader == "R1" and "Ақ кеме" in notice.subject
    with pytest.raises(actions.ActionError, match="already"):
        actions.place_hold("R1", "T2", "b-p")


def test_a_copy_elsewhere_is_sent_and_the_hold_is_ready_when_it_arrives(fund) -> None:
    rev = feed.current_rev()
    h = actions.place_hold("R1", "T1", "b-p")
    c = s.Copy.get_by_id(h.copy)
    assert h.status == "waiting" and c.status == "in_transit" and c.transit_to == "b-p"
    # The branch it leaves stops lending it, and its staff see what to send where.
    assert [ch["op"] for ch in changes(c.location_node, rev, "copy")] == ["delete"]
    [t] = holds.transfers(c.location_node)
    assert (t.copy, t.to_node, t.reason) == (c.barcode, "b-p", "hold")
    # It arrives: the pickup branch checks it in.
    rev = feed.current_rev()
    now_log("b-p").take_back(c.barcode)
    h = s.Hold.get_by_id(h.id)
    assert h.status == "ready" and h.expires is not None
    assert s.Transfer.get_by_id(t.id).status == "arrived"
    assert [ch["data"]["status"] for ch in changes("b-p", rev, "hold")] == ["ready"]
    assert [ch["key"] for ch in changes("b-p", rev, "copy")] == [c.barcode]
    assert s.StaffException.select().count() == 0              # all as planned


def test_a_hold_at_a_machine_is_ready_when_a_technician_loads_the_copy(fund) -> None:
    h = actions.place_hold("R1", "T2", "m-p")
    assert h.status == "waiting" and h.copy == "P2"
    now_log("m-p").send("stock.loaded", {"copy": "P2", "slot": 5})
    h = s.Hold.get_by_id(h.id)
    c = s.Copy.get_by_id("P2")
    assert (h.status, c.status, c.location_node, c.slot) == ("ready", "in_slot", "m-p", 5)


def test_a_hold_whose_copy_left_with_someone_else_moves_to_another_copy(fund) -> None:
    h = actions.place_hold("R1", "T1", "b-a")
    assert (h.status, h.copy) == ("ready", "A1")
    rev = feed.current_rev()
    # b-a had not heard of the hold and lent the copy to R2: physical truth wins.
    now_log("b-a").lend("A1", "R2", settings.today() + timedelta(days=21))
    h = s.Hold.get_by_id(h.id)
    assert (h.status, h.copy) == ("waiting", "B1")             # sent from b-b instead
    assert s.Copy.get_by_id("B1").transit_to == "b-a"
    exc = s.StaffException.get(s.StaffException.kind == "hold_copy_taken")
    assert "A1" in exc.detail and "R2" in exc.detail and "B1" in exc.detail
    # The pickup node learns the hold now waits for B1 (A1 is no longer held for R1).
    last = changes("b-a", rev, "hold")[-1]["data"]
    assert (last["copy"], last["status"]) == ("B1", "waiting")


def test_the_reader_collecting_the_copy_fulfils_the_hold(fund) -> None:
    h = actions.place_hold("R1", "T2", "b-p")
    now_log("b-p").lend("P2", "R1", settings.today() + timedelta(days=21))
    assert s.Hold.get_by_id(h.id).status == "picked_up"
    assert s.StaffException.select().count() == 0


def test_an_uncollected_hold_expires_and_the_next_in_line_gets_the_copy(fund) -> None:
    first = actions.place_hold("R1", "T2", "b-p")
    second = actions.place_hold("R2", "T2", "b-p")
    assert first.status == "ready" and (second.status, second.copy) == ("waiting", None)
    assert [h.reader for h in holds.queue("T2")] == ["R1", "R2"]
    assert holds.expire(first.expires) == 0                    # the last day still counts
    assert holds.expire(first.expires + timedelta(days=1)) == 1
    assert s.Hold.get_by_id(first.id).status == "expired"
    second = s.Hold.get_by_id(second.id)
    assert (second.status, second.copy) == ("ready", "P2")
    assert s.Notice.get_or_none(s.Notice.id == f"hold_ready/{second.id}") is not None


def test_a_cancelled_hold_hands_its_copy_on(fund) -> None:
    first = actions.place_hold("R1", "T2", "b-p")
    second = actions.place_hold("R2", "T2", "b-p")
    actions.cancel_hold(first.id)
    assert s.Hold.get_by_id(second.id).copy == "P2"
    with pytest.raises(actions.ActionError):
        actions.cancel_hold(first.id)


def test_a_withdrawn_copy_moves_its_hold(fund) -> None:
    h = actions.place_hold("R1", "T1", "b-a")
    actions.withdraw("A1", "water damage")
    assert s.Copy.get_by_id("A1").status == "withdrawn"
    assert s.Hold.get_by_id(h.id).copy == "B1"
    gone = s.StaffException.get(s.StaffException.kind == "hold_copy_gone")
    assert "withdrawn" in gone.detail and "B1" in gone.detail


def test_a_fixed_copy_returned_away_goes_home_unless_a_reader_wants_it_there(fund) -> None:
    actions.set_collection("reference", floating=False)
    s.Copy.update(collection="reference").where(s.Copy.barcode.in_(["A1", "B1"])).execute()
    due = settings.today() + timedelta(days=21)
    b_p = now_log("b-p")
    now_log("b-a").lend("A1", "R1", due)
    now_log("b-b").lend("B1", "R2", due)
    # A1 comes back at b-p: it is sent home to b-a.
    b_p.take_back("A1")
    a1 = s.Copy.get_by_id("A1")
    assert (a1.status, a1.location_node, a1.transit_to) == ("in_transit", "b-p", "b-a")
    assert [(t.copy, t.from_node, t.to_node, t.reason) for t in holds.transfers("b-p")] == [
        ("A1", "b-p", "b-a", "home")]
    # R3 reserves T1 at b-p, where A1 still waits for the courier: it stays for R3.
    h = actions.place_hold("R3", "T1", "b-p")
    assert (h.copy, h.status) == ("A1", "ready")
    assert s.Copy.get_by_id("A1").status == "on_shelf"
    b_p.take_back("B1")
    b1 = s.Copy.get_by_id("B1")
    assert (b1.status, b1.transit_to) == ("in_transit", "b-b")  # nobody else waits: home
    assert {(t.copy, t.status) for t in s.Transfer.select()} >= {("A1", "cancelled"),
                                                                 ("B1", "open")}
