"""An independent SIP2 2.00 self-check client for the tests, written from the standard.

It shares no code with ``edge/sip2`` on purpose: it builds requests from its
own templates and decodes every response against its own copy of the
standard's layouts, so a mistake in the server's tables cannot hide behind
the same mistake here. ``decode`` rejects anything a strict self-check would:
a fixed field of the wrong length or content, a variable field without its
"|", a field id the message does not define, a required field missing, a
wrong checksum, a date not in YYYYMMDDZZZZHHMMSS.
"""
from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DATE_RE = r"\d{8}(?:    |   Z)\d{6}"
YN, OK, YNU = r"[YN]", r"[01]", r"[YNU]"

# Response layouts: fixed fields as (name, regex of exactly that many characters),
# then the variable field ids the message may carry; "!" marks required ones.
LAYOUTS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "94": ([("ok", OK)], ""),
    "96": ([], ""),
    "98": ([("online", YN), ("checkin_ok", YN), ("checkout_ok", YN), ("renewal_policy", YN),
            ("status_update_ok", YN), ("offline_ok", YN), ("timeout", r"\d{3}"),
            ("retries", r"\d{3}"), ("datetime_sync", DATE_RE), ("version", r"\d\.\d\d")],
           "AO! AM BX! AN AF AG"),
    "24": ([("status", r"[Y ]{14}"), ("language", r"\d{3}"), ("date", DATE_RE)],
           "AO! AA! AE! BL CQ BH BV AF AG"),
    "26": ([("status", r"[Y ]{14}"), ("language", r"\d{3}"), ("date", DATE_RE)],
           "AO! AA! AE! BL CQ AF AG"),
    "64": ([("status", r"[Y ]{14}"), ("language", r"\d{3}"), ("date", DATE_RE),
            ("holds", r"\d{4}"), ("overdue", r"\d{4}"), ("charged", r"\d{4}"),
            ("fines", r"\d{4}"), ("recalls", r"\d{4}"), ("unavailable", r"\d{4}")],
           "AO! AA! AE! BZ CA CB BL CQ BH BV CC AS AT AU AV BU CD BD BE BF AF AG"),
    "12": ([("ok", OK), ("renewal_ok", YN), ("magnetic", YNU), ("desensitize", YNU),
            ("date", DATE_RE)], "AO! AA! AB! AJ! AH! BT CI BH BV CK CH BK AF AG"),
    "30": ([("ok", OK), ("renewal_ok", YN), ("magnetic", YNU), ("desensitize", YNU),
            ("date", DATE_RE)], "AO! AA! AB! AJ! AH! BT CI BH BV CK CH BK AF AG"),
    "10": ([("ok", OK), ("resensitize", YN), ("magnetic", YNU), ("alert", YN),
            ("date", DATE_RE)], "AO! AB! AQ! AJ CL AA CK CH CR CS CT CV CY DA AF AG"),
    "18": ([("circulation", r"\d{2}"), ("security", r"\d{2}"), ("fee_type", r"\d{2}"),
            ("date", DATE_RE)], "CF AH CJ CM AB! AJ! BG BH BV CK AQ AP CH AF AG"),
    "20": ([("properties_ok", OK), ("date", DATE_RE)], "AB! AJ CH AF AG"),
    "16": ([("ok", OK), ("available", YN), ("date", DATE_RE)],
           "BW BR BS AO! AA! AB AJ AF AG"),
    "66": ([("ok", OK), ("renewed", r"\d{4}"), ("unrenewed", r"\d{4}"), ("date", DATE_RE)],
           "AO! BM BN AF AG"),
    "36": ([("end", YN), ("date", DATE_RE)], "AO! AA! AF AG"),
    "38": ([("accepted", YN), ("date", DATE_RE)], "AO! AA! BK AF AG"),
}
# Fields whose value is itself a SIP date.
DATE_FIELDS = {"AH", "BW", "CM", "CJ"}


def checksum(data: bytes) -> str:
    """Four hex digits: the 16-bit two's complement of the sum of the bytes."""
    total = 0
    for b in data:
        total = (total + b) & 0xFFFF
    return format((0x10000 - total) & 0xFFFF, "04X")


# The kiosks of these tests stand in an Almaty branch: their "local time" is
# Almaty's, whatever zone the machine running the tests is in.
KIOSK_ZONE = ZoneInfo("Asia/Almaty")


def sip_date(when: datetime | None = None) -> str:
    """Local time (the kiosk's), blank zone: YYYYMMDD    HHMMSS."""
    when = (when or datetime.now(UTC)).astimezone(KIOSK_ZONE)
    return when.strftime("%Y%m%d") + "    " + when.strftime("%H%M%S")


BLANK_DATE = " " * 18


def with_trailer(body: bytes, seq: int) -> bytes:
    """``body`` + AY<seq>AZ<checksum>."""
    data = body + b"AY" + str(seq % 10).encode() + b"AZ"
    return data + checksum(data).encode()


@dataclass
class Response:
    """A decoded response."""

    code: str
    fixed: dict[str, str]
    fields: dict[str, list[str]]
    seq: str | None
    raw: bytes

    def __getitem__(self, fid: str) -> str:
        values = self.fields.get(fid)
        if not values:
            raise KeyError(f"{self.code} has no field {fid}: {self.raw!r}")
        return values[0]

    def get(self, fid: str, default: str | None = None) -> str | None:
        values = self.fields.get(fid)
        return values[0] if values else default

    def all(self, fid: str) -> list[str]:
        return self.fields.get(fid, [])

    @property
    def screen(self) -> str:
        return " / ".join(self.all("AF"))


def decode(raw: bytes, charset: str = "utf-8", expect_seq: int | None = None) -> Response:
    """Decode and strictly check one response (without its CR); AssertionError if wrong."""
    body = raw
    seq = None
    m = re.search(rb"AY(\d)AZ([0-9A-F]{4})$", raw) or re.search(rb"AZ([0-9A-F]{4})$", raw)
    if m is not None:
        value = m.group(m.lastindex or 1)
        assert checksum(raw[:-4]) == value.decode(), f"bad checksum in {raw!r}"
        if m.lastindex == 2:
            seq = m.group(1).decode()
        body = raw[:m.start()]
    if expect_seq is not None:
        assert seq == str(expect_seq % 10), f"expected AY{expect_seq % 10} in {raw!r}"
    text = body.decode(charset)
    code = text[:2]
    assert code in LAYOUTS, f"unknown response {code!r}: {raw!r}"
    layout, spec = LAYOUTS[code]
    pos = 2
    fixed: dict[str, str] = {}
    for name, pattern in layout:
        m2 = re.match(pattern, text[pos:])
        assert m2 is not None, f"{code}: fixed field {name} wrong at {text[pos:]!r}"
        fixed[name] = m2.group(0)
        pos += len(m2.group(0))
    allowed = {f.rstrip("!") for f in spec.split()}
    required = {f.rstrip("!") for f in spec.split() if f.endswith("!")}
    fields: dict[str, list[str]] = {}
    rest = text[pos:]
    while rest:
        fid = rest[:2]
        assert fid in allowed, f"{code} may not carry field {fid!r}: {raw!r}"
        end = rest.find("|")
        assert end >= 0, f"{code}: field {fid} has no terminator: {raw!r}"
        value = rest[2:end]
        assert "\r" not in value and len(value) <= 255, f"bad value for {fid}: {value!r}"
        if fid in DATE_FIELDS and value:   # a variable field may be empty (a refused checkout)
            assert re.fullmatch(DATE_RE, value), f"{fid} {value!r} is not a SIP date"
        fields.setdefault(fid, []).append(value)
        rest = rest[end + 1:]
    missing = required - set(fields)
    assert not missing, f"{code} lacks required {sorted(missing)}: {raw!r}"
    return Response(code, fixed, fields, seq, raw)


class Client:
    """A self-check on a TCP (or TLS) connection, with error detection on."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, charset: str = "utf-8",
                 tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        self.charset = charset
        self.seq = 0
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_raw(self) -> bytes:
        """The next message from the server, without its CR; b"" if it hung up."""
        while b"\r" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                return b""
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\r")
        return msg

    def call(self, body: str, *, seq: bool = True) -> Response:
        """Send ``body`` (with AY/AZ unless ``seq`` is False), return the checked answer."""
        raw = body.encode(self.charset)
        if seq:
            raw = with_trailer(raw, self.seq)
        self.send_raw(raw + b"\r")
        answer = self.read_raw()
        assert answer, f"no answer to {body!r}"
        resp = decode(answer, self.charset, self.seq if seq else None)
        if seq:
            self.seq += 1
        return resp

    # -- requests, as the standard lays them out ----------------------------------

    def login(self, user: str, password: str, location: str = "") -> Response:
        return self.call(f"9300CN{user}|CO{password}|" + (f"CP{location}|" if location else ""))

    def sc_status(self) -> Response:
        return self.call("9900802.00")

    def patron_status(self, inst: str, card: str, pin: str = "") -> Response:
        return self.call(f"23001{sip_date()}AO{inst}|AA{card}|AC|AD{pin}|")

    def patron_info(self, inst: str, card: str, pin: str = "", summary: str = " " * 10,
                    start: int | None = None, end: int | None = None) -> Response:
        extra = (f"BP{start}|" if start else "") + (f"BQ{end}|" if end else "")
        return self.call(f"63001{sip_date()}{summary}AO{inst}|AA{card}|AC|AD{pin}|{extra}")

    def checkout(self, inst: str, card: str, item: str, pin: str = "", *,
                 no_block: bool = False, when: str | None = None, renew_policy: str = "N",
                 nb_due: str = BLANK_DATE, cancel: bool = False) -> Response:
        return self.call(f"11{renew_policy}{'Y' if no_block else 'N'}{when or sip_date()}"
                         f"{nb_due}AO{inst}|AA{card}|AB{item}|AC|AD{pin}|"
                         + ("BIY|" if cancel else ""))

    def checkin(self, inst: str, item: str, *, no_block: bool = False,
                when: str | None = None, location: str = "hall") -> Response:
        date = when or sip_date()
        return self.call(f"09{'Y' if no_block else 'N'}{sip_date()}{date}"
                         f"AP{location}|AO{inst}|AB{item}|AC|")

    def item_info(self, inst: str, item: str) -> Response:
        return self.call(f"17{sip_date()}AO{inst}|AB{item}|AC|")

    def renew(self, inst: str, card: str, item: str, pin: str = "", *,
              no_block: bool = False, when: str | None = None) -> Response:
        return self.call(f"29N{'Y' if no_block else 'N'}{when or sip_date()}{BLANK_DATE}"
                         f"AO{inst}|AA{card}|AD{pin}|AB{item}|AC|")

    def renew_all(self, inst: str, card: str, pin: str = "") -> Response:
        return self.call(f"65{sip_date()}AO{inst}|AA{card}|AD{pin}|AC|")

    def end_session(self, inst: str, card: str) -> Response:
        return self.call(f"35{sip_date()}AO{inst}|AA{card}|AC|")

    def fee_paid(self, inst: str, card: str, amount: str, *, fee_type: str = "04",
                 payment_type: str = "00", currency: str = "KZT", txn: str = "",
                 pin: str = "") -> Response:
        return self.call(f"37{sip_date()}{fee_type}{payment_type}{currency}BV{amount}|"
                         f"AO{inst}|AA{card}|AC|AD{pin}|" + (f"BK{txn}|" if txn else ""))

    def hold(self, inst: str, card: str, mode: str = "+", item: str = "",
             title: str = "") -> Response:
        return self.call(f"15{mode}{sip_date()}AO{inst}|AA{card}|"
                         + (f"AB{item}|" if item else "") + (f"AJ{title}|" if title else "")
                         + "AC|")

    def block_patron(self, inst: str, card: str, message: str, retained: bool = False
                     ) -> Response:
        return self.call(f"01{'Y' if retained else 'N'}{sip_date()}AO{inst}|AL{message}|"
                         f"AA{card}|AC|")

    def patron_enable(self, inst: str, card: str) -> Response:
        return self.call(f"25{sip_date()}AO{inst}|AA{card}|AC|")

    def resend(self) -> Response:
        """97: the server sends its last message again."""
        self.send_raw(b"97AZFEF5\r")
        return decode(self.read_raw(), self.charset)
