"""Patron messages: 23 status, 63 information, 01 block, 25 enable, 35 end, 37 fee paid, 15 hold.

What the node knows of a reader comes from the cloud's feed plus what
happened here (``EdgeStore``): the loan count across the network, fees owed,
the cloud's block, and the holds to collect here. PINs are checked by the
store (3 wrong ones lock the card at this node). 01 and 25 block and unblock
the card here and tell the cloud (``reader.blocked`` / ``reader.unblocked``),
which blocks it everywhere; 15 places and cancels holds to collect here
(``hold.requested`` / ``hold.cancelled``), the copy being the cloud's choice.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge import circulation as rules
from edge.sip2 import accounts, codec
from edge.sip2 import fields as F
from edge.sip2.replies import CURRENCY, DENIED, Reply, money, parse_money, refusal
from edge.store import CirculationRefused, Copy, Hold, Loan, Payment, Reader, Title, local_day

if TYPE_CHECKING:
    from edge.sip2.session import Handler, Session

logger = logging.getLogger(__name__)

# Items listed in one 64 answer at most (the kiosk pages with BP/BQ).
MAX_ITEMS_LISTED = 50
PAYMENT_TYPES = {"00": "cash", "01": "VISA", "02": "credit card"}


@dataclass
class Patron:
    """A card as a message names it: the reader, whether the PIN was right, and any refusal."""

    card: str
    reader: Reader | None
    pin_ok: bool | None        # None: no PIN was sent
    refusal: str | None        # why nothing may be done for this card now, or None
    blocked: str | None        # why the card is blocked (by the library, or by a self-check)


def check_patron(s: Session, req: codec.Request, need_pin: bool) -> Patron:
    """Look up the card of ``req`` and check its PIN (AD) if one was sent or is needed."""
    card = req.get("AA")
    reader = Reader.get_or_none(Reader.card == card) if card else None
    pin = req.get("AD")
    pin_ok: bool | None = None
    locked = None
    if reader is not None and pin:
        if s.verified == (card, pin):
            pin_ok = True
        else:
            try:
                pin_ok = s.store.verify_pin(card, pin)
            except CirculationRefused as exc:
                pin_ok, locked = False, exc.refusal.message
            s.verified = (card, pin) if pin_ok else None
    blocked = reader.blocked_reason if reader else None
    why = None
    if reader is None:
        why = "This card is not known here: please ask staff."
    elif locked:
        why = locked
    elif pin_ok is False:
        why = "Wrong PIN."
    elif need_pin and not pin_ok:
        why = "Please enter your PIN."
    return Patron(card, reader, pin_ok, why, blocked)


def status_flags(s: Session, p: Patron) -> str:
    """The 14-character patron status: what the node would refuse this reader."""
    if p.reader is None:
        return DENIED
    flags = [" "] * len(F.PATRON_STATUS)
    if p.blocked:
        flags[0:4] = ["Y"] * 4
    view = s.store.reader_view(p.card)
    policy = rules.policy_for(s.store.policies(), "book", p.reader.category)
    if view is not None and view.open_loans >= policy.max_items:
        flags[0] = flags[5] = "Y"
    return "".join(flags)


def _language(req: codec.Request) -> str:
    return req.fixed.get("language", "000")


def may_see(s: Session, p: Patron) -> bool:
    """May the kiosk show this reader's name and items: no wrong PIN, and one if required."""
    assert s.account is not None
    return p.reader is not None and p.pin_ok is not False and (
        p.pin_ok is True or not s.account.pin_required)


def _identity(s: Session, p: Patron, with_pin: bool = True) -> list[tuple[str, str]]:
    """AO, AA, AE (only when ``may_see``), BL and (when a PIN was sent) CQ."""
    name = p.reader.name if p.reader and may_see(s, p) else ""
    out = [("AO", s.institution()), ("AA", p.card), ("AE", name),
           ("BL", "Y" if p.reader else "N")]
    if with_pin and p.pin_ok is not None:
        out.append(("CQ", "Y" if p.pin_ok else "N"))
    return out


def _fees(p: Patron) -> list[tuple[str, str]]:
    owed = p.reader.fees_owed if p.reader else 0
    return [("BH", CURRENCY), ("BV", money(owed))] if owed > 0 else []


def _messages(p: Patron) -> list[str]:
    return [m for m in (p.refusal, f"Blocked: {p.blocked}" if p.blocked else None) if m]


def patron_status(s: Session, req: codec.Request) -> Reply:
    """23 Patron Status Request -> 24: may this card borrow here, and is its PIN right."""
    p = check_patron(s, req, need_pin=False)
    reply = Reply("24", {"patron status": status_flags(s, p), "language": _language(req),
                         "transaction date": s.date()}, _identity(s, p) + _fees(p))
    for m in _messages(p):
        reply.say(m)
    return reply


def patron_information(s: Session, req: codec.Request) -> Reply:
    """63 Patron Information -> 64: counts, and the one list the summary field asks for."""
    p = check_patron(s, req, need_pin=False)
    if not may_see(s, p):
        reply = refusal(s, "63", req.fields, p.refusal or "Please enter your PIN.")
        reply.fields = _identity(s, p)
        return reply.say(p.refusal or "Please enter your PIN.")
    assert p.reader is not None
    today = local_day(s.now())
    holds = list(Hold.select().where((Hold.reader == p.card) & (Hold.status != "picked_up"))
                 .order_by(Hold.id))
    ready = [h for h in holds if h.status == "ready"]
    waiting = [h for h in holds if h.status != "ready"]
    loans = list(Loan.select().where((Loan.reader == p.card) & Loan.returned_at.is_null())
                 .order_by(Loan.due, Loan.copy))
    overdue = [ln for ln in loans if ln.due < today]
    view = s.store.reader_view(p.card)
    charged = max(view.open_loans if view else 0, len(loans))
    owed = p.reader.fees_owed
    policy = rules.policy_for(s.store.policies(), "book", p.reader.category)
    counts = (len(ready), len(overdue), charged, 1 if owed else 0, 0, len(waiting))
    names = ("hold items count", "overdue items count", "charged items count",
             "fine items count", "recall items count", "unavailable holds count")
    fixed = {"patron status": status_flags(s, p), "language": _language(req),
             "transaction date": s.date(), **{n: f"{min(c, 9999):04d}" for n, c in
                                              zip(names, counts, strict=True)}}
    fields = _identity(s, p)
    fields.insert(3, ("CB", f"{policy.max_items:04d}"))
    fields += _fees(p)
    summary = req.fixed["summary"]
    wanted = summary.find("Y")
    lists: dict[int, tuple[str, list[str]]] = {
        0: ("AS", [h.copy or _title_name(h.title_id) for h in ready]),
        1: ("AT", [ln.copy for ln in overdue]),
        2: ("AU", [ln.copy for ln in loans]),
        3: ("AV", [f"{money(owed)} {CURRENCY} fees owed"] if owed else []),
        4: ("BU", []),
        5: ("CD", [_title_name(h.title_id) for h in waiting]),
    }
    if wanted in lists:
        fid, items = lists[wanted]
        start, end = _range(req, len(items))
        fields += [(fid, item) for item in items[start:end]]
    reply = Reply("64", fixed, fields)
    elsewhere = charged - len(loans)
    if elsewhere > 0:
        reply.say(f"{elsewhere} more item(s) on loan at other libraries of the network.")
    for m in _messages(p):
        reply.say(m)
    return reply


def _range(req: codec.Request, total: int) -> tuple[int, int]:
    """BP/BQ (1-based, inclusive) as a slice, at most MAX_ITEMS_LISTED long."""
    def number(fid: str, default: int) -> int:
        value = req.get(fid)
        return int(value) if value.isdigit() and value.isascii() else default

    start = max(1, number("BP", 1)) - 1
    end = min(number("BQ", total), total, start + MAX_ITEMS_LISTED)
    return start, max(start, end)


def _title_name(title_id: str) -> str:
    t = Title.get_or_none(Title.id == title_id)
    return t.title if t else title_id


def block_patron(s: Session, req: codec.Request) -> Reply:
    """01 Block Patron -> 24: block the card here at once, and everywhere once the cloud hears."""
    assert s.account is not None
    card = req.get("AA")
    if not card:
        return refusal(s, "01", req.fields, "A patron identifier is needed.")
    with s.store.writing():
        accounts.block(s.store, card, req.get("AL"), s.account.name,
                       req.fixed["card retained"] == "Y", s.now())
    s.node.notify()
    s.end_patron()
    p = check_patron(s, req, need_pin=False)
    reply = Reply("24", {"patron status": status_flags(s, p) if p.reader else DENIED,
                         "language": "000", "transaction date": s.date()},
                  _identity(s, p, with_pin=False) + _fees(p))
    return reply.say("This card is blocked: please ask staff.")


def patron_enable(s: Session, req: codec.Request) -> Reply:
    """25 Patron Enable -> 26: lift a block a self-check set (never one the library set)."""
    assert s.account is not None
    card = req.get("AA")
    with s.store.writing():
        lifted = accounts.lift_block(s.store, card, s.account.name)
    if lifted:
        s.node.notify()
    p = check_patron(s, req, need_pin=False)
    reply = Reply("26", {"patron status": status_flags(s, p), "language": "000",
                         "transaction date": s.date()}, _identity(s, p))
    if lifted:
        reply.say("The self-check block on this card is lifted.")
    if p.blocked:
        reply.say(f"Still blocked by the library: {p.blocked}")
    elif p.refusal:
        reply.say(p.refusal)
    return reply


def end_session(s: Session, req: codec.Request) -> Reply:
    """35 End Patron Session -> 36: forget the patron; always Y."""
    s.end_patron()
    return Reply("36", {"end session": "Y", "transaction date": s.date()},
                 [("AO", s.institution()), ("AA", req.get("AA"))]).say("Goodbye.")


def fee_paid(s: Session, req: codec.Request) -> Reply:
    """37 Fee Paid -> 38: record the payment (a ``fee.paid`` event), once per transaction id."""
    assert s.account is not None
    p = check_patron(s, req, need_pin=s.account.pin_required)

    def no(message: str) -> Reply:
        return refusal(s, "37", req.fields, message)

    if p.refusal:
        return no(p.refusal)
    currency = req.fixed["currency type"]
    if currency != CURRENCY:
        return no(f"Payments here are in {CURRENCY}, not {currency}.")
    amount = parse_money(req.get("BV"))
    if not amount:
        return no(f"{req.get('BV')!r} is not an amount.")
    fee_type, pay_type, txn = req.fixed["fee type"], req.fixed["payment type"], req.get("BK")
    kind = "service" if fee_type in F.SERVICE_FEE_TYPES else "fee"
    how = PAYMENT_TYPES.get(pay_type, f"payment type {pay_type}")
    description = (f"SIP2 {s.account.name}: fee type {fee_type}, {how}"
                   + (f", fee {req.get('CG')}" if req.get("CG") else "")
                   + (f", transaction {txn}" if txn else ""))[:200]
    with s.store.writing():
        earlier = Payment.get_or_none((Payment.reader == p.card)
                                      & (Payment.description == description)) if txn else None
        if earlier is None:
            pid, _ = s.store.take_payment(p.card, amount, kind, description)
        else:
            pid = earlier.id
            logger.info("sip2: payment %s for %s already recorded", txn, p.card)
    s.node.notify()
    left = Reader.get_by_id(p.card).fees_owed
    reply = Reply("38", {"payment accepted": "Y", "transaction date": s.date()},
                  [("AO", s.institution()), ("AA", p.card), ("BK", txn or pid)])
    reply.say(f"Paid {money(amount)} {CURRENCY}. Thank you.")
    if kind == "fee":
        reply.say(f"Still owed: {money(left)} {CURRENCY}." if left else "Nothing more owed.")
    return reply


def hold(s: Session, req: codec.Request) -> Reply:
    """15 Hold -> 16: place (+) or cancel (-) a reservation to collect here; report one held.

    The node cannot choose a copy (the cloud does, across the network): a new
    hold is "placed, waiting" here, a ``hold.requested`` event, until the cloud's
    feed says which copy is set aside. A cancellation is a ``hold.cancelled``.
    """
    assert s.account is not None
    p = check_patron(s, req, need_pin=s.account.pin_required)
    if p.refusal:
        return refusal(s, "15", req.fields, p.refusal)
    mode = req.fixed["hold mode"]
    if mode not in "+-*" or len(mode) != 1:
        return refusal(s, "15", req.fields, f"Hold mode {mode!r} is not +, - or *.")
    if mode == "*":
        return refusal(s, "15", req.fields,
                       "Reservations are changed in the online catalogue.")
    pickup = req.get("BS")
    if pickup and pickup not in (s.location, s.account.location, s.store.node_id):
        return refusal(s, "15", req.fields, "Reservations to collect elsewhere are placed in "
                                            "the online catalogue.")
    title = _title_for(req)
    if title is None:
        return refusal(s, "15", req.fields, "This title is not known here.")
    existing = Hold.get_or_none((Hold.reader == p.card) & (Hold.status != "picked_up")
                                & (Hold.title_id == title.id))
    if mode == "-":
        return _cancel_hold(s, req, p, title, existing)
    if existing is not None:
        ready = existing.status == "ready"
        return _hold_reply(s, req, p, title, existing, available=ready).say(
            "Your reservation is ready to collect here." if ready
            else "You already have this reservation: we will tell you when it is ready.")
    if p.blocked:
        return refusal(s, "15", req.fields, f"The card is blocked: {p.blocked}")
    with s.store.writing():
        placed = Hold.create(id=uuid.uuid4().hex, title_id=title.id, reader=p.card,
                             status="waiting")
        s.store.emit("hold.requested", {"hold_id": placed.id, "reader": p.card,
                                        "title": title.id, "pickup": s.store.node_id,
                                        "source": s.source()})
    s.node.notify()
    on_shelf = Copy.select().where(
        (Copy.title_id == title.id) & (Copy.here == True) & (Copy.on_loan == False)  # noqa: E712
        & Copy.barcode.not_in(Hold.select(Hold.copy).where(Hold.copy.is_null(False)))
    ).exists()
    return _hold_reply(s, req, p, title, placed, available=on_shelf).say(
        "Reserved: we will tell you when it is ready to collect here."
        + (" A copy is on the shelf here now." if on_shelf else ""))


def _hold_reply(s: Session, req: codec.Request, p: Patron, title: Title, h: Hold, *,
                available: bool) -> Reply:
    """A positive 16 about hold ``h``."""
    item = h.copy or req.get("AB")
    fields = ([("BW", s.day(h.expires))] if h.expires else []) + [
        ("BS", s.location or s.store.node_id), ("AO", s.institution()), ("AA", p.card),
        *([("AB", item)] if item else []), ("AJ", title.title)]
    return Reply("16", {"ok": "1", "available": "Y" if available else "N",
                        "transaction date": s.date()}, fields)


def _cancel_hold(s: Session, req: codec.Request, p: Patron, title: Title,
                 existing: Hold | None) -> Reply:
    """15 with hold mode "-": cancel the card's reservation of this title here."""
    if existing is None:
        return refusal(s, "15", req.fields, "There is no reservation of this title to cancel "
                                            "here.")
    with s.store.writing():
        Hold.delete().where(Hold.id == existing.id).execute()
        s.store.emit("hold.cancelled", {"hold_id": existing.id, "reader": p.card,
                                        "source": s.source()})
    s.node.notify()
    return _hold_reply(s, req, p, title, existing, available=False).say(
        "Your reservation is cancelled.")


def _title_for(req: codec.Request) -> Title | None:
    """The title a hold names: the item's (AB) or the title identifier's (AJ, id or name)."""
    if req.get("AB"):
        c = Copy.get_or_none(Copy.barcode == req.get("AB"))
        return Title.get_or_none(Title.id == c.title_id) if c and c.title_id else None
    if req.get("AJ"):
        return (Title.get_or_none(Title.id == req.get("AJ"))
                or Title.get_or_none(Title.title == req.get("AJ")))
    return None


HANDLERS: dict[str, Handler] = {
    "23": patron_status, "63": patron_information, "01": block_patron, "25": patron_enable,
    "35": end_session, "37": fee_paid, "15": hold,
}
