"""A block decided by the overdue run reaches a branch within seconds, and lifts as fast."""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from cloud import actions, debts, settings
from cloud import store as cs
from kitap.procs import wait_for
from tests.cloud_fixtures import NodeLog
from tests.conftest import api, seed_cloud, small_fund

pytestmark = pytest.mark.integration


def in_cloud(url: str, fn, *args, **kwargs):
    """Act in the cloud's database from outside its process, as `kitap admin` does."""
    cs.connect(url)
    try:
        return fn(*args, **kwargs)
    finally:
        cs.db.close()


def test_an_automatic_block_reaches_the_node_and_lifts_itself(cloud_url: str, tmp_path: Path,
                                                              broker, network) -> None:
    """On SQLite and on PostgreSQL (``cloud_url``)."""
    url = seed_cloud(cloud_url, small_fund(20))
    today = in_cloud(url, settings.today)

    def two_loans_falling_due() -> None:
        # R0007 borrowed two books at b-other weeks ago; they fall due in two days.
        other = NodeLog("b-other", cs.utcnow() - timedelta(days=20))
        for copy in ("C00011", "C00012"):
            other.lend(copy, "R0007", today + timedelta(days=2))
    in_cloud(url, two_loans_falling_due)
    in_cloud(url, actions.set_setting, "cloud.block_overdue_items", "2")
    # The cloud's own overdue run (by today's calendar) must not race the one this
    # test runs for a day three days ahead: it ran just now, as far as it knows.
    in_cloud(url, actions.set_setting, "cloud.job.overdue.last", cs.utcnow().isoformat())
    broker.start()
    network.cloud(url)
    edge = network.edge("b-test", "branch", tmp_path / "edge.db")
    wait_for(lambda: api("GET", edge + "/api/status")[1]["feed_rev"] > 0, 20, what="bootstrap")
    assert api("GET", edge + "/api/readers/R0007")[1]["blocked_reason"] is None

    # Three days later the overdue run blocks the reader; the branch hears of it.
    report = in_cloud(url, debts.overdue_run, today + timedelta(days=3))
    assert report.blocked == 1
    t0 = time.monotonic()
    wait_for(lambda: api("GET", edge + "/api/readers/R0007")[1]["blocked_reason"]
             == "2 books overdue", 10, interval=0.1, what="the block at the branch")
    assert time.monotonic() - t0 < 10
    code, body = api("POST", edge + "/api/checkout", {"reader": "R0007", "copy": "C00001"})
    assert code == 409 and body["errors"]["refusal"] == "blocked"

    # The reader brings one book back to this branch: the block lifts by itself.
    assert api("POST", edge + "/api/return", {"copy": "C00011"})[0] == 201
    wait_for(lambda: api("GET", edge + "/api/readers/R0007")[1]["blocked_reason"] is None, 20,
             interval=0.1, what="the block lifted at the branch")
    assert api("POST", edge + "/api/checkout", {"reader": "R0007", "copy": "C00001"})[0] == 201
