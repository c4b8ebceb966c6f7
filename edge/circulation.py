"""Circulation rules, pure: may this reader take this copy now, and until when?

No database and no clock of its own: the store reads what the rules need and
passes it in, so every rule is a table-driven unit test.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

# Loan days by item type. Reference works go out for a week: they are in demand.
LOAN_DAYS: dict[str, int] = {"book": 21, "children": 14, "reference": 7}
DEFAULT_LOAN_DAYS = 21
# The most copies one reader may hold at once; children have smaller limits.
MAX_LOANS: dict[str, int] = {"child": 5}
DEFAULT_MAX_LOANS = 10


@dataclass(frozen=True)
class ReaderView:
    """What the node knows of a reader."""

    card: str
    category: str
    blocked_reason: str | None = None


@dataclass(frozen=True)
class CopyView:
    """What the node knows of a copy."""

    barcode: str
    item_type: str
    on_loan: bool
    here: bool


@dataclass(frozen=True)
class Refusal:
    """Why a checkout is refused: a stable code for machines and a message for people."""

    code: str
    message: str


def check_checkout(
    reader: ReaderView | None, copy: CopyView | None, open_loans: int
) -> Refusal | None:
    """None if the checkout may go ahead, else the first reason it may not."""
    if reader is None:
        return Refusal("unknown_reader", "This card is not known here.")
    if reader.blocked_reason:
        return Refusal("blocked", f"The card is blocked: {reader.blocked_reason}")
    if copy is None:
        return Refusal("unknown_copy", "This copy is not known here.")
    if copy.on_loan:
        return Refusal("on_loan", "This copy is already on loan.")
    if not copy.here:
        return Refusal("not_here", "This copy is not at this location.")
    limit = MAX_LOANS.get(reader.category, DEFAULT_MAX_LOANS)
    if open_loans >= limit:
        return Refusal("limit", f"The reader already has {open_loans} of {limit} loans allowed.")
    return None


def due_date(item_type: str, today: date) -> date:
    """The due date of a loan of ``item_type`` made on ``today`` (local clock)."""
    return today + timedelta(days=LOAN_DAYS.get(item_type, DEFAULT_LOAN_DAYS))
