"""Circulation rules as tables: every refusal reason, policy lookup, renewals, due dates."""
from __future__ import annotations

from datetime import date

import pytest

from edge.circulation import (
    DEFAULT_POLICIES,
    CopyView,
    OfflineCap,
    Policy,
    ReaderView,
    check_checkout,
    check_renew,
    due_date,
    policy_for,
    renewed_due,
)

ADULT = ReaderView("R1", "adult")
CHILD = ReaderView("R2", "child")
BLOCKED = ReaderView("R3", "adult", "overdue books: 3")
BOOK = CopyView("C1", "book", on_loan=False, here=True)
STD = Policy(loan_days=21, max_items=10, renewals=2)


def loans(reader: ReaderView, n: int) -> ReaderView:
    return ReaderView(reader.card, reader.category, reader.blocked_reason, n)


@pytest.mark.parametrize("reader, copy, policy, code", [
    (ADULT, BOOK, STD, None),
    (None, BOOK, STD, "unknown_reader"),
    (BLOCKED, BOOK, STD, "blocked"),
    (ADULT, None, STD, "unknown_copy"),
    (ADULT, CopyView("C1", "book", on_loan=True, here=False), STD, "on_loan"),
    (ADULT, CopyView("C1", "book", on_loan=False, here=False), STD, "not_here"),
    (ADULT, CopyView("C1", "book", False, True, held_for="R9"), STD, "held_for_other"),
    (ADULT, CopyView("C1", "book", False, True, held_for="R1"), STD, None),
    (loans(ADULT, 9), BOOK, STD, None),
    (loans(ADULT, 10), BOOK, STD, "limit"),
    (loans(CHILD, 4), BOOK, Policy(14, 5, 2), None),
    (loans(CHILD, 5), BOOK, Policy(14, 5, 2), "limit"),
    # a blocked reader is told about the block first, not about the copy
    (BLOCKED, None, STD, "blocked"),
])
def test_checkout_rules(reader, copy, policy, code) -> None:
    refusal = check_checkout(reader, copy, policy)
    assert (refusal.code if refusal else None) == code
    if refusal:
        assert refusal.message  # a person must be told why


@pytest.mark.parametrize("hours, taken, code", [
    (0.0, 5, None),            # online: no cap
    (23.9, 5, None),           # offline, but not for long
    (24.0, 1, None),           # long offline, under the cap
    (24.0, 2, "offline_cap"),  # long offline, at the cap
    (72.0, 9, "offline_cap"),
])
def test_offline_cap(hours: float, taken: int, code: str | None) -> None:
    refusal = check_checkout(ADULT, BOOK, STD, offline_hours=hours, loans_while_offline=taken,
                             cap=OfflineCap(after_hours=24, max_loans=2))
    assert (refusal.code if refusal else None) == code


def test_blocked_reason_is_shown() -> None:
    refusal = check_checkout(BLOCKED, BOOK, STD)
    assert refusal is not None and "overdue books: 3" in refusal.message


@pytest.mark.parametrize("item_type, category, expected", [
    ("book", "adult", DEFAULT_POLICIES[("*", "*")]),
    ("children", "adult", DEFAULT_POLICIES[("children", "*")]),
    ("book", "child", DEFAULT_POLICIES[("*", "child")]),
    ("children", "child", DEFAULT_POLICIES[("children", "child")]),
    ("reference", "pensioner", DEFAULT_POLICIES[("reference", "*")]),
])
def test_policy_lookup_most_specific_first(item_type, category, expected) -> None:
    assert policy_for(DEFAULT_POLICIES, item_type, category) == expected


def test_policy_from_the_cloud_overrides_a_default() -> None:
    table = {**DEFAULT_POLICIES, ("book", "student"): Policy(30, 15, 3)}
    assert policy_for(table, "book", "student") == Policy(30, 15, 3)
    assert policy_for(table, "book", "adult") == DEFAULT_POLICIES[("*", "*")]
    assert policy_for({}, "x", "y").loan_days == 21   # an empty table still answers


@pytest.mark.parametrize("reader, used, waiting, code", [
    (ADULT, 0, 0, None),
    (ADULT, 1, 0, None),
    (ADULT, 2, 0, "no_renewals_left"),
    (ADULT, 0, 1, "reserved"),
    (BLOCKED, 0, 0, "blocked"),
    (None, 0, 0, None),        # a loan of a reader this node never heard of may be renewed
])
def test_renewal_rules(reader, used, waiting, code) -> None:
    refusal = check_renew(reader, STD, used, waiting)
    assert (refusal.code if refusal else None) == code


def test_due_dates() -> None:
    today = date(2026, 11, 22)
    assert due_date(Policy(14, 5, 2), today) == date(2026, 12, 6)
    # a renewal runs from today and never shortens a loan
    assert renewed_due(STD, today, date(2026, 11, 30)) == date(2026, 12, 13)
    assert renewed_due(STD, today, date(2027, 1, 31)) == date(2027, 1, 31)
