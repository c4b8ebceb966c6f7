"""The chaos suite, bounded: every kind of fault, then nothing lost, nothing doubled,
every copy in one place, and the cloud equal to each node's journal applied once."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from kitap.chaos import FAULTS, Chaos

pytestmark = pytest.mark.integration

# Long enough for every kind of fault at least once (they come in rounds).
BOUNDED_SECONDS = 45.0


def _run(tmp_path: Path, seconds: float, seed: int) -> Chaos:
    chaos = Chaos(tmp_path / "chaos", seed=seed)
    try:
        chaos.start()
        verdict = chaos.run(seconds)
    finally:
        chaos.close()
    assert verdict.ok, "\n".join(verdict.problems)
    figures = verdict.figures
    assert figures["converge_s"] is not None
    assert figures["events"] > 50                      # the readers really were served
    chaos.verdict = verdict                            # type: ignore[attr-defined]
    return chaos


def test_bounded_chaos_run_converges_to_the_oracle(tmp_path: Path) -> None:
    chaos = _run(tmp_path, BOUNDED_SECONDS, seed=3)
    assert set(chaos.faults) == set(FAULTS)            # every kind was injected
    # The judge is not a rubber stamp: tamper with the cloud, and it says so.
    db = chaos.cloud_db
    with sqlite3.connect(db) as con:
        node, seq = con.execute("select node, max(seq) from event group by node").fetchone()
        con.execute("delete from event where node=? and seq=?", (node, seq))
        barcode = con.execute("select barcode from copy where status='on_shelf' limit 1"
                              ).fetchone()[0]
        con.execute("update copy set status='on_loan' where barcode=?", (barcode,))
    problems = chaos.judge().problems
    assert any(node in p and "cloud has seqs" in p for p in problems), problems
    assert any("oracle" in p for p in problems), problems
    assert any("disagrees with their loans" in p for p in problems), problems


@pytest.mark.slow
def test_long_chaos_run(tmp_path: Path) -> None:
    """`make chaos` runs this for CHAOS_SECONDS (default 600)."""
    _run(tmp_path, float(os.environ.get("CHAOS_SECONDS", "600")), seed=11)
