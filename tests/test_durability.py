"""Durability and hostile messages: a committed event survives a crash before it is
published; replayed, oversized, truncated, wrong-version and wrong-node messages are
refused or ignored, counted, and change nothing. Both run with the cloud on SQLite and on
PostgreSQL (``cloud_url``)."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kitap.procs import wait_for
from protocol import topics
from protocol.envelope import MAX_PAYLOAD_BYTES
from tests.conftest import api, seed_cloud, seed_edge, small_fund

pytestmark = pytest.mark.integration


def test_an_edge_killed_between_commit_and_publish_loses_nothing(cloud_url: str, tmp_path: Path,
                                                                 broker, network) -> None:
    fund = small_fund(5)
    cloud = network.cloud(seed_cloud(cloud_url, fund))
    db = seed_edge(tmp_path / "edge.db", "b-test", fund)
    edge = network.edge("b-test", "branch", db)
    # The broker is down: the loan is committed and the reader told "done"...
    code, loan = api("POST", edge + "/api/checkout", {"reader": "R0002", "copy": "C00004"})
    assert code == 201
    network.proc("b-test").kill()                  # ...then the power goes.
    broker.start()
    edge = network.edge("b-test", "branch", db)    # the same SQLite file, after the crash
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 1, 30,
             what="the crashed node's event delivered")
    copy = api("GET", cloud + "/api/copies/C00004")[1]
    assert copy["status"] == "on_loan" and copy["loans"][0]["id"] == loan["loan_id"]


def test_hostile_messages_are_counted_and_change_nothing(cloud_url: str, tmp_path: Path, broker,
                                                         network) -> None:
    fund = small_fund(5)
    broker.start()
    cloud = network.cloud(seed_cloud(cloud_url, fund))
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))
    assert api("POST", edge + "/api/checkout", {"reader": "R0001", "copy": "C00001"})[0] == 201
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 1, 20, what="ack")
    before = api("GET", cloud + "/api/summary")[1]

    # Capture the node's real message, then replay it and send hostile variants.
    got: list[bytes] = []
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy")
    spy.on_message = lambda c, u, m: got.append(m.payload)
    spy.connect("127.0.0.1", broker.port)
    spy.subscribe(topics.node_topic("b-test", "events"), qos=1)
    spy.loop_start()
    try:
        wait_for(lambda: spy.is_connected(), 5, what="spy connected")
        assert api("POST", edge + "/api/return", {"copy": "C00001"})[0] == 201
        wait_for(lambda: got, 10, what="the real message")
        wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 2, 20, what="ack")
        real = got[0]
        hostile = {
            "replayed": real,
            "oversized": b"[" + b" " * MAX_PAYLOAD_BYTES + b"]",
            "truncated": real[: len(real) // 2],
            "wrong version": real.replace(b'"v":1', b'"v":7', 1),
            "wrong node": real.replace(b'"node":"b-test"', b'"node":"b-other"', 1),
        }
        for payload in hostile.values():
            spy.publish(topics.node_topic("b-test", "events"), payload, qos=1).wait_for_publish(5)
    finally:
        spy.loop_stop()
        spy.disconnect()
    # Four refused outright (counted, kept); the replay is a duplicate, acked, ignored.
    wait_for(lambda: api("GET", cloud + "/api/summary")[1]["rejected_messages"]
             == before["rejected_messages"] + 4, 20, what="4 rejections")
    after = api("GET", cloud + "/api/summary")[1]
    assert after["events_applied"] == before["events_applied"] + 1    # only the real return
    assert after["loans_open"] == 0 and after["exceptions_open"] == 0
    copy = api("GET", cloud + "/api/copies/C00001")[1]
    assert len(copy["loans"]) == 1 and copy["status"] == "on_shelf"
    with urllib.request.urlopen(cloud + "/metrics") as resp:
        metrics = resp.read().decode()
    assert 'kitap_cloud_messages_rejected_total{channel="events"} 4.0' in metrics
    assert "kitap_cloud_events_duplicate_total 1.0" in metrics
