"""The readers' catalogue in headless Chromium against a live network: a reader searches
in Kazakh and in Latin letters, signs in with card and PIN, reserves a book for pickup at
the branch and sees it reach that branch's desk, cancels another and sees it leave; another
reserves a book for pickup at a vending machine, presents the card there and finds it first
on the machine's screen, marked, and takes it; a newcomer applies to join online."""
from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.control import ControlClient
from kitap.procs import Mosquitto, start_firmware_sim, wait_for
from tests import browser as pw
from tests import console_data as cd
from tests.browser import DESK, PORTRAIT, expect, open_page, screenshot
from tests.conftest import Network, api

pytestmark = pytest.mark.integration

browser = pw.browser_fixture
PHONE = {"width": 390, "height": 844}
PICKUP = "b-central"
MACHINE = "m-almaly"


@dataclass
class Live:
    """The cloud, the pickup branch, a vending machine with its controller, and the fund."""

    cloud: str
    branch: str
    machine: str
    ctl: ControlClient
    db: Path
    data: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Broker, cloud, the pickup branch and a machine on its simulator, bootstrapped."""
    tmp = tmp_path_factory.mktemp("catalogue-live")
    sockdir = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))   # short unix socket paths
    handles = cd.seed(tmp / "cloud.db", copies=900, readers=80)
    broker = Mosquitto(tmp / "broker").start()
    net = Network(tmp, broker)
    try:
        cloud = net.cloud(handles["url"])
        branch = net.edge(PICKUP, "branch", tmp / f"{PICKUP}.db")
        cd.machine_state(tmp / "cloud.db", MACHINE, tmp / "sim.json")
        control = str(sockdir / "m.sock")
        sim, pty = start_firmware_sim(f"{MACHINE}-sim", tmp, state=tmp / "sim.json", slots=40,
                                      control=control, auto_take=0.2)
        net.procs.append(sim)
        machine = net.edge(MACHINE, "machine", tmp / f"{MACHINE}.db", serial=pty)
        for edge in (branch, machine):
            wait_for(lambda e=edge: api("GET", e + "/api/status")[1]["feed_rev"] > 0, 30,
                     what=f"{edge} to bootstrap")
        wait_for(lambda: api("GET", machine + "/api/status")[1]["controller_online"], 15,
                 what="the machine's controller online")
        yield Live(cloud, branch, machine, ControlClient(control), tmp / "cloud.db",
                   handles["data"])
    except BaseException:
        print(net.logs())
        raise
    finally:
        net.stop()
        broker.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def holds_at_branch(live: Live) -> set[str]:
    """The holds the pickup branch's desk would hand out."""
    return {h["hold_id"] for h in api("GET", live.branch + "/api/holds")[1]}


def one(db: Path, sql: str, *args: Any) -> Any:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchone()


def test_a_reader_finds_reserves_and_the_branch_gets_the_hold(live: Live, browser: Any) -> None:
    reader = free_reader(live, live.data.readers[40:])
    with open_page(browser, live.cloud + "/", viewport=PHONE, locale="kk-KZ") as page:
        expect(page.locator(".hero h1")).to_be_visible()
        screenshot(page, "catalogue-home")
        page.fill("input[name=q]", "абай")
        page.click(".searchbox button")
        results = page.locator("ol.results li.result h3")
        expect(results.filter(has_text="Абай жолы")).to_have_count(1)
        screenshot(page, "catalogue-search")
        found_kk = results.all_inner_texts()
        page.fill("input[name=q]", "ABAI")
        page.click(".searchbox button")
        expect(results.filter(has_text="Абай жолы")).to_have_count(1)
        assert results.all_inner_texts() == found_kk       # the same titles in Latin letters

        results.filter(has_text="Абай жолы").locator("a").click()
        expect(page.locator("h1")).to_have_text("Абай жолы")
        page.click("#reserve a.button")
        page.fill("#card", reader.card.lower())            # typed any old way
        page.fill("#pin", reader.pin)
        page.click("form button[type=submit]")
        expect(page.locator("h1")).to_have_text("Абай жолы")   # back where they were
        page.select_option("#pickup", PICKUP)
        page.click(".reserve-form button")
        hold = page.locator("ul.cards li[data-hold]")
        expect(hold).to_have_count(1)
        expect(hold).to_contain_text("Абай жолы")
        screenshot(page, "catalogue-account")
        hold_id = hold.get_attribute("data-hold")
        # The reservation travels down the change feed to the pickup branch's desk.
        wait_for(lambda: hold_id in holds_at_branch(live), 20, interval=0.3,
                 what="the hold to reach the branch")
        (who, where), = [one(live.db, "select reader, pickup_node from hold where id=?",
                             hold_id)]
        assert (who, where) == (reader.card, PICKUP)

        # A second reservation, cancelled from the account: it leaves the branch too.
        title = one(live.db, "select t.id, t.title from title t join copy c on c.title_id=t.id "
                             "where c.location_node=? and c.status='on_shelf' and t.title "
                             "not like 'Абай%' order by t.id limit 1", PICKUP)
        page.goto(f"{live.cloud}/catalogue/titles/{title[0]}")
        page.select_option("#pickup", PICKUP)
        page.click(".reserve-form button")
        second = page.locator("ul.cards li[data-hold]", has_text=title[1])
        expect(second).to_have_count(1)
        second_id = second.get_attribute("data-hold")
        wait_for(lambda: second_id in holds_at_branch(live), 20, interval=0.3,
                 what="the second hold to reach the branch")
        second.locator("button").click()
        expect(page.locator("ul.cards li[data-hold]")).to_have_count(1)
        wait_for(lambda: second_id not in holds_at_branch(live), 20, interval=0.3,
                 what="the cancellation to reach the branch")
        assert hold_id in holds_at_branch(live)
        assert pw.fits_the_width(page) == []


def free_reader(live: Live, pool: list[Any]) -> Any:
    """A reader of ``pool`` with no block, no hold and no open loan."""
    return next(r for r in pool if one(
        live.db, "select count(*) from reader where card=? and blocked_reason is null and "
                 "card not in (select reader from hold) and card not in (select reader from "
                 "loan where returned_at is null)", r.card)[0])


def test_a_reservation_for_a_machine_is_first_on_its_screen(live: Live, browser: Any) -> None:
    reader = free_reader(live, live.data.readers[::-1])
    # A title in one of the machine's slots that nobody has reserved, the last one the
    # screen would list (it sorts by title): first only because it is reserved.
    with sqlite3.connect(f"file:{live.db}?mode=ro", uri=True) as con:
        name, copy, slot = max(con.execute(
            "select t.title, c.barcode, c.slot from title t join copy c on c.title_id = t.id "
            "where c.location_node=? and c.status='in_slot' and t.id not in "
            "(select title_id from hold)", (MACHINE,)), key=lambda row: row[0].casefold())
    with open_page(browser, live.cloud + "/catalogue/?lang=en", viewport=PHONE,
                   locale="en-US") as page:
        page.fill("input[name=q]", name)
        page.click(".searchbox button")
        page.locator("ol.results li.result h3 a", has_text=name).first.click()
        expect(page.locator("h1")).to_have_text(name)
        page.click("#reserve a.button")
        page.fill("#card", reader.card)
        page.fill("#pin", reader.pin)
        page.click("form button[type=submit]")
        page.select_option("#pickup", MACHINE)
        page.click(".reserve-form button")
        hold = page.locator("ul.cards li[data-hold]", has_text=name)
        expect(hold).to_have_count(1)
        hold_id = hold.get_attribute("data-hold")
    # Set aside in the machine's slot, and known there through the change feed.
    wait_for(lambda: any(h["hold_id"] == hold_id and h["copy"] == copy
                         for h in api("GET", live.machine + "/api/holds")[1]), 20,
             interval=0.3, what="the reservation to reach the machine")

    with open_page(browser, live.machine + "/kiosk", viewport=PORTRAIT) as kiosk:
        expect(kiosk.locator('[data-screen="idle"]')).to_be_visible()
        live.ctl.present_card(reader.card)
        expect(kiosk.locator('[data-screen="pin"]')).to_be_visible()
        for digit in reader.pin:
            kiosk.click(f'[data-digit="{digit}"]')
        kiosk.click('[data-key="ok"]')
        books = kiosk.locator("#books li")
        expect(books.first.locator(".book-title")).to_have_text(name)
        expect(books.first.locator(".badge")).to_have_text("Сіздің броныңыз")
        expect(kiosk.locator("#books .badge")).to_have_count(1)
        assert books.count() > 1                                 # among the others
        books.first.locator("button").click()
        expect(kiosk.locator("#confirm-title")).to_have_text(name)
        kiosk.click("#confirm-take")
        expect(kiosk.locator('[data-screen="receipt"]')).to_be_visible()
        expect(kiosk.locator("#r-copy")).to_have_text(copy)
    assert live.ctl.state()["slots"][str(slot)] is None          # the book left its slot
    wait_for(lambda: one(live.db, "select status from hold where id=?", hold_id)[0]
             == "picked_up", 20, interval=0.3, what="the pickup to reach the cloud")
    assert one(live.db, "select reader from loan where copy=? and returned_at is null",
               copy) == (reader.card,)


def test_the_title_page_and_joining_online(live: Live, browser: Any) -> None:
    # The title on most shelves and slots: where to get it, place by place.
    best = one(live.db, "select title_id from copy where status in ('on_shelf', 'in_slot') "
                        "group by title_id order by count(distinct location_node) desc, "
                        "count(*) desc limit 1")[0]
    with open_page(browser, f"{live.cloud}/catalogue/titles/{best}", viewport=DESK,
                   locale="en-US") as page:
        expect(page.locator("ul.where li").first).to_be_visible()
        expect(page.locator("ul.where li").first).to_contain_text("live")
        screenshot(page, "catalogue-title")
    with open_page(browser, f"{live.cloud}/catalogue/join?lang=ru", viewport=PHONE,
                   locale="ru-RU") as page:
        page.fill("input[name=name]", "Мадина Оспанова")
        page.fill("input[name=contact]", "madina@example.kz")
        page.fill("input[name=birth_year]", "1994")
        page.select_option("select[name=branch]", PICKUP)
        page.fill("input[name=pin]", "2468")
        page.fill("input[name=pin2]", "2468")
        page.check("input[name=consent]")
        screenshot(page, "catalogue-join")
        page.click("form button[type=submit]")
        expect(page.locator("h1")).to_have_text("Заявка принята!")
        code = page.locator("#code").inner_text()
        assert re.fullmatch(r"[A-Z2-9]{6}", code)
        assert one(live.db, "select name, branch, status from preregistration where id=?",
                   code) == ("Мадина Оспанова", PICKUP, "pending")
        screenshot(page, "catalogue-joined")
