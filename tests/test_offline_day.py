"""Issue 4 end to end: a fresh node bootstraps from the feed, follows the cloud's decisions,
then serves a whole day of readers with no link and hands it all over once when it returns."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from cloud import actions
from cloud import store as cs
from kitap.procs import wait_for
from tests.conftest import api, seed_cloud, small_fund

pytestmark = pytest.mark.integration


def status(edge: str) -> dict:
    return api("GET", edge + "/api/status")[1]


def cloud_db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def cloud_action(path: Path, fn, *args) -> None:
    """Act as staff in the cloud: write to its database, as the console will."""
    cs.connect(f"sqlite:///{path}")
    try:
        fn(*args)
    finally:
        cs.db.close()


def test_fresh_node_bootstraps_and_follows_blocks(tmp_path: Path, broker, network) -> None:
    fund = small_fund(20)
    db = tmp_path / "cloud.db"
    broker.start()
    cloud = network.cloud(seed_cloud(db, fund))
    edge = network.edge("b-test", "branch", tmp_path / "fresh-edge.db")   # knows nothing
    st = wait_for(lambda: (s := status(edge))["feed_rev"] > 0 and s, 20, what="bootstrap")
    assert st["readers"] == 50 and st["copies_here"] == 20
    assert st["as_of"] is not None

    code, _ = api("POST", edge + "/api/checkout", {"reader": "R0007", "copy": "C00001"})
    assert code == 201
    # Staff block the reader in the cloud; the node refuses them within moments.
    cloud_action(db, actions.block, "R0007", "3 books overdue")

    def refused() -> dict | None:
        code, body = api("POST", edge + "/api/checkout", {"reader": "R0007", "copy": "C00002"})
        assert code in (201, 409), body
        if code == 201:   # not there yet: give the copy back and try again
            api("POST", edge + "/api/return", {"copy": "C00002"})
            return None
        return body
    body = wait_for(refused, 10, interval=0.2, what="the block to reach the node")
    assert body["errors"]["refusal"] == "blocked"
    assert "3 books overdue" in body["message"]

    # While the broker is down the cloud lifts the block; the node learns it on reconnect.
    broker.kill()
    cloud_action(db, actions.unblock, "R0007")
    broker.start()
    wait_for(lambda: api("GET", edge + "/api/readers/R0007")[1]["blocked_reason"] is None, 20,
             what="the unblock after the outage")
    code, _ = api("POST", edge + "/api/checkout", {"reader": "R0007", "copy": "C00002"})
    assert code == 201
    assert api("GET", cloud + "/api/summary")[1]["rejected_messages"] == 0


def test_a_whole_day_offline_then_everything_reaches_the_cloud_once(tmp_path: Path, broker,
                                                                   network) -> None:
    fund = small_fund(150)
    db = tmp_path / "cloud.db"
    url = seed_cloud(db, fund)
    # The network's offline cap: after 0 hours offline, at most 4 loans per reader.
    cloud_action(db, actions.set_setting, "offline_cap_after_hours", "0")
    cloud_action(db, actions.set_setting, "offline_cap_loans", "4")
    broker.start()
    cloud = network.cloud(url)
    edge = network.edge("b-test", "branch", tmp_path / "edge.db")
    wait_for(lambda: status(edge)["feed_rev"] > 0, 20, what="bootstrap")
    broker.kill()
    wait_for(lambda: not status(edge)["link"]["connected"], 10, what="the node to notice")

    rng = random.Random(4)
    shelf = [f"C{i:05d}" for i in range(150)]
    lent: dict[str, tuple[str, str]] = {}          # copy -> (reader, loan id)
    taken_offline: dict[str, int] = {}
    refusals: dict[str, int] = {}
    registered, paid = [], 0
    for i in range(300):                           # a day of readers at the desk
        r = rng.random()
        if r < 0.45 and shelf:
            copy, reader = rng.choice(shelf), f"R{rng.randrange(50):04d}"
            code, body = api("POST", edge + "/api/checkout", {"reader": reader, "copy": copy})
            if code == 201:
                shelf.remove(copy)
                lent[copy] = (reader, body["loan_id"])
                taken_offline[reader] = taken_offline.get(reader, 0) + 1
            else:
                assert code == 409, body
                refusals[body["errors"]["refusal"]] = refusals.get(body["errors"]["refusal"], 0) + 1
        elif r < 0.75 and lent:
            copy = rng.choice(sorted(lent))
            assert api("POST", edge + "/api/return", {"copy": copy})[0] == 201
            del lent[copy]
            shelf.append(copy)
        elif r < 0.85 and lent:
            copy = rng.choice(sorted(lent))
            code, body = api("POST", edge + "/api/renew", {"loan_id": lent[copy][1]})
            assert code in (201, 409), body
        elif r < 0.90:
            # A copy of another branch, never seen here, comes back at this desk.
            assert api("POST", edge + "/api/return", {"copy": f"X{i:05d}"})[0] == 201
        elif r < 0.95:
            card = f"N{i:05d}"
            code, _ = api("POST", edge + "/api/readers",
                          {"card": card, "name": f"Жаңа оқырман {i}", "category": "student",
                           "pin": "5831"})
            assert code == 201
            registered.append(card)
        else:
            code, _ = api("POST", edge + "/api/payments",
                          {"reader": "R0001", "amount": 50000, "kind": "service",
                           "description": "workshop"})
            assert code == 201
            paid += 1
    # The cap held: nobody took more than 4 books while the node was cut off.
    assert max(taken_offline.values()) <= 4
    assert refusals.get("offline_cap", 0) > 0
    assert set(refusals) <= {"offline_cap", "limit"}
    written = status(edge)["last_seq"]
    assert status(edge)["outbox_depth"] == written > 200

    broker.start()
    wait_for(lambda: status(edge)["last_acked"] == written, 60, what="everything acknowledged")
    summary = api("GET", cloud + "/api/summary")[1]
    assert summary["events_applied"] == written
    assert summary["rejected_messages"] == 0
    open_loans = {(ln["copy"], ln["reader"]) for ln in api("GET", cloud + "/api/loans/open")[1]}
    assert open_loans == {(c, r) for c, (r, _) in lent.items()}
    with cloud_db(db) as con:
        seqs = [s for (s,) in con.execute("select seq from event where node='b-test' order by seq")]
        assert seqs == list(range(1, written + 1))          # each once, in order
        cards = {c for (c,) in con.execute("select card from reader where card like 'N%'")}
        assert cards == set(registered)
        assert con.execute("select count(*) from payment").fetchone()[0] == paid
        # The foreign copies returned here are now at this branch, flagged for staff.
        assert con.execute("select count(*) from copy where barcode like 'X%' and "
                           "location_node='b-test'").fetchone()[0] > 0
