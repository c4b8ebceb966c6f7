"""Self-check kiosk accounts and kiosk-set blocks, in the node's own SQLite file.

Each kiosk logs in (SIP2 93) with its own user id and password (hashed with
werkzeug, like staff passwords) and carries its own settings: the institution
and location it answers with, which messages it may send, whether check-ins
raise alerts for the sorter, its character set and its sort bins. A block set
by a kiosk (01 Block Patron) is written on the reader's row (``blocked_by`` =
``kiosk``) and told to the cloud, which blocks the card everywhere; it is kept
here too, as this node's journal of who blocked which card and whether the
kiosk kept it (``kitap sip2-account blocks``). 25 Patron Enable (or staff) lifts it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from peewee import BooleanField, CharField, DateTimeField, TextField
from werkzeug.security import check_password_hash, generate_password_hash

from edge.sip2 import fields as F
from edge.sip2.codec import CHARSETS
from edge.store import BaseModel, EdgeStore, Reader, db, utcnow

logger = logging.getLogger(__name__)

# The messages a kiosk may send unless its account says otherwise: all we
# support. 93 (login), 99 (status) and 97 (resend) are always allowed.
SUPPORTED = ("23", "63", "11", "09", "17", "29", "65", "35", "37", "15", "01", "25")
ALWAYS = ("93", "99", "97")
# A self-check password: long enough not to be guessed over a LAN.
MIN_PASSWORD = 8
# Failed logins per kiosk name before a pause, and the pause (as for staff logins).
MAX_FAILED_LOGINS = 5
LOGIN_PAUSE = 60.0
SORT_KINDS = ("shelf", "hold", "transfer")

_failed: dict[str, tuple[int, float]] = {}
_failed_lock = threading.Lock()


class Sip2Account(BaseModel):
    """A self-check kiosk or sorter allowed to speak SIP2 to this node."""

    name = CharField(primary_key=True)            # its login user id (CN)
    password_hash = CharField()
    institution = CharField()                     # AO in every answer
    location = CharField(default="")              # AN / AP: where it stands
    library_name = CharField(default="")          # AM in 98
    allowed = CharField(default=",".join(SUPPORTED))
    alerts = BooleanField(default=True)           # check-in alerts (CV, CT, CY, DA)
    charset = CharField(default="utf-8")          # utf-8 | cp850
    pin_policy = CharField(default="optional")  # required | optional (AD)
    utc_dates = BooleanField(default=False)       # dates in UTC ("   Z") instead of local time
    sort_bins = TextField(default="")             # e.g. "hold=1,transfer=2,shelf=3" (CL)
    # 98's on-line status: "link" says N while the branch has no link to the cloud
    # (the choice); "always" says Y, for kiosks that stop serving on N.
    online_status = CharField(default="link")
    enabled = BooleanField(default=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "sip2_account"


class Sip2Block(BaseModel):
    """A card blocked by a kiosk (01 Block Patron) at this node."""

    card = CharField(primary_key=True)
    reason = TextField()
    kiosk = CharField()
    card_retained = BooleanField(default=False)
    blocked_at = DateTimeField()

    class Meta:
        table_name = "sip2_block"


TABLES = [Sip2Account, Sip2Block]


@dataclass(frozen=True)
class Account:
    """A kiosk's settings, as a session uses them."""

    name: str
    institution: str
    location: str
    library_name: str
    allowed: frozenset[str]
    alerts: bool
    charset: str
    pin_required: bool
    utc_dates: bool
    sort_bins: dict[str, str]
    report_link: bool

    def supported_messages(self) -> str:
        """The 98 message's BX field: Y for every message this kiosk may send."""
        may = self.allowed | set(ALWAYS)
        return "".join("Y" if code in may else "N" for code in F.BX_ORDER)


def init_tables() -> None:
    """Create this module's tables in the node's database (idempotent)."""
    db.create_tables(TABLES, safe=True)


def _account(row: Sip2Account) -> Account:
    bins = dict(part.split("=", 1) for part in row.sort_bins.split(",") if "=" in part)
    return Account(row.name, row.institution, row.location, row.library_name,
                   frozenset(c for c in row.allowed.split(",") if c), row.alerts,
                   row.charset, row.pin_policy == "required", row.utc_dates, bins,
                   row.online_status == "link")


def add_account(name: str, password: str, *, institution: str, location: str = "",
                library_name: str = "", allowed: list[str] | None = None, alerts: bool = True,
                charset: str = "utf-8", pin_policy: str = "optional",
                utc_dates: bool = False, sort_bins: dict[str, str] | None = None,
                online_status: str = "link") -> Account:
    """Create a kiosk account, or replace one of that name; ValueError with the reason."""
    if not name or len(name) > F.MAX_IDENT or "|" in name:
        raise ValueError("a kiosk name has 1 to 64 characters and no '|'")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a kiosk password needs at least {MIN_PASSWORD} characters")
    if not institution or len(institution) > F.MAX_IDENT or "|" in institution:
        raise ValueError("an institution id has 1 to 64 characters and no '|'")
    if charset not in CHARSETS:
        raise ValueError(f"charset must be one of {', '.join(CHARSETS)}")
    if pin_policy not in ("required", "optional"):
        raise ValueError("pin_policy must be 'required' or 'optional'")
    if online_status not in ("link", "always"):
        raise ValueError("online_status must be 'link' or 'always'")
    codes = list(SUPPORTED) if allowed is None else allowed
    unknown = sorted(set(codes) - set(SUPPORTED))
    if unknown:
        raise ValueError(f"messages not supported here: {', '.join(unknown)} "
                         f"(supported: {', '.join(SUPPORTED)})")
    bins = sort_bins or {}
    if set(bins) - set(SORT_KINDS):
        raise ValueError(f"sort bins are named {', '.join(SORT_KINDS)}")
    if any(not v or len(v) > F.MAX_IDENT or set(v) & set("|,=") for v in bins.values()):
        raise ValueError("a sort bin is 1 to 64 characters without '|', ',' or '='")
    row = dict(name=name, password_hash=generate_password_hash(password),
               institution=institution, location=location, library_name=library_name,
               allowed=",".join(c for c in SUPPORTED if c in codes), alerts=alerts,
               charset=charset, pin_policy=pin_policy, utc_dates=utc_dates,
               sort_bins=",".join(f"{k}={v}" for k, v in bins.items()),
               online_status=online_status, enabled=True,
               created_at=utcnow())
    with db.atomic():
        Sip2Account.insert(**row).on_conflict_replace().execute()
    return _account(Sip2Account.get_by_id(name))


def remove_account(name: str) -> bool:
    """Delete a kiosk account; True if there was one."""
    with db.atomic():
        return bool(Sip2Account.delete().where(Sip2Account.name == name).execute())


def list_accounts() -> list[Account]:
    """Every kiosk account, by name."""
    return [_account(r) for r in Sip2Account.select().order_by(Sip2Account.name)]


def check_login(name: str, password: str, peer: str = "") -> Account | None:
    """The kiosk's account if the user id and password are right; None otherwise.

    Failures are throttled per name AND address, so guessing from one machine
    pauses that machine, not the real kiosk.
    """
    now = time.monotonic()
    key = f"{name}@{peer}"
    with _failed_lock:
        count, until = _failed.get(key, (0, 0.0))
        if until > now:
            logger.warning("sip2 login for %r refused: paused after failed logins", name)
            return None
    row = Sip2Account.get_or_none(Sip2Account.name == name)
    # Hash even for an unknown name, so timing does not tell which names exist.
    stored = row.password_hash if row else generate_password_hash("x")
    if row is None or not row.enabled or not check_password_hash(stored, password):
        with _failed_lock:
            count += 1
            _failed[key] = (0, now + LOGIN_PAUSE) if count >= MAX_FAILED_LOGINS \
                else (count, 0.0)
        return None
    with _failed_lock:
        _failed.pop(key, None)
    return _account(row)


# -- kiosk blocks ------------------------------------------------------------------

def kiosk_block(card: str) -> Sip2Block | None:
    """The kiosk-set block on ``card`` at this node, if any."""
    return Sip2Block.get_or_none(Sip2Block.card == card)


BY_KIOSK = "kiosk"   # Reader.blocked_by for a block a self-check set (as in the cloud)


def block(store: EdgeStore, card: str, reason: str, kiosk: str, card_retained: bool,
          now: datetime) -> str:
    """Block a card (inside ``store.writing()``) and tell the cloud; returns the reason text.

    The reason is written on the reader's row (unless the library blocked the
    card already), so the desk and the machines here refuse it at once; the
    ``reader.blocked`` event makes the cloud block it everywhere.
    """
    text = f"blocked at self-check {kiosk}: {reason or 'no reason given'}"[:200]
    Sip2Block.insert(card=card, reason=text, kiosk=kiosk, card_retained=card_retained,
                     blocked_at=now).on_conflict_replace().execute()
    Reader.update(blocked_reason=text, blocked_by=BY_KIOSK).where(
        (Reader.card == card) & Reader.blocked_reason.is_null()).execute()
    store.emit("reader.blocked", {"card": card, "reason": text, "source": source(kiosk),
                                  "card_retained": card_retained}, now)
    logger.warning("card %s %s", card, text)
    return text


def lift_block(store: EdgeStore, card: str, by: str) -> bool:
    """Lift a block a self-check set, here or elsewhere (never the library's); tell the cloud.

    Inside ``store.writing()``; ``by`` is who (a kiosk's name, or staff).
    True if there was one.
    """
    row = kiosk_block(card)
    reader = Reader.get_or_none(Reader.card == card)
    by_kiosk = reader is not None and reader.blocked_reason is not None and (
        reader.blocked_by == BY_KIOSK or (row is not None and reader.blocked_reason == row.reason))
    if row is None and not by_kiosk:
        return False
    Sip2Block.delete().where(Sip2Block.card == card).execute()
    if by_kiosk:
        Reader.update(blocked_reason=None, blocked_by=None).where(Reader.card == card).execute()
    store.emit("reader.unblocked", {"card": card, "source": source(by)})
    logger.info("card %s: self-check block lifted by %s", card, by)
    return True


def source(who: str) -> str:
    """Who did it, as the node's events say (``source``): ``sip2:<kiosk login>``."""
    return f"sip2:{who}"[:F.MAX_IDENT]


def list_blocks() -> list[Sip2Block]:
    """Every kiosk-set block at this node, newest first."""
    return list(Sip2Block.select().order_by(Sip2Block.blocked_at.desc()))
