"""Sample services for the demo and tests: partner organisations, a membership, counselling,
workshops and an evening, their sessions at every branch, and the empowerment workshop's
rule (free to a partner's people and to members).

Pure data like kitap/sample_data.py (times come from the caller's ``start``); ``install``
loads it into a cloud database through ``cloud.service_actions``, as staff would.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kitap.sample_data import NodeSpec, Reader

PARTNERS: tuple[tuple[str, str], ...] = (
    ("p-umit", "«Үміт» қоғамдық қоры"),
    ("p-zhanuya", "«Жанұя» отбасын қолдау орталығы"),
)


@dataclass(frozen=True)
class ServiceSpec:
    """A service the sample library offers (prices in tiyn)."""

    id: str
    kind: str
    names: tuple[str, str, str]
    price: int
    capacity: int = 1
    term_days: int | None = None
    host: str = ""
    room: str = ""
    minutes: int = 90


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("membership-year", "membership",
                ("Жылдық абонемент", "Годовой абонемент", "Yearly membership"), 500_000,
                term_days=365),
    ServiceSpec("cn-legal", "counselling",
                ("Заңгер кеңесі", "Консультация юриста", "Legal advice"), 300_000,
                host="Дана Сейітова", room="Кеңес бөлмесі 1", minutes=45),
    ServiceSpec("cn-career", "counselling",
                ("Мансап бойынша кеңес", "Карьерная консультация", "Career counselling"),
                200_000, host="Ерлан Омаров", room="Кеңес бөлмесі 2", minutes=45),
    ServiceSpec("ws-business", "workshop",
                ("Шағын бизнес негіздері", "Основы малого бизнеса", "Small business basics"),
                200_000, capacity=12, host="Айгерім Нұрланова", room="Зал 2"),
    ServiceSpec("ws-empower", "workshop",
                ("Әйелдер кәсіпкерлігі: алғашқы қадам", "Женское предпринимательство: "
                 "первый шаг", "Women in business: the first step"), 150_000, capacity=15,
                host="Сәуле Жұмабаева", room="Зал 2", minutes=120),
    ServiceSpec("ws-robots", "workshop",
                ("Балаларға робототехника", "Робототехника для детей", "Robotics for children"),
                100_000, capacity=10, host="Тимур Ли", room="Балалар залы", minutes=60),
    ServiceSpec("ev-abai", "event",
                ("Абай оқулары: әдеби кеш", "Абаевские чтения: литературный вечер",
                 "Abai readings: a literary evening"), 0, capacity=40, room="Үлкен зал",
                minutes=120),
)
# The issue's own rule: empowerment workshops are free to a partner's people and to members.
FREE_EMPOWERMENT = ("supported", "partner_staff", "member")
# (service, day offset, hour) for each branch: a week and a half of the library's life.
SCHEDULE: tuple[tuple[str, int, int], ...] = (
    ("cn-legal", 0, 11), ("cn-legal", 0, 12), ("cn-legal", 1, 11), ("cn-career", 1, 15),
    ("cn-career", 2, 15), ("ws-business", 1, 18), ("ws-empower", 3, 17), ("ws-robots", 2, 16),
    ("ws-robots", 6, 11), ("ev-abai", 5, 18), ("ws-business", 8, 18),
)


@dataclass(frozen=True)
class SessionSpec:
    """One session to schedule."""

    id: str
    service: str
    branch: str
    starts_at: datetime
    ends_at: datetime
    room: str
    host: str
    capacity: int


def sessions(nodes: Sequence[NodeSpec], start: datetime) -> list[SessionSpec]:
    """The schedule at every branch, from the day of ``start`` (aware) on."""
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    specs = {s.id: s for s in SERVICES}
    out = []
    for node in nodes:
        if node.kind != "branch":
            continue
        for i, (sid, day, hour) in enumerate(SCHEDULE):
            svc = specs[sid]
            at = day0 + timedelta(days=day, hours=hour)
            out.append(SessionSpec(f"{sid}-{node.id}-{i:02d}", sid, node.id, at,
                                   at + timedelta(minutes=svc.minutes), svc.room, svc.host,
                                   svc.capacity))
    return out


def partner_of(reader: Reader) -> str | None:
    """The partner organisation of a supported client or a partner's staff member."""
    if reader.category not in ("supported", "partner_staff"):
        return None
    return PARTNERS[zlib.crc32(reader.card.encode()) % len(PARTNERS)][0]


def install(nodes: Sequence[NodeSpec], readers: Sequence[Reader], start: datetime) -> int:
    """Load the partners, services, the empowerment rule and the schedule into the cloud
    database the caller connected; returns the sessions scheduled."""
    from cloud import service_actions as sa

    for pid, name in PARTNERS:
        sa.save_partner(pid, name)
    for r in readers:
        partner = partner_of(r)
        if partner:
            sa.set_reader_partner(r.card, r.category, partner)
    for svc in SERVICES:
        sa.save_service(sa.ServiceForm(svc.id, svc.kind, svc.names, svc.price,
                                       term_days=svc.term_days, capacity=svc.capacity))
    for category in FREE_EMPOWERMENT:
        sa.save_rule(category=category, kind="workshop", percent=100, service="ws-empower",
                     note="empowerment workshops are free", by="sample data")
    todo = [x for x in sessions(nodes, start) if x.ends_at > start]
    for x in todo:
        sa.schedule(x.service, x.branch, x.starts_at, x.ends_at, room=x.room, host=x.host,
                    capacity=x.capacity, session_id=x.id, now=start)
    return len(todo)


def describe(receipt: dict[str, Any]) -> str:
    """A desk receipt in one line for the demo's terminal (amounts in tenge)."""
    q = receipt["quote"]
    base, paid = q["base"] // 100, receipt.get("paid", 0) // 100
    if not q["base"]:
        return "free"
    if not q["discount"]:
        return f"{base} ₸, paid {paid} ₸"
    return f"{base} ₸ − {q['percent']} % ({q['note']}) = {q['amount'] // 100} ₸, paid {paid} ₸"
