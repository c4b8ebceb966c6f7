"""Backup while the cloud runs, restore after losing it: the nodes make the cloud whole."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kitap.cli import main
from kitap.procs import wait_for
from tests.conftest import api, seed_cloud, seed_edge, small_fund

pytestmark = pytest.mark.integration


def test_restore_of_an_older_backup_is_made_whole_by_the_nodes(tmp_path: Path, broker,
                                                               network) -> None:
    fund = small_fund(20)
    db = tmp_path / "cloud.db"
    url = seed_cloud(db, fund)
    broker.start()
    cloud = network.cloud(url)
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))
    for i in range(5):
        assert api("POST", edge + "/api/checkout", {"reader": "R0001", "copy": f"C{i:05d}"})[0] \
            == 201
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 5, 60, what="5 acked")

    runner = CliRunner()
    backup = tmp_path / "cloud-backup.db"
    done = runner.invoke(main, ["backup", "--db", url, str(backup)])      # while it runs
    assert done.exit_code == 0, done.output

    for i in range(5, 10):   # more loans, acknowledged, then the cloud's disk dies
        assert api("POST", edge + "/api/checkout", {"reader": "R0002", "copy": f"C{i:05d}"})[0] \
            == 201
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 10, 60,
             what="10 acked")
    network.proc("cloud").kill()
    refused = runner.invoke(main, ["restore", "--db", url, str(backup)])
    assert refused.exit_code != 0 and "--force" in refused.output
    done = runner.invoke(main, ["restore", "--db", url, "--force", str(backup)])
    assert done.exit_code == 0, done.output

    cloud = network.cloud(url)
    # The node's status shows 10 events, the restored cloud has 5: it asks, the
    # node sends 6..10 again from its journal.
    wait_for(lambda: api("GET", cloud + "/api/summary")[1]["events_applied"] == 10, 40,
             what="the restored cloud made whole")
    loans = {(ln["copy"], ln["reader"]) for ln in api("GET", cloud + "/api/loans/open")[1]}
    assert loans == {(f"C{i:05d}", "R0001" if i < 5 else "R0002") for i in range(10)}
    assert api("GET", edge + "/api/status")[1]["last_acked"] == 10
