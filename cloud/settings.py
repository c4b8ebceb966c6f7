"""The cloud's own tunables, kept in the Setting table so every cloud process reads the same.

Keys under ``cloud.`` stay in the cloud: they are never sent down the feed
(a node has no use for a fine threshold or the notices URL, and the feed floor
changes as the log is compacted). Everything else in Setting goes to every node.
``kitap admin setting KEY VALUE`` sets either kind.
"""
from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud import store as s

CLOUD_PREFIX = "cloud."
# Settings are read on every event; the table is re-read at most this often
# (seconds), so a change made by another process applies within that time.
CACHE_SECONDS = 3.0

# Defaults, each with why. Amounts are in tiyn (1/100 tenge).
DEFAULTS: dict[str, str] = {
    # Days a reader has to collect a hold once its copy is ready (a week, as at the desk).
    "cloud.hold_days": "7",
    # A loan this many days overdue is declared lost and the replacement fee charged:
    # two months, after the overdue notices had their chance.
    "cloud.lost_after_days": "60",
    # A reader with this many loans overdue is blocked everywhere until they return some
    # (0: never); three is what branches did by hand.
    "cloud.block_overdue_items": "3",
    # A reader owing at least this much is blocked (0: never; fines are off by default).
    "cloud.block_fees_at": "0",
    # "Due soon" notices go out this many days before the due date.
    "cloud.due_soon_days": "2",
    # A node clock off by more than this is flagged and its due dates corrected: far
    # beyond NTP drift and network delay, far below a wrong time zone or a dead RTC.
    "cloud.clock_skew_seconds": "120",
    # A transaction a node reports as done earlier (a self-check kiosk's store-and-forward
    # checkout: the event's "at") is believed at most this many days back from when the
    # node recorded it; older is a kiosk clock gone wrong (reset to 2000), not a kiosk
    # that stored loans for weeks. The nodes bound their kiosks' dates the same way.
    "cloud.max_report_delay_days": "14",
    # Copies with no collection float (stay where returned): machines' stock is shared.
    "cloud.floating_default": "1",
    # Superseded changes older than this are dropped from the feed; a node that far
    # behind gets a snapshot instead. A month covers any node's holiday.
    "cloud.feed_retention_days": "30",
    # Nodes asking for changes from before this revision get a snapshot (raised by compaction).
    "cloud.feed_floor": "0",
    # The library's day: due dates and "overdue" are counted in Almaty's calendar.
    "cloud.timezone": "Asia/Almaty",
    # Where notices go: dir:PATH, jsonl:PATH or log: (empty: a notices/ directory
    # beside a SQLite database, else the log). See cloud/notices.py.
    "cloud.notices_url": "",
}


_lock = threading.Lock()
_cache: tuple[float, dict[str, str]] | None = None


def clear_cache() -> None:
    """Forget what was read (another database was bound, or a test emptied it)."""
    global _cache
    with _lock:
        _cache = None


def _table() -> dict[str, str]:
    global _cache
    with _lock:
        if _cache is None or time.monotonic() - _cache[0] > CACHE_SECONDS:
            _cache = (time.monotonic(), {str(k): str(v) for k, v in s.tuples(
                s.Setting.select(s.Setting.key, s.Setting.value))})
        return _cache[1]


def get(key: str, default: str | None = None) -> str:
    """A setting's value: the table, else ``default``, else DEFAULTS."""
    value = _table().get(key)
    if value is not None:
        return value
    if default is not None:
        return default
    return DEFAULTS.get(key, "")


def get_int(key: str) -> int:
    """A whole-number setting (a bad value falls back to the default)."""
    try:
        return int(get(key))
    except ValueError:
        return int(DEFAULTS[key])


def get_bool(key: str) -> bool:
    """A yes/no setting: 1/true/yes/on."""
    return get(key).strip().lower() in ("1", "true", "yes", "on")


def put(key: str, value: str) -> None:
    """Set a value (inside the caller's transaction); the caller records feed changes."""
    s.upsert(s.Setting, [{"key": key, "value": value}], [s.Setting.key])
    clear_cache()


# cloud.* settings the nodes need too: the library's calendar counts due days.
SHARED = frozenset({"cloud.timezone"})


def is_cloud_only(key: str) -> bool:
    """True for keys that never leave the cloud."""
    return key.startswith(CLOUD_PREFIX) and key not in SHARED


def library_tz() -> tzinfo:
    """The library's time zone (UTC if the name is unknown here)."""
    try:
        return ZoneInfo(get("cloud.timezone"))
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def today(now: datetime | None = None) -> date:
    """The library's calendar day at ``now``."""
    return (now or s.utcnow()).astimezone(library_tz()).date()
