"""A machine node as the app factory builds it (edge.app.create_app), over a real simulator:
its machine API registered, the kiosk following the PIN pad and the controller, and
/api/status, the status page and /metrics carrying the hardware and its faults."""
from __future__ import annotations

from typing import Any

import pytest

from edge import store as es
from edge.app import create_app
from tests.browser import pin_hash
from tests.machine_bench import Bench, Sim, bench_for, wait_until

pytestmark = pytest.mark.integration

bench = pytest.fixture(bench_for, name="bench")
TOKEN = "machine-app-test-token"
STAFF = {"Authorization": f"Bearer {TOKEN}"}
# R0001 and R0002 have PINs; R0003 has none (the pad's "PIN ok" is True for her card,
# yet the kiosk and /api/checkout must not lend on it).
READERS = [{"card": "R0001", "name": "Айгерим", "pin_hash": pin_hash("1234")},
           {"card": "R0002", "name": "Нурлан", "pin_hash": pin_hash("4321")},
           {"card": "R0003", "name": "Dana"}]
LOADED = {1: "C0000001", 2: "C0000002"}
SIM_ARGS = ("--auto-take", "0.2")


@pytest.fixture
def node(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Sim]:
    """A machine node (create_app, no MQTT) on a simulator holding LOADED; (app, sim)."""
    # Fast timings; the behaviour is the same (edge.machine.Tunables reads these).
    for key, value in (("HEARTBEAT", "0.5"), ("RECONNECT", "0.2"),
                       ("CONTROLLER_LOST_AFTER", "2")):
        monkeypatch.setenv(f"KITAP_MACHINE_{key}", value)
    sim = bench.sim(*SIM_ARGS, loaded=LOADED)
    return bench.app(LOADED, readers=READERS, API_TOKEN=TOKEN), sim


def kiosk_state(client: Any) -> dict[str, Any]:
    """What the kiosk screen is told to show."""
    body: dict[str, Any] = client.get("/api/kiosk/session").get_json()
    return body


def test_a_pin_typed_on_the_pad_lets_the_reader_borrow(node) -> None:
    app, sim = node
    screen, api = app.test_client(), app.test_client()   # the kiosk's browser; an API caller
    sim.ctl.present_card("R0001")
    wait_until(lambda: kiosk_state(screen)["state"] == "pin", what="the PIN screen")
    # No PIN yet: nothing is lent, on the kiosk's calls or on the node's API.
    refused = api.post("/api/checkout", json={"reader": "R0001", "copy": "C0000001"})
    assert refused.status_code == 403
    assert refused.get_json()["errors"]["refusal"] == "pin_required"
    sim.ctl.enter_pin("9999")   # wrong on the pad
    wait_until(lambda: kiosk_state(screen).get("attempts_left") == 2, what="one wrong PIN")
    assert api.post("/api/checkout", json={"reader": "R0001", "copy": "C0000001"}
                    ).status_code == 403
    assert sim.state()["slots"]["1"] == "C0000001"

    sim.ctl.enter_pin("1234")   # right on the pad
    wait_until(lambda: kiosk_state(screen)["state"] == "ready", what="the reader ready")
    assert kiosk_state(screen)["name"] == "Айгерим"
    books = screen.get("/api/kiosk/books").get_json()["books"]
    assert [b["copy"] for b in books] == ["C0000001"]   # one entry per title
    lent = api.post("/api/checkout", json={"reader": "R0001", "copy": "C0000001"})
    assert lent.status_code == 201, lent.get_json()
    assert lent.get_json()["copy"] == "C0000001" and lent.get_json()["reader"] == "R0001"
    assert sim.state()["slots"]["1"] is None      # the book left the machine
    assert [ln.copy for ln in es.Loan.select()] == ["C0000001"]


def test_a_card_with_no_pin_is_not_lent_on(node) -> None:
    app, sim = node
    client = app.test_client()
    sim.ctl.present_card("R0003")
    wait_until(lambda: kiosk_state(client)["state"] == "no_pin", what="the no-PIN screen")
    machine = app.extensions["kitap.machine"]
    assert machine.pin_ok("R0003")      # the pad asks nothing of a card with no PIN...
    refused = client.post("/api/checkout", json={"reader": "R0003", "copy": "C0000002"})
    assert refused.status_code == 403   # ...but the node lends only on a PIN entered
    assert client.get("/api/kiosk/books").status_code == 403
    assert sim.state()["slots"]["2"] == "C0000002"
    assert es.Loan.select().count() == 0
    # The node's API token may lend on the card in the reader (an integration's call).
    lent = client.post("/api/checkout", json={"reader": "R0003", "copy": "C0000002"},
                       headers=STAFF)
    assert lent.status_code == 201, lent.get_json()


def test_the_kiosk_says_why_the_machine_cannot_lend(node, bench: Bench) -> None:
    app, sim = node
    client = app.test_client()
    assert kiosk_state(client)["state"] == "idle"
    # A technician at work: the service screen; the chute still takes books.
    sim.ctl.open_door(key=True)
    wait_until(lambda: kiosk_state(client).get("reason") == "service", what="service")
    st = kiosk_state(client)
    assert (st["state"], st["returns_open"]) == ("out_of_order", True)
    sim.ctl.close_door()
    wait_until(lambda: kiosk_state(client)["state"] == "idle", what="idle after the visit")

    # The controller dies: the offline screen, with returns closed.
    sim.kill()
    wait_until(lambda: kiosk_state(client).get("reason") == "offline", what="offline")
    assert kiosk_state(client)["returns_open"] is False
    page = client.get("/kiosk?lang=en").get_data(as_text=True)
    assert 'data-screen="offline"' in page and "The machine does not answer" in page
    assert "comes back by itself" in page
    # ... and it comes back by itself when the controller does.
    bench.sim(*SIM_ARGS)
    wait_until(lambda: kiosk_state(client)["state"] == "idle", 15,
               what="the kiosk back by itself")
    assert kiosk_state(client)["returns_open"] is True


def test_status_page_and_metrics_carry_the_machine_and_its_faults(node) -> None:
    app, sim = node
    client = app.test_client()
    assert client.get("/api/machine/status").get_json()["online"] is True
    spec = client.get("/api/openapi.json").get_json()["paths"]
    assert "/api/machine/service-door/unlock" in spec
    m = client.get("/api/status").get_json()["machine"]
    assert (m["online"], m["faults"], m["returns_open"], m["door"]) == (True, [], True, "closed")
    assert m["bin"] == {"count": 0, "capacity": 40, "full": False}
    assert m["controller"]["slots"] == 10
    # Staff unlock the service door with the node's token; nobody else may.
    assert client.post("/api/machine/service-door/unlock", json={}).status_code == 401
    assert client.post("/api/machine/service-door/unlock", json={"seconds": 30},
                       headers=STAFF).status_code == 200
    assert sim.ctl.state()["locked"] is False

    sim.ctl.fault("bin_full")
    wait_until(lambda: client.get("/api/status").get_json()["machine"]["faults"],
               what="the fault in /api/status")
    m = client.get("/api/status").get_json()["machine"]
    assert [f["kind"] for f in m["faults"]] == ["bin_full"]
    assert (m["returns_open"], m["returns_closed_reason"]) == (False, "the return bin is full")
    page = client.get("/").get_data(as_text=True)
    assert "bin_full" in page and "the return bin is full" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "kitap_edge_machine_faults 1.0" in metrics
    assert "kitap_edge_controller_online 1.0" in metrics


def test_each_reason_has_a_screen_of_its_own_in_three_languages(tmp_path) -> None:
    from types import SimpleNamespace

    from edge.kiosk import out_of_order_reason

    m = SimpleNamespace(online=True, ready=True, controller={"door": "closed"})
    assert out_of_order_reason(m) is None
    m.ready = False                     # back, settling what the last link left open
    assert out_of_order_reason(m) == "settling"
    m.controller["door"] = "open"       # a technician at work
    assert out_of_order_reason(m) == "service"
    m.online = False                    # the controller does not answer
    assert out_of_order_reason(m) == "offline"

    path = str(tmp_path / "edge.db")
    app = create_app({"NODE_ID": "m-x", "NODE_KIND": "machine", "DATABASE": path,
                      "START_SYNC": False, "SECRET_KEY": "test"})
    try:
        client = app.test_client()
        for lang in ("kk", "ru", "en"):
            page = client.get(f"/kiosk?lang={lang}").get_data(as_text=True)
            titles = set()
            for reason in ("offline", "service", "settling"):
                section = page.split(f'data-screen="{reason}"', 1)[1].split("</section>")[0]
                title = section.split('<h1 class="title">', 1)[1].split("</h1>")[0]
                assert title.strip(), (lang, reason)
                titles.add(title)
            assert len(titles) == 3, (lang, titles)
        # No controller configured: the machine API says so instead of failing.
        assert client.get("/api/machine/status").status_code == 404
    finally:
        es.db.close()
