"""`make bench`: build the city, measure every figure, print the table, keep it as JSON.

    .venv/bin/python -m bench.run            # fast: the city at 1/20, a minute or two
    .venv/bin/python -m bench.run --full     # the city at full size (~20 minutes)
    .venv/bin/python -m bench.run --only apply,edge

Parts: ``apply`` (SQLite apply rate and both ceilings), ``network`` (catch-up,
blocks, console, bootstrap; on the SQLite city), ``pg`` (PostgreSQL apply rate
and store ceiling), ``edge`` (checkout latency and memory).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from bench import apply as ap
from bench.generate import CITY, Shape, card, generate, is_blocked
from bench.profile import summarize
from bench.report import (
    RESULTS,
    CpuMeter,
    Figure,
    Run,
    machine_speed,
    markdown,
    median,
    others_busy,
    previous,
)
from bench.report import table as render_table
from bench.traffic import Traffic, batches
from cloud import store as cs
from edge.sync import BATCH_SIZE

logger = logging.getLogger("bench")

PARTS = ("apply", "network", "catchup", "pg", "edge")
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_CATCHUP_EVENTS = 20_000
TARGET_BOOTSTRAP_READERS = 500_000
# How long the nodes' feed may take to be current again after a catch-up before
# the bench stops waiting and says so.
FEED_AFTER_TIMEOUT = 300.0
# How long the cloud may take to finish what a bootstrap left it before the catch-up.
CLOUD_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Plan:
    """How much of everything a mode measures."""

    mode: str
    shape: Shape
    apply_runs: int
    apply_events: int
    catchup_runs: int
    catchup_events: int
    blocks: int
    console_requests: int
    edge_copies: int
    checkouts: int
    catchup_timeout: float = 600.0      # a catch-up still running then is reported as such
    feed_after_catchup: bool = True     # wait for every node's feed after the last catch-up


FAST = Plan("fast", CITY.scaled(1 / 20), apply_runs=3, apply_events=1_000, catchup_runs=1,
            catchup_events=300, blocks=4, console_requests=30, edge_copies=60_000,
            checkouts=300, catchup_timeout=120.0, feed_after_catchup=False)
# One catch-up at full size: a round takes minutes, the feed after it more.
FULL = Plan("full", CITY, apply_runs=3, apply_events=5_000, catchup_runs=1,
            catchup_events=TARGET_CATCHUP_EVENTS, blocks=10, console_requests=100,
            edge_copies=60_000, checkouts=2_000, catchup_timeout=600.0)


def say(text: str) -> None:
    """A progress line for the person waiting."""
    click.echo(f"[bench {time.strftime('%H:%M:%S')}] {text}", err=True)


def _mb(mib: float) -> float:
    return mib * 2**20 / 1e6


class Bench:
    """One run: the plan, the work directory, and the figures found so far."""

    def __init__(self, plan: Plan, workdir: Path, pg_admin: str, parts: set[str],
                 reuse: bool = False) -> None:
        self.plan, self.workdir, self.pg_admin, self.parts = plan, workdir, pg_admin, parts
        self.reuse = reuse
        self.run = Run(plan.mode)
        self.run.shape = asdict(plan.shape)
        self.profiles = workdir / "profiles"
        self.sqlite_url = f"sqlite:///{workdir / 'city.db'}"
        self.traffic: Traffic | None = None
        self.broker_rate: list[float] = []
        self.nodes: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------

    def measured(self, fig: Figure, fn: Callable[[], None]) -> None:
        """Run one figure's measurement; a failure is written down, never fatal."""
        meter = CpuMeter()
        try:
            fn()
        except Exception as exc:
            logger.debug("figure %s failed", fig.key, exc_info=True)
            fig.shown = fig.shown or "failed"
            fig.note = f"{type(exc).__name__}: {exc}"
            self.run.notes.append(f"{fig.name}: failed: {exc}\n{traceback.format_exc()[-1500:]}")
            say(f"{fig.name}: FAILED: {exc}")
        fig.load = meter.stop()

    def profile(self, key: str, path: Path, root: str | None, title: str) -> None:
        """Keep a py-spy summary in the run."""
        summary = summarize(path, root=root)
        if summary.samples:
            self.run.profiles[key] = {"title": title, **summary.as_dict()}

    def _fresh_sqlite(self) -> None:
        path = self.workdir / "city.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    # -- the SQLite city and the apply rate ------------------------------------------------

    def city_sqlite(self) -> None:
        """Generate the city in a fresh SQLite file (bound as the cloud store afterwards)."""
        if self.reuse and (self.workdir / "city.db").exists():
            say("reusing the city of the last run (--reuse)")
            cs.connect(self.sqlite_url)
            self.traffic = Traffic(self.plan.shape).load()
            self.nodes = dict(self.traffic.kind)
            return
        self._fresh_sqlite()
        fig = self.run.figure("generate_sqlite", "City generated, SQLite", "minutes")

        def go() -> None:
            say(f"generating the city in SQLite: {self.plan.shape.describe()}")
            g = generate(self.sqlite_url, self.plan.shape)
            self.run.generated["sqlite"] = {"counts": g.counts, "seconds": g.seconds}
            size = (self.workdir / "city.db").stat().st_size / 1e6
            fig.set(g.total_seconds, f"{g.total_seconds:.0f} s ({size:,.0f} MB)", None,
                    counts=g.counts, seconds=g.seconds, megabytes=size)
        self.measured(fig, go)
        self.traffic = Traffic(self.plan.shape).load()
        self.nodes = dict(self.traffic.kind)

    def apply_figures(self, label: str, key: str, broker: bool) -> None:
        """Apply rate and store ceiling (and the broker's) on the bound store, run by run."""
        assert self.traffic is not None
        plan = self.plan
        fig = self.run.figure(f"apply_{key}", f"Cloud apply rate, one process, {label}",
                              ">= 20,000 events/s")
        store = self.run.figure(f"ceiling_store_{key}",
                                f"  ceiling: {label} writing the same rows", "-")
        bfig = self.run.figure("ceiling_broker", "  ceiling: broker + client, no processing",
                               "-") if broker else None
        ratio = self.run.figure(f"ratio_{key}", f"  apply rate / lower ceiling, {label}",
                                ">= 0.5")

        def go() -> None:
            rates, ceilings, ratios, decode = [], [], [], []
            for i in range(plan.apply_runs):
                bs = batches(self.traffic.round(plan.apply_events))
                last = i == plan.apply_runs - 1
                spy_path = self.profiles / f"apply-{key}.txt"
                if last:
                    from bench.profile import Spy

                    with Spy(os.getpid(), spy_path):
                        r = ap.apply(bs)
                else:
                    r = ap.apply(bs)
                c = ap.store_ceiling(bs, self.traffic.kind, self.traffic.closed)
                lower = c.rate
                if broker:
                    b = ap.broker_ceiling(bs, self.broker_port(), self.workdir)
                    self.broker_rate.append(b.rate)
                    lower = min(lower, b.rate)
                elif self.broker_rate:
                    lower = min(lower, median(self.broker_rate))
                rates.append(r.rate)
                ceilings.append(c.rate)
                ratios.append(r.rate / lower)
                decode.append(r.decode_seconds / r.seconds)
                say(f"{label}: run {i + 1}: applied {r.rate:,.0f} events/s, store ceiling "
                    f"{c.rate:,.0f}/s" + (f", broker {self.broker_rate[-1]:,.0f}/s"
                                           if broker else ""))
            self.profile(f"apply_{key}", self.profiles / f"apply-{key}.txt",
                         "apply (bench/apply.py)", f"apply, {label} (one run, in process)")
            fig.runs, store.runs, ratio.runs = rates, ceilings, ratios
            rate = median(rates)
            fig.set(rate, f"{rate:,.0f} events/s", rate >= 20_000,
                    events_per_run=plan.apply_events, batch=BATCH_SIZE,
                    decode_share=round(median(decode), 3))
            store.set(median(ceilings), f"{median(ceilings):,.0f} events/s", None)
            if bfig is not None:
                bfig.runs = list(self.broker_rate)
                bfig.set(median(self.broker_rate), f"{median(self.broker_rate):,.0f} events/s",
                         None)
            ratio.set(median(ratios), f"{median(ratios):.2f}", median(ratios) >= 0.5)
        self.measured(fig, go)

    _broker: Any = None

    def broker_port(self) -> int:
        """A broker of our own for the ceiling (started once)."""
        from kitap.procs import Mosquitto

        if self._broker is None:
            self._broker = Mosquitto(self.workdir / "ceiling-broker").start()
        return int(self._broker.port)

    # -- the network ------------------------------------------------------------------------

    def network(self) -> None:
        """Blocks, console and a fresh node's bootstrap on a quiet network; then the catch-up."""
        from bench import network as nw
        from bench.edge_bench import bootstrap_stages

        assert self.traffic is not None
        plan = self.plan
        block = self.run.figure("block_p99", "A block reaching all 52 online nodes: p99", "< 1 s")
        net = nw.Network(self.workdir, self.sqlite_url, self.nodes)
        try:
            net.broker.start()
            say("starting the cloud process and 52 nodes")
            net.start_cloud()
            from cloud import feed as cfeed

            net.agents.start(dict(self.traffic.seq), cfeed.current_rev())
            nw.wait_feed_current(net, cfeed.current_rev(), timeout=120)
            if "network" not in self.parts:   # the catch-up alone
                self.catch_up(net)
                return

            def propagate() -> None:
                cards = [card(i) for i in range(7, self.plan.shape.readers, 997)
                         if not is_blocked(self.plan.shape, i)][: plan.blocks]
                r = nw.blocks(net, cards)
                block.set(r["p99"], f"{r['p99']:.2f} s (p50 {r['p50']:.2f} s, "
                          f"{r['samples']} arrivals)", r["p99"] < 1 and not r["missing"], **r,
                          agents="52 bench.agent processes: EdgeStore + SyncAgent each")
                say(f"blocks: p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s")
            self.measured(block, propagate)
            self.console(net)
            self.bootstrap(net)
            # A bootstrap leaves the cloud answering the snapshot requests it
            # repeated; the catch-up starts when that work is done.
            idle = nw.wait_cloud_idle(net, CLOUD_IDLE_TIMEOUT)
            self.run.notes.append(f"before the catch-up the cloud's queue took {idle:.0f} s "
                                  "to empty" if idle is not None else "the catch-up started "
                                  "with the cloud still busy (its queue did not empty)")
            self.catch_up(net)
        finally:
            net.stop()
        stages = self.run.figure("bootstrap_stages",
                                 "  stages: snapshot + encode + decode + apply", "-")

        def staged() -> None:
            r = bootstrap_stages(self.workdir, "b-02")
            stages.set(r["total_seconds"], " + ".join(
                f"{r[k]:.1f}" for k in ("build_seconds", "encode_seconds", "decode_seconds",
                                        "apply_seconds")) + f" s ({r['items']:,} items, "
                       f"{r['mib']:.0f} MiB)", None, **r)
        self.measured(stages, staged)

    def catch_up(self, net: Any) -> None:
        """The broker goes down, the nodes work on, the broker comes back: how long to whole."""
        from bench import network as nw
        from cloud import feed as cfeed

        assert self.traffic is not None
        plan = self.plan
        catch = self.run.figure(
            "catchup", f"Cloud catch-up, 52 nodes, {plan.catchup_events:,} events queued",
            "< 3 s for 20,000")
        feed = self.run.figure("feed_current", "  then the feed current again at every node", "-")

        def go() -> None:
            runs, details = [], []
            for i in range(plan.catchup_runs):
                last = i == plan.catchup_runs - 1
                spy = self.profiles / "catchup-cloud.txt" if last else None
                r = nw.catch_up(net, self.traffic, plan.catchup_events, spy,
                                timeout=plan.catchup_timeout)
                details.append(r)
                if not r["finished"]:
                    say(f"catch-up {i + 1}: not finished after {r['seconds']:.0f} s: "
                        f"{r['applied']:,.0f} of {r['events']:,.0f} events applied")
                    break
                runs.append(r["seconds"])
                say(f"catch-up {i + 1}: {r['events']:,.0f} events applied and acknowledged "
                    f"{r['seconds']:.1f} s after the broker came back (last node connected "
                    f"at {r['last_connected']:.1f} s)")
                if last and not plan.feed_after_catchup:
                    break
                t = nw.wait_feed_current(net, cfeed.current_rev(), timeout=FEED_AFTER_TIMEOUT)
                if t is None:
                    break
                feed.runs.append(t)
                say(f"  every node's feed current {t:.1f} s later")
            self.profile("catchup", self.profiles / "catchup-cloud.txt",
                         "process (cloud/consumer.py)", "the cloud process's ingest worker "
                         "during a catch-up (py-spy)")
            catch.detail["rounds"] = details
            if not runs:
                r = details[-1]
                rate = r["applied"] / r["seconds"]
                catch.set(None, f"not done after {r['seconds']:.0f} s: {r['applied']:,.0f} of "
                          f"{r['events']:,.0f} applied ({rate:,.0f}/s)", False,
                          events_per_second=rate)
            else:
                s = median(runs)
                scaled = s * TARGET_CATCHUP_EVENTS / plan.catchup_events
                shown = f"{s:.1f} s"
                if plan.catchup_events != TARGET_CATCHUP_EVENTS:
                    shown += f" (≈ {scaled:.0f} s for 20,000 at that rate)"
                catch.runs = runs
                catch.set(s, shown, scaled < 3, events_per_second=median(
                    [d["events"] / d["seconds"] for d in details if d["finished"]]))
            if feed.runs:
                feed.set(median(feed.runs), f"{median(feed.runs):.1f} s", None)
            else:
                feed.set(None, "not measured" if plan.feed_after_catchup is False
                         else "not reached", None)
        self.measured(catch, go)

    def console(self, net: Any) -> None:
        """The console's pages at city scale."""
        from bench import network as nw

        figs = {name: self.run.figure(f"console_{i}", f"Console: {name}, p95", "< 100 ms")
                for i, (name, _) in enumerate(nw.CONSOLE_PAGES)}
        first = next(iter(figs.values()))

        def go() -> None:
            barcodes = [f"C{i:07d}" for i in range(1, self.plan.shape.copies, 4999)]
            r = nw.console(net.cloud_url, barcodes, "b-01", self.plan.console_requests)
            for name, fig in figs.items():
                res = r[name]
                if not res["built"]:
                    fig.set(None, "not yet built", None)
                elif not res.get("measured", True):
                    fig.set(None, f"{res['path']}: not measured", None)
                else:
                    fig.set(res["p95_ms"], f"{res['p95_ms']:.0f} ms ({res['path']})",
                            res["p95_ms"] < 100, **res)
        self.measured(first, go)

    def bootstrap(self, net: Any) -> None:
        """A fresh branch joins the running network."""
        from bench import network as nw

        fig = self.run.figure("bootstrap", "Bootstrap of a fresh node", "< 20 s")

        def go() -> None:
            # The new machine replaces b-03's: one process per MQTT client id.
            assert self.traffic is not None
            from cloud import feed as cfeed

            net.agents.stop_one("b-03")
            try:
                r = nw.bootstrap(net, "b-03", "branch", self.profiles)
            finally:
                mark = net.agents.mark()
                net.agents.spawn("b-03", self.traffic.seq["b-03"], cfeed.current_rev())
                net.agents.wait_ready(["b-03"], mark)
            readers = self.plan.shape.readers
            scaled = r["seconds"] * TARGET_BOOTSTRAP_READERS / readers
            shown = f"{r['seconds']:.1f} s for {readers:,} readers"
            if not r["finished"]:
                shown = f"not done after {r['seconds']:.0f} s ({readers:,} readers)"
            elif readers != TARGET_BOOTSTRAP_READERS:
                shown += f" (≈ {scaled:.0f} s for 500,000)"
            shown += f", {r['snapshots_sent']} snapshots sent"
            fig.set(r["seconds"], shown, r["finished"] and scaled < 20, **r)
            self.profile("bootstrap_edge", self.profiles / "bootstrap-edge.txt",
                         "_feed_loop (edge/sync.py)",
                         "the fresh node's feed thread during its bootstrap (py-spy)")
            self.profile("bootstrap_cloud", self.profiles / "bootstrap-cloud.txt",
                         "process (cloud/consumer.py)",
                         "the cloud's worker answering the snapshot (py-spy)")
        self.measured(fig, go)

    # -- PostgreSQL -------------------------------------------------------------------------

    def postgres(self) -> None:
        """The same city and apply runs on PostgreSQL, in a database of our own."""
        import psycopg2

        name = f"kitap_bench_{os.getpid()}"
        fig = self.run.figure("generate_pg", "City generated, PostgreSQL", "minutes")
        try:
            admin = psycopg2.connect(self.pg_admin)
        except psycopg2.Error as exc:
            fig.set(None, "no PostgreSQL", None)
            fig.note = str(exc).strip()
            say(f"PostgreSQL not reachable ({exc}); skipping its figures")
            return
        admin.autocommit = True
        url = self.pg_admin.rsplit("/", 1)[0] + f"/{name}"
        try:
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')

            def go() -> None:
                say(f"generating the city in PostgreSQL ({name})")
                g = generate(url, self.plan.shape)
                self.run.generated["postgresql"] = {"counts": g.counts, "seconds": g.seconds}
                fig.set(g.total_seconds, f"{g.total_seconds:.0f} s", None, counts=g.counts,
                        seconds=g.seconds)
            self.measured(fig, go)
            self.traffic = Traffic(self.plan.shape).load()
            self.apply_figures("PostgreSQL", "pg", broker=False)
        finally:
            if cs.db.obj is not None and cs.is_postgres():
                cs.db.close()
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()

    # -- the edge -----------------------------------------------------------------------------

    def edge(self) -> None:
        """Checkout latency and memory at a node with every reader of the city."""
        from bench.edge_bench import checkout

        plan = self.plan
        fig = self.run.figure("checkout", "Edge checkout, API call to committed loan + outbox",
                              "p99 < 5 ms")
        mem = self.run.figure("edge_rss", "Edge memory (RSS), idle / under load", "< 150 MB")

        def go() -> None:
            r = checkout(self.workdir, CITY, copies=plan.edge_copies, calls=plan.checkouts,
                         spy_dir=self.profiles)
            fig.set(r["p99_ms"], f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
                    r["p99_ms"] < 5 and not r["refused"], **r)
            idle, load = _mb(r["rss_idle_mib"]), _mb(r["rss_load_mib"])
            mem.set(max(idle, load), f"{idle:.0f} MB / {load:.0f} MB", max(idle, load) < 150,
                    idle_mb=idle, load_mb=load, peak_mb=_mb(r["rss_peak_mib"]))
            self.profile("checkout_request", self.profiles / "edge-checkout.txt",
                         "wsgi_app (flask/app.py)", "one checkout request in the edge process "
                         "(py-spy, werkzeug thread)")
        self.measured(fig, go)
        mem.load = fig.load

    # -- the whole run ----------------------------------------------------------------------------

    def go(self) -> Run:
        """Every selected part, in an order that reuses what the last one built."""
        self.profiles.mkdir(parents=True, exist_ok=True)
        self.run.host["speed_at_start"] = machine_speed(self.workdir)
        busy = others_busy()
        if busy:
            self.run.notes.append("other work on the machine at the start: " + "; ".join(busy))
        try:
            if self.parts & {"apply", "network", "catchup"}:
                self.city_sqlite()
                if "apply" in self.parts:
                    self.apply_figures("SQLite", "sqlite", broker=True)
                if self.parts & {"network", "catchup"}:
                    self.network()
            if "pg" in self.parts:
                self.postgres()
            if "edge" in self.parts:
                self.edge()
        finally:
            if self._broker is not None:
                self._broker.stop()
        busy = others_busy()
        if busy:
            self.run.notes.append("other work on the machine at the end: " + "; ".join(busy))
        self.run.host["speed_at_end"] = machine_speed(self.workdir)
        return self.run


@click.command()
@click.option("--full", is_flag=True, help="The city at full size (default: at 1/20).")
@click.option("--only", default=",".join(PARTS), show_default=True,
              help="Comma-separated parts to run.")
@click.option("--workdir", default=str(RESULTS / "tmp"), show_default=True,
              help="Databases, logs and raw profiles (wiped of the last run's databases).")
@click.option("--pg", "pg_admin", default=PG_ADMIN_URL, show_default=True,
              help="A PostgreSQL database to connect to; the bench creates and drops its own.")
@click.option("--save/--no-save", default=True, help="Write the run to bench/results/.")
@click.option("--reuse", is_flag=True,
              help="Use the SQLite city the last run left in the work directory.")
@click.option("-v", "--verbose", is_flag=True)
def main(full: bool, only: str, workdir: str, pg_admin: str, save: bool, reuse: bool,
         verbose: bool) -> None:
    """Measure kitap's figures against its targets and print the table."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = {p.strip() for p in only.split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise click.BadParameter(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    # SIGTERM unwinds like Ctrl-C, so the broker, cloud and nodes we started stop too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    plan = FULL if full else FAST
    wd = Path(workdir)
    if wd.exists():
        for sub in ("agents", "outboxes", "broker", "profiles"):
            shutil.rmtree(wd / sub, ignore_errors=True)
    wd.mkdir(parents=True, exist_ok=True)
    say(f"{plan.mode} run ({', '.join(sorted(parts))}); work files in {wd}")
    bench = Bench(plan, wd, pg_admin, parts, reuse)
    try:
        run = bench.go()
    except (KeyboardInterrupt, SystemExit):
        run = bench.run
        run.notes.append("interrupted: the figures after the last one shown were not measured")
        if save:
            say(f"interrupted; the figures so far are in {run.save()}")
        raise
    prev = previous(plan.mode, before=run.started)
    click.echo("")
    click.echo(f"kitap benchmarks, {plan.mode}: {plan.shape.describe()}")
    click.echo(f"machine: {run.host['cpus']} cores, {run.host['memory_mib'] / 1024:.0f} GiB; "
               f"load at start {run.host['loadavg_at_start']}; python yardstick "
               f"{run.host['speed_at_start']['python_ms']:.0f} -> "
               f"{run.host['speed_at_end']['python_ms']:.0f} ms, fsync "
               f"{run.host['speed_at_start']['fsync_ms']:.1f} ms; code {run.host['code']}")
    click.echo(render_table(run, prev))
    for key, prof in run.profiles.items():
        click.echo("")
        click.echo(f"profile {key}: {prof['title']}, {prof['samples']} samples")
        for func, pct in prof["inclusive"][:8]:
            click.echo(f"  {pct:5.1f} %  {func}")
    for note in run.notes:
        click.echo(f"note: {note.splitlines()[0]}")
    if save:
        path = run.save()
        click.echo(f"\nsaved {path}")
        (RESULTS / "tmp").mkdir(parents=True, exist_ok=True)
        (RESULTS / "tmp" / f"latest-{plan.mode}.md").write_text(markdown(run) + "\n")
    failed = [f for f in run.figures if f.shown == "failed"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

