"""The machine's touch screen in headless Chromium, against a whole node: broker, cloud, edge,
and the firmware simulator on a pty, with the test acting as the reader at the machine."""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from firmware_sim.control import ControlClient
from kitap.procs import http_json, start_firmware_sim, wait_for
from tests import browser as pw
from tests.browser import LANDSCAPE, PORTRAIT, cloud_action, expect, open_page, screenshot
from tests.conftest import api, library_day, seed_cloud, seed_edge

pytestmark = pytest.mark.integration

browser = pw.browser_fixture
SLOTS = 10
# slot -> (copy, title): two copies of Абай жолы, one of everything else.
LOADED = {1: ("C00001", "T001"), 2: ("C00002", "T001"), 3: ("C00003", "T002"),
          4: ("C00004", "T003"), 5: ("C00005", "T004"), 6: ("C00006", "T005"),
          7: ("C00007", "T006"), 8: ("C00008", "T007"), 9: ("C00009", "T008")}
IDLE_KK = "Карточкаңызды оқу құрылғысына жақындатыңыз"


@dataclass
class Machine:
    """A running machine node and the handles a test needs."""

    edge: str
    cloud: str
    cloud_db: str
    ctl: ControlClient


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path may not.
    d = Path(tempfile.mkdtemp(prefix="kk-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def machine(tmp_path: Path, broker, network, sockdir: Path) -> Machine:
    """m-test loaded with LOADED; R0001 has a ready reservation for Көшпенділер (C00006)."""
    from cloud import actions

    copies = [{"barcode": c, "title_id": t, "slot": s} for s, (c, t) in LOADED.items()]
    fund = pw.fund("m-test", copies)
    state = tmp_path / "sim.json"
    slots: dict[str, str | None] = {str(i): None for i in range(1, SLOTS + 1)}
    slots.update({str(s): c for s, (c, _) in LOADED.items()})
    state.write_text(json.dumps({"slots": slots, "bin": [], "bin_capacity": 10}))
    control = str(sockdir / "m.sock")
    sim, pty = start_firmware_sim("m-test-sim", tmp_path, state=state, slots=SLOTS,
                                  control=control, auto_take=0.2)
    network.procs.append(sim)
    db_url = seed_cloud(tmp_path / "cloud.db", fund)
    cloud_action(db_url, actions.place_hold, "R0001", "T005", "m-test")
    broker.start()
    cloud = network.cloud(db_url)
    edge = network.edge("m-test", "machine", seed_edge(tmp_path / "edge.db", "m-test", fund),
                        serial=pty)
    wait_for(lambda: api("GET", edge + "/api/status")[1]["controller_online"], 15,
             what="controller online")
    wait_for(lambda: any(h["copy"] == "C00006" for h in api("GET", edge + "/api/holds")[1]),
             20, what="the reservation reached the node")
    return Machine(edge, cloud, db_url, ControlClient(control))


def type_pin(page: Any, pin: str) -> None:
    """Tap the PIN on the screen's keypad, then OK."""
    for digit in pin:
        page.click(f'[data-digit="{digit}"]')
    page.click('[data-key="ok"]')


def no_sideways_scroll(page: Any) -> bool:
    """True when nothing sticks out to the right of the screen."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_reader_borrows_a_reserved_book_and_gets_a_receipt(machine: Machine, browser) -> None:
    due = library_day(21).strftime("%d.%m.%Y")
    with open_page(browser, machine.edge + "/kiosk", viewport=PORTRAIT) as page:
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(IDLE_KK)
        expect(page.locator("#returns-text")).to_contain_text("қайтару саңылауына")

        machine.ctl.present_card("R0001")
        expect(page.locator('[data-screen="pin"]')).to_be_visible()
        expect(page.locator("#pin-card")).to_have_text("Карточка …0001")
        for digit in "12":
            page.click(f'[data-digit="{digit}"]')
        expect(page.locator("#pin-dots .dot.full")).to_have_count(2)
        screenshot(page, "kiosk-pin")
        for digit in "34":
            page.click(f'[data-digit="{digit}"]')
        page.click('[data-key="ok"]')

        # Her reservation first and marked; the other titles once each.
        expect(page.locator("#books-hello")).to_have_text("Сәлеметсіз бе, Айгерим Сейітқызы!")
        books = page.locator("#books li")
        expect(books).to_have_count(len(pw.TITLES))
        expect(books.first.locator(".book-title")).to_have_text("Көшпенділер")
        expect(books.first.locator(".badge")).to_have_text("Сіздің броныңыз")
        expect(page.locator("#books .badge")).to_have_count(1)
        expect(page.locator("#books")).to_contain_text("2 дана")   # Абай жолы, twice
        assert no_sideways_scroll(page)
        screenshot(page, "kiosk-books")

        books.first.locator("button").click()
        expect(page.locator("#confirm-title")).to_have_text("Көшпенділер")
        page.click("#confirm-take")

        expect(page.locator('[data-screen="receipt"]')).to_be_visible()
        expect(page.locator("#r-due")).to_have_text(due)
        expect(page.locator("#r-title")).to_have_text("Көшпенділер — Ілияс Есенберлин")
        expect(page.locator("#r-copy")).to_have_text("C00006")
        expect(page.locator("#r-reader")).to_have_text("Айгерим Сейітқызы (…0001)")
        expect(page.locator("#r-node")).to_have_text("m-test")
        screenshot(page, "kiosk-receipt")

        # The book left its slot, and the node holds the loan.
        assert machine.ctl.state()["slots"]["6"] is None
        loans = api("GET", machine.edge + "/api/readers/R0001")[1]["loans"]
        assert [(ln["copy"], ln["due"]) for ln in loans] == [
            ("C00006", library_day(21).isoformat())]

        page.click('[data-screen="receipt"] [data-action="end"]')
        expect(page.locator('[data-screen="idle"]')).to_be_visible()


def test_three_wrong_pins_lock_the_card_and_a_blocked_reader_is_told_why(
        machine: Machine, browser) -> None:
    from cloud import actions

    # Nobody lends on a card at a machine without its PIN (the token aside).
    code, body = http_json("POST", machine.edge + "/api/checkout",
                           {"reader": "R0004", "copy": "C00001"})
    assert code == 403 and body["errors"]["refusal"] == "pin_required"

    with open_page(browser, machine.edge + "/kiosk", viewport=LANDSCAPE) as page:
        page.click('a[data-lang="ru"]')
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(
            "Приложите читательский билет к считывателю")

        machine.ctl.present_card("R0004")
        expect(page.locator('[data-screen="pin"]')).to_be_visible()
        for left in (2, 1):
            type_pin(page, "9999")
            expect(page.locator("#pin-error")).to_have_text(
                f"Неверный PIN-код. Осталось попыток: {left}.")
        type_pin(page, "9999")
        expect(page.locator('[data-screen="locked"] h1')).to_have_text("Билет заблокирован")
        expect(page.locator("#locked-text")).to_contain_text("трижды введён неверно")
        expect(page.locator("#locked-text")).to_contain_text("15 мин")

        # Done: the next person at the machine starts in Kazakh.
        page.click('[data-screen="locked"] [data-action="end"]')
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(IDLE_KK)
        # The lock is the node's, not the screen's: presented again, the card is still locked.
        machine.ctl.present_card("R0004")
        expect(page.locator('[data-screen="locked"] h1')).to_have_text("Карточка бұғатталды")
        page.click('[data-screen="locked"] [data-action="end"]')
        expect(page.locator('[data-screen="idle"]')).to_be_visible()

        # Blocked in the cloud; the node learns it from the feed and the reader is told why.
        cloud_action(machine.cloud_db, actions.block, "R0003", "мерзімі өткен 3 кітап")
        wait_for(lambda: api("GET", machine.edge + "/api/readers/R0003")[1]["blocked_reason"],
                 20, what="the block reached the node")
        machine.ctl.present_card("R0003")
        expect(page.locator('[data-screen="pin"]')).to_be_visible()
        type_pin(page, "2580")
        expect(page.locator("#problem-title")).to_have_text("Карточка бұғатталған")
        expect(page.locator("#problem-text")).to_have_text(
            "Себебі: мерзімі өткен 3 кітап. Кітапханашыға жүгініңіз.")
        expect(page.locator("#problem-choose")).to_be_hidden()
        assert no_sideways_scroll(page)
    assert api("GET", machine.edge + "/api/readers/R0003")[1]["loans"] == []


def test_a_jam_shows_the_jam_screen_and_lends_nothing(machine: Machine, browser) -> None:
    with open_page(browser, machine.edge + "/kiosk", viewport=LANDSCAPE) as page:
        machine.ctl.present_card("R0002")
        expect(page.locator('[data-screen="pin"]')).to_be_visible()
        type_pin(page, "4321")
        expect(page.locator("#books li")).to_have_count(len(pw.TITLES) - 1)
        # Another reader's reservation is not offered.
        expect(page.locator("#books")).not_to_contain_text("Көшпенділер")
        assert no_sideways_scroll(page)

        page.locator("#books button", has_text="Абай жолы").click()
        expect(page.locator('[data-screen="confirm"]')).to_be_visible()
        machine.ctl.fault("jam")
        page.click("#confirm-take")

        expect(page.locator("#problem-title")).to_have_text("Кітап кептеліп қалды")
        expect(page.locator("#problem-text")).to_contain_text("сізге жазылмады")
        expect(page.locator("#problem-choose")).to_be_visible()

    assert api("GET", machine.edge + "/api/readers/R0002")[1]["loans"] == []
    assert machine.ctl.state()["slots"]["1"] == "C00001"   # the book never left its slot


def test_the_screen_says_why_the_machine_cannot_lend_and_comes_back(machine: Machine,
                                                                    browser) -> None:
    with open_page(browser, machine.edge + "/kiosk", viewport=PORTRAIT) as page:
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(IDLE_KK)
        # The serial cable is pulled: the controller does not answer.
        machine.ctl.line(connected=False)
        offline = page.locator('[data-screen="offline"]')
        expect(offline).to_be_visible()
        expect(offline.locator("h1")).to_have_text("Автомат жауап бермейді")
        expect(offline).to_contain_text("Қайтару саңылауы уақытша жабық")
        expect(offline).to_contain_text("экран өзі жаңарады")
        assert no_sideways_scroll(page)
        screenshot(page, "kiosk-offline")
        # Put back: the screen comes back by itself.
        machine.ctl.line(connected=True)
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(IDLE_KK)

        # A technician opens the service door: a screen of its own; returns still work.
        machine.ctl.open_door(key=True)
        service = page.locator('[data-screen="service"]')
        expect(service).to_be_visible()
        expect(service.locator("h1")).to_have_text("Автоматқа қызмет көрсетілуде")
        expect(service).to_contain_text("Кітапты қайтаруға болады")
        machine.ctl.close_door()
        expect(page.locator('[data-screen="idle"] h1')).to_have_text(IDLE_KK)


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class _Card:
    card: str
    since: float
    pin_ok: bool = False


class _Machine:
    """Just enough of MachineService for the screen's visit logic."""

    online = True
    t = SimpleNamespace(session_seconds=1000.0)  # the machine's own card timeout: far away

    def __init__(self) -> None:
        self.session: _Card | None = None
        self.ended = 0

    def card_in_session(self) -> str | None:
        return self.session.card if self.session and self.session.pin_ok else None

    def end_session(self) -> None:
        self.session = None
        self.ended += 1


def test_a_forgotten_visit_ends_and_the_same_presentation_is_not_offered_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edge import kiosk

    clock = _Clock()
    monkeypatch.setattr(kiosk, "time", clock)
    machine, state = _Machine(), kiosk.KioskState(idle_seconds=60)
    assert state.current(machine) is None

    machine.session = _Card("R0001", clock.now)        # presented, PIN not yet entered
    visit = state.current(machine)
    assert visit is not None and visit.card == "R0001"
    clock.now += 59
    assert state.current(machine) is visit              # still there, one second left
    assert state.idle_left(visit) == pytest.approx(1)
    with state.busy(visit):                             # a dispense never times out
        clock.now += 120
        assert state.current(machine) is visit
    clock.now += 61
    assert state.current(machine) is None               # walked away: the visit ends...
    assert machine.ended == 1                           # ...and the machine forgets the card
    assert state.ended_reason(machine) == "timeout"

    machine.session = _Card("R0001", clock.now)         # presented again: a new visit
    again = state.current(machine)
    assert again is not None and again is not visit
    state.end(again, "done")
    assert state.current(machine) is None               # "done" is final for that presentation
    assert state.ended_reason(machine) == "done"
    clock.now += kiosk.ENDED_NOTICE_SECONDS + 1
    assert state.ended_reason(machine) is None
