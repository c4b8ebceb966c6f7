"""The `kitap admin` and `kitap staff` commands do what staff expect, and refuse clearly."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from cloud import feed
from cloud import store as cs
from edge import store as es
from kitap.cli import main


def test_admin_block_reaches_the_feed_and_unknown_card_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[], titles=[], copies=[], readers=[{"card": "R1", "name": "Айгерим"}])
    cs.db.close()
    runner = CliRunner()
    ok = runner.invoke(main, ["admin", "--db", url, "block", "R1", "--reason", "lost card"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(main, ["admin", "--db", url, "block", "R9", "--reason", "x"])
    assert bad.exit_code != 0 and "no reader with card R9" in bad.output
    cs.connect(url)
    try:
        assert cs.Reader.get_by_id("R1").blocked_reason == "lost card"
        change = feed.changes_for("m-any", 0)["changes"][-1]
        assert change["entity"] == "reader" and change["data"]["blocked_reason"] == "lost card"
    finally:
        cs.db.close()


def test_staff_add_refuses_a_short_password(tmp_path: Path) -> None:
    db = str(tmp_path / "edge.db")
    runner = CliRunner()
    bad = runner.invoke(main, ["staff", "--db", db, "add", "desk", "--password", "short"])
    assert bad.exit_code != 0 and "at least 8 characters" in bad.output
    ok = runner.invoke(main, ["staff", "--db", db, "add", "desk", "--password", "long enough"])
    assert ok.exit_code == 0, ok.output
    es.open_db(db)
    try:
        row = es.Staff.get_by_id("desk")
        assert row.password_hash.startswith("scrypt:") and "long enough" not in row.password_hash
    finally:
        es.db.close()


def test_admin_rejected_lists_what_the_cloud_refused_newest_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    now = cs.utcnow()
    for i, node in enumerate(["m-a", "x-ghost", "m-a"]):
        cs.RejectedMessage.create(topic=f"lib/v1/node/{node}/events", node=node,
                                  reason=f"reason {i}", payload="x" * 500,
                                  received_at=now + timedelta(seconds=i))
    cs.db.close()
    runner = CliRunner()
    out = runner.invoke(main, ["admin", "--db", url, "rejected", "--node", "m-a", "--limit", "1"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "m-a lib/v1/node/m-a/events: reason 2" in lines[0]   # the newest of m-a's
    assert "x" * 200 in lines[1] and "x" * 201 not in lines[1]  # the payload, cut short
    assert lines[-1] == "1 of 2 rejected messages"
    everything = runner.invoke(main, ["admin", "--db", url, "rejected"]).output
    assert "x-ghost" in everything and everything.endswith("3 of 3 rejected messages\n")
    assert runner.invoke(main, ["admin", "--db", url, "rejected", "--limit", "0"]).exit_code == 2


def test_ledger_check_names_payments_with_cards_nobody_registered(tmp_path: Path) -> None:
    from cloud import debts

    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[], titles=[], copies=[], readers=[{"card": "R1", "name": "Айгерим"}])
    debts.pay("R1", 100, payment_id="P1", node="b-a", now=cs.utcnow())
    debts.pay("N9", 1_250, payment_id="P2", node="b-a", now=cs.utcnow())
    assert debts.check_ledger() == [("N9", None, -1_250)]
    cs.db.close()
    out = CliRunner().invoke(main, ["admin", "--db", url, "ledger-check"])
    assert out.exit_code == 0, out.output                  # balances agree: no failure
    assert "N9: no such reader" in out.output and "12,50" in out.output
    assert "every balance equals its ledger" in out.output
