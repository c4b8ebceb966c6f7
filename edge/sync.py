"""The edge's link to the cloud: drains the outbox over MQTT and takes the acks.

One small adapter around a paho client. It never drops an event: a row leaves
the outbox's "pending" set only when the CLOUD acknowledges its seq (never on
the broker's PUBACK), so a broker that forgets its queue, a cut link or a
restart of either side costs a resend, never an event. The cloud dedupes by
``(node, seq)``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.feed import FeedApplier
from edge.store import JOURNAL_RETENTION_DAYS, EdgeStore, utcnow
from protocol import topics
from protocol.envelope import decode_ack, encode_batch, encode_status
from protocol.errors import RejectedMessage
from protocol.feed import decode_down, encode_sync

logger = logging.getLogger(__name__)

# Events per message: many events in one publish is what makes catching up
# after a day offline take seconds (DESIGN: the wire, throughput).
BATCH_SIZE = 200
# Events sent but not yet acknowledged before we wait for the cloud; bounds the
# resend after a reconnect and keeps a slow cloud from being flooded.
WINDOW = 2000
# No ack for this long after sending: assume the cloud or broker lost it; resend.
RESEND_AFTER = 10.0
STATUS_INTERVAL = 5.0
# Pokes arrive for every change anywhere; one request in flight is enough.
POKE_DEBOUNCE = 0.5
# A sync request with no answer for this long is sent again (lost on a dying link).
FEED_RETRY = 5.0
KEEPALIVE = 15
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0


class SyncAgent:
    """Publishes a node's outbox in seq order and applies the cloud's acks."""

    def __init__(self, store: EdgeStore, *, host: str, port: int, kind: str,
                 username: str | None = None, password: str | None = None) -> None:
        self.store = store
        self.node = store.node_id
        self.kind = kind
        self.host, self.port = host, port
        self.connected = False
        self.rejected_messages = 0
        # Times the publisher went back to resend what was not acknowledged: the
        # cloud asked (a gap), or no ack came for RESEND_AFTER seconds.
        self.resends_asked = 0
        self.resends_no_ack = 0
        self.faults: list[str] = []
        # A machine node's hardware for the status (MachineService.summary); None: a branch.
        self.machine_status: Callable[[], dict[str, Any]] | None = None
        self._status_due = False     # something changed: publish the status now, not in 5 s
        self._sent_upto = 0          # highest seq published since the last rewind
        self._last_send = 0.0        # monotonic time of the last publish with no ack since
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status = 0.0
        self.feed = FeedApplier(store)
        self._down: queue.Queue[bytes] = queue.Queue()
        self._feed_asked = 0.0       # monotonic time of the last sync request
        self._latest_poke = 0        # the newest revision the cloud announced
        self._feed_thread: threading.Thread | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"kitap-edge-{self.node}", clean_session=True
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.will_set(
            topics.node_topic(self.node, "status"),
            encode_status(self.node, False, kind=kind), qos=1, retain=True,
        )
        self.client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (the broker may be down) and start publishing."""
        self.store.set_link(False)  # down until the first connect says otherwise
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.node}", daemon=True)
        self._thread.start()
        self._feed_thread = threading.Thread(target=self._feed_loop, name=f"feed-{self.node}",
                                             daemon=True)
        self._feed_thread.start()

    def stop(self) -> None:
        """Say offline, disconnect, and stop the threads."""
        self._stop.set()
        self.poke()
        if self._thread:
            self._thread.join(timeout=5)
        if self._feed_thread:
            self._feed_thread.join(timeout=5)
        if self.connected:
            info = self.client.publish(
                topics.node_topic(self.node, "status"),
                encode_status(self.node, False, kind=self.kind), qos=1, retain=True,
            )
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    def poke(self) -> None:
        """Wake the publisher: a new event is in the outbox."""
        with self._wake:
            self._wake.notify_all()

    def set_faults(self, names: list[str]) -> None:
        """The node's active faults changed: put them in the retained status at once."""
        self.faults = list(names)
        self._status_due = True
        self.poke()

    # -- paho callbacks (paho's network thread) --------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            logger.warning("broker refused connection: %s", reason)
            return
        logger.info("connected to broker %s:%d", self.host, self.port)
        client.subscribe(topics.node_topic(self.node, "ack"), qos=1)
        client.subscribe(topics.node_topic(self.node, "down"), qos=1)
        client.subscribe(topics.BROADCAST, qos=1)
        with self._wake:
            self.connected = True
            # Resend everything the cloud has not acknowledged: the broker is a
            # pipe, not a store, and may have lost what was in flight.
            self._sent_upto = self.store.last_acked()
            self._last_send = 0.0
            self._wake.notify_all()
        self.store.set_link(True)
        self._publish_status(force=True)
        self._ask_feed()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._wake:
            self.connected = False
        self.store.set_link(False)
        logger.warning("disconnected from broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            parsed = topics.parse(msg.topic)
            if parsed and parsed == (self.node, "ack"):
                self._handle_ack(msg.payload)
            elif parsed == (self.node, "down") or msg.topic == topics.BROADCAST:
                self._down.put(msg.payload)  # applied on the feed thread
        except RejectedMessage as exc:
            self.rejected_messages += 1
            logger.warning("rejected message on %s: %s (%r)", msg.topic, exc.reason,
                           msg.payload[:200])
        except Exception:
            self.rejected_messages += 1
            logger.exception("error handling message on %s (%r)", msg.topic, msg.payload[:200])

    def _handle_ack(self, payload: bytes) -> None:
        ack = decode_ack(payload)
        if ack["node"] != self.node:
            raise RejectedMessage(f"ack for node {ack['node']!r} on {self.node!r}'s topic")
        resend = ack.get("resend_from")
        if resend is not None and resend <= self.store.last_acked():
            # The cloud has lost events it once acknowledged (restored from a
            # backup): hand them over again from this node's journal.
            self.store.rewind_acked(resend - 1)
        acked = self.store.mark_acked(ack["acked"])
        with self._wake:
            self._last_send = time.monotonic() if self._sent_upto > acked else 0.0
            if ack.get("resend_from") is not None:
                # The cloud saw a gap: replay from the first seq it is missing.
                back_to = max(acked, ack["resend_from"] - 1)
                if back_to < self._sent_upto:
                    self.resends_asked += 1
                    logger.info("the cloud is missing seq %d: resending from there",
                                back_to + 1)
                self._sent_upto = min(self._sent_upto, back_to)
            self._sent_upto = max(self._sent_upto, acked)
            self._wake.notify_all()

    # -- publisher thread ------------------------------------------------------

    def _run(self) -> None:
        last_prune = 0.0
        while not self._stop.is_set():
            try:
                sent = self._publish_some()
                self._publish_status(force=self._status_due)
                if time.monotonic() - last_prune > 3600:
                    self.store.prune_journal(utcnow() - timedelta(days=JOURNAL_RETENTION_DAYS))
                    last_prune = time.monotonic()
            except Exception:
                logger.exception("sync loop error; retrying")
                sent = False
                self._stop.wait(1.0)
            if not sent:
                with self._wake:
                    self._wake.wait(timeout=1.0)

    def _publish_some(self) -> bool:
        """Publish the next batch if connected and within the window; True if it did."""
        with self._wake:
            if not self.connected:
                return False
            acked = self.store.last_acked()
            if self._sent_upto > acked and self._last_send and \
                    time.monotonic() - self._last_send > RESEND_AFTER:
                logger.warning("no ack for %.0fs; resending from seq %d", RESEND_AFTER, acked + 1)
                self._sent_upto = acked
                self._last_send = 0.0  # the resend waits RESEND_AFTER afresh
                self.resends_no_ack += 1
            start = max(self._sent_upto, acked)
            if start - acked >= WINDOW:
                return False
        rows = self.store.pending(start, min(BATCH_SIZE, WINDOW - (start - acked)))
        if not rows:
            return False
        info = self.client.publish(
            topics.node_topic(self.node, "events"),
            encode_batch([env for _, env in rows]), qos=1,
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._wake:
            if self._sent_upto == start:
                self._sent_upto = rows[-1][0]
            if not self._last_send:
                self._last_send = time.monotonic()
        return True

    # -- the change feed (its own thread: a snapshot may take seconds) -------------

    def _ask_feed(self) -> None:
        if not self.connected:
            return
        self._feed_asked = time.monotonic()
        self.client.publish(topics.node_topic(self.node, "sync"),
                            encode_sync(self.node, self.feed.asking_rev()), qos=1)

    def _feed_loop(self) -> None:
        while not self._stop.is_set():
            try:
                payload = self._down.get(timeout=1.0)
            except queue.Empty:
                payload = None
            try:
                if payload is not None:
                    self._handle_down(payload)
                behind = self.feed.asking_rev() == 0 or self._latest_poke > self.feed.rev()
                if behind and time.monotonic() - self._feed_asked > FEED_RETRY:
                    self._ask_feed()
            except RejectedMessage as exc:
                self.rejected_messages += 1
                logger.warning("rejected feed message: %s (%r)", exc.reason,
                               (payload or b"")[:200])
            except Exception:
                self.rejected_messages += 1
                logger.exception("error applying feed message (%r)", (payload or b"")[:200])

    def _handle_down(self, payload: bytes) -> None:
        msg = decode_down(payload)
        rev = self.feed.rev()
        if msg["kind"] == "poke":
            self._latest_poke = max(self._latest_poke, msg["rev"])
            if msg["rev"] > rev and time.monotonic() - self._feed_asked > POKE_DEBOUNCE:
                self._ask_feed()
        elif msg["kind"] == "changes":
            if self.feed.apply_changes(msg):
                self._latest_poke = max(self._latest_poke, msg["to_rev"])
                if msg["more"] or self._latest_poke > self.feed.rev():
                    self._ask_feed()
                else:
                    self._feed_asked = 0.0
            elif rev and msg["from_rev"] > rev:
                # Not the answer to our revision: ask again from where we are.
                self._ask_feed()
        elif msg["kind"] == "snapshot" and self.feed.add_snapshot_part(msg):
            self._ask_feed()  # whatever changed while the snapshot travelled

    def _publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.connected or (not force and now - self._last_status < STATUS_INTERVAL):
            return
        self._last_status = now
        self._status_due = False
        s = self.store.summary()
        extra: dict[str, Any] = {}
        if self.machine_status is not None:
            try:
                extra["machine"] = self.machine_status()
            except Exception:  # the status still goes out, without the hardware
                logger.exception("machine status for the node's status failed")
        self.client.publish(
            topics.node_topic(self.node, "status"),
            encode_status(
                self.node, True, kind=self.kind, ts=utcnow().isoformat(),
                outbox_depth=s["outbox_depth"], last_seq=s["last_seq"],
                last_acked=s["last_acked"], faults=list(self.faults),
                feed_rev=s["feed_rev"], **extra,
            ),
            qos=1, retain=True,
        )

    def state(self) -> dict[str, Any]:
        """Link facts for the status page and metrics."""
        return {"connected": self.connected, "broker": f"{self.host}:{self.port}",
                "sent_upto": self._sent_upto, "rejected_messages": self.rejected_messages,
                "resends_asked": self.resends_asked, "resends_no_ack": self.resends_no_ack,
                "feed_rev": self.feed.rev(), "feed_latest": self._latest_poke,
                "feed_snapshots": self.feed.snapshots}


