"""Booking services in headless Chromium against a live network (broker, cloud, a branch):
the librarian books a partner's staff member into a workshop and hands over a receipt that
shows the base price, the discount and why; fills a counselling slot and puts the next
reader on the waiting list; sells a membership, which makes the reader's prices members';
a cancellation moves the waiting list up at the desk. A reader books online on a phone and
the booking appears on the branch desk's roster."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kitap.procs import wait_for
from tests import browser as pw
from tests.browser import DESK, cloud_action, expect, open_page, screenshot
from tests.conftest import api, seed_cloud

pytestmark = pytest.mark.integration

browser = pw.browser_fixture
STAFF = ("aliya", "kitap-desk-2026")
PHONE = {"width": 390, "height": 844}
NODE = "b-test"


@dataclass
class Branch:
    """A running branch node and its cloud."""

    edge: str
    cloud: str
    cloud_db: str


def setup_services() -> None:
    from cloud import service_actions as sa

    sa.save_partner("p-umit", "Үміт қоры")
    sa.set_reader_partner("R0002", "partner_staff", "p-umit")
    sa.save_service(sa.ServiceForm("ws-business", "workshop",
                                   ("Бизнес негіздері", "Основы бизнеса", "Business basics"),
                                   200_000, capacity=12))
    sa.save_service(sa.ServiceForm("cn-legal", "counselling",
                                   ("Заң кеңесі", "Юридическая консультация", "Legal advice"),
                                   300_000))
    sa.save_service(sa.ServiceForm("membership-year", "membership",
                                   ("Жылдық абонемент", "Годовой абонемент", "Yearly membership"),
                                   500_000, term_days=365))
    start = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=1)
    sa.schedule("ws-business", NODE, start + timedelta(hours=2), start + timedelta(hours=4),
                room="Hall 2", host="Aigerim Nurlanova", session_id="S-ws")
    sa.schedule("cn-legal", NODE, start, start + timedelta(minutes=45), room="Room 4",
                host="Dana Seitova", session_id="S-cn")


@pytest.fixture
def branch(tmp_path: Path, broker, network) -> Branch:
    from edge import auth, store

    fund = pw.fund(NODE, [{"barcode": "C10001", "title_id": "T001"}])
    db_url = seed_cloud(tmp_path / "cloud.db", fund)
    cloud_action(db_url, setup_services)
    edge_db = tmp_path / "edge.db"
    store.EdgeStore(NODE, str(edge_db))
    auth.add_staff(*STAFF)
    store.db.close()
    broker.start()
    cloud = network.cloud(db_url)
    edge = network.edge(NODE, "branch", edge_db)
    wait_for(lambda: len(api("GET", edge + "/api/sessions")[1]) == 2, 20,
             what="the sessions to reach the branch")
    return Branch(edge, cloud, db_url)


def find_reader(page: Any, card: str) -> None:
    page.fill("#sv-card", card)
    page.press("#sv-card", "Enter")
    expect(page.locator("#rd-card")).to_have_text(card)


def test_a_librarian_books_with_a_discounted_receipt_fills_a_slot_and_sells_a_membership(
        branch: Branch, browser) -> None:
    with open_page(browser, branch.edge + "/desk", viewport=DESK, locale="en-GB") as page:
        page.fill("#login-user", STAFF[0])
        page.fill("#login-password", STAFF[1])
        page.click("#login-form button[type=submit]")
        expect(page.locator("#work")).to_be_visible()
        page.click("#to-services")
        expect(page.locator("#work")).to_be_visible()
        expect(page.locator("#sv-pick")).to_be_visible()

        # A partner's staff member: her price, struck-through base, and why.
        find_reader(page, "R0002")
        expect(page.locator("#rd-member")).to_have_text("No active membership")
        ws = page.locator("#sessions li[data-session='S-ws']")
        expect(ws.locator(".price")).to_have_text("2 000 ₸1 200 ₸")
        expect(ws.locator(".why")).to_have_text(" 40 % off: Partner staff")
        ws.locator("button.book").click()
        receipt = page.locator("#rc-lines")
        expect(receipt).to_contain_text("Business basics")
        expect(receipt).to_contain_text("Hall 2 · Aigerim Nurlanova")
        expect(receipt.locator("dd.discount")).to_have_text("−800 ₸ (40 % off: Partner staff)")
        expect(receipt.locator("dd.total")).to_have_text("1 200 ₸")
        expect(page.locator("#p-receipt")).to_contain_text("Paid1 200 ₸")
        screenshot(page, "desk-services-receipt")
        # The cloud confirms the seat through the feed.
        mine = page.locator("#rd-bookings li").first
        expect(mine).to_contain_text("Seat")
        page.fill("#sv-card", "R0002")
        wait_for(lambda: api("GET", branch.edge + "/api/readers/R0002/services")[1]
                 ["bookings"][0]["confirmed"], 20, what="the cloud to confirm the seat")
        page.press("#sv-card", "Enter")
        expect(page.locator("#rd-bookings li .unconfirmed")).to_have_count(0)
        expect(ws.locator(".pill")).to_have_text("Booked")

        # One counselling slot: the first reader takes it, the next goes on the waiting list.
        find_reader(page, "R0001")
        page.locator("#sessions li[data-session='S-cn'] button.book").click()
        expect(page.locator("#rc-lines")).to_contain_text("3 000 ₸")
        find_reader(page, "R0003")
        slot = page.locator("#sessions li[data-session='S-cn']")
        expect(slot.locator("button.book")).to_have_text("Waiting list")
        slot.locator("button.book").click()
        expect(page.locator("#rc-lines")).to_contain_text("Waiting list, no. 1")
        expect(page.locator("#rc-lines dd.total")).to_have_text("3 000 ₸")
        expect(page.locator("#p-receipt")).to_contain_text("Paid0 ₸")

        # A membership: sold, and the reader's prices become members'.
        page.locator("#rd-offers li[data-offer='membership-year'] .sell").click()
        expect(page.locator("#rc-lines")).to_contain_text("Yearly membership")
        expect(page.locator("#rc-lines dd.total")).to_have_text("5 000 ₸")
        expect(page.locator("#rd-member")).to_contain_text("Member until")
        expect(ws.locator(".why")).to_have_text(" 30 % off: library member")

        # The first reader cancels: the waiting reader gets the slot, as the cloud decides.
        find_reader(page, "R0001")
        first = page.locator("#rd-bookings li").first
        first.locator("button", has_text="Cancel and refund").click()
        expect(page.locator("#reader-msg")).to_have_text("Booking cancelled, refunded 3 000 ₸")
        wait_for(lambda: api("GET", branch.edge + "/api/readers/R0003/services")[1]
                 ["bookings"][0]["seat"] == "seated", 20, what="the waiting list to move up")
        find_reader(page, "R0003")
        expect(page.locator("#rd-bookings li[data-booking]").filter(has_text="Legal advice")
               .locator(".pill")).to_have_text("Seat")
        page.locator("#sessions li[data-session='S-cn'] button.link-btn").click()
        expect(page.locator("#ro-rows tr")).to_have_count(2)
        screenshot(page, "desk-services-roster")

    # The same page in Kazakh, on a phone.
    with open_page(browser, branch.edge + "/desk/services?lang=kk", viewport=PHONE,
                   locale="kk-KZ") as page:
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#login p")).to_have_text("Алдымен кітап беру бетіне кіріңіз.")


def test_a_reader_books_online_and_the_branch_desk_shows_it(branch: Branch, browser) -> None:
    with open_page(browser, branch.cloud + "/catalogue/login", viewport=PHONE,
                   locale="en-GB") as page:
        page.fill("input[name=card]", "R0002")
        page.fill("input[name=pin]", "4321")
        page.click("form button[type=submit]")
        page.goto(branch.cloud + "/catalogue/services")
        item = page.locator("li[data-session='S-ws']")
        expect(item.locator(".why")).to_have_text("40 % off: Partner staff")
        screenshot(page, "catalogue-services")
        item.locator("button[type=submit]").click()
        expect(page.locator(".flash.good")).to_have_text("You are booked. Price: 1 200 ₸.")
        expect(page.locator("#services li[data-booking]")).to_contain_text("Business basics")
        expect(page.locator("#services")).to_contain_text("1 200 ₸ to pay at the desk")
    wait_for(lambda: any(b["reader"] == "R0002" for b in api(
        "GET", branch.edge + "/api/sessions/S-ws")[1]["bookings"]), 20,
        what="the online booking to reach the branch")
    [b] = api("GET", branch.edge + "/api/sessions/S-ws")[1]["bookings"]
    assert (b["node"], b["seat"], b["owed"], b["confirmed"]) == ("cloud", "seated", 120_000, True)
