"""The benchmark's city generator: what it builds must be a consistent city, at any size."""
from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from bench.generate import CITY, build_edge, generate, node_specs

# 1/2000 of the city; the copies are raised to fill every slot of the 24 machines.
SHAPE = CITY.scaled(1 / 2000)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    from cloud import store

    path = tmp_path_factory.mktemp("city") / "city.db"
    built = generate(f"sqlite:///{path}", SHAPE)
    store.db.close()
    assert built.counts["copies"] == SHAPE.copies
    return sqlite3.connect(path)


def rows(con: sqlite3.Connection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_the_sizes_asked_for_are_built(city: sqlite3.Connection) -> None:
    for table, n in (("title", SHAPE.titles), ("copy", SHAPE.copies), ("reader", SHAPE.readers),
                     ("loan", SHAPE.loans), ("hold", SHAPE.holds), ("node", 52)):
        assert rows(city, f"select count(*) from {table}")[0][0] == n, table
    kinds = Counter(k for (k,) in rows(city, "select kind from node"))
    assert kinds == {"machine": 24, "branch": 28}


def test_every_copy_is_in_exactly_one_place(city: sqlite3.Connection) -> None:
    kind = dict(rows(city, "select id, kind from node"))
    open_loans = Counter(c for (c,) in rows(
        city, "select copy from loan where returned_at is null"))
    loan_of = dict(rows(city, "select id, copy from loan where returned_at is null"))
    for barcode, status, node, slot, loan_id in rows(
            city, "select barcode, status, location_node, slot, loan_id from copy"):
        if status == "in_slot":
            assert kind[node] == "machine" and 1 <= slot <= SHAPE.slots and loan_id is None
        elif status == "on_shelf":
            assert kind[node] == "branch" and slot is None and loan_id is None
        else:
            assert status == "on_loan" and node is None and slot is None
            assert loan_of[loan_id] == barcode
        # On loan exactly when one open loan names it.
        assert open_loans[barcode] == (1 if status == "on_loan" else 0), barcode
    # Every slot of every machine holds one copy, no slot holds two.
    slots = rows(city, "select location_node, slot, count(*) from copy where status='in_slot' "
                       "group by 1, 2")
    assert len(slots) == SHAPE.machines * SHAPE.slots
    assert {n for _, _, n in slots} == {1}


def test_every_reference_points_at_a_row(city: sqlite3.Connection) -> None:
    checks = {
        "copy.title_id": "select count(*) from copy where title_id not in (select id from title)",
        "copy.home_node": "select count(*) from copy where home_node not in (select id from node)",
        "loan.copy": "select count(*) from loan where copy not in (select barcode from copy)",
        "loan.reader": "select count(*) from loan where reader not in (select card from reader)",
        "loan.node": "select count(*) from loan where node not in (select id from node)",
        "loan.returned_node": "select count(*) from loan where returned_at is not null and "
                              "returned_node not in (select id from node)",
        "hold.reader": "select count(*) from hold where reader not in (select card from reader)",
        "hold.title": "select count(*) from hold where title_id not in (select id from title)",
        "hold.node": "select count(*) from hold where pickup_node not in (select id from node)",
    }
    for name, sql in checks.items():
        assert rows(city, sql)[0][0] == 0, name


def test_holds_and_blocks_are_what_a_node_would_act_on(city: sqlite3.Connection) -> None:
    # A ready hold sets aside a copy of its own title on its pickup branch's shelf.
    for title, copy_title, status, node, pickup in rows(
            city, "select h.title_id, c.title_id, c.status, c.location_node, h.pickup_node "
                  "from hold h join copy c on c.barcode = h.copy where h.status = 'ready'"):
        assert (title, status, node) == (copy_title, "on_shelf", pickup)
    assert len({c for (c,) in rows(city, "select copy from hold where copy is not null")}) == \
        rows(city, "select count(*) from hold where copy is not null")[0][0]
    blocked = rows(city, "select count(*) from reader where blocked_reason is not null")[0][0]
    assert blocked == len(range(0, SHAPE.readers, SHAPE.blocked_every))
    # A loan is returned after it was lent.
    assert rows(city, "select count(*) from loan where returned_at is not null "
                      "and returned_at < checked_out_at")[0][0] == 0


def test_the_same_seed_builds_the_same_city(tmp_path: Path, city: sqlite3.Connection) -> None:
    from cloud import store

    generate(f"sqlite:///{tmp_path / 'again.db'}", SHAPE)
    store.db.close()
    again = sqlite3.connect(tmp_path / "again.db")
    for sql in ("select barcode, title_id, status, location_node, slot from copy order by 1",
                "select id, copy, reader from loan order by 1"):
        assert rows(again, sql) == rows(city, sql)


def test_an_edge_file_holds_every_reader_and_its_copies(tmp_path: Path) -> None:
    from edge import store as es

    counts = build_edge(str(tmp_path / "edge.db"), "b-01", SHAPE, copies=40)
    es.db.close()
    con = sqlite3.connect(tmp_path / "edge.db")
    assert counts["readers"] == SHAPE.readers == rows(con, "select count(*) from reader")[0][0]
    assert rows(con, "select count(*) from copy where here = 1")[0][0] == 40
    assert rows(con, "select count(*) from copy where title_id not in "
                     "(select id from title)")[0][0] == 0
    assert rows(con, "select value from meta where key = 'feed_rev'")[0][0] == "1"
    assert [n.id for n in node_specs(SHAPE)][:2] == ["m-01", "m-02"]
