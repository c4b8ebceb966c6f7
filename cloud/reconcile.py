"""Reconciliation, pure: an event and the cloud's belief in, the new belief and repairs out.

Physical truth wins (invariant 4): a node that says a copy left with a reader
is right, whatever the cloud believed. The cloud accepts the fact, repairs its
own state and records why, for staff.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

# Every place a copy can be; a copy is in exactly one (invariant 5).
PLACES = ("in_slot", "on_shelf", "in_bin", "on_loan", "in_transit", "missing", "lost",
          "withdrawn")
# Places where a copy sits at a node, ready for a reader or a technician.
AT_REST = ("in_slot", "on_shelf", "in_bin")


@dataclass(frozen=True)
class CopyState:
    """What the cloud believes of one copy."""

    barcode: str
    known: bool
    # in_slot | on_shelf | in_bin | on_loan | in_transit (between nodes: waiting at
    # location_node to be sent, or carried when location_node is None) | missing (a
    # slot scan did not find it where it should be) | lost | withdrawn
    status: str | None = None
    location_node: str | None = None
    slot: int | None = None
    loan_id: str | None = None
    transit_to: str | None = None  # where a copy in transit is going
    # The return policy: a floating copy stays where it is returned; a fixed one
    # goes back to ``home_node``.
    home_node: str | None = None
    floating: bool = True


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
    """A copy came back at ``node``: any copy, anywhere, is accepted.

    It rests there if it floats or is home; a fixed copy away from home, or one
    on its way to a hold's pickup node, stays in transit towards that node.
    """
    closes: list[CloseLoan] = []
    repairs: list[Repair] = []
    if copy.status == "on_loan" and copy.loan_id:
        closes.append(CloseLoan(copy.loan_id, node, at, "returned"))
    elif copy.status == "in_transit":
        pass  # a technician brought it from a machine, or a transfer arrived: expected
    elif copy.status in ("lost", "withdrawn"):
        repairs.append(Repair(f"{copy.status}_copy_returned",
                              f"{node} took back copy {copy.barcode}, which the cloud had as "
                              f"{copy.status}; it is back in the fund"))
    else:
        where = copy.location_node or "nowhere known"
        repairs.append(Repair("return_of_copy_not_on_loan",
                              f"{node} took back copy {copy.barcode}, which the cloud did not "
                              f"have on loan ({copy.status or 'unknown'} at {where})"))
    dest = copy.transit_to if copy.status == "in_transit" else None
    if dest is None and not copy.floating and copy.home_node:
        dest = copy.home_node
    if dest and dest != node:
        new = replace(copy, known=True, status="in_transit", location_node=node, slot=None,
                      loan_id=None, transit_to=dest)
    else:
        # A machine's returns drop into its bin until a technician reshelves them.
        status = "in_bin" if node_kind == "machine" else "on_shelf"
        new = replace(copy, known=True, status=status, location_node=node, slot=None,
                      loan_id=None, transit_to=None)
    return Outcome(new, (), tuple(closes), tuple(repairs))


def _place(copy: CopyState) -> str:
    """Where the cloud had a copy, as staff read it."""
    if not copy.known:
        return "no record of it"
    if copy.status == "on_loan":
        return f"on loan ({copy.loan_id})"
    if copy.status == "in_slot":
        return f"in slot {copy.slot} of {copy.location_node}"
    status = (copy.status or "unknown").replace("_", " ")
    return f"{status} at {copy.location_node}" if copy.location_node else status


def _close_if_lent(copy: CopyState, node: str, at: datetime) -> tuple[CloseLoan, ...]:
    if copy.status == "on_loan" and copy.loan_id:
        return (CloseLoan(copy.loan_id, node, at, "returned_unseen"),)
    return ()


def _closed_note(closes: tuple[CloseLoan, ...]) -> str:
    return f"; loan {closes[0].loan_id} was closed as returned unseen" if closes else ""


def loaded(copy: CopyState, *, node: str, slot: int, at: datetime) -> Outcome:
    """A technician put a copy into a slot of ``node``: it is there, whatever the cloud thought."""
    closes = _close_if_lent(copy, node, at)
    repairs: list[Repair] = []
    if not copy.known:
        repairs.append(Repair("unknown_copy", f"{node}: copy {copy.barcode} was loaded into "
                                              f"slot {slot}; the cloud had no record of it"))
    elif closes:
        repairs.append(Repair("loaded_while_on_loan", f"{node}: copy {copy.barcode} was loaded "
                              f"into slot {slot} while on loan{_closed_note(closes)}"))
    elif copy.status not in ("in_transit", "missing") and copy.location_node != node:
        repairs.append(Repair("copy_was_elsewhere", f"{node}: copy {copy.barcode} was loaded "
                              f"into slot {slot}; the cloud had it {_place(copy)}"))
    new = replace(copy, known=True, status="in_slot", location_node=node, slot=slot,
                  loan_id=None)
    return Outcome(new, (), closes, tuple(repairs))


def removed(copy: CopyState, *, node: str, slot: int | None, at: datetime) -> Outcome:
    """A technician took a copy out of ``node`` (a slot, or the bin if ``slot`` is None)."""
    closes = _close_if_lent(copy, node, at)
    repairs: list[Repair] = []
    # in_transit here: the cloud asked this node to send the copy away (a transfer).
    if copy.location_node != node or copy.status not in ("in_slot", "in_bin", "in_transit"):
        where = f"slot {slot}" if slot is not None else "the return bin"
        repairs.append(Repair("removed_unexpected", f"{node}: copy {copy.barcode} was taken out "
                              f"of {where}; the cloud had it {_place(copy)}{_closed_note(closes)}"))
    new = replace(copy, known=True, status="in_transit", location_node=None, slot=None,
                  loan_id=None)
    return Outcome(new, (), closes, tuple(repairs))


def audited(copy: CopyState, *, node: str, slot: int, present: bool, at: datetime) -> Outcome:
    """A slot scan at ``node`` found the copy in ``slot`` (present) or not where expected."""
    if present:
        if copy.status == "in_slot" and copy.location_node == node and copy.slot == slot:
            return Outcome(copy)
        closes = _close_if_lent(copy, node, at)
        new = replace(copy, known=True, status="in_slot", location_node=node, slot=slot,
                      loan_id=None)
        return Outcome(new, (), closes, (Repair(
            "audit_unexpected_copy", f"slot scan at {node} found copy {copy.barcode} in slot "
            f"{slot}; the cloud had it {_place(copy)}{_closed_note(closes)}"),))
    if copy.known and not (copy.location_node == node and copy.status == "in_slot"):
        return Outcome(copy)  # the node's record was older than the cloud's: nothing is lost
    new = replace(copy, known=True, status="missing", location_node=None, slot=None,
                  loan_id=None)
    return Outcome(new, (), (), (Repair(
        "audit_missing", f"slot scan at {node}: copy {copy.barcode} is not in slot {slot}, "
        f"where it should be (the cloud had it {_place(copy)}); marked missing"),))


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


def _audit(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    present = [(str(tag), {"copy": tag, "slot": int(slot), "present": True})
               for slot, tag in sorted(body["slots"].items(), key=lambda kv: int(kv[0])) if tag]
    missing = [(str(m["copy"]), {"copy": m["copy"], "slot": m["slot"], "present": False})
               for m in body.get("missing", [])]
    return present + missing


COPY_FACTS: dict[str, Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]]] = {
    "loan.checkout": _one_copy,
    "loan.return": _one_copy,
    "stock.loaded": _one_copy,
    "stock.removed": _one_copy,
    "stock.audit": _audit,
}


def copy_facts(type_: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(copy, fact body)`` for each copy an event speaks of; [] if it is no copy fact."""
    split = COPY_FACTS.get(type_)
    return split(body) if split else []


def step(copy: CopyState, fact: Fact) -> Outcome:
    """Apply one fact to a copy; a copy no longer in transit has no destination."""
    out = _step(copy, fact)
    if out.copy.status != "in_transit" and out.copy.transit_to is not None:
        out = replace(out, copy=replace(out.copy, transit_to=None))
    return out


def _step(copy: CopyState, fact: Fact) -> Outcome:
    if fact.type in CLOUD_FACTS:
        return CLOUD_FACTS[fact.type](copy, fact)
    if fact.type == "loan.checkout":
        b = fact.body
        return checkout(copy, node=fact.node, loan_id=b["loan_id"], reader=b["reader"],
                        at=fact.at, due=b["due"])
    if fact.type == "loan.return":
        return checkin(copy, node=fact.node, node_kind=fact.node_kind, at=fact.at)
    b = fact.body
    if fact.type == "stock.loaded":
        return loaded(copy, node=fact.node, slot=b["slot"], at=fact.at)
    if fact.type == "stock.removed":
        return removed(copy, node=fact.node, slot=b.get("slot"), at=fact.at)
    if fact.type == "stock.audit":
        return audited(copy, node=fact.node, slot=b["slot"], present=b["present"], at=fact.at)
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


# -- facts the cloud itself decides -------------------------------------------------
#
# A hold's copy sent to its pickup node, a loan declared lost, a copy withdrawn:
# the cloud's own decisions about where a copy is are facts too, keyed after
# every fact the copy had when the cloud decided, so a replay puts them in
# their place like any node's fact. Each does nothing if the copy is no longer
# where the decision assumed (a late return beats a "lost" declared after it).

CLOUD_NODE = "cloud"
_MAX_COUNTER = 99_999  # an HLC counter has five digits


def cloud_fact_key(last_key: str | None, now_ms: int) -> str:
    """The order key of a fact the cloud decides now: after every fact the copy has."""
    wall, counter = now_ms, 0
    if last_key:
        lw, _, lc = last_key.split("|", 1)[0].partition("-")
        if (wall, counter) <= (int(lw), int(lc)):
            wall, counter = int(lw), int(lc) + 1
            if counter > _MAX_COUNTER:
                wall, counter = wall + 1, 0
    return fact_key(f"{wall:013d}-{counter:05d}", CLOUD_NODE, 0)


def transfer(copy: CopyState, *, to: str, to_kind: str) -> Outcome:
    """The cloud wants the copy at ``to`` (a hold's pickup node, or home)."""
    if copy.status not in (*AT_REST, "in_transit"):
        return Outcome(copy)  # lent, lost, missing: nothing to send
    if copy.location_node == to:
        if copy.status == "in_transit":  # it was waiting here to leave: it stays
            return Outcome(replace(copy, status="on_shelf" if to_kind == "branch" else "in_bin",
                                   transit_to=None))
        return Outcome(copy)
    return Outcome(replace(copy, status="in_transit", transit_to=to))


def declared_lost(copy: CopyState, *, loan_id: str, at: datetime) -> Outcome:
    """The loan ran too long overdue: the copy is lost and the loan closed as such."""
    if copy.status != "on_loan" or copy.loan_id != loan_id:
        return Outcome(copy)  # it came back (or left again) before the decision
    new = replace(copy, status="lost", location_node=None, slot=None, loan_id=None)
    return Outcome(new, (), (CloseLoan(loan_id, CLOUD_NODE, at, "lost"),))


def withdrawn(copy: CopyState, *, at: datetime) -> Outcome:
    """Staff took the copy out of the fund (worn out, damaged)."""
    closes = _close_if_lent(copy, CLOUD_NODE, at)
    return Outcome(replace(copy, known=True, status="withdrawn", location_node=None, slot=None,
                           loan_id=None), (), closes)


CLOUD_FACTS: dict[str, Callable[[CopyState, Fact], Outcome]] = {
    "cloud.transfer": lambda c, f: transfer(c, to=f.body["to"], to_kind=f.body["to_kind"]),
    "cloud.lost": lambda c, f: declared_lost(c, loan_id=f.body["loan_id"], at=f.at),
    "cloud.withdrawn": lambda c, f: withdrawn(c, at=f.at),
}


# -- checkouts a node allowed offline that the cloud would not have -----------------

@dataclass(frozen=True)
class Borrower:
    """What the cloud knows of a reader when a node's checkout reaches it."""

    known: bool
    blocked_reason: str | None = None
    blocked_at: datetime | None = None
    open_loans: int = 0  # network-wide, this loan included
    max_items: int = 0   # by the loan policy; 0: no limit known


def checkout_flags(b: Borrower, *, node: str, copy: str, reader: str,
                   at: datetime) -> tuple[Repair, ...]:
    """Why staff should look at a checkout that was accepted (physical truth wins)."""
    if not b.known:
        return (Repair("checkout_by_unknown_reader",
                       f"{node} lent copy {copy} to card {reader}, which the cloud has no "
                       "record of"),)
    out: list[Repair] = []
    if b.blocked_reason and (b.blocked_at is None or b.blocked_at <= at):
        since = f" since {b.blocked_at:%Y-%m-%d %H:%M}" if b.blocked_at else ""
        out.append(Repair("checkout_while_blocked",
                          f"{node} lent copy {copy} to {reader}, blocked{since} "
                          f"({b.blocked_reason}); the node had not heard of the block"))
    if b.max_items and b.open_loans > b.max_items:
        out.append(Repair("checkout_over_limit",
                          f"{node} lent copy {copy} to {reader}, who now has {b.open_loans} "
                          f"loans open across the network ({b.max_items} allowed)"))
    return tuple(out)


def open_at(spans: Sequence[tuple[datetime, datetime | None]], at: datetime) -> int:
    """How many loans (checked out, returned or None) were open at ``at``: out by then, not back."""
    return sum(1 for out, back in spans if out <= at and (back is None or back > at))


# -- wrong clocks ------------------------------------------------------------------

@dataclass(frozen=True)
class ClockReading:
    """When an event most likely happened, judged from the node's clocks and the cloud's."""

    at: datetime            # the corrected time (the node's ts when nothing is wrong)
    skew_s: float           # the node's wall clock minus ``at``, in seconds
    cause: str | None       # why it was corrected; None when the clock looks right
    live: bool              # the event is fresh and its clock agrees: a good reading


def read_clock(ts: datetime, hlc_wall_ms: int, received: datetime,
               node_offset_s: float | None, threshold_s: float) -> ClockReading:
    """Judge a node's wall clock (``ts``) against its HLC and the cloud's receive time.

    ``ts`` is always the node's own clock when it wrote the event (a time it was
    told, as a kiosk's no-block checkout, travels as the body's ``at``). A wall
    clock behind the node's own HLC went back (a dead RTC, a bad NTP step): the
    HLC is the better lower bound. A ts later than the cloud received the event
    is in the future: the receive time bounds it. A node measured behind (its
    live status) is corrected by that offset. An event merely old is no
    evidence: it may have waited in an offline outbox.
    """
    hlc_at = datetime.fromtimestamp(hlc_wall_ms / 1000, tz=ts.tzinfo)
    behind_hlc = (hlc_at - ts).total_seconds()
    ahead = (ts - received).total_seconds()
    if behind_hlc > threshold_s:
        at = min(hlc_at, received)
        cause = f"its wall clock is {behind_hlc:.0f} s behind its hybrid clock"
    elif ahead > threshold_s:
        at = received
        if node_offset_s is not None and node_offset_s > threshold_s:
            at = min(received, ts - timedelta(seconds=node_offset_s))
        cause = f"its wall clock is {ahead:.0f} s ahead of the cloud's"
    elif node_offset_s is not None and node_offset_s < -threshold_s:
        at = min(received, ts - timedelta(seconds=node_offset_s))
        cause = f"its wall clock was measured {-node_offset_s:.0f} s behind the cloud's"
    else:
        return ClockReading(ts, 0.0, None, live=abs(ahead) <= threshold_s)
    return ClockReading(at, (ts - at).total_seconds(), cause, live=False)


def corrected_due(due: date, ts: datetime, at: datetime) -> date:
    """The due date a right clock would have given: the same loan period from the right day."""
    return due + (at.astimezone(ts.tzinfo).date() - ts.date())


def bound_reported(at: datetime, ts: datetime, max_delay: timedelta) -> datetime:
    """When a transaction reported as done earlier (``at``) is believed to have happened.

    Not after the node recorded it (``ts``, corrected), and not more than
    ``max_delay`` before: a kiosk whose clock reset to 2000 must not make a loan
    26 years overdue.
    """
    return min(max(at, ts - max_delay), ts)


# -- holds ---------------------------------------------------------------------------

def hold_effect(copy: CopyState, *, reader: str, pickup: str, pickup_kind: str,
                lent_to: str | None) -> str:
    """What the state of a copy set aside for a hold means for that hold.

    fulfilled (the reader has it) | broken (someone else has it, or it is gone) |
    ready (waiting at the pickup node where a reader can take it) | on_its_way |
    astray (at rest somewhere else: it must be sent)
    """
    if copy.status == "on_loan":
        return "fulfilled" if lent_to == reader else "broken"
    if not copy.known or copy.status in ("lost", "withdrawn", "missing"):
        return "broken"
    if copy.location_node == pickup:
        # A machine hands out only what is in a slot; its bin needs a technician.
        takeable = "in_slot" if pickup_kind == "machine" else "on_shelf"
        return "ready" if copy.status == takeable else "on_its_way"
    if copy.status == "in_transit" and copy.transit_to == pickup:
        return "on_its_way"
    return "astray"


@dataclass(frozen=True)
class Candidate:
    """A copy that could be set aside for a hold."""

    barcode: str
    status: str
    location_node: str | None
    node_kind: str | None  # of location_node
    transit_to: str | None = None
    home_node: str | None = None


def choose_copy(candidates: Sequence[Candidate], pickup: str,
                pickup_kind: str) -> Candidate | None:
    """The best copy for a hold at ``pickup``: one already there, else the easiest to send."""
    takeable = "in_slot" if pickup_kind == "machine" else "on_shelf"

    def rank(c: Candidate) -> int | None:
        if c.status not in (*AT_REST, "in_transit") or c.location_node is None:
            return None  # lent, gone, or being carried: not available
        if c.status == "in_transit" and c.transit_to != c.home_node:
            return None  # already on its way for another reader
        if c.location_node == pickup:
            return 0 if c.status == takeable else 1
        if c.node_kind == "branch":
            return 2 if c.status == "on_shelf" else 3  # staff pull it from the shelf
        return 4 if c.status == "in_slot" else 5       # a technician's visit
    ranked = [(r, c.barcode, c) for c in candidates if (r := rank(c)) is not None]
    return min(ranked, key=lambda t: (t[0], t[1]))[2] if ranked else None
