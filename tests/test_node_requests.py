"""Blocks and holds a node's self-check asks for, as the cloud applies them (SQLite, PostgreSQL)."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from cloud import actions, debts, feed, settings
from cloud import store as s
from cloud.catalogue import MAX_HOLDS
from cloud.ingest import ingest
from protocol.envelope import make_envelope, parse_envelope

KIOSK_REASON = "blocked at self-check hall-1: card left in the machine"


@pytest.fixture
def net(cloud_store: str) -> None:
    s.seed(nodes=[{"id": "b-a", "kind": "branch"}, {"id": "b-b", "kind": "branch"}],
           titles=[{"id": f"T{i}", "title": f"Title {i}"} for i in range(1, 8)],
           copies=[{"barcode": "C1", "title_id": "T1", "status": "on_shelf",
                    "location_node": "b-b"}],
           readers=[{"card": f"R{i}", "name": f"Reader {i}"} for i in range(1, 5)])


def send(type_: str, body: dict) -> None:
    """Node b-a's next event, applied by the cloud."""
    cursor = s.NodeCursor.get_or_none(s.NodeCursor.node == "b-a")
    seq = (cursor.applied_seq if cursor else 0) + 1
    now = s.utcnow()
    hlc = f"{int(now.timestamp() * 1000):013d}-00000"
    ingest("b-a", [parse_envelope(make_envelope("b-a", seq, hlc, now, type_, body))])


def exceptions(kind: str) -> list[str]:
    return [e.detail for e in s.StaffException.select().where(s.StaffException.kind == kind)]


def reader(card: str) -> s.Reader:
    return s.Reader.get_by_id(card)


def changes(entity: str, key: str) -> list[tuple[str, str, dict]]:
    return [(c.scope, c.op, json.loads(c.data)) for c in s.Change.select().where(
        (s.Change.entity == entity) & (s.Change.key == key)).order_by(s.Change.rev)]


def test_a_kiosk_block_is_the_networks_and_only_a_kiosk_or_staff_lifts_it(net) -> None:
    settings.put("cloud.block_overdue_items", "1")
    s.Reader.update(blocked_reason="1 books overdue", blocked_by="auto").where(
        s.Reader.card == "R1").execute()
    send("reader.blocked", {"card": "R1", "reason": KIOSK_REASON, "source": "sip2:hall-1",
                            "card_retained": True})
    r1 = reader("R1")
    assert (r1.blocked_reason, r1.blocked_by) == (KIOSK_REASON, "kiosk")
    assert isinstance(r1.blocked_at, datetime)
    [detail] = exceptions("blocked_at_self_check")
    assert "sip2:hall-1 at b-a blocked card R1 and kept the card" in detail
    # Every node hears it: the reader's record, to all.
    scope, op, data = changes("reader", "R1")[-1]
    assert (scope, op, data["blocked_reason"], data["blocked_by"]) == ("*", "upsert",
                                                                     KIOSK_REASON, "kiosk")
    debts.overdue_run(settings.today())          # no books overdue: an automatic block would go
    assert reader("R1").blocked_reason == KIOSK_REASON
    send("reader.unblocked", {"card": "R1", "source": "sip2:hall-2"})
    assert (reader("R1").blocked_reason, reader("R1").blocked_by) == (None, None)

    actions.block("R2", "lost card")             # staff's block: a kiosk neither replaces
    send("reader.blocked", {"card": "R2", "reason": KIOSK_REASON, "source": "sip2:hall-1"})
    assert (reader("R2").blocked_reason, reader("R2").blocked_by) == ("lost card", "staff")
    send("reader.unblocked", {"card": "R2", "source": "sip2:hall-1"})   # ... nor lifts it
    assert (reader("R2").blocked_reason, reader("R2").blocked_by) == ("lost card", "staff")
    assert changes("reader", "R2")[-1][2]["blocked_reason"] == "lost card"   # told again
    send("reader.blocked", {"card": "R404", "reason": KIOSK_REASON, "source": "sip2:hall-1"})
    assert "blocked card R404" in exceptions("block_of_unknown_reader")[0]
    assert s.Event.select().where(s.Event.quarantined == True).count() == 0  # noqa: E712


def test_a_hold_placed_at_a_kiosk_is_placed_like_one_online(net) -> None:
    send("hold.requested", {"hold_id": "kiosk-h1", "reader": "R1", "title": "T1",
                            "pickup": "b-a", "source": "sip2:hall-1"})
    h = s.Hold.get_by_id("kiosk-h1")
    assert (h.reader, h.title_id, h.pickup_node, h.copy, h.status) == ("R1", "T1", "b-a",
                                                                       "C1", "waiting")
    assert s.Transfer.get(s.Transfer.copy == "C1").to_node == "b-a"   # sent from b-b
    assert ("b-a", "upsert") == changes("hold", "kiosk-h1")[-1][:2]
    entry = s.AuditEntry.get(s.AuditEntry.actor == "reader:R1")
    assert entry.action == "hold.place" and "sip2:hall-1" in entry.detail

    send("hold.cancelled", {"hold_id": "kiosk-h1", "reader": "R2", "source": "sip2:hall-1"})
    assert s.Hold.get_by_id("kiosk-h1").status == "waiting"           # not R2's to cancel
    assert "of R1" in exceptions("hold_cancel_refused")[0]
    send("hold.cancelled", {"hold_id": "kiosk-h1", "reader": "R1", "source": "sip2:hall-1"})
    assert s.Hold.get_by_id("kiosk-h1").status == "cancelled"
    assert ("b-a", "delete") == changes("hold", "kiosk-h1")[-1][:2]


@pytest.mark.parametrize("why", ["blocked", "duplicate", "too_many", "no_title"])
def test_a_hold_the_cloud_refuses_is_taken_back_from_the_node(net, why: str) -> None:
    title = "T1"
    if why == "blocked":
        actions.block("R1", "lost card")
    elif why == "duplicate":
        actions.place_hold("R1", "T1", "b-b")
    elif why == "too_many":
        for i in range(2, 2 + MAX_HOLDS):
            actions.place_hold("R1", f"T{i}", "b-b")
    else:
        title = "T-none"
    send("hold.requested", {"hold_id": "kiosk-h2", "reader": "R1", "title": title,
                            "pickup": "b-a"})
    assert s.Hold.get_or_none(s.Hold.id == "kiosk-h2") is None
    [detail] = exceptions("hold_request_refused")
    assert "hold kiosk-h2" in detail and "refused" in detail
    assert changes("hold", "kiosk-h2") == [("b-a", "delete", {"id": "kiosk-h2"})]
    assert feed.current_rev() > 0
