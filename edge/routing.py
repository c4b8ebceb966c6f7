"""Where a copy taken back here goes next: the hold shelf, another branch, home, or the shelf.

The cloud decides it (``cloud/reconcile.py`` checkin, then ``cloud/holds.py``),
but the person or the sorter holding the book must know now, with or without
a link. So the node predicts it from what the feed brought down, in the
cloud's own order:

1. a hold here has this copy set aside: the hold shelf, for that reader;
2. the cloud sent the copy towards a hold at another node (``transit_to``
   with ``transit_hold``, or a ``transit_to`` that is not its home): that node;
3. a reader waits for the title with no copy yet (the title's ``next_hold``,
   first come first served, as ``holds.release`` gives it): here or there;
4. a fixed copy away from home, or one the cloud was sending home: home;
5. otherwise it stays: the shelf.

A copy the node never held (no title, no home known) is "unknown": it leaves
by the transfer bin and staff look it up. Pure: ``EdgeStore.checkin`` reads
what the node knows and asks ``decide``, so the desk and the kiosks say the same.
"""
from __future__ import annotations

from dataclasses import dataclass

# What becomes of the copy: its SIP2 alert and the sort bin kind follow from it.
HOLD_HERE, HOLD_ELSEWHERE, HOME, SHELF, UNKNOWN = (
    "hold_here", "hold_elsewhere", "home", "shelf", "unknown")


@dataclass(frozen=True)
class Route:
    """Where a returned copy goes, and for whom."""

    kind: str                      # HOLD_HERE | HOLD_ELSEWHERE | HOME | SHELF | UNKNOWN
    to: str | None = None          # the node it goes to (this one for a hold here)
    hold_id: str | None = None
    reader: str | None = None      # a hold here: whose
    reader_name: str = ""

    @property
    def leaves(self) -> bool:
        """True when the copy must be sent away from this node."""
        return self.kind in (HOLD_ELSEWHERE, HOME, UNKNOWN)


@dataclass(frozen=True)
class CopyKnown:
    """What the node knows of a copy when it comes back."""

    known: bool                    # the node ever held it (the feed or a loan here)
    home_node: str | None = None
    floating: bool | None = None   # None: not said; the network's default is to float
    transit_to: str | None = None  # the cloud was sending it there
    transit_hold: str | None = None  # ... for that hold (None: sending it home)
    next_hold: str | None = None   # the title's first waiting hold with no copy
    next_pickup: str | None = None
    next_reader: str | None = None  # whose, when that hold is here (the node has its row)


def decide(node: str, copy: CopyKnown, hold_here: tuple[str, str] | None) -> Route:
    """The route of a copy returned at ``node``.

    ``hold_here``: (hold id, reader) of a hold here the copy is set aside for.
    """
    if hold_here is not None:
        return Route(HOLD_HERE, node, hold_here[0], hold_here[1])
    if not copy.known:
        return Route(UNKNOWN)
    if copy.transit_to and copy.transit_to != node and (
            copy.transit_hold or copy.transit_to != copy.home_node):
        return Route(HOLD_ELSEWHERE, copy.transit_to, copy.transit_hold)
    if copy.next_hold and copy.next_pickup:
        if copy.next_pickup == node:
            return Route(HOLD_HERE, node, copy.next_hold, copy.next_reader)
        return Route(HOLD_ELSEWHERE, copy.next_pickup, copy.next_hold)
    home = copy.home_node
    going_home = copy.transit_to == home or copy.floating is False
    if home and home != node and going_home:
        return Route(HOME, home)
    return Route(SHELF)
