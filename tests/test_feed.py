"""The change feed: the cloud's answers (SQLite and PostgreSQL) and the node's applier."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import actions, feed
from cloud import store as cs
from edge import routing
from edge import store as es
from edge.feed import FeedApplier
from protocol.feed import decode_down, encode_down


@pytest.fixture
def cloud(cloud_store: str) -> Iterator[None]:
    """A small cloud, on SQLite and on PostgreSQL."""
    cs.seed(nodes=[{"id": "m-a", "kind": "machine"}, {"id": "b-b", "kind": "branch"}],
            titles=[{"id": "T1", "title": "Абай жолы", "item_type": "book"}],
            readers=[{"card": "R1", "name": "Айгерим"}, {"card": "R2", "name": "Нурлан"}],
            copies=[{"barcode": "C1", "title_id": "T1", "status": "in_slot",
                     "location_node": "m-a", "slot": 1},
                    {"barcode": "C2", "title_id": "T1", "status": "on_shelf",
                     "location_node": "b-b"}])
    yield


@pytest.fixture
def node(tmp_path: Path) -> Iterator[es.EdgeStore]:
    store = es.EdgeStore("m-a", str(tmp_path / "edge.db"))
    yield store
    es.db.close()


def wire(kind: str, fields: dict) -> dict:
    """What the node receives: encoded by the cloud, decoded and validated at the node."""
    return decode_down(encode_down(kind, **fields))


def bootstrap(node: es.EdgeStore, target: str = "m-a") -> FeedApplier:
    applier = FeedApplier(node)
    parts = feed.snapshot(target)
    for part in parts:
        applier.add_snapshot_part(wire("snapshot", part))
    return applier


def test_snapshot_gives_a_node_readers_titles_and_only_its_own_copies(cloud, node) -> None:
    applier = bootstrap(node)
    assert applier.rev() >= 1
    assert {r.card for r in es.Reader.select()} == {"R1", "R2"}
    assert es.Title.get_by_id("T1").title == "Абай жолы"
    assert [(c.barcode, c.slot, c.here) for c in es.Copy.select()] == [("C1", 1, True)]
    assert node.check_checkout("R1", "C1") is None


def test_a_block_arrives_as_a_change_and_is_applied_once(cloud, node) -> None:
    applier = bootstrap(node)
    rev = applier.rev()
    actions.block("R1", "3 books overdue")
    msg = wire("changes", feed.changes_for("m-a", rev))
    assert applier.apply_changes(msg)
    refusal = node.check_checkout("R1", "C1")
    assert refusal is not None and refusal.code == "blocked"
    assert "3 books overdue" in refusal.message
    # The same message again, or an older one, changes nothing.
    new_rev = applier.rev()
    assert not applier.apply_changes(msg)
    assert applier.rev() == new_rev
    actions.unblock("R1")
    unblock = wire("changes", feed.changes_for("m-a", new_rev))
    stale = wire("changes", feed.changes_for("m-a", rev))
    assert not applier.apply_changes(stale)       # from before our revision: ignored
    assert node.check_checkout("R1", "C1").code == "blocked"
    assert applier.apply_changes(unblock)
    assert node.check_checkout("R1", "C1") is None


def test_a_gap_is_never_applied(cloud, node) -> None:
    applier = bootstrap(node)
    rev = applier.rev()
    actions.block("R1", "lost card")
    mid = feed.current_rev()
    actions.block("R2", "debt")
    later = wire("changes", feed.changes_for("m-a", mid))   # skips the first block
    assert not applier.apply_changes(later)
    assert applier.rev() == rev
    assert node.check_checkout("R2", "C1") is None          # nothing half-applied
    assert applier.apply_changes(wire("changes", feed.changes_for("m-a", rev)))
    assert node.check_checkout("R1", "C1").code == "blocked"
    assert node.check_checkout("R2", "C1").code == "blocked"


def test_changes_are_scoped_to_the_node(cloud, node) -> None:
    applier = bootstrap(node)
    rev = applier.rev()
    hold = actions.place_hold("R2", "T1", "b-b")       # a hold to hand out at b-b
    for_m = feed.changes_for("m-a", rev)
    for_b = feed.changes_for("b-b", rev)
    assert {c["entity"] for c in for_m["changes"]} == {"title"}   # holds_waiting went up
    assert {c["entity"] for c in for_b["changes"]} == {"hold", "title"}
    assert for_m["to_rev"] == for_b["to_rev"] == feed.current_rev()
    assert applier.apply_changes(wire("changes", for_m))
    assert es.Title.get_by_id("T1").holds_waiting == 1
    assert es.Hold.select().count() == 0
    assert hold.copy == "C2" and hold.status == "ready"   # set aside from b-b's shelf


def test_a_hold_for_a_copy_in_the_machine_goes_to_that_reader_only(cloud, node) -> None:
    applier = bootstrap(node)
    rev = applier.rev()
    actions.place_hold("R2", "T1", "m-a")
    assert applier.apply_changes(wire("changes", feed.changes_for("m-a", rev)))
    assert node.check_checkout("R1", "C1").code == "held_for_other"
    assert node.check_checkout("R2", "C1") is None


def test_an_incomplete_snapshot_is_not_applied(cloud, node, monkeypatch) -> None:
    monkeypatch.setattr(feed, "SNAPSHOT_PART", 2)
    parts = feed.snapshot("m-a")
    assert len(parts) >= 2
    applier = FeedApplier(node)
    for part in parts[:-1]:
        assert not applier.add_snapshot_part(wire("snapshot", part))
    assert applier.rev() == 0 and es.Reader.select().count() == 0
    assert applier.add_snapshot_part(wire("snapshot", parts[-1]))
    assert es.Reader.select().count() == 2


def test_local_truth_wins_over_an_older_cloud_picture(cloud, node) -> None:
    applier = bootstrap(node)
    node.checkout("R1", "C1")                  # lent here; the cloud has not heard yet
    rev = applier.rev()
    # The cloud, not knowing, says C1 is in its slot (e.g. an audit elsewhere).
    c = cs.Copy.get_by_id("C1")
    with cs.db.atomic():
        feed.record("copy", "C1", "upsert", feed.copy_data(c), scope="m-a")
    assert applier.apply_changes(wire("changes", feed.changes_for("m-a", rev)))
    copy = es.Copy.get_by_id("C1")
    assert copy.on_loan and not copy.here        # still on loan here
    # A fresh snapshot does not resurrect it either.
    applier2 = bootstrap(node)
    assert es.Copy.get_by_id("C1").on_loan
    assert applier2.rev() == feed.current_rev()


def test_wrong_pins_lock_the_card(cloud, node) -> None:
    bootstrap(node)
    with cs.db.atomic():
        cs.Reader.update(pin_hash=es.hash_pin("4821")).where(cs.Reader.card == "R1").execute()
        feed.reader_changed("R1")
    applier = FeedApplier(node)
    assert applier.apply_changes(wire("changes", feed.changes_for("m-a", applier.rev())))
    assert node.verify_pin("R1", "4821")
    assert not node.verify_pin("R1", "0000")
    assert not node.verify_pin("R1", "1111")
    assert not node.verify_pin("R1", "2222")       # the third wrong PIN locks the card
    with pytest.raises(es.CirculationRefused) as exc:
        node.verify_pin("R1", "4821")
    assert exc.value.refusal.code == "pin_locked"
    # The lock is local state: a feed update of the reader does not lift it.
    assert es.Reader.get_by_id("R1").locked_until is not None


def test_a_node_learns_where_its_returns_go(cloud, tmp_path: Path) -> None:
    """Copies come with their return policy, titles with the first reader waiting, and a
    copy the cloud sends away says where and for whom: what a branch's sorter is told
    (edge/routing.py)."""
    cs.Copy.update(home_node="m-a", collection="reference").where(
        cs.Copy.barcode == "C2").execute()
    actions.set_collection("reference", floating=False)
    store = es.EdgeStore("b-b", str(tmp_path / "b-b.db"))
    try:
        applier = bootstrap(store, "b-b")
        c2 = es.Copy.get_by_id("C2")
        assert (c2.here, c2.home_node, c2.floating, c2.transit_to) == (True, "m-a", False,
                                                                          None)
        assert store.checkin("C2").route == routing.Route("home", "m-a")   # fixed: home
        store.mark_acked(store.last_seq())       # the cloud has it: the feed may move it
        rev = applier.rev()
        actions.withdraw("C1", "worn out")
        first = actions.place_hold("R1", "T1", "m-a")       # C2 is sent to m-a for R1
        waiting = actions.place_hold("R2", "T1", "b-b")     # no copy left: R2 waits
        assert (first.copy, waiting.copy) == ("C2", None)
        assert applier.apply_changes(wire("changes", feed.changes_for("b-b", rev)))
        t1 = es.Title.get_by_id("T1")
        assert (t1.next_hold, t1.next_pickup) == (waiting.id, "b-b")
        c2 = es.Copy.get_by_id("C2")
        assert (c2.here, c2.transit_to, c2.transit_hold) == (False, "m-a", first.id)
        # A sorter here sees it again: it goes to R1's hold at its home, not to R2 here.
        assert store.checkin("C2").route == routing.Route("hold_elsewhere", "m-a", first.id)
    finally:
        es.db.close()


def test_a_node_is_told_only_the_kinds_of_change_its_build_applies(cloud, node) -> None:
    """The cloud upgraded first: an older node (its request names no entities) never
    receives a kind it would refuse, so its feed keeps moving; its revision still does."""
    from cloud import service_actions
    from protocol.feed import BASE_ENTITIES, decode_sync, encode_sync

    feed.snapshot("m-a")                       # the log starts
    start = feed.current_rev()
    service_actions.save_partner("P1", "Partner")
    actions.block("R1", "lost card")
    older = decode_sync(b'{"v": 1, "node": "m-a", "rev": 0}')["entities"]
    assert older == BASE_ENTITIES
    kind, parts = feed.answer("m-a", 0, entities=older)
    assert kind == "snapshot"
    assert {ch["entity"] for p in parts for ch in p["changes"]} <= set(BASE_ENTITIES)
    kind, (msg,) = feed.answer("m-a", start, entities=older)
    assert kind == "changes" and msg["to_rev"] == feed.current_rev()
    assert "partner" not in {ch["entity"] for ch in msg["changes"]}
    assert "reader" in {ch["entity"] for ch in msg["changes"]}
    # A build of today names what it applies, and gets the partner too.
    today = decode_sync(encode_sync("m-a", start))["entities"]
    kind, (msg,) = feed.answer("m-a", start, entities=today)
    assert "partner" in {ch["entity"] for ch in msg["changes"]}
    # A newer node asking about kinds this cloud does not know is not refused.
    assert decode_sync(b'{"v":1,"node":"m-a","rev":3,"entities":["reader","robots"]}'
                       )["entities"] == ("reader",)


def test_an_upgraded_node_asks_for_a_snapshot_once(cloud, node) -> None:
    """Knowledge built by an older build lacks the newer kinds: the node starts over."""
    applier = bootstrap(node)
    assert applier.asking_rev() == applier.rev() > 0     # built by this build: follow on
    node._set_meta("feed_entities", "reader,title,copy,policy,hold,config")
    assert applier.asking_rev() == 0                      # an older build's knowledge
    bootstrap(node)
    assert applier.asking_rev() == applier.rev() > 0


def test_due_dates_count_in_the_library_s_days_and_the_cloud_names_its_zone(cloud, node) -> None:
    """A branch open all night lends at 01:00 in Almaty (20:00 UTC the day before):
    the loan runs from Almaty's day, as the cloud counts overdue days."""
    from datetime import UTC, date, datetime, timedelta

    from edge import circulation

    bootstrap(node)
    days = circulation.policy_for(node.policies(), "book", "adult").loan_days
    one_am_almaty = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)          # 3 Dec, 01:00 +05
    loan = node.checkout("R1", "C1", now=one_am_almaty)
    assert loan.due == date(2026, 12, 3) + timedelta(days=days)
    # The library moves (or corrects) its zone in the cloud: the node hears of it.
    actions.set_setting("cloud.timezone", "Europe/London")
    applier = FeedApplier(node)
    assert applier.apply_changes(wire("changes", feed.changes_for("m-a", applier.rev())))
    assert es.zone_name() == "Europe/London"
    node.checkin("C1", now=one_am_almaty)
    again = node.checkout("R1", "C1", now=one_am_almaty)
    assert again.due == date(2026, 12, 2) + timedelta(days=days)


def test_a_reader_who_borrows_and_returns_offline_is_not_held_at_the_limit(cloud, node) -> None:
    """Books lent and brought back here since the cloud last spoke are not still open."""
    from edge import circulation

    bootstrap(node)
    limit = circulation.policy_for(node.policies(), "book", "adult").max_items
    for _ in range(limit + 2):                   # more round trips than the limit allows open
        node.checkout("R1", "C1")
        node.checkin("C1")
    assert node.reader_view("R1").open_loans == 0
    assert node.check_checkout("R1", "C1") is None
