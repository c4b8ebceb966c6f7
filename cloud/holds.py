"""Reservations: a copy set aside or sent for every hold, readiness, expiry, the queue.

A hold starts ``waiting``. The cloud sets a copy aside for it
(``reconcile.choose_copy``): one already takeable at the pickup node makes it
``ready`` at once; one elsewhere is sent there — a ``cloud.transfer`` fact puts
the copy ``in_transit`` (its node stops lending it) and a ``Transfer`` row tells
staff what to carry where. The copy arrives when the pickup node checks it in
(a branch) or a technician loads it into a slot (a machine); the hold is then
``ready`` until ``cloud.hold_days`` have passed, when it ``expires`` and the copy
goes to the next reader in line (first come, first served) or back home.

After every batch of facts, ``settle_copies`` looks at where each touched copy
now is and what that means for its hold (``reconcile.hold_effect``): collected,
ready, still on its way, astray (send it again), or broken — lent to another
reader or gone — in which case the hold moves to another copy and staff see
why. It reads only the final state, so a replay that rewrote a copy's history
settles the same way.
"""
from __future__ import annotations

import logging
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from cloud import copies, feed, notices, reconcile, settings
from cloud import store as s

logger = logging.getLogger(__name__)

ACTIVE = ("waiting", "ready")


def _kinds() -> dict[str, str]:
    return {node: kind for node, kind in s.tuples(s.Node.select(s.Node.id, s.Node.kind))}


def _takeable(kind: str | None) -> str:
    return "in_slot" if kind == "machine" else "on_shelf"


def create(reader: str, title_id: str, pickup_node: str, now: datetime | None = None,
           hold_id: str | None = None) -> s.Hold:
    """A new hold, with a copy set aside or sent for it if there is one (caller validates).

    ``hold_id``: the id a node gave it (a reservation made at a self-check).
    """
    now = now or s.utcnow()
    hold: s.Hold = s.Hold.create(id=hold_id or uuid.uuid4().hex, title_id=title_id, reader=reader,
                                 pickup_node=pickup_node, status="waiting", created_at=now)
    assign(hold, now)
    feed.hold_changed(hold)
    return hold


def assign(hold: s.Hold, now: datetime, touched: set[str] | None = None) -> None:
    """Set a copy aside for a waiting hold without one, if the fund has one free."""
    kinds = _kinds()
    taken = s.Hold.select(s.Hold.copy).where(s.Hold.status.in_(ACTIVE)
                                             & s.Hold.copy.is_null(False))
    rows = s.Copy.select().where((s.Copy.title_id == hold.title_id)
                                 & s.Copy.status.in_([*reconcile.AT_REST, "in_transit"])
                                 & s.Copy.barcode.not_in(taken))
    candidates = [reconcile.Candidate(c.barcode, c.status, c.location_node,
                                      kinds.get(c.location_node or ""), c.transit_to, c.home_node)
                  for c in rows]
    while True:
        best = reconcile.choose_copy(candidates, hold.pickup_node,
                                     kinds.get(hold.pickup_node, ""))
        if best is None:
            logger.info("hold %s for %s waits: no copy of %s free", hold.id, hold.reader,
                        hold.title_id)
            return
        # Locked, then checked again: another cloud process may have set it aside for
        # another hold since we looked (it holds the same lock until it commits).
        c = copies.copy_row(best.barcode)
        if not s.Hold.select().where((s.Hold.copy == c.barcode) & (s.Hold.id != hold.id)
                                     & s.Hold.status.in_(ACTIVE)).exists():
            _set_aside(hold, c, kinds, now, touched)
            return
        candidates = [x for x in candidates if x.barcode != best.barcode]


def _set_aside(hold: s.Hold, c: s.Copy, kinds: dict[str, str], now: datetime,
               touched: set[str] | None) -> None:
    c = copies.copy_row(c.barcode)  # taken FOR UPDATE on PostgreSQL until we commit
    hold.copy = c.barcode
    hold.save(only=[s.Hold.copy])   # before the copy moves: the feed names the hold it goes to
    pickup_kind = kinds.get(hold.pickup_node)
    if c.location_node != hold.pickup_node or c.status == "in_transit":
        c = copies.apply_cloud_fact(c.barcode, "cloud.transfer",
                                    {"to": hold.pickup_node, "to_kind": pickup_kind or "branch"},
                                    now, touched)
    if c.location_node == hold.pickup_node and c.status == _takeable(pickup_kind):
        _close_transfers(c, now, f"kept at {hold.pickup_node} for a hold")
        _make_ready(hold, now)
        return
    hold.status, hold.expires, hold.ready_at = "waiting", None, None
    hold.save()
    _open_transfer(c, hold.pickup_node, "hold", hold.id, now)
    logger.info("hold %s: copy %s set aside at %s for pickup at %s", hold.id, c.barcode,
                c.location_node, hold.pickup_node)


def _make_ready(hold: s.Hold, now: datetime) -> None:
    hold.status, hold.ready_at = "ready", now
    hold.expires = settings.today(now) + timedelta(days=settings.get_int("cloud.hold_days"))
    hold.save()
    title = s.Title.get_or_none(s.Title.id == hold.title_id)
    name = title.title if title else hold.title_id
    notices.queue(hold.reader, "hold_ready", f"hold_ready/{hold.id}",
                  f"Your reservation is ready: {name}",
                  f"«{name}» is waiting for you at {hold.pickup_node} until "
                  f"{hold.expires:%d.%m.%Y} (copy {hold.copy}).", now)


def _close_transfers(c: s.Copy, now: datetime, note: str, keep_to: str | None = None) -> None:
    s.Transfer.update(status="cancelled", closed_at=now, note=note).where(
        (s.Transfer.copy == c.barcode) & (s.Transfer.status == "open")
        & (s.Transfer.to_node != (keep_to or ""))).execute()


def _open_transfer(c: s.Copy, to: str, reason: str, hold_id: str | None,
                   now: datetime) -> None:
    _close_transfers(c, now, f"superseded: the copy is needed at {to}", keep_to=to)
    if s.Transfer.select().where((s.Transfer.copy == c.barcode) & (s.Transfer.to_node == to)
                                 & (s.Transfer.status == "open")).exists():
        return
    s.Transfer.create(copy=c.barcode, from_node=c.location_node, to_node=to, reason=reason,
                      hold=hold_id, created_at=now,
                      note="load it into a slot" if c.location_node == to else "")


def settle_copies(barcodes: set[str], now: datetime, touched: set[str] | None = None) -> None:
    """Bring the holds and transfers of copies that moved up to date with where they are."""
    kinds = _kinds()
    for barcode in sorted(barcodes):
        settle_copy(barcode, now, touched, kinds)


def settle_copy(barcode: str, now: datetime, touched: set[str] | None = None,
                kinds: dict[str, str] | None = None) -> None:
    """What the copy's place means for its transfers and its hold; give a free copy away."""
    c = s.Copy.get_or_none(s.Copy.barcode == barcode)
    if c is None:
        return
    kinds = kinds if kinds is not None else _kinds()
    _settle_transfers(c, kinds, now)
    held = list(s.Hold.select().where((s.Hold.copy == barcode) & s.Hold.status.in_(ACTIVE)))
    for h in held:
        _settle_hold(h, c, kinds, now, touched)
        c = s.Copy.get(s.Copy.barcode == barcode)
    if not held or not s.Hold.select().where((s.Hold.copy == barcode)
                                             & s.Hold.status.in_(ACTIVE)).exists():
        release(c, now, touched)


def _settle_hold(h: s.Hold, c: s.Copy, kinds: dict[str, str], now: datetime,
                 touched: set[str] | None) -> None:
    lent_to = lent_at = None
    if c.status == "on_loan" and c.loan_id:
        loan = s.Loan.get_or_none(s.Loan.id == c.loan_id)
        lent_to, lent_at = (loan.reader, loan.node) if loan else (None, None)
    effect = reconcile.hold_effect(copies.state(c), reader=h.reader, pickup=h.pickup_node,
                                   pickup_kind=kinds.get(h.pickup_node, "branch"),
                                   lent_to=lent_to)
    if effect == "fulfilled":
        h.status = "picked_up"
        h.save()
    elif effect == "broken":
        why = (f"was lent to {lent_to}" if c.status == "on_loan"
               else f"is {c.status.replace('_', ' ')}")
        h.copy, h.status, h.expires, h.ready_at = None, "waiting", None, None
        h.save()
        assign(h, now, touched)
        moved = f"moved to copy {h.copy}" if h.copy else "waits for another copy"
        s.StaffException.create(
            kind="hold_copy_taken" if lent_to else "hold_copy_gone",
            node=lent_at or h.pickup_node, seq=0, copy=c.barcode, created_at=now,
            detail=f"copy {c.barcode}, set aside for {h.reader}'s hold {h.id} at "
                   f"{h.pickup_node}, {why}" + (f" at {lent_at}" if lent_at else "")
                   + f"; the hold {moved}")
    elif effect == "ready" and h.status != "ready":
        _make_ready(h, now)
    elif effect == "on_its_way" and h.status == "ready":
        h.status, h.expires, h.ready_at = "waiting", None, None  # left the shelf again
        h.save()
    elif effect == "astray":
        kind = kinds.get(h.pickup_node, "branch")
        c = copies.apply_cloud_fact(c.barcode, "cloud.transfer",
                                    {"to": h.pickup_node, "to_kind": kind}, now, touched)
        _open_transfer(c, h.pickup_node, "hold", h.id, now)
    else:
        return
    feed.hold_changed(h)


def _settle_transfers(c: s.Copy, kinds: dict[str, str], now: datetime) -> None:
    for t in s.Transfer.select().where((s.Transfer.copy == c.barcode)
                                       & (s.Transfer.status == "open")):
        if c.location_node == t.to_node and c.status == _takeable(kinds.get(t.to_node)):
            t.status, t.note = "arrived", f"arrived at {t.to_node}"
        elif c.status == "in_transit" and c.transit_to == t.to_node:
            continue
        elif c.location_node == t.to_node and c.status in ("in_bin", "in_transit"):
            continue  # in the pickup machine's bin: a technician loads it
        else:
            where = c.location_node or "no node"
            t.status, t.note = "cancelled", f"the copy is now {c.status} at {where}"
        t.closed_at = now
        t.save()
    to: str | None = c.transit_to
    if c.status == "in_transit" and to:
        hold = s.Hold.get_or_none((s.Hold.copy == c.barcode) & s.Hold.status.in_(ACTIVE)
                                  & (s.Hold.pickup_node == to))
        _open_transfer(c, to, "hold" if hold else "home", hold.id if hold else None, now)


def release(c: s.Copy, now: datetime, touched: set[str] | None = None) -> None:
    """A copy no hold claims: to the next reader in line for its title, else home if fixed."""
    home_bound = (c.status == "in_transit" and c.transit_to == c.home_node
                  and c.location_node is not None)
    if (c.status == "in_transit" and c.location_node is None and c.transit_to is None
            and c.home_node and not copies.floating(c)):
        # Carried off with nowhere to go (a technician took it out of a machine): a
        # fixed copy goes home, as it would have been told had the cloud seen it at rest.
        _send_home(c, c.home_node, now, touched)
        return
    if c.status not in reconcile.AT_REST and not home_bound:
        return
    nxt = next_in_line(c.title_id)
    if nxt is not None:
        _set_aside(nxt, c, _kinds(), now, touched)
        feed.hold_changed(nxt)
        return
    home: str | None = c.home_node
    if (c.status in reconcile.AT_REST and home and c.location_node != home
            and not copies.floating(c)):
        _send_home(c, home, now, touched)


def _send_home(c: s.Copy, home: str, now: datetime, touched: set[str] | None) -> None:
    kind = _kinds().get(home, "branch")
    c = copies.apply_cloud_fact(c.barcode, "cloud.transfer", {"to": home, "to_kind": kind},
                                now, touched)
    _open_transfer(c, home, "home", None, now)


def _in_line() -> Any:
    """Holds waiting with no copy set aside, in the order they are served."""
    return (s.Hold.select().where((s.Hold.status == "waiting") & s.Hold.copy.is_null())
            .order_by(s.Hold.created_at, s.Hold.id))


def next_in_line(title_id: str | None) -> s.Hold | None:
    """The hold the next free copy of a title goes to (first come, first served)."""
    if title_id is None:
        return None
    found: s.Hold | None = _in_line().where(s.Hold.title_id == title_id).first()
    return found


def heads_of_queues() -> dict[str, s.Hold]:
    """``next_in_line`` of every title that has one, in one query (for a snapshot)."""
    heads: dict[str, s.Hold] = {}
    for h in _in_line():
        heads.setdefault(h.title_id, h)
    return heads


def expire(today: date | None = None, now: datetime | None = None) -> int:
    """Holds ready past their last day expire; their copies go to the next in line."""
    now = now or s.utcnow()
    today = today or settings.today(now)
    n = 0
    with feed.transaction():
        for h in s.Hold.select().where((s.Hold.status == "ready") & (s.Hold.expires < today)):
            h.status = "expired"
            h.save()
            feed.hold_changed(h)
            logger.info("hold %s of %s expired uncollected", h.id, h.reader)
            c = s.Copy.get_or_none(s.Copy.barcode == h.copy) if h.copy else None
            if c is not None:
                release(c, now)
            n += 1
    return n


def cancel(h: s.Hold, now: datetime | None = None) -> None:
    """Cancel a hold (inside the caller's transaction); its copy goes to the next in line."""
    now = now or s.utcnow()
    h.status = "cancelled"
    h.save()
    feed.hold_changed(h)
    c = s.Copy.get_or_none(s.Copy.barcode == h.copy) if h.copy else None
    if c is not None:
        release(c, now)


def queue(title_id: str) -> list[s.Hold]:
    """The holds on a title, in the order they are served."""
    return list(s.Hold.select().where((s.Hold.title_id == title_id)
                                      & s.Hold.status.in_(ACTIVE))
                .order_by(s.Hold.created_at, s.Hold.id))


def transfers(node: str | None = None, *, outgoing: bool = True,
              status: str = "open") -> list[s.Transfer]:
    """Transfers staff must act on: leaving ``node`` (outgoing) or coming to it."""
    query = s.Transfer.select().where(s.Transfer.status == status)
    if node is not None:
        query = query.where((s.Transfer.from_node if outgoing else s.Transfer.to_node) == node)
    return list(query.order_by(s.Transfer.created_at, s.Transfer.id))
