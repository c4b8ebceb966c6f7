"""The sample services the demo loads: a schedule at every branch, partners only for the
partner categories, and the empowerment workshop free to a partner's people and members."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kitap import sample_services as ss
from kitap.sample_data import default_nodes, generate

START = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def test_the_schedule_is_at_every_branch_and_the_same_each_time() -> None:
    nodes = default_nodes()
    a, b = ss.sessions(nodes, START), ss.sessions(nodes, START)
    assert a == b and a
    branches = {n.id for n in nodes if n.kind == "branch"}
    assert {x.branch for x in a} == branches
    assert all(x.ends_at > x.starts_at for x in a)
    assert len({x.id for x in a}) == len(a)
    kinds = {s.id: s.kind for s in ss.SERVICES}
    assert {kinds[x.service] for x in a} == {"counselling", "workshop", "event"}


def test_partners_go_to_supported_clients_and_partner_staff_only() -> None:
    data = generate(default_nodes(), copies=300, readers=300, seed=3)
    for r in data.readers:
        partner = ss.partner_of(r)
        assert (partner is not None) == (r.category in ("supported", "partner_staff"))
    assert {ss.partner_of(r) for r in data.readers} - {None} == {p for p, _ in ss.PARTNERS}


def test_installed_the_empowerment_workshop_is_free_to_the_partner_s_people(
        tmp_path: Path) -> None:
    from cloud import service_models as m
    from cloud import services
    from cloud import store as cs

    data = generate(default_nodes(), copies=300, readers=120, seed=3)
    cs.connect(f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        cs.seed(nodes=[{"id": n.id, "kind": n.kind, "name": n.name} for n in data.nodes],
                titles=[], copies=[],
                readers=[{"card": r.card, "name": r.name, "category": r.category}
                         for r in data.readers])
        n = ss.install(data.nodes, data.readers, START)
        assert n == m.ServiceSession.select().count() > 0
        emp = m.Service.get_by_id("ws-empower")
        today = START.date()
        for category, amount in (("supported", 0), ("partner_staff", 0), ("adult", 150_000)):
            r = cs.Reader.get(cs.Reader.category == category)
            assert services.quote(r, emp, today).amount == amount, category
            assert (r.partner is not None) == (category != "adult")
    finally:
        cs.db.close()
