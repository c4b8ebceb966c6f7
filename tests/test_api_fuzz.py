"""Every HTTP API fuzzed against its own OpenAPI spec: no 5xx, and a refused request
changes nothing."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from edge import store as es
from tests.conftest import TOKEN, small_fund
from tests.machine_bench import Bench, bench_for

pytestmark = pytest.mark.integration

# Enough cases per operation to find crashes, few enough for `make test`.
EXAMPLES = 25


@pytest.fixture
def edge_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from edge.app import create_app

    path = tmp_path_factory.mktemp("fuzz-edge") / "edge.db"
    fund = small_fund(30)
    store = es.EdgeStore("b-test", str(path))
    store.seed(titles=fund["titles"], copies=fund["copies"], readers=fund["readers"])
    app = create_app({"NODE_ID": "b-test", "NODE_KIND": "branch", "DATABASE": str(path),
                      "START_SYNC": False, "API_TOKEN": TOKEN, "TESTING": True})
    yield app
    es.db.close()


def _operations(app: object) -> list[object]:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(app: object, check: Callable[[object], None], prefixes: tuple[str, ...] = ()) -> int:
    """Run ``check`` on generated cases of every operation (or of those whose path starts
    with one of ``prefixes``); returns how many operations."""
    ops = [op for op in _operations(app) if op.path.startswith(prefixes or ("",))]
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: object) -> None:
            check(case)
        run()
    return len(ops)


def _edge_check(case) -> None:
    """No 5xx; a refusal changes nothing (outbox, loans, readers) and says why."""
    before = (es.Outbox.select().count(), es.Loan.select().count(),
              es.Reader.select().count())
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if 400 <= response.status_code < 500:
        after = (es.Outbox.select().count(), es.Loan.select().count(),
                 es.Reader.select().count())
        assert after == before, (case.method, case.path, response.status_code)
        body = response.json()
        assert body.get("message") or body.get("errors"), "a refusal must say why"


def test_edge_api_never_fails_and_refusals_change_nothing(edge_app) -> None:
    assert _fuzz(edge_app, _edge_check) >= 10        # every operation of the spec was fuzzed


bench = pytest.fixture(bench_for, name="bench")


def test_a_machine_nodes_api_never_fails(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine node's API, with its /api/machine/* calls, over a real simulator."""
    monkeypatch.setenv("KITAP_MACHINE_RECONNECT", "0.2")
    loaded = {1: "C00001", 2: "C00002"}
    bench.sim(loaded=loaded)
    app = bench.app(loaded, API_TOKEN=TOKEN)
    # The calls a machine node answers differently from a branch (the rest is the same
    # code, fuzzed above).
    assert _fuzz(app, _edge_check, ("/api/machine/", "/api/checkout", "/api/status",
                                    "/api/return")) == 8
    assert app.extensions["kitap.machine"].online   # nothing it was sent broke the line


def test_cloud_api_never_fails(tmp_path_factory: pytest.TempPathFactory) -> None:
    from cloud import store as cs
    from cloud.app import create_app

    path = tmp_path_factory.mktemp("fuzz-cloud") / "cloud.db"
    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "START_CONSUMER": False,
                      "API_TOKEN": TOKEN})

    def check(case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        # Without the token (or a console login) nothing is told, and the refusal says why.
        anonymous = case.call(headers={"Authorization": "Bearer not-the-token"})
        assert anonymous.status_code == 401, (case.method, case.path, anonymous.text[:300])
        assert anonymous.json()["message"]
    try:
        assert _fuzz(app, check) >= 3
    finally:
        cs.db.close()


def test_the_specs_describe_the_refusals(edge_app) -> None:
    spec = edge_app.test_client().get("/api/openapi.json").get_json()
    assert "409" in spec["paths"]["/api/checkout"]["post"]["responses"]
    assert "422" in spec["paths"]["/api/checkout"]["post"]["responses"]


def test_edge_a_token_in_any_characters_is_refused_not_a_crash(edge_app) -> None:
    """A scanner or a proxy that mangles the header gets a 401, never a 500."""
    client = edge_app.test_client()
    for header in ("Bearer \u00e9\u00e9\u00e9", "Bearer " + TOKEN[:-1] + "\u00ff", "Bearer "):
        response = client.post("/api/return", json={"copy": "C00001"},
                               headers={"Authorization": header})
        assert response.status_code == 401, (header, response.status_code)
        assert response.get_json()["message"]
    assert es.Outbox.select().count() == 0
