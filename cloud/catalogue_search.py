"""Finding titles whatever the case or script, and where a copy can be had right now.

A title is folded into a *skeleton*: lower case, Cyrillic (Kazakh and Russian
letters) transliterated to Latin, Kazakh Latin letters (ş, ğ, ñ, ä, ö, ü, ū, ı, q)
and diacritics reduced, then spellings that transliteration systems disagree
on merged (y/i, zh/j, kh/h, x/ks, w/v, q/k, c/k, doubled letters). A query is
folded the same way, so "абай", "АБАЙ" and "Abay" all find «Абай жолы», and
"Tolstoy" finds «Толстой». Skeletons live in ``TitleSearch``, refreshed when
titles change (the MARC importer reindexes what it wrote; every process also
picks up titles written elsewhere every ``REFRESH_EVERY`` seconds).
"""
from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import JOIN, OperationalError, fn

from cloud import store as s

logger = logging.getLogger(__name__)

# Titles written by another process (seed, admin, another cloud) reach the
# index within this many seconds; a search must not pay for a full scan each time.
REFRESH_EVERY = 30.0
# How long a search waits for a busy database's write lock when titles are
# missing from the index (a reader would find nothing): a moment, not the 2.5 s
# a page's write may wait.
INCOMPLETE_WAIT_MS = 1000
# Matches ranked in Python per query: far more than anyone pages through.
MAX_MATCHES = 1000
PAGE_SIZE = 20
# A node not heard from for this long is shown with its age, not as live.
FRESH_FOR_S = 120
TAKEABLE = ("in_slot", "on_shelf")

_CYRILLIC = {
    "а": "a", "ә": "a", "б": "b", "в": "v", "г": "g", "ғ": "g", "д": "d", "е": "e",
    "ё": "e", "ж": "zh", "з": "z", "и": "i", "й": "i", "і": "i", "к": "k", "қ": "k",
    "л": "l", "м": "m", "н": "n", "ң": "n", "о": "o", "ө": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ұ": "u", "ү": "u", "ф": "f", "х": "h", "һ": "h",
    "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sh", "ъ": "", "ы": "y", "ь": "", "э": "e",
    "ю": "iu", "я": "ia",
}
_LATIN = {"ş": "sh", "ç": "ch", "ğ": "g", "ñ": "n", "ı": "i", "ä": "a", "ö": "o", "ü": "u",
          "ū": "u", "ß": "ss", "æ": "ae", "ø": "o", "œ": "oe"}
_MERGES = [(re.compile(p), r) for p, r in (
    (r"dzh|dj|zh", "j"), (r"kh", "h"), (r"x", "ks"), (r"w", "v"), (r"q", "k"),
    (r"c(?!h)", "k"), (r"y", "i"), (r"([a-z])\1+", r"\1"),
)]
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_lock = threading.Lock()
_refreshed_at = 0.0


def skeleton(text: str) -> str:
    """``text`` folded for search: Latin letters and digits, words separated by one space."""
    out = []
    for ch in text.lower():
        out.append(_CYRILLIC.get(ch) or _LATIN.get(ch) or ch)
    flat = unicodedata.normalize("NFKD", "".join(out))
    flat = "".join(c for c in flat if not unicodedata.combining(c))
    flat = _NOT_WORD.sub(" ", flat)
    for pattern, repl in _MERGES:
        flat = pattern.sub(repl, flat)
    return " ".join(flat.split())


def isbn_digits(text: str) -> str:
    """An ISBN as digits (and a final X), hyphens and spaces dropped."""
    return re.sub(r"[^0-9Xx]", "", text).upper()


def _source(t: Any) -> str:
    return f"{t.title}|{t.author}|{t.isbn}"


def _row(t: Any) -> dict[str, Any]:
    return {"title_id": t.id, "isbn": isbn_digits(t.isbn or ""), "source": _source(t),
            "skeleton": f"{skeleton(t.title)} / {skeleton(t.author)} / {t.id.lower()}"}


def reindex(title_ids: list[str] | None = None) -> int:
    """Fold the given titles (or every title whose text changed) into the index."""
    if title_ids is not None:
        rows = [_row(t) for t in s.Title.select().where(s.Title.id.in_(title_ids))]
    else:
        ts = s.TitleSearch
        source = s.Title.title.concat("|").concat(s.Title.author).concat("|").concat(
            s.Title.isbn)
        stale = (s.Title.select(s.Title.id, s.Title.title, s.Title.author, s.Title.isbn)
                 .join(ts, JOIN.LEFT_OUTER, on=(ts.title_id == s.Title.id))
                 .where(ts.title_id.is_null() | (ts.source != source)))
        rows = [_row(t) for t in stale]
    if rows:
        with s.db.atomic():
            s.upsert(s.TitleSearch, rows, [s.TitleSearch.title_id])
    return len(rows)


def refresh(force: bool = False) -> None:
    """Reindex changed titles if this process has not looked for a while, or titles are new.

    New titles are noticed at once (two counts); edited ones within REFRESH_EVERY.
    """
    global _refreshed_at
    with _lock:
        due = force or time.monotonic() - _refreshed_at >= REFRESH_EVERY
        if due:
            _refreshed_at = time.monotonic()
    incomplete = s.TitleSearch.select().count() != s.Title.select().count()
    if due or incomplete:
        try:
            # Titles missing from the index would not be found at all: for them a
            # search waits a moment for the lock; an edit's refresh never waits.
            with _lock_wait(INCOMPLETE_WAIT_MS if incomplete else 0):
                reindex()
        except OperationalError as exc:
            if not s.is_lock_error(exc):
                raise
            # The database is busy (a big ingest batch holds the write lock): search
            # the index as it is, and try again at the next search.
            logger.info("search index not refreshed, the database is busy: %s", exc)
            with _lock:
                _refreshed_at = 0.0


@contextmanager
def _lock_wait(ms: int) -> Iterator[None]:
    """On SQLite, wait at most ``ms`` for another process's write lock: a search must
    not wait long for the index (PostgreSQL's readers and writers do not block each
    other here: only another refresh writes these rows)."""
    if s.is_postgres():
        yield
        return
    (before,) = s.db.execute_sql("PRAGMA busy_timeout").fetchone()
    s.db.execute_sql(f"PRAGMA busy_timeout = {int(ms)}")
    try:
        yield
    finally:
        s.db.execute_sql(f"PRAGMA busy_timeout = {int(before)}")


@dataclass(frozen=True)
class Results:
    """One page of matching titles, best first."""

    titles: list[Any]
    total: int
    page: int
    pages: int


def search(query: str, page: int = 1, language: str = "") -> Results:
    """Titles whose title, author, id or ISBN match every word of ``query``."""
    refresh()
    words = skeleton(query).split()
    digits = isbn_digits(query)
    if not words and not digits:
        return Results([], 0, 1, 1)
    ts = s.TitleSearch
    cond = None
    for w in words:
        part = ts.skeleton.contains(w)
        cond = part if cond is None else cond & part
    if len(digits) >= 9 and digits.isdigit():
        by_isbn = ts.isbn.contains(digits)
        cond = by_isbn if cond is None else cond | by_isbn
    query_ = (s.Title.select(s.Title, ts.skeleton).join(ts, on=(ts.title_id == s.Title.id))
              .where(cond))
    if language:
        query_ = query_.where(s.Title.language == language)
    rows = list(query_.limit(MAX_MATCHES))
    whole = " ".join(words)

    def rank(t: Any) -> tuple[int, str]:
        title_part = t.titlesearch.skeleton.split(" / ")[0]
        if whole and title_part.startswith(whole):
            return (0, t.title.lower())
        if all(w in title_part for w in words):
            return (1, t.title.lower())
        return (2, t.title.lower())
    rows.sort(key=rank)
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return Results(rows[(page - 1) * PAGE_SIZE:page * PAGE_SIZE], len(rows), page, pages)


@dataclass(frozen=True)
class Place:
    """Copies of a title ready to take at one location, and how fresh that knowledge is."""

    node: str
    name: str
    kind: str
    count: int
    online: bool
    last_seen: datetime | None
    fresh: bool


@dataclass(frozen=True)
class Availability:
    """A title's copies: where to take one now, how many are out, who waits."""

    places: list[Place]
    total: int
    on_loan: int
    waiting: int
    next_due: Any

    @property
    def available(self) -> int:
        """Copies ready to take anywhere."""
        return sum(p.count for p in self.places)


def _set_aside() -> Any:
    return s.Hold.select(s.Hold.copy).where(s.Hold.status.in_(["waiting", "ready"])
                                            & s.Hold.copy.is_null(False))


def availability(title_ids: list[str], now: datetime | None = None) -> dict[str, Availability]:
    """Per title: copies on a shelf or in a slot (not set aside for a hold), per location."""
    now = now or s.utcnow()
    if not title_ids:
        return {}
    nodes = {n.id: n for n in s.Node.select()}
    here: dict[str, dict[str, int]] = {}
    for tid, node, n in (s.Copy.select(s.Copy.title_id, s.Copy.location_node,
                                       fn.COUNT(s.Copy.barcode))
                         .where(s.Copy.title_id.in_(title_ids) & s.Copy.status.in_(TAKEABLE)
                                & s.Copy.barcode.not_in(_set_aside()))
                         .group_by(s.Copy.title_id, s.Copy.location_node).tuples()):
        here.setdefault(tid, {})[node] = n
    totals: dict[str, dict[str, int]] = {}
    for tid, status, n in (s.Copy.select(s.Copy.title_id, s.Copy.status,
                                         fn.COUNT(s.Copy.barcode))
                           .where(s.Copy.title_id.in_(title_ids))
                           .group_by(s.Copy.title_id, s.Copy.status).tuples()):
        totals.setdefault(tid, {})[status] = n
    waiting = dict(s.Hold.select(s.Hold.title_id, fn.COUNT(s.Hold.id))
                   .where(s.Hold.title_id.in_(title_ids) & (s.Hold.status == "waiting"))
                   .group_by(s.Hold.title_id).tuples())
    next_due = dict(s.Loan.select(s.Copy.title_id, fn.MIN(s.Loan.due))
                    .join(s.Copy, on=(s.Copy.barcode == s.Loan.copy))
                    .where(s.Copy.title_id.in_(title_ids) & s.Loan.returned_at.is_null())
                    .group_by(s.Copy.title_id).tuples())
    out = {}
    for tid in title_ids:
        places = []
        for node_id, count in here.get(tid, {}).items():
            n = nodes.get(node_id or "")
            if n is None:
                continue
            age = (now - n.last_seen).total_seconds() if n.last_seen else None
            places.append(Place(n.id, n.name or n.id, n.kind, count, bool(n.online),
                                n.last_seen, bool(n.online) and age is not None
                                and age < FRESH_FOR_S))
        places.sort(key=lambda p: (not p.fresh, -p.count, p.name))  # live places first
        st = totals.get(tid, {})
        out[tid] = Availability(places, sum(st.values()), st.get("on_loan", 0),
                                waiting.get(tid, 0), next_due.get(tid))
    return out
