"""A branch's desk in headless Chromium, against a whole node: broker, cloud and the branch's
edge. The test is the librarian: log in, lend, take back, look up, register, take money,
hand out a reservation, and keep lending when the link is gone."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kitap.procs import wait_for
from tests import browser as pw
from tests.browser import DESK, cloud_action, expect, open_page, screenshot
from tests.conftest import api, library_day, seed_cloud

pytestmark = pytest.mark.integration

browser = pw.browser_fixture
STAFF = ("aliya", "kitap-desk-2026")
# Copy barcode -> title id: C10001..C10008 on the branch's shelves, one per title.
SHELF = {f"C1000{i}": f"T00{i}" for i in range(1, 9)}


@dataclass
class Branch:
    """A running branch node."""

    edge: str
    cloud: str
    cloud_db: str


@pytest.fixture
def branch(tmp_path: Path, broker, network) -> Branch:
    """b-test with SHELF, READERS and one staff account, its broker and cloud running."""
    from edge import auth, store

    fund = pw.fund("b-test", [{"barcode": c, "title_id": t} for c, t in SHELF.items()])
    db_url = seed_cloud(tmp_path / "cloud.db", fund)
    edge_db = tmp_path / "edge.db"
    es = store.EdgeStore("b-test", str(edge_db))
    es.seed(titles=fund["titles"], copies=fund["copies"], readers=fund["readers"])
    auth.add_staff(*STAFF)
    store.db.close()
    broker.start()
    cloud = network.cloud(db_url)
    edge = network.edge("b-test", "branch", edge_db)
    wait_for(lambda: api("GET", edge + "/api/status")[1]["feed_rev"] > 0, 20,
             what="the node's first snapshot")
    return Branch(edge, cloud, db_url)


def log_in(page: Any) -> None:
    """Log in as the branch's librarian."""
    page.fill("#login-user", STAFF[0])
    page.fill("#login-password", STAFF[1])
    page.click("#login-form button[type=submit]")
    expect(page.locator("#work")).to_be_visible()


def due_in(days: int) -> str:
    """A due date as the desk shows it."""
    return library_day(days).strftime("%d.%m.%Y")


def test_librarian_lends_returns_registers_takes_payment_and_hands_out_a_hold(
        branch: Branch, browser) -> None:
    from cloud import actions

    with open_page(browser, branch.edge + "/desk", viewport=DESK, locale="ru-RU") as page:
        # Russian from the browser's Accept-Language; a wrong password is refused with reason.
        expect(page.locator("#login h1")).to_have_text("Вход для сотрудников")
        page.fill("#login-user", STAFF[0])
        page.fill("#login-password", "not-the-password")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-msg strong")).to_have_text("Вход не выполнен")
        expect(page.locator("#login-msg .detail")).to_have_text("Wrong user name or password.")
        log_in(page)
        expect(page.locator("#who-name")).to_have_text(STAFF[0])
        expect(page.locator("#chip-link")).to_have_text("Связь: есть")

        # Check out as a scanner types: card, Enter, barcode, Enter.
        page.fill("#co-card", "R0001")
        page.press("#co-card", "Enter")
        expect(page.locator("#co-copy")).to_be_focused()
        page.fill("#co-copy", "C10001")
        page.press("#co-copy", "Enter")
        expect(page.locator("#checkout-msg")).to_have_text(
            f"Выдано: «Абай жолы» (C10001) — R0001, вернуть до {due_in(21)}")
        expect(page.locator("#checkout-msg")).to_have_class(re.compile(r"\bok\b"))

        # A refusal shows the reason in Russian and the API's own words.
        page.fill("#co-card", "R0002")
        page.fill("#co-copy", "C10001")
        page.press("#co-copy", "Enter")
        expect(page.locator("#checkout-msg strong")).to_have_text("Экземпляр уже выдан")
        expect(page.locator("#checkout-msg .detail")).to_have_text("This copy is already on loan.")

        # The reader: her loan with its due date, and how fresh the node's knowledge is.
        page.fill("#lk-card", "R0001")
        page.press("#lk-card", "Enter")
        expect(page.locator("#pf-name")).to_have_text("Айгерим Сейітқызы")
        expect(page.locator("#pf-state")).to_have_text("Активен")
        loan = page.locator("#pf-loans tr[data-copy='C10001']")
        expect(loan).to_contain_text("Абай жолы")
        expect(loan).to_contain_text(due_in(21))
        expect(page.locator("#pf-asof")).to_contain_text("по данным этого узла на")
        loan.locator("button").click()
        expect(page.locator("#reader-msg")).to_have_text(f"Продлено: C10001, до {due_in(21)}")
        expect(loan.locator("td").nth(3)).to_have_text("1")

        # Check in: the loan is gone from her record.
        page.fill("#ci-copy", "C10001")
        page.press("#ci-copy", "Enter")
        expect(page.locator("#checkin-msg strong")).to_have_text("Принято: C10001")
        # ... and where the book goes now, as a sorter would be told: it floats, it stays.
        expect(page.locator("#checkin-msg .detail")).to_have_text("Поставьте на полку.")
        expect(page.locator("#pf-loans")).to_have_text("Нет")

        # A new reader gets a card; the same card twice is refused.
        page.fill("#rg-card", "NEW-0001")
        page.fill("#rg-name", "Дина Ахметова")
        page.select_option("#rg-category", "student")
        page.fill("#rg-pin", "5678")
        page.click("#register-form button[type=submit]")
        expect(page.locator("#register-msg")).to_have_text(
            "Зарегистрирован: Дина Ахметова, билет NEW-0001")
        page.fill("#rg-card", "NEW-0001")
        page.fill("#rg-name", "Кто-то Другой")
        page.fill("#rg-pin", "1111")
        page.click("#register-form button[type=submit]")
        expect(page.locator("#register-msg strong")).to_have_text("Билет уже выдан")
        page.fill("#lk-card", "NEW-0001")
        page.press("#lk-card", "Enter")
        expect(page.locator("#pf-category")).to_have_text("Студент")

        # A payment for a service, in tenge; the API gets tiyn.
        page.fill("#pay-card", "R0001")
        page.fill("#pay-amount", "1500")
        page.select_option("#pay-kind", "service")
        page.fill("#pay-desc", "Консультация")
        page.click("#payment-form button[type=submit]")
        expect(page.locator("#payment-msg")).to_have_text("Оплата принята: 1\u202f500 ₸ — R0001")
        paid = api("GET", branch.edge + "/api/desk/journal")[1]["events"][0]
        assert (paid["type"], paid["amount"], paid["card"]) == ("fee.paid", 150000, "R0001")

        # A reservation placed in the cloud reaches the desk and is handed out.
        cloud_action(branch.cloud_db, actions.place_hold, "R0002", "T003", "b-test")
        wait_for(lambda: api("GET", branch.edge + "/api/holds")[1], 20,
                 what="the hold reached the node")
        page.click("#holds-refresh")
        row = page.locator("#holds tr", has_text="Мастер и Маргарита")
        expect(row).to_contain_text("Нұрлан Әбдіров")
        expect(row).to_contain_text("Готова")
        row.locator("button").click()
        expect(page.locator("#holds-msg")).to_have_text(
            f"Выдано по брони: «Мастер и Маргарита» — R0002, вернуть до {due_in(21)}")
        expect(page.locator("#holds")).to_have_text("Нет")

        page.fill("#lk-card", "R0002")
        page.press("#lk-card", "Enter")
        expect(page.locator("#pf-loans tr[data-copy='C10003']")).to_contain_text(
            "Мастер и Маргарита")
        expect(page.locator("#journal li").first).to_contain_text("Выдано по брони")
        screenshot(page, "desk")

    profile = api("GET", branch.edge + "/api/readers/R0002")[1]
    assert [ln["copy"] for ln in profile["loans"]] == ["C10003"] and profile["holds"] == []


def test_the_desk_keeps_lending_with_the_broker_down(branch: Branch, broker, browser) -> None:
    with open_page(browser, branch.edge + "/desk", viewport=DESK, locale="en-GB") as page:
        log_in(page)
        expect(page.locator("#chip-link")).to_have_text("Link: online")
        expect(page.locator("#chip-outbox")).to_have_text("Outbox: 0")

        broker.kill()
        expect(page.locator("#chip-link")).to_have_text("Offline — working locally")
        page.fill("#co-card", "R0003")
        page.press("#co-card", "Enter")
        page.fill("#co-copy", "C10004")
        page.press("#co-copy", "Enter")
        expect(page.locator("#checkout-msg")).to_have_text(
            f"Checked out: “The Little Prince” (C10004) to R0003, due {due_in(21)}")
        expect(page.locator("#chip-outbox")).to_have_text("Outbox: 1")
        first = page.locator("#journal li").first
        expect(first).to_contain_text("The Little Prince")
        expect(first.locator(".sync")).to_have_text("waiting to send")

        # The link comes back: the outbox drains to the cloud by itself.
        broker.start()
        expect(page.locator("#chip-link")).to_have_text("Link: online", timeout=30_000)
        expect(page.locator("#chip-outbox")).to_have_text("Outbox: 0", timeout=30_000)
        expect(first.locator(".sync")).to_have_text("in the cloud")

        page.click("#logout")
        expect(page.locator("#login")).to_be_visible()
    copy = api("GET", branch.cloud + "/api/copies/C10004")[1]
    assert copy["status"] == "on_loan"


def test_every_string_is_in_three_languages_with_the_same_placeholders() -> None:
    from edge import i18n

    tables = {lang: i18n.strings(lang) for lang in i18n.LANGS}
    for key, kk in tables["kk"].items():
        texts = [tables[lang][key] for lang in i18n.LANGS]
        assert all(t.strip() for t in texts), key
        holes = {lang: set(re.findall(r"\{(\w+)\}", tables[lang][key])) for lang in i18n.LANGS}
        assert holes["ru"] == holes["en"] == set(re.findall(r"\{(\w+)\}", kk)), key
    assert i18n.t("k.pin.wrong", "ru", n=2) == "Неверный PIN-код. Осталось попыток: 2."


@pytest.mark.parametrize(("url", "headers", "accept", "lang"), [
    ("/desk?lang=ru", {"Accept-Language": "en", "Cookie": "lang=en"}, True, "ru"),
    ("/desk", {"Accept-Language": "ru", "Cookie": "lang=en"}, True, "en"),
    ("/desk", {"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"}, True, "ru"),
    ("/desk?lang=de", {"Accept-Language": "de-DE"}, True, "kk"),
    ("/kiosk", {"Accept-Language": "ru"}, False, "kk"),       # a public screen: its own default
])
def test_the_language_comes_from_the_link_the_cookie_the_browser_then_kazakh(
        url: str, headers: dict[str, str], accept: bool, lang: str) -> None:
    from flask import Flask

    from edge import i18n

    with Flask(__name__).test_request_context(url, headers=headers):
        assert i18n.pick(accept_header=accept) == lang
