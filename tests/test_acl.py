"""No node speaks for another: per-node MQTT credentials and the broker's access list."""
from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kitap.procs import Mosquitto, wait_for
from kitap.provision import provision
from protocol import topics
from protocol.envelope import encode_batch
from tests.conftest import api, seed_cloud, seed_edge, small_fund

pytestmark = pytest.mark.integration


def forged_return(node: str, seq: int, copy: str) -> bytes:
    return encode_batch([{"v": 1, "node": node, "seq": seq, "hlc": "1795300000000-00000",
                          "ts": "2026-11-22T10:00:00+00:00", "type": "loan.return",
                          "body": {"copy": copy, "loan_id": None, "reader": None}}])


class Client:
    """A raw MQTT client logged in as somebody, to try what a stolen node could."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{user}",
                             protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.connected = threading.Event()
        self.reason: object = None
        self.got: list[str] = []
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.got.append(m.topic)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        self.reason = reason
        self.connected.set()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def secured(tmp_path: Path, network):
    """A broker with the access list on, a cloud and node b-test with their credentials."""
    auth = tmp_path / "auth"
    creds = provision(auth, ["b-test", "b-other"])
    broker = Mosquitto(tmp_path / "acl-broker", auth_dir=auth).start()
    network.broker = broker
    network.auth_dir = auth
    fund = small_fund(10)
    cloud = network.cloud(seed_cloud(tmp_path / "cloud.db", fund))
    edge = network.edge("b-test", "branch", seed_edge(tmp_path / "edge.db", "b-test", fund))
    yield broker, creds, cloud, edge
    broker.stop()


def test_the_real_node_gets_through_with_its_credentials(secured) -> None:
    broker, creds, cloud, edge = secured
    assert api("POST", edge + "/api/return", {"copy": "C00001"})[0] == 201
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 1, 20,
             what="the node's own event acknowledged")


def test_a_node_cannot_publish_as_another_and_a_forgery_never_reaches_the_cloud(secured) -> None:
    broker, creds, cloud, edge = secured
    # b-other's credentials (a stolen machine) try to publish on b-test's topic,
    # and on their own topic with an envelope claiming b-test.
    thief = Client(broker.port, "b-other", creds["b-other"])
    try:
        assert thief.connected.wait(10) and not thief.reason.is_failure
        thief.c.publish(topics.node_topic("b-test", "events"),
                        forged_return("b-test", 1, "C00002"), qos=1).wait_for_publish(5)
        thief.c.publish(topics.node_topic("b-other", "events"),
                        forged_return("b-test", 1, "C00003"), qos=1).wait_for_publish(5)
        # The cloud refuses the second (wrong node in the envelope) and counts it;
        # the first never reached it at all.
        wait_for(lambda: api("GET", cloud + "/api/summary")[1]["rejected_messages"] == 1, 15,
                 what="the forged envelope rejected")
    finally:
        thief.close()
    # Then the real node speaks: its seq 1 is ITS checkout. Had a forgery taken
    # b-test's seq 1, this checkout would be dropped as a duplicate.
    assert api("POST", edge + "/api/checkout", {"reader": "R0001", "copy": "C00004"})[0] == 201
    wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 1, 20,
             what="the real event applied")
    summary = api("GET", cloud + "/api/summary")[1]
    assert summary["events_applied"] == 1
    assert summary["exceptions_open"] == 0      # a forged return would have raised one
    copy = api("GET", cloud + "/api/copies/C00004")[1]
    assert copy["status"] == "on_loan" and copy["loans"][0]["reader"] == "R0001"


def test_wrong_password_and_anonymous_are_refused(secured) -> None:
    broker, creds, cloud, edge = secured
    wrong = Client(broker.port, "b-test", "not-the-password")
    anon = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
    anon_reason: list[object] = []
    anon.on_connect = lambda c, u, f, r, p: anon_reason.append(r)
    anon.connect("127.0.0.1", broker.port)
    anon.loop_start()
    try:
        assert wrong.connected.wait(10) and wrong.reason.is_failure
        wait_for(lambda: anon_reason, 10, what="the anonymous answer")
        assert anon_reason[0].is_failure
    finally:
        wrong.close()
        anon.loop_stop()


def test_a_node_cannot_read_another_nodes_feed_or_acks(secured) -> None:
    broker, creds, cloud, edge = secured
    spy = Client(broker.port, "b-other", creds["b-other"])
    try:
        assert spy.connected.wait(10)
        spy.c.subscribe([(topics.node_topic("b-test", "down"), 1),
                         (topics.node_topic("b-test", "ack"), 1),
                         (topics.node_topic("b-other", "down"), 1)])
        assert api("POST", edge + "/api/return", {"copy": "C00005"})[0] == 201
        wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == 1, 20,
                 what="b-test's ack")
        # b-test got its ack (and its feed); none of it reached the spy.
        assert not any("/b-test/" in t for t in spy.got)
    finally:
        spy.close()

