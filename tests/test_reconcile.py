"""Reconciliation: physical facts win, and every repair is explained."""
from __future__ import annotations

from datetime import UTC, date, datetime

from cloud.reconcile import CopyState, checkin, checkout

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
DUE = date(2026, 12, 13)


def lend(copy: CopyState, node: str = "m-a", loan: str = "L2"):
    return checkout(copy, node=node, loan_id=loan, reader="R1", at=AT, due=DUE)


def test_plain_checkout_puts_the_copy_on_loan() -> None:
    out = lend(CopyState("C1", True, "in_slot", "m-a", 4))
    assert (out.copy.status, out.copy.location_node, out.copy.slot) == ("on_loan", None, None)
    assert out.copy.loan_id == "L2" and out.opens[0].reader == "R1"
    assert not out.repairs and not out.closes


def test_checkout_of_a_copy_on_loan_closes_the_old_loan_unseen() -> None:
    out = lend(CopyState("C1", True, "on_loan", None, None, "L1"))
    assert [(c.loan_id, c.reason) for c in out.closes] == [("L1", "returned_unseen")]
    assert [r.kind for r in out.repairs] == ["checkout_of_copy_on_loan"]
    assert out.copy.loan_id == "L2"


def test_checkout_of_an_unknown_copy_is_accepted_and_flagged() -> None:
    out = lend(CopyState("C9", False))
    assert out.copy.status == "on_loan" and out.copy.known
    assert [r.kind for r in out.repairs] == ["unknown_copy"]


def test_checkout_of_a_copy_believed_elsewhere_is_accepted_and_flagged() -> None:
    out = lend(CopyState("C1", True, "on_shelf", "b-central"))
    assert out.copy.status == "on_loan"
    assert [r.kind for r in out.repairs] == ["copy_was_elsewhere"]


def test_return_at_a_machine_goes_to_its_bin_and_closes_the_loan() -> None:
    out = checkin(CopyState("C1", True, "on_loan", None, None, "L1"), node="m-b",
                  node_kind="machine", at=AT)
    assert (out.copy.status, out.copy.location_node) == ("in_bin", "m-b")
    assert [(c.loan_id, c.reason, c.node) for c in out.closes] == [("L1", "returned", "m-b")]
    assert not out.repairs


def test_return_of_a_copy_not_on_loan_is_accepted_and_flagged() -> None:
    out = checkin(CopyState("C1", True, "on_shelf", "b-a"), node="b-b", node_kind="branch",
                  at=AT)
    assert (out.copy.status, out.copy.location_node) == ("on_shelf", "b-b")
    assert [r.kind for r in out.repairs] == ["return_of_copy_not_on_loan"]
    assert not out.closes
