"""The price a reader pays, as tables: the network's defaults, the partner's discounts,
effective dates, most-specific-wins, the best of a reader's slots, free, and tiyn rounding."""
from __future__ import annotations

from datetime import date

import pytest

from cloud import fines
from edge import pricing
from edge.pricing import ANY, Buyer, Rule

TODAY = date(2026, 11, 22)
TOMORROW = date(2026, 11, 23)
YESTERDAY = date(2026, 11, 21)
DEFAULTS = list(pricing.DEFAULT_RULES)
MEMBERSHIP, COUNSELLING, WORKSHOP = 500_000, 300_000, 200_000


@pytest.mark.parametrize(("buyer", "kind", "base", "amount", "percent"), [
    # The issue's own words: a partner's supported clients get free membership...
    (Buyer("supported", "p-umit"), "membership", MEMBERSHIP, 0, 100),
    # ...its staff and their families 40 % off the membership...
    (Buyer("partner_staff", "p-umit"), "membership", MEMBERSHIP, 300_000, 40),
    # ...counselling costs library members 30 % less and partner staff 40 % less.
    (Buyer("adult", member=True), "counselling", COUNSELLING, 210_000, 30),
    (Buyer("partner_staff", "p-umit"), "counselling", COUNSELLING, 180_000, 40),
    # Discounts do not add up: the best one applies.
    (Buyer("partner_staff", "p-umit", member=True), "counselling", COUNSELLING, 180_000, 40),
    # A reader with no membership (or a lapsed one) pays the full price.
    (Buyer("adult"), "counselling", COUNSELLING, COUNSELLING, 0),
    (Buyer("pensioner"), "workshop", WORKSHOP, WORKSHOP, 0),
    # Members' 30 % is on bookable services, not on the membership itself.
    (Buyer("adult", member=True), "membership", MEMBERSHIP, MEMBERSHIP, 0),
    (Buyer("adult", member=True), "event", 100_001, 70_001, 30),
    # A free service is free for everyone, with no rule to name.
    (Buyer("partner_staff", "p-umit"), "workshop", 0, 0, 0),
])
def test_the_default_table(buyer: Buyer, kind: str, base: int, amount: int,
                           percent: int) -> None:
    q = pricing.price(base, kind, buyer, TODAY, DEFAULTS)
    assert (q.amount, q.percent) == (amount, percent)
    assert q.discount == base - amount
    assert (q.rule is None) == (percent == 0)


EMPOWER = "svc-empower"
RULES = pricing.rules_with_defaults([
    # Empowerment workshops are free to a partner's people and to members.
    Rule("supported", "workshop", 100, service=EMPOWER, id=1),
    Rule("partner_staff", "workshop", 100, service=EMPOWER, id=2),
    Rule("member", "workshop", 100, service=EMPOWER, id=3),
    # One partner negotiated less for its staff's memberships.
    Rule("partner_staff", "membership", 20, partner="p-small", id=4),
    # Pensioners' counselling: 50 % from tomorrow only.
    Rule("pensioner", "counselling", 50, valid_from=TOMORROW, id=5),
    # A spring promotion that ended yesterday.
    Rule(ANY, "event", 25, valid_from=date(2026, 3, 1), valid_to=YESTERDAY, id=6),
    # Half price for everyone at one workshop.
    Rule(ANY, "workshop", 50, service="svc-poetry", id=7),
    # Members' services discount switched off for events from today (a dated rule of the
    # same target wins over the default while it runs).
    Rule("member", "event", 0, valid_from=TODAY, id=8),
])


@pytest.mark.parametrize(("buyer", "kind", "service", "on", "amount", "rule_id"), [
    (Buyer("supported", "p-umit"), "workshop", EMPOWER, TODAY, 0, 1),
    (Buyer("partner_staff", "p-umit"), "workshop", EMPOWER, TODAY, 0, 2),
    (Buyer("adult", member=True), "workshop", EMPOWER, TODAY, 0, 3),
    (Buyer("adult"), "workshop", EMPOWER, TODAY, WORKSHOP, None),
    # Another workshop: the general discounts, not the empowerment rule.
    (Buyer("adult", member=True), "workshop", "svc-other", TODAY, 140_000, 0),
    # Most specific wins: the partner's own rule over the category's.
    (Buyer("partner_staff", "p-small"), "membership", None, TODAY, 160_000, 4),
    (Buyer("partner_staff", "p-umit"), "membership", None, TODAY, 120_000, 0),
    # A rule that starts tomorrow does not apply today; tomorrow it does.
    (Buyer("pensioner"), "counselling", None, TODAY, WORKSHOP, None),
    (Buyer("pensioner"), "counselling", None, TOMORROW, 100_000, 5),
    # A rule that ended yesterday no longer applies; it did then.
    (Buyer("adult"), "event", None, TODAY, WORKSHOP, None),
    (Buyer("adult"), "event", None, YESTERDAY, 150_000, 6),
    # The best slot: everyone's 50 % at the poetry workshop beats a member's 30 %.
    (Buyer("adult", member=True), "workshop", "svc-poetry", TODAY, 100_000, 7),
    # A 0 % rule switches the members' default off for events while it runs.
    (Buyer("adult", member=True), "event", None, TODAY, WORKSHOP, None),
    (Buyer("adult", member=True), "event", None, YESTERDAY, 140_000, 0),
])
def test_configured_rules(buyer: Buyer, kind: str, service: str | None, on: date, amount: int,
                          rule_id: int | None) -> None:
    base = WORKSHOP
    q = pricing.price(base, kind, buyer, on, RULES, service)
    assert q.amount == amount
    assert (q.rule.id if q.rule else None) == rule_id


def test_an_undated_configured_rule_replaces_the_default_it_names() -> None:
    rules = pricing.rules_with_defaults([Rule("supported", "membership", 50, id=9)])
    q = pricing.price(MEMBERSHIP, "membership", Buyer("supported"), TODAY, rules)
    assert (q.amount, q.rule.id) == (250_000, 9)
    assert len([r for r in rules if r.category == "supported"]) == 1


@pytest.mark.parametrize(("base", "percent", "amount"), [
    (1, 30, 1),           # 0.7 tiyn -> 1 (half up)
    (1, 50, 1),           # 0.5 -> 1
    (3, 50, 2),           # 1.5 -> 2
    (101, 40, 61),        # 60.6 -> 61
    (99_999, 30, 69_999),  # 69 999.3 -> 69 999
    (150_050, 30, 105_035),
    (5, 100, 0),
    (5, 0, 5),
    (500, 140, 0),        # a mistyped rule never makes a price negative
    (500, -10, 500),      # nor more than the base
])
def test_rounding_in_tiyn(base: int, percent: int, amount: int) -> None:
    rules = [Rule("adult", ANY, percent, id=1)]
    assert pricing.price(base, "workshop", Buyer("adult"), TODAY, rules).amount == amount


@pytest.mark.parametrize(("quote", "key", "args", "note"), [
    (pricing.price(0, "workshop", Buyer("adult"), TODAY, DEFAULTS), "price.free", {},
     "free of charge"),
    (pricing.price(COUNSELLING, "counselling", Buyer("adult"), TODAY, DEFAULTS), "price.full",
     {}, "full price"),
    (pricing.price(MEMBERSHIP, "membership", Buyer("partner_staff", "p-small"), TODAY, RULES),
     "price.discount", {"percent": 20, "category": "partner_staff", "partner": "p-small"},
     "20 % off: partner_staff of p-small, rule 4"),
    (pricing.price(COUNSELLING, "counselling", Buyer("child", member=True), TODAY, DEFAULTS),
     "price.discount", {"percent": 30, "category": "member", "partner": ""},
     "30 % off: member, default rule"),
])
def test_the_reason_a_receipt_shows(quote: pricing.Quote, key: str, args: dict,
                                    note: str) -> None:
    assert quote.reason() == (key, args)
    assert quote.note() == note


def test_fines_are_discounted_by_the_same_rule() -> None:
    # cloud/fines.py keeps its (category, kind) table; the lookup is pricing's.
    assert fines.DEFAULT_DISCOUNTS == {(r.category, r.kind): r.percent
                                      for r in pricing.DEFAULT_RULES}
    table = {("partner_staff", "*"): 40, ("*", "fine"): 10}
    # The best of the reader's slots: their category's 40 % over everyone's 10 %.
    assert fines.discounted(10_000, "partner_staff", "fine", table) == 6_000
    assert fines.discounted(10_000, "adult", "fine", table) == 9_000
    assert fines.discounted(10_000, "adult", "replacement", table) == 10_000
