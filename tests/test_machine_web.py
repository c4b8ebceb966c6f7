"""The machine's HTTP calls (edge/machine_web.py) over a real node and simulator."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask_smorest import Api

from edge import machine_web
from edge.machine import MachineService, Tunables
from tests.machine_bench import Bench, bench_for, events_of, wait_until

pytestmark = pytest.mark.integration

bench = pytest.fixture(bench_for, name="bench")
TOKEN = "machine-web-test-token"
STAFF = {"Authorization": f"Bearer {TOKEN}"}


def app_for(machine: MachineService) -> Flask:
    app = Flask(__name__)
    app.config.update(API_TITLE="test", API_VERSION="v1", OPENAPI_VERSION="3.0.3",
                      OPENAPI_URL_PREFIX="/api", OPENAPI_JSON_PATH="openapi.json",
                      API_TOKEN=TOKEN, SECRET_KEY="test")
    Api(app).register_blueprint(machine_web.api)
    app.extensions["kitap.machine"] = machine
    return app


def test_status_and_a_technicians_visit_over_http(bench: Bench) -> None:
    sim = bench.sim(loaded={1: "C0000001"})
    client = app_for(bench.node({1: "C0000001"})).test_client()
    status: dict[str, Any] = client.get("/api/machine/status").get_json()
    assert (status["online"], status["ready"], status["returns_open"], status["door"]) == \
        (True, True, True, "closed")
    assert status["faults"] == [] and status["controller"]["serial"] == sim.ctl.state()["serial"]
    # Only staff unlock the door.
    assert client.post("/api/machine/service-door/unlock", json={}).status_code == 401
    assert sim.ctl.state()["locked"] is True
    assert client.post("/api/machine/service-door/unlock", json={"seconds": 30},
                       headers=STAFF).status_code == 200
    assert sim.ctl.state()["locked"] is False
    sim.ctl.open_door()
    sim.ctl.load(2, "C0000002")
    sim.ctl.close_door()
    wait_until(lambda: events_of("stock.loaded"), what="the load recorded")
    assert events_of("stock.loaded") == [("stock.loaded", {"copy": "C0000002", "slot": 2})]
    # Staff close returns; the kiosk and the status say so, with the reason.
    reply = client.post("/api/machine/returns", json={"open": False}, headers=STAFF).get_json()
    assert reply == {"returns_open": False,
                     "returns_closed_reason": "returns are closed at this machine"}
    assert sim.ctl.insert_return("C0000777", timeout=2)["outcome"] == "refused"
    assert client.post("/api/machine/audit", headers=STAFF).get_json() == \
        {"loaded": [], "removed": [], "missing": []}
    bad = client.post("/api/machine/service-door/unlock", json={"seconds": 0}, headers=STAFF)
    assert bad.status_code == 422
    assert "/api/machine/status" in client.get("/api/openapi.json").get_json()["paths"]


def test_an_offline_machine_says_so(bench: Bench) -> None:
    sim = bench.sim()
    machine = bench.node({})
    client = app_for(machine).test_client()
    sim.kill()
    wait_until(lambda: not client.get("/api/machine/status").get_json()["online"],
               what="offline in the status")
    status = client.get("/api/machine/status").get_json()
    assert status["returns_closed_reason"] == "the machine is offline"
    assert status["problem"]
    reply = client.post("/api/machine/service-door/unlock", json={}, headers=STAFF)
    assert reply.status_code == 409 and "offline" in reply.get_json()["message"]


def test_the_public_status_does_not_name_the_reader(bench: Bench) -> None:
    sim = bench.sim(loaded={1: "C0000001"})
    client = app_for(bench.node({1: "C0000001"})).test_client()
    sim.ctl.present_card("R0001")
    wait_until(lambda: client.get("/api/machine/status").get_json()["session"],
               what="the card in session")
    reply = client.get("/api/machine/status")
    assert reply.get_json()["session"] == {"card_hint": "…0001", "pin_ok": True}
    body = reply.get_data(as_text=True)
    assert "R0001" not in body and "Айгерим" not in body and "\\u0410\\u0439" not in body


def test_tunables_from_the_environment() -> None:
    t = Tunables.from_mapping({"KITAP_MACHINE_HEARTBEAT": "0.5",
                               "KITAP_MACHINE_UNLOCK_SECONDS": "30", "OTHER": "x"})
    assert (t.heartbeat, t.unlock_seconds, t.reconnect) == (0.5, 30, Tunables().reconnect)
    with pytest.raises(ValueError, match="KITAP_MACHINE_DOOR_OPEN_LIMIT='soon'"):
        Tunables.from_mapping({"KITAP_MACHINE_DOOR_OPEN_LIMIT": "soon"})
