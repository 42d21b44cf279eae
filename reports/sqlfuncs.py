"""Dialect-specific SQL for reports: local time, date buckets, durations.

Stored datetimes are naive UTC.  Buckets are computed in the app's timezone:

* a zone with a fixed offset (Asia/Shanghai, UTC+8 all year) is shifted by
  that offset -- exact, and cheap on both databases;
* a zone with daylight saving time is converted exactly on PostgreSQL
  (``timezone(tz, timezone('UTC', col))`` = ``col AT TIME ZONE 'UTC' AT TIME ZONE tz``);
  SQLite has no timezone database, so there the offset in force *now* is used
  for every row (rows on the other side of a DST change land up to an hour off
  a bucket boundary -- a documented limitation of the SQLite backend).

Bucket labels are identical text on both databases: day ``2026-11-05``, week
``2026-11-02`` (its Monday), month ``2026-11``, quarter ``2026-Q4``, year
``2026``; hour (0-23) and weekday (1 = Monday .. 7) are integers.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Float, Integer, String, cast, func, literal_column
from sqlalchemy.sql import ColumnElement


def _lit(s: str) -> ColumnElement:
    """A constant rendered inline (not a bind), so GROUP BY matches the SELECT expression on PostgreSQL."""
    return literal_column("'" + s.replace("'", "''") + "'", String)


def _int(n: int) -> ColumnElement:
    return literal_column(str(int(n)), Integer)


@lru_cache(maxsize=64)
def _fixed_offset_cached(key: str, year: int) -> int | None:
    tz = ZoneInfo(key)
    offsets = set()
    for y in (year - 2, year - 1, year, year + 1, year + 2):
        for m in (1, 4, 7, 10):
            offsets.add(dt.datetime(y, m, 1, 12, tzinfo=tz).utcoffset())
    if len(offsets) == 1:
        return int(next(iter(offsets)).total_seconds() // 60)
    return None


def fixed_offset_minutes(tz: ZoneInfo, now: dt.datetime) -> int | None:
    """The zone's UTC offset in minutes when it has no DST around ``now``, else None."""
    return _fixed_offset_cached(tz.key, now.year)


def current_offset_minutes(tz: ZoneInfo, now: dt.datetime) -> int:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    return int(now.astimezone(tz).utcoffset().total_seconds() // 60)


def shift_minutes(col: ColumnElement, minutes: int, dialect: str) -> ColumnElement:
    if minutes == 0:
        return col
    if dialect == "postgresql":
        return col + literal_column(f"INTERVAL '{int(minutes)} minutes'")
    return func.datetime(col, _lit(f"{int(minutes):+d} minutes"))


def local_time(col: ColumnElement, tz: ZoneInfo, now: dt.datetime, dialect: str) -> ColumnElement:
    """A naive-UTC datetime column as local wall-clock time in ``tz``."""
    fixed = fixed_offset_minutes(tz, now)
    if fixed is not None:
        return shift_minutes(col, fixed, dialect)
    if dialect == "postgresql":
        return func.timezone(_lit(tz.key), func.timezone(_lit("UTC"), col))
    return shift_minutes(col, current_offset_minutes(tz, now), dialect)


def bucket(x: ColumnElement, unit: str, dialect: str) -> ColumnElement:
    """Bucket label of a local date/datetime expression ``x``."""
    if dialect == "postgresql":
        if unit == "day":
            return func.to_char(x, _lit("YYYY-MM-DD"))
        if unit == "week":
            return func.to_char(func.date_trunc(_lit("week"), x), _lit("YYYY-MM-DD"))
        if unit == "month":
            return func.to_char(x, _lit("YYYY-MM"))
        if unit == "quarter":
            return func.to_char(x, _lit('YYYY-"Q"Q'))
        if unit == "year":
            return func.to_char(x, _lit("YYYY"))
        if unit == "hour":
            return cast(func.extract("hour", x), Integer)
        if unit == "weekday":
            return cast(func.extract("isodow", x), Integer)
    else:
        if unit == "day":
            return func.date(x)
        if unit == "week":
            return func.date(x, _lit("weekday 0"), _lit("-6 days"))
        if unit == "month":
            return func.strftime(_lit("%Y-%m"), x)
        if unit == "quarter":
            q = (cast(func.strftime(_lit("%m"), x), Integer) + _int(2)).self_group().op("/")(_int(3)).self_group()
            return func.strftime(_lit("%Y"), x).op("||")(_lit("-Q")).op("||")(q)
        if unit == "year":
            return func.strftime(_lit("%Y"), x)
        if unit == "hour":
            return cast(func.strftime(_lit("%H"), x), Integer)
        if unit == "weekday":
            return (cast(func.strftime(_lit("%w"), x), Integer) + _int(6)).self_group().op("%")(_int(7)).self_group() + _int(1)
    raise ValueError(f"unknown bucket {unit}")


def duration_seconds(start: ColumnElement, end: ColumnElement, dialect: str, dates: bool = False) -> ColumnElement:
    """``end - start`` in seconds (NULL if either is NULL)."""
    if dialect == "postgresql":
        if dates:
            start, end = cast(start, DateTime), cast(end, DateTime)
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * literal_column("86400.0")


def add_days(x: ColumnElement, days: int, dialect: str) -> ColumnElement:
    if dialect == "postgresql":
        return x + literal_column(f"INTERVAL '{int(days)} days'")
    return func.datetime(x, _lit(f"+{int(days)} days"))


def as_float(x: ColumnElement) -> ColumnElement:
    return cast(x, Float)


def json_part(col: ColumnElement, part: int | str, dialect: str) -> ColumnElement:
    """One level of a cascade (JSON list, 1-based) or one part of an address (JSON object), as text."""
    if dialect == "postgresql":
        key = _int(int(part) - 1) if isinstance(part, int) else _lit(str(part))
        return col.op("->>", return_type=String)(key)
    path = f"$[{int(part) - 1}]" if isinstance(part, int) else f"$.{part}"
    return func.json_extract(col, _lit(path))
