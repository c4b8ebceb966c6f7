"""The cloud's scheduled work: notice delivery, hold expiry, the overdue run, feed compaction.

Every cloud process runs a ``Scheduler`` thread (started by the consumer), but
each job runs once per interval across all of them: a process claims a run by
writing the job's last-run time in the same transaction that checked it (one
writer at a time on SQLite; an advisory lock on PostgreSQL). Intervals are
settings (``cloud.job.<name>.every``, seconds), so ops can change them while
the network runs; ``kitap admin jobs-run`` runs them now.
"""
from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloud import debts, feed, holds, notices, settings
from cloud import store as s

logger = logging.getLogger(__name__)

# How often the scheduler looks at what is due: notices leave within seconds of
# being queued, and an idle check costs one small query per job.
TICK = 5.0


@dataclass(frozen=True)
class Job:
    """A piece of scheduled work."""

    name: str
    every_s: int  # the default interval, in seconds, and why
    run: Callable[[datetime], Any]


JOBS: tuple[Job, ...] = (
    # A notice should reach its reader within a minute of being decided.
    Job("notices", 30, lambda now: notices.deliver(now=now)),
    # Expiry is by the day; every ten minutes hands an expired copy on promptly.
    Job("holds", 600, lambda now: holds.expire(now=now)),
    # Fines accrue by the day; every ten minutes catches a new day, a new block
    # or a rule change soon enough without scanning open loans all the time.
    Job("overdue", 600, lambda now: debts.overdue_run(now=now)),
    # Compaction only matters over days; a few times a day keeps the log small.
    Job("compact", 6 * 3600, lambda now: feed.compact(now=now)),
)
BY_NAME = {j.name: j for j in JOBS}


def interval(job: Job) -> timedelta:
    """The job's interval: ``cloud.job.<name>.every`` or its default."""
    value = settings.get(f"cloud.job.{job.name}.every", str(job.every_s))
    try:
        return timedelta(seconds=max(1, int(value)))
    except ValueError:
        return timedelta(seconds=job.every_s)


def last_run(job: Job) -> datetime | None:
    """When the job last started, in any cloud process (read from the table, not a cache)."""
    row = s.Setting.get_or_none(s.Setting.key == f"cloud.job.{job.name}.last")
    return datetime.fromisoformat(row.value) if row is not None and row.value else None


def _due(job: Job, now: datetime) -> bool:
    last = last_run(job)
    return last is None or now - last >= interval(job)


def _claim(job: Job, now: datetime, force: bool) -> bool:
    """Mark the job as started now, unless another process did within its interval."""
    if not force and not _due(job, now):
        return False  # the common case, decided without taking a write lock
    with s.db.atomic():
        if s.is_postgres():
            key = zlib.crc32(f"kitap-job-{job.name}".encode())
            got = s.db.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0]
            if not got:
                return False
        if not force and not _due(job, now):
            return False
        settings.put(f"cloud.job.{job.name}.last", now.isoformat())
    return True


def run(names: list[str] | None = None, now: datetime | None = None,
        force: bool = True) -> dict[str, Any]:
    """Run jobs (all, or those named) now; their results by name."""
    now = now or s.utcnow()
    out: dict[str, Any] = {}
    for job in JOBS:
        if names is not None and job.name not in names:
            continue
        if not _claim(job, now, force):
            continue
        try:
            out[job.name] = job.run(now)
        except Exception:
            logger.exception("job %s failed; it runs again next interval", job.name)
    return out


def unknown(names: list[str]) -> list[str]:
    """The names that are no job."""
    return [n for n in names if n not in BY_NAME]


class Scheduler:
    """A thread that runs every job when its interval has passed."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name="cloud-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current job."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                run(now=s.utcnow(), force=False)
            except Exception:
                # The database is away: try again at the next tick.
                logger.exception("scheduled jobs failed; trying again")
