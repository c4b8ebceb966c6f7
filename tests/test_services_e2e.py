"""Services end to end through a real broker, a real cloud and two real branch nodes:
a booking made online appears at both desks; then both branches, offline, sell the last
seat of a workshop; the later booking's link comes back first and its seat is confirmed,
then the earlier one arrives — it keeps the seat, the other moves to the waiting list, both
desks show the real status, and staff and the reader are told."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import service_actions
from cloud import store as cs
from kitap.procs import wait_for
from tests.conftest import api, seed_cloud, small_fund

pytestmark = pytest.mark.integration

A, B = "b-other", "b-test"


def cloud_action(path: Path, fn: Any, *args: Any, **kw: Any) -> Any:
    """Act in the cloud's database as the console does."""
    cs.connect(f"sqlite:///{path}")
    try:
        return fn(*args, **kw)
    finally:
        cs.db.close()


def setup_services() -> None:
    service_actions.save_service(service_actions.ServiceForm(
        "ws-poetry", "workshop", ("Поэзия кеші", "Поэтический вечер", "Poetry evening"),
        150_000, capacity=2))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    service_actions.schedule("ws-poetry", B, start, start + timedelta(hours=2), room="Hall",
                             host="A. Nurlanova", session_id="S1")


def roster(edge: str) -> dict[str, tuple[str, str, bool]]:
    code, body = api("GET", edge + "/api/sessions/S1")
    if code != 200:
        return {}
    return {b["reader"]: (b["status"], b["seat"], b["confirmed"]) for b in body["bookings"]}


def one(db: Path, sql: str, *args: Any) -> Any:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchall()


def test_online_booking_reaches_the_desks_and_the_last_seat_sold_twice_offline(
        tmp_path: Path, broker, network) -> None:
    db = tmp_path / "cloud.db"
    url = seed_cloud(db, small_fund(10))
    cloud_action(db, setup_services)
    broker.start()
    network.cloud(url)
    edges = {A: network.edge(A, "branch", tmp_path / f"{A}.db"),
             B: network.edge(B, "branch", tmp_path / f"{B}.db")}
    for node, edge in edges.items():
        wait_for(lambda e=edge: api("GET", e + "/api/sessions")[1], 30,
                 what=f"{node} to learn the session")

    # A reader books online: both desks (any desk sells any branch's sessions) show it.
    online = cloud_action(db, service_actions.book_online, "R0001", "S1").booking.id
    for edge in edges.values():
        wait_for(lambda e=edge: roster(e).get("R0001") == ("active", "seated", True), 20,
                 what="the online booking to reach the desk")

    # Both branches lose the link and each sells the last seat; b-other first.
    broker.kill()
    for edge in edges.values():
        wait_for(lambda e=edge: not api("GET", e + "/api/status")[1]["link"]["connected"], 15,
                 what="the node to notice it is offline")
    code, first = api("POST", edges[A] + "/api/bookings", {"reader": "R0002", "session": "S1"})
    assert code == 201 and (first["seat"], first["paid"]) == ("seated", 150_000), first
    code, later = api("POST", edges[B] + "/api/bookings", {"reader": "R0003", "session": "S1"})
    assert code == 201 and later["seat"] == "seated", later
    # Offline, each desk knows only its own sale: the session looks full to both.
    for edge in edges.values():
        assert api("GET", edge + "/api/sessions")[1][0]["free"] == 0

    # b-test's link comes back first (b-other is frozen): its booking is confirmed seated.
    network.proc(A).pause()
    try:
        broker.start()
        wait_for(lambda: roster(edges[B]).get("R0003") == ("active", "seated", True), 30,
                 what="the later booking to be confirmed first")
    finally:
        network.proc(A).resume()
    # Then b-other's earlier booking arrives: it keeps the seat, whatever the order.
    for edge in edges.values():
        wait_for(lambda e=edge: roster(e).get("R0003") == ("active", "waitlisted", True)
                 and roster(e).get("R0002") == ("active", "seated", True), 30,
                 what="both desks to show the cloud's decision")
    assert roster(edges[B])["R0001"] == ("active", "seated", True)
    [(detail, node)] = one(db, "select detail, node from staffexception where kind = "
                               "'booking_lost_seat' and closed_at is null")
    assert "R0003" in detail and "1\u00a0500\u00a0₸" in detail and node == B
    assert one(db, "select count(*) from notice where kind = 'booking_waitlisted' "
                   "and reader = 'R0003'") == [(1,)]
    mine = api("GET", edges[B] + "/api/readers/R0003/services")[1]["bookings"][0]
    assert (mine["seat"], mine["position"], mine["paid"]) == ("waitlisted", 1, 150_000)

    # The online reader cancels: the waiting reader gets the seat, and the desks see it.
    cloud_action(db, service_actions.cancel_booking, online, "cannot come")
    for edge in edges.values():
        wait_for(lambda e=edge: roster(e).get("R0003") == ("active", "seated", True), 20,
                 what="the waiting list to move up at the desks")
    assert one(db, "select count(*) from staffexception where kind = 'booking_lost_seat' "
                   "and closed_at is null") == [(0,)]
    for edge in edges.values():
        wait_for(lambda e=edge: api("GET", e + "/api/status")[1]["outbox_depth"] == 0, 20,
                 what="every event to be acknowledged")
