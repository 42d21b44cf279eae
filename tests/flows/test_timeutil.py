"""Durations, step times and working-hour calendars (no database)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.timeutil import Calendar, DurationError, calendar_problems, parse_duration, parse_offset

SH = ZoneInfo("Asia/Shanghai")
HQ = Calendar("hq", SH, ["mon", "tue", "wed", "thu", "fri"], ["09:00-12:00", "13:30-18:00"],
              holidays=["2026-10-01", "2026-10-02", "2026-10-05"], workdays=["2026-10-10"])


def at(y, m, d, hh=0, mm=0, tz=SH):
    return dt.datetime(y, m, d, hh, mm, tzinfo=tz)


def test_durations_and_offsets():
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("2w") == dt.timedelta(days=14)
    for bad in ("", "4 hours", "1.5h", "h", "-3d"):
        with pytest.raises(DurationError):
            parse_duration(bad)
    o = parse_offset("+1d 10:00")
    assert o.apply(dt.date(2026, 11, 23), SH, dt.time(9)) == at(2026, 11, 24, 10)
    assert parse_offset("+85d").apply(dt.date(2026, 11, 23), SH, dt.time(9)) == at(2027, 2, 16, 9)
    assert parse_offset("+2h").apply(at(2026, 11, 23, 23, 0), SH, dt.time(9)) == at(2026, 11, 24, 1, 0)
    assert parse_offset("-1d 18:00").apply(dt.date(2026, 11, 23), SH, dt.time(9)) == at(2026, 11, 22, 18)
    for bad in ("+1x", "tomorrow", "+1d 25:00", ""):
        with pytest.raises(DurationError):
            parse_offset(bad)


def test_offsets_keep_the_local_time_across_daylight_saving():
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-10-25 Europe leaves summer time: +1d 10:00 is still 10:00 local
    assert parse_offset("+1d 10:00").apply(dt.date(2026, 10, 24), berlin, dt.time(9)) == at(2026, 10, 25, 10, tz=berlin)
    assert parse_offset("+1d").apply(dt.date(2026, 10, 24), berlin, dt.time(9)).astimezone(berlin).hour == 9


def test_working_time_with_lunch_holidays_and_make_up_days():
    assert HQ.add(at(2026, 9, 30, 17, 0), dt.timedelta(hours=2)) == at(2026, 10, 6, 10, 0)   # holidays 1, 2, 5; weekend
    assert HQ.add(at(2026, 10, 9, 17, 0), dt.timedelta(hours=2)) == at(2026, 10, 10, 10, 0)  # Saturday 10th is a workday
    assert HQ.add(at(2026, 11, 23, 11, 0), dt.timedelta(hours=2)) == at(2026, 11, 23, 14, 30)  # across lunch
    assert HQ.add(at(2026, 11, 23, 12, 30), dt.timedelta(minutes=30)) == at(2026, 11, 23, 14, 0)
    assert HQ.subtract(at(2026, 11, 24, 9, 10), dt.timedelta(minutes=30)) == at(2026, 11, 23, 17, 40)
    assert HQ.between(at(2026, 11, 23, 8, 0), at(2026, 11, 24, 8, 0)) == dt.timedelta(hours=7, minutes=30)
    assert HQ.between(at(2026, 11, 24, 8, 0), at(2026, 11, 23, 8, 0)) == dt.timedelta(0)
    around = Calendar("24x7", SH, ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ["00:00-24:00"])
    assert around.add(at(2026, 11, 23, 23, 0), dt.timedelta(hours=3)) == at(2026, 11, 24, 2, 0)


@settings(max_examples=150, deadline=None)
@given(start=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)),
       minutes=st.integers(min_value=0, max_value=60 * 24 * 20))
def test_add_and_between_agree(start, minutes):
    start = start.replace(tzinfo=SH)
    amount = dt.timedelta(minutes=minutes)
    end = HQ.add(start, amount)
    assert HQ.between(start, end) == amount
    if minutes:
        assert HQ.subtract(end, amount) <= end
        assert HQ.between(HQ.subtract(end, amount), end) == amount


def test_calendar_problems():
    assert calendar_problems({"days": ["mon", "funday"], "hours": ["9-5", "18:00-09:00"], "holidays": ["2026-02-30"]}) == [
        (("days", 1), "'funday' is not a day; use mon, tue, wed, thu, fri, sat, sun"),
        (("hours", 0), "'9-5' is not a span of hours: write e.g. '09:00-12:00'"),
        (("hours", 1), "'18:00-09:00': the end must be after the start"),
        (("holidays", 0), "'2026-02-30' is not a date: write YYYY-MM-DD"),
    ]
