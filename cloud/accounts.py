"""Who may use the cloud's pages: staff logins with roles, readers' card-and-PIN logins,
online pre-registration, and the renewals a reader (or staff) makes from the cloud.

Staff passwords are werkzeug scrypt hashes. Reader PINs are the PBKDF2 hashes
the nodes write (``pbkdf2$iterations$salt$hex``, as ``edge.store.hash_pin``):
the check is copied here so the cloud does not import the edge's store.
Failed logins are counted per key in the database (``LoginThrottle``), so every
cloud process behind a load balancer throttles the same guesser.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from werkzeug.security import check_password_hash, generate_password_hash

from cloud import feed, flags
from cloud import store as s
from edge import circulation  # pure rules (no I/O): the same renewal rules as at the desk

ROLES = ("administrator", "operator", "branch_staff")
RANK = {"branch_staff": 1, "operator": 2, "administrator": 3}
CATEGORIES = ("adult", "child", "student", "pensioner", "partner_staff", "supported")
# A staff password guards the whole network's readers: longer than a desk's.
MIN_PASSWORD = 10
# Staff: 5 failures, then a 5-minute pause (typos pass, guessing does not).
STAFF_MAX_FAILED, STAFF_PAUSE = 5, timedelta(minutes=5)
# Readers: as at a machine, 3 wrong PINs lock the card for 15 minutes (10,000 PINs).
READER_MAX_FAILED, READER_PAUSE = 3, timedelta(minutes=15)
# One address trying many cards is guessing too.
ADDRESS_MAX_FAILED, ADDRESS_PAUSE = 20, timedelta(minutes=15)
PIN_ITERATIONS = 2_000  # as edge/store.py: the lockout is the real protection
# Pre-registration codes: no 0/O or 1/I to misread at the desk.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
# Staff extensions are bounded: past two months it is a different loan.
MAX_EXTEND_DAYS = 60


class AuthError(Exception):
    """A login refused: ``code`` is wrong | locked | disabled; ``retry_after`` in seconds."""

    def __init__(self, code: str, retry_after: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


class AccountError(Exception):
    """A request about an account refused, with a stable ``code`` for the page's words."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


# -- PINs (the nodes' format) -----------------------------------------------------------

def hash_pin(pin: str, salt: str | None = None) -> str:
    """A salted PBKDF2 hash of a PIN, as ``pbkdf2$iterations$salt$hex``."""
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), PIN_ITERATIONS).hex()
    return f"pbkdf2${PIN_ITERATIONS}${salt}${digest}"


def check_pin(pin: str, stored: str) -> bool:
    """True if ``pin`` matches a ``hash_pin`` value."""
    try:
        _, iterations, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt.encode(), int(iterations)).hex()
    except ValueError:
        return False
    return hmac.compare_digest(got, digest)


# -- throttling ---------------------------------------------------------------------------

def _locked_for(key: str, now: datetime) -> int:
    row = s.LoginThrottle.get_or_none(s.LoginThrottle.key == key)
    if row is None or row.locked_until is None or row.locked_until <= now:
        return 0
    return max(1, int((row.locked_until - now).total_seconds()))


def _fail(key: str, now: datetime, most: int, pause: timedelta) -> None:
    with s.db.atomic():
        s.LoginThrottle.insert(key=key, failures=0).on_conflict_ignore().execute()
        row = s.LoginThrottle.get(s.LoginThrottle.key == key)
        failures = row.failures + 1
        if failures >= most:
            s.LoginThrottle.update(failures=0, locked_until=now + pause).where(
                s.LoginThrottle.key == key).execute()
        else:
            s.LoginThrottle.update(failures=failures).where(s.LoginThrottle.key == key).execute()


def _succeed(key: str) -> None:
    s.LoginThrottle.delete().where(s.LoginThrottle.key == key).execute()


# -- staff -------------------------------------------------------------------------------

def add_staff(username: str, password: str, role: str, branch: str | None = None,
              name: str = "") -> s.StaffUser:
    """Create a staff login or reset its password, role and branch."""
    if role not in ROLES:
        raise AccountError("role", f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise AccountError("password", f"a password needs at least {MIN_PASSWORD} characters")
    if not username or len(username) > 64 or not username.replace("-", "").replace(
            "_", "").replace(".", "").isalnum():
        raise AccountError("username", "a user name is letters, digits, '.', '-' or '_'")
    if role == "branch_staff":
        node = s.Node.get_or_none(s.Node.id == (branch or ""))
        if node is None:
            raise AccountError("branch", "branch staff need the node of their branch")
    else:
        branch = None
    row = {"username": username, "name": name or username, "role": role, "branch": branch,
           "password_hash": generate_password_hash(password), "created_at": s.utcnow(),
           "disabled": False}
    with s.db.atomic():
        s.upsert(s.StaffUser, [row], [s.StaffUser.username])
    user: s.StaffUser = s.StaffUser.get(s.StaffUser.username == username)
    return user


def set_disabled(username: str, disabled: bool) -> None:
    """Switch a staff login off (kept for the audit trail) or on again."""
    if not s.StaffUser.update(disabled=disabled).where(
            s.StaffUser.username == username).execute():
        raise AccountError("unknown", f"no staff login {username}")


def staff_login(username: str, password: str, now: datetime | None = None) -> s.StaffUser:
    """The staff member if the password is right; AuthError otherwise."""
    now = now or s.utcnow()
    key = f"staff:{username.lower()}"
    wait = _locked_for(key, now)
    if wait:
        raise AuthError("locked", wait)
    user = s.StaffUser.get_or_none(s.StaffUser.username == username)
    # Hash even for an unknown name, so the time taken does not tell which names exist.
    stored = user.password_hash if user else _DUMMY_HASH
    if user is None or not check_password_hash(stored, password):
        _fail(key, now, STAFF_MAX_FAILED, STAFF_PAUSE)
        raise AuthError("wrong")
    if user.disabled:
        raise AuthError("disabled")
    _succeed(key)
    s.StaffUser.update(last_login_at=now).where(s.StaffUser.username == username).execute()
    return user


_DUMMY_HASH = generate_password_hash("not a real password")


def outranks(role: str, needed: str) -> bool:
    """True if ``role`` may do what ``needed`` may."""
    return RANK.get(role, 0) >= RANK[needed]


# -- readers -----------------------------------------------------------------------------

def reader_login(card: str, pin: str, address: str = "", now: datetime | None = None
                 ) -> s.Reader:
    """The reader if card and PIN match; AuthError (wrong or locked) otherwise."""
    now = now or s.utcnow()
    card = card.strip().upper()
    keys = [f"reader:{card}"] + ([f"addr:{address}"] if address else [])
    wait = max(_locked_for(k, now) for k in keys)
    if wait:
        raise AuthError("locked", wait)
    reader = s.Reader.get_or_none(s.Reader.card == card)
    if reader is None or not reader.pin_hash or not check_pin(pin, reader.pin_hash):
        _fail(keys[0], now, READER_MAX_FAILED, READER_PAUSE)
        if address:
            _fail(keys[1], now, ADDRESS_MAX_FAILED, ADDRESS_PAUSE)
        raise AuthError("wrong")
    _succeed(keys[0])
    return reader


def _code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def pre_register(*, name: str, contact: str, category: str, birth_year: int | None,
                 branch: str, pin: str, lang: str) -> s.PreRegistration:
    """Keep an application to join; the reader brings its code to ``branch``."""
    if category not in CATEGORIES:
        raise AccountError("category")
    node = s.Node.get_or_none(s.Node.id == branch)
    if node is None or node.kind != "branch":
        raise AccountError("branch")
    if not (pin.isdigit() and len(pin) == 4):
        raise AccountError("pin")
    with s.db.atomic():
        code = _code()
        while s.PreRegistration.get_or_none(s.PreRegistration.id == code) is not None:
            code = _code()
        row: s.PreRegistration = s.PreRegistration.create(
            id=code, name=name.strip(), contact=contact.strip(), category=category,
            birth_year=birth_year, branch=branch, pin_hash=hash_pin(pin), lang=lang,
            created_at=s.utcnow())
    return row


def complete_preregistration(code: str, card: str, by: str) -> s.Reader:
    """The branch issued a card: the applicant becomes a reader of the whole network."""
    card = card.strip().upper()
    if not (4 <= len(card) <= 32 and card.replace("-", "").isalnum()):
        raise AccountError("card")
    with feed.transaction():
        pre = s.PreRegistration.get_or_none(s.PreRegistration.id == code)
        if pre is None or pre.status != "pending":
            raise AccountError("not_pending")
        if s.Reader.get_or_none(s.Reader.card == card) is not None:
            raise AccountError("card_taken")
        reader: s.Reader = s.Reader.create(
            card=card, name=pre.name, category=pre.category, pin_hash=pre.pin_hash,
            registered_at=pre.branch, contact=pre.contact or None)
        pre.status, pre.card, pre.completed_by, pre.completed_at = (
            "completed", card, by, s.utcnow())
        pre.save()
        feed.reader_changed(card)
    return reader


def cancel_preregistration(code: str, by: str) -> None:
    """Drop an application nobody will complete."""
    if not s.PreRegistration.update(status="cancelled", completed_by=by,
                                    completed_at=s.utcnow()).where(
            (s.PreRegistration.id == code) & (s.PreRegistration.status == "pending")).execute():
        raise AccountError("not_pending")


# -- renewals from the cloud -------------------------------------------------------------

@dataclass(frozen=True)
class Renewal:
    """A due date moved."""

    loan_id: str
    old_due: date
    new_due: date


def renewals_used(loan_id: str) -> int:
    """Renewals of a loan so far: at any node, and online."""
    at_nodes = s.Event.select().where((s.Event.type == "loan.renew")
                                      & s.Event.body.contains(loan_id)).count()
    online = s.LoanExtension.select().where((s.LoanExtension.loan == loan_id)
                                            & (s.LoanExtension.kind == "renew")).count()
    return int(at_nodes + online)


def renew(card: str, loan_id: str, today: date, *, by: str | None = None,
          extend_days: int | None = None) -> Renewal:
    """Renew a reader's open loan by the rules, or (``extend_days``) extend it as staff.

    Loans are not in the change feed: the cloud's due date is the one notices and
    fines follow; the node that lent the copy keeps its own until the copy is back.
    """
    with s.db.atomic():
        loan = s.Loan.get_or_none((s.Loan.id == loan_id) & (s.Loan.reader == card))
        if loan is None or loan.returned_at is not None:
            raise AccountError("unknown_loan")
        reader = s.Reader.get(s.Reader.card == card)
        copy = s.Copy.get_or_none(s.Copy.barcode == loan.copy)
        title = s.Title.get_or_none(s.Title.id == copy.title_id) if copy else None
        old = loan.due
        if extend_days is not None:
            if not 1 <= extend_days <= MAX_EXTEND_DAYS:
                raise AccountError("days")
            new = max(old, today) + timedelta(days=extend_days)
            kind = "extend"
        else:
            policy = circulation.policy_for(flags.policy_table(),
                                            title.item_type if title else "book",
                                            reader.category)
            waiting = s.Hold.select().where(
                (s.Hold.title_id == (title.id if title else "")) & (s.Hold.reader != card)
                & s.Hold.status.in_(["waiting", "ready"])).count()
            view = circulation.ReaderView(card, reader.category, reader.blocked_reason)
            refusal = circulation.check_renew(view, policy, renewals_used(loan_id), waiting)
            if refusal is not None:
                raise AccountError(refusal.code, refusal.message)
            new = circulation.renewed_due(policy, today, old)
            kind = "renew"
        s.Loan.update(due=new).where(s.Loan.id == loan_id).execute()
        s.LoanExtension.create(loan=loan_id, reader=card, kind=kind, by=by or f"reader:{card}",
                               old_due=old, new_due=new, at=s.utcnow())
    return Renewal(loan_id, old, new)
