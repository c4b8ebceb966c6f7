"""City-scale data, generated in bulk: a cloud store (SQLite or PostgreSQL) and edge node files.

The city: about 300,000 titles, 1.3 million copies, 500,000 readers, 5 million
loans of history, 52 nodes (24 machines of 60 slots, 28 branches). Rows are
written with the driver's bulk paths (``executemany`` on SQLite, ``COPY`` on
PostgreSQL) into the tables that ``cloud.store.connect`` creates, with the
secondary indexes dropped during the load and built once at the end: the
whole city takes minutes, not hours. ``Shape.scaled`` gives the same city at
any size, for the fast benchmark and for tests.

Every copy is in exactly one place: in a slot of a machine, on a branch shelf,
or on loan (with exactly one open loan that names it). Every reference (title,
reader, node, copy, loan) points at a row that exists.
"""
from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

from cloud import store as cs
from kitap.sample_data import NodeSpec, catalogue
from kitap.sample_data import generate as sample_generate

logger = logging.getLogger(__name__)

# The day the generated history ends; fixed so two runs build the same city.
TODAY = date(2026, 11, 1)
# Years of loan history behind TODAY.
HISTORY_DAYS = 3 * 365
# Rows per executemany / COPY chunk: big enough to amortise the call, small
# enough that a chunk of 5 million loans never sits in memory at once.
CHUNK = 50_000
# PIN hashes are PBKDF2 (slow on purpose): a few are made and shared by all readers.
DISTINCT_PIN_HASHES = 64
# Names drawn by kitap.sample_data and reused round-robin for the city's readers.
DISTINCT_NAMES = 4_000
POLICIES = [("book", "*", 21, 5, 2), ("children", "*", 14, 5, 1), ("reference", "*", 7, 2, 0)]
BLOCK_REASON = "3 books overdue"
BLOCKED_FEES = 150_000  # tiyn owed by a blocked reader


@dataclass(frozen=True)
class Shape:
    """How big the generated city is."""

    titles: int = 300_000
    copies: int = 1_300_000
    readers: int = 500_000
    loans: int = 5_000_000     # history, the open loans included
    holds: int = 20_000
    machines: int = 24
    slots: int = 60
    branches: int = 28
    on_loan_share: float = 0.08  # of the copies outside machines
    blocked_every: int = 50      # every 50th reader is a blocked debtor

    def scaled(self, factor: float) -> Shape:
        """The same city with its fund, readers, loans and holds times ``factor``."""
        return replace(self, titles=max(50, int(self.titles * factor)),
                       copies=max(self.machines * self.slots + 100, int(self.copies * factor)),
                       readers=max(50, int(self.readers * factor)),
                       loans=max(100, int(self.loans * factor)),
                       holds=max(10, int(self.holds * factor)))

    def describe(self) -> str:
        """One line for a person."""
        return (f"{self.copies:,} copies of {self.titles:,} titles, {self.readers:,} readers, "
                f"{self.loans:,} loans, {self.holds:,} holds, {self.machines} machines of "
                f"{self.slots} slots + {self.branches} branches")


CITY = Shape()


def node_specs(shape: Shape) -> list[NodeSpec]:
    """The network's nodes: machines m-01.., branches b-01.. (b-01 is the central library)."""
    machines = [NodeSpec(f"m-{i:02d}", "machine", f"Vending machine {i}", shape.slots)
                for i in range(1, shape.machines + 1)]
    branches = [NodeSpec(f"b-{i:02d}", "branch",
                         "Central library" if i == 1 else f"Branch {i}", 0)
                for i in range(1, shape.branches + 1)]
    return machines + branches


def branch_weights(shape: Shape) -> list[float]:
    """How the shelves are shared: the central library holds half again as much as a branch."""
    return [1.5 if i == 0 else 1.0 for i in range(shape.branches)]


@dataclass
class Generated:
    """What was written, and how long each part took."""

    shape: Shape
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole build."""
        return sum(self.seconds.values())


# -- value helpers --------------------------------------------------------------------

def _isbn(n: int) -> str:
    first12 = f"978{(n * 7_919 + 104_729) % 10**9:09d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def _ts(day: date, minute: int) -> str:
    """A timestamp as peewee stores an aware UTC datetime in SQLite."""
    return f"{day.isoformat()} {minute // 60:02d}:{minute % 60:02d}:00.000000+00:00"


def _uuid(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def card(i: int) -> str:
    """The card number of reader ``i`` (0-based)."""
    return f"R{i + 1:06d}"


def title_id(i: int) -> str:
    """The id of title ``i`` (0-based)."""
    return f"T{i + 1:06d}"


def barcode(i: int) -> str:
    """The barcode of copy ``i`` (0-based)."""
    return f"C{i + 1:07d}"


def is_blocked(shape: Shape, reader_index: int) -> bool:
    """True for the readers the generator blocks (debtors)."""
    return reader_index % shape.blocked_every == 0


# -- the rows -------------------------------------------------------------------------

class City:
    """Draws the city's rows, table by table, deterministically for a seed."""

    def __init__(self, shape: Shape, seed: int = 8) -> None:
        self.shape = shape
        self.seed = seed
        self.nodes = node_specs(shape)
        self.machines = [n for n in self.nodes if n.kind == "machine"]
        self.branches = [n for n in self.nodes if n.kind == "branch"]
        self.days = [TODAY - timedelta(days=d) for d in range(HISTORY_DAYS + 60, -60, -1)]
        # Filled while the copies are drawn, used by the loans and the holds.
        self.open_loans: list[tuple[Any, ...]] = []
        self.shelf_sample: list[tuple[str, str, str]] = []   # (barcode, title, branch)

    def _rng(self, part: str) -> random.Random:
        return random.Random(f"{self.seed}-{part}")

    def node_rows(self) -> Iterator[tuple[Any, ...]]:
        """id, kind, name, online, status."""
        for n in self.nodes:
            yield (n.id, n.kind, n.name, False, "{}")

    def title_rows(self) -> Iterator[tuple[Any, ...]]:
        """id, title, author, isbn, language, year, item_type."""
        base = catalogue()
        for i in range(self.shape.titles):
            b = base[i % len(base)]
            volume = i // len(base)
            name = b.title if volume == 0 else f"{b.title} ({volume + 1})"
            yield (title_id(i), name, b.author, _isbn(i), b.language, b.year, b.item_type)

    def reader_rows(self) -> Iterator[tuple[Any, ...]]:
        """card, name, category, pin_hash, blocked_reason, fees_owed."""
        from edge.store import hash_pin  # the hash the nodes check PINs against

        rng = self._rng("readers")
        sample = sample_generate([], copies=0, readers=DISTINCT_NAMES, seed=self.seed).readers
        names = [r.name for r in sample]
        categories = [r.category for r in sample]
        hashes = [hash_pin(f"{i:04d}", salt=f"bench{i:04d}") for i in range(DISTINCT_PIN_HASHES)]
        for i in range(self.shape.readers):
            blocked = is_blocked(self.shape, i)
            yield (card(i), names[i % len(names)], categories[rng.randrange(len(categories))],
                   hashes[i % len(hashes)], BLOCK_REASON if blocked else None,
                   BLOCKED_FEES if blocked else 0)

    def _reader_index(self, rng: random.Random) -> int:
        """A reader who may borrow (not blocked)."""
        while True:
            i = rng.randrange(self.shape.readers)
            if not is_blocked(self.shape, i):
                return i

    def copy_rows(self) -> Iterator[tuple[Any, ...]]:
        """barcode, title_id, home_node, status, location_node, slot, loan_id, origin_*.

        Machines' slots first, then copies on loan (each with its open loan,
        kept for ``loan_rows``), then branch shelves.
        """
        shape, rng = self.shape, self._rng("copies")
        n_titles = shape.titles
        in_slots = shape.machines * shape.slots
        on_loan = int((shape.copies - in_slots) * shape.on_loan_share)
        cum = list(accumulate(branch_weights(shape)))
        per_branch = shape.holds // max(1, len(self.branches)) + 1
        sampled: dict[str, int] = {}
        branch_ids = [b.id for b in self.branches]
        for i in range(shape.copies):
            bc = barcode(i)
            # Squared uniform: popular titles have many copies, the long tail one or none.
            tid = title_id(int(n_titles * rng.random() ** 2))
            if i < in_slots:
                m = self.machines[i // shape.slots].id
                slot = i % shape.slots + 1
                yield (bc, tid, m, "in_slot", m, slot, None, "in_slot", m, slot)
            elif i < in_slots + on_loan:
                home = rng.choices(branch_ids, cum_weights=cum)[0]
                loan_id = _uuid(rng)
                day = TODAY - timedelta(days=rng.randrange(40))
                node = rng.choice(self.nodes).id
                self.open_loans.append((
                    loan_id, bc, card(self._reader_index(rng)), node,
                    _ts(day, rng.randrange(540, 1260)), (day + timedelta(days=21)).isoformat(),
                    None, None, None, *((False,) if SETTLED else ())))
                yield (bc, tid, home, "on_loan", None, None, loan_id, "on_loan", None, None)
            else:
                b = rng.choices(branch_ids, cum_weights=cum)[0]
                if sampled.get(b, 0) < per_branch:
                    sampled[b] = sampled.get(b, 0) + 1
                    self.shelf_sample.append((bc, tid, b))
                yield (bc, tid, b, "on_shelf", b, None, None, "on_shelf", b, None)

    def loan_rows(self) -> Iterator[tuple[Any, ...]]:
        """id, copy, reader, node, checked_out_at, due, returned_at, returned_node, close_reason.

        Call after ``copy_rows`` has run: the open loans come from there.
        """
        shape, rng = self.shape, self._rng("loans")
        yield from self.open_loans
        node_ids = [n.id for n in self.nodes]
        n_days = HISTORY_DAYS
        history_end = len(self.days) - 60 - 45   # returned by TODAY
        for _ in range(max(0, shape.loans - len(self.open_loans))):
            d = history_end - rng.randrange(n_days)
            out, back = self.days[d], self.days[d + 1 + rng.randrange(40)]
            yield (_uuid(rng), barcode(rng.randrange(shape.copies)),
                   card(rng.randrange(shape.readers)), node_ids[rng.randrange(len(node_ids))],
                   _ts(out, rng.randrange(540, 1260)), (out + timedelta(days=21)).isoformat(),
                   _ts(back, rng.randrange(540, 1260)), node_ids[rng.randrange(len(node_ids))],
                   "returned", *((True,) if SETTLED else ()))

    def hold_rows(self) -> Iterator[tuple[Any, ...]]:
        """id, title_id, reader, pickup_node, copy, status, created_at, expires.

        Half are ready (a copy on the pickup branch's shelf set aside), half wait.
        """
        rng = self._rng("holds")
        ready = self.shelf_sample[: self.shape.holds // 2]
        expires = (TODAY + timedelta(days=7)).isoformat()
        for bc, tid, branch in ready:
            yield (_uuid(rng), tid, card(self._reader_index(rng)), branch, bc, "ready",
                   _ts(TODAY, rng.randrange(540, 1260)), expires)
        for _ in range(self.shape.holds - len(ready)):
            yield (_uuid(rng), title_id(rng.randrange(self.shape.titles)),
                   card(self._reader_index(rng)), rng.choice(self.nodes).id, None, "waiting",
                   _ts(TODAY - timedelta(days=rng.randrange(30)), rng.randrange(540, 1260)),
                   None)


# -- loading --------------------------------------------------------------------------

# Loans of the history were closed long ago, their fines dealt with; where the
# store marks that (cloud/debts.py), they say so, or every reader the traffic
# touches would have years of loans to settle.
SETTLED = "fine_settled" in cs.Loan._meta.fields

TABLE_COLUMNS: dict[Any, Sequence[str]] = {
    cs.Node: ("id", "kind", "name", "online", "status"),
    cs.Title: ("id", "title", "author", "isbn", "language", "year", "item_type"),
    cs.Reader: ("card", "name", "category", "pin_hash", "blocked_reason", "fees_owed"),
    cs.Copy: ("barcode", "title_id", "home_node", "status", "location_node", "slot", "loan_id",
              "origin_status", "origin_node", "origin_slot"),
    cs.Loan: ("id", "copy", "reader", "node", "checked_out_at", "due", "returned_at",
              "returned_node", "close_reason", *(("fine_settled",) if SETTLED else ())),
    cs.Hold: ("id", "title_id", "reader", "pickup_node", "copy", "status", "created_at",
              "expires"),
    cs.Policy: ("item_type", "category", "loan_days", "max_items", "renewals"),
    cs.Change: ("entity", "key", "scope", "op", "data", "at"),
}


def _chunks(rows: Iterable[tuple[Any, ...]], size: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def default_columns(model: Any, cols: Sequence[str]) -> tuple[list[str], tuple[Any, ...]]:
    """The model's NOT NULL columns missing from ``cols``, and their default values.

    The store grows columns while other work goes on; a column with a default in
    the model but none in the database would otherwise make a bulk insert fail.
    """
    extra = [f for f in model._meta.sorted_fields
             if f.column_name not in cols and not f.null and f.default is not None
             and not f.primary_key]
    return ([f.column_name for f in extra],
            tuple(f.db_value(f.default() if callable(f.default) else f.default) for f in extra))


def with_defaults(model: Any, cols: Sequence[str],
                  rows: Iterable[tuple[Any, ...]]) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """``cols`` and ``rows`` completed with ``default_columns``."""
    names, values = default_columns(model, cols)
    if not names:
        return list(cols), iter(rows)
    return [*cols, *names], (row + values for row in rows)


def _load(database: Any, model: Any, rows: Iterable[tuple[Any, ...]]) -> int:
    """Bulk-insert ``rows`` (tuples in TABLE_COLUMNS order) into ``model``'s table."""
    cols, rows = with_defaults(model, TABLE_COLUMNS[model], rows)
    table = model._meta.table_name
    conn = database.connection()
    n = 0
    postgres = cs.is_postgres()
    for chunk in _chunks(rows):
        if postgres:
            buf = io.StringIO()
            for row in chunk:
                buf.write("\t".join(_copy_text(v) for v in row))
                buf.write("\n")
            buf.seek(0)
            with conn.cursor() as cur:
                cur.copy_expert(f'COPY "{table}" ({", ".join(cols)}) FROM STDIN', buf)
        else:
            marks = ", ".join("?" * len(cols))
            conn.executemany(f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({marks})',
                             chunk)
        n += len(chunk)
    return n


BULK_MODELS = (cs.Title, cs.Reader, cs.Copy, cs.Loan, cs.Hold)


def generate(url: str, shape: Shape = CITY, seed: int = 8) -> Generated:
    """Build the city in a fresh store at ``url`` (the store must be empty); binds cloud.store."""
    out = Generated(shape)
    t0 = time.perf_counter()
    database = cs.connect(url)
    postgres = cs.is_postgres()
    if not postgres:
        database.execute_sql("PRAGMA synchronous=OFF")
        database.execute_sql("PRAGMA cache_size=-512000")
    for model in BULK_MODELS:
        model._schema.drop_indexes(safe=True)
    out.seconds["schema"] = time.perf_counter() - t0
    city = City(shape, seed)
    parts: list[tuple[str, Any, Iterable[tuple[Any, ...]]]] = [
        ("nodes", cs.Node, city.node_rows()),
        ("titles", cs.Title, city.title_rows()),
        ("readers", cs.Reader, city.reader_rows()),
        ("copies", cs.Copy, city.copy_rows()),
        ("loans", cs.Loan, city.loan_rows()),
        ("holds", cs.Hold, city.hold_rows()),
        ("policies", cs.Policy, iter(POLICIES)),
        # Revision 1, as a node's first snapshot would write it: the log has begun.
        ("changes", cs.Change, iter([("config", "feed_started", "*", "upsert",
                                      '{"key": "feed_started", "value": "bench"}',
                                      _ts(TODAY, 0))])),
    ]
    for name, model, rows in parts:
        t = time.perf_counter()
        with database.atomic():
            out.counts[name] = _load(database, model, rows)
        out.seconds[name] = time.perf_counter() - t
        logger.info("generated %s: %d rows in %.1f s", name, out.counts[name], out.seconds[name])
    t = time.perf_counter()
    for model in BULK_MODELS:
        model._schema.create_indexes(safe=True)
    if postgres:
        # What autovacuum would do after a bulk load anyway, done now.
        database.execute_sql("ANALYZE")
    else:
        # No ANALYZE on SQLite: the cloud never runs it, and its statistics make
        # the planner count a reader's open loans through the returned_at index
        # (see docs/performance.md), which is five times slower.
        database.execute_sql("PRAGMA synchronous=FULL")
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    out.seconds["indexes"] = time.perf_counter() - t
    logger.info("indexes and statistics in %.1f s", out.seconds["indexes"])
    return out


# -- an edge node's file ----------------------------------------------------------------

def build_edge(path: str, node_id: str, shape: Shape, *, copies: int, feed_rev: int = 1,
               seed: int = 8) -> dict[str, int]:
    """An edge node's SQLite file as a snapshot would leave it: every reader and title,
    ``copies`` copies here, the policies; binds edge.store to ``path``.

    The copies here are C9000001.. (names no cloud copy uses), so the file can
    serve a node alone. Returns the row counts.
    """
    from edge import store as es

    city = City(shape, seed)
    db = es.open_db(path)
    db.execute_sql("PRAGMA synchronous=OFF")
    conn = db.connection()
    counts: dict[str, int] = {}
    now = _ts(TODAY, 600)
    with db.atomic():
        rows = ((c, n, cat, ph, br, 1 if br else 0, fees, now, 0, None)
                for c, n, cat, ph, br, fees in city.reader_rows())
        counts["readers"] = _insert(conn, es.Reader, (
            "card", "name", "category", "pin_hash", "blocked_reason", "open_loans", "fees_owed",
            "synced_at", "wrong_pins", "locked_until"), rows)
        rows = ((i, t, a, isbn, lang, kind, 0) for i, t, a, isbn, lang, _y, kind
                in city.title_rows())
        counts["titles"] = _insert(conn, es.Title, (
            "id", "title", "author", "isbn", "language", "item_type", "holds_waiting"), rows)
        rng = random.Random(f"{seed}-edge-{node_id}")
        rows = ((f"C9{i + 1:06d}", title_id(int(shape.titles * rng.random() ** 2)), None, 1, 0)
                for i in range(copies))
        counts["copies"] = _insert(conn, es.Copy,
                                   ("barcode", "title_id", "slot", "here", "on_loan"), rows)
        counts["policies"] = _insert(conn, es.Policy, TABLE_COLUMNS[cs.Policy], iter(POLICIES))
        for key, value in (("feed_rev", str(feed_rev)), ("feed_at", now)):
            es.Meta.insert(key=key, value=value).on_conflict_replace().execute()
    db.execute_sql("PRAGMA synchronous=FULL")
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return counts


def _insert(conn: Any, model: Any, cols: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
    cols, rows = with_defaults(model, cols, rows)
    marks = ", ".join("?" * len(cols))
    n = 0
    for chunk in _chunks(rows):
        conn.executemany(f'INSERT INTO "{model._meta.table_name}" ({", ".join(cols)}) '
                         f"VALUES ({marks})", chunk)
        n += len(chunk)
    return n
