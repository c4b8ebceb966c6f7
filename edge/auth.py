"""Who may act at a node's desk: staff sessions (with CSRF) and integration tokens.

A branch's mutating API is open only to a logged-in staff member (session
cookie plus the ``X-CSRF-Token`` header the page got at login) or to a caller
with the node's API token (``Authorization: Bearer ...``; the demo and the
tests use one). Passwords are stored with werkzeug's scrypt hash; failed logins
are throttled per user name.
"""
from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request, session
from flask_smorest import abort
from werkzeug.security import check_password_hash, generate_password_hash

from edge.store import Staff, db

F = TypeVar("F", bound=Callable[..., Any])

# Failed logins per user name before a pause, and the pause: enough for typos,
# far too few for guessing.
MAX_FAILED_LOGINS = 5
LOGIN_PAUSE = 60.0
ROLES = ("librarian", "manager")

_failed: dict[str, tuple[int, float]] = {}
_failed_lock = threading.Lock()


def add_staff(username: str, password: str, role: str = "librarian") -> None:
    """Create or reset a staff account at this node."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("a staff password needs at least 8 characters")
    with db.atomic():
        Staff.insert(username=username, password_hash=generate_password_hash(password),
                     role=role).on_conflict_replace().execute()


def login(username: str, password: str) -> dict[str, Any]:
    """Check a staff login; returns the session's facts or aborts 401/429 with a reason."""
    now = time.monotonic()
    with _failed_lock:
        count, until = _failed.get(username, (0, 0.0))
        if until > now:
            abort(429, message=f"Too many failed logins: try again in {until - now:.0f} s.")
    staff = Staff.get_or_none(Staff.username == username)
    # Hash even for an unknown user, so timing does not tell which names exist.
    stored = staff.password_hash if staff else generate_password_hash("x")
    if not check_password_hash(stored, password) or staff is None:
        with _failed_lock:
            count += 1
            _failed[username] = (0, now + LOGIN_PAUSE) if count >= MAX_FAILED_LOGINS \
                else (count, 0.0)
        abort(401, message="Wrong user name or password.")
    with _failed_lock:
        _failed.pop(username, None)
    session.clear()
    session["staff"] = staff.username
    session["role"] = staff.role
    session["csrf"] = secrets.token_urlsafe(24)
    return {"username": staff.username, "role": staff.role, "csrf": session["csrf"]}


def _same(sent: str, expected: str) -> bool:
    """Constant-time comparison of a header with a secret (any characters, never an error)."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def current_staff() -> str | None:
    """The staff member of this request (session or token), or None."""
    token = current_app.config.get("API_TOKEN")
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and _same(header[7:], token):
        return "api-token"
    staff = session.get("staff")
    if staff and request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("X-CSRF-Token", "")
        if not _same(sent, session.get("csrf", "")):
            return None
    return str(staff) if staff else None


def require_staff(fn: F) -> F:
    """Refuse the request with 401 unless a staff member makes it."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_staff() is None:
            abort(401, message="Staff login required (or the node's API token).")
        return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
