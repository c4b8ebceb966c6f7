"""The cloud's apply rate, one ingest process, and the two ceilings measured beside it.

* apply: what the ingest worker does with each message of a node's backlog,
  without MQTT: ``decode_batch`` then ``ingest`` (one transaction per message).
* store ceiling: the same rows written by the driver's ``executemany``, with no
  logic and no reads: the event, the copy fact, the copy, the loan, the feed's
  changes and the cursor, one transaction per message.
* broker ceiling: the same payloads moved from a publisher process through our
  Mosquitto to a subscriber that only counts them.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.generate import default_columns
from bench.traffic import Batch
from cloud import store as cs
from cloud.ingest import ingest
from protocol import topics
from protocol.envelope import decode_batch

logger = logging.getLogger(__name__)

# The store ceiling writes its rows under keys no real event uses, and removes
# them afterwards: event seqs above this, loan ids and fact keys ending in "~".
CEILING_SEQ = 1_000_000_000
CEILING_SCOPE = "bench-ceiling"   # its change rows are addressed to no node


@dataclass
class ApplyResult:
    """One apply run."""

    events: int
    seconds: float
    decode_seconds: float

    @property
    def rate(self) -> float:
        """Events applied per second."""
        return self.events / self.seconds


def apply(batches: list[Batch]) -> ApplyResult:
    """Decode and ingest every message, in arrival order; the store must be bound."""
    decode = 0.0
    events = 0
    t0 = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        evs = decode_batch(b.payload, b.node)
        decode += time.perf_counter() - t
        result = ingest(b.node, evs)
        if result.applied != len(evs):
            raise RuntimeError(f"{b.node}: {result.applied} of {len(evs)} applied "
                               f"(cursor {result.applied_seq}, {result.held} held)")
        events += len(evs)
    return ApplyResult(events, time.perf_counter() - t0, decode)


def _ceiling_rows(batch: Batch, kinds: dict[str, str], closed: dict[tuple[str, int], str],
                  now: str) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {k: [] for k in
                                    ("event", "fact", "copy", "loan_in", "loan_up", "change")}
    for env in batch.envelopes:
        node, seq, body, kind = env["node"], env["seq"], env["body"], env["type"]
        body_text = str(body)
        rows["event"].append((node, seq + CEILING_SEQ, kind, env["hlc"], env["ts"], body_text,
                              now, False, None))
        copy = body.get("copy")
        if copy is None or kind not in ("loan.checkout", "loan.return"):
            rows["change"].append(("reader", body.get("reader") or "", CEILING_SCOPE, "upsert",
                                   body_text, now))
            continue
        key = f"{env['hlc']}|{node}|{seq:012d}~"
        rows["fact"].append((copy, key, node, kinds[node], seq, kind, env["ts"], body_text))
        if kind == "loan.checkout":
            rows["copy"].append(("on_loan", None, None, body["loan_id"], key[:-1], copy))
            rows["loan_in"].append((body["loan_id"] + "~", copy, body["reader"], node,
                                    env["ts"], body["due"]))
        else:
            status = "in_bin" if kinds[node] == "machine" else "on_shelf"
            rows["copy"].append((status, node, None, None, key[:-1], copy))
            rows["loan_up"].append((env["ts"], node, "returned", closed.get((node, seq), "")))
        rows["change"].append(("copy", copy, CEILING_SCOPE, "upsert", body_text, now))
        rows["change"].append(("reader", body.get("reader") or "", CEILING_SCOPE, "upsert",
                               body_text, now))
    return rows


def store_ceiling(batches: list[Batch], kinds: dict[str, str],
                  closed: dict[tuple[str, int], str]) -> ApplyResult:
    """Write the rows the apply run wrote, with no logic; then remove the extra ones."""
    database = cs.db.obj
    p = database.param
    def insert(model: Any, cols: list[str]) -> tuple[str, tuple[Any, ...]]:
        names, values = default_columns(model, cols)
        names = cols + names
        return (f'INSERT INTO "{model._meta.table_name}" ({", ".join(names)}) '
                f"VALUES ({', '.join([p] * len(names))})", values)

    sql = {
        "event": insert(cs.Event, ["node", "seq", "type", "hlc", "ts", "body", "applied_at",
                                   "quarantined", "error"]),
        "fact": insert(cs.CopyFact, ["copy", "key", "node", "node_kind", "seq", "type", "at",
                                     "body"]),
        "copy": (f'UPDATE "copy" SET status={p}, location_node={p}, slot={p}, loan_id={p}, '
                 f"last_key={p} WHERE barcode={p}", ()),
        "loan_in": insert(cs.Loan, ["id", "copy", "reader", "node", "checked_out_at", "due"]),
        "loan_up": (f'UPDATE "loan" SET returned_at={p}, returned_node={p}, close_reason={p} '
                    f"WHERE id={p}", ()),
        "change": insert(cs.Change, ["entity", "key", "scope", "op", "data", "at"]),
    }
    cursor_sql = f'UPDATE "nodecursor" SET applied_seq=applied_seq WHERE node={p}'
    if cs.is_postgres():
        from psycopg2.extras import execute_batch

        def many(cur: Any, stmt: str, rows: list[tuple]) -> None:
            execute_batch(cur, stmt, rows, page_size=500)  # one round trip, not one per row
    else:
        def many(cur: Any, stmt: str, rows: list[tuple]) -> None:
            cur.executemany(stmt, rows)
    now = str(datetime.now(UTC))
    prepared = [(b.node, _ceiling_rows(b, kinds, closed, now)) for b in batches]
    events = sum(len(b.envelopes) for b in batches)
    t0 = time.perf_counter()
    for node, rows in prepared:
        with database.atomic():
            cur = database.cursor()
            for name, (stmt, extra) in sql.items():
                if rows[name]:
                    many(cur, stmt, [r + extra for r in rows[name]] if extra else rows[name])
            cur.execute(cursor_sql, (node,))
    seconds = time.perf_counter() - t0
    with database.atomic():
        database.execute_sql(f'DELETE FROM "event" WHERE seq > {CEILING_SEQ}')
        database.execute_sql(f'DELETE FROM "copyfact" WHERE key LIKE {p}', ("%~",))
        database.execute_sql(f'DELETE FROM "loan" WHERE id LIKE {p}', ("%~",))
        # The change rows stay: removing the newest revisions would let SQLite
        # hand the same numbers out again, and no node is addressed by them.
    return ApplyResult(events, seconds, 0.0)


# -- the broker ceiling ---------------------------------------------------------------

def write_payloads(batches: list[Batch], path: Path) -> None:
    """The messages, for the publisher process: ``node length\\n`` then the payload."""
    with path.open("wb") as f:
        for b in batches:
            f.write(f"{b.node} {len(b.payload)}\n".encode())
            f.write(b.payload)


def read_payloads(path: Path) -> list[tuple[str, bytes]]:
    """What ``write_payloads`` wrote."""
    out = []
    with path.open("rb") as f:
        while header := f.readline():
            node, size = header.decode().split()
            out.append((node, f.read(int(size))))
    return out


def publish_main(port: int, path: str) -> None:
    """The publisher process: connect, publish every message QoS 1, wait for the PUBACKs."""
    msgs = read_payloads(Path(path))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{port}")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    infos = [client.publish(topics.node_topic(node, "events"), payload, qos=1)
             for node, payload in msgs]
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def broker_ceiling(batches: list[Batch], port: int, workdir: Path) -> ApplyResult:
    """Events per second the broker delivers to one subscriber that does nothing with them."""
    path = workdir / "payloads.bin"
    write_payloads(batches, path)
    expected = len(batches)
    events = sum(len(b.envelopes) for b in batches)
    got = 0
    first = last = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        last = time.perf_counter()
        if got == 0:
            first = last
        got += 1
        if got >= expected:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{port}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, *a: c.subscribe(topics.EVENTS_ALL, qos=1)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("subscriber did not subscribe")
        t0 = time.perf_counter()
        pub = subprocess.run([sys.executable, "-m", "bench.apply", str(port), str(path)],
                             capture_output=True, text=True, timeout=120)
        if pub.returncode:
            raise RuntimeError(f"publisher failed: {pub.stderr[-1000:]}")
        if not done.wait(60):
            raise RuntimeError(f"only {got} of {expected} messages arrived")
    finally:
        sub.disconnect()
        sub.loop_stop()
    # From the first message in to the last: the publisher's start-up is not the broker's.
    seconds = max(last - first, 1e-6) * expected / max(1, expected - 1)
    logger.debug("broker ceiling: %d messages, publisher ran %.2f s", expected,
                 time.perf_counter() - t0)
    return ApplyResult(events, seconds, 0.0)


if __name__ == "__main__":
    publish_main(int(sys.argv[1]), sys.argv[2])
