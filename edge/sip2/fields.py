"""SIP2 2.00 message tables: every message's fixed fields, its variable fields, and the code values.

One table drives both directions: ``REQUESTS`` (self-check to us) says what the
parser must find and how long each field may be; ``RESPONSES`` (us to the
self-check) says in what order the formatter writes the fields and how long
each fixed field is. The names are the standard's own.
"""
from __future__ import annotations

from dataclasses import dataclass

# The protocol version we speak, as the 99/98 messages carry it.
PROTOCOL_VERSION = "2.00"
# A variable-length field holds at most 255 characters (SIP2 2.00, "Fields").
MAX_FIELD = 255
# Identifiers (cards, barcodes, institution, location) are what the node stores
# as identifiers: at most 64 characters (protocol/envelope.py ``_ident``). A longer
# one is refused, never cut short: a shortened barcode could name another copy.
MAX_IDENT = 64


@dataclass(frozen=True)
class Fixed:
    """A fixed-length field: its name, length and kind of content."""

    name: str
    length: int
    # yn: Y or N; ynu: Y, N or U; ok: 0 or 1; date: 18-char SIP date; date?: the
    # same or 18 blanks; digits: decimal digits; text: any printable characters.
    kind: str = "text"


@dataclass(frozen=True)
class Spec:
    """A message: its code, name, fixed fields and variable fields in the standard's order."""

    code: str
    name: str
    fixed: tuple[Fixed, ...] = ()
    order: tuple[str, ...] = ()          # every variable field id, in the standard's order
    required: frozenset[str] = frozenset()
    repeatable: frozenset[str] = frozenset()

    @property
    def fixed_length(self) -> int:
        """The length of the fixed part after the command code."""
        return sum(f.length for f in self.fixed)


def spec(code: str, name: str, fixed: tuple[Fixed, ...] = (), fields: str = "") -> Spec:
    """A Spec from a field list like "AO! AA! AF+": ``!`` required, ``+`` repeatable."""
    ids = fields.split()
    return Spec(code, name, fixed, tuple(i.rstrip("!+") for i in ids),
                frozenset(i.rstrip("!+") for i in ids if "!" in i),
                frozenset(i.rstrip("!+") for i in ids if "+" in i))


DATE = Fixed("transaction date", 18, "date")

# What each variable field id means (for messages and documentation).
FIELD_NAMES: dict[str, str] = {
    "AA": "patron identifier", "AB": "item identifier", "AC": "terminal password",
    "AD": "patron password", "AE": "personal name", "AF": "screen message",
    "AG": "print line", "AH": "due date", "AJ": "title identifier",
    "AL": "blocked card msg", "AM": "library name", "AN": "terminal location",
    "AO": "institution id", "AP": "current location", "AQ": "permanent location",
    "AS": "hold items", "AT": "overdue items", "AU": "charged items", "AV": "fine items",
    "AY": "sequence number", "AZ": "checksum", "BD": "home address", "BE": "e-mail address",
    "BF": "home phone number", "BG": "owner", "BH": "currency type", "BI": "cancel",
    "BK": "transaction id", "BL": "valid patron", "BM": "renewed items",
    "BN": "unrenewed items", "BO": "fee acknowledged", "BP": "start item",
    "BQ": "end item", "BR": "queue position", "BS": "pickup location",
    "BT": "fee type", "BU": "recall items", "BV": "fee amount", "BW": "expiration date",
    "BX": "supported messages", "BY": "hold type", "BZ": "hold items limit",
    "CA": "overdue items limit", "CB": "charged items limit", "CC": "fee limit",
    "CD": "unavailable hold items", "CF": "hold queue length", "CG": "fee identifier",
    "CH": "item properties", "CI": "security inhibit", "CJ": "recall date",
    "CK": "media type", "CL": "sort bin", "CM": "hold pickup date",
    "CN": "login user id", "CO": "login password", "CP": "location code",
    "CQ": "valid patron password",
    # The 3M SIP2 extensions that sorters read in a check-in response.
    "CT": "destination location", "CV": "alert type", "CY": "hold patron id",
    "DA": "hold patron name",
}

# The longest value we accept in a request, by field id (others: MAX_FIELD).
MAX_LENGTH: dict[str, int] = {
    "AA": MAX_IDENT, "AB": MAX_IDENT, "AO": MAX_IDENT, "AP": MAX_IDENT, "CN": MAX_IDENT,
    "CP": MAX_IDENT, "BS": MAX_IDENT, "CG": MAX_IDENT, "BK": MAX_IDENT,
    "AC": 128, "AD": 128, "CO": 128, "BV": 16, "BP": 5, "BQ": 5, "BI": 1, "BO": 1,
    "BY": 1, "BW": 18,
}

# -- requests: self-check -> us ---------------------------------------------

_LANG = Fixed("language", 3, "digits")

REQUESTS: dict[str, Spec] = {s.code: s for s in (
    spec("93", "Login", (Fixed("UID algorithm", 1), Fixed("PWD algorithm", 1)), "CN! CO! CP"),
    spec("99", "SC Status", (Fixed("status code", 1, "digits"),
                             Fixed("max print width", 3, "digits"), Fixed("protocol version", 4))),
    spec("97", "Request ACS Resend"),
    spec("23", "Patron Status Request", (_LANG, DATE), "AO! AA! AC! AD!"),
    spec("63", "Patron Information", (_LANG, DATE, Fixed("summary", 10)),
         "AO! AA! AC AD BP BQ"),
    spec("11", "Checkout", (Fixed("SC renewal policy", 1, "yn"), Fixed("no block", 1, "yn"),
                            DATE, Fixed("nb due date", 18, "date?")),
         "AO! AA! AB! AC! CH AD BO BI"),
    spec("09", "Checkin", (Fixed("no block", 1, "yn"), DATE, Fixed("return date", 18, "date?")),
         "AP! AO! AB! AC! CH BI"),
    spec("17", "Item Information", (DATE,), "AO! AB! AC"),
    spec("19", "Item Status Update", (DATE,), "AO! AB! AC CH!"),
    spec("29", "Renew", (Fixed("third party allowed", 1, "yn"), Fixed("no block", 1, "yn"),
                         DATE, Fixed("nb due date", 18, "date?")),
         "AO! AA! AD AB AJ AC CH BO"),
    spec("65", "Renew All", (DATE,), "AO! AA! AD AC BO"),
    spec("35", "End Patron Session", (DATE,), "AO! AA! AC AD"),
    spec("37", "Fee Paid", (DATE, Fixed("fee type", 2, "digits"),
                            Fixed("payment type", 2, "digits"), Fixed("currency type", 3)),
         "BV! AO! AA! AC AD CG BK"),
    spec("15", "Hold", (Fixed("hold mode", 1), DATE), "BW BS BY AO! AA! AD AB AJ AC BO"),
    spec("01", "Block Patron", (Fixed("card retained", 1, "yn"), DATE), "AO! AL! AA! AC!"),
    spec("25", "Patron Enable", (DATE,), "AO! AA! AC AD"),
)}

# -- responses: us -> self-check ---------------------------------------------

_STATUS = Fixed("patron status", 14)
_CIRC = "AO! AA! AB! AJ! AH! BT CI BH BV CK CH BK AF+ AG+"

RESPONSES: dict[str, Spec] = {s.code: s for s in (
    spec("94", "Login Response", (Fixed("ok", 1, "ok"),)),
    spec("98", "ACS Status", (Fixed("on-line status", 1, "yn"), Fixed("checkin ok", 1, "yn"),
                              Fixed("checkout ok", 1, "yn"),
                              Fixed("ACS renewal policy", 1, "yn"),
                              Fixed("status update ok", 1, "yn"), Fixed("off-line ok", 1, "yn"),
                              Fixed("timeout period", 3, "digits"),
                              Fixed("retries allowed", 3, "digits"),
                              Fixed("date/time sync", 18, "date"),
                              Fixed("protocol version", 4)),
         "AO! AM BX! AN AF+ AG+"),
    spec("96", "Request SC Resend"),
    spec("24", "Patron Status Response", (_STATUS, _LANG, DATE),
         "AO! AA! AE! BL CQ BH BV AF+ AG+"),
    spec("26", "Patron Enable Response", (_STATUS, _LANG, DATE), "AO! AA! AE! BL CQ AF+ AG+"),
    spec("64", "Patron Information Response",
         (_STATUS, _LANG, DATE, Fixed("hold items count", 4, "digits"),
          Fixed("overdue items count", 4, "digits"), Fixed("charged items count", 4, "digits"),
          Fixed("fine items count", 4, "digits"), Fixed("recall items count", 4, "digits"),
          Fixed("unavailable holds count", 4, "digits")),
         "AO! AA! AE! BZ CA CB BL CQ BH BV CC AS+ AT+ AU+ AV+ BU+ CD+ BD BE BF AF+ AG+"),
    spec("12", "Checkout Response", (Fixed("ok", 1, "ok"), Fixed("renewal ok", 1, "yn"),
                                     Fixed("magnetic media", 1, "ynu"),
                                     Fixed("desensitize", 1, "ynu"), DATE), _CIRC),
    spec("30", "Renew Response", (Fixed("ok", 1, "ok"), Fixed("renewal ok", 1, "yn"),
                                  Fixed("magnetic media", 1, "ynu"),
                                  Fixed("desensitize", 1, "ynu"), DATE), _CIRC),
    spec("10", "Checkin Response", (Fixed("ok", 1, "ok"), Fixed("resensitize", 1, "yn"),
                                    Fixed("magnetic media", 1, "ynu"), Fixed("alert", 1, "yn"),
                                    DATE),
         "AO! AB! AQ! AJ CL AA CK CH CT CV CY DA AF+ AG+"),
    spec("18", "Item Information Response", (Fixed("circulation status", 2, "digits"),
                                             Fixed("security marker", 2, "digits"),
                                             Fixed("fee type", 2, "digits"), DATE),
         "CF AH CJ CM AB! AJ! BG BH BV CK AQ AP CH AF+ AG+"),
    spec("20", "Item Status Update Response", (Fixed("item properties ok", 1, "ok"), DATE),
         "AB! AJ CH AF+ AG+"),
    spec("66", "Renew All Response", (Fixed("ok", 1, "ok"), Fixed("renewed count", 4, "digits"),
                                      Fixed("unrenewed count", 4, "digits"), DATE),
         "AO! BM+ BN+ AF+ AG+"),
    spec("36", "End Session Response", (Fixed("end session", 1, "yn"), DATE), "AO! AA! AF+ AG+"),
    spec("38", "Fee Paid Response", (Fixed("payment accepted", 1, "yn"), DATE),
         "AO! AA! BK AF+ AG+"),
    spec("16", "Hold Response", (Fixed("ok", 1, "ok"), Fixed("available", 1, "yn"), DATE),
         "BW BR BS AO! AA! AB AJ AF+ AG+"),
)}

# Which response answers which request (01 Block Patron is answered with 24).
ANSWERS: dict[str, str] = {
    "93": "94", "99": "98", "23": "24", "63": "64", "11": "12", "09": "10", "17": "18",
    "19": "20", "29": "30", "65": "66", "35": "36", "37": "38", "15": "16", "01": "24",
    "25": "26",
}

# The supported-messages field (BX) of 98, position by position (SIP2 2.00).
BX_ORDER = ("23", "11", "09", "01", "99", "97", "93", "63", "35", "37", "17", "19", "25",
            "15", "29", "65")

# Patron status (14 characters, Y or blank), position by position.
PATRON_STATUS = ("charge privileges denied", "renewal privileges denied",
                 "recall privileges denied", "hold privileges denied",
                 "card reported lost", "too many items charged", "too many items overdue",
                 "too many renewals", "too many claims of items returned",
                 "too many items lost", "excessive outstanding fines",
                 "excessive outstanding fees", "recall overdue", "too many items billed")

# The summary field of 63 (10 characters): which list the response carries.
SUMMARY = ("hold items", "overdue items", "charged items", "fine items", "recall items",
           "unavailable holds")

# Circulation status (18), alert type (3M extension CV), media type (CK).
CIRC_OTHER, CIRC_AVAILABLE, CIRC_CHARGED, CIRC_ON_HOLD_SHELF = "01", "03", "04", "08"
CIRC_IN_TRANSIT = "10"
# Check-in alert types (CV, a 3M extension sorters read): hold for this library, hold for
# another library, send to another library.
ALERT_HOLD_HERE, ALERT_HOLD_ELSEWHERE, ALERT_TRANSFER = "01", "02", "04"
MEDIA_TYPES = {"book": "001", "children": "001", "reference": "001", "magazine": "002",
               "journal": "003", "audio": "004", "video": "005", "dvd": "005", "cd": "006"}
MEDIA_OTHER = "000"
# Fee types (37 and 18): what a payment at a kiosk is for. Rental, computer
# access and hold fees pay for a service; the others settle a reader's debt.
SERVICE_FEE_TYPES = frozenset({"06", "08", "09"})
FEE_TYPE_OTHER = "01"
# Security marker (18): RFID has no code in 2.00, so "00 other".
SECURITY_OTHER = "00"
