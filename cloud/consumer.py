"""The cloud's MQTT consumer: events in, acks out, node status kept.

paho's network thread only queues messages; one worker thread drains the
queue in batches, groups the events by node, applies each node's group in one
transaction (cloud.ingest) and then acknowledges. A bad message is counted,
logged with its payload cut short, and kept in ``RejectedMessage``: it never
stops the loop. Several consumers may run at once (MQTT 5 shared subscription).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from peewee import PeeweeException
from prometheus_client import Counter, Gauge

from cloud import clocks, feed, jobs
from cloud import store as s
from cloud.ingest import MAX_AHEAD, UnknownNode, ingest
from protocol import topics
from protocol.envelope import Event, decode_batch, decode_status, encode_ack
from protocol.errors import RejectedMessage
from protocol.feed import decode_sync, encode_down

logger = logging.getLogger(__name__)

# Messages taken from the queue into one round of transactions: large enough
# that a node catching up writes hundreds of events per commit, small enough
# that acks flow back within a fraction of a second.
DRAIN_MAX = 200
KEEPALIVE = 15
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0
# How often the change log is checked for news to poke the nodes about: a block
# decided anywhere reaches every online node well inside a second.
POKE_INTERVAL = 0.2
# Nodes asking from before this revision get a snapshot; compaction raises the
# floor in the store (feed.floor()), this is only a lower bound for one process.
FEED_FLOOR = 0
# What of a rejected payload is kept for inspection.
KEEP_PAYLOAD_CHARS = 4000

EVENTS_APPLIED = Counter("kitap_cloud_events_applied_total", "Events applied", ["node"])
EVENTS_DUPLICATE = Counter("kitap_cloud_events_duplicate_total", "Duplicate events ignored")
EVENT_MESSAGES = Counter("kitap_cloud_event_messages_total", "Event batches taken from the broker")
MESSAGES_REJECTED = Counter("kitap_cloud_messages_rejected_total", "Messages refused",
                            ["channel"])
QUEUE_DEPTH = Gauge("kitap_cloud_ingest_queue_depth", "Messages waiting for the worker")


class Consumer:
    """Subscribes to every node's events and status; applies, acks, records."""

    def __init__(self, *, host: str, port: int, shared: bool = False,
                 username: str | None = None, password: str | None = None,
                 run_jobs: bool = True) -> None:
        self.host, self.port, self.shared = host, port, shared
        # Overdue run, hold expiry, notices, compaction (cloud/jobs.py): once per
        # interval across all cloud processes, whichever claims it.
        self.scheduler = jobs.Scheduler() if run_jobs else None
        self.connected = False
        self.feed_floor = FEED_FLOOR
        self.rejected = 0
        self.applied = 0
        self.failed = 0  # node batches that could not be applied (the node resends)
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._poker: threading.Thread | None = None
        self._poked_rev = -1
        client_id = f"kitap-cloud-{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background and start the worker and the feed poker."""
        self._worker = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._worker.start()
        self._poker = threading.Thread(target=self._poke_loop, name="feed-poke", daemon=True)
        self._poker.start()
        if self.scheduler:
            self.scheduler.start()
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE)
        self.client.loop_start()

    def stop(self) -> None:
        """Stop taking messages, finish the current round, disconnect."""
        self._stop.set()
        if self._worker:
            self._worker.join(timeout=10)
        if self._poker:
            self._poker.join(timeout=5)
        if self.scheduler:
            self.scheduler.stop()
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            logger.warning("broker refused connection: %s", reason)
            return
        events = topics.shared(topics.EVENTS_ALL) if self.shared else topics.EVENTS_ALL
        syncs = topics.shared(topics.SYNC_ALL) if self.shared else topics.SYNC_ALL
        client.subscribe([(events, 1), (topics.STATUS_ALL, 1), (syncs, 1)])
        self._poked_rev = -1  # poke again after a reconnect: nodes may have missed one
        self.connected = True
        logger.info("cloud consumer connected to %s:%d (%s)", self.host, self.port, events)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected = False
        logger.warning("cloud consumer disconnected: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(msg)
        QUEUE_DEPTH.set(self._queue.qsize())

    # -- worker ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < DRAIN_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            QUEUE_DEPTH.set(self._queue.qsize())
            try:
                self.process(batch)
            except Exception:
                # The database is down or the code is wrong: nothing was acked, so
                # the nodes will resend; keep the loop alive.
                logger.exception("ingest round failed; the nodes will resend")
                self._stop.wait(1.0)

    def process(self, messages: list[mqtt.MQTTMessage]) -> None:
        """Handle one round of messages: statuses, then each node's events, then acks."""
        by_node: dict[str, list[Event]] = defaultdict(list)
        for msg in messages:
            parsed = topics.parse(msg.topic)
            if parsed is None:
                self._reject("topic", msg.topic, None, "not a node topic", msg.payload)
                continue
            node, channel = parsed
            try:
                if channel == "status":
                    # A retained status replayed on subscribe is old news: no clock reading.
                    self._status(node, msg.payload, live=not msg.retain)
                elif channel == "sync":
                    self._sync(node, msg.payload)
                elif channel == "events":
                    EVENT_MESSAGES.inc()
                    by_node[node].extend(decode_batch(msg.payload, node))
            except RejectedMessage as exc:
                self._reject(channel, msg.topic, node, exc.reason, msg.payload)
        for node, events in by_node.items():
            try:
                result = ingest(node, events)
            except UnknownNode:
                self._reject("unknown_node", topics.node_topic(node, "events"), node,
                             "unknown node", _raw(events))
                continue
            except Exception:
                # The store is down, or a fault ingest could not pin on one event:
                # nothing of this node's was applied or acked, so it resends. One
                # node's trouble never holds up the others in the round.
                logger.exception("applying %d events of %s failed; the node will resend",
                                 len(events), node)
                self.failed += 1
                continue
            if result.too_far:
                seqs = [e.seq for e in result.too_far]
                self._reject("events", topics.node_topic(node, "events"), node,
                             f"seq {min(seqs)}..{max(seqs)} is more than {MAX_AHEAD} past "
                             f"seq {result.applied_seq}, the last applied", _raw(result.too_far))
            self.applied += result.applied
            if result.applied:
                EVENTS_APPLIED.labels(node).inc(result.applied)
            if result.duplicates:
                EVENTS_DUPLICATE.inc(result.duplicates)
            if result.resend_from:
                logger.info("%s: gap after seq %d, %d held; asking for a resend",
                            node, result.applied_seq, result.held)
            self.client.publish(
                topics.node_topic(node, "ack"),
                encode_ack(node, result.applied_seq, result.resend_from), qos=1,
            )

    def _sync(self, node: str, payload: bytes) -> None:
        """Answer a node's "what changed since R?" with changes or a snapshot."""
        req = decode_sync(payload)
        if req["node"] != node:
            raise RejectedMessage(f"sync request for {req['node']!r} on {node!r}'s topic")
        if s.Node.get_or_none(s.Node.id == node) is None:
            raise RejectedMessage("sync request from an unknown node")
        down = topics.node_topic(node, "down")
        kind, parts = feed.answer(node, req["rev"], self.feed_floor, req["entities"])
        if kind == "snapshot":
            logger.info("%s asked from rev %d: snapshot at rev %d in %d parts", node,
                        req["rev"], parts[0]["rev"], len(parts))
        for part in parts:
            self.client.publish(down, encode_down(kind, **part), qos=1)

    def _poke_loop(self) -> None:
        """Tell every node when the change log grows, whoever wrote to it."""
        while not self._stop.wait(POKE_INTERVAL):
            try:
                rev = feed.current_rev()
                if self.connected and rev != self._poked_rev:
                    info = self.client.publish(topics.BROADCAST, encode_down("poke", rev=rev),
                                               qos=1)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        self._poked_rev = rev
            except Exception:
                logger.exception("feed poke failed; trying again")

    def _status(self, node: str, payload: bytes, live: bool = True) -> None:
        if not payload:
            return  # a cleared retained message
        st = decode_status(payload)
        if st["node"] != node:
            raise RejectedMessage(f"status for {st['node']!r} on {node!r}'s topic")
        now = s.utcnow()
        updated = s.Node.update(
            online=st["online"], last_seen=now,
            status=json.dumps(json.loads(payload), ensure_ascii=False),
        ).where(s.Node.id == node).execute()
        if not updated:
            raise RejectedMessage("status from an unknown node")
        if live and st["online"]:
            clocks.observe_status(node, st.get("ts"), now)
        # A node that believes everything was acknowledged while the cloud has
        # less (restored from a backup, or a lost ack) is asked to send again.
        cursor = s.NodeCursor.get_or_none(s.NodeCursor.node == node)
        applied = cursor.applied_seq if cursor else 0
        if st["online"] and st.get("outbox_depth") == 0 and (st.get("last_seq") or 0) > applied:
            logger.warning("%s wrote up to seq %s but the cloud has %d: asking for the rest",
                           node, st["last_seq"], applied)
            self.client.publish(topics.node_topic(node, "ack"),
                                encode_ack(node, applied, applied + 1), qos=1)

    def _reject(self, channel: str, topic: str, node: str | None, reason: str,
                payload: bytes) -> None:
        self.rejected += 1
        MESSAGES_REJECTED.labels(channel).inc()
        text = payload[:KEEP_PAYLOAD_CHARS].decode("utf-8", "replace")
        logger.warning("rejected message on %s: %s (%r)", topic, reason, text[:200])
        try:
            s.RejectedMessage.create(topic=topic, node=node, reason=reason, payload=text,
                                     received_at=s.utcnow())
        except PeeweeException:
            logger.exception("could not keep rejected message")


def _raw(events: Iterable[Event]) -> bytes:
    """Events as kept with a rejection: their envelopes, cut short."""
    return json.dumps([e.raw for e in events], default=str)[:KEEP_PAYLOAD_CHARS].encode()
