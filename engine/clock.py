"""One clock for every engine, so ``loom tick --now`` can replay 90 days.

Times are stored as naive UTC ``datetime``s in the database and handled as
aware UTC in code; the app's timezone is only for display, "today" and
date buckets.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def remember(cache: dict, key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in a small per-process cache of conversions (emptied when it
    reaches 256 entries: a request reuses the same few instants) and return it."""
    if len(cache) >= 256:
        cache.clear()
    cache[key] = value
    return value


_TO_DB: dict = {}


def to_db(value: dt.datetime | None) -> dt.datetime | None:
    """Aware -> naive UTC for storage (naive input is assumed UTC already).

    A request converts its ``now`` and a few due times for every row it writes (record,
    timeline, timers, outbox...), and ``replace()`` is a costly call: recent conversions are kept
    (by value -- equal instants in any zone are the same naive UTC time)."""
    if value is None:
        return None
    tz = value.tzinfo
    if tz is None:
        return value
    out = _TO_DB.get(value)
    if out is None:
        if tz is dt.timezone.utc:            # the usual case (the clock's now): no conversion
            out = remember(_TO_DB, value, value.replace(tzinfo=None))
        else:
            out = remember(_TO_DB, value, value.astimezone(dt.timezone.utc).replace(tzinfo=None))
    return out


_FROM_DB: dict = {}


def from_db(value: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC from storage -> aware UTC (kept like ``to_db``'s: a request reads the same few)."""
    if value is None or value.tzinfo is not None:
        return value
    out = _FROM_DB.get(value)
    if out is None:
        out = remember(_FROM_DB, value, value.replace(tzinfo=dt.timezone.utc))
    return out


def parse_instant(text: str) -> dt.datetime:
    """ISO 8601 -> aware UTC; a naive value is taken as UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


@dataclass
class Clock:
    """Real time, or a fixed instant (``loom tick --now``, tests)."""

    fixed: dt.datetime | None = None
    offset: dt.timedelta = field(default_factory=dt.timedelta)

    def now(self) -> dt.datetime:
        return (self.fixed if self.fixed is not None else utcnow()) + self.offset

    def set(self, when: dt.datetime) -> None:
        self.fixed = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)

    def advance(self, delta: dt.timedelta) -> None:
        if self.fixed is None:
            self.fixed = utcnow()
        self.fixed = self.fixed + delta
