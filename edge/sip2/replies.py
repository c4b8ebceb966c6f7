"""What a session answers: the Reply type, and a refusal for every kind of request.

A refusal is a complete, well-formed response that says "no" in the
standard's own terms (ok 0, payment accepted N, valid patron N, ...) with the
reason as a screen message (AF). It is what a self-check gets for a message
that is malformed, not allowed at that kiosk, or refused by the rules, so it
always has an answer it can show, and nothing happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.sip2 import fields as F

if TYPE_CHECKING:
    from edge.sip2.session import Session

# Patron status with charge, renewal, recall and hold privileges denied.
DENIED = "YYYY" + " " * 10
NO_LANGUAGE = "000"   # "unknown" in the standard's language codes
CURRENCY = "KZT"      # ISO 4217: every amount in this network is in tenge


@dataclass
class Reply:
    """A response before formatting: its code, fixed fields by name, variable fields in order."""

    code: str
    fixed: dict[str, str]
    fields: list[tuple[str, str]] = field(default_factory=list)

    def say(self, message: str) -> Reply:
        """Add a screen message (AF) and return self."""
        if message:
            self.fields.append(("AF", message))
        return self


def money(tiyn: int) -> str:
    """An amount in tiyn as the fee amount field writes it: tenge with two decimals."""
    return f"{tiyn // 100}.{tiyn % 100:02d}"


def parse_money(text: str) -> int | None:
    """A fee amount ("12", "12.5", "12.50") in tiyn, or None if it is not one."""
    whole, _, cents = text.strip().partition(".")
    if not whole.isdigit() or not whole.isascii() or len(whole) > 9:
        return None
    if cents and not (cents.isdigit() and cents.isascii() and len(cents) <= 2):
        return None
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)


def refusal(s: Session, command: str, given: dict[str, list[str]], message: str) -> Reply:
    """The negative answer to request ``command``, naming the patron and item it was about."""
    code = F.ANSWERS[command]

    def g(fid: str) -> str:
        return (given.get(fid) or [""])[0]

    date, inst = s.date(), s.institution()
    if code == "94":
        return Reply("94", {"ok": "0"})
    if code == "98":
        return s.status_reply().say(message)
    if code in ("24", "26"):
        return Reply(code, {"patron status": DENIED, "language": NO_LANGUAGE,
                            "transaction date": date},
                     [("AO", inst), ("AA", g("AA")), ("AE", ""), ("BL", "N")]).say(message)
    if code == "64":
        counts = {n: "0000" for n in ("hold items count", "overdue items count",
                                      "charged items count", "fine items count",
                                      "recall items count", "unavailable holds count")}
        return Reply("64", {"patron status": DENIED, "language": NO_LANGUAGE,
                            "transaction date": date, **counts},
                     [("AO", inst), ("AA", g("AA")), ("AE", ""), ("BL", "N")]).say(message)
    if code in ("12", "30"):
        return Reply(code, {"ok": "0", "renewal ok": "N", "magnetic media": "U",
                            "desensitize": "N", "transaction date": date},
                     [("AO", inst), ("AA", g("AA")), ("AB", g("AB")), ("AJ", g("AJ")),
                      ("AH", "")]).say(message)
    if code == "10":
        return Reply("10", {"ok": "0", "resensitize": "N", "magnetic media": "U", "alert": "N",
                            "transaction date": date},
                     [("AO", inst), ("AB", g("AB")), ("AQ", "")]).say(message)
    if code == "18":
        return Reply("18", {"circulation status": F.CIRC_OTHER,
                            "security marker": F.SECURITY_OTHER, "fee type": F.FEE_TYPE_OTHER,
                            "transaction date": date},
                     [("AB", g("AB")), ("AJ", "")]).say(message)
    if code == "20":
        return Reply("20", {"item properties ok": "0", "transaction date": date},
                     [("AB", g("AB"))]).say(message)
    if code == "66":
        return Reply("66", {"ok": "0", "renewed count": "0000", "unrenewed count": "0000",
                            "transaction date": date}, [("AO", inst)]).say(message)
    if code == "36":
        return Reply("36", {"end session": "Y", "transaction date": date},
                     [("AO", inst), ("AA", g("AA"))]).say(message)
    if code == "38":
        return Reply("38", {"payment accepted": "N", "transaction date": date},
                     [("AO", inst), ("AA", g("AA"))]).say(message)
    if code == "16":
        item = [(fid, g(fid)) for fid in ("AB", "AJ") if g(fid)]
        return Reply("16", {"ok": "0", "available": "N", "transaction date": date},
                     [("AO", inst), ("AA", g("AA")), *item]).say(message)
    raise ValueError(f"no refusal for {command}")
