"""A vending machine's touch screen: the kiosk page and the JSON calls it makes.

The screen follows the card reader: the page asks ``/api/kiosk/session`` twice
a second what the node sees (no card, a card waiting for its PIN, a reader
whose PIN was right). A PIN typed right on the screen gives THIS browser a
token in its session cookie and tells the machine; a PIN typed on the
machine's own pad is taken as well. Only then may the screen (or the node's
``/api/checkout``, which asks ``pin_verified``) lend on that card. A visit ends
with "done", or by itself after ``IDLE_SECONDS`` without a touch.

The machine is reached only through what ``MachineService`` offers, read with
``getattr`` so the screen keeps working while that class grows.
"""
from __future__ import annotations

import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, current_app, make_response, render_template, request, session

from edge import circulation, i18n
from edge.store import (
    MAX_WRONG_PINS,
    CirculationRefused,
    Copy,
    EdgeStore,
    Hold,
    Reader,
    Title,
    library_tz,
    utcnow,
    zone_name,
)

logger = logging.getLogger(__name__)

# A visit with no touch for this long ends: the reader walked away and the next
# person must not borrow on their card. Shorter than the machine's own card
# session (machine.SESSION_SECONDS, 120 s), so the screen closes the visit first.
IDLE_SECONDS = 60.0
# Used only if the machine does not say how long its card sessions last.
MACHINE_SESSION_SECONDS = 120.0
# The receipt stays up this long unless the reader presses "done".
RECEIPT_SECONDS = 20
# How often the page asks what the card reader saw: a card feels noticed at once.
POLL_MS = 500
# How long the screen is told why the last visit ended (to say "session ended").
ENDED_NOTICE_SECONDS = 10.0
# Refusals about the reader rather than one copy: shown instead of the book list.
READER_REFUSALS = frozenset({"unknown_reader", "blocked", "limit", "offline_cap"})
PIN_RE = re.compile(r"^[0-9]{4,8}$")
BARCODE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

bp = Blueprint("kiosk", __name__)


# -- what the machine says about the card in its reader ---------------------------------

class _Anchor:
    """Compares equal only to an anchor of the very same object (a card session)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Anchor) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def presentation(machine: Any) -> tuple[str, Any] | None:
    """The card at the reader (PIN entered or not) and which presentation of it this is.

    MachineService makes a new session object each time a card is presented; its
    ``since`` moves with activity, so the object itself is the identity.
    """
    s = getattr(machine, "session", None)
    card = getattr(s, "card", None)
    if s is None or not isinstance(card, str):
        card = machine.card_in_session()
        return (card, None) if card else None
    since = getattr(s, "since", None)
    limit = getattr(getattr(machine, "t", None), "session_seconds", MACHINE_SESSION_SECONDS)
    if isinstance(since, float) and time.monotonic() - since >= limit:
        return None
    return (card, _Anchor(s))


def _machine_pin_ok(key: tuple[str, Any]) -> bool:
    """True if the machine itself holds this card's PIN as entered (on its pad, or by us)."""
    anchor = key[1]
    return isinstance(anchor, _Anchor) and getattr(anchor.obj, "pin_ok", False) is True


def _tell_machine_pin_ok(machine: Any, visit: Visit) -> None:
    """The PIN was right on the screen: the machine may now dispense to this card."""
    confirm = getattr(machine, "confirm_pin", None)
    if callable(confirm):
        confirm(visit.card)
        return
    anchor = visit.key[1]
    if isinstance(anchor, _Anchor) and hasattr(anchor.obj, "pin_ok"):
        anchor.obj.pin_ok = True
        anchor.obj.since = time.monotonic()


def _end_machine_session(machine: Any) -> None:
    end = getattr(machine, "end_session", None)
    if callable(end):
        end()


def _returns_open(machine: Any) -> bool | None:
    """False when the machine takes no returns now (bin full, chute closed); None if unknown."""
    reason = getattr(machine, "returns_closed_reason", None)
    if callable(reason):
        return reason() is None
    value = getattr(machine, "returns_open", None)
    return value if isinstance(value, bool) else None


def out_of_order_reason(machine: Any) -> str | None:
    """Why the machine cannot serve a reader now, or None when it can.

    ``offline``: the controller does not answer (the screen comes back by itself
    when it does); ``service``: a technician has the service door open;
    ``settling``: the controller is back and the node is settling what its last
    link left open (a few seconds). Each has a screen of its own.
    """
    if not machine.online:
        return "offline"
    controller = getattr(machine, "controller", None)
    if isinstance(controller, dict) and controller.get("door") == "open":
        return "service"
    if getattr(machine, "ready", True) is False:
        return "settling"
    return None


# -- the visit -----------------------------------------------------------------------------

@dataclass
class Visit:
    """One presentation of a card at the reader, as the screen follows it."""

    card: str
    key: tuple[str, Any]
    last_touch: float
    token: str | None = None  # set when the PIN was right on the screen; the cookie carries it
    busy: bool = False        # a dispense is under way: the visit may not time out


class KioskState:
    """Who stands at the screen: the card presented, and whether its PIN was right."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._visit: Visit | None = None
        self._ended: tuple[tuple[str, Any], str, float] | None = None  # (key, why, when)

    def current(self, machine: Any) -> Visit | None:
        """The visit going on now, or None; ends it if it has been idle too long."""
        key = presentation(machine)
        now = time.monotonic()
        with self._lock:
            if key is None or (self._ended and self._ended[0] == key):
                self._visit = None
                return None
            v = self._visit
            if v is None or v.key != key:
                v = self._visit = Visit(key[0], key, now)
            if v.busy or now - v.last_touch <= self.idle_seconds:
                return v
            logger.info("kiosk: visit of %s ended, no touch for %.0f s", v.card,
                        self.idle_seconds)
            self._ended, self._visit = (v.key, "timeout", now), None
        _end_machine_session(machine)
        return None

    def ended_reason(self, machine: Any) -> str | None:
        """Why the last visit ended ("done", "timeout"), while that is news."""
        ended = self._ended
        if ended is None or time.monotonic() - ended[2] > ENDED_NOTICE_SECONDS:
            return None
        key = presentation(machine)
        return ended[1] if key is None or key == ended[0] else None

    def idle_left(self, v: Visit) -> float:
        """Seconds before ``v`` times out."""
        return max(0.0, self.idle_seconds - (time.monotonic() - v.last_touch))

    def touch(self, v: Visit) -> None:
        """The reader did something: the visit goes on."""
        v.last_touch = time.monotonic()

    def end(self, v: Visit, why: str) -> None:
        """End ``v``: its card is not offered again until it is presented anew."""
        with self._lock:
            self._ended = (v.key, why, time.monotonic())
            if self._visit is v:
                self._visit = None

    @contextmanager
    def busy(self, v: Visit) -> Iterator[None]:
        """Hold the visit open while the machine dispenses."""
        v.busy = True
        try:
            yield
        finally:
            v.busy = False
            self.touch(v)


def init_app(app: Flask) -> None:
    """Register the kiosk page and its API, with the state of this machine's screen."""
    app.extensions["kitap.kiosk"] = KioskState(
        float(app.config.get("KIOSK_IDLE_SECONDS", IDLE_SECONDS)))
    app.register_blueprint(bp)


def _store() -> EdgeStore:
    store: EdgeStore = current_app.extensions["kitap.store"]
    return store


def _machine() -> Any:
    return current_app.extensions.get("kitap.machine")


def _state() -> KioskState:
    state: KioskState = current_app.extensions["kitap.kiosk"]
    return state


def _verified(v: Visit) -> bool:
    sent = session.get("kiosk")
    by_screen = bool(v.token and isinstance(sent, str) and hmac.compare_digest(v.token, sent))
    if by_screen:
        return True
    # The machine's pad took the PIN: only for a card that has one ("no PIN needed" is not it).
    if _machine_pin_ok(v.key):
        r = Reader.get_or_none(Reader.card == v.card)
        return bool(r and r.pin_hash)
    return False


def pin_verified(card: str) -> bool:
    """True if ``card``'s PIN was entered right at this machine (on the screen, in this
    browser, or on the machine's pad) during the visit still going on."""
    machine, state = _machine(), current_app.extensions.get("kitap.kiosk")
    if machine is None or state is None:
        return False
    v = state.current(machine)
    return v is not None and v.card == card and _verified(v)


def _fail(status: int, code: str, message: str = "", **params: Any) -> Any:
    return {"code": code, "message": message, "params": params}, status


def _json_body() -> dict[str, Any] | None:
    # JSON only: a form posted from another site cannot reach these calls.
    body = request.get_json(silent=True) if request.is_json else None
    return body if isinstance(body, dict) else None


def _info() -> dict[str, Any]:
    """The staff corner: node, link, how fresh the node's knowledge is."""
    fresh = _store().freshness()
    sync = current_app.extensions.get("kitap.sync")
    return {"node": _store().node_id, "online": bool(sync and sync.connected),
            "age_seconds": fresh["age_seconds"], "feed_rev": fresh["feed_rev"]}


# -- the page and its calls ------------------------------------------------------------------

@bp.get("/kiosk")
def page() -> Any:
    """The touch-screen page, full-screen at the machine."""
    default = current_app.config.get("KIOSK_LANG", i18n.DEFAULT)
    lang = i18n.pick(accept_header=False, default=default)
    config = {"pollMs": POLL_MS, "receiptSeconds": RECEIPT_SECONDS, "lang": lang,
              "defaultLang": default, "tz": zone_name()}
    resp = make_response(render_template(
        "kiosk.html", lang=lang, t=lambda key, **kw: i18n.t(key, lang, **kw),
        langs=i18n.NAMES, strings=i18n.strings(lang), config=config,
        node=_store().node_id))
    return i18n.remember(resp, lang)


@bp.get("/api/kiosk/session")
def kiosk_session() -> Any:
    """What the screen should show now: idle, pin, locked, unknown_card, no_pin, ready,
    out_of_order (with its ``reason``: offline, service, settling), no_machine."""
    machine = _machine()
    info = _info()
    if machine is None:
        return {"state": "no_machine", "info": info}
    reason = out_of_order_reason(machine)
    if reason is not None:
        return {"state": "out_of_order", "reason": reason,
                "returns_open": _returns_open(machine), "info": info}
    state = _state()
    v = state.current(machine)
    if v is None:
        return {"state": "idle", "ended": state.ended_reason(machine),
                "returns_open": _returns_open(machine), "info": info}
    out: dict[str, Any] = {"info": info, "idle_left": round(state.idle_left(v)),
                           "card_hint": "…" + v.card[-4:]}
    r = Reader.get_or_none(Reader.card == v.card)
    now = utcnow()
    if r is None:
        return {**out, "state": "unknown_card"}
    if r.locked_until and r.locked_until > now:
        return {**out, "state": "locked",
                "minutes": math.ceil((r.locked_until - now).total_seconds() / 60)}
    if _verified(v):
        return {**out, "state": "ready", "name": r.name}
    if not r.pin_hash:
        return {**out, "state": "no_pin"}
    return {**out, "state": "pin", "attempts_left": MAX_WRONG_PINS - r.wrong_pins}


@bp.post("/api/kiosk/pin")
def kiosk_pin() -> Any:
    """Check the PIN typed on the screen for the card in the reader."""
    machine, body = _machine(), _json_body()
    if machine is None:
        return _fail(404, "no_machine")
    if body is None or not isinstance(body.get("pin"), str) or not PIN_RE.match(body["pin"]):
        return _fail(422, "bad_pin", "The PIN is 4 to 8 digits.")
    state = _state()
    v = state.current(machine)
    if v is None:
        return _fail(409, "no_card", "Present your card at the reader first.")
    state.touch(v)
    try:
        ok = _store().verify_pin(v.card, body["pin"])
    except CirculationRefused as exc:
        return _fail(423, exc.refusal.code, exc.refusal.message)
    r = Reader.get_or_none(Reader.card == v.card)
    if r is None:
        return _fail(404, "unknown_reader", "This card is not known here.")
    if ok:
        v.token = secrets.token_urlsafe(16)
        session["kiosk"] = v.token
        _tell_machine_pin_ok(machine, v)
        logger.info("kiosk: PIN right for %s", v.card)
        return {"ok": True, "name": r.name}
    if r.locked_until and r.locked_until > utcnow():
        logger.warning("kiosk: card %s locked after %d wrong PINs", v.card, MAX_WRONG_PINS)
        minutes = math.ceil((r.locked_until - utcnow()).total_seconds() / 60)
        return _fail(423, "pin_locked", "Too many wrong PINs.", minutes=minutes)
    return _fail(403, "wrong_pin", "Wrong PIN.", attempts_left=MAX_WRONG_PINS - r.wrong_pins)


def _verified_visit() -> Visit | None:
    machine = _machine()
    if machine is None:
        return None
    v = _state().current(machine)
    return v if v is not None and _verified(v) else None


def _candidates() -> list[Copy]:
    """Copies sitting in this machine's slots, not lent."""
    return list(Copy.select().where((Copy.here == True) & (Copy.on_loan == False)  # noqa: E712
                                    & Copy.slot.is_null(False)).order_by(Copy.slot))


def available_books(card: str, copies: list[Copy],
                    allowed: set[str] | None = None) -> list[dict[str, Any]]:
    """What ``card`` may take of ``copies``: their own reservations first, then one entry
    per title; copies held for other readers (or not in ``allowed``) are left out."""
    held = {h.copy: h.reader for h in Hold.select(Hold.copy, Hold.reader).where(
        Hold.copy.is_null(False) & (Hold.status != "picked_up"))}
    titles = {t.id: t for t in Title.select().where(
        Title.id.in_({c.title_id for c in copies if c.title_id}))}
    mine: list[dict[str, Any]] = []
    free: dict[str, dict[str, Any]] = {}
    for c in copies:
        holder = held.get(c.barcode)
        if (holder is not None and holder != card) or (allowed is not None
                                                       and c.barcode not in allowed):
            continue
        t = titles.get(c.title_id)
        item = {"copy": c.barcode, "title": t.title if t else c.barcode,
                "author": t.author if t else "", "title_id": c.title_id,
                "reserved": holder == card, "count": 1}
        group = c.title_id or c.barcode
        if holder == card:
            mine.append(item)
        elif group in free:
            free[group]["count"] += 1
        else:
            free[group] = item
    return mine + sorted(free.values(), key=lambda b: (b["title"].casefold(), b["copy"]))


def _refusal_params(code: str, card: str, barcode: str | None) -> dict[str, Any]:
    """The figures a reader needs to understand a refusal (the screen words it)."""
    store = _store()
    reader = store.reader_view(card)
    if code == "blocked" and reader is not None:
        return {"reason": reader.blocked_reason or ""}
    if code == "limit" and reader is not None:
        copy = store.copy_view(barcode) if barcode else None
        policy = circulation.policy_for(store.policies(), copy.item_type if copy else "book",
                                        reader.category)
        return {"n": reader.open_loans, "max": policy.max_items}
    if code == "offline_cap":
        return {"h": math.floor(store.offline_hours()), "max": store.offline_cap().max_loans}
    return {}


def _reader_refusal(card: str, copies: list[Copy]) -> circulation.Refusal | None:
    """A refusal about the reader (blocked, limit, offline cap), whatever book they chose.

    The rules name the first reason; a copy held for someone else says nothing about
    the reader, so the probe moves on to the next copy until one tells.
    """
    store = _store()
    for c in copies:
        refusal = store.check_checkout(card, c.barcode)
        if refusal is None or refusal.code in READER_REFUSALS:
            return refusal
    reader = store.reader_view(card)
    if reader is not None and reader.blocked_reason:
        return circulation.Refusal("blocked", reader.blocked_reason)
    return None


@bp.get("/api/kiosk/books")
def kiosk_books() -> Any:
    """The books the reader at the screen may take here, or why they may take none."""
    v = _verified_visit()
    if v is None:
        return _fail(403, "pin_required", "Enter the card's PIN first.")
    _state().touch(v)
    store, machine = _store(), _machine()
    copies = _candidates()
    refusal = _reader_refusal(v.card, copies)
    if refusal is not None:
        probe = copies[0].barcode if copies else None
        return {"refusal": {"code": refusal.code, "message": refusal.message,
                            "params": _refusal_params(refusal.code, v.card, probe)}}
    # The machine knows what this document does not: slots out of order, its own rules.
    offer = getattr(machine, "offer", None)
    allowed = {o["copy"] for o in offer(v.card)} if callable(offer) else None
    reader = store.reader_view(v.card)
    policy = circulation.policy_for(store.policies(), "book",
                                    reader.category if reader else "*")
    r = Reader.get_or_none(Reader.card == v.card)
    return {"books": available_books(v.card, copies, allowed), "name": r.name if r else "",
            "loans": reader.open_loans if reader else 0, "max": policy.max_items}


@bp.post("/api/kiosk/checkout")
def kiosk_checkout() -> Any:
    """Dispense the chosen copy to the reader at the screen; answers when it was taken."""
    body = _json_body()
    if body is None or not isinstance(body.get("copy"), str) \
            or not BARCODE_RE.match(body["copy"]):
        return _fail(422, "bad_copy", "Choose a book from the list.")
    v = _verified_visit()
    if v is None:
        return _fail(403, "pin_required", "Enter the card's PIN first.")
    state, machine = _state(), _machine()
    try:
        with state.busy(v):
            result = machine.checkout(v.card, body["copy"])
    except CirculationRefused as exc:
        code = exc.refusal.code
        return _fail(409, code, exc.refusal.message,
                     **_refusal_params(code, v.card, body["copy"]))
    sync = current_app.extensions.get("kitap.sync")
    if sync is not None:
        sync.poke()
    reader = Reader.get_or_none(Reader.card == v.card)
    copy = Copy.get_or_none(Copy.barcode == result.copy)
    title = Title.get_or_none(Title.id == copy.title_id) if copy and copy.title_id else None
    return {"loan_id": result.loan_id, "copy": result.copy, "due": result.due.isoformat(),
            "title": result.title or result.copy, "author": title.author if title else "",
            "reader": reader.name if reader else "", "card_hint": "…" + v.card[-4:],
            "node": _store().node_id, "seq": result.seq,
            "time": datetime.now(library_tz()).isoformat(timespec="seconds")}


@bp.post("/api/kiosk/touch")
def kiosk_touch() -> Any:
    """The reader touched the screen: keep the visit open."""
    machine = _machine()
    v = _state().current(machine) if machine is not None else None
    if v is not None:
        _state().touch(v)
    return {"ok": v is not None}


@bp.post("/api/kiosk/end")
def kiosk_end() -> Any:
    """The reader is done (or walked away): end the visit, forget the PIN and the card."""
    machine, body = _machine(), _json_body() or {}
    why = body.get("reason") if body.get("reason") in ("done", "timeout", "cancel") else "done"
    v = _state().current(machine) if machine is not None else None
    session.pop("kiosk", None)
    if v is not None:
        _state().end(v, why)
        _end_machine_session(machine)
    return {"ok": True}
