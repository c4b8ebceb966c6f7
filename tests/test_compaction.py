"""Old changes compacted (SQLite and PostgreSQL): far-behind nodes catch up via a snapshot."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cloud import actions, feed
from cloud import store as cs
from edge import store as es
from edge.feed import FeedApplier
from protocol.feed import decode_down, encode_down
from tests.cloud_fixtures import NodeLog


@pytest.fixture
def cloud(cloud_store: str) -> None:
    cs.seed(nodes=[{"id": "m-a", "kind": "machine"}, {"id": "b-b", "kind": "branch"}],
            titles=[{"id": "T1", "title": "Абай жолы"}],
            readers=[{"card": f"R{i}", "name": f"Reader {i}"} for i in range(1, 4)],
            copies=[{"barcode": f"C{i}", "title_id": "T1", "status": "in_slot",
                     "location_node": "m-a", "slot": i} for i in range(1, 4)])


@pytest.fixture
def edge_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    es.db.close()


def wire(kind: str, fields: dict) -> dict:
    return decode_down(encode_down(kind, **fields))


def sync(applier: FeedApplier, node: str = "m-a") -> None:
    """Ask as a node does, apply what comes, until current."""
    while True:
        kind, parts = feed.answer(node, applier.rev())
        if kind == "snapshot":
            for part in parts:
                applier.add_snapshot_part(wire("snapshot", part))
            return
        msg = parts[0]
        assert applier.apply_changes(wire("changes", msg))
        if not msg["more"]:
            return


def node_state() -> tuple:
    readers = sorted(es.Reader.select(es.Reader.card, es.Reader.blocked_reason).tuples())
    here = sorted(c.barcode for c in es.Copy.select().where(es.Copy.here == True))  # noqa: E712
    return readers, here


def busy_day() -> None:
    """Blocks lifted and set again, copies lent away from m-a: many superseded changes."""
    for i in range(3):
        actions.block("R1", f"debt {i}")
        actions.unblock("R1")
    actions.block("R2", "lost card")
    m = NodeLog("m-a", cs.utcnow() - timedelta(hours=1))
    m.lend("C1", "R3", cs.utcnow().date() + timedelta(days=21))
    m.lend("C2", "R3", cs.utcnow().date() + timedelta(days=21))


def test_compaction_drops_what_is_superseded_and_nodes_end_the_same(cloud, edge_dir) -> None:
    behind = FeedApplier(es.EdgeStore("m-a", str(edge_dir / "behind.db")))
    sync(behind)
    start = behind.rev()
    busy_day()
    rows_before = cs.Change.select().count()
    dropped, floor = feed.compact(timedelta(0), now=cs.utcnow() + timedelta(seconds=1))
    assert dropped > 0 and cs.Change.select().count() == rows_before - dropped
    assert floor > start and feed.floor() == floor
    # What is left: the latest change of each reader and copy, and the newest revision.
    keys = [(c.entity, c.key, c.scope) for c in cs.Change.select()]
    assert len(keys) == len(set(keys))
    # A node from before the floor is answered with a snapshot, and ends as it should.
    assert feed.needs_snapshot(start)
    sync(behind)
    es.db.close()
    fresh = FeedApplier(es.EdgeStore("m-a", str(edge_dir / "fresh.db")))
    sync(fresh)
    expected = node_state()
    es.db.close()
    FeedApplier(es.EdgeStore("m-a", str(edge_dir / "behind.db")))
    assert node_state() == expected
    readers, here = expected
    assert ("R2", "lost card") in readers and ("R1", None) in readers
    assert here == ["C3"]


def test_a_node_past_the_floor_still_gets_only_changes(cloud, edge_dir) -> None:
    busy_day()
    _, floor = feed.compact(timedelta(0), now=cs.utcnow() + timedelta(seconds=1))
    node = FeedApplier(es.EdgeStore("m-a", str(edge_dir / "edge.db")))
    sync(node)                                     # a snapshot: it never synced
    at = node.rev()
    actions.block("R3", "3 books overdue")
    kind, _ = feed.answer("m-a", at)
    assert at >= floor and kind == "changes"
    sync(node)
    assert ("R3", "3 books overdue") in node_state()[0]


def test_recent_changes_are_kept(cloud) -> None:
    busy_day()
    before = cs.Change.select().count()
    assert feed.compact(timedelta(days=30)) == (0, 0)
    assert cs.Change.select().count() == before and feed.floor() == 0
