"""Reconciliation, pure: an event and the cloud's belief in, the new belief and repairs out.

Physical truth wins (invariant 4): a node that says a copy left with a reader
is right, whatever the cloud believed. The cloud accepts the fact, repairs its
own state and records why, for staff.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class CopyState:
    """What the cloud believes of one copy."""

    barcode: str
    known: bool
    status: str | None = None  # in_slot | on_shelf | in_bin | on_loan
    location_node: str | None = None
    slot: int | None = None
    loan_id: str | None = None


@dataclass(frozen=True)
class OpenLoan:
    """A loan to create."""

    loan_id: str
    copy: str
    reader: str
    node: str
    at: datetime
    due: date


@dataclass(frozen=True)
class CloseLoan:
    """A loan to close."""

    loan_id: str
    node: str
    at: datetime
    reason: str  # returned | returned_unseen


@dataclass(frozen=True)
class Repair:
    """A contradiction the cloud resolved, with its cause for staff."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Outcome:
    """The changes one event makes."""

    copy: CopyState
    opens: tuple[OpenLoan, ...] = ()
    closes: tuple[CloseLoan, ...] = ()
    repairs: tuple[Repair, ...] = field(default_factory=tuple)


def checkout(copy: CopyState, *, node: str, loan_id: str, reader: str, at: datetime,
             due: date) -> Outcome:
    """A copy left ``node`` with ``reader``: it is on loan, whatever the cloud thought."""
    closes: list[CloseLoan] = []
    repairs: list[Repair] = []
    if not copy.known:
        repairs.append(Repair("unknown_copy", f"{node} lent copy {copy.barcode}, "
                                              "which the cloud had no record of"))
    elif copy.status == "on_loan" and copy.loan_id and copy.loan_id != loan_id:
        closes.append(CloseLoan(copy.loan_id, node, at, "returned_unseen"))
        repairs.append(Repair("checkout_of_copy_on_loan",
                              f"{node} lent copy {copy.barcode} while loan {copy.loan_id} was "
                              "open; that loan was closed as returned unseen"))
    elif copy.location_node and copy.location_node != node:
        repairs.append(Repair("copy_was_elsewhere",
                              f"{node} lent copy {copy.barcode}, which the cloud placed at "
                              f"{copy.location_node}"))
    new = replace(copy, known=True, status="on_loan", location_node=None, slot=None,
                  loan_id=loan_id)
    opened = OpenLoan(loan_id, copy.barcode, reader, node, at, due)
    return Outcome(new, (opened,), tuple(closes), tuple(repairs))


def checkin(copy: CopyState, *, node: str, node_kind: str, at: datetime) -> Outcome:
    """A copy came back at ``node``: any copy, anywhere, is accepted."""
    closes: list[CloseLoan] = []
    repairs: list[Repair] = []
    if copy.status == "on_loan" and copy.loan_id:
        closes.append(CloseLoan(copy.loan_id, node, at, "returned"))
    else:
        where = copy.location_node or "nowhere known"
        repairs.append(Repair("return_of_copy_not_on_loan",
                              f"{node} took back copy {copy.barcode}, which the cloud did not "
                              f"have on loan ({copy.status or 'unknown'} at {where})"))
    # A machine's returns drop into its bin until a technician reshelves them.
    status = "in_bin" if node_kind == "machine" else "on_shelf"
    new = replace(copy, known=True, status=status, location_node=node, slot=None, loan_id=None)
    return Outcome(new, (), tuple(closes), tuple(repairs))


@dataclass(frozen=True)
class Fact:
    """One physical fact about a copy, as a node reported it.

    ``key`` orders facts of all nodes: hybrid clock first, then node and seq, so
    every cloud process sorts the same facts the same way.
    """

    key: str
    node: str
    node_kind: str
    seq: int
    type: str
    at: datetime
    body: dict[str, Any]


def fact_key(hlc: str, node: str, seq: int) -> str:
    """The total order of facts: HLC, then node, then seq (fixed width)."""
    return f"{hlc}|{node}|{seq:012d}"


# Event types that are facts about where copies are, and how each names its
# copies: one event may speak of several copies (a slot audit), each becoming a
# fact of its own with the body that step() needs.
def _one_copy(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(body["copy"]), body)]


COPY_FACTS: dict[str, Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]] = {
    "loan.checkout": _one_copy,
    "loan.return": _one_copy,
}


def copy_facts(type_: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(copy, fact body)`` for each copy an event speaks of; [] if it is no copy fact."""
    split = COPY_FACTS.get(type_)
    return split(body) if split else []


def step(copy: CopyState, fact: Fact) -> Outcome:
    """Apply one fact to a copy."""
    if fact.type == "loan.checkout":
        b = fact.body
        return checkout(copy, node=fact.node, loan_id=b["loan_id"], reader=b["reader"],
                        at=fact.at, due=b["due"])
    if fact.type == "loan.return":
        return checkin(copy, node=fact.node, node_kind=fact.node_kind, at=fact.at)
    raise ValueError(f"not a copy fact: {fact.type}")


@dataclass(frozen=True)
class LoanView:
    """A loan as a replay of the copy's facts derives it."""

    loan_id: str
    copy: str
    reader: str
    node: str
    at: datetime
    due: date
    returned_at: datetime | None = None
    returned_node: str | None = None
    close_reason: str | None = None


@dataclass(frozen=True)
class Replay:
    """A copy's state, loans and repairs, from its facts in order."""

    copy: CopyState
    loans: dict[str, LoanView]
    other_closes: tuple[CloseLoan, ...]  # loans that predate every fact
    repairs: tuple[tuple[Fact, Repair], ...]


def replay(origin: CopyState, facts: Sequence[Fact]) -> Replay:
    """Fold ``facts`` (sorted by key) over the copy's state before the first of them.

    Used when a fact arrives later than one that happened after it (two nodes
    that were offline come back in the "wrong" order): the result is the same
    as if every fact had arrived in hybrid-clock order.
    """
    state = origin
    loans: dict[str, LoanView] = {}
    other: list[CloseLoan] = []
    repairs: list[tuple[Fact, Repair]] = []
    for f in facts:
        out = step(state, f)
        for o in out.opens:
            loans[o.loan_id] = LoanView(o.loan_id, o.copy, o.reader, o.node, o.at, o.due)
        for c in out.closes:
            if c.loan_id in loans:
                loans[c.loan_id] = replace(loans[c.loan_id], returned_at=c.at,
                                           returned_node=c.node, close_reason=c.reason)
            else:
                other.append(c)
        repairs.extend((f, r) for r in out.repairs)
        state = out.copy
    return Replay(state, loans, tuple(other), tuple(repairs))
