"""Fines, discounts and blocks as pure rules: amounts in tiyn, days in the library's calendar.

The ledger (cloud/debts.py) asks these rules what a loan should have cost a
reader so far, and posts the difference: the rules can be changed, a late
return can move a loan's end, and the ledger still converges to what the
rules say.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from edge import pricing


@dataclass(frozen=True)
class FineRule:
    """What an overdue loan of one item type costs."""

    per_day: int = 0          # tiyn per day overdue
    cap: int | None = None    # the most one loan's fine can reach; None: no cap
    grace_days: int = 0       # days overdue that cost nothing
    replacement: int = 0      # charged when the copy is declared lost


# The library charges nothing unless a fine policy says so.
NO_FINES = FineRule()

# Discounts by reader category and kind of charge, in percent: the network's
# default rules (edge/pricing.py, where every price and discount is decided),
# as a (category, kind) table. Rows of the Discount table override these (a row
# at 0 switches one off).
DEFAULT_DISCOUNTS: dict[tuple[str, str], int] = {
    (r.category, r.kind): r.percent for r in pricing.DEFAULT_RULES}


def rule_for(rules: Mapping[str, FineRule], item_type: str) -> FineRule:
    """The item type's rule, else the rule for any type ("*"), else no fines."""
    return rules.get(item_type) or rules.get("*") or NO_FINES


def days_overdue(due: date, until: date) -> int:
    """Whole days after the due date, up to ``until`` (0 when not overdue)."""
    return max(0, (until - due).days)


def fine(rule: FineRule, due: date, until: date) -> int:
    """The fine of a loan due on ``due`` that ran (or runs) until ``until``."""
    days = days_overdue(due, until)
    if days <= rule.grace_days or rule.per_day <= 0:
        return 0
    amount = days * rule.per_day
    return min(amount, rule.cap) if rule.cap is not None else amount


def discount_percent(table: Mapping[tuple[str, str], int], category: str, kind: str) -> int:
    """The discount the pricing rules give: the most specific, the best for the reader."""
    return pricing.percent_for(pricing.rules_from_table(table), category, kind)


def discounted(amount: int, category: str, kind: str,
               table: Mapping[tuple[str, str], int] = DEFAULT_DISCOUNTS) -> int:
    """``amount`` after the reader category's discount on ``kind`` (rounded half up)."""
    return pricing.apply_percent(amount, discount_percent(table, category, kind))


@dataclass(frozen=True)
class LoanCharges:
    """What one loan should have cost so far, after discounts."""

    fine: int
    replacement: int


def loan_charges(rule: FineRule, *, due: date, today: date, closed_on: date | None,
                 lost: bool, category: str,
                 discounts: Mapping[tuple[str, str], int] = DEFAULT_DISCOUNTS) -> LoanCharges:
    """A loan's fine runs until it was closed (returned or declared lost) or today.

    ``lost``: the loan was closed as lost and its copy has not come back; then
    the replacement fee is owed too.
    """
    until = min(today, closed_on) if closed_on else today
    return LoanCharges(
        fine=discounted(fine(rule, due, until), category, "fine", discounts),
        replacement=discounted(rule.replacement, category, "replacement", discounts)
        if lost else 0)


def tenge(tiyn: int) -> str:
    """An amount as a reader reads it: 1 500 ₸ (whole tenge), 12,50 ₸ otherwise."""
    whole, part = divmod(abs(tiyn), 100)
    sign = "-" if tiyn < 0 else ""
    text = f"{whole:,}".replace(",", "\u00a0")
    return f"{sign}{text}{f',{part:02d}' if part else ''}\u00a0₸"


def block_decision(*, reason: str | None, blocked_by: str | None, overdue_items: int,
                   owed: int, items_at: int, fees_at: int) -> tuple[str, str | None] | None:
    """("block", why) or ("unblock", None) or None; a block staff decided is theirs to lift.

    ``items_at`` and ``fees_at`` are the thresholds (0 switches one off).
    """
    if reason and blocked_by != "auto":
        return None
    why: list[str] = []
    if items_at and overdue_items >= items_at:
        why.append(f"{overdue_items} books overdue")
    if fees_at and owed >= fees_at:
        why.append(f"owes {tenge(fees_at)} or more")
    want = "; ".join(why) or None
    if want and want != reason:
        return ("block", want)
    if want is None and reason:
        return ("unblock", None)
    return None
