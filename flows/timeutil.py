"""Durations, journey offsets and working-hour calendars.

* Durations: ``30m``, ``4h``, ``3d``, ``1h30m``, ``2w`` (also ``45s``).
* Journey offsets: ``+1d 10:00`` (anchor + 1 day, at 10:00 local time),
  ``+85d``, ``+2h``, ``-1d 18:00``.
* Calendars (app.yaml ``calendars``): working days, hours per day, holidays
  (days off) and make-up working days (``workdays``), in the app timezone.
  SLA clocks count working time in them: 4 working hours from Friday 16:00
  with 09:00-18:00 Mon-Fri is Monday 11:00.

All instants are aware datetimes; calendars convert to local time and back.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_OFFSET = re.compile(r"^([+-])?\s*((?:\d+[wdhms])+)?\s*(?:(\d{1,2}):(\d{2}))?$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DurationError(ValueError):
    pass


def parse_duration(text: Any) -> dt.timedelta:
    """``'1h30m'`` -> timedelta; raises DurationError with a helpful message."""
    s = str(text).strip().replace(" ", "")
    m = _DURATION.match(s)
    if not s or not m or not any(m.groups()):
        raise DurationError(f"'{text}' is not a duration: write e.g. '30m', '4h', '3d', '1h30m' or '2w'")
    w, d, h, mi, se = (int(x or 0) for x in m.groups())
    return dt.timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=se)


@dataclass(frozen=True)
class Offset:
    """A journey step time: ``sign * delta`` from the anchor, optionally at a local time of day."""

    delta: dt.timedelta
    time_of_day: dt.time | None

    def apply(self, anchor: dt.date | dt.datetime, tz: ZoneInfo, default_time: dt.time) -> dt.datetime:
        """The aware UTC instant ``anchor + delta`` (at ``time_of_day`` local, if given)."""
        if isinstance(anchor, dt.datetime):
            local = (anchor if anchor.tzinfo else anchor.replace(tzinfo=dt.timezone.utc)).astimezone(tz)
        else:
            local = dt.datetime.combine(anchor, default_time, tzinfo=tz)
        # whole days move the local date (DST-safe); the rest is wall time
        days = self.delta.days
        rest = self.delta - dt.timedelta(days=days)
        local_date = local.date() + dt.timedelta(days=days)
        if self.time_of_day is not None:
            at = dt.datetime.combine(local_date, self.time_of_day, tzinfo=tz)
        else:
            at = dt.datetime.combine(local_date, local.timetz().replace(tzinfo=None), tzinfo=tz)
        return (at + rest).astimezone(dt.timezone.utc)


def parse_offset(text: Any) -> Offset:
    s = str(text).strip()
    m = _OFFSET.match(s)
    if not s or not m or not (m.group(2) or m.group(3)):
        raise DurationError(f"'{text}' is not a step time: write e.g. '+1d 10:00', '+85d' or '+2h'")
    sign = -1 if m.group(1) == "-" else 1
    delta = parse_duration(m.group(2)) if m.group(2) else dt.timedelta()
    tod = None
    if m.group(3):
        hh, mm = int(m.group(3)), int(m.group(4))
        if hh > 23 or mm > 59:
            raise DurationError(f"'{text}': {hh:02d}:{mm:02d} is not a time of day")
        tod = dt.time(hh, mm)
    return Offset(delta * sign, tod)


def parse_hhmm(text: str) -> dt.time:
    hh, _, mm = str(text).strip().partition(":")
    t = dt.time(int(hh), int(mm))
    return t


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip())


class Calendar:
    """Working hours in a timezone; add/measure working time."""

    def __init__(self, name: str, tz: ZoneInfo, days: Iterable[str], hours: Iterable[str],
                 holidays: Iterable[Any] = (), workdays: Iterable[Any] = ()):
        self.name = name
        self.tz = tz
        self.days = frozenset(DAY_NAMES.index(d) for d in days)
        spans = []
        for h in hours:
            a, _, b = str(h).partition("-")
            start = parse_hhmm(a)
            end = dt.time(0, 0) if b.strip() in ("24:00", "00:00") else parse_hhmm(b)
            if end <= start and end != dt.time(0, 0):
                raise DurationError(f"working hours '{h}': the end must be after the start")
            spans.append((start, end))
        self.spans = tuple(sorted(spans))
        self.holidays = frozenset(_as_date(d) for d in holidays)
        self.workdays = frozenset(_as_date(d) for d in workdays)
        if not self.spans or not (self.days or self.workdays):
            raise DurationError(f"calendar '{name}' has no working time")

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], tz: ZoneInfo) -> "Calendar":
        return cls(name, tz, spec.get("days") or DAY_NAMES[:5], spec.get("hours") or ["09:00-18:00"],
                   spec.get("holidays") or (), spec.get("workdays") or ())

    def is_working_day(self, d: dt.date) -> bool:
        if d in self.workdays:
            return True
        if d in self.holidays:
            return False
        return d.weekday() in self.days

    def _intervals(self, d: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        if not self.is_working_day(d):
            return []
        out = []
        for start, end in self.spans:
            a = dt.datetime.combine(d, start, tzinfo=self.tz)
            b = dt.datetime.combine(d + dt.timedelta(days=1) if end == dt.time(0, 0) else d, end, tzinfo=self.tz)
            out.append((a.astimezone(dt.timezone.utc), b.astimezone(dt.timezone.utc)))
        return out

    def add(self, start: dt.datetime, amount: dt.timedelta) -> dt.datetime:
        """The instant when ``amount`` of working time has passed after ``start``."""
        start = start.astimezone(dt.timezone.utc)
        if amount <= dt.timedelta(0):
            return self.subtract(start, -amount) if amount < dt.timedelta(0) else start
        remaining = amount
        day = start.astimezone(self.tz).date() - dt.timedelta(days=1)
        for _ in range(3700):   # ten years of days; a calendar with no working day is rejected at compile time
            for a, b in self._intervals(day):
                if b <= start:
                    continue
                a = max(a, start)
                if b - a >= remaining:
                    return a + remaining
                remaining -= b - a
            day += dt.timedelta(days=1)
        raise DurationError(f"calendar '{self.name}': no working time found within ten years")

    def subtract(self, end: dt.datetime, amount: dt.timedelta) -> dt.datetime:
        """The instant ``amount`` of working time before ``end``."""
        end = end.astimezone(dt.timezone.utc)
        remaining = amount
        if remaining <= dt.timedelta(0):
            return end
        day = end.astimezone(self.tz).date() + dt.timedelta(days=1)
        for _ in range(3700):
            for a, b in reversed(self._intervals(day)):
                if a >= end:
                    continue
                b = min(b, end)
                if b - a >= remaining:
                    return b - remaining
                remaining -= b - a
            day -= dt.timedelta(days=1)
        raise DurationError(f"calendar '{self.name}': no working time found within ten years")

    def between(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        """Working time from ``a`` to ``b`` (zero if b <= a)."""
        a, b = a.astimezone(dt.timezone.utc), b.astimezone(dt.timezone.utc)
        if b <= a:
            return dt.timedelta(0)
        total = dt.timedelta(0)
        day = a.astimezone(self.tz).date() - dt.timedelta(days=1)
        last = b.astimezone(self.tz).date() + dt.timedelta(days=1)
        while day <= last:
            for x, y in self._intervals(day):
                lo, hi = max(x, a), min(y, b)
                if hi > lo:
                    total += hi - lo
            day += dt.timedelta(days=1)
        return total


class WallClock:
    """Calendar time (no calendar): the same interface as :class:`Calendar`."""

    name = None

    def add(self, start: dt.datetime, amount: dt.timedelta) -> dt.datetime:
        return start + amount

    def subtract(self, end: dt.datetime, amount: dt.timedelta) -> dt.datetime:
        return end - amount

    def between(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        return max(b - a, dt.timedelta(0))


WALL_CLOCK = WallClock()


def calendar_problems(spec: Any) -> list[tuple[tuple, str]]:
    """Problems in one app.yaml calendar: [(sub-path, message)]."""
    out: list[tuple[tuple, str]] = []
    if not isinstance(spec, Mapping):
        return [((), "a calendar must be a mapping with days, hours, holidays")]
    for i, d in enumerate(spec.get("days") or []):
        if d not in DAY_NAMES:
            out.append((("days", i), f"'{d}' is not a day; use {', '.join(DAY_NAMES)}"))
    for i, h in enumerate(spec.get("hours") or []):
        m = re.match(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$", str(h).strip())
        if not m or int(m.group(1)) > 23 or int(m.group(3)) > 24 or int(m.group(2)) > 59 or int(m.group(4)) > 59:
            out.append((("hours", i), f"'{h}' is not a span of hours: write e.g. '09:00-12:00'"))
            continue
        if (int(m.group(3)), int(m.group(4))) <= (int(m.group(1)), int(m.group(2))) and h.split("-")[1] not in ("00:00", "24:00"):
            out.append((("hours", i), f"'{h}': the end must be after the start"))
    for key in ("holidays", "workdays"):
        for i, d in enumerate(spec.get(key) or []):
            try:
                _as_date(d)
            except ValueError:
                out.append(((key, i), f"'{d}' is not a date: write YYYY-MM-DD"))
    return out
