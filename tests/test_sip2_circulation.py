"""SIP2 item messages on a real port, every response field checked: 11, 09, 17, 29, 65.

Each transaction must be the node's normal circulation event: the same rules
refuse it, and the same events land in the outbox.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from edge import store as es
from edge.feed import FeedApplier
from edge.sip2 import accounts
from tests import sip2_client as sc
from tests.conftest import TOKEN
from tests.test_sip2_server import INST, Branch, near_now, start_branch, stop_branch


@pytest.fixture
def branch(tmp_path: Path) -> Iterator[Branch]:
    """A seeded branch node, its link to the cloud down, SIP2 on a free port."""
    b = start_branch(tmp_path, API_TOKEN=TOKEN)
    yield b
    stop_branch(b)


def feed(branch: Branch, changes: list[dict]) -> None:
    """Apply changes as the cloud's feed sends them (the node is at revision 5)."""
    branch.store._set_meta("feed_rev", "5")
    rev = 5 + len(changes)
    for i, ch in enumerate(changes):
        ch["rev"] = 6 + i
    assert FeedApplier(branch.store).apply_changes(
        {"from_rev": 5, "to_rev": rev, "more": False, "changes": changes})


def copy_change(barcode: str, op: str = "upsert", **data: object) -> dict:
    row = {"barcode": barcode, "title_id": "T1", "slot": None} if op == "upsert" else {
        "barcode": barcode}
    return {"entity": "copy", "key": barcode, "op": op, "data": {**row, **data}}


def title_change(title_id: str, **data: object) -> dict:
    t = es.Title.get_by_id(title_id)
    return {"entity": "title", "key": title_id, "op": "upsert", "data": {
        "id": title_id, "title": t.title, "item_type": t.item_type,
        "holds_waiting": t.holds_waiting, **data}}


def day(d: date) -> str:
    return f"{d:%Y%m%d}    235959"


def today() -> date:
    """The library's day: due dates count in it, whatever the OS's zone."""
    return es.local_day(datetime.now(UTC))


def test_checkout_is_a_loan_by_the_nodes_rules(branch: Branch) -> None:
    c = branch.kiosk()
    r = c.checkout(INST, "R0001", "C01", "1234")
    assert near_now(r.fixed.pop("date"))
    assert r.fixed == {"ok": "1", "renewal_ok": "N", "magnetic": "U", "desensitize": "Y"}
    due = today() + timedelta(days=21)
    [event] = branch.events("loan.checkout")
    assert r.fields == {"AO": [INST], "AA": ["R0001"], "AB": ["C01"], "AJ": ["Абай жолы"],
                        "AH": [day(due)], "CK": ["001"], "BK": [event["body"]["loan_id"]],
                        "AF": [f"Due back {due:%d.%m.%Y}."]}
    assert (event["body"]["copy"], event["body"]["reader"], event["body"]["due"]) == \
        ("C01", "R0001", due.isoformat())

    def refused(card: str, item: str, pin: str = "", **kw: str) -> str:
        no = c.checkout(INST, card, item, pin, **kw)
        assert no.fixed == {"ok": "0", "renewal_ok": "N", "magnetic": "U",
                            "desensitize": "N", "date": no.fixed["date"]}
        assert (no["AO"], no["AA"], no["AB"], no["AJ"], no["AH"]) == (INST, card, item, "", "")
        return no.screen

    assert refused("R0001", "C01", "1234") == "This item is already on loan to you."
    assert refused("R0003", "C02") == "The card is blocked: 3 books overdue"
    assert refused("R0001", "H01", "1234") == "This copy is reserved for another reader."
    assert refused("R0001", "C02", "0000") == "Wrong PIN."
    assert refused("R9999", "C02") == "This card is not known here: please ask staff."
    assert refused("R0001", "NOPE") == "This copy is not known here."
    assert refused("R0002", "C01", "5678") == "This copy is already on loan."
    assert len(branch.events("loan.checkout")) == 1

    again = c.checkout(INST, "R0001", "C01", "1234", renew_policy="Y")   # SC renewal policy
    assert (again.fixed["ok"], again.fixed["renewal_ok"]) == ("1", "Y")
    assert len(branch.events("loan.renew")) == 1
    holder = c.checkout(INST, "R0002", "H01", "5678")     # the reader the copy waits for
    assert holder.fixed["ok"] == "1" and holder["AJ"] == "Held title"
    assert [e["type"] for e in branch.events()][-2:] == ["loan.checkout", "hold.picked_up"]


def test_the_loan_limit_shows_in_patron_status(branch: Branch) -> None:
    c = branch.kiosk()
    for i in range(1, 6):                                 # a child may hold 5
        assert c.checkout(INST, "R0005", f"C0{i}", "4321").fixed["ok"] == "1"
    no = c.checkout(INST, "R0005", "C06", "4321")
    assert no.fixed["ok"] == "0" and "5 of 5 loans" in no.screen
    status = c.patron_status(INST, "R0005", "4321").fixed["status"]
    assert status == "Y    Y" + " " * 8     # charge privileges denied, too many items charged


def test_checkin_takes_any_copy_and_tells_the_sorter_where_it_goes(branch: Branch) -> None:
    c = branch.kiosk()
    assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "1"
    back = c.checkin(INST, "C01")
    assert near_now(back.fixed.pop("date"))
    assert back.fixed == {"ok": "1", "resensitize": "Y", "magnetic": "U", "alert": "N"}
    assert back.fields == {"AO": [INST], "AB": ["C01"], "AQ": ["b-test"], "AJ": ["Абай жолы"],
                           "CL": ["S"], "AA": ["R0001"], "CK": ["001"],
                           "AF": ["Thank you: the item is returned."]}
    [ret] = branch.events("loan.return")
    assert (ret["body"]["copy"], ret["body"]["reader"]) == ("C01", "R0001")

    held = c.checkin(INST, "H01")                         # set aside for Ержан
    assert (held.fixed["ok"], held.fixed["alert"]) == ("1", "Y")
    assert held.fields == {"AO": [INST], "AB": ["H01"], "AQ": ["b-test"], "AJ": ["Held title"],
                           "CL": ["H"], "CK": ["001"], "CV": ["01"], "CT": ["hall"],
                           "CY": ["R0002"], "DA": ["Ержан Әбіл"],
                           "AF": ["Reserved for a reader: put it on the hold shelf here."]}
    foreign = c.checkin(INST, "X-OTHER-1")                # never held here: staff look it up
    assert (foreign.fixed["ok"], foreign.fixed["alert"]) == ("1", "Y")
    assert foreign.fields == {"AO": [INST], "AB": ["X-OTHER-1"], "AQ": [""], "CL": ["T"],
                              "CK": ["000"], "CV": ["04"], "AF": [
                                  "This item is not known here: put it in the transfer bin "
                                  "for staff."]}

    # What the cloud's feed says of copies and titles decides where the rest go.
    feed(branch, [
        copy_change("C08", home_node="b-home", floating=False),       # fixed, away from home
        copy_change("C05", home_node="b-home", floating=False),
        copy_change("C09", op="delete", transit_to="b-east"),         # pulled for a hold there
    ])
    home = c.checkin(INST, "C08")
    assert (home.fixed["alert"], home["CV"], home["CT"], home["AQ"], home["CL"]) == \
        ("Y", "04", "b-home", "b-home", "T")
    assert home.screen == "This item belongs to b-home: send it there."
    away = c.checkin(INST, "C09")
    assert (away["CV"], away["CT"], away["CL"]) == ("02", "b-east", "T")
    assert away.screen == "Reserved for a reader at b-east: send it there."
    on_its_way = c.item_info(INST, "C09")
    assert on_its_way.fixed["circulation"] == "10" and on_its_way.screen == \
        "On its way to b-east."
    # A reader here waits for the title and no copy is set aside yet: this one will be.
    feed(branch, [title_change("T1", next_hold="H2", next_pickup="b-test")])
    theirs = c.checkin(INST, "C03")
    assert (theirs["CV"], theirs["CT"], theirs["CY"], theirs["DA"], theirs["CL"]) == \
        ("01", "hall", "R0001", "Әлия Қасым", "H")
    # ... or a reader at another branch: before any trip home (as the cloud gives it).
    feed(branch, [title_change("T1", next_hold="H9", next_pickup="b-east")])
    assert (c.checkin(INST, "C04")["CV"], c.checkin(INST, "C05")["CT"]) == ("02", "b-east")
    assert len(branch.events("loan.return")) == 8        # every one is a normal return

    accounts.add_account("quiet", "quiet-kiosk", institution=INST, alerts=False)
    quiet = branch.kiosk("quiet", "quiet-kiosk").checkin(INST, "X-OTHER-2")
    assert quiet.fixed["alert"] == "N"
    assert not {"CV", "CT", "CY", "DA", "CL"} & set(quiet.fields)


def test_the_desk_is_told_the_same_as_the_sorter(branch: Branch) -> None:
    feed(branch, [copy_change("C08", home_node="b-home", floating=False),
                  title_change("T3", next_hold="H9", next_pickup="b-east")])
    web = branch.app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def desk_return(copy: str) -> dict:
        r = web.post("/api/return", json={"copy": copy}, headers=auth)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["route"]

    assert desk_return("C08") == {"kind": "home", "to": "b-home", "hold_id": None,
                                  "reader": None, "reader_name": ""}
    assert desk_return("H01") == {"kind": "hold_here", "to": "b-test", "hold_id": "H1",
                                  "reader": "R0002", "reader_name": "Ержан Әбіл"}
    assert desk_return("C01")["kind"] == "shelf"
    assert desk_return("NEVER-SEEN")["kind"] == "unknown"
    assert branch.kiosk().checkin(INST, "C08")["CT"] == "b-home"   # the kiosk agrees


def test_a_no_block_checkout_is_recorded_at_the_kiosks_date(branch: Branch) -> None:
    c = branch.kiosk()
    when = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    # The kiosk lent C04 three days ago while it could not reach us, even to a blocked card.
    r = c.checkout(INST, "R0003", "C04", no_block=True, when=sc.sip_date(when))
    due = es.local_day(when) + timedelta(days=21)
    assert (r.fixed["ok"], r.fixed["desensitize"]) == ("1", "Y")
    assert r["AH"] == day(due) and r["AA"] == "R0003" and r["AJ"] == "Абай жолы"
    assert r.screen.startswith("Recorded the checkout of ")
    loan = es.Loan.get(es.Loan.copy == "C04")
    assert (loan.checked_out_at, loan.due, loan.reader) == (when, due, "R0003")
    [event] = branch.events("loan.checkout")
    # The event is written now (ts: the node's clock); the kiosk's time is the body's "at".
    assert near_now(sc.sip_date(datetime.fromisoformat(event["ts"])))
    assert datetime.fromisoformat(event["body"]["at"]) == when
    assert (event["body"]["due"], event["body"]["source"]) == (due.isoformat(), "sip2:k1")
    assert c.checkout(INST, "R0003", "C04", no_block=True,
                      when=sc.sip_date(when)).fixed["ok"] == "1"     # uploaded again
    assert len(branch.events("loan.checkout")) == 1

    # Lent offline from the shelf though this node had it on loan: it came back unseen.
    assert c.checkout(INST, "R0001", "C05", "1234").fixed["ok"] == "1"
    assert c.checkout(INST, "R0002", "C05", no_block=True).fixed["ok"] == "1"
    assert [(e["type"], e["body"]["reader"]) for e in branch.events()[-2:]] == \
        [("loan.return", "R0001"), ("loan.checkout", "R0002")]
    assert "at" not in branch.events()[-3]["body"]     # the node's own checkout: no "at"
    future = c.checkout(INST, "R0002", "C06", no_block=True,
                        when=sc.sip_date(datetime.now(UTC) + timedelta(days=2)))
    assert future["AH"] == day(today() + timedelta(days=21))   # a kiosk clock ahead: now


def test_a_kiosk_clock_gone_wrong_dates_nothing_decades_back_or_in_the_future(branch: Branch
                                                                            ) -> None:
    c = branch.kiosk()
    reset = datetime(2000, 1, 1, 9, 0, tzinfo=UTC)      # the kiosk's clock battery died
    r = c.checkout(INST, "R0001", "C04", no_block=True, when=sc.sip_date(reset))
    assert r.fixed["ok"] == "1"
    earliest = datetime.now(UTC) - timedelta(days=14)
    loan = es.Loan.get(es.Loan.copy == "C04")
    assert abs((loan.checked_out_at - earliest).total_seconds()) < 60
    assert r["AH"] == day(es.local_day(loan.checked_out_at) + timedelta(days=21))  # not 2000
    assert loan.due >= today() + timedelta(days=6)
    kiosk_day = f"{reset.astimezone(sc.KIOSK_ZONE):%d.%m.%Y}"
    assert r.all("AF")[-1].startswith(f"The self-check's date {kiosk_day} ")
    assert "too long ago" in r.screen and "check the self-check's clock" in r.screen
    back = c.checkin(INST, "C04", no_block=True, when=sc.sip_date(reset))
    assert back.fixed["ok"] == "1" and "too long ago" in back.screen
    closed = es.Loan.get(es.Loan.copy == "C04")
    assert closed.returned_at >= closed.checked_out_at          # never before it began
    ahead = c.checkout(INST, "R0001", "C05", no_block=True,
                       when=sc.sip_date(datetime.now(UTC) + timedelta(hours=5)))
    assert ahead["AH"] == day(today() + timedelta(days=21)) and "later than now" in ahead.screen
    drift = c.checkout(INST, "R0001", "C06", no_block=True,
                       when=sc.sip_date(datetime.now(UTC) + timedelta(seconds=30)))
    assert drift.fixed["ok"] == "1" and "clock" not in drift.screen    # ordinary drift
    assert c.renew(INST, "R0001", "C06", no_block=True,
                   when=sc.sip_date(reset)).all("AF")[-1].startswith("The self-check's date")


def test_a_no_block_checkin_is_recorded_at_its_return_date(branch: Branch) -> None:
    branch.store.checkout("R0001", "C06", now=datetime.now(UTC) - timedelta(days=5))
    returned = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    r = branch.kiosk().checkin(INST, "C06", no_block=True, when=sc.sip_date(returned))
    assert r.fixed["ok"] == "1" and r["AA"] == "R0001"
    assert es.Loan.get(es.Loan.copy == "C06").returned_at == returned
    [event] = branch.events("loan.return")
    assert datetime.fromisoformat(event["body"]["at"]) == returned


def test_cancel_undoes_a_checkout_or_a_checkin(branch: Branch) -> None:
    c = branch.kiosk()
    assert c.checkout(INST, "R0001", "C07", "1234").fixed["ok"] == "1"
    undone = c.checkout(INST, "R0001", "C07", "1234", cancel=True)
    assert (undone.fixed["ok"], undone.fixed["desensitize"]) == ("1", "N")
    assert undone.screen == "The checkout is cancelled." and undone["AH"] == ""
    assert es.Copy.get_by_id("C07").on_loan is False
    assert c.checkout(INST, "R0001", "C07", "1234").fixed["ok"] == "1"
    assert c.checkin(INST, "C07").fixed["ok"] == "1"
    back = c.call(f"09N{sc.sip_date()}{sc.sip_date()}APhall|AO{INST}|ABC07|AC|BIY|")
    assert (back.fixed["ok"], back.fixed["resensitize"], back["AA"]) == ("1", "N", "R0001")
    assert es.Copy.get_by_id("C07").on_loan is True
    assert c.checkout(INST, "R0001", "C02", "1234", cancel=True).fixed["ok"] == "0"
    assert [e["type"] for e in branch.events()] == ["loan.checkout", "loan.return",
                                                    "loan.checkout", "loan.return",
                                                    "loan.checkout"]


def test_item_information(branch: Branch) -> None:
    c = branch.kiosk()
    shelf = c.item_info(INST, "C02")
    assert near_now(shelf.fixed.pop("date"))
    assert shelf.fixed == {"circulation": "03", "security": "00", "fee_type": "01"}
    assert shelf.fields == {"CF": ["0"], "AB": ["C02"], "AJ": ["Абай жолы"], "BG": [INST],
                            "CK": ["001"], "AQ": ["b-test"], "AP": ["hall"]}
    assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "1"
    lent = c.item_info(INST, "C01")
    assert lent.fixed["circulation"] == "04"
    assert lent["AH"] == day(today() + timedelta(days=21)) and "AP" not in lent.fields
    held = c.item_info(INST, "H01")
    expires = es.Hold.get_by_id("H1").expires
    assert (held.fixed["circulation"], held["CF"], held["CM"]) == ("08", "1", day(expires))
    unknown = c.item_info(INST, "NOPE")
    assert unknown.fixed["circulation"] == "01"
    assert unknown.fields == {"AB": ["NOPE"], "AJ": [""],
                              "AF": ["This item is not known here."]}


def test_renew_and_renew_all(branch: Branch) -> None:
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    loan = branch.store.checkout("R0001", "C01", now=ten_days_ago)
    branch.store.checkout("R0001", "REF1", now=ten_days_ago)     # reference: no renewals
    c = branch.kiosk()
    r = c.renew(INST, "R0001", "C01", "1234")
    new_due = today() + timedelta(days=21)
    assert near_now(r.fixed.pop("date"))
    assert r.fixed == {"ok": "1", "renewal_ok": "Y", "magnetic": "U", "desensitize": "U"}
    assert r.fields == {"AO": [INST], "AA": ["R0001"], "AB": ["C01"], "AJ": ["Абай жолы"],
                        "AH": [day(new_due)], "CK": ["001"], "BK": [loan.loan_id],
                        "AF": [f"Renewed: due back {new_due:%d.%m.%Y}."]}
    [event] = branch.events("loan.renew")
    assert (event["body"]["loan_id"], event["body"]["due"]) == (loan.loan_id, new_due.isoformat())
    ref = c.renew(INST, "R0001", "REF1", "1234")
    assert (ref.fixed["ok"], ref.fixed["renewal_ok"]) == ("0", "N")
    old_due = es.local_day(ten_days_ago) + timedelta(days=7)
    assert ref["AB"] == "REF1" and ref["AH"] == day(old_due)
    assert "renewed 0 times, the most allowed" in ref.screen
    other = c.renew(INST, "R0002", "C01", "5678")                 # not their loan
    assert other.fixed["ok"] == "0" and "No loan of this item to this card" in other.screen

    every = c.renew_all(INST, "R0001", "1234")
    assert near_now(every.fixed.pop("date"))
    assert every.fixed == {"ok": "1", "renewed": "0001", "unrenewed": "0001"}
    assert every.fields == {"AO": [INST], "BM": ["C01"], "BN": ["REF1"], "AF": [
        "Renewed 1, not renewed 1.",
        "REF1: This loan has been renewed 0 times, the most allowed."]}
    # A renewal the kiosk did on its own while it could not reach us: the reader was told,
    # so it is recorded at the kiosk's date even where the rules would now say no.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    kiosk_did = c.renew(INST, "R0001", "REF1", no_block=True, when=sc.sip_date(yesterday))
    assert (kiosk_did.fixed["ok"], kiosk_did.fixed["renewal_ok"]) == ("1", "Y")
    assert kiosk_did["AH"] == day(es.local_day(yesterday) + timedelta(days=7))
    told = branch.events("loan.renew")[-1]["body"]
    assert (datetime.fromisoformat(told["at"]), told["copy"]) == (yesterday, "REF1")
    blocked = c.renew_all(INST, "R0003")
    assert blocked.fixed == {"ok": "0", "renewed": "0000", "unrenewed": "0000",
                             "date": blocked.fixed["date"]}
    assert len(branch.events("loan.renew")) == 3
