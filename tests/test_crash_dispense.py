"""Crash safety at the hardware edge: SIGKILL of the node, power cut of the controller, at ANY step.

The node runs as a real ``kitap edge`` process; it kills itself (SIGKILL) at a
named step of a dispense or a return (``KITAP_MACHINE_CRASH_AT``), and is then
started again on the same SQLite file. The controller runs as a real
simulator; ``--hang-at`` stops it dead at a named step, the test cuts its power
there (SIGKILL) and starts it again on the same state file. Nothing is timed:
each step is reached, then acted on.

After the restart, books and loans must agree: the copy is in its slot and
there is no loan, or it left the machine and there is exactly one loan (and one
``loan.checkout`` event); no intent stays open; a book in the return bin is
checked in exactly once, a book given back to the reader not at all.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kitap.procs import Process, free_port, kitap_command, wait_for, wait_http
from tests.conftest import TOKEN, api, seed_edge
from tests.machine_bench import Bench, Sim, bench_for, machine_state, wait_until

pytestmark = pytest.mark.integration

bench = pytest.fixture(bench_for, name="bench")

COPY, SLOT, CARD = "C0000003", 3, "R0001"
STOCK = {1: "C0000001", 2: "C0000002", SLOT: COPY}
FUND = {"titles": [{"id": "T001", "title": "Абай жолы", "item_type": "book"}],
        "copies": [{"barcode": b, "title_id": "T001", "slot": s} for s, b in STOCK.items()],
        "readers": [{"card": CARD, "name": "Айгерим"}], "node": ["m-test"]}
# Node timings for the test: the same behaviour, shorter waits.
FAST_ENV = {"KITAP_MACHINE_HEARTBEAT": "0.5", "KITAP_MACHINE_RECONNECT": "0.2"}


class Node:
    """A ``kitap edge`` machine process on the bench's link and SQLite file."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.db = bench.dir / "edge.db"
        seed_edge(self.db, "m-test", FUND)
        self.broker = free_port()  # nothing listens: the node works offline
        self.proc: Process | None = None
        self.url = ""
        self.runs = 0

    def start(self, crash_at: str | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = kitap_command("edge", "--node", "m-test", "--kind", "machine",
                             "--db", str(self.db), "--broker", f"127.0.0.1:{self.broker}",
                             "--http", f"127.0.0.1:{port}", "--serial", str(self.bench.link))
        env = {"KITAP_API_TOKEN": TOKEN, **FAST_ENV}
        if crash_at:
            env["KITAP_MACHINE_CRASH_AT"] = crash_at
        self.runs += 1
        self.proc = Process("m-test", argv, self.bench.dir / f"edge-{self.runs}.log",
                            env=env).start()
        wait_http(self.url + "/healthz")
        wait_for(lambda: api("GET", self.url + "/api/status")[1].get("controller_online"),
                 15, what="controller online")

    def checkout_in_background(self) -> threading.Thread:
        """Present the card and POST the checkout from a thread (the node may die in it)."""
        def run() -> None:
            deadline_ok = wait_for(lambda: self._try_checkout(), 15, what="card at the node")
            assert deadline_ok
        t = threading.Thread(target=lambda: _quietly(run), daemon=True)
        self.bench.sims[-1].ctl.present_card(CARD)
        t.start()
        return t

    def _try_checkout(self) -> Any:
        code, body = api("POST", self.url + "/api/checkout", {"reader": CARD, "copy": COPY})
        if code == 409 and body.get("errors", {}).get("refusal") == "no_card":
            return None
        return code, body

    def wait_crashed(self) -> None:
        assert self.proc is not None and self.proc.proc is not None
        assert self.proc.proc.wait(timeout=20) == -9, "the node did not kill itself"
        assert "CRASH at" in self.proc.log.read_text()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the node's SQLite file (read-only, while it runs)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            return list(conn.execute(sql, args).fetchall())

    def settled(self) -> bool:
        """No intent of a dispense or a return is open."""
        return not self.query("SELECT id FROM dispenseintent WHERE state = 'pending'") and \
            not self.query("SELECT id FROM returnintent WHERE state = 'pending'")

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [json.loads(e)["body"] for (e,) in
                self.query("SELECT envelope FROM outbox WHERE type = ? ORDER BY seq", type_)]


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - the node died under the request: expected
        return


@pytest.fixture
def node(bench: Bench) -> Iterator[Node]:
    n = Node(bench)
    yield n
    n.stop()


def books_and_loans_agree(node: Node, sim: Sim) -> bool:
    """Exactly one loan if the copy left the machine, none if it is in its slot. True if lent."""
    wait_until(node.settled, 15, what="every intent settled")
    state = sim.ctl.state()
    assert state["delivery"] is None, "a book still waits in the door"
    loans = node.query("SELECT reader FROM loan WHERE copy = ? AND returned_at IS NULL", COPY)
    events = node.events("loan.checkout")
    in_slot = state["slots"][str(SLOT)] == COPY
    if in_slot:
        assert loans == [] and events == [], "a phantom loan: the book never left its slot"
    else:
        assert loans == [(CARD,)], f"a free book: it left the machine, loans {loans}"
        assert [e["copy"] for e in events] == [COPY]
    return not in_slot


def start_sim(bench: Bench, *args: str, fresh: bool = True) -> Sim:
    if fresh:
        bench.state.write_text(json.dumps(machine_state(6, STOCK)))
    sim = Sim(bench.dir, bench.state, bench.link, *args, slots=6)
    bench.sims.append(sim)
    return sim


# -- the node dies ----------------------------------------------------------------------

# (crash step, simulator options, the reader takes the book while the node is dead,
#  a loan expected)
NODE_CRASHES = [
    ("intent_written", ["--auto-take", "0.3"], False, False),
    ("dispense_acked", ["--auto-take", "0.3"], False, True),
    ("book_in_door", ["--take-timeout", "30"], True, True),
    ("book_in_door", ["--take-timeout", "1"], False, False),
    ("outcome_received", ["--auto-take", "0.3"], False, True),
    ("loan_written", ["--auto-take", "0.3"], False, True),
]


@pytest.mark.parametrize(("step", "sim_args", "take", "lent"), NODE_CRASHES,
                         ids=[f"{c[0]}{'-taken' if c[2] else ''}" for c in NODE_CRASHES])
def test_node_killed_during_a_dispense(bench: Bench, node: Node, step: str,
                                       sim_args: list[str], take: bool, lent: bool) -> None:
    sim = start_sim(bench, *sim_args)
    node.start(crash_at=step)
    node.checkout_in_background()
    node.wait_crashed()
    if step == "book_in_door":
        wait_until(lambda: sim.ctl.state()["delivery"], what="book in the door")
        if take:
            assert sim.ctl.take_item() == COPY  # the reader walks off with it
        else:
            wait_until(lambda: sim.ctl.state()["slots"][str(SLOT)] == COPY, 5,
                       what="untaken book back in its slot")
    node.start()  # the node comes back, with nothing in its environment
    assert books_and_loans_agree(node, sim) is lent


def test_node_killed_before_it_accepts_a_return(bench: Bench, node: Node) -> None:
    sim = start_sim(bench)
    node.start(crash_at="return_intent_written")
    reply = sim.ctl.insert_return("C0000777", timeout=2)
    assert reply["outcome"] in ("timeout", "no_answer")  # the reader has the book back
    node.wait_crashed()
    node.start()
    wait_until(node.settled, 15, what="the return intent settled")
    assert node.events("loan.return") == [] and sim.ctl.state()["bin"] == []


def test_node_killed_after_the_book_dropped_into_the_bin(bench: Bench, node: Node) -> None:
    sim = start_sim(bench)
    node.start(crash_at="return_accepted")
    assert sim.ctl.insert_return("C0000777", timeout=5)["outcome"] == "accepted"
    node.wait_crashed()
    assert node.events("loan.return") == []  # the node died before recording it
    node.start()
    wait_until(node.settled, 15, what="the return intent settled")
    assert [e["copy"] for e in node.events("loan.return")] == ["C0000777"]
    assert sim.ctl.state()["bin"] == ["C0000777"]


# -- the controller loses its power ------------------------------------------------------

# (hang step, simulator options, a loan expected)
POWER_CUTS = [
    ("dispense_received", ["--auto-take", "0.3"], False),
    ("book_in_door", ["--auto-take", "0.3"], False),
    ("dispensed_sent", ["--take-timeout", "30"], False),
    ("book_taken", ["--auto-take", "0.3"], True),
    ("taken_sent", ["--auto-take", "0.3"], True),
    ("book_retracted", ["--take-timeout", "0.5"], False),
]


@pytest.mark.parametrize(("step", "sim_args", "lent"), POWER_CUTS, ids=[c[0] for c in POWER_CUTS])
def test_controller_power_cut_during_a_dispense(bench: Bench, node: Node, step: str,
                                                sim_args: list[str], lent: bool) -> None:
    sim = start_sim(bench, *sim_args, "--hang-at", step)
    node.start()
    node.checkout_in_background()
    sim.wait_log(f"HANG at {step}")
    sim.kill()  # the power cut, exactly there
    again = start_sim(bench, fresh=False)  # the power comes back; same state file, same link
    wait_for(lambda: api("GET", node.url + "/api/status")[1].get("controller_online"), 15,
             what="the node finds the controller again by itself")
    assert books_and_loans_agree(node, again) is lent


def test_controller_power_cut_as_a_return_drops_into_the_bin(bench: Bench, node: Node) -> None:
    sim = start_sim(bench, "--hang-at", "return_binned")
    node.start()
    threading.Thread(target=lambda: _quietly(
        lambda: sim.ctl.insert_return("C0000777", timeout=5)), daemon=True).start()
    sim.wait_log("HANG at return_binned")
    sim.kill()
    again = start_sim(bench, fresh=False)
    assert again.ctl.state()["bin"] == ["C0000777"]  # it is in the bin: it must be checked in
    wait_until(lambda: node.settled() and node.events("loan.return"), 20,
               what="the return recorded after the power came back")
    assert [e["copy"] for e in node.events("loan.return")] == ["C0000777"]
