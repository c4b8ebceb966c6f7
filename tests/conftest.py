"""Fixtures shared by the tests: our own Mosquitto, seeded databases, kitap processes."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kitap.procs import Mosquitto, Process, free_port, http_json, kitap_command, wait_http
from tests.cloud_fixtures import cloud_store, cloud_url  # noqa: F401 - fixtures for all tests


def library_date(at: datetime) -> date:
    """The library's calendar day at the instant ``at`` (due dates count in it)."""
    from zoneinfo import ZoneInfo

    from edge.store import DEFAULT_TIMEZONE

    return at.astimezone(ZoneInfo(DEFAULT_TIMEZONE)).date()


def library_day(days: int = 0) -> date:
    """The library's calendar day ``days`` from today."""
    return library_date(datetime.now(UTC)) + timedelta(days=days)

# The API token every edge of a test network accepts (a test secret, not a real one).
TOKEN = "test-token-not-secret"


def api(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """A JSON call to an edge or the cloud with the test network's token."""
    return http_json(method, url, body, token=TOKEN)

NODES = [
    {"id": "m-test", "kind": "machine", "name": "Test machine"},
    {"id": "b-test", "kind": "branch", "name": "Test branch"},
    {"id": "b-other", "kind": "branch", "name": "Other branch"},
]


def small_fund(n_copies: int, node: str = "b-test") -> dict[str, list[dict[str, Any]]]:
    """A tiny fund at ``node``: 10 titles, ``n_copies`` copies, 50 readers."""
    titles = [{"id": f"T{i:03d}", "title": f"Title {i}", "author": "Author", "item_type": "book"}
              for i in range(10)]
    copies = [{"barcode": f"C{i:05d}", "title_id": f"T{i % 10:03d}"} for i in range(n_copies)]
    readers = [{"card": f"R{i:04d}", "name": f"Reader {i}", "category": "adult"}
               for i in range(50)]
    return {"titles": titles, "copies": copies, "readers": readers, "node": [node]}


def seed_cloud(db: str | Path, fund: dict[str, list[dict[str, Any]]]) -> str:
    """Fill a cloud database with NODES and ``fund``; returns its URL.

    ``db`` is a database URL (the ``cloud_url`` fixture: SQLite, then PostgreSQL)
    or the path of a SQLite file to create.
    """
    from cloud import store

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    store.connect(url)
    node = fund["node"][0]
    store.seed(nodes=NODES, titles=fund["titles"], readers=fund["readers"],
               copies=[{**c, "home_node": node, "status": "on_shelf", "location_node": node}
                       for c in fund["copies"]])
    store.db.close()
    return url


def seed_edge(path: Path, node: str, fund: dict[str, list[dict[str, Any]]]) -> Path:
    """Create an edge SQLite file for ``node`` holding ``fund``."""
    from edge import store

    es = store.EdgeStore(node, str(path))
    es.seed(titles=fund["titles"], copies=fund["copies"], readers=fund["readers"])
    store.db.close()
    return path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own on a free port, NOT started (the test decides)."""
    b = Mosquitto(tmp_path / "broker")
    yield b
    b.stop()


class Network:
    """kitap processes started by a test, all stopped at teardown."""

    def __init__(self, tmp_path: Path, broker: Mosquitto) -> None:
        self.tmp = tmp_path
        self.broker = broker
        self.procs: list[Process] = []
        self.auth_dir: Path | None = None   # set: processes connect with their credentials

    def _creds(self, user: str) -> dict[str, str]:
        from kitap.provision import env_of

        return env_of(self.auth_dir, user) if self.auth_dir else {}

    def proc(self, name: str) -> Process:
        """The process started under ``name`` (the node id, or "cloud")."""
        return next(p for p in self.procs if p.name == name)

    def cloud(self, db_url: str, shared: bool = False) -> str:
        """Start a cloud process (one of several ingest workers if ``shared``); its base URL."""
        port = free_port()
        p = Process("cloud", kitap_command(
            "cloud", "--db", db_url, "--broker", f"127.0.0.1:{self.broker.port}",
            "--http", f"127.0.0.1:{port}", *(["--shared"] if shared else [])),
            self.tmp / f"cloud-{port}.log",
            env={"KITAP_API_TOKEN": TOKEN, **self._creds("kitap-cloud")}).start()
        self.procs.append(p)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        return url

    def edge(self, node: str, kind: str, db: Path, serial: str | None = None) -> str:
        """Start an edge process; returns its base URL."""
        port = free_port()
        argv = ["edge", "--node", node, "--kind", kind, "--db", str(db),
                "--broker", f"127.0.0.1:{self.broker.port}", "--http", f"127.0.0.1:{port}"]
        if serial:
            argv += ["--serial", serial]
        p = Process(node, kitap_command(*argv), self.tmp / f"{node}-{port}.log",
                    env={"KITAP_API_TOKEN": TOKEN, **self._creds(node)}).start()
        self.procs.append(p)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        return url

    def logs(self) -> str:
        """Every process's log, for a failing test's report."""
        return "\n".join(f"--- {p.name}\n{p.log.read_text()[-4000:]}" for p in self.procs)

    def stop(self) -> None:
        """Stop every process."""
        for p in reversed(self.procs):
            p.resume()
            p.stop()


@pytest.fixture
def network(tmp_path: Path, broker: Mosquitto, request: pytest.FixtureRequest) -> Iterator[Network]:
    """Start kitap processes against ``broker``; their logs are printed if the test fails."""
    net = Network(tmp_path, broker)
    yield net
    net.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(net.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can see a failure."""
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
