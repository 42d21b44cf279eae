"""Relative and explicit date ranges, in the app's timezone.

A period is a half-open range of *local* dates ``[start, end)``; ``None`` on
either side means open.  For a datetime column the bounds become the UTC
instants of local midnight (stored times are naive UTC), so the filter is a
plain, index-friendly ``col >= :a AND col < :b``; for a date column the dates
are compared directly.

``previous(...)`` gives the period a KPI compares with: the same number of
days just before for rolling and explicit ranges, the previous calendar unit
for complete months/quarters/years, and for the running ``this_*`` periods
the same elapsed part of the previous unit ("month to date vs the same days
of last month").
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .model import PERIODS


class PeriodError(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    start: dt.date | None
    end: dt.date | None          # exclusive
    key: str                     # the keyword or the explicit text
    to_date: bool = False        # a running period (this_month ...) cut at today

    def utc_bounds(self, tz: ZoneInfo) -> tuple[dt.datetime | None, dt.datetime | None]:
        """Naive-UTC instants of local midnight at start and end."""
        return _utc(self.start, tz), _utc(self.end, tz)


def _utc(d: dt.date | None, tz: ZoneInfo) -> dt.datetime | None:
    if d is None:
        return None
    return dt.datetime.combine(d, dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc).replace(tzinfo=None)


def local_today(now: dt.datetime, tz: ZoneInfo) -> dt.date:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    return now.astimezone(tz).date()


def _month_start(d: dt.date) -> dt.date:
    return d.replace(day=1)


def _add_months(d: dt.date, n: int) -> dt.date:
    y, m = divmod(d.month - 1 + n, 12)
    return dt.date(d.year + y, m + 1, 1)


def _quarter_start(d: dt.date) -> dt.date:
    return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def resolve(value: str, today: dt.date) -> Period:
    """A keyword (``last_30_days``) or explicit text (``2026-10-01..2026-10-31``, ``2026-10``, ``2026-Q4``, ``2026``)."""
    v = str(value).strip()
    t = today
    one = dt.timedelta(days=1)
    if v == "all" or v == "":
        return Period(None, None, "all")
    if v == "today":
        return Period(t, t + one, v)
    if v == "yesterday":
        return Period(t - one, t, v)
    m = re.fullmatch(r"last_(\d{1,4})_days", v)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise PeriodError("a rolling period needs at least 1 day")
        return Period(t - dt.timedelta(days=n - 1), t + one, v)
    if v == "this_week":
        monday = t - dt.timedelta(days=t.weekday())
        return Period(monday, monday + dt.timedelta(days=7), v, to_date=True)
    if v == "last_week":
        monday = t - dt.timedelta(days=t.weekday())
        return Period(monday - dt.timedelta(days=7), monday, v)
    if v == "this_month":
        s = _month_start(t)
        return Period(s, _add_months(s, 1), v, to_date=True)
    if v == "last_month":
        s = _month_start(t)
        return Period(_add_months(s, -1), s, v)
    if v == "this_quarter":
        s = _quarter_start(t)
        return Period(s, _add_months(s, 3), v, to_date=True)
    if v == "last_quarter":
        s = _quarter_start(t)
        return Period(_add_months(s, -3), s, v)
    if v == "this_year":
        s = dt.date(t.year, 1, 1)
        return Period(s, dt.date(t.year + 1, 1, 1), v, to_date=True)
    if v == "last_year":
        return Period(dt.date(t.year - 1, 1, 1), dt.date(t.year, 1, 1), v)
    return _explicit(v)


def _explicit(v: str) -> Period:
    try:
        if ".." in v:
            a, b = v.split("..", 1)
            start = dt.date.fromisoformat(a) if a else None
            end = dt.date.fromisoformat(b) + dt.timedelta(days=1) if b else None
            if start and end and end <= start:
                raise PeriodError(f"'{v}': the end date is before the start date")
            return Period(start, end, v)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            d = dt.date.fromisoformat(v)
            return Period(d, d + dt.timedelta(days=1), v)
        if re.fullmatch(r"\d{4}-\d{2}", v):
            s = dt.date(int(v[:4]), int(v[5:]), 1)
            return Period(s, _add_months(s, 1), v)
        m = re.fullmatch(r"(\d{4})-?Q([1-4])", v, re.I)
        if m:
            s = dt.date(int(m.group(1)), 3 * (int(m.group(2)) - 1) + 1, 1)
            return Period(s, _add_months(s, 3), v)
        if re.fullmatch(r"\d{4}", v):
            return Period(dt.date(int(v), 1, 1), dt.date(int(v) + 1, 1, 1), v)
    except ValueError as exc:
        if isinstance(exc, PeriodError):
            raise
        raise PeriodError(f"'{v}' is not a date range") from None
    raise PeriodError(f"'{v}' is not a period; use one of {', '.join(PERIODS)}, "
                      f"last_N_days, or dates such as 2026-10-01..2026-10-31, 2026-10, 2026-Q4, 2026")


def previous(p: Period, today: dt.date) -> Period | None:
    """The period to compare with (see module docstring); None for open ranges."""
    if p.start is None or p.end is None:
        return None
    key = p.key
    if key in ("this_month", "last_month") or re.fullmatch(r"\d{4}-\d{2}", key):
        unit = 1
    elif key in ("this_quarter", "last_quarter") or re.fullmatch(r"(\d{4})-?Q([1-4])", key, re.I):
        unit = 3
    elif key in ("this_year", "last_year") or re.fullmatch(r"\d{4}", key):
        unit = 12
    else:
        unit = 0
    if unit:
        start = _add_months(p.start, -unit)
        if p.to_date:
            elapsed = (min(p.end, today + dt.timedelta(days=1)) - p.start)
            return Period(start, min(start + elapsed, p.start), f"previous:{key}")
        return Period(start, p.start, f"previous:{key}")
    if p.to_date:  # this_week
        elapsed = min(p.end, today + dt.timedelta(days=1)) - p.start
        start = p.start - (p.end - p.start)
        return Period(start, start + elapsed, f"previous:{key}")
    length = p.end - p.start
    return Period(p.start - length, p.start, f"previous:{key}")


def bucket_range(bucket: str, label: str) -> tuple[dt.date, dt.date] | None:
    """Local date range of a bucket label (``2026-11`` for month), or None (hour/weekday)."""
    try:
        if bucket == "day":
            d = dt.date.fromisoformat(label)
            return d, d + dt.timedelta(days=1)
        if bucket == "week":
            d = dt.date.fromisoformat(label)
            return d, d + dt.timedelta(days=7)
        if bucket == "month":
            s = dt.date(int(label[:4]), int(label[5:7]), 1)
            return s, _add_months(s, 1)
        if bucket == "quarter":
            m = re.fullmatch(r"(\d{4})-Q([1-4])", label)
            if not m:
                return None
            s = dt.date(int(m.group(1)), 3 * (int(m.group(2)) - 1) + 1, 1)
            return s, _add_months(s, 3)
        if bucket == "year":
            return dt.date(int(label), 1, 1), dt.date(int(label) + 1, 1, 1)
    except (ValueError, TypeError):
        return None
    return None
