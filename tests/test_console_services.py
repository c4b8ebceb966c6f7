"""Services in the ops console: who may configure what (branch staff cannot touch discounts),
sessions and rosters per branch, attendance and cancellations that reach the feed and the
audit trail, and the report's figures against a month whose every number is known."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import feed, service_actions
from cloud import service_models as m
from cloud import store as cs
from tests.cloud_fixtures import NodeLog

ADMIN = ("asel", "admin-password-1")
OPERATOR = ("olga", "operator-password-1")
BRANCH = ("dana", "branch-password-1")     # branch staff of b-central
HERE, THERE = "b-central", "b-zhetisu"
PIN = "2468"
W, C = 200_000, 300_000


def _booked(bid: str, reader: str, session: str, base: int, price: int, paid: int,
            seat: str = "seated") -> dict[str, Any]:
    return {"booking_id": bid, "session": session, "reader": reader, "seat": seat,
            "base": base, "percent": round(100 * (base - price) / base), "price": price,
            "paid": paid, "payment_id": f"P-{bid}" if paid else None}


def seed(path: Path) -> None:
    """A month with known figures (see test_the_report_s_figures_are_the_month_s)."""
    from cloud import accounts

    cs.connect(f"sqlite:///{path}")
    cs.seed(nodes=[{"id": HERE, "kind": "branch", "name": "Central"},
                   {"id": THERE, "kind": "branch", "name": "Zhetisu"}],
            titles=[], copies=[],
            readers=[{"card": f"R{i}", "name": f"Оқырман {i}", "category": cat,
                      "pin_hash": accounts.hash_pin(PIN)}
                     for i, cat in enumerate(["adult", "adult", "partner_staff", "adult",
                                              "adult", "adult", "supported", "adult"])])
    accounts.add_staff(*ADMIN, "administrator", name="Асель")
    accounts.add_staff(*OPERATOR, "operator", name="Ольга")
    accounts.add_staff(*BRANCH, "branch_staff", HERE, name="Дана")
    sa = service_actions
    sa.save_service(sa.ServiceForm("ws-business", "workshop", ("Бизнес", "Бизнес", "Business"),
                                   W, capacity=3))
    sa.save_service(sa.ServiceForm("cn-legal", "counselling", ("Заң", "Юрист", "Legal advice"),
                                   C))
    sa.save_service(sa.ServiceForm("membership-year", "membership",
                                   ("Абонемент", "Абонемент", "Membership"), 500_000,
                                   term_days=365))
    now = datetime.now(UTC).replace(microsecond=0)
    sa.schedule("ws-business", HERE, now - timedelta(days=3), now - timedelta(days=3, hours=-2),
                room="Hall 2", session_id="S-ws")
    sa.schedule("cn-legal", THERE, now - timedelta(days=5), now - timedelta(days=5, hours=-1),
                room="Room 4", host="Counsellor", session_id="S-cn")
    sa.schedule("ws-business", HERE, now - timedelta(days=60),
                now - timedelta(days=60, hours=-2), session_id="S-old")
    sa.schedule("ws-business", HERE, now + timedelta(days=2), now + timedelta(days=2, hours=2),
                session_id="S-next")
    sa.schedule("cn-legal", THERE, now + timedelta(days=4), now + timedelta(days=4, hours=1),
                room="Room 4", host="A. Counsellor", session_id="S-slot")
    here = NodeLog(HERE, now - timedelta(days=6))
    here.send("service.booked", _booked("B1", "R1", "S-ws", W, W, W))
    here.send("service.booked", _booked("B2", "R2", "S-ws", W, 120_000, 120_000))
    here.send("service.booked", _booked("B3", "R3", "S-ws", W, W, 0))
    here.send("service.booked", _booked("B4", "R4", "S-ws", W, W, 0))
    here.send("service.booked", _booked("B5", "R5", "S-ws", W, W, 0, "waitlisted"))
    assert m.Booking.get_by_id("B5").seat == "waitlisted"     # 3 seats, 4 bookings
    # B4 lost its seat to the three earlier bookings; cancelled, it leaves B5 still waiting.
    here.send("service.cancelled", {"booking_id": "B4", "session": "S-ws", "reader": "R4"})
    for bid, reader, outcome in (("B1", "R1", "attended"), ("B2", "R2", "no_show")):
        here.send("service.attended", {"booking_id": bid, "session": "S-ws", "reader": reader,
                                       "outcome": outcome}, at=now - timedelta(days=3))
    there = NodeLog(THERE, now - timedelta(days=7))
    there.send("service.booked", _booked("B6", "R1", "S-cn", C, 210_000, 210_000))
    there.send("service.attended", {"booking_id": "B6", "session": "S-cn", "reader": "R1",
                                    "outcome": "attended"}, at=now - timedelta(days=5))
    sold = {"service": "membership-year", "base": 500_000, "rule": ""}
    here.send("membership.sold", {**sold, "membership_id": "M1", "reader": "R6",
                                  "starts": (now - timedelta(days=2)).date(),
                                  "ends": (now + timedelta(days=362)).date(),
                                  "percent": 100, "price": 0}, at=now - timedelta(days=2))
    here.send("membership.sold", {**sold, "membership_id": "M2", "reader": "R7",
                                  "starts": (now - timedelta(days=2)).date(),
                                  "ends": (now + timedelta(days=362)).date(), "percent": 0,
                                  "price": 500_000, "paid": 500_000, "payment_id": "PM2"},
              at=now - timedelta(days=2))
    NodeLog(HERE, now - timedelta(days=62)).send(
        "service.booked", _booked("B-old", "R1", "S-old", W, W, W))
    cs.db.close()


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console-services") / "cloud.db"
    seed(path)
    return path


@pytest.fixture
def app(template_db: Path, tmp_path: Path) -> Iterator[Any]:
    import shutil

    from cloud.app import create_app

    db = tmp_path / "cloud.db"
    shutil.copy(template_db, db)
    yield create_app({"DATABASE_URL": f"sqlite:///{db}", "START_CONSUMER": False,
                      "TESTING": True})
    cs.db.close()


def login(app: Any, user: tuple[str, str]) -> tuple[Any, str]:
    client = app.test_client()
    client.set_cookie("lang", "en")
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/console/login", data={"username": user[0], "password": user[1],
                                            "csrf": token})
    assert r.status_code == 302
    page = client.get("/console/services").get_data(as_text=True)
    return client, re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def audit(action: str) -> list[cs.AuditEntry]:
    return list(cs.AuditEntry.select().where(cs.AuditEntry.action == action))


def test_the_report_s_figures_are_the_month_s(app) -> None:
    from cloud import service_report

    rep = service_report.compute(30)
    t = rep.total
    # Seated: B1, B2, B3 (the first three by clock) and B6; attended B1 and B6; B2 did not
    # come; B3 is not marked yet. The next session has not started, the old one is too old.
    assert (t.sessions, t.seated, t.attended, t.no_show, t.unmarked) == (2, 4, 2, 1, 1)
    assert t.revenue == W + 120_000 + 210_000 + 500_000       # the old session is outside
    assert t.discounts == 80_000 + 90_000 + 500_000           # B2, B6, the free membership
    assert t.sold == 2 and t.no_show_rate == 33
    by_cat = {ln.key: (ln.revenue, ln.discounts, ln.sold) for ln in rep.by_category}
    assert by_cat["supported"] == (0, 500_000, 1)
    assert by_cat["partner_staff"] == (120_000, 80_000, 0)
    assert by_cat["adult"] == (W + 210_000 + 500_000, 90_000, 1)
    here = service_report.compute(30, HERE)
    assert (here.total.revenue, here.total.discounts) == (W + 120_000 + 500_000, 580_000)


def test_branch_staff_see_their_branch_and_cannot_configure(app) -> None:
    client, token = login(app, BRANCH)
    assert client.get("/console/discounts").status_code == 200
    for url, data in (("/console/discounts", {"category": "adult", "kind": "workshop",
                                              "percent": "50"}),
                      ("/console/partners", {"id": "p-x", "name": "X"}),
                      ("/console/services", {"id": "ws-x", "kind": "workshop"}),
                      ("/console/partners/reader", {"card": "R1", "category": "supported"})):
        assert client.post(url, data={**data, "csrf": token}).status_code == 403, url
    assert m.DiscountRule.select().count() == 0 and audit("discount.save") == []
    assert client.get("/console/sessions/S-cn").status_code == 403        # another branch's
    page = client.get("/console/services").get_data(as_text=True)
    assert 'data-session="S-next"' in page and "S-cn" not in page
    # The report is their branch's whatever they ask for.
    page = client.get(f"/console/services/report?branch={THERE}").get_data(as_text=True)
    assert re.search(r'id="t-revenue">8\D?200', page), page[:2000]
    # Their own branch's roster: attendance, with the trail and the feed.
    rev = feed.current_rev()
    r = client.post("/console/bookings/B3/attendance", data={"outcome": "attended",
                                                             "csrf": token})
    assert r.status_code == 302
    assert m.Booking.get_by_id("B3").attendance == "attended"
    [entry] = audit("booking.attendance")
    assert entry.actor == "dana" and entry.node == HERE
    assert [c["key"] for c in feed.changes_for(THERE, rev)["changes"]
            if c["entity"] == "booking"] == ["B3"]
    assert client.post("/console/bookings/B6/attendance",
                       data={"outcome": "no_show", "csrf": token}).status_code == 403


def test_an_administrator_configures_discounts_partners_and_services(app) -> None:
    client, token = login(app, ADMIN)
    rev = feed.current_rev()
    r = client.post("/console/discounts", data={
        "category": "pensioner", "kind": "counselling", "percent": "50", "partner": "*",
        "service": "*", "valid_from": "2026-12-01", "note": "pensioners' month",
        "csrf": token})
    assert r.status_code == 302
    rule = m.DiscountRule.get()
    assert (rule.category, rule.kind, rule.percent, str(rule.valid_from), rule.created_by) == (
        "pensioner", "counselling", 50, "2026-12-01", "asel")
    assert [c["entity"] for c in feed.changes_for(HERE, rev)["changes"]] == ["discount"]
    assert "pensioner" in audit("discount.save")[0].detail
    # Bad input is refused with the reason and changes nothing.
    r = client.post("/console/discounts", data={"category": "adult", "kind": "workshop",
                                                "percent": "150", "csrf": token},
                    follow_redirects=True)
    assert "percentage" in r.get_data(as_text=True) and m.DiscountRule.select().count() == 1
    client.post("/console/partners", data={"id": "p-umit", "name": "Үміт", "csrf": token})
    client.post("/console/partners/reader", data={"card": "R3", "category": "partner_staff",
                                                  "partner": "p-umit", "csrf": token})
    assert cs.Reader.get_by_id("R3").partner == "p-umit"
    page = client.get("/console/discounts").get_data(as_text=True)
    assert 'data-partner="p-umit"' in page and 'data-rule="' in page
    r = client.post("/console/services", data={
        "id": "ev-poetry", "kind": "event", "name_kk": "Поэзия", "name_ru": "Поэзия",
        "name_en": "Poetry", "price": "1 500,50", "capacity": "40", "active": "1",
        "csrf": token})
    assert r.status_code == 302 and m.Service.get_by_id("ev-poetry").price == 150_050
    client.post(f"/console/discounts/{rule.id}/delete", data={"csrf": token})
    assert m.DiscountRule.select().count() == 0 and len(audit("discount.delete")) == 1


def test_an_operator_runs_sessions_anywhere_but_does_not_set_prices(app) -> None:
    client, token = login(app, OPERATOR)
    r = client.post("/console/sessions", data={
        "service": "cn-legal", "branch": THERE, "time": "10:00",
        "day": (datetime.now(UTC) + timedelta(days=30)).date().isoformat(),
        "minutes": "45", "room": "Room 7", "host": "A. Counsellor", "csrf": token})
    assert r.status_code == 302
    x = m.ServiceSession.get((m.ServiceSession.branch == THERE)
                             & (m.ServiceSession.room == "Room 7"))
    assert x.capacity == 1 and (x.ends_at - x.starts_at) == timedelta(minutes=45)
    assert client.post("/console/discounts", data={"category": "adult", "kind": "*",
                                                   "percent": "5", "csrf": token}
                       ).status_code == 403
    r = client.post("/console/sessions/S-next/cancel", data={"reason": "the hall floods",
                                                             "csrf": token})
    assert r.status_code == 302 and m.ServiceSession.get_by_id("S-next").status == "cancelled"
    page = client.get("/console/sessions/S-ws").get_data(as_text=True)
    assert page.count("data-booking=") == 5


def test_the_report_page_draws_and_exports(app) -> None:
    client, _ = login(app, OPERATOR)
    page = client.get("/console/services/report?days=30").get_data(as_text=True)
    assert page.count("<svg") >= 4 and "<script>" not in page and " style=" not in page
    assert 'data-service="ws-business"' in page and 'data-category="supported"' in page
    r = client.get("/console/services/report?days=30&format=csv")
    text = r.get_data(as_text=True)
    assert text.startswith("\ufeff") and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert {row["session"] for row in rows} == {"S-ws", "S-cn"}
    b2 = next(row for row in rows if row["reader"] == "R2")
    assert (b2["discount_tenge"], b2["paid_tenge"], b2["attendance"]) == ("800.00", "1200.00",
                                                                         "no_show")
    for lang in ("kk", "ru"):
        client.set_cookie("lang", lang)
        assert client.get("/console/services/report").status_code == 200


def test_every_services_word_exists_in_three_languages() -> None:
    from cloud import i18n
    from cloud.console import words  # noqa: F401 - registers the console's rows

    root = Path(__file__).resolve().parent.parent / "cloud"
    console = root / "templates/console"
    files = [console / name for name in ("services.html", "_services_nav.html", "session.html",
                                         "discounts.html", "service_report.html")]
    files += [root / "console/services.py", root / "catalogue_services.py",
              *root.glob("templates/catalogue/*services*.html")]
    used = set()
    for f in files:
        if f.exists():
            used |= set(re.findall(r"""\bt[r]?\(["']([a-z0-9_.]+[a-z0-9_])["']""", f.read_text()))
    dynamic = {f"{p}{k}" for p, ks in (
        ("sv.c.cat.", ("any", "member")), ("sv.c.att.", ("attended", "no_show")),
        ("sv.c.target.", ("any", "service", "membership", "counselling", "workshop", "event",
                          "fine", "replacement")),
        ("sv.c.seat.", ("seated", "waitlisted")), ("sv.c.status.", ("cancelled", "duplicate")),
        ("sv.kind.", ("membership", "counselling", "workshop", "event")),
        ("sv.p.price.", ("free", "full", "discount")),
        ("sv.notice.", ("seated.subject", "seated.body", "waitlisted.subject",
                        "waitlisted.body", "cancelled.subject", "cancelled.body"))) for k in ks}
    assert not sorted(k for k in used | dynamic if not i18n.known(k))
    for key in used | dynamic:
        texts = [i18n.t(key, lang) for lang in i18n.LANGS]
        assert all(x.strip() for x in texts), key
        holes = [set(re.findall(r"\{(\w+)\}", x)) for x in texts]
        assert holes[0] == holes[1] == holes[2], key
