"""Services at a branch desk, offline: prices by the one rule, a booking with its payment in
one transaction, seats from the cloud's bookings plus the desk's own, the cloud's word on a
seat coming back down the feed while what the desk did stays, memberships and renewals, the
lapsed-membership policy at checkout, attendance — and the desk's JSON API and page."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import actions, feed, service_actions
from cloud import service_models as cm
from cloud import store as cs
from cloud.ingest import ingest
from edge import service_records as er
from edge import store as es
from edge.feed import FeedApplier
from edge.services import ServiceDesk
from protocol.envelope import parse_envelope
from protocol.feed import decode_down, encode_down
from tests.conftest import TOKEN

NODE = "b-a"
PRICE = 200_000


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[None]:
    """A cloud with a partner, a workshop (2 seats) at b-a, counselling and a membership."""
    cs.connect(f"sqlite:///{tmp_path / 'cloud.db'}")
    cs.seed(nodes=[{"id": NODE, "kind": "branch", "name": "Abai"},
                   {"id": "b-b", "kind": "branch"}],
            titles=[{"id": "T1", "title": "Абай жолы", "item_type": "book"}],
            copies=[{"barcode": "C1", "title_id": "T1", "status": "on_shelf",
                     "location_node": NODE}],
            readers=[{"card": f"R{i}", "name": f"Reader {i}", "category": "adult"}
                     for i in range(1, 6)])
    service_actions.save_partner("p-umit", "Үміт қоры")
    service_actions.set_reader_partner("R5", "partner_staff", "p-umit")
    service_actions.save_service(service_actions.ServiceForm(
        "ws-business", "workshop", ("Бизнес", "Бизнес", "Business basics"), PRICE, capacity=2))
    service_actions.save_service(service_actions.ServiceForm(
        "membership-year", "membership", ("Абонемент", "Абонемент", "Yearly membership"),
        500_000, term_days=365))
    now = datetime.now(UTC).replace(microsecond=0)
    service_actions.schedule("ws-business", NODE, now + timedelta(days=1),
                             now + timedelta(days=1, hours=2), room="Hall 2", session_id="S1")
    service_actions.schedule("ws-business", NODE, now - timedelta(minutes=30),
                             now + timedelta(minutes=90), room="Hall 1", session_id="S-now")
    service_actions.schedule("ws-business", "b-b", now - timedelta(minutes=30),
                             now + timedelta(minutes=90), session_id="S-there")
    yield
    cs.db.close()


@pytest.fixture
def node(tmp_path: Path, cloud: None) -> Iterator[tuple[es.EdgeStore, FeedApplier]]:
    store = es.EdgeStore(NODE, str(tmp_path / "edge.db"))
    applier = FeedApplier(store)
    for part in feed.snapshot(NODE):
        applier.add_snapshot_part(decode_down(encode_down("snapshot", **part)))
    yield store, applier
    es.db.close()


def sync(store: es.EdgeStore, applier: FeedApplier, *, up: bool = True) -> None:
    """The link comes back: the node's events reach the cloud (acked), then the feed comes down."""
    if up:
        rows = list(es.Outbox.select().where(es.Outbox.acked == False)  # noqa: E712
                    .order_by(es.Outbox.seq))
        if rows:
            result = ingest(NODE, [parse_envelope(json.loads(r.envelope)) for r in rows])
            store.mark_acked(result.applied_seq)
    assert applier.apply_changes(decode_down(encode_down("changes",
                                                         **feed.changes_for(NODE, applier.rev()))))


def events(type_: str) -> list[dict[str, Any]]:
    return [json.loads(r.envelope)["body"] for r in es.Outbox.select().where(
        es.Outbox.type == type_).order_by(es.Outbox.seq)]


def test_a_booking_takes_its_payment_in_one_transaction_at_the_reader_s_price(node) -> None:
    store, _ = node
    desk = ServiceDesk(store)
    r = desk.book("R5", "S1").data               # partner staff: 40 % off services
    assert (r["seat"], r["price"], r["paid"], r["owed"]) == ("seated", 120_000, 120_000, 0)
    assert r["quote"]["reason"] == "price.discount"
    # The network's default rule (any partner's staff), as the receipt explains it.
    assert r["quote"]["reason_args"] == {"percent": 40, "category": "partner_staff",
                                         "partner": ""}
    [pay] = es.Payment.select().where(es.Payment.kind == "service")
    assert (pay.amount, pay.reader) == (120_000, "R5")
    [ev] = events("service.booked")
    assert (ev["base"], ev["percent"], ev["price"], ev["paid"], ev["payment_id"]) == (
        PRICE, 40, 120_000, 120_000, pay.id)
    # Refused: nothing written, not even a payment.
    before = (es.Outbox.select().count(), es.Payment.select().count())
    for card, session, code in (("R5", "S1", "already_booked"), ("R9", "S1", "unknown_reader"),
                                ("R1", "S-gone", "unknown_session")):
        with pytest.raises(es.CirculationRefused) as exc:
            desk.book(card, session)
        assert exc.value.refusal.code == code
    assert (es.Outbox.select().count(), es.Payment.select().count()) == before


def test_the_desk_counts_the_cloud_s_bookings_and_its_own(node) -> None:
    store, applier = node
    desk = ServiceDesk(store)
    service_actions.book_online("R1", "S1")     # online, before the desk goes offline
    sync(store, applier)
    assert desk.book("R2", "S1").data["seat"] == "seated"      # the last seat, offline
    with pytest.raises(es.CirculationRefused) as exc:
        desk.book("R3", "S1")
    assert exc.value.refusal.code == "full"
    waiting = desk.book("R3", "S1", waitlist=True).data
    assert (waiting["seat"], waiting["paid"], waiting["position"]) == ("waitlisted", 0, 1)
    # A cancellation frees a seat, but the reader already waiting comes first.
    mine = er.Booking.get((er.Booking.reader == "R2") & (er.Booking.session == "S1"))
    assert desk.cancel(mine.id)["refunded"] == PRICE
    assert desk.book("R4", "S1", waitlist=True).data["seat"] == "waitlisted"


def test_the_cloud_s_word_on_a_seat_comes_down_and_what_the_desk_did_stays(node) -> None:
    store, applier = node
    desk = ServiceDesk(store)
    sold = desk.book("R2", "S1").data
    desk.book("R3", "S1")
    # Meanwhile, another branch (offline too) sold both seats earlier.
    earlier = datetime.now(UTC) - timedelta(hours=1)
    from tests.cloud_fixtures import NodeLog

    other = NodeLog("b-b", earlier)
    for bid, card in (("X1", "R1"), ("X2", "R4")):
        other.send("service.booked", {"booking_id": bid, "session": "S1", "reader": card,
                                      "seat": "seated", "base": PRICE, "percent": 0,
                                      "price": PRICE})
    # This desk cancels its second booking before its link comes back.
    second = er.Booking.get(er.Booking.reader == "R3")
    desk.cancel(second.id, reason="changed plans")
    sync(store, applier)
    view = desk.roster("S1")
    seats = {b["reader"]: (b["status"], b["seat"], b["confirmed"]) for b in view["bookings"]}
    assert seats == {"R1": ("active", "seated", True), "R4": ("active", "seated", True),
                     "R2": ("active", "waitlisted", True), "R3": ("cancelled", "waitlisted", True)}
    assert view["free"] == 0 and view["cloud_seated"] == 2
    assert desk.reader_services("R2")["bookings"][0]["position"] == 1
    # The cloud told staff, with what was paid.
    exc = cs.StaffException.get(cs.StaffException.kind == "booking_lost_seat")
    assert "R2" in exc.detail and exc.node == NODE
    assert cm.Booking.get_by_id(sold["id"]).paid == PRICE


def test_a_local_cancel_not_yet_acknowledged_survives_the_feed(node) -> None:
    store, applier = node
    desk = ServiceDesk(store)
    b = desk.book("R2", "S1").data
    sync(store, applier)
    desk.cancel(b["id"])
    # The feed brings the cloud's older picture (active) before the cancel reached it.
    service_actions.book_online("R1", "S1")
    sync(store, applier, up=False)
    assert er.Booking.get_by_id(b["id"]).status == "cancelled"
    sync(store, applier)
    assert cm.Booking.get_by_id(b["id"]).status == "cancelled"


def test_memberships_renew_from_the_end_and_make_members_pay_less(node) -> None:
    store, _ = node
    desk = ServiceDesk(store)
    first = desk.sell_membership("R1", "membership-year").data
    today = es.local_day(datetime.now(UTC))   # the library's day, not the OS's
    assert (first["paid"], first["starts"], first["renewal_of"]) == (500_000, today.isoformat(),
                                                                     None)
    again = desk.sell_membership("R1", "membership-year").data
    assert again["starts"] == (datetime.fromisoformat(first["ends"]).date()
                               + timedelta(days=1)).isoformat()
    assert again["renewal_of"] == first["id"]
    [quote] = [s["quote"] for s in desk.sessions(card="R1") if s["id"] == "S1"]
    assert (quote["amount"], quote["reason_args"]["category"]) == (140_000, "member")
    assert [e["paid"] for e in events("membership.sold")] == [500_000, 500_000]


def test_borrowing_needs_a_membership_only_when_the_library_says_so(node) -> None:
    store, applier = node
    assert store.check_checkout("R1", "C1") is None
    actions.set_setting("services.borrow_requires_membership", "1")
    sync(store, applier)
    refusal = store.check_checkout("R1", "C1")
    assert refusal is not None and refusal.code == "no_membership"
    with pytest.raises(es.CirculationRefused):
        store.checkout("R1", "C1")
    ServiceDesk(store).sell_membership("R1", "membership-year")
    assert store.checkout("R1", "C1").copy == "C1"


def test_attendance_is_marked_where_and_when_the_session_is(node) -> None:
    store, applier = node
    desk = ServiceDesk(store)
    here = desk.book("R1", "S-now").data
    coming = desk.book("R1", "S1").data
    there = desk.book("R2", "S-there").data
    assert desk.attend(here["id"], "attended")["attendance"] == "attended"
    for bid, code in ((coming["id"], "not_started"), (there["id"], "other_branch")):
        with pytest.raises(es.CirculationRefused) as exc:
            desk.attend(bid, "no_show")
        assert exc.value.refusal.code == code
    sync(store, applier)
    assert cm.Booking.get_by_id(here["id"]).attendance == "attended"


def test_a_booking_left_unpaid_is_paid_later(node) -> None:
    store, applier = node
    desk = ServiceDesk(store)
    b = desk.book("R1", "S1", pay=False).data
    assert (b["paid"], b["owed"]) == (0, PRICE)
    paid = desk.pay(b["id"])
    assert (paid["amount"], paid["owed"]) == (PRICE, 0)
    with pytest.raises(es.CirculationRefused) as exc:
        desk.pay(b["id"])
    assert exc.value.refusal.code == "nothing_owed"
    sync(store, applier)
    assert cm.Booking.get_by_id(b["id"]).paid == PRICE


# -- the API and the page ---------------------------------------------------------------------

@pytest.fixture
def client(node, tmp_path: Path) -> Any:
    from edge.app import create_app

    store, _ = node
    app = create_app({"NODE_ID": NODE, "NODE_KIND": "branch", "DATABASE": store.path,
                      "START_SYNC": False, "API_TOKEN": TOKEN, "TESTING": True})
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return c


def test_the_desk_api_books_refuses_with_reasons_and_is_documented(client) -> None:
    sessions = client.get("/api/sessions?reader=R5").get_json()
    s1 = next(s for s in sessions if s["id"] == "S1")
    assert (s1["free"], s1["quote"]["amount"], s1["names"]["en"]) == (2, 120_000,
                                                                        "Business basics")
    r = client.post("/api/bookings", json={"reader": "R5", "session": "S1"})
    assert r.status_code == 201 and r.get_json()["paid"] == 120_000
    r = client.post("/api/bookings", json={"reader": "R5", "session": "S1"})
    assert r.status_code == 409 and r.get_json()["errors"]["refusal"] == "already_booked"
    r = client.post("/api/bookings", json={"reader": "R5"})
    assert r.status_code == 422 and "session" in r.get_json()["errors"]["json"]
    r = client.post("/api/bookings/nope/attendance", json={"outcome": "maybe"})
    assert r.status_code == 422
    assert client.get("/api/sessions/nope").status_code == 404
    roster = client.get("/api/sessions/S1").get_json()
    assert [b["reader"] for b in roster["bookings"]] == ["R5"]
    mine = client.get("/api/readers/R5/services").get_json()
    assert mine["bookings"][0]["session"] == "S1" and mine["member"] is False
    r = client.post("/api/memberships", json={"reader": "R5", "service": "membership-year"})
    assert r.status_code == 201 and r.get_json()["quote"]["amount"] == 300_000
    spec = client.get("/api/openapi.json").get_json()
    for path in ("/api/sessions", "/api/bookings", "/api/bookings/{booking_id}/cancel",
                 "/api/bookings/{booking_id}/attendance", "/api/memberships"):
        assert path in spec["paths"], path
    assert "409" in spec["paths"]["/api/bookings"]["post"]["responses"]


def test_the_services_api_needs_staff(node) -> None:
    from edge.app import create_app

    store, _ = node
    app = create_app({"NODE_ID": NODE, "NODE_KIND": "branch", "DATABASE": store.path,
                      "START_SYNC": False, "TESTING": True})
    c = app.test_client()
    assert c.get("/api/sessions").status_code == 401
    assert c.post("/api/bookings", json={"reader": "R1", "session": "S1"}).status_code == 401


def test_the_services_page_is_strict_and_speaks_three_languages(client) -> None:
    for lang, word in (("kk", "Қызметтер"), ("ru", "Услуги"), ("en", "Services")):
        r = client.get(f"/desk/services?lang={lang}")
        html = r.get_data(as_text=True)
        assert r.status_code == 200 and word in html
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert not re.search(r"<script>(?!\s*$)|<script(?![^>]*(src=|type=\"application/json\"))",
                             html)
        assert " style=" not in html and "<style" not in html


def test_every_services_word_is_in_three_languages_and_the_page_uses_only_known_ones() -> None:
    from edge import i18n

    root = Path(__file__).resolve().parent.parent / "edge"
    used = set(re.findall(r"""S\["([a-z0-9_.]+)"\]""", (root / "static/services.js").read_text()))
    used |= set(re.findall(r"""t\("([a-z0-9_.]+)"\)""",
                           (root / "templates/services.html").read_text()))
    dynamic = {f"{p}{k}" for p, ks in (
        ("sv.kind.", ("membership", "counselling", "workshop", "event")),
        ("sv.status.", ("cancelled", "duplicate")), ("sv.att.", ("attended", "no_show")),
        ("sv.", ("attended", "no_show")), ("price.", ("free", "full", "discount")),
        ("price.who.", ("member", "*")),
        ("r.", ("unknown_session", "session_over", "already_booked", "unknown_service", "full",
                "unknown_booking", "other_branch", "not_started", "waitlisted", "nothing_owed",
                "no_membership"))) for k in ks}
    table = i18n.strings("en")
    assert not sorted(k for k in used | dynamic if k not in table)
    for lang in i18n.LANGS:
        words = i18n.strings(lang)
        for key in used | dynamic:
            holes = set(re.findall(r"\{(\w+)\}", words[key]))
            assert words[key].strip() and holes == set(re.findall(r"\{(\w+)\}", table[key])), key
