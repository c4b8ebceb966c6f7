"""Circulation rules as a table: every refusal reason and the due dates."""
from __future__ import annotations

from datetime import date

import pytest

from edge.circulation import CopyView, ReaderView, check_checkout, due_date

ADULT = ReaderView("R1", "adult")
CHILD = ReaderView("R2", "child")
BLOCKED = ReaderView("R3", "adult", "overdue books: 3")
BOOK = CopyView("C1", "book", on_loan=False, here=True)


@pytest.mark.parametrize("reader, copy, open_loans, code", [
    (ADULT, BOOK, 0, None),
    (None, BOOK, 0, "unknown_reader"),
    (BLOCKED, BOOK, 0, "blocked"),
    (ADULT, None, 0, "unknown_copy"),
    (ADULT, CopyView("C1", "book", on_loan=True, here=False), 0, "on_loan"),
    (ADULT, CopyView("C1", "book", on_loan=False, here=False), 0, "not_here"),
    (ADULT, BOOK, 9, None),
    (ADULT, BOOK, 10, "limit"),
    (CHILD, BOOK, 4, None),
    (CHILD, BOOK, 5, "limit"),
])
def test_checkout_rules(reader, copy, open_loans, code) -> None:
    refusal = check_checkout(reader, copy, open_loans)
    assert (refusal.code if refusal else None) == code
    if refusal:
        assert refusal.message  # a person must be told why


def test_blocked_reason_is_shown() -> None:
    refusal = check_checkout(BLOCKED, BOOK, 0)
    assert refusal is not None and "overdue books: 3" in refusal.message


@pytest.mark.parametrize("item_type, days", [("book", 21), ("children", 14), ("reference", 7),
                                             ("unknown", 21)])
def test_due_dates(item_type: str, days: int) -> None:
    assert (due_date(item_type, date(2026, 11, 22)) - date(2026, 11, 22)).days == days
