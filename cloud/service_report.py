"""The services' figures for a period: attendance, revenue by service and by reader category,
discounts granted (the amount forgone) and no-shows — for the console's report and its CSV.

What counts:

* A **session** counts in the period it starts in (the library's calendar).
* A **booking** counts when it holds a seat (active, seated); the waiting list
  and cancelled bookings do not, except that money kept from them is revenue.
* **Revenue** is what was taken and not handed back: a booking's ``paid`` (of a
  session in the period) plus memberships **sold** in the period.
* **Discounts granted** are base price minus price, for seated bookings and for
  memberships sold: what the library chose not to charge.
* A **no-show** is a seated booking marked so; a seated booking of a session
  that has ended with no mark is **unmarked** (staff still owe the roster).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from cloud import service_models as m
from cloud import services, settings
from cloud import store as s


@dataclass
class Line:
    """The figures of one service (or one reader category)."""

    key: str
    sessions: int = 0
    seated: int = 0
    attended: int = 0
    no_show: int = 0
    unmarked: int = 0
    revenue: int = 0
    discounts: int = 0
    sold: int = 0  # memberships sold

    @property
    def no_show_rate(self) -> int:
        """No-shows among the marked, in whole percent."""
        marked = self.attended + self.no_show
        return round(100 * self.no_show / marked) if marked else 0


@dataclass
class Report:
    """A period's figures, by service and by reader category, and their totals."""

    first: date
    last: date
    branch: str
    by_service: list[Line] = field(default_factory=list)
    by_category: list[Line] = field(default_factory=list)
    total: Line = field(default_factory=lambda: Line("*"))
    names: dict[str, str] = field(default_factory=dict)
    bookings: list[tuple[m.Booking, m.ServiceSession]] = field(default_factory=list)


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    tz = settings.library_tz()
    return (datetime.combine(first, time.min, tz),
            datetime.combine(last + timedelta(days=1), time.min, tz))


def compute(days: int, branch: str = "", today: date | None = None, lang: str = "en",
            now: datetime | None = None) -> Report:
    """The figures of the ``days`` days up to ``today`` (at ``branch`` if given)."""
    now = now or s.utcnow()
    last = today or settings.today(now)
    first = last - timedelta(days=days - 1)
    since, until = _bounds(first, last)
    rep = Report(first, last, branch)
    svcs = {v.id: v for v in m.Service.select()}
    rep.names = {k: services.service_name(v, lang) for k, v in svcs.items()}
    sessions_q = m.ServiceSession.select().where((m.ServiceSession.starts_at >= since)
                                                 & (m.ServiceSession.starts_at < until))
    if branch:
        sessions_q = sessions_q.where(m.ServiceSession.branch == branch)
    sessions = {x.id: x for x in sessions_q}
    by_service: dict[str, Line] = {}
    by_category: dict[str, Line] = {}

    def lines(service: str, category: str) -> tuple[Line, Line, Line]:
        return (by_service.setdefault(service, Line(service)),
                by_category.setdefault(category or "?", Line(category or "?")), rep.total)

    for x in sessions.values():
        if x.status == "scheduled":
            by_service.setdefault(x.service, Line(x.service)).sessions += 1
            rep.total.sessions += 1
    ids = list(sessions)
    for i in range(0, len(ids), 500):
        for b in m.Booking.select().where(m.Booking.session.in_(ids[i:i + 500])):
            x = sessions[b.session]
            seated = b.status == services.ACTIVE and b.seat == services.SEATED
            for line in lines(x.service, b.category):
                line.revenue += b.paid
                if not seated:
                    continue
                line.seated += 1
                line.discounts += b.base - b.price
                if b.attendance == "attended":
                    line.attended += 1
                elif b.attendance == "no_show":
                    line.no_show += 1
                elif x.ends_at <= now:
                    line.unmarked += 1
            rep.bookings.append((b, x))
    sold = m.Membership.select().where((m.Membership.sold_at >= since)
                                       & (m.Membership.sold_at < until))
    if branch:
        sold = sold.where(m.Membership.node == branch)
    for ms in sold:
        for line in lines(ms.service, ms.category):
            line.sold += 1
            line.revenue += ms.paid
            line.discounts += ms.base - ms.price
    rep.by_service = sorted(by_service.values(), key=lambda ln: (-ln.revenue, ln.key))
    rep.by_category = sorted(by_category.values(), key=lambda ln: (-ln.revenue, ln.key))
    rep.bookings.sort(key=lambda bx: (bx[1].starts_at, bx[1].id, bx[0].key))
    return rep


def daily_attendance(rep: Report) -> dict[str, list[int]]:
    """Seated readers who came and who did not, per day of the period (for a chart)."""
    days = (rep.last - rep.first).days + 1
    out: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    tz = settings.library_tz()
    for b, x in rep.bookings:
        if b.attendance and b.status == services.ACTIVE and b.seat == services.SEATED:
            i = (x.starts_at.astimezone(tz).date() - rep.first).days
            if 0 <= i < days:
                out[b.attendance][i] += 1
    return dict(out)
