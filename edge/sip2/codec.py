"""SIP2 on the wire, sans-IO: framing, checksums (AY/AZ), dates, parsing and formatting.

No sockets here: a ``Framer`` is fed bytes and hands out messages (without
their CR), ``parse_request`` turns one into a ``Request`` or raises a
``Sip2Error`` that says how to answer, and ``format_message`` returns the
bytes of a response. Error detection (SIP2 2.00, "Error Detection"): a message
may end in ``AY`` + one digit (sequence number) and ``AZ`` + four hex digits,
the two's complement of the 16-bit sum of every byte before them, ``AZ``
included; so the sum of the whole message, checksum value added, is 0.
"""
from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo

from edge.sip2 import fields as F

TERMINATOR = b"\r"
# The longest request we take: the longest a self-check sends (a check-in or a
# fee payment) is a few hundred bytes, so 2 KB without a CR is a broken or
# hostile client, and the connection is dropped.
MAX_MESSAGE = 2048
CHARSETS = ("utf-8", "cp850")
_DATE_FORMAT = "%Y%m%d{zone}%H%M%S"
LOCAL_ZONE, UTC_ZONE = "    ", "   Z"
_TRAILER = re.compile(rb"(?:AY(.))?AZ([^|]{0,4})$", re.DOTALL)
_FIELD_ID = re.compile(r"[A-Z][A-Z]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEQ_ONLY = re.compile(r"\|?AY(\d)$")
_SALVAGE = re.compile(r"(?:^|(?<=\|))(AA|AB)([^|]{0,64})(?=\|)")


class Sip2Error(Exception):
    """A message we cannot act on; the subclass says how to answer it."""


class ChecksumError(Sip2Error):
    """The error-detection trailer is wrong: answer 96 so the self-check sends it again."""


class Overlong(Sip2Error):
    """More than MAX_MESSAGE bytes without a CR: drop the connection."""


class UnknownCommand(Sip2Error):
    """A command code the standard does not define: answer nothing."""

    def __init__(self, command: str) -> None:
        super().__init__(f"unknown command {command!r}")
        self.command = command


class Malformed(Sip2Error):
    """A known command whose fields are wrong: answer it with a refusal saying why."""

    def __init__(self, command: str, reason: str, fields: dict[str, list[str]] | None = None,
                 seq: str | None = None, checksummed: bool = False) -> None:
        super().__init__(f"{command}: {reason}")
        self.command, self.reason = command, reason
        self.fields = fields or {}
        self.seq, self.checksummed = seq, checksummed


@dataclass
class Request:
    """A parsed request: its command, fixed fields by name, variable fields by id."""

    command: str
    fixed: dict[str, str]
    fields: dict[str, list[str]]
    seq: str | None = None            # AY, when the self-check sent one
    checksummed: bool = False         # it carried AZ: answer with AY/AZ too
    extra: list[str] = field(default_factory=list)  # field ids this message does not define

    def get(self, fid: str, default: str = "") -> str:
        """The first value of variable field ``fid``."""
        values = self.fields.get(fid)
        return values[0] if values else default


def checksum(data: bytes) -> str:
    """The AZ value for ``data`` (everything up to and including "AZ")."""
    return f"{-sum(data) & 0xFFFF:04X}"


# -- dates --------------------------------------------------------------------

def format_date(when: datetime, utc: bool = False, tz: tzinfo | None = None) -> str:
    """An 18-character SIP date: YYYYMMDDZZZZHHMMSS, local time (blank zone) or UTC ("   Z").

    ``tz``: the zone "local" means (the library's); None: the process's own.
    """
    if utc:
        return when.astimezone(UTC).strftime(_DATE_FORMAT.format(zone=UTC_ZONE))
    return when.astimezone(tz).strftime(_DATE_FORMAT.format(zone=LOCAL_ZONE))


def format_day(day: date, utc: bool = False) -> str:
    """A due date as an 18-character SIP date: the end of that day."""
    zone = UTC_ZONE if utc else LOCAL_ZONE
    return f"{day:%Y%m%d}{zone}235959"


def parse_date(text: str, tz: tzinfo | None = None) -> datetime | None:
    """An aware datetime from an 18-character SIP date (None for 18 blanks); ValueError if bad.

    ``tz``: the zone a local date (blank zone) is in; None: the process's own.
    """
    if len(text) != 18:
        raise ValueError("a SIP date has 18 characters")
    if not text.strip():
        return None
    zone = text[8:12]
    if zone not in (LOCAL_ZONE, UTC_ZONE):
        raise ValueError(f"time zone {zone!r} is neither 4 blanks (local) nor '   Z' (UTC)")
    digits = text[:8] + text[12:]
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"{text!r} is not YYYYMMDDZZZZHHMMSS")
    naive = datetime.strptime(digits, "%Y%m%d%H%M%S")  # noqa: DTZ007 - zone applied below
    if zone == UTC_ZONE:
        return naive.replace(tzinfo=UTC)
    return (naive.replace(tzinfo=tz) if tz else naive.astimezone()).astimezone(UTC)


# -- framing --------------------------------------------------------------------

class Framer:
    """Bytes in, CR-terminated messages out (without the CR); tolerates CR LF."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self.max_message = max_message

    def feed(self, data: bytes) -> None:
        """Add bytes read from the connection."""
        self._buf += data

    def next_message(self) -> bytes | None:
        """The next whole message, or None until more bytes come; Overlong if none can."""
        while True:
            # An LF or NUL after the CR (CR LF, telnet's CR NUL) belongs to no message.
            start = 0
            while start < len(self._buf) and self._buf[start] in (0x0A, 0x00):
                start += 1
            if start:
                del self._buf[:start]
            end = self._buf.find(TERMINATOR)
            if end < 0:
                if len(self._buf) > self.max_message:
                    raise Overlong(f"{len(self._buf)} bytes without a CR")
                return None
            if end > self.max_message:
                raise Overlong(f"a message of {end} bytes")
            msg = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if msg:
                return msg

    @property
    def partial(self) -> bool:
        """True while part of a message waits for the rest."""
        return any(b not in (0x0A, 0x00) for b in self._buf)


# -- parsing --------------------------------------------------------------------

def split_trailer(raw: bytes) -> tuple[bytes, str | None, bool]:
    """Verify and strip AY/AZ: (body, sequence number, had a checksum); ChecksumError if wrong."""
    m = _TRAILER.search(raw)
    if m is None:
        return raw, None, False
    seq, value = m.group(1), m.group(2)
    if len(value) != 4 or not all(c in b"0123456789ABCDEFabcdef" for c in value):
        raise ChecksumError(f"checksum field {value!r} is not 4 hex digits")
    if seq is not None and not seq.isdigit():
        raise ChecksumError(f"sequence number {seq!r} is not a digit")
    if (sum(raw[:-4]) + int(value, 16)) & 0xFFFF:
        raise ChecksumError(f"checksum {value.decode()} does not match {checksum(raw[:-4])}")
    return raw[:m.start()], seq.decode() if seq else None, True


def parse_request(raw: bytes, charset: str = "utf-8") -> Request:
    """One message (without its CR) into a Request; raises a Sip2Error subclass if it cannot."""
    body, seq, checksummed = split_trailer(raw)
    try:
        text = body.decode(charset)
    except UnicodeDecodeError as exc:
        command = body[:2].decode("ascii", "replace")
        if command in F.REQUESTS:
            raise Malformed(command, f"not valid {charset}", seq=seq,
                            checksummed=checksummed) from exc
        raise UnknownCommand(command) from exc
    command = text[:2]
    spec = F.REQUESTS.get(command)
    if spec is None:
        raise UnknownCommand(command)
    # AY without AZ: a sequence number with no checksum (the last field's "|" stays).
    m = _SEQ_ONLY.search(text) if not checksummed else None
    if m and m.start() + (text[m.start()] == "|") >= 2 + spec.fixed_length:
        seq, text = m.group(1), text[:m.start()] + ("|" if text[m.start()] == "|" else "")
    fields, extra, problem = _variable_fields(text[2 + spec.fixed_length:], spec)
    salvaged = {m.group(1): [m.group(2)] for m in _SALVAGE.finditer(text[2:])}

    def fail(why: str) -> Malformed:
        # The patron and item named anywhere, so the refusal can say whom it is about.
        return Malformed(command, why, {**salvaged, **fields}, seq, checksummed)

    if _CONTROL.search(text):
        raise fail("control characters in the message")
    if len(text) < 2 + spec.fixed_length:
        raise fail(f"truncated: {spec.name} needs {spec.fixed_length} characters of fixed "
                   f"fields, got {len(text) - 2}")
    fixed: dict[str, str] = {}
    pos = 2
    for f in spec.fixed:
        value = text[pos:pos + f.length]
        pos += f.length
        why = _check_fixed(f, value)
        if why:
            raise fail(f"{f.name}: {why}")
        fixed[f.name] = value
    if problem:
        raise fail(problem)
    missing = [fid for fid in spec.order if fid in spec.required and fid not in fields]
    if missing:
        raise fail("missing " + ", ".join(f"{fid} ({F.FIELD_NAMES[fid]})" for fid in missing))
    return Request(command, fixed, fields, seq, checksummed, extra)


def _check_fixed(f: F.Fixed, value: str) -> str | None:
    """Why ``value`` is not a valid ``f``, or None."""
    if f.kind == "yn" and value not in ("Y", "N"):
        return f"expected Y or N, got {value!r}"
    if f.kind == "ynu" and value not in ("Y", "N", "U"):
        return f"expected Y, N or U, got {value!r}"
    if f.kind == "ok" and value not in ("0", "1"):
        return f"expected 0 or 1, got {value!r}"
    if f.kind == "digits" and not (value.isdigit() and value.isascii()):
        return f"expected {f.length} digits, got {value!r}"
    if f.kind in ("date", "date?"):
        try:
            when = parse_date(value)
        except ValueError as exc:
            return str(exc)
        if when is None and f.kind == "date":
            return "blank"
    return None


def _variable_fields(text: str, spec: F.Spec) -> tuple[dict[str, list[str]], list[str], str | None]:
    """Variable fields (id + value + "|") by id; also unknown ids and the first problem seen."""
    out: dict[str, list[str]] = {}
    extra: list[str] = []
    problem: str | None = None
    pos = 0
    while pos < len(text):
        fid = text[pos:pos + 2]
        end = text.find("|", pos + 2)
        value = text[pos + 2:] if end < 0 else text[pos + 2:end]
        pos = len(text) if end < 0 else end + 1
        if not _FIELD_ID.fullmatch(fid):
            problem = problem or f"{fid!r} is not a field identifier"
            break
        if end < 0:
            problem = problem or f"field {fid} has no '|' terminator"
        limit = F.MAX_LENGTH.get(fid, F.MAX_FIELD)
        if len(value) > limit:
            problem = problem or f"field {fid} ({F.FIELD_NAMES.get(fid, '?')}) is longer than " \
                                 f"{limit} characters"
            value = value[:limit]   # kept only to name the patron or item in the refusal
        if fid not in spec.order:
            extra.append(fid)
            continue
        if fid in out and fid not in spec.repeatable:
            problem = problem or f"field {fid} ({F.FIELD_NAMES[fid]}) appears twice"
            continue
        out.setdefault(fid, []).append(value)
    return out, extra, problem


# -- formatting -----------------------------------------------------------------

# Characters a code page lacks are spelled in Latin letters (Kazakh and Russian
# titles stay readable on an IBM 850 kiosk); anything else becomes "?".
_TRANSLIT = dict(zip(
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяәғқңөұүһі",
    ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o", "p",
     "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya",
     "a", "g", "q", "ng", "o", "u", "u", "h", "i"], strict=True))


def _translit(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = []
    for ch in exc.object[exc.start:exc.end]:
        latin = _TRANSLIT.get(ch.lower())
        if latin is None:
            out.append("?")
        else:
            out.append(latin.capitalize() if ch.isupper() else latin)
    return "".join(out), exc.end


codecs.register_error("kitap-sip2", _translit)


def clean(value: str) -> str:
    """A value fit for a variable field: no "|" or control characters, at most 255 characters."""
    return _CONTROL.sub(" ", value.replace("|", "/"))[:F.MAX_FIELD]


def format_message(code: str, fixed: Mapping[str, str] | None = None,
                   fields: Iterable[tuple[str, str]] = (), *, seq: str | None = None,
                   error_detection: bool = False, charset: str = "utf-8") -> bytes:
    """The bytes of a response (without its CR), fields in the standard's order.

    With ``error_detection`` the message ends in AY (``seq``, when there is one:
    96 has none) and AZ. A wrong fixed field or an unknown field id is a bug
    here, so it raises ValueError rather than sending something a kiosk misreads.
    """
    spec = F.RESPONSES[code]
    fixed = fixed or {}
    parts = [code]
    for f in spec.fixed:
        value = fixed.get(f.name, "")
        if len(value) != f.length or _check_fixed(f, value):
            raise ValueError(f"{code} {f.name}: {value!r} is not {f.length} chars of {f.kind}")
        parts.append(value)
    given = list(fields)
    unknown = {fid for fid, _ in given} - set(spec.order)
    if unknown:
        raise ValueError(f"{code} has no field {', '.join(sorted(unknown))}")
    for fid in spec.order:
        # An optional field with nothing to say is left out; a required one is always sent.
        values = [v for i, v in given if i == fid and (v or fid in spec.required)]
        if not values and fid in spec.required:
            values = [""]
        for value in values if fid in spec.repeatable else values[:1]:
            parts.append(f"{fid}{clean(value)}|")
    data = "".join(parts).encode(charset, errors="kitap-sip2")
    if error_detection:
        data += (f"AY{seq}AZ" if seq is not None else "AZ").encode("ascii")
        data += checksum(data).encode("ascii")
    return data


def fields_of(raw: bytes, charset: str = "utf-8") -> str:
    """A message for a log line: passwords (AC, AD, CO) masked, CR shown."""
    text = raw.decode(charset, "replace")
    return re.sub(r"(\|(?:AC|AD|CO))[^|]*", r"\1***", "|" + text)[1:].replace("\r", "\\r")
