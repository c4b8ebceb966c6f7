"""The `kitap admin` and `kitap staff` commands do what staff expect, and refuse clearly."""
from __future__ import annotations

import getpass
import socket
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


def test_staff_decisions_from_the_command_line_are_in_the_audit_trail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cs.connect(url)
    cs.seed(nodes=[{"id": "b-1", "kind": "branch", "name": "B"}],
            titles=[{"id": "T1", "title": "Абай жолы", "author": "Әуезов"}],
            copies=[{"barcode": "C1", "title_id": "T1", "home_node": "b-1",
                     "location_node": "b-1", "status": "on_shelf"},
                    {"barcode": "C2", "title_id": "T1", "home_node": "b-1",
                     "location_node": "b-1", "status": "on_shelf"}],
            readers=[{"card": "R1", "name": "Айгерим", "fees_owed": 5000}])
    cs.db.close()
    runner = CliRunner()
    for args in (["block", "R1", "--reason", "lost card"], ["unblock", "R1"],
                 ["hold", "R1", "T1", "b-1"], ["setting", "offline_cap_loans", "2"],
                 ["waive", "R1", "12.50", "--reason", "first time"],
                 ["withdraw", "C2", "--reason", "worn out"]):
        out = runner.invoke(main, ["admin", "--db", url, *args])
        assert out.exit_code == 0, (args, out.output)
    refused = runner.invoke(main, ["admin", "--db", url, "block", "R9", "--reason", "x"])
    assert refused.exit_code != 0
    cs.connect(url)
    try:
        trail = [(e.actor, e.action, e.target) for e in
                 cs.AuditEntry.select().order_by(cs.AuditEntry.id)]
        assert trail == [("cli", "reader.block", "reader:R1"),
                         ("cli", "reader.unblock", "reader:R1"),
                         ("cli", "hold.place", "reader:R1"),
                         ("cli", "setting.set", "setting:offline_cap_loans"),
                         ("cli", "reader.waive", "reader:R1"),
                         ("cli", "copy.withdraw", "copy:C2")]   # nothing for the refusal
        first = cs.AuditEntry.select().order_by(cs.AuditEntry.id).first()
        assert first.detail == f"lost card · OS user {getpass.getuser()}@{socket.gethostname()}"
        hold = cs.Hold.get(cs.Hold.reader == "R1")
        assert cs.AuditEntry.get(cs.AuditEntry.action == "hold.place").detail.startswith(
            f"T1 at b-1 ({hold.id})")
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
