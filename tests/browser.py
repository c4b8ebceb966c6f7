"""Playwright on the OS's Chromium for the browser tests, and the sample fund they share.

Chromium comes from Debian (``make setup`` installs it); Playwright's own
browser download is never used. One browser per test module, a fresh context
(cookies, viewport, language) per page.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is a dev dependency: pip install -e '.[dev]'")

CHROMIUM = "/usr/bin/chromium"
# Headless, offline, quiet: nothing phones home from a test run.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# Waits for what a person would see: the pages poll the node (0.5 s at the kiosk,
# 4 s for the desk's status), and a dispense goes over a serial line.
EXPECT_MS = 15_000
PORTRAIT = {"width": 1080, "height": 1920}    # the machines' touch screens
LANDSCAPE = {"width": 1280, "height": 800}    # the smaller kiosk screens, and a desk PC
DESK = {"width": 1440, "height": 1000}

expect = sync_api.expect
expect.set_options(timeout=EXPECT_MS)


def _browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


# A test module takes this fixture with ``browser = tests.browser.browser_fixture``.
browser_fixture = pytest.fixture(scope="module", name="browser")(_browser)


@contextmanager
def open_page(browser: Any, url: str, *, viewport: dict[str, int] = PORTRAIT,
              locale: str = "kk-KZ") -> Iterator[Any]:
    """A page in a fresh context at ``url``; the context is closed afterwards."""
    context = browser.new_context(viewport=viewport, locale=locale, device_scale_factor=1)
    context.set_default_timeout(EXPECT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        yield page
        assert not errors, f"JavaScript errors on {url}: {errors}"
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    """Save what the page shows now as docs/screenshots/``name``.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def cloud_action(db_url: str, fn: Any, *args: Any) -> Any:
    """Run a cloud staff action (cloud.actions) on the running cloud's database."""
    from cloud import store

    store.connect(db_url)
    try:
        return fn(*args)
    finally:
        store.db.close()


def pin_hash(pin: str) -> str:
    """A reader's PIN as the cloud and the nodes store it."""
    from edge.store import hash_pin

    return hash_pin(pin)


# Titles the screenshots show: the city's readers read in three languages.
TITLES = [
    {"id": "T001", "title": "Абай жолы", "author": "Мұхтар Әуезов"},
    {"id": "T002", "title": "Қан мен тер", "author": "Әбдіжәміл Нұрпейісов"},
    {"id": "T003", "title": "Мастер и Маргарита", "author": "Михаил Булгаков"},
    {"id": "T004", "title": "The Little Prince", "author": "Antoine de Saint-Exupéry"},
    {"id": "T005", "title": "Көшпенділер", "author": "Ілияс Есенберлин"},
    {"id": "T006", "title": "Война и мир", "author": "Лев Толстой"},
    {"id": "T007", "title": "Менің атым Қожа", "author": "Бердібек Соқпақбаев"},
    {"id": "T008", "title": "Ақ кеме", "author": "Шыңғыс Айтматов"},
]
READERS = [
    {"card": "R0001", "name": "Айгерим Сейітқызы", "pin": "1234"},
    {"card": "R0002", "name": "Нұрлан Әбдіров", "pin": "4321"},
    {"card": "R0003", "name": "Дмитрий Ким", "pin": "2580"},
    {"card": "R0004", "name": "Сәуле Жұмабаева", "pin": "1111"},
]


def fund(node: str, copies: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """TITLES, READERS (with their PINs hashed) and ``copies`` at ``node``."""
    return {"titles": [{**t, "item_type": "book"} for t in TITLES],
            "copies": copies,
            "readers": [{"card": r["card"], "name": r["name"], "category": "adult",
                         "pin_hash": pin_hash(r["pin"])} for r in READERS],
            "node": [node]}


# The elements that reach past the right edge of the window (a page that makes a
# phone scroll sideways), described for the failure message.
_OVERFLOWING = """() => {
  const w = window.innerWidth, out = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.right > w + 1 && r.width > 0) {
      out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
               (el.className && typeof el.className === "string" ? "." + el.className.trim()
                .replace(/ +/g, ".") : "") + " right=" + Math.round(r.right) + " w=" + w +
               " text=" + (el.textContent || "").trim().slice(0, 40));
    }
  }
  return out.slice(0, 8);
}"""


def fits_the_width(page: Any) -> list[str]:
    """[] if the page does not scroll sideways; else what sticks out, for the message."""
    if page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
        return []
    return list(page.evaluate(_OVERFLOWING)) or ["(the page is wider than the window)"]

