"""One kiosk's SIP2 conversation: login, status, resend, and every message onto the node's store.

A ``Session`` is sans-IO too: ``handle(bytes)`` returns the bytes to send
back (or None). It never raises: a message it cannot parse gets 96 (bad
checksum), a refusal saying why (bad fields, not allowed, refused by the
rules, or a fault of ours), or no answer at all (an unknown command). The
circulation itself is done by the node's ``EdgeStore``, the same calls the
desk's API makes, so a kiosk's checkout is a ``loan.checkout`` in the same
outbox, decided by the same rules.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta

from edge.sip2 import accounts, circulation, codec, patron
from edge.sip2 import fields as F
from edge.sip2.accounts import ALWAYS, Account
from edge.sip2.replies import Reply, refusal
from edge.store import EdgeStore, library_tz, utcnow

logger = logging.getLogger(__name__)

# 98's timeout period (tenths of a second) and retries: a self-check should
# wait 5 s for an answer (a checkout commits to disk in milliseconds) and try
# three times before it gives up on a message.
TIMEOUT_PERIOD = "050"
RETRIES_ALLOWED = "003"
# Wrong logins on one connection before it is closed.
MAX_LOGIN_TRIES = 3
# A kiosk's store-and-forward (no-block) date is believed at most this far back: kiosks
# hold offline transactions for hours or days, not weeks, and one whose clock reset to
# 2000 must not make a loan decades overdue. The cloud bounds reported times the same
# way (cloud.max_report_delay_days, also 14).
MAX_KIOSK_DELAY = timedelta(days=14)
# A kiosk clock ahead of the node's by less than this is ordinary drift: taken as now
# without a word; more is worth telling staff at the kiosk.
KIOSK_CLOCK_SLACK = timedelta(minutes=2)
# Unanswerable messages in a row (unknown commands) before the connection is closed.
MAX_BAD_IN_A_ROW = 10

Handler = Callable[["Session", codec.Request], Reply]
HANDLERS: dict[str, Handler] = {**patron.HANDLERS, **circulation.HANDLERS}


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


@dataclass
class Node:
    """What sessions need from the node: its store, its link state, a way to wake the sync."""

    store: EdgeStore
    link_up: Callable[[], bool] = _never
    notify: Callable[[], None] = _nothing
    default_charset: str = "utf-8"                 # until a login says which one
    on_login: Callable[[Session], None] = field(default=lambda s: None)
    # Answer 99 SC Status before a login (some RFID gates poll it first); off: such a
    # connection is closed, as the standard wants a login first.
    status_before_login: bool = False
    # Each kiosk's last request and its answer, kept across its connections: a kiosk
    # that reconnects and sends its checkout again gets the same answer, not a second go.
    answered: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)


class Session:
    """A kiosk's session on one connection."""

    def __init__(self, node: Node, peer: str = "?") -> None:
        self.node = node
        self.peer = peer
        self.account: Account | None = None
        self.location = ""
        self.charset = node.default_charset
        self.closing = False                      # the server closes the connection
        self.last_sent: bytes | None = None       # for 97 Request ACS Resend
        self.verified: tuple[str, str] | None = None   # (card, PIN) checked this patron session
        self._login_tries = 0
        self._bad_in_a_row = 0

    # -- what handlers use ----------------------------------------------------------

    @property
    def store(self) -> EdgeStore:
        """The node's store."""
        return self.node.store

    def now(self) -> datetime:
        """The node's clock (aware, UTC)."""
        return utcnow()

    def date(self, when: datetime | None = None) -> str:
        """An 18-character SIP date in this kiosk's time zone."""
        return codec.format_date(when or self.now(), self.account.utc_dates if self.account
                                 else False, library_tz())

    def day(self, day: Date) -> str:
        """A due date as a SIP date (end of that day) in this kiosk's time zone."""
        return codec.format_day(day, self.account.utc_dates if self.account else False)

    def source(self) -> str:
        """Who did it, as the node's events say: ``sip2:<kiosk login>``."""
        return accounts.source(self.account.name if self.account else "?")

    def institution(self) -> str:
        """The institution id this kiosk answers with."""
        return self.account.institution if self.account else ""

    def kiosk_time(self, text: str) -> tuple[datetime, str]:
        """A date the kiosk sent for a no-block transaction, as the node records it.

        Never later than now, never more than MAX_KIOSK_DELAY ago (a kiosk clock
        reset to 2000 would make the loan decades overdue: fines, a block).
        Returns the time and, when the kiosk's date was moved, a screen message
        saying so (empty otherwise); the move is logged.
        """
        try:
            when = codec.parse_date(text, library_tz())
        except ValueError:
            when = None
        now = self.now()
        if when is None:
            return now, ""
        earliest = now - MAX_KIOSK_DELAY
        if earliest <= when <= now + KIOSK_CLOCK_SLACK:
            return min(when, now), ""
        bound = now if when > now else earliest
        logger.warning("sip2 %s: kiosk %s dated a no-block transaction %s; recorded at %s",
                       self.peer, self.account.name if self.account else "?",
                       when.isoformat(), bound.isoformat())
        local = f"{bound.astimezone(library_tz()):%d.%m.%Y %H:%M}"
        return bound, (f"The self-check's date {when.astimezone(library_tz()):%d.%m.%Y %H:%M} is "
                       f"{'later than now' if when > now else 'too long ago'}: recorded at "
                       f"{local}; please check the self-check's clock.")

    # -- the conversation -------------------------------------------------------------

    def handle(self, raw: bytes) -> bytes | None:
        """The answer to one message (without its CR), or None to answer nothing."""
        try:
            req = codec.parse_request(raw, self.charset)
        except codec.ChecksumError as exc:
            logger.warning("sip2 %s: %s: asking for it again (96)", self.peer, exc)
            return self._remember(codec.format_message("96", error_detection=True))
        except codec.UnknownCommand as exc:
            logger.warning("sip2 %s: %s: no answer", self.peer, exc)
            self._bad_in_a_row += 1
            if self._bad_in_a_row >= MAX_BAD_IN_A_ROW:
                logger.warning("sip2 %s: %d unanswerable messages: closing", self.peer,
                               self._bad_in_a_row)
                self.closing = True
            return None
        except codec.Malformed as exc:
            self._bad_in_a_row = 0
            logger.warning("sip2 %s: malformed %s", self.peer, exc)
            if exc.command == "97":
                return self.last_sent
            if self.account is None and exc.command != "93":
                self._not_logged_in(exc.command)
                return None
            reply = self._refuse(exc.command, exc.fields, f"Message not understood: "
                                                         f"{exc.reason}.")
            return self._answer(reply, exc.seq, exc.checksummed, raw)
        self._bad_in_a_row = 0
        if req.command == "97":
            return self.last_sent
        last = self.node.answered.get(self.account.name) if self.account else None
        if req.seq is not None and last is not None and last[0] == raw:
            logger.info("sip2 %s: %s sent again with the same sequence number: answering as "
                        "before, not doing it twice", self.peer, req.command)
            return self._remember(last[1])
        if self.account is None and req.command != "93":
            if req.command == "99" and self.node.status_before_login:
                return self._answer(self.status_reply(), req.seq, req.checksummed, raw)
            self._not_logged_in(req.command)
            return None
        return self._answer(self._dispatch(req), req.seq, req.checksummed, raw)

    def _dispatch(self, req: codec.Request) -> Reply:
        try:
            return self._route(req)
        except Exception:  # noqa: BLE001 - a fault of ours must not end the kiosk's session
            logger.exception("sip2 %s: %s failed", self.peer, req.command)
            return self._refuse(req.command, req.fields,
                                "Could not be done: please try again or ask staff.")

    def _route(self, req: codec.Request) -> Reply:
        if req.command == "93":
            return self._login(req)
        if req.command == "99":
            return self.status_reply()
        assert self.account is not None
        handler = HANDLERS.get(req.command)
        if handler is None:   # 19 Item Status Update: item properties are the cloud's
            return self._refuse(req.command, req.fields, "Not supported here.")
        if req.command not in self.account.allowed and req.command not in ALWAYS:
            return self._refuse(req.command, req.fields,
                                "This self-check may not do that here: ask staff.")
        inst = req.get("AO")
        if inst and inst != self.account.institution:
            return self._refuse(req.command, req.fields,
                                f"Wrong institution {inst!r}: this node is "
                                f"{self.account.institution!r}.")
        return handler(self, req)

    def _refuse(self, command: str, given: dict[str, list[str]], message: str) -> Reply:
        return refusal(self, command, given, message)

    def _answer(self, reply: Reply, seq: str | None, checksummed: bool, raw: bytes) -> bytes:
        try:
            out = codec.format_message(reply.code, reply.fixed, reply.fields, seq=seq,
                                       error_detection=checksummed, charset=self.charset)
        except ValueError:
            logger.exception("sip2 %s: could not format %s", self.peer, reply.code)
            out = codec.format_message(reply.code, refusal(self, _request_of(reply.code), {},
                                                           "Internal error.").fixed,
                                       seq=seq, error_detection=checksummed)
        # Remembered for a retransmission, per kiosk: not a login, nor a status (its
        # answer goes stale, and asking again is harmless).
        if self.account is not None and raw[:2] not in (b"93", b"99"):
            self.node.answered[self.account.name] = (raw, out)
        return self._remember(out)

    def _remember(self, out: bytes) -> bytes:
        self.last_sent = out
        return out

    def _not_logged_in(self, command: str) -> None:
        logger.warning("sip2 %s: %s before a login (93): closing the connection", self.peer,
                       command)
        self.closing = True

    # -- 93 login, 99 status --------------------------------------------------------------

    def _login(self, req: codec.Request) -> Reply:
        """93 Login: the kiosk's own account; its settings apply from the next message."""
        if req.fixed["UID algorithm"] != "0" or req.fixed["PWD algorithm"] != "0":
            logger.warning("sip2 %s: encrypted login ids are not supported", self.peer)
            return Reply("94", {"ok": "0"})
        account = accounts.check_login(req.get("CN"), req.get("CO"), self.peer.rpartition(":")[0])
        if account is None:
            self._login_tries += 1
            logger.warning("sip2 %s: login as %r refused", self.peer, req.get("CN"))
            if self._login_tries >= MAX_LOGIN_TRIES:
                self.closing = True
            return Reply("94", {"ok": "0"})
        self.account, self.charset = account, account.charset
        self.location = req.get("CP") or account.location
        self.verified = None
        logger.info("sip2 %s: kiosk %s logged in (%s)", self.peer, account.name,
                    self.location or "no location")
        self.node.on_login(self)
        return Reply("94", {"ok": "1"})

    def status_reply(self) -> Reply:
        """98 ACS Status: on-line means linked to the cloud; the node serves either way."""
        a = self.account
        allowed = a.allowed if a else frozenset()
        linked = self.node.link_up()
        online = linked or (a is not None and not a.report_link)

        def yn(flag: bool) -> str:
            return "Y" if flag else "N"

        reply = Reply("98", {
            "on-line status": yn(online), "checkin ok": yn("09" in allowed),
            "checkout ok": yn("11" in allowed), "ACS renewal policy": yn("29" in allowed),
            "status update ok": "N", "off-line ok": "Y", "timeout period": TIMEOUT_PERIOD,
            "retries allowed": RETRIES_ALLOWED, "date/time sync": self.date(),
            "protocol version": F.PROTOCOL_VERSION,
        }, [("AO", self.institution()), ("AM", a.library_name if a else ""),
            ("BX", a.supported_messages() if a else "N" * len(F.BX_ORDER)),
            ("AN", self.location)])
        if not linked:
            reply.say("The branch is offline from the central system: this node decides "
                      "with its own rules.")
        return reply

    def end_patron(self) -> None:
        """Forget the patron verified in this session (35, or a new card)."""
        self.verified = None


def _request_of(response: str) -> str:
    return next(req for req, resp in F.ANSWERS.items() if resp == response)
