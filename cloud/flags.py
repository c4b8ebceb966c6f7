"""Checkouts a node allowed that the cloud would have refused, judged at their own time.

Physical truth wins: a node that lent offline lent, and the loan stands. But
staff should look at a checkout by a card the cloud does not know, by a
blocked reader, or beyond the loan limit. Each is judged by the moment the
checkout happened, never by when it reached the cloud: the loans a reader had
open at ``ts`` are those checked out at or before it and not back by then.

Events that arrive late change that count (a return made before the checkout,
or another node's earlier checkout), so after every batch the over-limit flags
of the readers it touched are judged again (``review``): one no longer
supported is closed as "explained by an event that arrived late" (the
convention of cloud/copies.py), one now supported is opened, one a review
closed opens again if it is needed again. So any delivery order ends with the
same open flags as clock order; a flag staff closed stays closed. A card's
registration arriving closes the flags that said the cloud did not know it.

A block is judged against the block the cloud has (``blocked_at <= ts``): the
cloud keeps no history of blocks, so a checkout made during a block that was
lifted before the checkout reached the cloud is not flagged.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from cloud import reconcile
from cloud import store as s
from cloud.copies import EXPLAINED
from edge import circulation

logger = logging.getLogger(__name__)

OVER_LIMIT = "checkout_over_limit"
UNKNOWN_CARD = ("checkout_by_unknown_reader", "payment_from_unknown_reader")

# How far back a batch's readers have their checkouts judged again. An event
# that reaches the cloud later than this after it happened (a node offline for
# months) is judged when it arrives and not revisited: looking further back
# would read each reader's whole history on every batch.
REVIEW_DAYS = 90
CHUNK = 500  # readers per query


def policy_table() -> dict[tuple[str, str], circulation.Policy]:
    """The loan policies the nodes apply: the cloud's rows over the built-in defaults."""
    table = dict(circulation.DEFAULT_POLICIES)
    for p in s.Policy.select():
        table[(p.item_type, p.category)] = circulation.Policy(p.loan_days, p.max_items,
                                                              p.renewals)
    return table


def _item_types(barcodes: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(barcodes))
    out: dict[str, str] = {}
    for i in range(0, len(ids), CHUNK):
        out.update(s.tuples(s.Copy.select(s.Copy.barcode, s.Title.item_type)
                            .join(s.Title, on=(s.Copy.title_id == s.Title.id))
                            .where(s.Copy.barcode.in_(ids[i:i + CHUNK]))))
    return out


def _limit(table: dict[tuple[str, str], circulation.Policy], item_type: str | None,
           category: str) -> int:
    return circulation.policy_for(table, item_type or "book", category).max_items


def checkout(node: str, seq: int, card: str, copy: str, loan_id: str, at: datetime) -> None:
    """Flag what a node allowed when its checkout arrives (the copy fact made the loan)."""
    reader = s.Reader.get_or_none(s.Reader.card == card)
    if reader is None:
        borrower = reconcile.Borrower(known=False)
    else:
        open_then = s.Loan.select().where(
            (s.Loan.reader == card) & (s.Loan.checked_out_at <= at)
            & (s.Loan.returned_at.is_null() | (s.Loan.returned_at > at))).count()
        limit = _limit(policy_table(), _item_types([copy]).get(copy), reader.category)
        borrower = reconcile.Borrower(True, reader.blocked_reason, reader.blocked_at, open_then,
                                      limit)
    for rep in reconcile.checkout_flags(borrower, node=node, copy=copy, reader=card, at=at):
        s.StaffException.create(kind=rep.kind, node=node, seq=seq, copy=copy, detail=rep.detail,
                                created_at=s.utcnow(), reader=card, loan=loan_id)


def card_registered(card: str, now: datetime) -> None:
    """The card's registration arrived: what was flagged as from an unknown card is explained."""
    n = s.StaffException.update(closed_at=now, resolution=EXPLAINED).where(
        (s.StaffException.reader == card) & s.StaffException.kind.in_(UNKNOWN_CARD)
        & s.StaffException.closed_at.is_null()).execute()
    if n:
        logger.info("card %s registered: %d unknown-card flags explained", card, n)


def review(cards: Iterable[str], now: datetime) -> None:
    """Judge again the over-limit flags of these readers' checkouts (inside the batch)."""
    ids = sorted(set(cards))
    since = now - timedelta(days=REVIEW_DAYS)
    table: dict[tuple[str, str], circulation.Policy] | None = None
    for i in range(0, len(ids), CHUNK):
        category = dict(s.tuples(s.Reader.select(s.Reader.card, s.Reader.category)
                                 .where(s.Reader.card.in_(ids[i:i + CHUNK]))))
        # Every loan that can have been open at a checkout of the last REVIEW_DAYS.
        loans = list(s.Loan.select(s.Loan.id, s.Loan.copy, s.Loan.node, s.Loan.reader,
                                   s.Loan.checked_out_at, s.Loan.returned_at)
                     .where(s.Loan.reader.in_(list(category))
                            & (s.Loan.returned_at.is_null() | (s.Loan.returned_at > since))))
        judged = [ln for ln in loans if ln.checked_out_at >= since]
        if not judged:
            continue
        table = table if table is not None else policy_table()
        types = _item_types(ln.copy for ln in judged)
        flags = {e.loan: e for e in s.StaffException.select().where(
            (s.StaffException.kind == OVER_LIMIT)
            & s.StaffException.loan.in_([ln.id for ln in judged]))}
        spans: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
        for ln in loans:
            spans[ln.reader].append((ln.checked_out_at, ln.returned_at))
        for ln in judged:
            borrower = reconcile.Borrower(
                True, open_loans=reconcile.open_at(spans[ln.reader], ln.checked_out_at),
                max_items=_limit(table, types.get(ln.copy), category[ln.reader]))
            want = [r for r in reconcile.checkout_flags(borrower, node=ln.node, copy=ln.copy,
                                                        reader=ln.reader, at=ln.checked_out_at)
                    if r.kind == OVER_LIMIT]
            _settle(flags.get(ln.id), want[0] if want else None, ln, now)


def _settle(exc: s.StaffException | None, want: reconcile.Repair | None, loan: s.Loan,
            now: datetime) -> None:
    if exc is None and want is not None:
        seq = _checkout_seq(loan)
        if seq is None:
            return  # a loan no node reported (loaded with the data): nothing to point at
        s.StaffException.create(kind=OVER_LIMIT, node=loan.node, seq=seq, copy=loan.copy,
                                detail=want.detail, created_at=now, reader=loan.reader,
                                loan=loan.id)
    elif exc is not None and want is None and exc.closed_at is None:
        exc.closed_at, exc.resolution = now, EXPLAINED
        exc.save()
    elif exc is not None and want is not None and exc.resolution == EXPLAINED:
        exc.closed_at = exc.resolution = None
        exc.save()


def _checkout_seq(loan: s.Loan) -> int | None:
    """The seq of the node's event that made the loan, from the copy's facts."""
    for seq, body in s.tuples(s.CopyFact.select(s.CopyFact.seq, s.CopyFact.body).where(
            (s.CopyFact.copy == loan.copy) & (s.CopyFact.node == loan.node)
            & (s.CopyFact.type == "loan.checkout"))):
        if json.loads(body).get("loan_id") == loan.id:
            return int(seq)
    return None
