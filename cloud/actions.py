"""What staff do to the network from the cloud; each action is a change every node learns.

Used by the ``kitap admin`` command now and by the ops console (issue 6).
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from cloud import feed
from cloud import store as s

# Days a reader has to collect a hold once it is ready.
HOLD_DAYS = 7


class ActionError(Exception):
    """An action refused, with a reason for the person who asked."""


def block(card: str, reason: str) -> None:
    """Block a reader everywhere (a debtor, a lost card)."""
    with s.db.atomic():
        if not s.Reader.update(blocked_reason=reason).where(s.Reader.card == card).execute():
            raise ActionError(f"no reader with card {card}")
        feed.reader_changed(card)


def unblock(card: str) -> None:
    """Lift a reader's block everywhere."""
    with s.db.atomic():
        if not s.Reader.update(blocked_reason=None).where(s.Reader.card == card).execute():
            raise ActionError(f"no reader with card {card}")
        feed.reader_changed(card)


def place_hold(reader: str, title_id: str, pickup_node: str) -> s.Hold:
    """Reserve a title for a reader at a pickup node; a copy there is set aside at once."""
    with s.db.atomic():
        if s.Reader.get_or_none(s.Reader.card == reader) is None:
            raise ActionError(f"no reader with card {reader}")
        if s.Title.get_or_none(s.Title.id == title_id) is None:
            raise ActionError(f"no title {title_id}")
        if s.Node.get_or_none(s.Node.id == pickup_node) is None:
            raise ActionError(f"no node {pickup_node}")
        taken = s.Hold.select(s.Hold.copy).where(s.Hold.status.in_(["waiting", "ready"])
                                                 & s.Hold.copy.is_null(False))
        copy = (s.Copy.select().where((s.Copy.title_id == title_id)
                                      & (s.Copy.location_node == pickup_node)
                                      & s.Copy.status.in_(["in_slot", "on_shelf"])
                                      & s.Copy.barcode.not_in(taken))
                .order_by(s.Copy.barcode).first())
        now = s.utcnow()
        hold = s.Hold.create(
            id=uuid.uuid4().hex, title_id=title_id, reader=reader, pickup_node=pickup_node,
            copy=copy.barcode if copy else None, status="ready" if copy else "waiting",
            created_at=now, expires=(now + timedelta(days=HOLD_DAYS)).date() if copy else None)
        feed.hold_changed(hold)
        return hold


def cancel_hold(hold_id: str) -> None:
    """Cancel a hold; its copy is free again."""
    with s.db.atomic():
        h = s.Hold.get_or_none(s.Hold.id == hold_id)
        if h is None or h.status not in ("waiting", "ready"):
            raise ActionError(f"no open hold {hold_id}")
        h.status = "cancelled"
        h.save()
        feed.hold_changed(h)


def set_policy(item_type: str, category: str, loan_days: int, max_items: int,
               renewals: int) -> None:
    """Set a loan policy row ("*" for any item type or category)."""
    with s.db.atomic():
        s.Policy.insert(item_type=item_type, category=category, loan_days=loan_days,
                        max_items=max_items, renewals=renewals).on_conflict_replace().execute()
        p = s.Policy.get((s.Policy.item_type == item_type) & (s.Policy.category == category))
        feed.record("policy", f"{item_type}/{category}", "upsert", feed.policy_data(p))


def set_setting(key: str, value: str) -> None:
    """Set a network-wide setting (e.g. offline_cap_after_hours, offline_cap_loans)."""
    with s.db.atomic():
        s.Setting.insert(key=key, value=value).on_conflict_replace().execute()
        feed.record("config", key, "upsert", {"key": key, "value": value})
