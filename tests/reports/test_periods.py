"""Relative periods and their previous periods (pure), and local-time buckets on both databases."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import DateTime, create_engine, literal, select

from reports.periods import PeriodError, bucket_range, previous, resolve
from reports.sqlfuncs import bucket, local_time

D = dt.date
TODAY = D(2026, 11, 23)   # a Monday


@pytest.mark.parametrize("key, start, end", [
    ("today", D(2026, 11, 23), D(2026, 11, 24)),
    ("yesterday", D(2026, 11, 22), D(2026, 11, 23)),
    ("last_7_days", D(2026, 11, 17), D(2026, 11, 24)),
    ("last_30_days", D(2026, 10, 25), D(2026, 11, 24)),
    ("last_365_days", D(2025, 11, 24), D(2026, 11, 24)),
    ("this_week", D(2026, 11, 23), D(2026, 11, 30)),
    ("last_week", D(2026, 11, 16), D(2026, 11, 23)),
    ("this_month", D(2026, 11, 1), D(2026, 12, 1)),
    ("last_month", D(2026, 10, 1), D(2026, 11, 1)),
    ("this_quarter", D(2026, 10, 1), D(2027, 1, 1)),
    ("last_quarter", D(2026, 7, 1), D(2026, 10, 1)),
    ("this_year", D(2026, 1, 1), D(2027, 1, 1)),
    ("last_year", D(2025, 1, 1), D(2026, 1, 1)),
    ("2026-02", D(2026, 2, 1), D(2026, 3, 1)),
    ("2026-Q1", D(2026, 1, 1), D(2026, 4, 1)),
    ("2026-10-01..2026-10-31", D(2026, 10, 1), D(2026, 11, 1)),
    ("2026-10-05", D(2026, 10, 5), D(2026, 10, 6)),
])
def test_periods(key, start, end):
    p = resolve(key, TODAY)
    assert (p.start, p.end) == (start, end)


def test_open_ranges_and_errors():
    assert (resolve("all", TODAY).start, resolve("all", TODAY).end) == (None, None)
    assert resolve("2026-10-01..", TODAY).end is None
    for bad in ("last_fortnight", "2026-13", "2026-10-31..2026-10-01", "last_0_days"):
        with pytest.raises(PeriodError):
            resolve(bad, TODAY)


@pytest.mark.parametrize("key, today, start, end", [
    ("last_7_days", TODAY, D(2026, 11, 10), D(2026, 11, 17)),
    ("last_month", TODAY, D(2026, 9, 1), D(2026, 10, 1)),
    ("this_month", TODAY, D(2026, 10, 1), D(2026, 10, 24)),          # month to date vs the same days of October
    ("this_month", D(2026, 3, 31), D(2026, 2, 1), D(2026, 3, 1)),     # capped: February is shorter
    ("this_quarter", TODAY, D(2026, 7, 1), D(2026, 8, 24)),           # 54 days into the quarter
    ("this_week", TODAY, D(2026, 11, 16), D(2026, 11, 17)),
    ("2026-10-01..2026-10-10", TODAY, D(2026, 9, 21), D(2026, 10, 1)),
    ("this_year", TODAY, D(2025, 1, 1), D(2025, 11, 24)),
])
def test_previous_period(key, today, start, end):
    p = previous(resolve(key, today), today)
    assert (p.start, p.end) == (start, end)
    assert previous(resolve("all", today), today) is None


def test_utc_bounds_follow_the_zone_including_dst():
    sh = resolve("2026-11-01", TODAY).utc_bounds(ZoneInfo("Asia/Shanghai"))
    assert sh == (dt.datetime(2026, 10, 31, 16), dt.datetime(2026, 11, 1, 16))
    # Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours
    be = resolve("2026-10-25", TODAY).utc_bounds(ZoneInfo("Europe/Berlin"))
    assert be == (dt.datetime(2026, 10, 24, 22), dt.datetime(2026, 10, 25, 23))


def test_bucket_ranges():
    assert bucket_range("month", "2026-11") == (D(2026, 11, 1), D(2026, 12, 1))
    assert bucket_range("week", "2026-11-23") == (D(2026, 11, 23), D(2026, 11, 30))
    assert bucket_range("quarter", "2026-Q4") == (D(2026, 10, 1), D(2027, 1, 1))
    assert bucket_range("hour", "9") is None


@pytest.mark.parametrize("tz, instant, expected", [
    ("Asia/Shanghai", dt.datetime(2026, 10, 31, 17, 0), ["2026-11-01", "2026-10-26", "2026-11", "2026-Q4", "2026", 1, 7]),
    ("Asia/Shanghai", dt.datetime(2026, 12, 31, 16, 30), ["2027-01-01", "2026-12-28", "2027-01", "2027-Q1", "2027", 0, 5]),
    ("Europe/Berlin", dt.datetime(2026, 7, 31, 22, 30), ["2026-08-01", "2026-07-27", "2026-08", "2026-Q3", "2026", 0, 6]),
])
def test_buckets_in_local_time(db_url, tz, instant, expected):
    """Europe/Berlin in July is UTC+2 (summer time) while 'now' is in winter: exact on PostgreSQL only."""
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    now = dt.datetime(2026, 11, 23, 2, tzinfo=dt.timezone.utc)
    try:
        with engine.connect() as conn:
            x = local_time(literal(instant, DateTime), ZoneInfo(tz), now, engine.dialect.name)
            got = [conn.execute(select(bucket(x, u, engine.dialect.name))).scalar()
                   for u in ("day", "week", "month", "quarter", "year", "hour", "weekday")]
    finally:
        engine.dispose()
    if tz == "Europe/Berlin" and engine.dialect.name == "sqlite":
        # SQLite has no zone database: the offset in force now (UTC+1) is used -> 23:30 on July 31st
        assert got[:3] == ["2026-07-31", "2026-07-27", "2026-07"]
    else:
        assert got == expected
