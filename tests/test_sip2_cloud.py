"""A self-check's blocks and holds are the network's, not the node's: through a real broker.

01 Block Patron and 25 Patron Enable become ``reader.blocked`` / ``reader.unblocked``,
15 Hold ``hold.requested`` / ``hold.cancelled``: the cloud applies them with its
own rules and every node learns the outcome from the feed.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from kitap.cli import main
from kitap.procs import wait_for
from tests import sip2_client as sc
from tests.conftest import api, seed_cloud, seed_edge, small_fund
from tests.test_sip2_offline import INST, start_branch_with_sip2, status

pytestmark = pytest.mark.integration


def cloud_row(db: Path, sql: str, *args: object) -> tuple | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchone()


def blocked_at(edge: str, card: str) -> str | None:
    return api("GET", f"{edge}/api/readers/{card}")[1]["blocked_reason"]


def test_kiosk_blocks_and_holds_reach_the_cloud_and_every_node(tmp_path: Path, broker,
                                                               network) -> None:
    cloud_db = tmp_path / "cloud.db"
    fund = small_fund(30)
    url = seed_cloud(cloud_db, fund)
    made = CliRunner().invoke(main, [
        "sip2-account", "--db", str(tmp_path / "edge.db"), "add", "hall-1", "--institution",
        INST, "--location", "hall", "--password", "kiosk-pass-1"])
    assert made.exit_code == 0, made.output
    broker.start()
    cloud = network.cloud(url)
    edge, port = start_branch_with_sip2(network, tmp_path, broker.port)
    other = network.edge("b-other", "branch", seed_edge(tmp_path / "other.db", "b-other",
                                                        {**fund, "copies": []}))
    for node in (edge, other):
        wait_for(lambda n=node: status(n)["feed_rev"] > 0, 20, what="the nodes' bootstrap")
    kiosk = sc.Client(port)
    assert kiosk.login("hall-1", "kiosk-pass-1", "hall").fixed["ok"] == "1"

    # 01: blocked here at once, then by the cloud (a kiosk's block), then at the other branch.
    blocked = kiosk.block_patron(INST, "R0005", "card left in the machine", retained=True)
    assert blocked.fixed["status"].startswith("YYYY")
    reason = "blocked at self-check hall-1: card left in the machine"
    assert blocked_at(edge, "R0005") == reason
    wait_for(lambda: cloud_row(cloud_db, "select blocked_by from reader where card='R0005'")
             == ("kiosk",), 20, what="the cloud to block the card")
    wait_for(lambda: blocked_at(other, "R0005") == reason, 20, what="the other branch")
    assert cloud_row(cloud_db, "select kind from staffexception where kind = "
                               "'blocked_at_self_check'") == ("blocked_at_self_check",)
    code, body = api("POST", f"{other}/api/checkout", {"reader": "R0005", "copy": "C00001"})
    assert code == 409 and body["errors"]["refusal"] == "blocked"
    # The automatic thresholds lift only their own blocks.
    run = CliRunner().invoke(main, ["admin", "--db", url, "overdue-run"])
    assert run.exit_code == 0, run.output
    assert cloud_row(cloud_db, "select blocked_reason from reader where card='R0005'") == \
        (reason,)

    # 25: lifted here, in the cloud, and at the other branch.
    enabled = kiosk.patron_enable(INST, "R0005")
    assert enabled.fixed["status"] == " " * 14
    wait_for(lambda: cloud_row(cloud_db, "select blocked_reason, blocked_by from reader "
                                         "where card='R0005'") == (None, None), 20,
             what="the cloud to lift the block")
    wait_for(lambda: blocked_at(other, "R0005") is None, 20, what="the other branch")

    # 15 +: placed in the cloud under the node's id, a copy set aside on this shelf.
    placed = kiosk.hold(INST, "R0006", "+", title="T003")
    assert (placed.fixed["ok"], placed["BS"]) == ("1", "hall")
    wait_for(lambda: cloud_row(cloud_db, "select status from hold where reader='R0006'")
             == ("ready",), 20, what="the cloud to set a copy aside")
    hold_id, copy, pickup = cloud_row(cloud_db, "select id, copy, pickup_node from hold "
                                                "where reader='R0006'")
    assert pickup == "b-test" and copy in {c["barcode"] for c in fund["copies"]
                                           if c["title_id"] == "T003"}
    wait_for(lambda: kiosk.hold(INST, "R0006", "+", title="T003").fixed["available"] == "Y",
             20, interval=0.3, what="the node to hear the hold is ready")
    ready = kiosk.hold(INST, "R0006", "+", title="T003")
    assert ready["AB"] == copy and ready.screen == "Your reservation is ready to collect here."
    assert any(h["hold_id"] == hold_id for h in api("GET", f"{edge}/api/holds")[1])
    assert cloud_row(cloud_db, "select action from auditentry where actor='reader:R0006'") \
        == ("hold.place",)

    # 15 -: cancelled in the cloud; the copy is free again at the node.
    assert kiosk.hold(INST, "R0006", "-", title="T003").fixed["ok"] == "1"
    wait_for(lambda: cloud_row(cloud_db, "select status from hold where id=?", hold_id)
             == ("cancelled",), 20, what="the cloud to cancel the hold")
    assert kiosk.checkout(INST, "R0007", copy).fixed["ok"] == "1"
    wait_for(lambda: status(edge)["outbox_depth"] == 0, 20, what="everything acknowledged")
    summary = api("GET", f"{cloud}/api/summary")[1]
    assert summary["rejected_messages"] == 0
    assert cloud_row(cloud_db, "select count(*) from event where quarantined") == (0,)

