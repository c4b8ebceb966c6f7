"""Services in the readers' catalogue: the price THIS reader pays and why, booking a seat or
the waiting list, cancelling (the next reader moves up), a free membership issued online and
a paid one left to the desk, the reader's bookings on their account — and nobody else's."""
from __future__ import annotations

import re
from typing import Any

from cloud import feed
from cloud import service_models as m
from cloud import store as cs
from tests.test_console_services import PIN, app, template_db

__all__ = ["app", "template_db"]  # the fixtures this module borrows


def reader(app: Any, card: str) -> tuple[Any, str]:
    client = app.test_client()
    client.set_cookie("lang", "en")
    page = client.get("/catalogue/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/catalogue/login", data={"card": card, "pin": PIN, "csrf": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get("/catalogue/services").get_data(as_text=True)
    return client, re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def session_item(page: str, session_id: str) -> str:
    start = page.index(f'data-session="{session_id}"')
    return page[start:page.index("</li>", start)]


def test_visitors_see_the_base_price_readers_their_own(app) -> None:
    anon = app.test_client()
    anon.set_cookie("lang", "en")
    page = anon.get("/catalogue/services").get_data(as_text=True)
    assert "Sign in to see your price" in page and "2\u00a0000\u00a0₸" in session_item(page,
                                                                                     "S-next")
    r = anon.post("/catalogue/services/S-next/book", data={})
    assert r.status_code in (302, 400)          # no session: login first (or no form token)
    client, _ = reader(app, "R2")               # partner staff: 40 % off
    item = session_item(client.get("/catalogue/services").get_data(as_text=True), "S-next")
    assert "1\u00a0200\u00a0₸" in item and "40 % off: Partner staff" in item
    for lang, words in (("kk", "жеңілдік"), ("ru", "скидка")):
        client.set_cookie("lang", lang)
        assert words in session_item(client.get("/catalogue/services").get_data(as_text=True),
                                     "S-next")


def test_a_reader_books_waits_and_moves_up_when_a_seat_frees(app) -> None:
    first, t1 = reader(app, "R3")
    rev = feed.current_rev()
    r = first.post("/catalogue/services/S-slot/book", data={"csrf": t1, "waitlist": "0"})
    assert r.status_code == 302
    mine = m.Booking.get((m.Booking.reader == "R3") & (m.Booking.session == "S-slot"))
    assert (mine.seat, mine.node, mine.price, mine.paid) == ("seated", "cloud", 300_000, 0)
    # The branch's desk learns of it through the feed.
    assert [c["data"]["seat"] for c in feed.changes_for(
        "b-zhetisu", rev)["changes"] if c["entity"] == "booking"] == ["seated"]
    account = first.get("/catalogue/account").get_data(as_text=True)
    assert "Your seat" in account and "3\u00a0000\u00a0₸ to pay at the desk" in account
    second, t2 = reader(app, "R4")
    page = second.get("/catalogue/services").get_data(as_text=True)
    assert "Join the waiting list" in session_item(page, "S-slot")
    r = second.post("/catalogue/services/S-slot/book", data={"csrf": t2, "waitlist": "0"},
                    follow_redirects=True)
    assert "No seats left" in r.get_data(as_text=True)
    second.post("/catalogue/services/S-slot/book", data={"csrf": t2, "waitlist": "1"})
    assert "No. 1 on the waiting list" in second.get("/catalogue/account").get_data(as_text=True)
    # Nobody cancels another reader's booking; the reader's own cancel moves the line.
    theirs = m.Booking.get((m.Booking.reader == "R4") & (m.Booking.session == "S-slot"))
    assert first.post(f"/catalogue/account/bookings/{theirs.id}/cancel",
                      data={"csrf": t1}).status_code == 404
    first.post(f"/catalogue/account/bookings/{mine.id}/cancel", data={"csrf": t1})
    assert m.Booking.get_by_id(theirs.id).seat == "seated"
    assert "Your seat" in second.get("/catalogue/account").get_data(as_text=True)
    notice = cs.Notice.get((cs.Notice.reader == "R4") & (cs.Notice.kind == "booking_seated"))
    assert "A seat is yours" in notice.subject
    actions = [e.action for e in cs.AuditEntry.select().where(
        cs.AuditEntry.actor.in_(["reader:R3", "reader:R4"]))]
    assert sorted(actions) == ["booking.cancel", "booking.place", "booking.place"]


def test_a_free_membership_is_issued_online_and_a_paid_one_is_bought_at_a_desk(app) -> None:
    supported, t6 = reader(app, "R6")
    page = supported.get("/catalogue/services").get_data(as_text=True)
    assert "Take it free" in page and "100 % off: Supported group" in page
    supported.post("/catalogue/services/memberships/membership-year", data={"csrf": t6})
    [first, again] = sorted(m.Membership.select().where(m.Membership.reader == "R6"),
                            key=lambda x: x.starts)
    assert again.renewal_of == first.id and again.node == "cloud"   # M1 ran already: renewed
    assert "running" in supported.get("/catalogue/account").get_data(as_text=True)
    adult, t3 = reader(app, "R3")
    page = adult.get("/catalogue/services").get_data(as_text=True)
    assert "Buy at any branch desk" in page and "Take it free" not in page
    r = adult.post("/catalogue/services/memberships/membership-year", data={"csrf": t3},
                   follow_redirects=True)
    assert "buy it at any branch desk" in r.get_data(as_text=True)
    assert not m.Membership.select().where(m.Membership.reader == "R3").exists()
