"""What the console's and the catalogue's pages share: language, CSRF, the busy-database
notice, the session secret, security headers and the formatting filters.

A write from a page runs in ``writing()``: on SQLite a request waits at most
``WEB_BUSY_TIMEOUT_MS`` for the write lock (ingest may hold it for a big batch),
on PostgreSQL at most as long for a row lock. If it cannot get it, nothing is
changed, the visitor is told so, and for ``BUSY_NOTICE_S`` every page of this
process says it is read-only and greys out its buttons. Reads never wait (WAL).
"""
from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from peewee import InterfaceError, OperationalError

from cloud import feed, fines, i18n, settings
from cloud import store as s

# How long a web request waits for a lock before telling the visitor "busy":
# long enough for an ingest batch, short enough that nobody clicks twice.
WEB_BUSY_TIMEOUT_MS = 2500
# After a write found the database busy, pages say "read-only" this long.
BUSY_NOTICE_S = 30.0
SECRET_SETTING = "cloud.session_secret"  # noqa: S105 - the key's name, not a secret

_busy_until = 0.0


class Busy(Exception):
    """A write could not get the database in time; nothing was changed."""


def mark_busy() -> None:
    """Pages of this process show the read-only notice for a while."""
    global _busy_until
    _busy_until = time.monotonic() + BUSY_NOTICE_S


def busy() -> bool:
    """True while the read-only notice is up."""
    return time.monotonic() < _busy_until


def clear_busy() -> None:
    """Take the notice down (a write went through)."""
    global _busy_until
    _busy_until = 0.0


@contextmanager
def writing() -> Iterator[None]:
    """One write from a page, with its feed changes; a locked database raises Busy."""
    try:
        with feed.transaction():
            yield
    except OperationalError as exc:
        if s.is_lock_error(exc):
            mark_busy()
            raise Busy(str(exc)) from exc
        raise
    clear_busy()


def busy_words(exc: OperationalError) -> str:
    """What to tell someone whose sign-in found the database busy (re-raises anything else).

    A sign-in writes (the failed-attempts count, or clearing it), so it waits
    for the lock like any change; right and wrong PINs both do, so a busy
    database tells a guesser nothing.
    """
    if not s.is_lock_error(exc):
        raise exc
    mark_busy()
    return tr("busy.failed")


# -- CSRF ---------------------------------------------------------------------------------

def csrf_token() -> str:
    """This session's token for forms (made on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def check_csrf() -> None:
    """Refuse a POST whose form does not carry this session's token."""
    if request.method != "POST":
        return
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        abort(400, description="csrf")


def csrf_field() -> Markup:
    """The hidden input every form carries."""
    return Markup('<input type="hidden" name="csrf" value="%s">') % csrf_token()


# -- formatting ---------------------------------------------------------------------------

def lang() -> str:
    """The request's language (picked once per request)."""
    if "lang" not in g:
        g.lang = i18n.pick()
    return str(g.lang)


def tr(key: str, **params: Any) -> str:
    """``key`` in the request's language."""
    return i18n.t(key, lang(), **params)


def ago(value: datetime | None) -> str:
    """How long ago, in words of the request's language."""
    if value is None:
        return i18n.t("w.never", lang())
    age = i18n.ago((s.utcnow() - value).total_seconds(), lang())
    return i18n.t("w.ago", lang(), age=age)


def local(value: datetime | None, fmt: str = "%d.%m.%Y %H:%M") -> str:
    """An instant in the library's time zone."""
    if value is None:
        return "—"
    return value.astimezone(settings.library_tz()).strftime(fmt)


def day(value: date | datetime | None) -> str:
    """A calendar day in the request's language."""
    return i18n.day(value, lang())


def money(tiyn: int | None) -> str:
    """An amount in tenge, as readers read it."""
    return fines.tenge(int(tiyn or 0))


def page_url(**changes: Any) -> str:
    """This page's URL with some query arguments changed (for filters and paging)."""
    args = {**request.args.to_dict(), **{k: v for k, v in changes.items()}}
    args = {k: v for k, v in args.items() if v not in (None, "")}
    return url_for(request.endpoint or "", **(request.view_args or {}), **args)


def local_path(url: str, prefix: str = "/") -> bool:
    """True for a path on this site under ``prefix``."""
    # //host and /\host are other sites to a browser (it reads a backslash as a slash).
    return url.startswith(prefix) and not url.startswith(("//", "/\\")) and "\\" not in url


def back(default: str) -> Response:
    """Redirect to the page the form was on (same site only), else ``default``."""
    ref = request.form.get("next") or ""
    return redirect(ref if local_path(ref) else default)  # type: ignore[return-value]


def int_arg(name: str, default: int | None = None, lo: int = 0, hi: int = 10**9
            ) -> int | None:
    """A whole-number query argument within bounds, else ``default``."""
    try:
        return max(lo, min(hi, int(request.args.get(name, ""))))
    except ValueError:
        return default


# -- the app ------------------------------------------------------------------------------

def _secret() -> str:
    with s.db.atomic():
        s.Setting.insert(key=SECRET_SETTING, value=secrets.token_hex(32)).on_conflict_ignore(
        ).execute()
    return settings.get(SECRET_SETTING)


def init_app(app: Flask) -> None:
    """Session secret, per-request lock timeout, language, headers, error pages."""
    if not app.config.get("SECRET_KEY"):
        # Shared by every cloud process through the database, so a session made
        # by one is valid at the others.
        app.config["SECRET_KEY"] = _secret()
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)

    @app.before_request
    def _lock_timeout() -> None:
        if request.endpoint == "static":
            return
        if s.is_postgres():
            s.db.execute_sql(f"SET lock_timeout = {WEB_BUSY_TIMEOUT_MS}")
        else:
            s.db.execute_sql(f"PRAGMA busy_timeout = {WEB_BUSY_TIMEOUT_MS}")

    @app.teardown_request
    def _close(exc: BaseException | None) -> None:
        if not s.db.is_closed() and not s.db.in_transaction():
            s.db.close()

    @app.after_request
    def _headers(response: Response) -> Response:
        if request.blueprint in ("console", "catalogue"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            if "lang" in g:
                i18n.remember(response, g.lang)
        return response

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"t": tr, "lang": lang(), "langs": i18n.NAMES, "csrf_field": csrf_field,
                "busy": busy(), "ago": ago, "local": local, "day": day, "money": money,
                "page_url": page_url}



def install(bp: Blueprint) -> None:
    """CSRF checks and error pages for one of our blueprints (the API keeps flask-smorest's).

    Called once, when the blueprint is made: Flask refuses handlers added to a
    blueprint after an app registered it, and tests make several apps.
    """
    bp.before_request(check_csrf)

    @bp.errorhandler(Busy)
    def _busy(exc: Busy) -> Response:
        flash(tr("busy.failed"), "bad")
        home = url_for("console.index" if request.blueprint == "console"
                       else "catalogue.search")
        nxt = request.form.get("next") or request.referrer or ""
        if nxt.startswith(request.host_url):
            nxt = "/" + nxt[len(request.host_url):]
        return redirect(nxt if local_path(nxt) else home, 303)  # type: ignore[return-value]

    def _down(exc: Exception) -> Any:
        mark_busy()
        return render_template("down.html"), 503

    bp.register_error_handler(OperationalError, _down)
    bp.register_error_handler(InterfaceError, _down)

    @bp.errorhandler(400)
    def _bad(exc: Any) -> Any:
        key = "err.csrf" if getattr(exc, "description", "") == "csrf" else "err.notfound"
        return render_template("error.html", message=tr(key), code=400), 400

    @bp.errorhandler(403)
    def _forbidden(exc: Any) -> Any:
        return render_template("error.html", message=tr("err.forbidden"), code=403), 403

    @bp.errorhandler(404)
    def _missing(exc: Any) -> Any:
        return render_template("error.html", message=tr("err.notfound"), code=404), 404
