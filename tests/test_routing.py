"""Where a copy returned at a branch goes next (edge/routing.py), in the cloud's own order."""
from __future__ import annotations

import pytest

from edge.routing import CopyKnown, Route, decide

HERE = "b-here"


@pytest.mark.parametrize(("copy", "hold_here", "route"), [
    # set aside for a hold here: the hold shelf, whatever else is true
    (CopyKnown(True, "b-home", False, "b-east", "H7", "H9", "b-east"), ("H1", "R1"),
     Route("hold_here", HERE, "H1", "R1")),
    (CopyKnown(False), None, Route("unknown")),                     # never held here
    (CopyKnown(True), None, Route("shelf")),                        # floats (the default)
    (CopyKnown(True, "b-home", True), None, Route("shelf")),        # floats, away from home
    (CopyKnown(True, "b-home", False), None, Route("home", "b-home")),
    (CopyKnown(True, HERE, False), None, Route("shelf")),           # fixed, and home
    # the cloud was sending it home: home, unless a reader waits for the title
    (CopyKnown(True, "b-home", True, "b-home"), None, Route("home", "b-home")),
    (CopyKnown(True, "b-home", False, "b-home", None, "H9", "b-east"), None,
     Route("hold_elsewhere", "b-east", "H9")),
    # sent to a hold elsewhere (at its home too): it keeps going there, before any queue
    (CopyKnown(True, "b-home", False, "b-east", None, "H9", HERE), None,
     Route("hold_elsewhere", "b-east")),
    (CopyKnown(True, "b-home", False, "b-home", "H7", "H9", HERE), None,
     Route("hold_elsewhere", "b-home", "H7")),
    # it was on its way here: arrived; a reader here waits for the title
    (CopyKnown(True, None, None, HERE, None, "H9", HERE, "R9"), None,
     Route("hold_here", HERE, "H9", "R9")),
])
def test_a_returned_copy_goes_where_the_cloud_will_send_it(copy, hold_here, route) -> None:
    assert decide(HERE, copy, hold_here) == route
    assert decide(HERE, copy, hold_here).leaves == (route.kind in ("hold_elsewhere", "home",
                                                                   "unknown"))


def test_a_node_database_from_an_older_build_gains_the_new_columns(tmp_path) -> None:
    import sqlite3

    from edge import store as es

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:   # the copy and title tables as an older build made them
        con.execute("create table copy (barcode varchar primary key, title_id varchar, "
                    "slot integer, here integer not null, on_loan integer not null)")
        con.execute("create table title (id varchar primary key, title text not null, author "
                    "text not null, isbn varchar not null, language varchar not null, "
                    "item_type varchar not null, holds_waiting integer not null)")
        con.execute("insert into copy values ('C1', 'T1', null, 1, 0)")
    store = es.EdgeStore("b-old", str(path))
    try:
        c = es.Copy.get_by_id("C1")
        assert (c.title_id, c.home_node, c.floating, c.transit_to, c.transit_hold) == \
            ("T1", None, None, None, None)
        assert store.checkin("C1").route == Route("shelf")
    finally:
        es.db.close()
