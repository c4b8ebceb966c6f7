"""One edge node's link to the cloud, run as a process of its own for the network benchmarks.

It is the node's real ``EdgeStore`` and ``SyncAgent`` (no web, no hardware),
and says on stdout, one JSON line each, when the events that matter to a
benchmark happen: connected, outbox drained (the cloud acknowledged the last
seq), a reader blocked by the feed. On stdin it takes ``fill PATH`` (append the
envelopes in the JSON file PATH to the outbox, as a day offline would have
written them) and ``quit``.

    python -m bench.agent --node m-01 --kind machine --db m-01.db --port 18830 \\
        --acked 120 --feed-rev 4031
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import click

from edge import store as es
from edge.feed import FeedApplier
from edge.sync import SyncAgent

# The reason the benchmark blocks readers with; the agent reports those blocks.
BLOCK_MARK = "bench-block"

_out_lock = threading.Lock()


def say(event: str, **fields: Any) -> None:
    """One JSON line on stdout, stamped with the wall clock (shared by every process here)."""
    with _out_lock:
        sys.stdout.write(json.dumps({"ev": event, "t": time.time(), **fields}) + "\n")
        sys.stdout.flush()


class WatchedFeed(FeedApplier):
    """The node's feed applier, reporting each benchmark block once it is committed."""

    def apply_changes(self, msg: dict[str, Any]) -> bool:
        """Apply as usual; then name the blocked readers it carried."""
        applied = super().apply_changes(msg)
        if applied:
            cards = [ch["key"] for ch in msg["changes"] if ch["entity"] == "reader"
                     and str(ch["data"].get("blocked_reason") or "").startswith(BLOCK_MARK)]
            if cards:
                say("blocked", cards=cards, rev=msg["to_rev"])
        return applied


# How often the node's feed revision is looked at and reported when it moved.
REV_INTERVAL = 0.25


def report_rev(agent: SyncAgent) -> None:
    """Say the node's feed revision whenever it changes."""
    last = -1
    while True:
        rev = agent.feed.rev()
        if rev != last:
            say("rev", rev=rev)
            last = rev
        time.sleep(REV_INTERVAL)


def fill(store: es.EdgeStore, path: str) -> int:
    """Append the envelopes in ``path`` to the outbox in one transaction; returns last seq."""
    envelopes = json.loads(open(path, encoding="utf-8").read())
    now = datetime.now(UTC)
    with es.db.atomic():   # BEGIN IMMEDIATE: the sync threads wait for it
        rows = [{"seq": e["seq"], "type": e["type"], "copy": e["body"].get("copy"),
                 "envelope": json.dumps(e, ensure_ascii=False), "created_at": now}
                for e in envelopes]
        for i in range(0, len(rows), 500):
            es.Outbox.insert_many(rows[i:i + 500]).execute()
        last = envelopes[-1]["seq"] if envelopes else store.last_seq()
        es.Meta.insert(key="last_seq", value=str(last)).on_conflict_replace().execute()
    return int(last)


@click.command()
@click.option("--node", required=True)
@click.option("--kind", type=click.Choice(["machine", "branch"]), required=True)
@click.option("--db", "path", required=True)
@click.option("--port", type=int, required=True)
@click.option("--acked", type=int, default=0, help="The cloud's cursor for this node.")
@click.option("--feed-rev", type=int, default=0, help="The feed revision the node is at.")
def main(node: str, kind: str, path: str, port: int, acked: int, feed_rev: int) -> None:
    """Run one node's store and sync agent until stdin says quit."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    store = es.EdgeStore(node, path)
    with es.db.atomic():
        for key, value in (("last_seq", acked), ("last_acked", acked), ("feed_rev", feed_rev)):
            es.Meta.insert(key=key, value=str(value)).on_conflict_replace().execute()
    agent = SyncAgent(store, host="127.0.0.1", port=port, kind=kind)
    agent.feed = WatchedFeed(store)
    target: dict[str, int | None] = {"seq": None}   # the seq whose ack we wait for

    on_connect = agent.client.on_connect

    def connected(*args: Any) -> None:
        say("connected")
        on_connect(*args)

    agent.client.on_connect = connected
    mark_acked = store.mark_acked

    def acked_upto(upto: int) -> int:
        got = mark_acked(upto)
        want = target["seq"]
        if want is not None and got >= want:
            target["seq"] = None
            say("drained", seq=got)
        return got

    store.mark_acked = acked_upto  # type: ignore[method-assign]
    agent.start()
    threading.Thread(target=report_rev, args=(agent,), daemon=True).start()
    say("ready", pid=os.getpid())
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "fill":
            last = fill(store, arg)
            target["seq"] = last
            say("filled", seq=last)
            agent.poke()
        elif cmd == "quit":
            break
    agent.stop()


if __name__ == "__main__":
    main()
