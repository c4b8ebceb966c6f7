"""The ops console in headless Chromium against a live network: a broker, the cloud, two
machines on their firmware simulators and two branches, over a month of seeded history.
An operator finds the node that just went offline, opens it, exports the debtors of a
machine and closes an exception; branch staff find the administrator's pages shut; an
administrator reads a copy's history and the audit trail and follows a MARC import."""
from __future__ import annotations

import csv
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from kitap.procs import Mosquitto, start_firmware_sim, wait_for
from tests import browser as pw
from tests import console_data as cd
from tests.browser import DESK, cloud_action, expect, open_page, screenshot
from tests.conftest import Network, api

pytestmark = pytest.mark.integration

browser = pw.browser_fixture
PHONE = {"width": 390, "height": 844}


@dataclass
class Live:
    """The running network and how to reach it."""

    cloud: str
    db: Path
    net: Network
    debtors: list[Any]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The whole network, up and bootstrapped, for every test of this module."""
    tmp = tmp_path_factory.mktemp("console-live")
    sockdir = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))   # short unix socket paths
    handles = cd.seed(tmp / "cloud.db")
    broker = Mosquitto(tmp / "broker").start()
    net = Network(tmp, broker)
    try:
        cloud = net.cloud(handles["url"])
        for node in ("m-almaly", "m-mega"):
            cd.machine_state(tmp / "cloud.db", node, tmp / f"{node}-sim.json")
            sim, pty = start_firmware_sim(f"{node}-sim", tmp, state=tmp / f"{node}-sim.json",
                                          slots=40, control=str(sockdir / f"{node}.sock"))
            net.procs.append(sim)
            net.edge(node, "machine", tmp / f"{node}.db", serial=pty)
        for node in ("b-central", cd.OTHER_BRANCH):
            net.edge(node, "branch", tmp / f"{node}.db")

        def all_online() -> bool:
            nodes = api("GET", cloud + "/api/summary")[1]["nodes"]
            return all(n["online"] for n in nodes)
        wait_for(all_online, 40, interval=0.3, what="every node online in the cloud")
        yield Live(cloud, tmp / "cloud.db", net, handles["debtors"])
    except BaseException:
        print(net.logs())
        raise
    finally:
        net.stop()
        broker.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def cloud_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the cloud's database as it is now (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchall()


def sign_in(page: Any, user: tuple[str, str]) -> None:
    """Fill the console's login form."""
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("button[type=submit]")


def test_operator_finds_a_dead_node_exports_debtors_and_closes_an_exception(
        live: Live, browser: Any) -> None:
    with open_page(browser, live.cloud + "/console/login", viewport=DESK,
                   locale="en-US") as page:
        screenshot(page, "console-login")
        sign_in(page, cd.OPERATOR)
        rows = page.locator("table.nodes tbody tr")
        expect(rows).to_have_count(4)
        expect(page.locator(f'tr[data-node="{cd.OTHER_BRANCH}"] .pill.on')).to_be_visible()

        # A branch goes dark; the page, refreshing itself, puts it on top.
        live.net.proc(cd.OTHER_BRANCH).stop()
        expect(rows.first).to_have_attribute("data-node", cd.OTHER_BRANCH, timeout=30_000)
        expect(rows.first.locator(".pill.off")).to_have_text("offline")
        expect(page.locator("#updated")).to_contain_text("Updated")
        screenshot(page, "console-network")

        rows.first.locator("a.node-link").click()
        expect(page.locator("h1")).to_contain_text(cd.OTHER_BRANCH)
        expect(page.locator(".alert-card")).to_contain_text("offline")

        page.goto(live.cloud + "/console/nodes/m-mega")
        expect(page.locator("ol.slots li.full").first).to_be_visible()
        expect(page.locator(".alert-card")).to_contain_text("dispenser jammed")
        screenshot(page, "console-node")

        # The debtors of one machine, as a spreadsheet.
        page.click("nav.side >> text=Debtors")
        page.select_option("select[name=node]", "m-mega")
        page.click("form.filters button[type=submit]")
        expect(page).to_have_url(f"{live.cloud}/console/debtors?node=m-mega&days=&amount=")
        screenshot(page, "console-debtors")
        with page.expect_download() as info:
            page.click("#csv")
        text = Path(info.value.path()).read_text(encoding="utf-8-sig")
        got = {row["card"]: row for row in csv.DictReader(text.splitlines())}
        today = date.today().isoformat()
        want = {card for (card,) in cloud_rows(
            live.db, "select distinct reader from loan where node='m-mega' and "
                     "returned_at is null and due < ?", today)}
        assert set(got) == want and want
        for card, row in got.items():
            (name, owed), = cloud_rows(live.db, "select name, fees_owed from reader "
                                                "where card=?", card)
            assert row["name"] == name and row["owed_tenge"] == f"{owed / 100:.2f}"

        # The machine's jam: the cause is there; staff close it with what they did.
        page.click("nav.side >> text=Exceptions")
        card = page.locator("article.exc", has_text="dispenser jammed")
        expect(card).to_contain_text("device_fault.jam")
        screenshot(page, "console-exceptions")
        exc_id = int(card.get_attribute("data-exception"))
        card.locator("input[name=resolution]").fill("cleared the jam in slot 12, tested")
        card.locator("button[type=submit]").click()
        expect(page.locator(".flash.good")).to_contain_text(f"Exception {exc_id} closed")
        expect(page.locator(f'article[data-exception="{exc_id}"]')).to_have_count(0)
        (closed, resolution), = cloud_rows(
            live.db, "select closed_at, resolution from staffexception where id=?", exc_id)
        assert closed and resolution.startswith("cleared the jam in slot 12")
        assert cloud_rows(live.db, "select actor from auditentry where action="
                                   "'exception.close' and target=?", f"exception:{exc_id}") \
            == [(cd.OPERATOR[0],)]

        # The rest of the console, for the record.
        page.goto(f"{live.cloud}/console/readers/{live.debtors[2].card}")
        expect(page.locator("h1")).to_contain_text(live.debtors[2].name)
        screenshot(page, "console-reader")
        page.goto(live.cloud + "/console/stats")
        expect(page.locator("svg.chart").first).to_be_visible()
        page.screenshot(path=str(pw.SCREENSHOTS / "console-stats.png"), full_page=True)
        page.goto(live.cloud + "/console/restock/m-mega")
        expect(page.locator("h1")).to_contain_text("MEGA")
        screenshot(page, "console-restock")
    with open_page(browser, live.cloud + "/console/login", viewport=PHONE,
                   locale="ru-RU") as phone:
        sign_in(phone, cd.OPERATOR)
        expect(phone.locator("table.nodes tbody tr").first).to_have_attribute(
            "data-node", cd.OTHER_BRANCH)
        assert pw.fits_the_width(phone) == []
        screenshot(phone, "console-network-phone")


def test_branch_staff_see_no_administrator_page_nor_another_branchs_actions(
        live: Live, browser: Any) -> None:
    with open_page(browser, live.cloud + "/console/login", viewport=DESK,
                   locale="en-US") as page:
        sign_in(page, cd.BRANCH)
        expect(page.locator(".who .role")).to_contain_text("b-central")
        expect(page.locator("nav.side a", has_text="Staff")).to_have_count(0)
        expect(page.locator("nav.side a", has_text="Audit trail")).to_have_count(0)
        page.goto(live.cloud + "/console/staff")
        expect(page.locator(".error-card")).to_contain_text("not allowed")
        page.goto(live.cloud + "/console/exceptions?node=m-almaly")
        card = page.locator("article.exc").first
        expect(card).to_contain_text("Another branch")
        expect(card.locator("form")).to_have_count(0)


def test_administrator_reads_a_copys_history_the_trail_and_follows_an_import(
        live: Live, browser: Any, tmp_path: Path) -> None:
    from cloud import accounts, marc

    # A copy in a machine's slot: the machine's slot scan at start-up is its latest fact.
    copy = wait_for(lambda: next(iter(cloud_rows(
        live.db, "select c.barcode from copy c join copyfact f on f.copy = c.barcode "
                 "where c.location_node='m-mega' and c.status='in_slot' group by c.barcode "
                 "order by (select count(*) from loan l where l.copy = c.barcode) desc "
                 "limit 1")), None), 30, what="a slot scan to reach the cloud")[0]
    for name, contact in (("Мадина Оспанова", "madina@example.kz"),
                          ("Ержан Қасымов", "+7 701 555 0199")):
        cloud_action(f"sqlite:///{live.db}", lambda n=name, c=contact: accounts.pre_register(
            name=n, contact=c, category="adult", birth_year=1990, branch="b-central",
            pin="2468", lang="kk"))
    # The sample catalogue again, as a library's export: the titles are updated in place.
    from kitap.sample_data import catalogue

    mrc = tmp_path / "catalogue.mrc"
    marc.write_file([{"id": t.id, "title": t.title, "author": t.author, "isbn": t.isbn,
                      "language": t.language, "item_type": t.item_type, "year": t.year}
                     for t in catalogue()], mrc)
    with open_page(browser, live.cloud + "/console/login", viewport=DESK,
                   locale="en-US") as page:
        sign_in(page, cd.ADMIN)
        page.click("nav.side >> text=Inventory")
        expect(page.locator("h1")).to_have_text("Inventory")
        screenshot(page, "console-inventory")
        page.fill("input[name=copy]", copy.lower())
        page.click(".search-bar button[type=submit]")
        expect(page.locator("h1")).to_have_text(copy)
        expect(page.locator("section.now")).to_contain_text("m-mega")
        screenshot(page, "console-copy")

        page.click("nav.side >> text=Applications")
        expect(page.locator("article.exc", has_text="Ержан Қасымов")).to_have_count(1)
        screenshot(page, "console-applications")

        page.click("nav.side >> text=Audit trail")
        rows = page.locator("table.audit tbody tr")
        expect(rows.filter(has_text="exception.close")).to_have_count(1)   # the first test's
        expect(rows.filter(has_text=cd.ADMIN[0]).filter(has_text="login")).not_to_have_count(0)
        screenshot(page, "console-audit")

        page.click("nav.side >> text=MARC import")
        page.set_input_files("#marc-form input[type=file]", str(mrc))
        page.click("#marc-form button[type=submit]")
        expect(page.locator("#upload-label")).to_have_text("Done.", timeout=60_000)
        expect(page.locator("#upload-pct")).to_have_text("100%")
        expect(page.locator("#upload-detail")).to_contain_text(str(len(catalogue())))
        screenshot(page, "console-import")
    (status, records, created), = cloud_rows(
        live.db, "select status, records, created from marcimport order by id desc limit 1")
    assert (status, records, created) == ("done", len(catalogue()), 0)   # the same titles
    assert cloud_rows(live.db, "select actor from auditentry where action='marc.import'") == [
        (cd.ADMIN[0],)]
