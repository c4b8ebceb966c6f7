"""Circulation rules, pure: may this reader take this copy now, renew it, and until when?

No database and no clock of its own: the store reads what the rules need and
passes it in, so every rule is a table-driven unit test. The same rules run at
a machine's kiosk, a branch desk and a SIP2 self-check: one place decides.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Policy:
    """What one kind of reader may do with one kind of item."""

    loan_days: int
    max_items: int
    renewals: int


# The library's defaults until the cloud sends its own table (feed "policy").
# Keys are (item_type, reader category); "*" matches any. Reference works go
# out for a week: they are in demand. Children may hold fewer books at once.
DEFAULT_POLICIES: dict[tuple[str, str], Policy] = {
    ("*", "*"): Policy(loan_days=21, max_items=10, renewals=2),
    ("children", "*"): Policy(loan_days=14, max_items=10, renewals=2),
    ("reference", "*"): Policy(loan_days=7, max_items=10, renewals=0),
    ("*", "child"): Policy(loan_days=21, max_items=5, renewals=2),
    ("children", "child"): Policy(loan_days=14, max_items=5, renewals=2),
}


@dataclass(frozen=True)
class OfflineCap:
    """While a node has been offline longer than ``after_hours``, a reader may take
    at most ``max_loans`` there: the node cannot know what happened elsewhere."""

    after_hours: float = 24.0
    max_loans: int = 2


@dataclass(frozen=True)
class ReaderView:
    """What the node knows of a reader."""

    card: str
    category: str
    blocked_reason: str | None = None
    open_loans: int = 0  # across the network, as far as this node knows
    member: bool = False  # holds an active library membership today (edge/services.py)


@dataclass(frozen=True)
class CopyView:
    """What the node knows of a copy."""

    barcode: str
    item_type: str
    on_loan: bool
    here: bool
    held_for: str | None = None  # a reader's card when a hold at this node names this copy


@dataclass(frozen=True)
class Refusal:
    """Why something is refused: a stable code for machines and a message for people."""

    code: str
    message: str


def policy_for(policies: Mapping[tuple[str, str], Policy], item_type: str,
               category: str) -> Policy:
    """The most specific policy: exact, then any category, then any item type, then default."""
    for key in ((item_type, category), (item_type, "*"), ("*", category), ("*", "*")):
        if key in policies:
            return policies[key]
    return DEFAULT_POLICIES[("*", "*")]


def check_checkout(reader: ReaderView | None, copy: CopyView | None, policy: Policy, *,
                   offline_hours: float = 0.0, loans_while_offline: int = 0,
                   cap: OfflineCap | None = None,
                   membership_required: bool = False) -> Refusal | None:
    """None if the checkout may go ahead, else the first reason it may not.

    ``membership_required``: the library lends only to holders of an active
    membership (the setting ``services.borrow_requires_membership``).
    """
    if reader is None:
        return Refusal("unknown_reader", "This card is not known here.")
    if reader.blocked_reason:
        return Refusal("blocked", f"The card is blocked: {reader.blocked_reason}")
    if membership_required and not reader.member:
        return Refusal("no_membership", "Borrowing needs an active library membership: this "
                                        "reader's has lapsed or was never taken.")
    if copy is None:
        return Refusal("unknown_copy", "This copy is not known here.")
    if copy.on_loan:
        return Refusal("on_loan", "This copy is already on loan.")
    if not copy.here:
        return Refusal("not_here", "This copy is not at this location.")
    if copy.held_for and copy.held_for != reader.card:
        return Refusal("held_for_other", "This copy is reserved for another reader.")
    if reader.open_loans >= policy.max_items:
        return Refusal("limit", f"The reader already has {reader.open_loans} of "
                                f"{policy.max_items} loans allowed.")
    cap = cap or OfflineCap()
    if offline_hours >= cap.after_hours and loans_while_offline >= cap.max_loans:
        return Refusal("offline_cap", f"This location has been offline for "
                                      f"{offline_hours:.0f} hours: at most {cap.max_loans} "
                                      "loans per reader until it reconnects.")
    return None


def check_renew(reader: ReaderView | None, policy: Policy, renewals_used: int,
                others_waiting: int) -> Refusal | None:
    """None if the loan may be renewed: not blocked, renewals left, nobody waiting."""
    if reader is not None and reader.blocked_reason:
        return Refusal("blocked", f"The card is blocked: {reader.blocked_reason}")
    if renewals_used >= policy.renewals:
        return Refusal("no_renewals_left", f"This loan has been renewed {renewals_used} "
                                           f"times, the most allowed.")
    if others_waiting > 0:
        return Refusal("reserved", "Another reader is waiting for this title.")
    return None


def due_date(policy: Policy, today: date) -> date:
    """The due date of a loan made on ``today`` (the node's local clock)."""
    return today + timedelta(days=policy.loan_days)


def renewed_due(policy: Policy, today: date, current_due: date) -> date:
    """A renewal runs a full loan period from today, never shortening the loan."""
    return max(current_due, today + timedelta(days=policy.loan_days))
