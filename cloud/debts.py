"""Debts: the ledger, overdue detection, lost copies, blocks by threshold, the debtor list.

Every change to what a reader owes is a ``LedgerEntry`` (charges positive,
payments and waivers negative) and moves ``Reader.fees_owed`` by the same
amount in the same transaction: fees_owed is always the ledger's sum
(``check_ledger`` proves it). Fines and replacement fees are *derived*: for
each overdue loan the rules (cloud/fines.py) say what it should have cost so
far, and the difference to what the ledger already charged for it is posted.
So a rule change, a return that arrives late, or a lost copy that comes back
all end in the right balance, with a trail of why.

``overdue_run`` is the scheduled pass (cloud/jobs.py, ``kitap admin
overdue-run``): loans too long overdue are declared lost, fines accrue, blocks
follow the thresholds, notices are queued. Ingest brings the readers a batch
touched up to date at once (``refresh_readers``), so a return or a payment
lifts a block within seconds.
"""
from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from peewee import fn

from cloud import copies, feed, fines, notices, settings
from cloud import store as s
from cloud.service_models import DiscountRule

logger = logging.getLogger(__name__)

# Readers brought up to date per transaction by the overdue run: short
# transactions, so ingest never waits long behind the scheduled pass.
READERS_PER_TXN = 100
# Advisory lock keys for cards on PostgreSQL (this prefix | crc32 of the card):
# a payment with a card the cloud does not know yet and that card's
# registration may be applied at once by two ingest workers.
CARD_LOCK_SPACE = 0x6B69_7461_0000_0000


def rules() -> dict[str, fines.FineRule]:
    """The fine policy by item type ("*": any)."""
    return {p.item_type: fines.FineRule(p.per_day, p.cap, p.grace_days, p.replacement)
            for p in s.FinePolicy.select()}


def discount_table() -> dict[tuple[str, str], int]:
    """The discounts on fines today: the defaults, overridden by the rules staff set.

    The rules are the services' (cloud/service_models.py ``DiscountRule``), those
    naming no partner and no service; the older ``Discount`` table still counts.
    """
    table = dict(fines.DEFAULT_DISCOUNTS)
    table.update({(d.category, d.kind): d.percent for d in s.Discount.select()})
    today = settings.today()
    for r in (DiscountRule.select().where((DiscountRule.partner == "*")
                                          & (DiscountRule.service == "*"))
              .order_by(DiscountRule.valid_from.asc(nulls="FIRST"), DiscountRule.id)):
        if (r.valid_from is None or r.valid_from <= today) and (
                r.valid_to is None or today <= r.valid_to):
            table[(r.category, r.kind)] = r.percent
    return table


def post(reader: str, kind: str, amount: int, *, now: datetime, loan: str | None = None,
         node: str | None = None, ref: str | None = None, note: str = "") -> bool:
    """Add a ledger line and move the reader's balance with it; False if ``ref`` was posted."""
    if amount == 0:
        return False
    if ref is not None and s.LedgerEntry.select().where(s.LedgerEntry.ref == ref).exists():
        return False
    s.LedgerEntry.create(reader=reader, kind=kind, amount=amount, loan=loan, node=node, ref=ref,
                         note=note, at=now)
    move = s.Reader.update(fees_owed=s.Reader.fees_owed + amount).where(s.Reader.card == reader)
    if not move.execute() and s.is_postgres():
        # No reader yet, as far as this transaction sees: another worker may be
        # registering the card right now. Wait for it to commit, and look again.
        lock_card(reader)
        move.execute()
    return True


def lock_card(card: str) -> None:
    """Hold a lock on ``card`` until the transaction ends (PostgreSQL; SQLite has one writer).

    A registration takes it before reading the card's ledger, and a payment
    that finds no reader takes it before looking again: either way the new
    reader starts with every payment made before it.
    """
    if s.is_postgres():
        s.db.execute_sql("SELECT pg_advisory_xact_lock(%s)",
                         (CARD_LOCK_SPACE | zlib.crc32(card.encode()),))


def balance(reader: str) -> int:
    """What the ledger says the reader owes."""
    return int(s.LedgerEntry.select(fn.SUM(s.LedgerEntry.amount))
               .where(s.LedgerEntry.reader == reader).scalar() or 0)


def check_ledger() -> list[tuple[str, int | None, int]]:
    """Cards whose balance disagrees with their ledger: (card, fees_owed, ledger sum).

    ``fees_owed`` is None for an orphan (``ledger_orphans``): ledger lines of a
    card with no reader, owed by nobody yet.
    """
    sums = dict(s.tuples(s.LedgerEntry.select(s.LedgerEntry.reader, fn.SUM(s.LedgerEntry.amount))
                         .group_by(s.LedgerEntry.reader)))
    out: list[tuple[str, int | None, int]] = []
    for card, owed in s.tuples(s.Reader.select(s.Reader.card, s.Reader.fees_owed)):
        if int(owed) != int(sums.get(card, 0) or 0):
            out.append((card, int(owed), int(sums.get(card, 0) or 0)))
    return out + [(card, None, total) for card, total in ledger_orphans()]


def ledger_orphans() -> list[tuple[str, int]]:
    """Cards with ledger lines and no reader, and their sum (a payment is negative).

    A fee paid at a node with a card whose registration has not reached the
    cloud (or never will): the money is kept, and staff should know whose it is.
    """
    known = s.Reader.select(s.Reader.card)
    return [(card, int(total or 0)) for card, total in s.tuples(
        s.LedgerEntry.select(s.LedgerEntry.reader, fn.SUM(s.LedgerEntry.amount))
        .where(s.LedgerEntry.reader.not_in(known))
        .group_by(s.LedgerEntry.reader).order_by(s.LedgerEntry.reader))]


def pay(reader: str, amount: int, *, payment_id: str, node: str, now: datetime) -> bool:
    """A fee paid at a node (counted once per payment id)."""
    return post(reader, "payment", -amount, now=now, node=node, ref=f"payment/{payment_id}",
                note=f"paid at {node}")


def waive(reader: str, amount: int, reason: str, *, loan: str | None = None,
          now: datetime | None = None) -> None:
    """Staff forgive part of a debt; the reader's figures and block follow at once."""
    now = now or s.utcnow()
    with feed.transaction():
        if s.Reader.get_or_none(s.Reader.card == reader) is None:
            raise ValueError(f"no reader with card {reader}")
        post(reader, "waiver", -abs(amount), now=now, loan=loan, note=reason)
        refresh_readers({reader}, now)
        feed.reader_changed(reader)


# -- bringing readers up to date ---------------------------------------------------

def _closed_on(loan: s.Loan) -> date | None:
    return settings.today(loan.returned_at) if loan.returned_at else None


def _sync_loan(loan: s.Loan, category: str, item_type: str, today: date, now: datetime,
               ctx: _Ctx) -> None:
    """Post what the loan's fine and replacement fee should be, minus what was charged."""
    copy_lost = loan.close_reason == "lost" and s.Copy.select().where(
        (s.Copy.barcode == loan.copy) & (s.Copy.status == "lost")).exists()
    want = fines.loan_charges(fines.rule_for(ctx.rules, item_type), due=loan.due, today=today,
                              closed_on=_closed_on(loan), lost=copy_lost, category=category,
                              discounts=ctx.discounts)
    charged = dict(s.tuples(s.LedgerEntry.select(s.LedgerEntry.kind, fn.SUM(s.LedgerEntry.amount))
                            .where((s.LedgerEntry.loan == loan.id)
                                   & s.LedgerEntry.kind.in_(["fine", "replacement"]))
                            .group_by(s.LedgerEntry.kind)))
    days = fines.days_overdue(loan.due, min(today, _closed_on(loan) or today))
    for kind, amount, note in (
            ("fine", want.fine, f"copy {loan.copy}: {days} days overdue"),
            ("replacement", want.replacement,
             f"copy {loan.copy} lost" if want.replacement else f"copy {loan.copy} came back")):
        delta = amount - int(charged.get(kind, 0) or 0)
        if delta:
            post(loan.reader, kind, delta, now=now, loan=loan.id, node=loan.node, note=note)
            ctx.posted += delta
    if loan.returned_at is not None:
        s.Loan.update(fine_settled=True).where(s.Loan.id == loan.id).execute()


@dataclass
class _Ctx:
    """The policies, read once per pass, and what the pass did."""

    _rules: dict[str, fines.FineRule] | None = None
    _discounts: dict[tuple[str, str], int] | None = None
    posted: int = 0
    blocked: int = 0
    unblocked: int = 0

    @property
    def rules(self) -> dict[str, fines.FineRule]:
        if self._rules is None:
            self._rules = rules()
        return self._rules

    @property
    def discounts(self) -> dict[tuple[str, str], int]:
        if self._discounts is None:
            self._discounts = discount_table()
        return self._discounts


def _item_types(loans: list[s.Loan]) -> dict[str, str]:
    ids = {ln.copy for ln in loans}
    if not ids:
        return {}
    return {barcode: item_type for barcode, item_type in s.tuples(
        s.Copy.select(s.Copy.barcode, s.Title.item_type)
        .join(s.Title, on=(s.Copy.title_id == s.Title.id)).where(s.Copy.barcode.in_(ids)))}


def _pending(today: date) -> Any:
    """Loans whose charges may be out of date: not settled, and overdue, closed, or charged
    before (a renewal or an extension may have moved the due date past today)."""
    charged = s.LedgerEntry.select(s.LedgerEntry.loan).where(s.LedgerEntry.loan.is_null(False))
    return ((s.Loan.fine_settled == False)  # noqa: E712 - SQL, not Python
            & ((s.Loan.due < today) | s.Loan.returned_at.is_null(False)
               | s.Loan.id.in_(charged)))


def refresh_reader(card: str, today: date, now: datetime, ctx: _Ctx | None = None) -> None:
    """Post the reader's pending fines and apply the block thresholds (in a transaction)."""
    ctx = ctx or _Ctx()
    query = s.Reader.select().where(s.Reader.card == card)
    if s.is_postgres():
        query = query.for_update()  # two processes must not post the same fine twice
    reader = query.first()
    if reader is None:
        return
    loans = list(s.Loan.select().where((s.Loan.reader == card) & _pending(today)))
    types = _item_types(loans)
    for loan in loans:
        _sync_loan(loan, reader.category, types.get(loan.copy, "book"), today, now, ctx)
    _apply_block(card, today, now, ctx)


def _apply_block(card: str, today: date, now: datetime, ctx: _Ctx) -> None:
    reader = s.Reader.get(s.Reader.card == card)
    overdue = s.Loan.select().where((s.Loan.reader == card) & s.Loan.returned_at.is_null()
                                    & (s.Loan.due < today)).count()
    decision = fines.block_decision(
        reason=reader.blocked_reason, blocked_by=reader.blocked_by, overdue_items=overdue,
        owed=reader.fees_owed, items_at=settings.get_int("cloud.block_overdue_items"),
        fees_at=settings.get_int("cloud.block_fees_at"))
    if decision is None:
        return
    action, why = decision
    if action == "block":
        # An automatic block whose reason only changed ("2 books overdue" -> "3 ...")
        # is the same block: it keeps its start, against which offline checkouts
        # are judged (cloud/flags.py).
        since = reader.blocked_at if reader.blocked_reason and reader.blocked_at else now
        s.Reader.update(blocked_reason=why, blocked_by="auto", blocked_at=since).where(
            s.Reader.card == card).execute()
        if not reader.blocked_reason:
            ctx.blocked += 1
            notices.queue(card, "blocked", f"blocked/{card}/{now:%Y%m%dT%H%M%S}",
                          "Your library card is blocked",
                          f"Your card is blocked at every library and machine: {why}. "
                          "Return the books or settle the debt to lift it.", now)
        logger.info("reader %s blocked automatically: %s", card, why)
    else:
        s.Reader.update(blocked_reason=None, blocked_by=None, blocked_at=None).where(
            s.Reader.card == card).execute()
        ctx.unblocked += 1
        logger.info("reader %s unblocked automatically", card)


def refresh_readers(cards: Iterable[str], now: datetime) -> None:
    """Bring these readers' fines and blocks up to date (inside the caller's transaction)."""
    today = settings.today(now)
    ctx = _Ctx()
    for card in sorted(set(cards)):
        refresh_reader(card, today, now, ctx)


def copies_changed(barcodes: Iterable[str], readers: set[str]) -> None:
    """A lost copy that is back: its lost loan's replacement fee is owed no more."""
    ids = list(barcodes)
    if not ids:
        return
    back = s.tuples(s.Loan.select(s.Loan.id, s.Loan.reader)
                    .join(s.Copy, on=(s.Loan.copy == s.Copy.barcode))
                    .where(s.Loan.copy.in_(ids) & (s.Loan.close_reason == "lost")
                           & (s.Loan.fine_settled == True)  # noqa: E712
                           & (s.Copy.status != "lost")))
    for loan_id, reader in back:
        s.Loan.update(fine_settled=False).where(s.Loan.id == loan_id).execute()
        readers.add(reader)


# -- the scheduled pass ---------------------------------------------------------------

@dataclass(frozen=True)
class OverdueReport:
    """What one overdue run did."""

    today: date
    declared_lost: int
    readers_checked: int
    posted: int  # tiyn, net
    blocked: int
    unblocked: int
    notices: int


def overdue_run(today: date | None = None, now: datetime | None = None) -> OverdueReport:
    """Declare long-overdue copies lost, post fines, apply blocks, queue notices."""
    now = now or s.utcnow()
    today = today or settings.today(now)
    lost = _declare_lost(today, now)
    cards = _readers_to_check(today)
    ctx = _Ctx()
    for i in range(0, len(cards), READERS_PER_TXN):
        with feed.transaction():
            for card in cards[i:i + READERS_PER_TXN]:
                before = s.Reader.get_or_none(s.Reader.card == card)
                refresh_reader(card, today, now, ctx)
                after = s.Reader.get_or_none(s.Reader.card == card)
                if before and after and ((before.fees_owed, before.blocked_reason)
                                         != (after.fees_owed, after.blocked_reason)):
                    feed.reader_changed(card)
    queued = _queue_loan_notices(today, now)
    report = OverdueReport(today, lost, len(cards), ctx.posted, ctx.blocked, ctx.unblocked,
                           queued)
    logger.info("overdue run %s: %s", today, report)
    return report


def _declare_lost(today: date, now: datetime) -> int:
    limit = today - timedelta(days=settings.get_int("cloud.lost_after_days"))
    n = 0
    for loan in list(s.Loan.select().where(s.Loan.returned_at.is_null() & (s.Loan.due < limit))):
        with feed.transaction():
            c = copies.copy_row(loan.copy)
            if c.status != "on_loan" or c.loan_id != loan.id:
                continue  # the copy's own facts say otherwise: not this loan's to lose
            touched: set[str] = set()
            copies.apply_cloud_fact(loan.copy, "cloud.lost", {"loan_id": loan.id}, now, touched)
            for card in touched | {loan.reader}:
                feed.reader_changed(card)
            logger.info("copy %s declared lost: loan %s of %s due %s", loan.copy, loan.id,
                        loan.reader, loan.due)
            n += 1
    return n


def _readers_to_check(today: date) -> list[str]:
    pending = s.Loan.select(s.Loan.reader).where(_pending(today))
    auto = s.Reader.select(s.Reader.card).where(s.Reader.blocked_by == "auto")
    cards = {r for (r,) in s.tuples(pending)} | {r for (r,) in s.tuples(auto)}
    fees_at = settings.get_int("cloud.block_fees_at")
    if fees_at:
        cards |= {r for (r,) in s.tuples(s.Reader.select(s.Reader.card).where(
            (s.Reader.fees_owed >= fees_at) & s.Reader.blocked_reason.is_null()))}
    return sorted(cards)


def _queue_loan_notices(today: date, now: datetime) -> int:
    soon = today + timedelta(days=settings.get_int("cloud.due_soon_days"))
    n = 0
    rows = s.tuples(s.Loan.select(s.Loan.id, s.Loan.reader, s.Loan.copy, s.Loan.due, s.Title.title)
                    .join(s.Copy, on=(s.Loan.copy == s.Copy.barcode))
                    .join(s.Title, on=(s.Copy.title_id == s.Title.id))
                    .where(s.Loan.returned_at.is_null() & (s.Loan.due <= soon)))
    for loan_id, reader, copy, due, title in rows:
        name = title or f"copy {copy}"
        if due < today:
            n += notices.queue(reader, "overdue", f"overdue/{loan_id}/{due}", f"Overdue: {name}",
                               f"«{name}» was due on {due:%d.%m.%Y}. Please return it to "
                               "any library or book machine.", now)
        else:
            n += notices.queue(reader, "due_soon", f"due_soon/{loan_id}/{due}",
                               f"Due soon: {name}",
                               f"«{name}» is due on {due:%d.%m.%Y}. Return it to any "
                               "library or book machine, or renew it.", now)
    return n


# -- the debtor list ----------------------------------------------------------------

@dataclass(frozen=True)
class Debtor:
    """A reader with books overdue or money owed."""

    card: str
    name: str
    category: str
    owed: int               # tiyn
    overdue_items: int
    max_days_overdue: int
    locations: tuple[str, ...]  # where the overdue loans were made
    blocked_reason: str | None


def debtors(location: str | None = None, min_days: int = 0, min_amount: int = 0,
            today: date | None = None) -> list[Debtor]:
    """Readers who owe books or money, the longest overdue first.

    ``location``: only readers with an overdue loan made there; ``min_days``:
    at least one loan that many days overdue; ``min_amount``: owing at least
    that (tiyn).
    """
    today = today or settings.today()
    late: dict[str, list[Any]] = defaultdict(list)
    for card, node, due in s.tuples(s.Loan.select(s.Loan.reader, s.Loan.node, s.Loan.due).where(
            s.Loan.returned_at.is_null() & (s.Loan.due < today))):
        late[card].append((node, due))
    cards = set(late)
    if location is None and min_days <= 0:
        cards |= {c for (c,) in s.tuples(s.Reader.select(s.Reader.card)
                                          .where(s.Reader.fees_owed > 0))}
    out: list[Debtor] = []
    for r in _readers(cards):
        loans = late.get(r.card, [])
        days = max((fines.days_overdue(due, today) for _, due in loans), default=0)
        nodes = tuple(sorted({node for node, _ in loans}))
        if location is not None and location not in nodes:
            continue
        if days < min_days or r.fees_owed < min_amount:
            continue
        out.append(Debtor(r.card, r.name, r.category, int(r.fees_owed), len(loans), days, nodes,
                          r.blocked_reason))
    out.sort(key=lambda d: (-d.max_days_overdue, -d.owed, d.card))
    return out


def _readers(cards: set[str]) -> list[s.Reader]:
    ids = sorted(cards)
    out: list[s.Reader] = []
    for i in range(0, len(ids), 500):
        out += list(s.Reader.select().where(s.Reader.card.in_(ids[i:i + 500])))
    return out
