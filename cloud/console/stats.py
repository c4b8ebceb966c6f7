"""Statistics for the fund's managers: loans per day and place, busiest hours, what is read,
what readers wait for, how much of the fund is used, and visits — drawn as charts.

Days and hours are the library's (``cloud.timezone``): the database groups by the
local calendar, so a loan at 00:30 in Almaty counts for that day, not the UTC one.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import render_template, request
from peewee import SQL, NodeList, fn

from cloud import settings
from cloud import store as s
from cloud.console import charts
from cloud.console.auth import bp, require
from cloud.console.common import int_arg, tr

PERIODS = (7, 30, 90, 365)
TOP = 10


def _bucket(field: Any, unit: str) -> Any:
    """The local day ("YYYY-MM-DD"), hour ("HH") or weekday ("0"=Monday) of an instant."""
    if s.is_postgres():
        local = NodeList((field, SQL("AT TIME ZONE"), settings.get("cloud.timezone")))
        if unit == "dow":
            return fn.to_char(local, "ID")  # 1 = Monday
        return fn.to_char(local, {"day": "YYYY-MM-DD", "hour": "HH24"}[unit])
    offset = settings.library_tz().utcoffset(datetime.now()) or timedelta(0)
    shift = f"{int(offset.total_seconds() // 60):+d} minutes"
    fmt = {"day": "%Y-%m-%d", "hour": "%H", "dow": "%w"}[unit]  # %w: 0 = Sunday
    return fn.strftime(fmt, fn.substr(field, 1, 19), shift)


def _dow(value: Any) -> int:
    """0 = Monday, whichever database answered."""
    n = int(value)
    return n - 1 if s.is_postgres() else (n + 6) % 7


@dataclass
class Stats:
    """Everything the statistics page draws."""

    days: list[str]
    per_day: dict[str, list[int]]
    hours: list[list[int]]
    top_titles: list[tuple[str, int]]
    top_authors: list[tuple[str, int]]
    demand: list[tuple[str, int, int]]
    unmet: int
    used: int
    fund: int
    used_by_type: list[tuple[str, int]]
    visits: dict[str, list[int]]
    loans: int


def compute(period: int, node: str = "", today: date | None = None) -> Stats:
    """The figures for the last ``period`` days (at ``node`` if given)."""
    today = today or settings.today()
    first = today - timedelta(days=period - 1)
    since = datetime.combine(first, datetime.min.time(), settings.library_tz())
    days = [(first + timedelta(days=i)).isoformat() for i in range(period)]
    index = {d: i for i, d in enumerate(days)}
    loans = s.Loan.select().where(s.Loan.checked_out_at >= since)
    if node:
        loans = loans.where(s.Loan.node == node)
    day = _bucket(s.Loan.checked_out_at, "day")
    per_day: dict[str, list[int]] = defaultdict(lambda: [0] * period)
    for d, where, n in (loans.select(day, s.Loan.node, fn.COUNT(s.Loan.id))
                        .group_by(day, s.Loan.node).tuples()):
        if d in index:
            per_day[where][index[d]] += n
    hours = [[0] * 24 for _ in range(7)]
    for col in (s.Loan.checked_out_at, s.Loan.returned_at):
        dow, hour = _bucket(col, "dow"), _bucket(col, "hour")
        q = s.Loan.select(dow, hour, fn.COUNT(s.Loan.id)).where(col >= since)
        if node:
            q = q.where((s.Loan.node if col is s.Loan.checked_out_at else s.Loan.returned_node)
                        == node)
        for w, h, n in q.group_by(dow, hour).tuples():
            hours[_dow(w)][int(h)] += n
    joined = loans.select().join(s.Copy, on=(s.Copy.barcode == s.Loan.copy)).join(
        s.Title, on=(s.Title.id == s.Copy.title_id))
    top_titles = [(f"{t} — {a}" if a else t, n) for t, a, n in joined.select(
        s.Title.title, s.Title.author, fn.COUNT(s.Loan.id)).group_by(
        s.Title.id, s.Title.title, s.Title.author).order_by(fn.COUNT(s.Loan.id).desc())
        .limit(TOP).tuples()]
    top_authors = [(a or "—", n) for a, n in joined.select(s.Title.author, fn.COUNT(s.Loan.id))
                   .group_by(s.Title.author).order_by(fn.COUNT(s.Loan.id).desc())
                   .limit(TOP).tuples()]
    waiting = list(s.Hold.select(s.Hold.title_id, fn.COUNT(s.Hold.id))
                   .where(s.Hold.status.in_(["waiting", "ready"]))
                   .group_by(s.Hold.title_id).order_by(fn.COUNT(s.Hold.id).desc())
                   .limit(TOP).tuples())
    ids = [t for t, _ in waiting] or [""]
    owned = dict(s.Copy.select(s.Copy.title_id, fn.COUNT(s.Copy.barcode))
                 .where(s.Copy.title_id.in_(ids) & s.Copy.status.not_in(["withdrawn", "lost"]))
                 .group_by(s.Copy.title_id).tuples())
    names = dict(s.Title.select(s.Title.id, s.Title.title).where(s.Title.id.in_(ids)).tuples())
    demand = [(names.get(t, t), n, owned.get(t, 0)) for t, n in waiting]
    unmet = s.Hold.select().where((s.Hold.status == "waiting") & s.Hold.copy.is_null()).count()
    in_fund = s.Copy.status.not_in(["withdrawn", "lost"])
    lent_copies = loans.select(s.Loan.copy).distinct()
    fund = s.Copy.select().where(in_fund).count()
    used = s.Copy.select().where(in_fund & s.Copy.barcode.in_(lent_copies)).count()
    by_type = []
    for kind, total in (s.Copy.select(s.Title.item_type, fn.COUNT(s.Copy.barcode))
                        .join(s.Title, on=(s.Title.id == s.Copy.title_id)).where(in_fund)
                        .group_by(s.Title.item_type).tuples()):
        n = (s.Copy.select().join(s.Title, on=(s.Title.id == s.Copy.title_id))
             .where(in_fund & (s.Title.item_type == kind) & s.Copy.barcode.in_(lent_copies))
             .count())
        by_type.append((kind, round(100 * n / total) if total else 0))
    return Stats(days, dict(per_day), hours, top_titles, top_authors, demand, unmet, used,
                 fund, by_type, _visits(since, node, index, period), loans.count())


def _visits(since: datetime, node: str, index: dict[str, int], period: int
            ) -> dict[str, list[int]]:
    """Readers who came to a place on a day (to borrow or return), per place and day."""
    seen: set[tuple[str, str, str]] = set()
    for col, where in ((s.Loan.checked_out_at, s.Loan.node),
                       (s.Loan.returned_at, s.Loan.returned_node)):
        day = _bucket(col, "day")
        q = s.Loan.select(s.Loan.reader, where, day).where((col >= since)
                                                          & where.is_null(False))
        if node:
            q = q.where(where == node)
        seen.update(q.distinct().tuples())
    out: dict[str, list[int]] = defaultdict(lambda: [0] * period)
    for _, place, d in seen:
        if d in index:
            out[place][index[d]] += 1
    return dict(out)


def _label(day: str, period: int) -> str:
    d = date.fromisoformat(day)
    return f"{d.day:02d}.{d.month:02d}" if period <= 90 else f"{d.month:02d}.{d.year % 100}"


@bp.get("/stats")
@require()
def stats() -> Any:
    """The statistics page."""
    period = int_arg("days", 30, 1, 365) or 30
    period = min(PERIODS, key=lambda p: abs(p - period))
    node = request.args.get("node", "")
    st = compute(period, node)
    labels = [_label(d, period) for d in st.days]
    weekdays = [tr(f"st.dow.{i}") for i in range(7)]
    figures = {
        "per_day": charts.stacked_columns(labels, st.per_day, tr("st.per_day")),
        "hours": charts.heatmap(st.hours, weekdays, tr("st.hours")),
        "titles": charts.hbars(st.top_titles, tr("st.top_titles")),
        "authors": charts.hbars(st.top_authors, tr("st.top_authors"), charts.PALETTE[4]),
        "demand": charts.paired_bars(st.demand, (tr("st.waiting"), tr("st.owned")),
                                     tr("st.demand")),
        "used": charts.donut(st.used, st.fund, tr("st.used_caption"), tr("st.used")),
        "used_by_type": charts.hbars([(tr(f"st.type.{k}"), v) for k, v in st.used_by_type],
                                     tr("st.used_by_type"),
                                     charts.PALETTE[2], "%", width=400, left=120),
        "visits": charts.stacked_columns(labels, st.visits, tr("st.visits")),
    }
    nodes = list(s.Node.select().order_by(s.Node.kind.desc(), s.Node.id))
    return render_template("console/stats.html", st=st, figures=figures, period=period,
                           periods=PERIODS, node=node, nodes=nodes,
                           visits_total=sum(sum(v) for v in st.visits.values()))
