"""The `kitap admin` and `kitap staff` commands do what staff expect, and refuse clearly."""
from __future__ import annotations

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
