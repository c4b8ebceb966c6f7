"""The `kitap admin`, `kitap staff` and `kitap firmware-sim-ctl` commands do what staff (and a
person at a demo machine) expect, and refuse clearly."""
from __future__ import annotations

import getpass
import json
import signal
import socket
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloud import feed
from cloud import store as cs
from edge import store as es
from kitap.cli import main
from tests.machine_bench import Bench, bench_for, events_of, wait_until


def test_admin_block_reaches_the_feed_and_unknown_card_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[], titles=[], copies=[], readers=[{"card": "R1", "name": "Айгерим"}])
    cs.db.close()
    runner = CliRunner()
    ok = runner.invoke(main, ["admin", "--db", url, "block", "R1", "--reason", "lost card"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(main, ["admin", "--db", url, "block", "R9", "--reason", "x"])
    assert bad.exit_code != 0 and "no reader with card R9" in bad.output
    cs.connect(url)
    try:
        assert cs.Reader.get_by_id("R1").blocked_reason == "lost card"
        change = feed.changes_for("m-any", 0)["changes"][-1]
        assert change["entity"] == "reader" and change["data"]["blocked_reason"] == "lost card"
    finally:
        cs.db.close()


def test_staff_decisions_from_the_command_line_are_in_the_audit_trail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[{"id": "b-1", "kind": "branch", "name": "B"}],
            titles=[{"id": "T1", "title": "Абай жолы", "author": "Әуезов"}],
            copies=[{"barcode": "C1", "title_id": "T1", "home_node": "b-1",
                     "location_node": "b-1", "status": "on_shelf"},
                    {"barcode": "C2", "title_id": "T1", "home_node": "b-1",
                     "location_node": "b-1", "status": "on_shelf"}],
            readers=[{"card": "R1", "name": "Айгерим", "fees_owed": 5000}])
    cs.db.close()
    runner = CliRunner()
    for args in (["block", "R1", "--reason", "lost card"], ["unblock", "R1"],
                 ["hold", "R1", "T1", "b-1"], ["setting", "offline_cap_loans", "2"],
                 ["waive", "R1", "12.50", "--reason", "first time"],
                 ["withdraw", "C2", "--reason", "worn out"]):
        out = runner.invoke(main, ["admin", "--db", url, *args])
        assert out.exit_code == 0, (args, out.output)
    refused = runner.invoke(main, ["admin", "--db", url, "block", "R9", "--reason", "x"])
    assert refused.exit_code != 0
    cs.connect(url)
    try:
        trail = [(e.actor, e.action, e.target) for e in
                 cs.AuditEntry.select().order_by(cs.AuditEntry.id)]
        assert trail == [("cli", "reader.block", "reader:R1"),
                         ("cli", "reader.unblock", "reader:R1"),
                         ("cli", "hold.place", "reader:R1"),
                         ("cli", "setting.set", "setting:offline_cap_loans"),
                         ("cli", "reader.waive", "reader:R1"),
                         ("cli", "copy.withdraw", "copy:C2")]   # nothing for the refusal
        first = cs.AuditEntry.select().order_by(cs.AuditEntry.id).first()
        assert first.detail == f"lost card · OS user {getpass.getuser()}@{socket.gethostname()}"
        hold = cs.Hold.get(cs.Hold.reader == "R1")
        assert cs.AuditEntry.get(cs.AuditEntry.action == "hold.place").detail.startswith(
            f"T1 at b-1 ({hold.id})")
    finally:
        cs.db.close()


def test_staff_add_refuses_a_short_password(tmp_path: Path) -> None:
    db = str(tmp_path / "edge.db")
    runner = CliRunner()
    bad = runner.invoke(main, ["staff", "--db", db, "add", "desk", "--password", "short"])
    assert bad.exit_code != 0 and "at least 8 characters" in bad.output
    ok = runner.invoke(main, ["staff", "--db", db, "add", "desk", "--password", "long enough"])
    assert ok.exit_code == 0, ok.output
    es.open_db(db)
    try:
        row = es.Staff.get_by_id("desk")
        assert row.password_hash.startswith("scrypt:") and "long enough" not in row.password_hash
    finally:
        es.db.close()


bench = pytest.fixture(bench_for, name="bench")


@pytest.mark.integration
def test_a_person_at_a_terminal_borrows_returns_and_restocks(bench: Bench) -> None:
    """`kitap firmware-sim-ctl` against a real simulator, with a machine node on its line."""
    sim = bench.sim(loaded={1: "C0000001"})
    machine = bench.node({1: "C0000001"})
    runner = CliRunner()

    def ctl(*argv: str) -> Any:
        return runner.invoke(main, ["firmware-sim-ctl", "--control", sim.control, *argv])

    # The reader: card, then a book chosen on the screen (here: the node's own call).
    out = ctl("present-card", "R0001")
    assert out.exit_code == 0 and "R0001" in out.output, out.output
    wait_until(lambda: machine.card_in_session() == "R0001", what="the card at the node")
    lent: list[Any] = []
    dispense = threading.Thread(target=lambda: lent.append(machine.checkout("R0001",
                                                                            "C0000001")))
    dispense.start()
    wait_until(lambda: sim.ctl.state()["delivery"], 10, what="the book in the door")
    out = ctl("take")
    assert out.exit_code == 0 and "took C0000001" in out.output, out.output
    dispense.join(timeout=20)
    assert lent and lent[0].copy == "C0000001"
    assert events_of("loan.checkout")[0][1]["copy"] == "C0000001"

    # ... brings it back in the chute.
    out = ctl("insert-return", "C0000001")
    assert out.exit_code == 0 and out.output.startswith("accepted"), out.output
    assert sim.state()["bin"] == ["C0000001"]
    bad = ctl("insert-return", "SHOP-TAG-1")   # not a library book: handed back, with why
    assert bad.exit_code == 1 and "not a book of the library" in bad.output, bad.output

    # The technician: a locked door is refused with the reason; the key opens it.
    locked = ctl("open-door")
    assert locked.exit_code != 0 and "the service door is locked" in locked.output
    assert ctl("open-door", "--key").exit_code == 0
    assert ctl("load", "2", "C0000002").exit_code == 0
    empty = ctl("remove", "1")
    assert empty.exit_code != 0 and "slot 1 holds no book" in empty.output
    assert ctl("close-door").exit_code == 0
    wait_until(lambda: events_of("stock.loaded"), what="the load recorded by the node")
    assert events_of("stock.loaded")[0][1] == {"copy": "C0000002", "slot": 2}

    assert ctl("fault", "jam").exit_code == 0
    state = json.loads(ctl("state", "--json").output)
    assert state["faults"] == ["jam"] and state["slots"]["2"] == "C0000002"
    human = ctl("state").output
    assert "door:     closed, locked" in human and "    2  C0000002" in human

    # A power cut: the simulator dies at once; what it had saved is kept.
    out = ctl("power-cut")
    assert out.exit_code == 0 and "power cut" in out.output
    sim.proc.wait(timeout=5)
    assert sim.proc.returncode == -signal.SIGKILL
    assert sim.state()["slots"]["2"] == "C0000002" and sim.state()["bin"] == ["C0000001"]
    gone = ctl("state")
    assert gone.exit_code != 0 and "cannot reach the simulator" in gone.output


def test_admin_rejected_lists_what_the_cloud_refused_newest_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    now = cs.utcnow()
    for i, node in enumerate(["m-a", "x-ghost", "m-a"]):
        cs.RejectedMessage.create(topic=f"lib/v1/node/{node}/events", node=node,
                                  reason=f"reason {i}", payload="x" * 500,
                                  received_at=now + timedelta(seconds=i))
    cs.db.close()
    runner = CliRunner()
    out = runner.invoke(main, ["admin", "--db", url, "rejected", "--node", "m-a", "--limit", "1"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "m-a lib/v1/node/m-a/events: reason 2" in lines[0]   # the newest of m-a's
    assert "x" * 200 in lines[1] and "x" * 201 not in lines[1]  # the payload, cut short
    assert lines[-1] == "1 of 2 rejected messages"
    everything = runner.invoke(main, ["admin", "--db", url, "rejected"]).output
    assert "x-ghost" in everything and everything.endswith("3 of 3 rejected messages\n")
    assert runner.invoke(main, ["admin", "--db", url, "rejected", "--limit", "0"]).exit_code == 2


def test_ledger_check_names_payments_with_cards_nobody_registered(tmp_path: Path) -> None:
    from cloud import debts

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[], titles=[], copies=[], readers=[{"card": "R1", "name": "Айгерим"}])
    debts.pay("R1", 100, payment_id="P1", node="b-a", now=cs.utcnow())
    debts.pay("N9", 1_250, payment_id="P2", node="b-a", now=cs.utcnow())
    assert debts.check_ledger() == [("N9", None, -1_250)]
    cs.db.close()
    out = CliRunner().invoke(main, ["admin", "--db", url, "ledger-check"])
    assert out.exit_code == 0, out.output                  # balances agree: no failure
    assert "N9: no such reader" in out.output and "12,50" in out.output
    assert "every balance equals its ledger" in out.output
