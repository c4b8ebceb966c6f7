"""Item messages: 11 checkout, 09 check-in, 17 item information, 29 renew, 65 renew all.

Every change is one ``EdgeStore`` call, the same the desk's API makes: the
rules decide, the loan and its event commit together in the outbox, and the
sync agent is woken. Two things only a self-check does: a *no-block*
transaction (``no block`` = Y) was already done by the kiosk while it could
not reach us, so it is recorded at the kiosk's own date and not refused
(physical truth wins); and a check-in tells the sorter where the copy goes.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from edge import routing
from edge.sip2 import codec
from edge.sip2 import fields as F
from edge.sip2.patron import check_patron
from edge.sip2.replies import Reply, refusal
from edge.store import CirculationRefused, Copy, Hold, Loan, LoanResult, Title, library_tz

if TYPE_CHECKING:
    from edge.sip2.session import Handler, Session

logger = logging.getLogger(__name__)


def open_loan(barcode: str) -> Loan | None:
    """The open loan of a copy known here, newest first."""
    loan: Loan | None = (Loan.select().where((Loan.copy == barcode) & Loan.returned_at.is_null())
                         .order_by(Loan.checked_out_at.desc()).first())
    return loan


def _title(barcode: str) -> Title | None:
    c = Copy.get_or_none(Copy.barcode == barcode)
    return Title.get_or_none(Title.id == c.title_id) if c and c.title_id else None


def _media(title: Title | None) -> str:
    return F.MEDIA_TYPES.get(title.item_type, F.MEDIA_OTHER) if title else F.MEDIA_OTHER


def _loan_reply(s: Session, code: str, card: str, barcode: str, title: str | None,
                due: str, *, renewal: bool, desensitize: str, txn: str = "") -> Reply:
    """A positive 12 or 30."""
    fields = [("AO", s.institution()), ("AA", card), ("AB", barcode), ("AJ", title or ""),
              ("AH", due), ("CK", _media(_title(barcode)))]
    if txn:
        fields.append(("BK", txn))
    return Reply(code, {"ok": "1", "renewal ok": "Y" if renewal else "N", "magnetic media": "U",
                        "desensitize": desensitize, "transaction date": s.date()}, fields)


# -- 11 checkout --------------------------------------------------------------------

def checkout(s: Session, req: codec.Request) -> Reply:
    """11 Checkout -> 12: lend the copy by the node's rules (or record a no-block checkout)."""
    assert s.account is not None
    card, barcode = req.get("AA"), req.get("AB")
    if not card or not barcode:
        return refusal(s, "11", req.fields, "A patron and an item identifier are needed.")
    if req.get("BI") == "Y":
        return _cancel_checkout(s, req, card, barcode)
    if req.fixed["no block"] == "Y":
        return _offline_checkout(s, req, card, barcode)
    p = check_patron(s, req, need_pin=s.account.pin_required)
    why = p.refusal or (f"The card is blocked: {p.blocked}" if p.blocked else None)
    if why:
        return refusal(s, "11", req.fields, why)
    loan = open_loan(barcode)
    if loan is not None and loan.reader == card:
        if req.fixed["SC renewal policy"] != "Y":
            return refusal(s, "11", req.fields, "This item is already on loan to you.")
        return _renew_loan(s, req, "12", loan)
    try:
        result = s.store.checkout(card, barcode, source=s.source())
    except CirculationRefused as exc:
        return refusal(s, "11", req.fields, exc.refusal.message)
    s.node.notify()
    return _loan_reply(s, "12", card, barcode, result.title, s.day(result.due), renewal=False,
                       desensitize="Y", txn=result.loan_id).say(f"Due back {result.due:%d.%m.%Y}.")


def _offline_checkout(s: Session, req: codec.Request, card: str, barcode: str) -> Reply:
    """A checkout the kiosk did while it could not reach us: record it at its own date."""
    when, moved = s.kiosk_time(req.fixed["transaction date"])
    with s.store.writing():
        loan = open_loan(barcode)
        if loan is not None and loan.reader == card:
            # Sent before (a kiosk uploads its offline queue again): already recorded.
            result = LoanResult(loan.id, barcode, card, loan.due, 0, None)
        else:
            if loan is not None:
                # The copy was on loan to someone else here, yet the kiosk lent it from the
                # shelf: it came back unseen. Close that loan first (a loan.return).
                s.store.checkin(barcode, happened_at=when, source=s.source())
            # The rules are not asked: the book already left with the reader. The store
            # takes a checkout whose rules were settled elsewhere by its intent id (as a
            # machine's dispense), which here is just the new loan's id.
            result = s.store.checkout(card, barcode, intent_id=uuid.uuid4().hex,
                                      happened_at=when, source=s.source())
    s.node.notify()
    nb_due = req.fixed["nb due date"]
    if nb_due.strip() and nb_due[:8] != f"{result.due:%Y%m%d}":
        logger.info("sip2: offline checkout of %s: kiosk said due %s, the rules say %s",
                    barcode, nb_due[:8], result.due)
    title = _title(barcode)
    return _loan_reply(s, "12", card, barcode, title.title if title else None,
                       s.day(result.due), renewal=False, desensitize="Y",
                       txn=result.loan_id).say(
        f"Recorded the checkout of {when.astimezone(library_tz()):%d.%m.%Y %H:%M}: "
        f"due back {result.due:%d.%m.%Y}.").say(moved)


def _cancel_checkout(s: Session, req: codec.Request, card: str, barcode: str) -> Reply:
    """11 with cancel = Y: the kiosk could not finish (e.g. the tag stayed on); undo the loan."""
    loan = open_loan(barcode)
    if loan is None or loan.reader != card:
        return refusal(s, "11", req.fields, "There is no checkout of this item to cancel.")
    s.store.checkin(barcode, source=s.source())
    s.node.notify()
    title = _title(barcode)
    return Reply("12", {"ok": "1", "renewal ok": "N", "magnetic media": "U",
                        "desensitize": "N", "transaction date": s.date()},
                 [("AO", s.institution()), ("AA", card), ("AB", barcode),
                  ("AJ", title.title if title else ""), ("AH", "")]).say(
        "The checkout is cancelled.")


# -- 09 check-in --------------------------------------------------------------------

def checkin(s: Session, req: codec.Request) -> Reply:
    """09 Checkin -> 10: take any copy back, and tell the sorter where it goes next."""
    assert s.account is not None
    barcode = req.get("AB")
    if not barcode:
        return refusal(s, "09", req.fields, "An item identifier is needed.")
    if req.get("BI") == "Y":
        return _cancel_checkin(s, req, barcode)
    when, moved = None, ""
    if req.fixed["no block"] == "Y":
        given = req.fixed["return date"]
        when, moved = s.kiosk_time(given if given.strip() else req.fixed["transaction date"])
    result = s.store.checkin(barcode, happened_at=when, source=s.source())
    s.node.notify()
    route = result.route
    c = Copy.get_or_none(Copy.barcode == barcode)
    title = _title(barcode)
    bin_kind = SORT_KIND[route.kind]
    alert = s.account.alerts and route.kind != routing.SHELF
    # AQ, the permanent location: the copy's home if the feed said, else here if it is ours.
    home = (c.home_node if c else None) or (
        s.store.node_id if route.kind != routing.UNKNOWN else "")
    fields = [("AO", s.institution()), ("AB", barcode), ("AQ", home),
              ("AJ", title.title if title else "")]
    if bin_kind in s.account.sort_bins:
        fields.append(("CL", s.account.sort_bins[bin_kind]))
    if result.reader is not None:
        fields.append(("AA", result.reader))
    fields.append(("CK", _media(title)))
    if alert:
        fields += _alert_fields(s, route)
    reply = Reply("10", {"ok": "1", "resensitize": "Y", "magnetic media": "U",
                         "alert": "Y" if alert else "N", "transaction date": s.date()}, fields)
    return reply.say(_checkin_message(route)).say(moved)


# The sort bin (an account's --sort-bin) each route goes to.
SORT_KIND = {routing.SHELF: "shelf", routing.HOLD_HERE: "hold",
             routing.HOLD_ELSEWHERE: "transfer", routing.HOME: "transfer",
             routing.UNKNOWN: "transfer"}


def _alert_fields(s: Session, route: routing.Route) -> list[tuple[str, str]]:
    """CV (alert type), CT (destination), CY/DA (the hold's reader) for a route."""
    if route.kind == routing.HOLD_HERE:
        out = [("CV", F.ALERT_HOLD_HERE), ("CT", s.location or s.store.node_id)]
        if route.reader:
            out += [("CY", route.reader), ("DA", route.reader_name)]
        return out
    if route.kind == routing.HOLD_ELSEWHERE:
        return [("CV", F.ALERT_HOLD_ELSEWHERE), ("CT", route.to or "")]
    return [("CV", F.ALERT_TRANSFER), *([("CT", route.to)] if route.to else [])]


def _checkin_message(route: routing.Route) -> str:
    if route.kind == routing.HOLD_HERE:
        return "Reserved for a reader: put it on the hold shelf here."
    if route.kind == routing.HOLD_ELSEWHERE:
        return f"Reserved for a reader at {route.to}: send it there."
    if route.kind == routing.HOME:
        return f"This item belongs to {route.to}: send it there."
    if route.kind == routing.UNKNOWN:
        return "This item is not known here: put it in the transfer bin for staff."
    return "Thank you: the item is returned."


def _cancel_checkin(s: Session, req: codec.Request, barcode: str) -> Reply:
    """09 with cancel = Y: the return did not finish; the copy goes back to its last reader."""
    last = (Loan.select().where((Loan.copy == barcode) & Loan.returned_at.is_null(False))
            .order_by(Loan.returned_at.desc()).first())
    if last is None or open_loan(barcode) is not None:
        return refusal(s, "09", req.fields, "There is no check-in of this item to cancel.")
    # The reader still has the book: re-lend it as a fact, not as a new decision.
    s.store.checkout(last.reader, barcode, intent_id=uuid.uuid4().hex, source=s.source())
    s.node.notify()
    title = _title(barcode)
    return Reply("10", {"ok": "1", "resensitize": "N", "magnetic media": "U", "alert": "N",
                        "transaction date": s.date()},
                 [("AO", s.institution()), ("AB", barcode), ("AQ", s.store.node_id),
                  ("AJ", title.title if title else ""), ("AA", last.reader)]).say(
        "The check-in is cancelled.")


# -- 17 item information ----------------------------------------------------------------

def item_information(s: Session, req: codec.Request) -> Reply:
    """17 Item Information -> 18: where the copy is, as this node knows it."""
    barcode = req.get("AB")
    c = Copy.get_or_none(Copy.barcode == barcode)
    if c is None:
        return refusal(s, "17", req.fields, "This item is not known here.")
    loan = open_loan(barcode)
    held = Hold.get_or_none((Hold.copy == barcode) & (Hold.status != "picked_up"))
    title = _title(barcode)
    if loan is not None:
        status = F.CIRC_CHARGED
    elif held is not None and c.here:
        status = F.CIRC_ON_HOLD_SHELF
    elif c.transit_to:
        status = F.CIRC_IN_TRANSIT       # checked in here, or pulled, for another node
    elif c.here:
        status = F.CIRC_AVAILABLE
    else:
        status = F.CIRC_OTHER
    fields: list[tuple[str, str]] = []
    if title is not None:
        fields.append(("CF", str(title.holds_waiting)))
    if loan is not None:
        fields.append(("AH", s.day(loan.due)))
    if held is not None and held.expires:
        fields.append(("CM", s.day(held.expires)))
    fields += [("AB", barcode), ("AJ", title.title if title else ""), ("BG", s.institution()),
               ("CK", _media(title))]
    if c.home_node or c.here or loan is not None:
        fields.append(("AQ", c.home_node or s.store.node_id))
    if c.here:
        fields.append(("AP", s.location or s.store.node_id))
    reply = Reply("18", {"circulation status": status, "security marker": F.SECURITY_OTHER,
                         "fee type": F.FEE_TYPE_OTHER, "transaction date": s.date()}, fields)
    return reply.say(f"On its way to {c.transit_to}." if status == F.CIRC_IN_TRANSIT else "")


# -- 29 renew, 65 renew all -----------------------------------------------------------------

def renew(s: Session, req: codec.Request) -> Reply:
    """29 Renew -> 30: renew a loan made here, by the node's rules."""
    assert s.account is not None
    card = req.get("AA")
    no_block = req.fixed["no block"] == "Y"
    p = check_patron(s, req, need_pin=s.account.pin_required and not no_block)
    why = p.refusal or (f"The card is blocked: {p.blocked}" if p.blocked else None)
    if why and not no_block:
        return refusal(s, "29", req.fields, why)
    loan = _loan_to_renew(req, card)
    if loan is None:
        return refusal(s, "29", req.fields, "No loan of this item to this card is known here "
                                            "(renew loans made elsewhere in your online account).")
    if not no_block:
        return _renew_loan(s, req, "30", loan)
    when, moved = s.kiosk_time(req.fixed["transaction date"])
    return _renew_loan(s, req, "30", loan, happened_at=when).say(moved)


def _loan_to_renew(req: codec.Request, card: str) -> Loan | None:
    if req.get("AB"):
        loan = open_loan(req.get("AB"))
        if loan is not None and (loan.reader == card or req.fixed["third party allowed"] == "Y"):
            return loan
        return None
    wanted = req.get("AJ")
    if not wanted:
        return None
    mine = [ln for ln in Loan.select().where((Loan.reader == card) & Loan.returned_at.is_null())
            if (t := _title(ln.copy)) is not None and wanted in (t.id, t.title)]
    return mine[0] if len(mine) == 1 else None


def _renew_loan(s: Session, req: codec.Request, code: str, loan: Loan,
                happened_at: datetime | None = None) -> Reply:
    """Renew ``loan``; the answer to 29 (30) or to a checkout of an item already lent (12).

    A no-block renewal (``happened_at``) was done and told to the reader by the
    kiosk: it is recorded at its date, not refused.
    """
    try:
        result = s.store.renew(loan.id, happened_at=happened_at, source=s.source(),
                               check_rules=happened_at is None)
    except CirculationRefused as exc:
        reply = refusal(s, "29" if code == "30" else "11", req.fields, exc.refusal.message)
        reply.fields = [(f, loan.copy if f == "AB" else s.day(loan.due) if f == "AH" else v)
                        for f, v in reply.fields]
        return reply
    s.node.notify()
    return _loan_reply(s, code, loan.reader, loan.copy, result.title, s.day(result.due),
                       renewal=True, desensitize="U" if code == "30" else "Y",
                       txn=loan.id).say(f"Renewed: due back {result.due:%d.%m.%Y}.")


def renew_all(s: Session, req: codec.Request) -> Reply:
    """65 Renew All -> 66: try to renew every loan of the card made here."""
    assert s.account is not None
    card = req.get("AA")
    p = check_patron(s, req, need_pin=s.account.pin_required)
    why = p.refusal or (f"The card is blocked: {p.blocked}" if p.blocked else None)
    if why:
        return refusal(s, "65", req.fields, why)
    renewed: list[str] = []
    refused: dict[str, str] = {}
    for loan in Loan.select().where((Loan.reader == card) & Loan.returned_at.is_null()).order_by(
            Loan.due, Loan.copy):
        try:
            s.store.renew(loan.id, source=s.source())
            renewed.append(loan.copy)
        except CirculationRefused as exc:
            refused[loan.copy] = exc.refusal.message
    if renewed:
        s.node.notify()
    reply = Reply("66", {"ok": "1", "renewed count": f"{min(len(renewed), 9999):04d}",
                         "unrenewed count": f"{min(len(refused), 9999):04d}",
                         "transaction date": s.date()},
                  [("AO", s.institution()), *[("BM", c) for c in renewed],
                   *[("BN", c) for c in refused]])
    reply.say(f"Renewed {len(renewed)}, not renewed {len(refused)}.")
    for copy, why in refused.items():
        reply.say(f"{copy}: {why}")
    return reply


HANDLERS: dict[str, Handler] = {
    "11": checkout, "09": checkin, "17": item_information, "29": renew, "65": renew_all,
}
