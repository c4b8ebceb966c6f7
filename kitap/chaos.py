"""The chaos suite: a whole network on this machine, broken at random, then judged.

Cloud, 2 vending machines with their simulators and 2 branches, each node
behind its own fault-injecting proxy to the broker (access list on), one node
with a wrong wall clock. Scripted readers borrow and return while faults are
injected at random: broker killed, cloud killed, an edge killed mid-checkout,
links cut / stalled (half-open) / flapping, a controller's power cut. Then
everything is healed and judged:

- nothing lost: the cloud applied every event each node wrote (cursor = last seq);
- nothing doubled: one Event row per (node, seq);
- every copy in exactly one place, and on loan iff exactly one open loan;
- the cloud equals the oracle: each node's own journal applied once, in order,
  to a fresh cloud.

It prints the figures: operations, faults of each kind, seconds to converge.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitap.faultproxy import FaultProxy
from kitap.procs import (
    Mosquitto,
    Process,
    free_port,
    http_json,
    kitap_command,
    start_firmware_sim,
    wait_for,
    wait_http,
)
from kitap.provision import env_of, provision
from kitap.sample_data import NodeSpec, generate

NODES = [NodeSpec("m-chaos-1", "machine", "Chaos machine 1", 20),
         NodeSpec("m-chaos-2", "machine", "Chaos machine 2", 20),
         NodeSpec("b-chaos-1", "branch", "Chaos branch 1", 0),
         NodeSpec("b-chaos-2", "branch", "Chaos branch 2", 0)]
# One node's wall clock is this far off (minutes slow): its HLC still orders it.
SKEWED_NODE, SKEW_SECONDS = "b-chaos-2", -600.0
FAULTS = ("broker_kill", "cloud_kill", "edge_kill", "link_cut", "link_stall", "link_flap",
          "power_cut")
# Seconds between faults, and how long one lasts: short enough for many in a
# bounded run, long enough that outboxes fill and keepalives must notice.
FAULT_GAP = (1.0, 3.0)
FAULT_LENGTH = (1.0, 4.0)
CONVERGE_TIMEOUT = 120.0
TOKEN = secrets.token_urlsafe(16)  # made per run: nothing to leak


@dataclass
class Site:
    """One node of the chaos network."""

    spec: NodeSpec
    db: Path
    url: str = ""
    proxy: FaultProxy | None = None
    proc: Process | None = None
    sim: Process | None = None
    control: str = ""
    tty: Path | None = None
    available: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """What the judge found."""

    ok: bool
    problems: list[str]
    figures: dict[str, Any]


class Chaos:
    """One chaos run."""

    def __init__(self, workdir: Path, *, seed: int = 1, pace: float = 6.0,
                 log: Any = print) -> None:
        self.dir = workdir
        self.rng = random.Random(seed)
        self.pace = pace
        self.say = log
        self.data = generate(NODES, copies=400, readers=100, seed=seed)
        self.sites = {n.id: Site(n, workdir / f"{n.id}.db") for n in NODES}
        self.socks = Path(tempfile.mkdtemp(prefix="kc-"))
        self.auth = workdir / "auth"
        self.cloud_db = workdir / "cloud.db"
        self.cloud: Process | None = None
        self.cloud_url = ""
        self.broker: Mosquitto | None = None
        self.ops: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.loans: dict[str, str] = {}          # copy -> node where lent (the driver's view)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- bring-up ------------------------------------------------------------------

    def start(self) -> None:
        """Seed the cloud, start broker, cloud, simulators, proxies and nodes."""
        from cloud import store as cs

        self.dir.mkdir(parents=True, exist_ok=True)
        provision(self.auth, [n.id for n in NODES])
        cs.connect(f"sqlite:///{self.cloud_db}")
        cs.seed(nodes=[{"id": n.id, "kind": n.kind, "name": n.name} for n in NODES],
                titles=[{"id": t.id, "title": t.title, "author": t.author,
                         "item_type": t.item_type} for t in self.data.titles],
                readers=[{"card": r.card, "name": r.name, "category": r.category}
                         for r in self.data.readers],
                copies=[{"barcode": c.barcode, "title_id": c.title_id,
                         "home_node": c.home_node, "location_node": c.location_node,
                         "slot": c.slot, "status": "in_slot" if c.slot else "on_shelf"}
                        for c in self.data.copies])
        cs.db.close()
        self.broker = Mosquitto(self.dir / "broker", auth_dir=self.auth).start()
        self._start_cloud()
        for site in self.sites.values():
            site.available = [c.barcode for c in self.data.copies
                              if c.location_node == site.spec.id]
            site.proxy = FaultProxy(self.broker.port)
            if site.spec.kind == "machine":
                self._write_sim_state(site)
                self._start_sim(site)
            self._start_edge(site)
        for site in self.sites.values():
            wait_for(lambda s=site: self._status(s).get("feed_rev", 0) > 0, 60,
                     what=f"{site.spec.id} to bootstrap")

    def _start_cloud(self) -> None:
        port = free_port()
        assert self.broker is not None
        self.cloud = Process("cloud", kitap_command(
            "cloud", "--db", f"sqlite:///{self.cloud_db}",
            "--broker", f"127.0.0.1:{self.broker.port}", "--http", f"127.0.0.1:{port}",
            "--credentials", str(self.auth / "cloud.env")), self.dir / "cloud.log",
            env={"KITAP_API_TOKEN": TOKEN}).start()
        self.cloud_url = f"http://127.0.0.1:{port}"
        wait_http(self.cloud_url + "/healthz", 30)

    def _write_sim_state(self, site: Site) -> None:
        slots: dict[str, str | None] = {str(i): None for i in range(1, site.spec.slots + 1)}
        for c in self.data.copies:
            if c.location_node == site.spec.id and c.slot:
                slots[str(c.slot)] = c.barcode
        (self.dir / f"{site.spec.id}-sim.json").write_text(
            json.dumps({"slots": slots, "bin": [], "bin_capacity": 1000}))

    def _start_sim(self, site: Site) -> None:
        site.control = str(self.socks / f"{site.spec.id}.sock")
        site.sim, pty = start_firmware_sim(
            f"{site.spec.id}-sim", self.dir, state=self.dir / f"{site.spec.id}-sim.json",
            slots=site.spec.slots, control=site.control, auto_take=0.2)
        # A stable name for the controller's line: a power cut gives the restarted
        # simulator a new pty, and the driver reopens the name.
        site.tty = self.socks / f"{site.spec.id}.tty"
        tmp = site.tty.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(pty)
        os.replace(tmp, site.tty)

    def _start_edge(self, site: Site) -> None:
        port = free_port()
        assert site.proxy is not None
        argv = ["edge", "--node", site.spec.id, "--kind", site.spec.kind, "--db", str(site.db),
                "--broker", f"127.0.0.1:{site.proxy.port}", "--http", f"127.0.0.1:{port}"]
        if site.tty:
            argv += ["--serial", str(site.tty)]
        env = {"KITAP_API_TOKEN": TOKEN, **env_of(self.auth, site.spec.id)}
        if site.spec.id == SKEWED_NODE:
            env["KITAP_CLOCK_SKEW_SECONDS"] = str(SKEW_SECONDS)
        site.proc = Process(site.spec.id, kitap_command(*argv), self.dir / f"{site.spec.id}.log",
                            env=env).start()
        site.url = f"http://127.0.0.1:{port}"
        wait_http(site.url + "/healthz", 30)

    @staticmethod
    def _status(site: Site) -> dict[str, Any]:
        code, body = http_json("GET", site.url + "/api/status", timeout=3)
        return body if code == 200 else {}

    # -- load ----------------------------------------------------------------------

    def _load(self) -> None:
        while not self._stop.wait(1.0 / self.pace):
            try:
                self._one_action()
            except Exception:  # noqa: BLE001 - a node may be down right now: that is the point
                self.ops["unreachable"] += 1

    def _one_action(self) -> None:
        with self._lock:
            lending = not self.loans or self.rng.random() < 0.55
            if lending:
                site = self.rng.choice([s for s in self.sites.values() if s.available])
                copy = self.rng.choice(site.available)
                reader = self.rng.choice(self.data.readers).card
            else:
                copy = self.rng.choice(sorted(self.loans))
                site = self.rng.choice(list(self.sites.values()))
        if lending:
            if site.spec.kind == "machine":
                from firmware_sim.control import ControlClient

                ControlClient(site.control).present_card(reader)
                time.sleep(0.1)
            code, _ = http_json("POST", site.url + "/api/checkout",
                                {"reader": reader, "copy": copy}, timeout=15, token=TOKEN)
            self.ops["checkout_ok" if code == 201 else f"checkout_{code}"] += 1
            if code == 201:
                with self._lock:
                    site.available.remove(copy)
                    self.loans[copy] = site.spec.id
            return
        if site.spec.kind == "machine":
            from firmware_sim.control import ControlClient

            ok = ControlClient(site.control).insert_return(copy, timeout=5).get(
                "outcome") == "accepted"
        else:
            ok = http_json("POST", site.url + "/api/return", {"copy": copy}, timeout=15,
                           token=TOKEN)[0] == 201
            if ok:
                with self._lock:
                    site.available.append(copy)
        self.ops["return_ok" if ok else "return_failed"] += 1
        if ok:
            with self._lock:
                self.loans.pop(copy, None)

    # -- faults ----------------------------------------------------------------------

    def _inject(self) -> None:
        # Every kind once per round, in a random order: a short run still sees all.
        order: list[str] = []
        while not self._stop.wait(self.rng.uniform(*FAULT_GAP)):
            if not order:
                order = self.rng.sample(FAULTS, len(FAULTS))
            kind = order.pop()
            site = self.rng.choice([x for x in self.sites.values()
                                    if kind != "power_cut" or x.spec.kind == "machine"])
            length = self.rng.uniform(*FAULT_LENGTH)
            try:
                self._fault(kind, site, length)
            except Exception as exc:  # noqa: BLE001 - report, keep breaking things
                self.say(f"  fault {kind} failed to apply: {exc}")

    def _fault(self, kind: str, site: Site, length: float) -> None:
        assert self.broker is not None and site.proxy is not None
        if kind == "power_cut" and site.spec.kind != "machine":
            kind = "edge_kill"
        self.faults[kind] += 1
        self.say(f"  fault: {kind} {'' if kind in ('broker_kill', 'cloud_kill') else site.spec.id}"
                 f" for {length:.1f}s")
        if kind == "broker_kill":
            self.broker.kill()
            self._stop.wait(length)
            self.broker.start()
        elif kind == "cloud_kill":
            assert self.cloud is not None
            self.cloud.kill()
            self._stop.wait(length)
            self._start_cloud()
        elif kind == "edge_kill":
            assert site.proc is not None
            site.proc.kill()
            self._stop.wait(length)
            self._start_edge(site)
        elif kind == "power_cut":
            assert site.sim is not None
            site.sim.kill()
            self._stop.wait(length)
            self._start_sim(site)
        elif kind in ("link_cut", "link_stall"):
            site.proxy.set("cut" if kind == "link_cut" else "stall")
            self._stop.wait(length)
            site.proxy.set("up")
        elif kind == "link_flap":
            site.proxy.flap(0.4)
            self._stop.wait(length)
            site.proxy.set("up")

    # -- the run -----------------------------------------------------------------------

    def run(self, duration: float) -> Verdict:
        """Load and faults for ``duration`` seconds, then heal, converge and judge."""
        load = threading.Thread(target=self._load, daemon=True)
        chaos = threading.Thread(target=self._inject, daemon=True)
        load.start()
        chaos.start()
        time.sleep(duration)
        self._stop.set()
        load.join(30)
        chaos.join(60)
        healed = time.monotonic()
        self._heal()
        converged = self._converge()
        seconds = time.monotonic() - healed
        verdict = self.judge()
        verdict.figures.update({
            "duration_s": duration, "converge_s": round(seconds, 2) if converged else None,
            "operations": dict(self.ops), "faults": dict(self.faults),
        })
        if not converged:
            verdict.ok = False
            verdict.problems.insert(0, f"did not converge within {CONVERGE_TIMEOUT:.0f}s")
        return verdict

    def _heal(self) -> None:
        assert self.broker is not None
        if not (self.broker.proc and self.broker.proc.poll() is None):
            self.broker.start()
        if self.cloud is None or not self.cloud.alive():
            self._start_cloud()
        for site in self.sites.values():
            assert site.proxy is not None
            site.proxy.set("up")
            if site.sim is not None and not site.sim.alive():
                self._start_sim(site)
            if site.proc is None or not site.proc.alive():
                self._start_edge(site)

    def _converge(self) -> bool:
        def done() -> bool:
            applied = {n["id"]: n["applied_seq"] for n in
                       http_json("GET", self.cloud_url + "/api/summary", timeout=3,
                                 token=TOKEN)[1]["nodes"]}
            for site in self.sites.values():
                st = self._status(site)
                if not st or st["outbox_depth"] or applied.get(site.spec.id) != st["last_seq"]:
                    return False
            return True
        try:
            wait_for(done, CONVERGE_TIMEOUT, interval=0.3, what="convergence")
            return True
        except TimeoutError:
            return False

    # -- the judge -------------------------------------------------------------------

    def judge(self) -> Verdict:
        """Compare the cloud with each node's journal and with the invariants."""
        problems: list[str] = []
        journals = {sid: _journal(site.db) for sid, site in self.sites.items()}
        with sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True) as con:
            for node, events in journals.items():
                seqs = [s for (s,) in con.execute(
                    "select seq from event where node=? order by seq", (node,))]
                if seqs != list(range(1, len(events) + 1)):
                    problems.append(f"{node}: cloud has seqs {_span(seqs)}, the node wrote "
                                    f"1..{len(events)}")
            live = _state(con)
            problems += _places(con)
        oracle = self._oracle(journals)
        if live != oracle:
            diff = [k for k in live if live[k] != oracle.get(k)]
            problems.append(f"cloud differs from the oracle in {len(diff)} rows, "
                            f"e.g. {diff[:3]}")
        events = sum(len(j) for j in journals.values())
        return Verdict(not problems, problems, {"events": events,
                                               "per_node": {k: len(v) for k, v in
                                                            journals.items()}})

    def _oracle(self, journals: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        from cloud import store as cs
        from cloud.ingest import ingest
        from protocol.envelope import parse_envelope

        path = self.dir / "oracle.db"
        path.unlink(missing_ok=True)
        cs.connect(f"sqlite:///{path}")
        try:
            cs.seed(nodes=[{"id": n.id, "kind": n.kind, "name": n.name} for n in NODES],
                    titles=[], readers=[],
                    copies=[{"barcode": c.barcode, "title_id": c.title_id,
                             "home_node": c.home_node, "location_node": c.location_node,
                             "slot": c.slot, "status": "in_slot" if c.slot else "on_shelf"}
                            for c in self.data.copies])
            for node, envs in journals.items():
                for i in range(0, len(envs), 200):
                    ingest(node, [parse_envelope(e) for e in envs[i:i + 200]])
        finally:
            cs.db.close()
        with sqlite3.connect(path) as con:
            return _state(con)

    def close(self) -> None:
        """Stop everything."""
        self._stop.set()
        for site in self.sites.values():
            if site.proc:
                site.proc.stop()
            if site.sim:
                site.sim.stop()
            if site.proxy:
                site.proxy.close()
        if self.cloud:
            self.cloud.stop()
        if self.broker:
            self.broker.stop()
        shutil.rmtree(self.socks, ignore_errors=True)


def _journal(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [json.loads(e) for (e,) in con.execute("select envelope from outbox order by seq")]


def _state(con: sqlite3.Connection) -> dict[str, Any]:
    copies = {f"copy {b}": (st, loc, loan) for b, st, loc, loan in con.execute(
        "select barcode, status, location_node, loan_id from copy")}
    loans = {f"loan {i}": (c, r, ret is None, reason) for i, c, r, ret, reason in con.execute(
        "select id, copy, reader, returned_at, close_reason from loan")}
    return {**copies, **loans}


def _places(con: sqlite3.Connection) -> list[str]:
    problems = []
    bad = con.execute("select count(*) from copy where status not in "
                      "('in_slot','on_shelf','in_bin','on_loan','in_transit','lost','withdrawn')"
                      ).fetchone()[0]
    if bad:
        problems.append(f"{bad} copies in no known place")
    twice = con.execute("select copy, count(*) from loan where returned_at is null "
                        "group by copy having count(*) > 1").fetchall()
    if twice:
        problems.append(f"copies on loan twice: {twice[:5]}")
    mismatch = con.execute(
        "select count(*) from copy c where (c.status = 'on_loan') != exists("
        "select 1 from loan l where l.copy = c.barcode and l.returned_at is null)").fetchone()[0]
    if mismatch:
        problems.append(f"{mismatch} copies whose status disagrees with their loans")
    return problems


def _span(seqs: list[int]) -> str:
    if not seqs:
        return "none"
    return f"{seqs[0]}..{seqs[-1]} ({len(seqs)} rows)"


def run_chaos(duration: float, workdir: Path, seed: int = 1) -> Verdict:
    """Set up, run, judge and print; used by `kitap chaos` and the tests."""
    shutil.rmtree(workdir, ignore_errors=True)
    chaos = Chaos(workdir, seed=seed)
    try:
        chaos.start()
        print(f"chaos: {len(NODES)} nodes up; {duration:.0f}s of readers and faults", flush=True)
        verdict = chaos.run(duration)
    finally:
        chaos.close()
    f = verdict.figures
    print(f"\noperations: {f.get('operations')}\nfaults injected: {f.get('faults')}\n"
          f"events written: {f.get('events')} {f.get('per_node')}\n"
          f"converged after healing in: {f.get('converge_s')} s")
    print("VERDICT: " + ("nothing lost, nothing doubled, every copy in one place, "
                         "the cloud equals the oracle" if verdict.ok else
                         "FAILED\n  " + "\n  ".join(verdict.problems)), flush=True)
    return verdict
