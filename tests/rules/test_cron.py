"""The cron parser: fields, names, steps, day-of-month/day-of-week OR, timezones and DST."""
from __future__ import annotations

import datetime as dt

import pytest

from rules.cron import CronError, parse_cron

UTC = dt.timezone.utc


def nxt(expr, after, tz="Asia/Shanghai", n=1):
    c = parse_cron(expr)
    out, t = [], after
    for _ in range(n):
        t = c.next_after(t, tz)
        out.append(t)
    return out


def test_daily_in_app_timezone():
    assert nxt("0 2 * * *", dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)) == [dt.datetime(2026, 11, 23, 18, 0, tzinfo=UTC)]


def test_steps_lists_ranges_names():
    got = nxt("*/20 9-10 * * mon-fri", dt.datetime(2026, 11, 27, 2, 50, tzinfo=UTC), n=4)   # Fri 10:50 Shanghai
    assert [g.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%a %H:%M") for g in got] == [
        "Mon 09:00", "Mon 09:20", "Mon 09:40", "Mon 10:00"]
    assert nxt("0 0 1 jan,jul *", dt.datetime(2026, 2, 1, tzinfo=UTC), tz="UTC") == [dt.datetime(2026, 7, 1, tzinfo=UTC)]
    assert nxt("@weekly", dt.datetime(2026, 11, 23, tzinfo=UTC), tz="UTC") == [dt.datetime(2026, 11, 29, tzinfo=UTC)]
    assert nxt("0 0 * * 7", dt.datetime(2026, 11, 23, tzinfo=UTC), tz="UTC") == [dt.datetime(2026, 11, 29, tzinfo=UTC)]


def test_day_of_month_or_day_of_week():
    # the 13th or any Friday (Vixie cron)
    got = nxt("0 12 13 * fri", dt.datetime(2026, 11, 1, tzinfo=UTC), tz="UTC", n=3)
    assert [g.day for g in got] == [6, 13, 20]


def test_dst_gap_is_skipped_and_overlap_fires_once():
    # Europe/Berlin 2026-03-29 02:30 does not exist; 2026-10-25 02:30 happens twice
    got = nxt("30 2 * * *", dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC), tz="Europe/Berlin", n=2)
    assert [g.date().isoformat() for g in got] == ["2026-03-30", "2026-03-31"]
    got = nxt("30 2 * * *", dt.datetime(2026, 10, 24, 12, 0, tzinfo=UTC), tz="Europe/Berlin", n=2)
    assert [g.isoformat() for g in got] == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]


@pytest.mark.parametrize("bad, msg", [
    ("0 2 * *", "must have 5 fields"), ("61 * * * *", "minute: 61 is out of range 0-59"),
    ("0 2 * * funday", "day of week: 'funday' is not a number"), ("0 5-2 * * *", "goes backwards"),
    ("*/0 * * * *", "step '0'"),
])
def test_errors_are_readable(bad, msg):
    with pytest.raises(CronError) as exc:
        parse_cron(bad)
    assert msg in str(exc.value)
