"""End to end over a real Mosquitto: an edge node's events reach the cloud exactly once.

Each test runs with the cloud on SQLite and on PostgreSQL (``cloud_url``).
"""
from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kitap.procs import wait_for
from protocol import topics
from tests.conftest import api, seed_cloud, seed_edge, small_fund

pytestmark = pytest.mark.integration


def _status(edge: str) -> dict:
    return api("GET", edge + "/api/status")[1]


def _summary(cloud: str) -> dict:
    return api("GET", cloud + "/api/summary")[1]


def test_checkout_with_broker_down_is_served_then_reaches_cloud_once(cloud_url: str,
                                                                      tmp_path: Path, broker,
                                                                      network) -> None:
    fund = small_fund(5)
    cloud = network.cloud(seed_cloud(cloud_url, fund))
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))

    # The broker is down: the reader is still served, the event waits in the outbox.
    code, loan = api("POST", edge + "/api/checkout", {"reader": "R0001", "copy": "C00003"})
    assert code == 201, loan
    assert loan["due"] and loan["seq"] == 1
    st = _status(edge)
    assert st["link"]["connected"] is False
    assert st["outbox_depth"] == 1 and st["last_acked"] == 0

    broker.start()
    wait_for(lambda: _status(edge)["last_acked"] == 1, 30, what="edge outbox acknowledged")
    code, copy = api("GET", cloud + "/api/copies/C00003")
    assert code == 200
    assert copy["status"] == "on_loan"
    assert [ln["id"] for ln in copy["loans"]] == [loan["loan_id"]]
    assert copy["loans"][0]["reader"] == "R0001"
    summary = _summary(cloud)
    assert summary["events_applied"] == 1
    assert summary["loans_open"] == 1
    assert _status(edge)["outbox_depth"] == 0


def test_broker_killed_mid_stream_of_200_events_cloud_has_all_once(cloud_url: str,
                                                                   tmp_path: Path, broker,
                                                                   network) -> None:
    fund = small_fund(100)
    broker.start()
    cloud = network.cloud(seed_cloud(cloud_url, fund))
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))
    wait_for(lambda: _status(edge)["link"]["connected"], 15, what="edge connected")

    cloud_proc = network.proc("cloud")

    def lend_and_return(i: int) -> None:
        code, body = api("POST", edge + "/api/checkout",
                               {"reader": f"R{i % 50:04d}", "copy": f"C{i:05d}"})
        assert code == 201, body
        code, body = api("POST", edge + "/api/return", {"copy": f"C{i:05d}"})
        assert code == 201, body

    for i in range(35):                      # events 1-70 flow normally
        lend_and_return(i)
    wait_for(lambda: _status(edge)["last_acked"] == 70, 30, what="first 70 acknowledged")
    # Freeze the cloud: the broker PUBACKs the edge and queues what it cannot deliver.
    cloud_proc.pause()
    for i in range(35, 60):                  # events 71-120 sit in the broker's queue
        lend_and_return(i)
    wait_for(lambda: _status(edge)["last_acked"] == 70 and _status(edge)["outbox_depth"] == 50,
             10, what="events 71-120 sent, none acknowledged")
    broker.kill()                            # ... and the broker forgets them
    for i in range(60, 75):                  # events 121-150 with no broker at all
        lend_and_return(i)
    broker.start()
    cloud_proc.resume()
    for i in range(75, 100):                 # events 151-200 after the restart
        lend_and_return(i)

    wait_for(lambda: _status(edge)["last_acked"] == 200, 60, what="all 200 acknowledged")
    summary = _summary(cloud)
    assert summary["events_applied"] == 200
    assert summary["loans_total"] == 100
    assert summary["loans_open"] == 0
    node = next(n for n in summary["nodes"] if n["id"] == "b-test")
    assert node["applied_seq"] == 200
    for i in (0, 35, 36, 99):
        copy = api("GET", cloud + f"/api/copies/C{i:05d}")[1]
        assert len(copy["loans"]) == 1, copy
        assert copy["loans"][0]["close_reason"] == "returned"
        assert copy["status"] == "on_shelf" and copy["location_node"] == "b-test"


def test_malformed_messages_are_rejected_and_the_consumer_goes_on(cloud_url: str,
                                                                  tmp_path: Path, broker,
                                                                  network) -> None:
    fund = small_fund(5)
    broker.start()
    cloud = network.cloud(seed_cloud(cloud_url, fund))
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="garbage")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        for payload in (b"not json", b"[]", b'[{"v": 9}]', b"\xff\xfe"):
            pub.publish(topics.node_topic("b-test", "events"), payload, qos=1).wait_for_publish(5)
        # An event for a node the cloud has never heard of.
        pub.publish(topics.node_topic("x-nobody", "events"),
                    b'[{"v":1,"node":"x-nobody","seq":1,"hlc":"0000000000001-00000",'
                    b'"ts":"2026-11-22T10:00:00+00:00","type":"loan.return",'
                    b'"body":{"copy":"C00001"}}]', qos=1).wait_for_publish(5)
        wait_for(lambda: _summary(cloud)["rejected_messages"] == 5, 15, what="5 rejections")
    finally:
        pub.loop_stop()
        pub.disconnect()
    # The consumer still works: a real edge's event goes through after the garbage.
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))
    code, _ = api("POST", edge + "/api/return", {"copy": "C00001"})
    assert code == 201
    wait_for(lambda: _status(edge)["last_acked"] == 1, 30, what="good event acknowledged")
    assert _summary(cloud)["events_applied"] == 1
