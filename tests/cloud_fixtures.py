"""The cloud's store on both engines: a fresh SQLite file, or a fresh PostgreSQL database.

``cloud_url`` is parametrized, so a test that uses it (or ``cloud_store``) runs
once on SQLite and once on PostgreSQL. The PostgreSQL run creates its own
database (``kitap_test_<random>``) on the server named by ``KITAP_TEST_PG``
(default: postgres@127.0.0.1:5432, trust auth) and drops it afterwards; with
no server reachable it is skipped, saying so.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from protocol.envelope import Event

PG_ADMIN = os.environ.get("KITAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_pg_problem: list[str | None] = []  # checked once per session


def pg_problem() -> str | None:
    """Why no PostgreSQL server is usable for tests, or None if one is."""
    if not _pg_problem:
        try:
            import psycopg2

            psycopg2.connect(PG_ADMIN, connect_timeout=3).close()
            _pg_problem.append(None)
        except Exception as exc:  # noqa: BLE001 - any reason means: skip
            _pg_problem.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    return _pg_problem[0]


def require_pg() -> None:
    """Skip the calling test, with the reason, when PostgreSQL is not reachable."""
    problem = pg_problem()
    if problem:
        pytest.skip(f"no PostgreSQL server for tests at {PG_ADMIN} ({problem}); "
                    "set KITAP_TEST_PG to a server where the user may create databases")


def _admin(sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


@contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; its URL. Dropped afterwards."""
    require_pg()
    name = f"kitap_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    # A test database need not survive a power cut: commits without waiting on
    # the disk make the property tests' thousands of transactions fast.
    _admin(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def cloud_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty cloud database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def cloud_store(cloud_url: str) -> Iterator[str]:
    """The cloud store bound to a fresh database of each engine (tables created)."""
    from cloud import store

    store.connect(cloud_url)
    yield cloud_url
    store.db.close()


def reset_cloud() -> None:
    """Empty every cloud table (between the examples of a property test)."""
    from cloud import settings, store

    settings.clear_cache()
    # DELETE, not TRUNCATE: on tables this small it is many times faster on PostgreSQL.
    with store.db.atomic():
        for model in store.TABLES:
            model.delete().execute()


class NodeLog:
    """A node as the cloud sees it: events numbered 1, 2, 3… with its clock, ingested.

    ``start`` None: a node online now, each event at the moment it is made.
    """

    def __init__(self, node: str, start: datetime | None = None) -> None:
        self.node = node
        self.seq = 0
        self.now = start

    def event(self, type_: str, body: dict[str, Any], at: datetime | None = None) -> Event:
        """The node's next event, at ``at`` (or its clock, which then moves a minute on)."""
        from cloud.store import utcnow
        from protocol.envelope import make_envelope, parse_envelope

        ts = at or self.now or utcnow()
        if self.now is not None:
            self.now = max(self.now, ts) + timedelta(minutes=1)
        self.seq += 1
        hlc = f"{int(ts.timestamp() * 1000):013d}-00000"
        return parse_envelope(make_envelope(self.node, self.seq, hlc, ts, type_, body))

    def send(self, type_: str, body: dict[str, Any], at: datetime | None = None,
             received: datetime | None = None) -> Any:
        """Make the next event and ingest it as the cloud would on receiving it."""
        from cloud.ingest import ingest

        return ingest(self.node, [self.event(type_, body, at)], received)

    def lend(self, copy: str, reader: str, due: date, at: datetime | None = None,
             loan_id: str | None = None, **kw: Any) -> str:
        """A checkout here; returns the loan id."""
        loan_id = loan_id or f"{self.node}-L{self.seq + 1}"
        self.send("loan.checkout", {"loan_id": loan_id, "copy": copy, "reader": reader,
                                    "due": due}, at, **kw)
        return loan_id

    def take_back(self, copy: str, at: datetime | None = None, **kw: Any) -> Any:
        """A return here."""
        return self.send("loan.return", {"copy": copy}, at, **kw)
