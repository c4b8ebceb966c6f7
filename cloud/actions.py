"""What staff do to the network from the cloud; each action is a change every node learns.

Used by the ``kitap admin`` command now and by the ops console (issue 6).
"""
from __future__ import annotations

from cloud import copies, debts, feed, holds, notices, settings
from cloud import store as s

# Days a reader has to collect a hold once it is ready (the default of cloud.hold_days).
HOLD_DAYS = int(settings.DEFAULTS["cloud.hold_days"])


class ActionError(Exception):
    """An action refused, with a reason for the person who asked.

    ``code`` names the reason for pages that say it in the reader's language
    (``act.<code>`` in cloud/console/words.py); the message is the English one.
    """

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


def block(card: str, reason: str) -> None:
    """Block a reader everywhere (a debtor, a lost card); only staff lift it."""
    now = s.utcnow()
    with feed.transaction():
        reader = s.Reader.get_or_none(s.Reader.card == card)
        if reader is None:
            raise ActionError(f"no reader with card {card}", "no_reader")
        s.Reader.update(blocked_reason=reason, blocked_by="staff", blocked_at=now).where(
            s.Reader.card == card).execute()
        if not reader.blocked_reason:
            notices.queue(card, "blocked", f"blocked/{card}/{now:%Y%m%dT%H%M%S}",
                          "Your library card is blocked",
                          f"Your card is blocked at every library and machine: {reason}.", now)
        feed.reader_changed(card)


def unblock(card: str) -> None:
    """Lift a reader's block everywhere."""
    with feed.transaction():
        if not s.Reader.update(blocked_reason=None, blocked_by=None, blocked_at=None).where(
                s.Reader.card == card).execute():
            raise ActionError(f"no reader with card {card}", "no_reader")
        feed.reader_changed(card)


def place_hold(reader: str, title_id: str, pickup_node: str,
               hold_id: str | None = None) -> s.Hold:
    """Reserve a title for a reader at a pickup node; a copy is set aside there or sent.

    ``hold_id``: the id a node gave it (a reservation made at a self-check).
    """
    with feed.transaction():
        if s.Reader.get_or_none(s.Reader.card == reader) is None:
            raise ActionError(f"no reader with card {reader}", "no_reader")
        if s.Title.get_or_none(s.Title.id == title_id) is None:
            raise ActionError(f"no title {title_id}", "no_title")
        if s.Node.get_or_none(s.Node.id == pickup_node) is None:
            raise ActionError(f"no node {pickup_node}", "no_node")
        if s.Hold.select().where((s.Hold.reader == reader) & (s.Hold.title_id == title_id)
                                 & s.Hold.status.in_(holds.ACTIVE)).exists():
            raise ActionError(f"{reader} already has a hold on {title_id}", "already_held")
        if hold_id is not None and s.Hold.get_or_none(s.Hold.id == hold_id) is not None:
            raise ActionError(f"hold {hold_id} exists already")
        return holds.create(reader, title_id, pickup_node, hold_id=hold_id)


def cancel_hold(hold_id: str) -> None:
    """Cancel a hold; its copy goes to the next reader in line."""
    with feed.transaction():
        h = s.Hold.get_or_none(s.Hold.id == hold_id)
        if h is None or h.status not in holds.ACTIVE:
            raise ActionError(f"no open hold {hold_id}", "no_hold")
        holds.cancel(h)


def set_policy(item_type: str, category: str, loan_days: int, max_items: int,
               renewals: int) -> None:
    """Set a loan policy row ("*" for any item type or category)."""
    with feed.transaction():
        s.upsert(s.Policy, [{"item_type": item_type, "category": category,
                             "loan_days": loan_days, "max_items": max_items,
                             "renewals": renewals}], [s.Policy.item_type, s.Policy.category])
        p = s.Policy.get((s.Policy.item_type == item_type) & (s.Policy.category == category))
        feed.record("policy", f"{item_type}/{category}", "upsert", feed.policy_data(p))


def set_setting(key: str, value: str) -> None:
    """Set a setting: ``cloud.*`` stays in the cloud, the rest reaches every node."""
    with feed.transaction():
        settings.put(key, value)
        if not settings.is_cloud_only(key):
            feed.record("config", key, "upsert", {"key": key, "value": value})


def set_fine_policy(item_type: str, per_day: int, cap: int | None = None, grace_days: int = 0,
                    replacement: int = 0) -> None:
    """Set the fines for an item type ("*": any); all zero means none are charged."""
    if min(per_day, grace_days, replacement, cap or 0) < 0:
        raise ActionError("fines are amounts in tiyn and days: none may be negative")
    with s.db.atomic():
        s.upsert(s.FinePolicy, [{"item_type": item_type, "per_day": per_day, "cap": cap,
                                 "grace_days": grace_days, "replacement": replacement}],
                 [s.FinePolicy.item_type])


def set_discount(category: str, kind: str, percent: int) -> None:
    """Set a reader category's discount on a kind of charge ("*": any), in percent.

    It is a discount rule like those the console sets (no partner, no service,
    no dates), replacing such a rule for the same category and kind.
    """
    from cloud import service_actions
    from cloud.service_models import DiscountRule

    with feed.transaction():
        same = DiscountRule.get_or_none(
            (DiscountRule.category == category) & (DiscountRule.kind == kind)
            & (DiscountRule.partner == "*") & (DiscountRule.service == "*")
            & DiscountRule.valid_from.is_null() & DiscountRule.valid_to.is_null())
        service_actions.save_rule(category=category, kind=kind, percent=percent, by="cli",
                                  rule_id=same.id if same else None)


def set_collection(collection_id: str, floating: bool, name: str = "") -> None:
    """Create or change a collection's return policy (floating, or sent home)."""
    with s.db.atomic():
        s.upsert(s.Collection, [{"id": collection_id, "name": name, "floating": floating}],
                 [s.Collection.id])


def waive(card: str, amount: int, reason: str) -> None:
    """Forgive part of a reader's debt (tiyn); a block by threshold lifts if they drop below."""
    if amount <= 0:
        raise ActionError("a waiver is a positive amount in tiyn", "bad_amount")
    try:
        debts.waive(card, amount, reason)
    except ValueError as exc:
        raise ActionError(str(exc), "no_reader") from exc


def withdraw(barcode: str, reason: str) -> None:
    """Take a copy out of the fund (worn out, damaged); a hold on it moves to another copy."""
    now = s.utcnow()
    with feed.transaction():
        c = s.Copy.get_or_none(s.Copy.barcode == barcode)
        if c is None:
            raise ActionError(f"no copy {barcode}", "no_copy")
        if c.status == "on_loan":
            raise ActionError(f"copy {barcode} is on loan; withdraw it once it is back",
                              "on_loan")
        touched: set[str] = set()
        copies.apply_cloud_fact(barcode, "cloud.withdrawn", {"reason": reason}, now, touched)
        holds.settle_copy(barcode, now, touched)
