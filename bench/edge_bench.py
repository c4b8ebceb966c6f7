"""The edge node's figures: a checkout through the HTTP API, its memory, and a bootstrap's stages.

The checkout is the real ``kitap edge`` process (Flask API, EdgeStore, sync
agent) at a branch (no hardware), holding a node's full knowledge: every
reader and title of the city and its own copies. Its link is down (a broker
port nobody listens on): the reader's path must not depend on it, and an
outbox that the cloud never acknowledges would make the node resend its window
every few seconds, which is a different benchmark.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import secrets
import time
from pathlib import Path
from typing import Any

from bench.generate import Shape, build_edge, card, is_blocked
from bench.profile import Spy
from bench.report import percentile, rss_kib
from kitap.procs import Process, free_port, kitap_command, wait_http

logger = logging.getLogger(__name__)

NODE = "b-bench"
# Calls before the measured ones: the first calls warm SQLite's page cache and
# Python's imports, which a node that has served all day has long done.
WARMUP = 30
RSS_EVERY = 50  # checkouts between two memory samples


def close_edge() -> None:
    """Let go of the edge store's file in this process, if one is bound."""
    from edge import store as es

    if es.db.database is not None and not es.db.is_closed():
        es.db.close()


def checkout(workdir: Path, shape: Shape, *, copies: int, calls: int,
             spy_dir: Path | None = None) -> dict[str, Any]:
    """p50/p99 of POST /api/checkout at a node of ``shape.readers`` readers and ``copies``."""

    db = workdir / "edge-checkout.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    t = time.perf_counter()
    counts = build_edge(str(db), NODE, shape, copies=copies)
    close_edge()
    built = time.perf_counter() - t
    port = free_port()
    token = secrets.token_hex(16)
    proc = Process(NODE, kitap_command(
        "edge", "--node", NODE, "--kind", "branch", "--db", str(db),
        "--broker", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{port}"),
        workdir / "edge-checkout.log", env={"KITAP_API_TOKEN": token}).start()
    assert proc.proc is not None
    pid = proc.proc.pid
    rng = random.Random(5)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/status")
        conn.getresponse().read()
        time.sleep(1.0)
        idle = rss_kib(pid)["VmRSS"]
        times: list[float] = []
        refused: dict[int, int] = {}
        samples = []

        def one(i: int) -> float:
            while is_blocked(shape, r := rng.randrange(shape.readers)):
                pass
            body = json.dumps({"reader": card(r), "copy": f"C9{i + 1:06d}"})
            t0 = time.perf_counter()
            conn.request("POST", "/api/checkout", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 201:
                refused[resp.status] = refused.get(resp.status, 0) + 1
            return dt

        for i in range(WARMUP):
            one(i)
        spy = Spy(pid, spy_dir / "edge-checkout.txt") if spy_dir else None
        if spy:
            spy.__enter__()
        try:
            for i in range(WARMUP, WARMUP + calls):
                times.append(one(i))
                if i % RSS_EVERY == 0:
                    samples.append(rss_kib(pid)["VmRSS"])
        finally:
            if spy:
                spy.__exit__(None, None, None)
        loaded = rss_kib(pid)
        conn.close()
    finally:
        proc.stop()
    if refused:
        logger.warning("checkouts refused: %s (see %s)", refused, proc.log)
    return {"calls": len(times), "refused": refused, "p50_ms": 1000 * percentile(times, 50),
            "p99_ms": 1000 * percentile(times, 99), "max_ms": 1000 * max(times),
            "mean_ms": 1000 * sum(times) / len(times), "built_seconds": built, **counts,
            "rss_idle_mib": idle / 1024, "rss_load_mib": max(samples + [loaded["VmRSS"]]) / 1024,
            "rss_peak_mib": loaded.get("VmHWM", 0) / 1024,
            "db_mib": db.stat().st_size / 2**20}


def bootstrap_stages(workdir: Path, node: str) -> dict[str, Any]:
    """A snapshot for ``node`` from the bound cloud store, stage by stage, in this process."""
    from cloud import feed
    from edge import store as es
    from edge.feed import FeedApplier
    from protocol.feed import decode_down, encode_down

    out: dict[str, Any] = {}
    t = time.perf_counter()
    parts = feed.snapshot(node)
    out["build_seconds"] = time.perf_counter() - t
    out["items"] = sum(len(p["changes"]) for p in parts)
    out["parts"] = len(parts)
    t = time.perf_counter()
    payloads = [encode_down("snapshot", **p) for p in parts]
    out["encode_seconds"] = time.perf_counter() - t
    out["mib"] = sum(len(p) for p in payloads) / 2**20
    del parts
    t = time.perf_counter()
    msgs = [decode_down(p) for p in payloads]
    out["decode_seconds"] = time.perf_counter() - t
    del payloads
    db = workdir / f"stages-{node}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    close_edge()
    applier = FeedApplier(es.EdgeStore(node, str(db)))
    t = time.perf_counter()
    for m in msgs:
        applier.add_snapshot_part(m)
    out["apply_seconds"] = time.perf_counter() - t
    close_edge()
    out["total_seconds"] = sum(v for k, v in out.items() if k.endswith("_seconds"))
    return out
