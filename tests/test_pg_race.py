"""Two ingest processes on PostgreSQL, sharing the nodes (MQTT 5 shared subscription), race
on the same nodes' events — delivered in any order, twice, with gaps, one process frozen for
a while — and end in the same state as applying each log once; and a real node's backlog,
spread over two such processes, drains without being asked for again."""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud import debts
from cloud import settings as cloud_settings
from cloud import store as s
from cloud.ingest import ingest
from edge import store as es
from edge.store import EdgeStore
from kitap.procs import Process, free_port, http_json, kitap_command, wait_for, wait_http
from protocol import topics
from protocol.envelope import Event, decode_ack, encode_batch
from tests.cloud_fixtures import pg_database, require_pg
from tests.conftest import api, seed_cloud, seed_edge, small_fund
from tests.test_reconcile_property import NODES, _seed, assert_invariants, node_log, state

pytestmark = pytest.mark.integration

EVENTS = 40  # per node: enough that both processes get plenty of every node's batches
# Events a node has waiting when its link comes back: six batches (edge/sync.py
# BATCH_SIZE), all sent at once within its window.
BACKLOG = 1200


class Nodes:
    """Three nodes' outboxes as one MQTT client: publish, then resend until acknowledged."""

    def __init__(self, port: int, logs: dict[str, list[Event]]) -> None:
        self.logs = logs
        self.acked = dict.fromkeys(logs, 0)
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="race-nodes",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_ack
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([(topics.node_topic(n, "ack"), 1) for n in logs])
        self.c.loop_start()

    def _on_ack(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        ack = decode_ack(msg.payload)
        with self.lock:
            self.acked[ack["node"]] = max(self.acked[ack["node"]], ack["acked"])

    def publish(self, node: str, seqs: list[int]) -> None:
        batch = encode_batch([self.logs[node][q - 1].raw for q in seqs])
        self.c.publish(topics.node_topic(node, "events"), batch, qos=1).wait_for_publish(5)

    def resend_unacked(self) -> bool:
        """As an edge does when no ack comes: everything past the ack again; True when done."""
        with self.lock:
            pending = {n: a for n, a in self.acked.items() if a < len(self.logs[n])}
        for node, acked in pending.items():
            self.publish(node, list(range(acked + 1, len(self.logs[node]) + 1)))
        return not pending

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def applied_by(url: str) -> float:
    """Events this cloud process applied, from its /metrics."""
    code, _ = http_json("GET", url + "/healthz")
    assert code == 200
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:  # noqa: S310 - ours
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kitap_cloud_events_applied_total{"))


def test_two_ingest_processes_racing_on_postgres_end_as_one(tmp_path: Path, broker) -> None:
    require_pg()
    rng = random.Random(5)
    start = s.utcnow().replace(microsecond=0) - timedelta(days=45)
    logs = {n: node_log(n, 7, start, EVENTS) for n in NODES}
    with pg_database() as raced, pg_database() as reference:
        s.connect(raced)
        _seed()
        s.db.close()
        broker.start()
        procs, urls = [], []
        try:
            for i in (1, 2):
                port = free_port()
                procs.append(Process(f"cloud-{i}", kitap_command(
                    "cloud", "--db", raced, "--broker", f"127.0.0.1:{broker.port}",
                    "--http", f"127.0.0.1:{port}", "--shared"),
                    tmp_path / f"cloud-{i}.log").start())
                urls.append(f"http://127.0.0.1:{port}")
            for url in urls:
                wait_http(url + "/healthz", timeout=30)
            time.sleep(1.0)  # both consumers subscribed to the shared group
            nodes = Nodes(broker.port, logs)
            try:
                # Every event at least once, in shuffled little batches, a third twice.
                batches = [(n, [q]) for n in NODES for q in range(1, EVENTS + 1)]
                batches += rng.sample(batches, len(batches) // 3)
                rng.shuffle(batches)
                for i, (node, seqs) in enumerate(batches):
                    if i == len(batches) // 3:
                        procs[0].pause()           # one process freezes with work queued
                    if i == 2 * len(batches) // 3:
                        procs[0].resume()
                    nodes.publish(node, seqs + ([seqs[0] + 1] if seqs[0] < EVENTS and
                                                rng.random() < 0.3 else []))
                wait_for(nodes.resend_unacked, 90, interval=1.0, what="every event acknowledged")
            finally:
                nodes.close()
            # Both processes did part of the work: this was a race, not a relay.
            assert all(applied_by(url) > 0 for url in urls), [applied_by(u) for u in urls]
        finally:
            for p in procs:
                p.resume()
                p.stop()
            logs_text = "\n".join(p.log.read_text()[-3000:] for p in procs)

        today = cloud_settings.today()
        s.connect(raced)
        debts.overdue_run(today)
        got = state()
        assert_invariants()
        s.db.close()

        s.connect(reference)
        _seed()
        for node in NODES:                      # one process, each log once, node by node
            ingest(node, logs[node])
        debts.overdue_run(today)
        expected = state()
        s.db.close()
        assert got == expected, logs_text
        assert len(got["events"]) == EVENTS * len(NODES)
        assert json.dumps(got, default=str).count("on_loan") > 0    # a state worth comparing


def test_a_backlog_spread_over_two_shared_workers_drains_without_rewinds(tmp_path: Path, broker,
                                                                         network) -> None:
    """A node's batches, handed out one by one to two workers, are not asked for again.

    A shared subscription spreads messages, not nodes: a worker may take a node's
    batch while the other still applies the one before. That gap fills by itself;
    the cloud asks for a resend only once a gap has waited past ingest.RESEND_GRACE.
    """
    require_pg()
    fund = small_fund(BACKLOG // 2)
    fund["readers"] = [{"card": f"R{i:04d}", "name": f"Reader {i}", "category": "adult"}
                       for i in range(BACKLOG // 10)]   # a few loans each
    with pg_database() as url:
        seed_cloud(url, fund)
        db = seed_edge(tmp_path / "edge.db", "b-test", fund)
        store = EdgeStore("b-test", str(db))
        start = s.utcnow() - timedelta(days=1)              # a day offline
        with store.writing():                               # one commit: quicker to make
            for i in range(BACKLOG // 2):
                at = start + timedelta(seconds=10 * i)
                store.checkout(f"R{i % (BACKLOG // 10):04d}", f"C{i:05d}", now=at)
                store.checkin(f"C{i:05d}", now=at + timedelta(seconds=5))
        es.db.close()
        broker.start()
        clouds = [network.cloud(url, shared=True) for _ in range(2)]
        for p in network.procs:
            wait_for(lambda p=p: "cloud consumer connected" in p.log.read_text(), 20,
                     what=f"{p.log.name} subscribed")
        edge = network.edge("b-test", "branch", db)
        wait_for(lambda: api("GET", edge + "/api/status")[1]["last_acked"] == BACKLOG, 120,
                 interval=0.5, what="the backlog acknowledged")
        link = api("GET", edge + "/api/status")[1]["link"]
        seen = [cloud_got(c) for c in clouds]
        assert all(seen), seen                              # both workers had batches
        assert link["resends_asked"] == 0, (link, network.logs())
        summary = api("GET", clouds[0] + "/api/summary")[1]
        assert summary["events_applied"] == BACKLOG and summary["loans_open"] == 0
        network.stop()                                     # before its database goes


def cloud_got(url: str) -> float:
    """Event messages this cloud process took from the broker, from its /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:  # noqa: S310 - ours
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kitap_cloud_event_messages_total"))
