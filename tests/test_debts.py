"""Debts on SQLite and PostgreSQL: fines by policy in a ledger, lost copies, blocks, debtors."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud import actions, debts, feed, notices, settings
from cloud import store as s
from kitap.cli import main
from tests.cloud_fixtures import NodeLog

NODES = [{"id": "b-a", "kind": "branch"}, {"id": "b-b", "kind": "branch"},
         {"id": "m-a", "kind": "machine"}]


@pytest.fixture
def today(cloud_store: str) -> date:
    """A small network: two branches, a machine, six copies, three readers."""
    s.seed(nodes=NODES,
           titles=[{"id": "T1", "title": "Абай жолы", "item_type": "book"},
                   {"id": "T2", "title": "Қан мен тер", "item_type": "book"}],
           copies=[{"barcode": f"C{i}", "title_id": f"T{1 + i % 2}", "status": "on_shelf",
                    "location_node": "b-a", "home_node": "b-a"} for i in range(1, 7)],
           readers=[{"card": "R1", "name": "Айгерим", "category": "adult"},
                    {"card": "R2", "name": "Нурлан", "category": "partner_staff"},
                    {"card": "R3", "name": "Дана", "category": "supported"}])
    return settings.today()


def ago(days: float) -> datetime:
    return s.utcnow() - timedelta(days=days)


def owed(card: str) -> int:
    return int(s.Reader.get_by_id(card).fees_owed)


def reader_as_nodes_see_it(card: str) -> dict:
    """The newest change every node got about this reader."""
    row = (s.Change.select().where((s.Change.entity == "reader") & (s.Change.key == card))
           .order_by(s.Change.rev.desc()).first())
    return json.loads(row.data)


def test_fines_accrue_by_policy_capped_and_the_balance_is_always_the_ledger(today) -> None:
    actions.set_fine_policy("book", per_day=10_000, cap=100_000)
    b = NodeLog("b-a", ago(40))
    b.lend("C1", "R1", today - timedelta(days=5))
    b.lend("C2", "R1", today - timedelta(days=15))
    debts.overdue_run(today)
    assert owed("R1") == 5 * 10_000 + 100_000          # the second loan hit the cap
    assert reader_as_nodes_see_it("R1")["fees_owed"] == owed("R1")
    debts.overdue_run(today)                             # again the same day: nothing new
    assert owed("R1") == 150_000
    debts.overdue_run(today + timedelta(days=1))         # a day later: one more day
    assert owed("R1") == 160_000
    assert debts.check_ledger() == []
    assert owed("R2") == owed("R3") == 0


def test_no_fine_policy_means_no_fines(today) -> None:
    NodeLog("b-a", ago(40)).lend("C1", "R1", today - timedelta(days=10))
    report = debts.overdue_run(today)
    assert owed("R1") == 0 and report.posted == 0
    assert s.LedgerEntry.select().count() == 0


def test_a_return_that_arrives_late_lowers_the_fine(today) -> None:
    actions.set_fine_policy("*", per_day=10_000)
    NodeLog("b-a", ago(40)).lend("C1", "R1", today - timedelta(days=10))
    debts.overdue_run(today)
    assert owed("R1") == 100_000
    # The copy had come back at b-b seven days ago; b-b was offline until now.
    late = datetime.combine(today - timedelta(days=7), datetime.min.time(),
                            settings.library_tz()) + timedelta(hours=12)
    NodeLog("b-b", late).take_back("C1")
    assert owed("R1") == 30_000
    lines = [e.amount for e in s.LedgerEntry.select().where(s.LedgerEntry.reader == "R1")]
    assert lines == [100_000, -70_000]                  # the trail says why
    assert debts.check_ledger() == []


def test_a_renewal_that_reaches_the_cloud_after_the_return_still_counts(today) -> None:
    """Renewed at b-a, then returned at b-b; b-b's link came back first."""
    actions.set_fine_policy("*", per_day=10_000)
    a = NodeLog("b-a", ago(30))
    loan = a.lend("C1", "R1", today - timedelta(days=10))
    NodeLog("b-b").take_back("C1", at=ago(1 / 24))
    assert owed("R1") == 100_000                       # as far as the cloud knows
    a.send("loan.renew", {"loan_id": loan, "copy": "C1", "reader": "R1",
                          "due": today + timedelta(days=5)}, at=ago(2 / 24))
    assert owed("R1") == 0                             # it was never overdue
    assert debts.check_ledger() == []


def test_payments_count_once_and_waivers_forgive(today) -> None:
    actions.set_fine_policy("*", per_day=10_000)
    b = NodeLog("b-a", ago(40))
    b.lend("C1", "R1", today - timedelta(days=10))
    debts.overdue_run(today)
    paid = {"payment_id": "P1", "reader": "R1", "amount": 40_000, "kind": "fee",
            "description": "overdue"}
    b.send("fee.paid", paid)
    b.send("fee.paid", paid)                           # the same payment reported twice
    b.send("fee.paid", {**paid, "payment_id": "P2", "kind": "service", "amount": 99_000})
    assert owed("R1") == 60_000
    actions.waive("R1", 20_000, "first time")
    assert owed("R1") == 40_000
    assert reader_as_nodes_see_it("R1")["fees_owed"] == 40_000
    assert debts.check_ledger() == []
    with pytest.raises(actions.ActionError):
        actions.waive("R9", 1, "nobody")
    # A new reader pays at one branch before the card issued at another reaches the cloud.
    b.send("fee.paid", {**paid, "payment_id": "P3", "reader": "N1", "amount": 5_000})
    NodeLog("b-b", ago(1)).send("reader.registered", {"card": "N1", "name": "Жаңа",
                                                      "category": "adult", "pin_hash": "x"})
    assert owed("N1") == -5_000
    assert debts.check_ledger() == []


def test_discounts_apply_to_fines_only_where_configured(today) -> None:
    actions.set_fine_policy("*", per_day=10_000)
    b = NodeLog("b-a", ago(40))
    b.lend("C1", "R1", today - timedelta(days=10))
    b.lend("C2", "R2", today - timedelta(days=10))
    debts.overdue_run(today)
    assert owed("R1") == owed("R2") == 100_000          # partner staff: services only
    actions.set_discount("partner_staff", "fine", 40)
    debts.overdue_run(today + timedelta(days=1))
    assert owed("R1") == 110_000 and owed("R2") == 66_000


def test_long_overdue_is_lost_with_a_replacement_fee_refunded_if_it_comes_back(today) -> None:
    actions.set_fine_policy("*", per_day=1_000, replacement=300_000)
    actions.set_setting("cloud.lost_after_days", "30")
    b = NodeLog("b-a", ago(60))
    loan = b.lend("C1", "R1", today - timedelta(days=31))
    # The run that declares it lost happened yesterday (a return from before then
    # would undo it: see test_reconcile_rules).
    report = debts.overdue_run(today, now=ago(1))
    assert report.declared_lost == 1
    c, ln = s.Copy.get_by_id("C1"), s.Loan.get_by_id(loan)
    assert (c.status, c.location_node, ln.close_reason) == ("lost", None, "lost")
    assert reader_as_nodes_see_it("R1")["open_loans"] == 0
    fine = 1_000 * (settings.today(ago(1)) - (today - timedelta(days=31))).days
    assert owed("R1") == fine + 300_000
    debts.overdue_run(today + timedelta(days=5))        # a lost loan accrues no more
    assert owed("R1") == fine + 300_000
    # The reader brings it back to another branch after all.
    NodeLog("b-b", ago(0.01)).take_back("C1")
    c = s.Copy.get_by_id("C1")
    assert (c.status, c.location_node) == ("on_shelf", "b-b")
    assert owed("R1") == fine                           # the fine stays, the replacement goes
    assert [e.kind for e in s.StaffException.select()] == ["lost_copy_returned"]
    assert debts.check_ledger() == []


def test_blocks_by_threshold_reach_every_node_and_lift_themselves(today) -> None:
    actions.set_setting("cloud.block_overdue_items", "2")
    b = NodeLog("b-a", ago(40))
    b.lend("C1", "R1", today - timedelta(days=3))
    b.lend("C2", "R1", today + timedelta(days=1))
    b.lend("C3", "R2", today - timedelta(days=3))
    assert s.Reader.get_by_id("R1").blocked_reason is None     # one overdue is allowed
    rev = feed.current_rev()
    report = debts.overdue_run(today + timedelta(days=2))      # the second falls due
    assert report.blocked == 1
    assert reader_as_nodes_see_it("R1")["blocked_reason"] == "2 books overdue"
    assert {c["key"] for c in feed.changes_for("m-a", rev)["changes"]
            if c["entity"] == "reader"} == {"R1"}
    assert s.Notice.get_or_none(s.Notice.kind == "blocked").reader == "R1"
    # One book comes back (anywhere): the block lifts at once, no job needed.
    NodeLog("m-a", ago(0.01)).take_back("C1")
    assert reader_as_nodes_see_it("R1")["blocked_reason"] is None
    # A block staff decided is theirs: thresholds never lift it.
    actions.block("R2", "lost card")
    debts.overdue_run(today)
    assert s.Reader.get_by_id("R2").blocked_reason == "lost card"


def test_an_offline_checkout_by_a_blocked_reader_or_over_the_limit_is_kept_and_flagged(
        today) -> None:
    actions.block("R1", "3 books overdue")
    actions.set_policy("*", "partner_staff", 21, 1, 2)
    b = NodeLog("b-a", s.utcnow())          # lent offline, after the block
    for copy, reader in (("C1", "R1"), ("C2", "R2"), ("C3", "R2")):
        b.lend(copy, reader, today + timedelta(days=21), at=s.utcnow())
    assert s.Loan.select().where(s.Loan.returned_at.is_null()).count() == 3
    kinds = sorted((e.kind, e.copy) for e in s.StaffException.select())
    assert kinds == [("checkout_over_limit", "C3"), ("checkout_while_blocked", "C1")]


def test_the_debtor_list(today) -> None:
    a, b = NodeLog("b-a", ago(60)), NodeLog("b-b", ago(60))
    a.lend("C1", "R1", today - timedelta(days=20))
    a.lend("C2", "R1", today - timedelta(days=2))
    b.lend("C3", "R2", today - timedelta(days=3))
    b.lend("C4", "R3", today + timedelta(days=3))       # not overdue
    with feed.transaction():
        debts.post("R3", "opening", 25_000, now=s.utcnow(), note="old debt")
    rows = debts.debtors(today=today)
    assert [(d.card, d.overdue_items, d.max_days_overdue, d.owed) for d in rows] == [
        ("R1", 2, 20, 0), ("R2", 1, 3, 0), ("R3", 0, 0, 25_000)]
    assert [d.card for d in debts.debtors(location="b-b", today=today)] == ["R2"]
    assert [d.card for d in debts.debtors(min_days=5, today=today)] == ["R1"]
    assert [d.card for d in debts.debtors(min_amount=1, today=today)] == ["R3"]


def test_due_soon_and_overdue_notices_are_queued_once_and_delivered(today,
                                                                   tmp_path: Path) -> None:
    b = NodeLog("b-a", ago(30))
    b.lend("C1", "R1", today - timedelta(days=1))
    b.lend("C2", "R2", today + timedelta(days=1))
    b.lend("C3", "R3", today + timedelta(days=10))
    assert debts.overdue_run(today).notices == 2
    assert debts.overdue_run(today).notices == 0        # decided twice, queued once
    outbox = tmp_path / "notices"
    sender = notices.DirSender(str(outbox))
    assert notices.deliver(sender) == 2
    assert notices.deliver(sender) == 0
    texts = {p.name: p.read_text(encoding="utf-8") for p in outbox.glob("*.txt")}
    overdue = next(t for n, t in texts.items() if n.startswith("overdue"))
    assert "Айгерим" in overdue and "Қан мен тер" in overdue   # C1 is a copy of T2
    assert any(n.startswith("due_soon") and "Нурлан" in t for n, t in texts.items())
    assert s.Notice.select().where(s.Notice.sent_at.is_null()).count() == 0


def test_a_failing_sender_is_retried_until_it_works(today, tmp_path: Path) -> None:
    NodeLog("b-a", ago(30)).lend("C1", "R1", today - timedelta(days=1))
    debts.overdue_run(today)

    class Down:
        def send(self, msg: notices.Message) -> None:
            raise OSError("mail server down")

    assert notices.deliver(Down()) == 0
    n = s.Notice.get()
    assert n.sent_at is None and "mail server down" in n.last_error and n.attempts == 1
    out = tmp_path / "n.jsonl"
    assert notices.deliver(notices.sender_from_url(f"jsonl:{out}")) == 1
    assert json.loads(out.read_text(encoding="utf-8"))["reader"] == "R1"


def test_admin_overdue_run_and_debtors_from_the_command_line(today, cloud_store) -> None:
    actions.set_fine_policy("*", per_day=10_000)
    NodeLog("b-a", ago(30)).lend("C1", "R1", today + timedelta(days=1))
    runner = CliRunner()
    later = (today + timedelta(days=5)).isoformat()          # four days overdue by then
    res = runner.invoke(main, ["admin", "--db", cloud_store, "overdue-run", "--today", later])
    assert res.exit_code == 0, res.output
    assert "1 readers checked" in res.output and "400.00 tenge posted" in res.output
    res = runner.invoke(main, ["admin", "--db", cloud_store, "debtors", "--min-amount", "100"])
    assert res.exit_code == 0 and "R1" in res.output and "1 debtors" in res.output
    res = runner.invoke(main, ["admin", "--db", cloud_store, "ledger-check"])
    assert res.exit_code == 0, res.output
