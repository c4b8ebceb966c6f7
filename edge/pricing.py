"""What a reader pays for a service, and why: one pure rule for the desk, online and the cloud.

A price is a service's base price (tiyn; 0 is free) less the discount a rule
gives the reader. Rules name who (a reader category or "*", a partner
organisation or "*"), what (a service, a kind of service, the group of all
bookable services, a kind of charge such as a fine, or "*") and when (an
optional first and last day). The built-in defaults (``DEFAULT_RULES``) are
rules too, and a configured rule with the same who and what replaces one.

How a rule is chosen:

* A reader is looked at in **slots**: their own category, "member" while they
  hold an active library membership on the day (a lapsed membership loses it),
  and "*" (every reader).
* In each slot the **most specific** matching rule wins: one naming a partner
  beats one that does not; then a service beats a kind, a kind beats the group
  "service", the group beats "*"; then the rule that started last; then a
  configured rule beats a default; then the newer rule (higher id).
* Across slots the reader gets the **best price**: discounts do not add up,
  the largest one applies (a partner's staff member who is also a member pays
  40 % less for counselling, not 70 %).

Amounts are rounded half up to the tiyn, as fines are (cloud/fines.py uses
``percent_for`` too, so there is one discount rule).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

ANY = "*"
# The kinds of service a library sells: a membership with a term; counselling
# slots in a consultation room; workshops and events with seats.
KINDS = ("membership", "counselling", "workshop", "event")
BOOKABLE = ("counselling", "workshop", "event")
# "service" in a rule means any bookable service (not a membership).
SERVICE_GROUP = "service"
# Kinds of charge that are not services (fines, replacement fees: cloud/fines.py).
CHARGES = ("fine", "replacement")
TARGETS = (ANY, SERVICE_GROUP, *KINDS, *CHARGES)
# The slot a reader holding an active membership is looked at in, besides their own.
MEMBER = "member"
# Reader categories the network uses (the desk's registration form offers these).
CATEGORIES = ("adult", "child", "student", "pensioner", "partner_staff", "supported")


@dataclass(frozen=True)
class Rule:
    """One discount rule; ``id`` is the cloud's row id ("" for a built-in default)."""

    category: str
    kind: str
    percent: int
    partner: str = ANY
    service: str = ANY
    valid_from: date | None = None
    valid_to: date | None = None
    id: int = 0

    def applies_on(self, on: date | None) -> bool:
        """True if ``on`` falls within the rule's days (inclusive); None: any day."""
        if on is None:
            return True
        return ((self.valid_from is None or self.valid_from <= on)
                and (self.valid_to is None or on <= self.valid_to))

    def covers(self, kind: str, service: str | None) -> bool:
        """True if the rule is about this charge."""
        if self.service != ANY and self.service != service:
            return False
        return self.kind in (ANY, kind) or (self.kind == SERVICE_GROUP and kind in BOOKABLE)

    def same_target(self, other: Rule) -> bool:
        """The same who and what (a configured rule replaces such a default)."""
        return (self.category, self.partner, self.kind, self.service) == (
            other.category, other.partner, other.kind, other.service)


# The network's decision (the issue that asked for services): membership is free
# for a partner's supported clients and 40 % off for partner staff and their
# families; bookable services cost partner staff 40 % and members 30 % less.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("supported", "membership", 100),
    Rule("partner_staff", "membership", 40),
    Rule("partner_staff", SERVICE_GROUP, 40),
    Rule(MEMBER, SERVICE_GROUP, 30),
)


@dataclass(frozen=True)
class Buyer:
    """Who pays: their category, their partner organisation, and whether they are a member."""

    category: str
    partner: str | None = None
    member: bool = False

    def slots(self) -> tuple[str, ...]:
        """The categories a rule may name to apply to this reader."""
        return (self.category, *((MEMBER,) if self.member else ()), ANY)


@dataclass(frozen=True)
class Quote:
    """A price: the base, the discount that applied (if any) and what is to be paid."""

    base: int
    percent: int
    amount: int
    rule: Rule | None = None

    @property
    def discount(self) -> int:
        """How much less than the base the reader pays (tiyn)."""
        return self.base - self.amount

    @property
    def free(self) -> bool:
        """Nothing to pay."""
        return self.amount == 0

    def reason(self) -> tuple[str, dict[str, Any]]:
        """Why, as a word key and its values, for any page's language.

        ``price.free`` (the service costs nothing), ``price.full`` (no discount
        applies), ``price.discount`` with percent, category and partner.
        """
        if self.base == 0:
            return "price.free", {}
        if self.rule is None or self.percent == 0:
            return "price.full", {}
        return "price.discount", {"percent": self.percent, "category": self.rule.category,
                                  "partner": "" if self.rule.partner == ANY
                                  else self.rule.partner}

    def note(self) -> str:
        """The reason in plain English, for the event, the log and a receipt's small print."""
        key, args = self.reason()
        if key == "price.free":
            return "free of charge"
        if key == "price.full":
            return "full price"
        who = args["category"] + (f" of {args['partner']}" if args["partner"] else "")
        rule = f", rule {self.rule.id}" if self.rule and self.rule.id else ", default rule"
        return f"{args['percent']} % off: {who}{rule}"


def rules_with_defaults(configured: Iterable[Rule],
                        defaults: Sequence[Rule] = DEFAULT_RULES) -> list[Rule]:
    """The configured rules and the defaults no undated configured rule replaces."""
    mine = list(configured)
    kept = [d for d in defaults if not any(
        r.same_target(d) and r.valid_from is None and r.valid_to is None for r in mine)]
    return [*kept, *mine]


def _what_rank(rule: Rule) -> int:
    if rule.service != ANY:
        return 3
    if rule.kind == SERVICE_GROUP:
        return 1
    return 0 if rule.kind == ANY else 2


def _specificity(rule: Rule) -> tuple[int, int, date, int, int]:
    return (rule.partner != ANY, _what_rank(rule), rule.valid_from or date.min,
            rule.id > 0, rule.id)


def rule_for(rules: Iterable[Rule], buyer: Buyer, kind: str, service: str | None,
             on: date | None) -> Rule | None:
    """The rule that gives ``buyer`` the best price for this charge on ``on``, or None."""
    best: Rule | None = None
    candidates = [r for r in rules if r.covers(kind, service) and r.applies_on(on)
                  and r.partner in (ANY, buyer.partner)]
    for slot in buyer.slots():
        mine = [r for r in candidates if r.category == slot]
        if not mine:
            continue
        top = max(mine, key=_specificity)
        if best is None or _clamp(top.percent) > _clamp(best.percent):
            best = top
    return best


def _clamp(percent: int) -> int:
    return max(0, min(100, percent))


def apply_percent(amount: int, percent: int) -> int:
    """``amount`` less ``percent`` %, rounded half up to the tiyn."""
    return (amount * (100 - _clamp(percent)) + 50) // 100


def price(base: int, kind: str, buyer: Buyer, on: date, rules: Iterable[Rule],
          service: str | None = None) -> Quote:
    """What ``buyer`` pays on ``on`` for a charge of ``base`` tiyn of this kind (and service)."""
    if base <= 0:
        return Quote(0, 0, 0)
    rule = rule_for(rules, buyer, kind, service, on)
    pct = _clamp(rule.percent) if rule else 0
    return Quote(base, pct, apply_percent(base, pct), rule if pct else None)


def rules_from_table(table: Mapping[tuple[str, str], int]) -> list[Rule]:
    """A (category, kind) -> percent table (cloud/fines.py's older form) as rules."""
    return [Rule(category, kind, pct) for (category, kind), pct in table.items()]


def percent_for(rules: Iterable[Rule], category: str, kind: str,
                on: date | None = None, partner: str | None = None,
                member: bool = False) -> int:
    """The discount in percent for a charge of ``kind`` (``on`` None: whatever the dates)."""
    rule = rule_for(rules, Buyer(category, partner, member), kind, None, on)
    return _clamp(rule.percent) if rule else 0


def membership_term(today: date, running_until: date | None, term_days: int
                    ) -> tuple[date, date]:
    """A new membership's first and last day: from today, or — a renewal — from the day
    after the running term ends (nobody loses the days they paid for)."""
    starts = today if running_until is None or running_until < today \
        else running_until + timedelta(days=1)
    return starts, starts + timedelta(days=max(1, term_days) - 1)
