"""The figures that need the whole network running: catch-up, blocks, console, bootstrap.

The cloud is the real ``kitap cloud`` process (consumer and web) on the city's
store; the broker is our own Mosquitto; every node is a ``bench.agent``
process: the node's real EdgeStore and SyncAgent, one process each (the edge
store is one SQLite file per process), without web or hardware.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import percentile, rss_kib
from bench.traffic import Traffic
from kitap.procs import Mosquitto, Process, free_port, http_json, kitap_command, wait_http

logger = logging.getLogger(__name__)

# The 52 nodes share this machine's 2 cores with the cloud they talk to; in the
# city each has a machine of its own. Niced, they take only what the cloud
# leaves, so the cloud's figures are the cloud's (their own work still counts
# wherever the cloud waits for them).
AGENT_NICE = 19
# How long a benchmark waits for the network before it gives up and says so.
DRAIN_TIMEOUT = 1800.0
BLOCK_TIMEOUT = 15.0
FEED_TIMEOUT = 1800.0
BOOTSTRAP_TIMEOUT = 420.0
# A console page is asked at most this long (a slow page at city scale takes seconds).
PAGE_SECONDS = 30.0
# The cloud's API token for this run (the API needs one; made per run: nothing to leak).
TOKEN = secrets.token_urlsafe(16)


class Agents:
    """The nodes: one ``bench.agent`` process each, and what they report."""

    def __init__(self, workdir: Path, port: int, nodes: dict[str, str]) -> None:
        self.workdir = workdir / "agents"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.nodes = port, nodes
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.rev: dict[str, int] = {}
        self._cond = threading.Condition()

    def start(self, cursors: dict[str, int], feed_rev: int) -> None:
        """Start every node, at the cloud's cursor and feed revision, and wait until ready."""
        for node in self.nodes:
            self.spawn(node, cursors.get(node, 0), feed_rev)
        self.wait_ready(list(self.nodes))

    def spawn(self, node: str, cursor: int, feed_rev: int) -> None:
        """Start one node with a fresh file."""
        db = self.workdir / f"{node}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bench.agent", "--node", node, "--kind", self.nodes[node],
                "--db", str(db), "--port", str(self.port), "--acked", str(cursor),
                "--feed-rev", str(feed_rev)]
        log = (self.workdir / f"{node}.log").open("ab")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True, bufsize=1,
                                preexec_fn=lambda: os.nice(AGENT_NICE))
        self.procs[node] = proc
        threading.Thread(target=self._read, args=(node, proc), daemon=True).start()

    def wait_ready(self, nodes: list[str], since: int = 0) -> None:
        """Wait until these nodes said they are ready."""
        if not self.wait(lambda: all(self.seen(n, "ready", since) for n in nodes), 120,
                         "agents ready"):
            raise RuntimeError("the nodes did not start")

    def stop_one(self, node: str) -> None:
        """Stop one node (its place is taken by another process for a while)."""
        proc = self.procs.pop(node)
        self.send_to(proc, "quit")
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _read(self, node: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["node"] = node
            with self._cond:
                self.events.append(ev)
                if ev["ev"] == "rev":
                    self.rev[node] = ev["rev"]
                self._cond.notify_all()

    def seen(self, node: str, kind: str, since: int = 0) -> list[dict[str, Any]]:
        """The reports of ``kind`` from ``node`` after index ``since``."""
        return [e for e in self.events[since:] if e["node"] == node and e["ev"] == kind]

    def mark(self) -> int:
        """A position in the reports, to look only at what comes after it."""
        with self._cond:
            return len(self.events)

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> bool:
        """Wait until ``pred`` holds (checked on every report); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead:
                    log = (self.workdir / f"{dead[0]}.log").read_text(errors="replace")
                    raise RuntimeError(f"node {dead[0]} exited while waiting for {what}: "
                                       f"{log[-1500:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning("timed out after %.0f s waiting for %s", timeout, what)
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def send(self, node: str, line: str) -> None:
        """A command on the node's stdin."""
        self.send_to(self.procs[node], line)

    @staticmethod
    def send_to(proc: subprocess.Popen[str], line: str) -> None:
        """A command on a process's stdin."""
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def pids(self) -> list[int]:
        """The agents' process ids."""
        return [p.pid for p in self.procs.values()]

    def stop(self) -> None:
        """Ask every node to quit; kill the ones that do not."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    self.send_to(proc, "quit")
                except (BrokenPipeError, OSError):
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class Network:
    """Broker, cloud process and agents, started and stopped together."""

    def __init__(self, workdir: Path, db_url: str, nodes: dict[str, str]) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.broker = Mosquitto(workdir / "broker")
        self.nodes = nodes
        self.cloud: Process | None = None
        self.cloud_url = ""
        self.agents = Agents(workdir, self.broker.port, nodes)

    def start_cloud(self) -> None:
        """Start ``kitap cloud`` on the store and wait until it answers."""
        port = free_port()
        self.cloud = Process("cloud", kitap_command(
            "cloud", "--db", self.db_url, "--broker", f"127.0.0.1:{self.broker.port}",
            "--http", f"127.0.0.1:{port}"), self.workdir / "cloud.log",
            env={"KITAP_API_TOKEN": TOKEN}).start()
        self.cloud_url = f"http://127.0.0.1:{port}"
        wait_http(self.cloud_url + "/healthz", timeout=120)

    def stop(self) -> None:
        """Everything down, nodes first."""
        self.agents.stop()
        if self.cloud is not None:
            self.cloud.stop()
        self.broker.stop()


def _write_outboxes(per_node: dict[str, list[dict[str, Any]]], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for node, envs in per_node.items():
        paths[node] = directory / f"{node}.json"
        paths[node].write_text(json.dumps(envs, ensure_ascii=False))
    return paths


def catch_up(net: Network, traffic: Traffic, total: int, spy_out: Path | None = None,
             timeout: float = DRAIN_TIMEOUT) -> dict[str, Any]:
    """Broker down, ``total`` events written into the nodes' outboxes, broker back: timings.

    Returns seconds from the broker accepting connections again to: the last
    node connected, the first node drained, every node drained (all acknowledged).
    If that takes longer than ``timeout``, says how many events were applied by then.
    """
    from bench.profile import Spy
    from cloud import store as cs

    agents = net.agents
    net.broker.kill()
    before = sum(traffic.seq.values())
    per_node = traffic.round(total)
    paths = _write_outboxes(per_node, net.workdir / "outboxes")
    mark = agents.mark()
    for node, path in paths.items():
        agents.send(node, f"fill {path}")
    if not agents.wait(lambda: all(agents.seen(n, "filled", mark) for n in paths), 120,
                       "outboxes filled"):
        raise RuntimeError("the nodes did not fill their outboxes")
    mark = agents.mark()
    assert net.cloud is not None and net.cloud.proc is not None
    spy: Any = Spy(net.cloud.proc.pid, spy_out) if spy_out else None
    if spy:
        spy.__enter__()
    try:
        net.broker.start()
        up = time.time()
        done = agents.wait(lambda: all(agents.seen(n, "drained", mark) for n in paths),
                           timeout, "every outbox drained")
    finally:
        if spy:
            spy.__exit__(None, None, None)
    connected = [c[0]["t"] - up for n in paths if (c := agents.seen(n, "connected", mark))]
    if not done:
        applied = int(sum(c.applied_seq for c in cs.NodeCursor.select())) - before
        return {"finished": False, "events": float(total), "applied": float(applied),
                "seconds": time.time() - up,
                "last_connected": max(connected) if connected else float("nan")}
    drained = [agents.seen(n, "drained", mark)[0]["t"] - up for n in paths]
    return {"finished": True, "events": float(sum(len(v) for v in per_node.values())),
            "seconds": max(drained), "first_drained": min(drained),
            "last_connected": max(connected) if connected else float("nan")}


def wait_cloud_idle(net: Network, timeout: float) -> float | None:
    """Seconds until the cloud's ingest queue is empty twice in a row; None on timeout."""
    t0 = time.monotonic()
    empty = 0
    while time.monotonic() - t0 < timeout:
        code, _ = http_json("GET", net.cloud_url + "/healthz", timeout=30)
        try:
            with urllib.request.urlopen(net.cloud_url + "/metrics", timeout=30) as resp:  # noqa: S310
                text = resp.read().decode()
        except OSError:
            text = ""
        depth = next((float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith("kitap_cloud_ingest_queue_depth ")), None)
        empty = empty + 1 if depth == 0 else 0
        if empty >= 2:
            return time.monotonic() - t0
        time.sleep(1.0)
    return None


def wait_feed_current(net: Network, rev: int, timeout: float = FEED_TIMEOUT) -> float | None:
    """Seconds until every node reports feed revision ``rev`` or later; None on timeout."""
    t0 = time.monotonic()
    agents = net.agents
    ok = agents.wait(lambda: all(agents.rev.get(n, 0) >= rev for n in net.nodes), timeout,
                     f"every node at feed revision {rev}")
    return time.monotonic() - t0 if ok else None


def blocks(net: Network, cards: list[str]) -> dict[str, Any]:
    """Block each reader in the cloud; latency until each online node has the block."""
    from cloud import actions

    agents = net.agents
    latencies: list[float] = []
    missing = 0
    for i, card in enumerate(cards):
        mark = agents.mark()
        actions.block(card, f"bench-block {i}")
        decided = time.time()

        def arrived(card: str = card, mark: int = mark) -> dict[str, float]:
            return {e["node"]: e["t"] for e in agents.events[mark:]
                    if e["ev"] == "blocked" and card in e["cards"]}

        agents.wait(lambda: len(arrived()) >= len(net.nodes), BLOCK_TIMEOUT,
                    f"block of {card} at every node")
        got = arrived()
        missing += len(net.nodes) - len(got)
        latencies += [t - decided for t in got.values()]
        time.sleep(0.3)
    return {"samples": len(latencies), "missing": missing,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else float("nan")}


# -- the console --------------------------------------------------------------------------

CONSOLE_PAGES = [
    ("debtors list", ("debtor", "overdue")),
    ("where-is-copy", ("copies/{",)),
    ("a node's inventory", ("inventory", "nodes/{")),
    ("statistics", ("statistic", "stats", "summary")),
]


def console(base: str, barcodes: list[str], node: str, requests: int) -> dict[str, Any]:
    """p95 of each console page the cloud serves; "not yet built" for the others."""
    code, spec = http_json("GET", base + "/api/openapi.json")
    paths = [p for p, ops in (spec.get("paths", {}) if code == 200 else {}).items()
             if "get" in ops]
    out: dict[str, Any] = {}
    for name, words in CONSOLE_PAGES:
        path = next((p for p in paths if any(w in p for w in words)), None)
        if path is None:
            out[name] = {"built": False}
            continue
        times: list[float] = []
        for i in range(requests):
            if sum(times) > PAGE_SECONDS:
                break
            url = path.replace("{barcode}", barcodes[i % len(barcodes)])
            url = url.replace("{node}", node).replace("{node_id}", node)
            if "{" in url:
                break
            t = time.perf_counter()
            status, _ = http_json("GET", base + "/api" + url.removeprefix("/api"), timeout=60,
                                  token=TOKEN)
            times.append(time.perf_counter() - t)
            if status != 200:
                logger.warning("console %s answered %d", url, status)
        if not times:
            out[name] = {"built": True, "path": path, "measured": False}
            continue
        out[name] = {"built": True, "path": path, "requests": len(times),
                     "p50_ms": 1000 * percentile(times, 50), "p95_ms": 1000 * percentile(times, 95)}
    return out


# -- a fresh node's bootstrap, end to end ----------------------------------------------------

def bootstrap(net: Network, node: str, kind: str, spy_dir: Path | None = None) -> dict[str, Any]:
    """Start a fresh ``kitap edge`` on the running network; seconds until it holds a snapshot."""
    from bench.profile import Spy

    port = free_port()
    db = net.workdir / f"fresh-{node}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if kind == "machine":
        raise ValueError("a fresh machine needs its controller; bootstrap a branch")
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S")   # the cloud log's clock, to count its answers
    proc = Process(f"fresh-{node}", kitap_command(
        "edge", "--node", node, "--kind", kind, "--db", str(db), "--broker",
        f"127.0.0.1:{net.broker.port}", "--http", f"127.0.0.1:{port}"),
        net.workdir / f"fresh-{node}.log").start()
    assert proc.proc is not None and net.cloud is not None and net.cloud.proc is not None
    spies = []
    if spy_dir is not None:
        spies = [Spy(proc.proc.pid, spy_dir / "bootstrap-edge.txt"),
                 Spy(net.cloud.proc.pid, spy_dir / "bootstrap-cloud.txt")]
        for s in spies:
            s.__enter__()
    serving = None
    status: dict[str, Any] = {}
    peak = 0
    try:
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        bootstrapped = False
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(proc.proc.pid).get("VmRSS", 0))
            try:
                code, status = http_json("GET", url + "/api/status", timeout=5)
            except OSError:
                code = 0
            if code == 200:
                serving = serving or time.time()
                if status.get("feed_rev", 0) > 0:
                    bootstrapped = True
                    break
            if not proc.alive():
                raise RuntimeError(f"the fresh node died: {proc.log.read_text()[-2000:]}")
            time.sleep(0.1)
        done = time.time()
        mem = rss_kib(proc.proc.pid)
    finally:
        for s in spies:
            s.__exit__(None, None, None)
        proc.stop()
    asked = sum(1 for line in net.cloud.log.read_text(errors="replace").splitlines()
                if f"{node} asked from rev 0" in line and line[:19] >= started)
    return {"finished": bootstrapped, "snapshots_sent": asked,
            "seconds": done - t0, "serving_after": (serving or done) - t0,
            "snapshot_after_serving": done - (serving or done),
            "readers": status.get("readers"), "copies_here": status.get("copies_here"),
            "rss_peak_mib": max(peak, mem.get("VmHWM", 0)) / 1024,
            "rss_after_mib": mem.get("VmRSS", 0) / 1024}
