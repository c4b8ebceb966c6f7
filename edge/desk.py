"""A branch's desk: the staff page, and the one read-only call of its own (the desk journal).

Everything the desk does goes through the node's JSON API (``edge.web``) with
the staff session and its CSRF token, so the page and an integration decide by
the same rules. The node is local, so the desk works with no link at all; the
page shows the link and the outbox so staff know what has not reached the
cloud yet.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Final

from flask import Blueprint, Flask, current_app, make_response, render_template, request

from edge import i18n
from edge.auth import require_staff
from edge.store import Copy, EdgeStore, Outbox, Reader, Title, zone_name

logger = logging.getLogger(__name__)

CATEGORIES: Final = ("adult", "child", "student", "pensioner", "partner_staff", "supported")
# The journal shows this many of the node's latest events: a shift's worth at a
# busy desk, and still one small query.
JOURNAL_ROWS: Final = 30
# How often the page refreshes the link/outbox chips (ms).
STATUS_POLL_MS: Final = 4000
# Events a librarian recognises on the journal; others (device faults) are left out.
JOURNAL_TYPES: Final = ("loan.checkout", "loan.return", "loan.renew", "hold.picked_up",
                        "fee.paid", "reader.registered", "service.booked", "service.cancelled",
                        "service.attended", "service.paid", "membership.sold")
# The pages need nothing from elsewhere (the node is offline-first): say so to the browser.
CSP: Final = ("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
              "base-uri 'none'; form-action 'self'")

bp = Blueprint("desk", __name__)


def init_app(app: Flask) -> None:
    """Register the desk page and its journal call."""
    app.register_blueprint(bp)
    app.after_request(_page_headers)


def _page_headers(response: Any) -> Any:
    """The kiosk and desk pages may not be framed or load anything from outside the node."""
    if request.path in ("/desk", "/kiosk"):
        strict_headers(response)
    return response


def strict_headers(response: Any) -> Any:
    """A page of the node's own: nothing from elsewhere, no framing, no referrer."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _store() -> EdgeStore:
    store: EdgeStore = current_app.extensions["kitap.store"]
    return store


@bp.get("/desk")
def page() -> Any:
    """The staff page: login, then circulation at this branch."""
    lang = i18n.pick()
    config = {"statusPollMs": STATUS_POLL_MS, "kind": current_app.config["NODE_KIND"],
              "lang": lang, "tz": zone_name()}
    resp = make_response(render_template(
        "desk.html", lang=lang, t=lambda key, **kw: i18n.t(key, lang, **kw),
        langs=i18n.NAMES, strings=i18n.strings(lang), config=config,
        node=_store().node_id, categories=CATEGORIES))
    return i18n.remember(resp, lang)


def journal(limit: int = JOURNAL_ROWS) -> list[dict[str, Any]]:
    """The node's latest circulation events, newest first, and whether the cloud has them."""
    rows = list(Outbox.select(Outbox.seq, Outbox.type, Outbox.envelope, Outbox.acked)
                .where(Outbox.type.in_(JOURNAL_TYPES))
                .order_by(Outbox.seq.desc()).limit(limit))
    out: list[dict[str, Any]] = []
    bodies = [(r, json.loads(r.envelope)) for r in rows]
    barcodes = {env["body"].get("copy") for _, env in bodies if env["body"].get("copy")}
    title_of = {c.barcode: c.title_id for c in Copy.select(Copy.barcode, Copy.title_id)
                .where(Copy.barcode.in_(barcodes))}
    titles = {t.id: t.title for t in Title.select(Title.id, Title.title)
              .where(Title.id.in_({v for v in title_of.values() if v}))}
    cards = {env["body"].get("reader") or env["body"].get("card") for _, env in bodies}
    names = {r.card: r.name for r in Reader.select(Reader.card, Reader.name)
             .where(Reader.card.in_({c for c in cards if c}))}
    for r, env in bodies:
        body = env["body"]
        card = body.get("reader") or body.get("card")
        copy = body.get("copy")
        out.append({"seq": r.seq, "type": r.type, "ts": env.get("ts"), "acked": bool(r.acked),
                    "copy": copy, "title": titles.get(title_of.get(copy)) if copy else None,
                    "card": card, "name": names.get(card) if card else None,
                    "due": body.get("due"), "amount": body.get("amount") or body.get("paid"),
                    "kind": body.get("kind")})
    return out


@bp.get("/api/desk/journal")
@require_staff
def desk_journal() -> Any:
    """What this node did lately (newest first), each marked sent to the cloud or waiting."""
    return {"events": journal(), "outbox_depth": _store().outbox_depth()}
