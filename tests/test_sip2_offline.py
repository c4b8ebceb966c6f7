"""Issue 9 end to end: a self-check serves a whole session while the branch has no link,
and every SIP2 transaction reaches the cloud, once, when the broker is back."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from kitap.cli import main
from kitap.procs import Process, free_port, kitap_command, wait_for, wait_http
from tests import sip2_client as sc
from tests.conftest import TOKEN, api, library_date, seed_cloud, small_fund

pytestmark = pytest.mark.integration

INST = "kitap"


def status(edge: str) -> dict:
    return api("GET", edge + "/api/status")[1]


def start_branch_with_sip2(network, tmp_path: Path, broker_port: int) -> tuple[str, int]:
    """``kitap edge --sip2`` as a process of ``network``; returns its URL and SIP2 port."""
    sip2_port, http_port = free_port(), free_port()
    argv = ["edge", "--node", "b-test", "--kind", "branch", "--db", str(tmp_path / "edge.db"),
            "--broker", f"127.0.0.1:{broker_port}", "--http", f"127.0.0.1:{http_port}",
            "--sip2", f"127.0.0.1:{sip2_port}"]
    proc = Process("b-test", kitap_command(*argv), tmp_path / "b-test.log",
                   env={"KITAP_API_TOKEN": TOKEN}).start()
    network.procs.append(proc)
    url = f"http://127.0.0.1:{http_port}"
    wait_http(url + "/healthz")
    return url, sip2_port


def test_a_kiosk_session_offline_reaches_the_cloud_once_the_link_is_back(tmp_path: Path,
                                                                         broker, network
                                                                         ) -> None:
    cloud_db = tmp_path / "cloud.db"
    url = seed_cloud(cloud_db, small_fund(30))
    # The kiosk's login, made the way staff make it.
    made = CliRunner().invoke(main, [
        "sip2-account", "--db", str(tmp_path / "edge.db"), "add", "hall-1", "--institution",
        INST, "--location", "hall", "--sort-bin", "transfer=T", "--password", "kiosk-pass-1"])
    assert made.exit_code == 0, made.output
    broker.start()
    cloud = network.cloud(url)
    edge, port = start_branch_with_sip2(network, tmp_path, broker.port)
    wait_for(lambda: status(edge)["feed_rev"] > 0, 20, what="the node's bootstrap")

    kiosk = sc.Client(port)
    assert kiosk.login("hall-1", "kiosk-pass-1", "hall").fixed["ok"] == "1"
    wait_for(lambda: kiosk.sc_status().fixed["online"] == "Y", 15, interval=0.2,
             what="on-line Y")
    broker.kill()
    wait_for(lambda: kiosk.sc_status().fixed["online"] == "N", 15, interval=0.2,
             what="the kiosk to see the branch offline")
    before = status(edge)

    # A reader's whole visit, with the branch cut off from the cloud.
    assert kiosk.patron_status(INST, "R0001")["BL"] == "Y"
    out1 = kiosk.checkout(INST, "R0001", "C00001")
    out2 = kiosk.checkout(INST, "R0001", "C00002")
    assert out1.fixed["ok"] == out2.fixed["ok"] == "1"
    assert kiosk.renew(INST, "R0001", "C00001").fixed["ok"] == "1"
    assert kiosk.checkin(INST, "C00002").fixed["ok"] == "1"
    foreign = kiosk.checkin(INST, "X-ELSEWHERE")
    assert (foreign.fixed["alert"], foreign["CV"], foreign["CL"]) == ("Y", "04", "T")
    assert kiosk.fee_paid(INST, "R0001", "5.00", txn="k1-0001").fixed["accepted"] == "Y"
    assert kiosk.item_info(INST, "C00001").fixed["circulation"] == "04"
    assert kiosk.patron_info(INST, "R0001", summary="  Y       ").all("AU") == ["C00001"]
    assert kiosk.end_session(INST, "R0001").fixed["end"] == "Y"
    # Another kiosk had been offline itself and now uploads what it lent meanwhile:
    # a minute ago, and three hours ago (to a card the node would refuse).
    now = datetime.now(UTC).replace(microsecond=0)
    lent = {("C00003", "R0002"): now - timedelta(minutes=1),
            ("C00004", "R0003"): now - timedelta(hours=3)}
    for (copy, card), when in lent.items():
        stored = kiosk.checkout(INST, card, copy, no_block=True, when=sc.sip_date(when))
        assert stored.fixed["ok"] == "1"
        assert stored["AH"] == f"{library_date(when) + timedelta(days=21):%Y%m%d}    235959"

    during = status(edge)
    assert during["last_acked"] == before["last_acked"]           # nothing reached the cloud
    written = during["last_seq"]
    assert during["outbox_depth"] == written - before["last_acked"] == 8

    broker.start()
    wait_for(lambda: status(edge)["last_acked"] == written, 60, what="everything acknowledged")
    wait_for(lambda: kiosk.sc_status().fixed["online"] == "Y", 15, interval=0.2,
             what="on-line Y again")
    summary = api("GET", cloud + "/api/summary")[1]
    assert summary["rejected_messages"] == 0
    with sqlite3.connect(f"file:{cloud_db}?mode=ro", uri=True) as con:
        types = [t for (t,) in con.execute(
            "select type from event where node='b-test' order by seq")]
        loans = {(c, r): (at, due) for c, r, at, due in con.execute(
            "select copy, reader, checked_out_at, due from loan where returned_at is null")}
        payments = con.execute("select amount from payment").fetchall()
    assert types == ["loan.checkout", "loan.checkout", "loan.renew", "loan.return",
                     "loan.return", "fee.paid", "loan.checkout", "loan.checkout"]
    assert set(loans) == {("C00001", "R0001"), *lent}
    assert payments == [(500,)]

    def in_cloud(key: tuple[str, str]) -> tuple[datetime, str]:
        at, due = loans[key]
        return datetime.fromisoformat(str(at)).astimezone(UTC), str(due)

    recent = lent[("C00003", "R0002")]
    assert in_cloud(("C00003", "R0002")) == (recent, (library_date(recent) + timedelta(days=21))
                                            .isoformat())
    old = lent[("C00004", "R0003")]
    assert in_cloud(("C00004", "R0003")) == (old, (library_date(old) + timedelta(days=21))
                                            .isoformat())
    with sqlite3.connect(f"file:{cloud_db}?mode=ro", uri=True) as con:
        flagged = con.execute("select clock_flagged_at from node where id='b-test'").fetchone()
        clock = con.execute("select detail from staffexception where kind in "
                            "('clock_skew', 'reported_time_clamped')").fetchall()
    assert flagged == (None,) and clock == []       # the node's clock was right all along
