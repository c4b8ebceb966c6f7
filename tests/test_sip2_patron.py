"""SIP2 patron messages on a real port, every response field checked: 23, 63, 01, 25, 35, 37, 15."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge import store as es
from edge.feed import FeedApplier
from edge.sip2 import accounts
from kitap.cli import main
from tests.test_sip2_server import INST, Branch, near_now, start_branch, stop_branch

DENIED = "YYYY" + " " * 10
CLEAR = " " * 14


@pytest.fixture
def branch(tmp_path: Path) -> Iterator[Branch]:
    """A seeded branch node, its link to the cloud down, SIP2 on a free port."""
    b = start_branch(tmp_path)
    yield b
    stop_branch(b)


def feed(branch: Branch, changes: list[dict], at: int = 5) -> None:
    """Apply changes as the cloud's feed sends them (the node at revision ``at``)."""
    branch.store._set_meta("feed_rev", str(at))
    for i, ch in enumerate(changes):
        ch["rev"] = at + 1 + i
    assert FeedApplier(branch.store).apply_changes(
        {"from_rev": at, "to_rev": at + len(changes), "more": False, "changes": changes})


def reader_change(card: str, **data: object) -> dict:
    r = es.Reader.get_by_id(card)
    return {"entity": "reader", "key": card, "op": "upsert", "data": {
        "card": card, "name": r.name, "category": r.category, "pin_hash": r.pin_hash,
        "open_loans": 0, "fees_owed": r.fees_owed, **data}}


def test_patron_status(branch: Branch) -> None:
    c = branch.kiosk()
    r = c.patron_status(INST, "R0001", "1234")
    assert r.fixed["status"] == CLEAR and r.fixed["language"] == "001"
    assert near_now(r.fixed["date"])
    assert r.fields == {"AO": [INST], "AA": ["R0001"], "AE": ["Әлия Қасым"], "BL": ["Y"],
                        "CQ": ["Y"]}
    wrong = c.patron_status(INST, "R0001", "0000")
    assert wrong.fields == {"AO": [INST], "AA": ["R0001"], "AE": [""], "BL": ["Y"],
                            "CQ": ["N"], "AF": ["Wrong PIN."]}
    unknown = c.patron_status(INST, "R9999")
    assert unknown.fixed["status"] == DENIED
    assert unknown.fields == {"AO": [INST], "AA": ["R9999"], "AE": [""], "BL": ["N"],
                              "AF": ["This card is not known here: please ask staff."]}
    blocked = c.patron_status(INST, "R0003")
    assert blocked.fixed["status"] == DENIED
    assert blocked.fields == {"AO": [INST], "AA": ["R0003"], "AE": ["Blocked Reader"],
                              "BL": ["Y"], "AF": ["Blocked: 3 books overdue"]}
    owes = c.patron_status(INST, "R0004", "1234")
    assert owes.fixed["status"] == CLEAR
    assert (owes["BH"], owes["BV"], owes["CQ"]) == ("KZT", "1500.00", "Y")


def test_three_wrong_pins_lock_the_card_at_this_node(branch: Branch) -> None:
    c = branch.kiosk()
    for _ in range(3):
        assert c.patron_status(INST, "R0002", "0000")["CQ"] == "N"
    locked = c.patron_status(INST, "R0002", "5678")          # the right one, too late
    assert locked["CQ"] == "N" and "locked" in locked.screen
    assert c.checkout(INST, "R0002", "C01", "5678").fixed["ok"] == "0"


def test_patron_information_counts_and_lists(branch: Branch) -> None:
    store = branch.store
    now = datetime.now(UTC)
    store.checkout("R0001", "C03", now=now - timedelta(days=30))   # overdue by 9 days
    # An hour ago the cloud said: 3 loans, that one and 2 at other libraries.
    es.Reader.update(open_loans=3, synced_at=now - timedelta(hours=1)).where(
        es.Reader.card == "R0001").execute()
    es.Hold.create(id="H3", title_id="T1", copy="C09", reader="R0001", status="ready")
    c = branch.kiosk()
    for item in ("C01", "C02"):
        assert c.checkout(INST, "R0001", item, "1234").fixed["ok"] == "1"

    plain = c.patron_info(INST, "R0001", "1234")
    assert near_now(plain.fixed.pop("date"))
    assert plain.fixed == {"status": CLEAR, "language": "001", "holds": "0001",
                           "overdue": "0001", "charged": "0005", "fines": "0000",
                           "recalls": "0000", "unavailable": "0001"}
    assert plain.fields == {"AO": [INST], "AA": ["R0001"], "AE": ["Әлия Қасым"],
                            "CB": ["0010"], "BL": ["Y"], "CQ": ["Y"],
                            "AF": ["2 more item(s) on loan at other libraries of the network."]}

    def listed(summary_pos: int, fid: str, **kw: int) -> list[str]:
        summary = " " * summary_pos + "Y" + " " * (9 - summary_pos)
        r = c.patron_info(INST, "R0001", "1234", summary, **kw)
        others = {"AS", "AT", "AU", "AV", "BU", "CD"} - {fid}
        assert not others & set(r.fields), r.raw      # only the list asked for
        return r.all(fid)

    assert listed(0, "AS") == ["C09"]                   # ready to collect
    assert listed(1, "AT") == ["C03"]                   # overdue
    assert listed(2, "AU") == ["C03", "C01", "C02"]     # by due date
    assert listed(2, "AU", start=2, end=2) == ["C01"]   # BP/BQ: one page
    assert listed(5, "CD") == ["Абай жолы"]             # waiting, not yet available
    owes = c.patron_info(INST, "R0004", "1234", "   Y      ")
    assert owes.fixed["fines"] == "0001" and owes.all("AV") == ["1500.00 KZT fees owed"]
    assert (owes["BH"], owes["BV"]) == ("KZT", "1500.00")
    wrong = c.patron_info(INST, "R0001", "0000", "  Y       ")
    assert wrong.fixed["status"] == DENIED and wrong.fixed["charged"] == "0000"
    assert wrong.fields == {"AO": [INST], "AA": ["R0001"], "AE": [""], "BL": ["Y"],
                            "CQ": ["N"], "AF": ["Wrong PIN."]}


def test_a_kiosk_that_requires_pins_shows_and_lends_nothing_without_one(branch: Branch
                                                                        ) -> None:
    c = branch.kiosk("kpin", "pin-kiosk-1")
    info = c.patron_info(INST, "R0001", summary="  Y       ")
    assert info.fields == {"AO": [INST], "AA": ["R0001"], "AE": [""], "BL": ["Y"],
                           "AF": ["Please enter your PIN."]}
    no = c.checkout(INST, "R0001", "C01")
    assert no.fixed["ok"] == "0" and no.screen == "Please enter your PIN."
    assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "1"


def test_block_patron_blocks_the_card_here_at_once_and_tells_the_cloud(branch: Branch) -> None:
    c = branch.kiosk()
    r = c.block_patron(INST, "R0001", "card left in the machine", retained=True)
    assert r.code == "24" and r.fixed["status"] == DENIED and r.fixed["language"] == "000"
    assert r.fields == {"AO": [INST], "AA": ["R0001"], "AE": ["Әлия Қасым"], "BL": ["Y"],
                        "AF": ["This card is blocked: please ask staff."]}
    reason = "blocked at self-check k1: card left in the machine"
    [told] = branch.events("reader.blocked")
    assert told["body"] == {"card": "R0001", "reason": reason, "source": "sip2:k1",
                            "card_retained": True}
    refused = c.checkout(INST, "R0001", "C01", "1234")
    assert refused.fixed["ok"] == "0" and refused.screen == f"The card is blocked: {reason}"
    with pytest.raises(es.CirculationRefused):        # the desk at this node refuses too
        branch.store.checkout("R0001", "C01")
    # The cloud's older word on this reader (before it heard of the block) waits until it
    # has acknowledged the event: the block stays.
    feed(branch, [reader_change("R0001", blocked_reason=None, blocked_by=None)])
    assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "0"
    assert c.patron_status(INST, "R0001", "1234").fixed["status"] == DENIED

    enabled = c.patron_enable(INST, "R0001")
    assert enabled.code == "26" and enabled.fixed["status"] == CLEAR
    assert enabled.fixed["language"] == "000" and near_now(enabled.fixed["date"])
    assert enabled.fields == {"AO": [INST], "AA": ["R0001"], "AE": ["Әлия Қасым"], "BL": ["Y"],
                              "AF": ["The self-check block on this card is lifted."]}
    [lifted] = branch.events("reader.unblocked")
    assert lifted["body"] == {"card": "R0001", "source": "sip2:k1"}
    cloud_block = c.patron_enable(INST, "R0003")       # a library's block is not a kiosk's
    assert cloud_block.fixed["status"] == DENIED
    assert cloud_block.all("AF") == ["Still blocked by the library: 3 books overdue"]
    assert len(branch.events("reader.unblocked")) == 1
    assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "1"
    # A block another branch's self-check set comes down the feed: this kiosk may lift it.
    branch.store.mark_acked(branch.store.last_seq())
    feed(branch, [reader_change("R0002", blocked_reason="blocked at self-check b-east-1: x",
                                blocked_by="kiosk")], at=6)
    assert c.patron_status(INST, "R0002", "5678").fixed["status"] == DENIED
    assert c.patron_enable(INST, "R0002").fixed["status"] == CLEAR
    # Since the acknowledgement: only R0002's lift (R0003's library block made no event).
    assert [e["body"]["card"] for e in branch.events("reader.unblocked")] == ["R0002"]


def test_end_session(branch: Branch) -> None:
    r = branch.kiosk().end_session(INST, "R0001")
    assert r.fixed["end"] == "Y" and near_now(r.fixed["date"])
    assert r.fields == {"AO": [INST], "AA": ["R0001"], "AF": ["Goodbye."]}


def test_fee_paid_is_a_payment_event_once_per_transaction(branch: Branch) -> None:
    c = branch.kiosk()
    r = c.fee_paid(INST, "R0004", "500.00", txn="txn-1", pin="1234")
    assert r.fixed["accepted"] == "Y" and near_now(r.fixed["date"])
    assert r.fields == {"AO": [INST], "AA": ["R0004"], "BK": ["txn-1"],
                        "AF": ["Paid 500.00 KZT. Thank you.", "Still owed: 1000.00 KZT."]}
    again = c.fee_paid(INST, "R0004", "500.00", txn="txn-1", pin="1234")   # kiosk retries
    assert again.fixed["accepted"] == "Y"
    service = c.fee_paid(INST, "R0004", "50", fee_type="06", txn="txn-2")
    assert service.fixed["accepted"] == "Y" and service.all("AF") == ["Paid 50.00 KZT. Thank you."]
    paid = branch.events("fee.paid")
    assert [(e["body"]["amount"], e["body"]["kind"]) for e in paid] == [(50000, "fee"),
                                                                        (5000, "service")]
    assert es.Reader.get_by_id("R0004").fees_owed == 100000
    for kw, why in (({"currency": "USD"}, "in KZT, not USD"), ({"amount": "5,00"}, "not an amount"),
                    ({"amount": "0"}, "not an amount"), ({"card": "R9999"}, "not known")):
        args = {"card": "R0004", "amount": "1.00", **kw}
        card, amount = args.pop("card"), args.pop("amount")
        no = c.fee_paid(INST, card, amount, **args)
        assert no.fixed["accepted"] == "N" and why in no.screen
        assert no.fields["AA"] == [card]
    assert len(branch.events("fee.paid")) == 2


def test_hold_places_and_cancels_reservations_to_collect_here(branch: Branch) -> None:
    c = branch.kiosk()
    ready = c.hold(INST, "R0002", "+", item="H01")
    expires = es.Hold.get_by_id("H1").expires
    assert ready.fixed["ok"] == "1" and ready.fixed["available"] == "Y"
    assert ready.fields == {"BW": [f"{expires:%Y%m%d}    235959"], "BS": ["hall"],
                            "AO": [INST], "AA": ["R0002"], "AB": ["H01"], "AJ": ["Held title"],
                            "AF": ["Your reservation is ready to collect here."]}
    waiting = c.hold(INST, "R0001", "+", title="T1")
    assert (waiting.fixed["ok"], waiting.fixed["available"]) == ("1", "N")
    assert waiting["AJ"] == "Абай жолы" and "BW" not in waiting.fields
    assert branch.events() == []                        # reported, nothing placed

    new = c.hold(INST, "R0001", "+", item="REF1")       # a new one: placed, waiting
    assert (new.fixed["ok"], new.fixed["available"]) == ("1", "Y")
    assert new.fields == {"BS": ["hall"], "AO": [INST], "AA": ["R0001"], "AB": ["REF1"],
                          "AJ": ["Encyclopaedia"], "AF": [
                              "Reserved: we will tell you when it is ready to collect here. "
                              "A copy is on the shelf here now."]}
    [placed] = branch.events("hold.requested")
    hold_id = placed["body"]["hold_id"]
    assert placed["body"] == {"hold_id": hold_id, "reader": "R0001", "title": "T2",
                              "pickup": "b-test", "source": "sip2:k1"}
    assert es.Hold.get_by_id(hold_id).status == "waiting"   # until the cloud sets a copy aside
    again = c.hold(INST, "R0001", "+", title="Encyclopaedia")
    assert again.screen.startswith("You already have this reservation")
    assert len(branch.events("hold.requested")) == 1

    cancel = c.hold(INST, "R0002", "-", item="H01")
    assert (cancel.fixed["ok"], cancel.fixed["available"]) == ("1", "N")
    assert cancel.screen == "Your reservation is cancelled."
    [cancelled] = branch.events("hold.cancelled")
    assert cancelled["body"] == {"hold_id": "H1", "reader": "R0002", "source": "sip2:k1"}
    assert es.Hold.get_or_none(es.Hold.id == "H1") is None
    assert c.checkout(INST, "R0001", "H01", "1234").fixed["ok"] == "1"   # no longer set aside

    def refused(*args: str, **kw: str) -> str:
        no = c.hold(INST, *args, **kw)
        assert (no.fixed["ok"], no.fixed["available"]) == ("0", "N")
        return no.screen

    assert refused("R0002", "-", title="T1") == \
        "There is no reservation of this title to cancel here."
    assert refused("R0003", "+", title="T1") == "The card is blocked: 3 books overdue"
    assert refused("R0002", "*", title="T1") == \
        "Reservations are changed in the online catalogue."
    assert refused("R0002", "+", title="No such title") == "This title is not known here."
    assert len(branch.events("hold.requested")) == 1 and len(branch.events("hold.cancelled")) == 1


def test_kiosk_accounts_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "edge.db")
    run = CliRunner().invoke
    ok = run(main, ["sip2-account", "--db", db, "add", "hall-1", "--institution", "kitap",
                    "--location", "hall", "--allow", "23,63,11,09", "--no-alerts",
                    "--charset", "cp850", "--sort-bin", "transfer=3", "--password",
                    "long enough"])
    assert ok.exit_code == 0, ok.output
    assert "messages 09,11,23,63" in ok.output
    bad = run(main, ["sip2-account", "--db", db, "add", "x", "--institution", "kitap",
                     "--allow", "42", "--password", "long enough"])
    assert bad.exit_code != 0 and "not supported here: 42" in bad.output
    short = run(main, ["sip2-account", "--db", db, "add", "x", "--institution", "kitap",
                       "--password", "short"])
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    listed = run(main, ["sip2-account", "--db", db, "list"])
    assert "hall-1\tkitap\thall\tcp850\talerts=off\t09,11,23,63" in listed.output
    store = es.EdgeStore("b-cli", db)
    try:
        row = accounts.Sip2Account.get_by_id("hall-1")
        assert row.password_hash.startswith("scrypt:") and "long enough" not in row.password_hash
        assert accounts.check_login("hall-1", "long enough") is not None
        with store.writing():
            accounts.block(store, "R1", "tampering", "hall-1", False, datetime.now(UTC))
    finally:
        es.db.close()
    assert "R1" in run(main, ["sip2-account", "--db", db, "blocks"]).output
    lift = ["sip2-account", "--db", db, "lift-block", "R1", "--node", "b-cli"]
    assert run(main, lift).exit_code == 0
    assert run(main, lift).exit_code != 0
    es.open_db(db)
    try:                                   # both reached the outbox, for the cloud
        assert [(o.seq, o.type) for o in es.Outbox.select().order_by(es.Outbox.seq)] == \
            [(1, "reader.blocked"), (2, "reader.unblocked")]
    finally:
        es.db.close()
    assert run(main, ["sip2-account", "--db", db, "remove", "hall-1"]).exit_code == 0
