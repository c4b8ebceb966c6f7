"""A vending machine node end to end: simulator on a pty, edge with its driver, cloud, broker."""
from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.control import ControlClient
from kitap.procs import http_json, start_firmware_sim, wait_for
from tests.conftest import NODES, api, seed_edge

pytestmark = pytest.mark.integration

SLOTS = 6


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path may not.
    d = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def machine(tmp_path: Path, broker, network, sockdir: Path):
    """m-test with copies C00001..C00005 in slots 1..5; returns (edge URL, cloud URL, control)."""
    fund = {"titles": [{"id": "T001", "title": "Абай жолы", "item_type": "book"}],
            "copies": [{"barcode": f"C{i:05d}", "title_id": "T001", "slot": i}
                       for i in range(1, 6)],
            "readers": [{"card": "R0001", "name": "Айгерим"}, {"card": "R0002", "name": "Нурлан"}],
            "node": ["m-test"]}
    state = tmp_path / "sim.json"
    slots = {str(i): None for i in range(1, SLOTS + 1)}
    slots.update({str(i): f"C{i:05d}" for i in range(1, 6)})
    state.write_text(json.dumps({"slots": slots, "bin": [], "bin_capacity": 10}))
    control = str(sockdir / "m.sock")
    sim, pty = start_firmware_sim("m-test-sim", tmp_path, state=state, slots=SLOTS,
                                  control=control, auto_take=0.2)
    network.procs.append(sim)
    broker.start()
    cloud = network.cloud(_seed_cloud(tmp_path / "cloud.db", fund))
    edge = network.edge("m-test", "machine", seed_edge(tmp_path / "edge.db", "m-test", fund),
                        serial=pty)
    # Online and reconciled: what the controller's last handshake left open is settled.
    wait_for(lambda: api("GET", edge + "/api/machine/status")[1]["ready"], 15,
             what="controller online and reconciled")
    return edge, cloud, ControlClient(control), state


def _seed_cloud(path: Path, fund: dict) -> str:
    """The cloud's fund: the machine's copies in its slots, C00007 on a branch's shelf."""
    from cloud import store

    store.connect(f"sqlite:///{path}")
    store.seed(nodes=NODES, titles=fund["titles"], readers=fund["readers"],
               copies=[{**c, "home_node": "m-test", "status": "in_slot",
                        "location_node": "m-test"} for c in fund["copies"]]
               + [{"barcode": "C00007", "title_id": "T001", "home_node": "b-test",
                   "status": "on_shelf", "location_node": "b-test"}])
    store.db.close()
    return f"sqlite:///{path}"


def _exceptions(cloud_db: Path) -> list[tuple[str, str | None, bool]]:
    """The cloud's staff exceptions: (kind, copy, open), read from its SQLite file."""
    with sqlite3.connect(f"file:{cloud_db}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT kind, copy, closed_at IS NULL FROM staffexception "
                            "ORDER BY id").fetchall()
    return [(k, c, bool(o)) for k, c, o in rows]


def _cloud_node(cloud: str, node: str = "m-test") -> dict:
    """The node as the cloud knows it from its retained MQTT status (/api/summary)."""
    return next(n for n in api("GET", cloud + "/api/summary")[1]["nodes"] if n["id"] == node)


def _checkout_unless_no_card(edge: str, card: str, copy: str):
    """POST a checkout; None while the presented card has not reached the node yet."""
    code, body = api("POST", edge + "/api/checkout", {"reader": card, "copy": copy})
    if code == 409 and body["errors"]["refusal"] == "no_card":
        return None
    return code, body


def test_card_dispense_loan_and_return_at_the_chute(machine) -> None:
    edge, cloud, ctl, state = machine
    # Without a card in the reader nothing is dispensed.
    code, body = api("POST", edge + "/api/checkout", {"reader": "R0001", "copy": "C00002"})
    assert code == 409 and body["errors"]["refusal"] == "no_card"
    assert json.loads(state.read_text())["slots"]["2"] == "C00002"

    ctl.present_card("R0001")
    code, body = wait_for(lambda: _checkout_unless_no_card(edge, "R0001", "C00002"), 10,
                          what="checkout once the card reached the node")
    assert code == 201, body
    assert body["copy"] == "C00002" and body["title"] == "Абай жолы" and body["due"]
    reader = api("GET", edge + "/api/readers/R0001")[1]
    assert [ln["copy"] for ln in reader["loans"]] == ["C00002"]
    assert json.loads(state.read_text())["slots"]["2"] is None   # the book left the machine
    wait_for(lambda: api("GET", cloud + "/api/copies/C00002")[1]["status"] == "on_loan",
             20, what="cloud sees the loan")

    # The reader returns it in the chute: it drops into the bin, the loan closes.
    reply = ctl.insert_return("C00002")
    assert reply["outcome"] == "accepted"
    assert "C00002" in json.loads(state.read_text())["bin"]
    wait_for(lambda: api("GET", cloud + "/api/copies/C00002")[1]["status"] == "in_bin",
             20, what="cloud sees the return")
    copy = api("GET", cloud + "/api/copies/C00002")[1]
    assert copy["location_node"] == "m-test"
    assert [ln["close_reason"] for ln in copy["loans"]] == ["returned"]


def test_a_jam_makes_no_loan_and_the_book_stays_in_its_slot(machine) -> None:
    edge, cloud, ctl, state = machine
    ctl.present_card("R0002")
    ctl.fault("jam")
    code, body = wait_for(lambda: _checkout_unless_no_card(edge, "R0002", "C00003"), 10,
                          what="checkout once the card reached the node")
    assert code == 409 and body["errors"]["refusal"] == "jam"
    assert json.loads(state.read_text())["slots"]["3"] == "C00003"
    assert api("GET", edge + "/api/readers/R0002")[1]["loans"] == []
    # No loan event; the fault itself goes to the cloud, where staff see it.
    status = api("GET", edge + "/api/status")[1]
    assert status["last_seq"] == 1
    # The node's status says which slot jammed, and the slot is no longer offered.
    assert [(f["kind"], f["slot"]) for f in status["machine"]["faults"]] == [("jam", 3)]
    cloud_db = state.parent / "cloud.db"
    wait_for(lambda: ("device_fault.jam", None, True) in _exceptions(cloud_db), 20,
             what="the jam in the cloud's exceptions")
    assert api("GET", cloud + "/api/copies/C00003")[1]["status"] == "in_slot"
    # The retained MQTT status carries the fault and the hardware to the cloud.
    node = wait_for(lambda: (n := _cloud_node(cloud))["faults"] and n, 20,
                    what="the jam in the node's status at the cloud")
    assert node["faults"] == ["jam (slot 3)"]
    assert node["machine"] == {"controller_online": True, "slots": SLOTS, "bin": 0,
                               "bin_capacity": 10, "returns_open": True, "door": "closed"}


def test_a_technicians_visit_reaches_the_cloud(machine) -> None:
    edge, cloud, ctl, state = machine
    # The technician unlocks the door through the node (staff only), then opens it.
    status = api("GET", edge + "/api/machine/status")[1]
    assert (status["online"], status["door"], status["door_locked"]) == (True, "closed", True)
    code, body = http_json("POST", edge + "/api/machine/service-door/unlock", {})
    assert code == 401, body
    code, body = api("POST", edge + "/api/machine/service-door/unlock", {"seconds": 60})
    assert code == 200, body
    assert ctl.state()["locked"] is False
    ctl.open_door()
    assert ctl.remove(1) == "C00001"   # taken away by the technician
    ctl.load(6, "C00007")              # brought from the branch b-test
    ctl.close_door()
    wait_for(lambda: api("GET", cloud + "/api/copies/C00007")[1]["status"] == "in_slot", 20,
             what="the cloud sees the load")
    c7 = api("GET", cloud + "/api/copies/C00007")[1]
    assert (c7["location_node"], c7["slot"]) == ("m-test", 6)
    c1 = api("GET", cloud + "/api/copies/C00001")[1]
    assert (c1["status"], c1["location_node"]) == ("in_transit", None)
    # The cloud had C00007 on b-test's shelf: staff hear of it. The audit found nothing else.
    assert _exceptions(state.parent / "cloud.db") == [("copy_was_elsewhere", "C00007", True)]
