"""Scheduled jobs (SQLite and PostgreSQL): each runs once per interval, whoever asks."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cloud import actions, jobs, notices
from cloud import store as s
from kitap.procs import wait_for


def test_a_job_runs_once_per_interval_across_processes(cloud_store: str) -> None:
    now = s.utcnow()
    first = jobs.run(["overdue"], now=now, force=False)
    assert set(first) == {"overdue"}
    # Another process, a moment later: not due yet, so it does not run it again.
    assert jobs.run(["overdue"], now=now + timedelta(seconds=5), force=False) == {}
    assert jobs.last_run(jobs.BY_NAME["overdue"]) == now
    actions.set_setting("cloud.job.overdue.every", "60")
    assert set(jobs.run(["overdue"], now=now + timedelta(seconds=61), force=False)) == {
        "overdue"}
    assert jobs.unknown(["overdue", "dust"]) == ["dust"]


def test_the_scheduler_delivers_a_queued_notice_within_seconds(cloud_store: str,
                                                              tmp_path: Path) -> None:
    s.seed(nodes=[], titles=[], copies=[], readers=[{"card": "R1", "name": "Айгерим"}])
    outbox = tmp_path / "notices"
    actions.set_setting("cloud.notices_url", f"dir:{outbox}")
    with s.db.atomic():
        notices.queue("R1", "blocked", "blocked/R1/test", "Your library card is blocked",
                      "Return the books to lift it.")
    scheduler = jobs.Scheduler(tick=0.2)
    scheduler.start()
    try:
        [sent] = wait_for(lambda: list(outbox.glob("*.txt")), 10, what="the notice file")
    finally:
        scheduler.stop()
    assert "Айгерим" in sent.read_text(encoding="utf-8")
    assert s.Notice.get_by_id("blocked/R1/test").sent_at is not None
