"""Dates and times: date, time, datetime, duration.

* ``date`` -> ``datetime.date`` (``DATE``).
* ``time`` -> ``datetime.time`` (``TIME``), a time of day without zone.
* ``datetime`` -> an *aware UTC* ``datetime`` in Python; stored as a *naive
  UTC* ``DATETIME``/``TIMESTAMP WITHOUT TIME ZONE`` (``to_db`` drops the zone,
  ``from_db`` puts UTC back), like the system columns (see ``engine.clock``).
  Input without an offset is local time of the app: the service passes the
  zone as ``spec['_tz']``; without it UTC is assumed.  JSON is ISO 8601 with
  ``Z``; display is ``YYYY-MM-DD HH:MM`` in the viewer's zone.
* ``duration`` -> whole seconds (``int``, ``BIGINT``); input ``'1h30m'``,
  ``'90m'``, ``5400``, ``'1:30'``, ``'PT1H30M'``, ``'1小时30分'``.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any, Mapping

import sqlalchemy as sa

from .base import (NUMBER_OPS, RANGE_OPS, FieldType, FieldValueError, check_bounds, fail, nfkc, register, to_decimal,
                   tz_of)

UTC = dt.timezone.utc

_DATE_RE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?")
_COMPACT_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME_RE = re.compile(r"(\d{1,2})\s*[:：时点]\s*(\d{1,2})(?:\s*[:：分]\s*(\d{1,2})(?:\.(\d{1,6}))?)?\s*秒?")
_RELATIVE_RE = re.compile(r"(today|now)\s*(?:([+-])\s*(\d+)\s*([dwmy]))?", re.I)
_OFFSET_RE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
_HOUR_ONLY_RE = re.compile(r"(\d{1,2})\s*[点时]\s*()")
_CLOCK_RE = re.compile(r"\d+:\d{1,2}(:\d{1,2})?")
_BLANKS_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"[a-z]{2,}")
_PLAIN_DAY_RE = re.compile(r"\s*\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\s*")


def _static_bounds(spec: Mapping, parse_bound) -> list[tuple[str, Any, bool]]:
    """``[(key, bound, dynamic)]`` for ``min``/``max``: relative bounds (``today-18y``,
    ``now``) are worked out per value (``bound`` is None), others once."""
    out = []
    for key in ("min", "max"):
        v = spec.get(key)
        if v is None:
            continue
        if isinstance(v, str) and _RELATIVE_RE.fullmatch(nfkc(v)):
            out.append((key, None, True))
        else:
            out.append((key, parse_bound(v, spec), False))
    return out


def _within(value: Any, bounds: list, spec: Mapping, parse_bound) -> bool:
    for key, bound, dynamic in bounds:
        if dynamic:
            bound = parse_bound(spec[key], spec)
        if (value < bound) if key == "min" else (value > bound):
            return False
    return True


def _bad_date(raw: Any) -> Exception:
    return fail("invalid_date", f"“{raw}”不是有效日期，请按 2026-11-23 的格式填写",
                f"'{raw}' is not a valid date; use the format 2026-11-23")


def _make_date(y: str, m: str, d: str, raw: Any) -> dt.date:
    try:
        return dt.date(int(y), int(m), int(d))
    except ValueError:
        raise fail("invalid_date", f"日期“{raw}”不存在（请检查月份和天数）",
                   f"The date '{raw}' does not exist (check the month and day)") from None


def add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return d.replace(year=year, month=month, day=min(d.day, calendar.monthrange(year, month)[1]))


def _shift(base: dt.date | dt.datetime, sign: str | None, n: str | None, unit: str | None):
    if not sign:
        return base
    k = int(n) * (1 if sign == "+" else -1)
    unit = unit.lower()
    if unit == "d":
        return base + dt.timedelta(days=k)
    if unit == "w":
        return base + dt.timedelta(weeks=k)
    return add_months(base, k * (12 if unit == "y" else 1)) if isinstance(base, dt.date) and not isinstance(base, dt.datetime) \
        else base.replace(**_month_fields(base, k * (12 if unit == "y" else 1)))


def _month_fields(base: dt.datetime, months: int) -> dict:
    d = add_months(base.date(), months)
    return {"year": d.year, "month": d.month, "day": d.day}


def parse_date_text(raw: Any, spec: Mapping | None = None) -> dt.date:
    """'2026-11-23', '2026/11/23', '2026.11.23', '20261123', '2026年11月23日', date/datetime objects."""
    if isinstance(raw, dt.datetime):
        if raw.tzinfo is not None:
            return raw.astimezone(tz_of(spec)).date()
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if not isinstance(raw, str):
        raise _bad_date(raw)
    s = nfkc(raw)
    m = _RELATIVE_RE.fullmatch(s)
    if m and m.group(1).lower() == "today":
        today = dt.datetime.now(tz_of(spec)).date()
        return _shift(today, m.group(2), m.group(3), m.group(4))
    m = _DATE_RE.fullmatch(s) or _COMPACT_DATE_RE.fullmatch(s)
    if m:
        return _make_date(*m.groups(), raw)
    if len(s) > 10 and _DATE_RE.match(s):        # a datetime where a date is wanted
        try:
            return parse_date_text(parse_datetime_text(s, spec), spec)
        except Exception:  # noqa: BLE001 - report as a bad date
            raise _bad_date(raw) from None
    raise _bad_date(raw)


def _bad_datetime(raw: Any) -> Exception:
    return fail("invalid_datetime", f"“{raw}”不是有效的日期时间，请按 2026-11-23 18:30 的格式填写",
                f"'{raw}' is not a valid date and time; use e.g. 2026-11-23 18:30 or 2026-11-23T10:30:00Z")


def parse_datetime_text(raw: Any, spec: Mapping | None = None) -> dt.datetime:
    """-> aware UTC.  Naive input is local time in ``spec['_tz']`` (UTC without it)."""
    zone = tz_of(spec)
    if isinstance(raw, dt.datetime):
        value = raw
    elif isinstance(raw, dt.date):
        value = dt.datetime.combine(raw, dt.time())
    elif isinstance(raw, str):
        s = nfkc(raw)
        m = _RELATIVE_RE.fullmatch(s)
        if m:
            if m.group(1).lower() == "now":
                return _shift(dt.datetime.now(UTC).replace(microsecond=0), m.group(2), m.group(3), m.group(4))
            day = parse_date_text(s, spec)
            return dt.datetime.combine(day, dt.time(), zone).astimezone(UTC)
        try:
            value = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            value = _loose_datetime(s, raw)
    else:
        raise _bad_datetime(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
        # a wall time that does not exist (DST gap) is moved forward by the gap
        value = value.astimezone(UTC)
    return value.astimezone(UTC)


def _loose_datetime(s: str, raw: Any) -> dt.datetime:
    m = _DATE_RE.match(s) or _COMPACT_DATE_RE.match(s)
    if not m:
        raise _bad_datetime(raw)
    try:
        day = dt.date(*(int(g) for g in m.groups()))
    except ValueError:
        raise fail("invalid_datetime", f"日期“{raw}”不存在（请检查月份和天数）",
                   f"The date in '{raw}' does not exist (check the month and day)") from None
    rest = s[m.end():].strip().lstrip("T").strip()
    offset = None
    om = _OFFSET_RE.search(rest)
    if om:
        text = om.group(1)
        rest = rest[: om.start()].strip()
        if text == "Z":
            offset = UTC
        else:
            sign = 1 if text[0] == "+" else -1
            digits = text[1:].replace(":", "")
            offset = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    if not rest:
        t = dt.time()
    else:
        t = _parse_time_text(rest, raw, bad=_bad_datetime)
    return dt.datetime.combine(day, t, offset)


def _parse_time_text(s: str, raw: Any, bad=None) -> dt.time:
    s = s.strip()
    pm = None
    for word, is_pm in (("上午", False), ("早上", False), ("凌晨", False), ("下午", True), ("晚上", True), ("中午", None)):
        if s.startswith(word):
            s, pm = s[len(word):].strip(), is_pm
            break
    low = s.lower()
    if low.endswith(("am", "pm")):
        pm, s = low.endswith("pm"), s[:-2].strip()
    m = _TIME_RE.fullmatch(s) or _HOUR_ONLY_RE.fullmatch(s)
    if not m:
        raise (bad or _bad_time)(raw)
    groups = list(m.groups()) + [None] * (4 - len(m.groups()))
    h, mi = int(groups[0]), int(groups[1] or 0)
    sec = int(groups[2] or 0)
    us = int((groups[3] or "0").ljust(6, "0"))
    if pm is True and h < 12:
        h += 12
    if pm is False and h == 12:
        h = 0
    try:
        return dt.time(h, mi, sec, us)
    except ValueError:
        raise (bad or _bad_time)(raw) from None


def _bad_time(raw: Any) -> Exception:
    return fail("invalid_time", f"“{raw}”不是有效时间，请按 18:30 的格式填写（00:00–23:59）",
                f"'{raw}' is not a valid time; use e.g. 18:30 (00:00-23:59)")


# -- date -------------------------------------------------------------------------------------

_DATE_BOUND_KEYS = {"min": {"type": "string"}, "max": {"type": "string"}}


@register
class DateType(FieldType):
    """A calendar date.  ``min``/``max``: ``2026-01-01``, ``today`` or ``today-18y`` / ``today+30d``."""

    name = "date"
    label = {"zh": "日期", "en": "Date"}
    widget = "date"
    filter_ops = RANGE_OPS
    definition_keys = _DATE_BOUND_KEYS

    def check_definition(self, spec):
        return check_bounds(spec, lambda v: parse_date_text(v if not isinstance(v, (int, float)) else str(v), spec))

    def column_type(self, spec):
        return sa.Date()

    def coerce(self, raw, spec):
        value = parse_date_text(raw, spec)
        for key, cmp, zh, en in (("min", lambda a, b: a < b, "不能早于", "Must not be before"),
                                 ("max", lambda a, b: a > b, "不能晚于", "Must not be after")):
            if spec.get(key) is not None:
                bound = parse_date_text(spec[key], spec)
                if cmp(value, bound):
                    raise fail(key, f"{zh} {bound.isoformat()}", f"{en} {bound.isoformat()}", **{key: bound.isoformat()})
        return value

    def compile_parser(self, spec):
        """Fast path: ASCII ``2026-11-23`` / ``2026/11/23`` / ``20261123``, dates, naive datetimes."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not DateType.coerce:
            return super().compile_parser(spec)
        try:
            bounds = _static_bounds(spec, parse_date_text)
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse, date = self.parse, dt.date
        day_re, compact_re = _DATE_RE.fullmatch, _COMPACT_DATE_RE.fullmatch

        def parser(raw):
            t = type(raw)
            if t is str and len(raw) == 10 and raw[4] == "-" and raw[7] == "-" and raw.isascii() \
                    and raw[:4].isdigit() and raw[5:7].isdigit() and raw[8:].isdigit():     # 2026-11-23
                try:
                    value = date(int(raw[:4]), int(raw[5:7]), int(raw[8:]))
                except ValueError:
                    return parse(raw, spec)
            elif t is str and raw.isascii():
                s = raw.strip()
                m = day_re(s) or compact_re(s)
                if m is None:
                    return None if not s else parse(raw, spec)
                y, mo, d = m.groups()
                try:
                    value = date(int(y), int(mo), int(d))
                except ValueError:
                    return parse(raw, spec)
            elif t is date:
                value = raw
            elif t is dt.datetime and raw.tzinfo is None:
                value = raw.date()
            elif raw is None:
                return None
            else:
                return parse(raw, spec)
            if bounds and not _within(value, bounds, spec, parse_date_text):
                return parse(raw, spec)         # raises the usual error
            return value

        return parser

    def value_schema(self, spec):
        return {"type": "string", "format": "date"}

    def from_db(self, value, spec):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, str):
            return dt.date.fromisoformat(value[:10])
        return value

    def to_json(self, value, spec):
        return None if value is None else value.isoformat()

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else value.isoformat()


# -- time -------------------------------------------------------------------------------------

@register
class TimeType(FieldType):
    """A time of day: ``18:30`` or ``18:30:15``; also ``下午3点``, ``3:30 pm``."""

    name = "time"
    label = {"zh": "时间", "en": "Time"}
    widget = "time"
    filter_ops = RANGE_OPS
    definition_keys = _DATE_BOUND_KEYS

    def check_definition(self, spec):
        return check_bounds(spec, lambda v: self.coerce(v, {}))

    def column_type(self, spec):
        return sa.Time()

    def coerce(self, raw, spec):
        if isinstance(raw, dt.datetime):
            value = raw.time()
        elif isinstance(raw, dt.time):
            value = raw
        elif isinstance(raw, str):
            value = _parse_time_text(nfkc(raw), raw)
        else:
            raise _bad_time(raw)
        value = value.replace(tzinfo=None)
        for key, cmp, zh, en in (("min", lambda a, b: a < b, "不能早于", "Must not be before"),
                                 ("max", lambda a, b: a > b, "不能晚于", "Must not be after")):
            if spec.get(key) is not None:
                bound = _parse_time_text(nfkc(str(spec[key])), spec[key])
                if cmp(value, bound):
                    text = bound.strftime("%H:%M")
                    raise fail(key, f"{zh} {text}", f"{en} {text}", **{key: text})
        return value

    def value_schema(self, spec):
        return {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$"}

    def from_db(self, value, spec):
        if isinstance(value, str):
            return dt.time.fromisoformat(value)
        if isinstance(value, dt.timedelta):        # some drivers return intervals
            return (dt.datetime.min + value).time()
        return value

    def to_json(self, value, spec):
        if value is None:
            return None
        return value.strftime("%H:%M") if value.second == 0 and value.microsecond == 0 else value.isoformat()

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else value.strftime("%H:%M")


# -- datetime ---------------------------------------------------------------------------------

@register
class DateTimeType(FieldType):
    """An instant.  See the module docstring for zones and storage."""

    name = "datetime"
    label = {"zh": "日期时间", "en": "Date and time"}
    widget = "datetime"
    filter_ops = RANGE_OPS
    definition_keys = _DATE_BOUND_KEYS

    def check_definition(self, spec):
        return check_bounds(spec, lambda v: parse_datetime_text(v, spec))

    def column_type(self, spec):
        return sa.DateTime()

    def coerce(self, raw, spec):
        value = parse_datetime_text(raw, spec)
        if not 1900 <= value.year <= 9998:
            raise fail("out_of_range", "年份应在 1900 到 9998 之间", "The year must be between 1900 and 9998")
        zone = tz_of(spec)
        for key, cmp, zh, en in (("min", lambda a, b: a < b, "不能早于", "Must not be before"),
                                 ("max", lambda a, b: a > b, "不能晚于", "Must not be after")):
            if spec.get(key) is not None:
                bound = parse_datetime_text(spec[key], spec)
                if cmp(value, bound):
                    text = bound.astimezone(zone).strftime("%Y-%m-%d %H:%M")
                    raise fail(key, f"{zh} {text}", f"{en} {text}", **{key: bound.isoformat()})
        return value

    def compile_parser(self, spec):
        """Fast path: ASCII ISO 8601 text (``2026-11-23 18:30``, ``…T10:30:00Z``) and datetimes."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not DateTimeType.coerce:
            return super().compile_parser(spec)
        try:
            zone = tz_of(spec)
            bounds = _static_bounds(spec, parse_datetime_text)
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse, fromiso, datetime = self.parse, dt.datetime.fromisoformat, dt.datetime

        def parser(raw):
            t = type(raw)
            try:
                if t is str and raw.isascii():
                    s = raw.strip()
                    if not s:
                        return None
                    if not s[0].isdigit():          # 'today', 'now+1d', junk
                        return parse(raw, spec)
                    value = fromiso(s.replace("Z", "+00:00").replace("z", "+00:00"))
                elif t is datetime:
                    value = raw
                elif raw is None:
                    return None
                else:
                    return parse(raw, spec)
                if value.tzinfo is None:
                    value = value.replace(tzinfo=zone).astimezone(UTC)
                value = value.astimezone(UTC)
                if not 1900 <= value.year <= 9998 or (bounds and not _within(value, bounds, spec, parse_datetime_text)):
                    return parse(raw, spec)     # raises the usual error
                return value
            except FieldValueError:
                raise
            except Exception:  # noqa: BLE001 - whatever it is, parse decides
                return parse(raw, spec)

        return parser

    def to_db(self, value, spec):
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value

    def from_db(self, value, spec):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def value_schema(self, spec):
        return {"type": "string", "format": "date-time"}

    def to_json(self, value, spec):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(tz_of(spec, tz)).strftime("%Y-%m-%d %H:%M")

    def filter_value(self, raw, spec, bound=None):
        """A date alone (``2026-11-23``) filters by the whole local day:
        ``gte``/``lt``/``between`` low -> start of day, ``lte``/``gt``/``between`` high -> end of day."""
        if isinstance(raw, str) and _PLAIN_DAY_RE.fullmatch(nfkc(raw)):
            day = parse_date_text(raw, spec)
            start = dt.datetime.combine(day, dt.time(), tz_of(spec)).astimezone(UTC)
            if bound == "high":
                start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz_of(spec)).astimezone(UTC) \
                    - dt.timedelta(microseconds=1)
            return self.to_db(start, spec)
        return super().filter_value(raw, spec, bound)


# -- duration ---------------------------------------------------------------------------------

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1,
          "周": 604800, "星期": 604800, "天": 86400, "日": 86400, "小时": 3600, "时": 3600,
          "分钟": 60, "分": 60, "秒钟": 1, "秒": 1,
          "week": 604800, "weeks": 604800, "day": 86400, "days": 86400, "hour": 3600, "hours": 3600,
          "hr": 3600, "hrs": 3600, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_UNIT_RE = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_PART_RE = re.compile(rf"(\d+(?:\.\d+)?)\s*({_UNIT_RE})", re.I)
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.I)


def parse_duration(raw: Any) -> int:
    """-> whole seconds, or ``invalid_duration``."""
    bad = fail("invalid_duration", f"“{raw}”不是有效时长，请写成如 1h30m、90m、2d 或 1小时30分",
               f"'{raw}' is not a duration; write e.g. 1h30m, 90m, 2d or 5400 (seconds)")
    if isinstance(raw, dt.timedelta):
        seconds = raw.total_seconds()
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = raw
    elif isinstance(raw, str):
        s = nfkc(raw).lower().replace("个", "").replace("半小时", "30分")
        d = to_decimal(s)
        if d is not None:
            seconds = float(d)
        elif _CLOCK_RE.fullmatch(s):
            parts = [int(p) for p in s.split(":")]
            if any(p >= 60 for p in parts[1:]):
                raise bad
            seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)
        elif (m := _ISO_DURATION.fullmatch(s.upper())) and any(m.groups()):
            w, d_, h, mi, se = (float(g) if g else 0 for g in m.groups())
            seconds = w * 604800 + d_ * 86400 + h * 3600 + mi * 60 + se
        else:
            compact = _BLANKS_RE.sub("", s) if not _WORD_RE.search(s) else s
            pos, seconds = 0, 0.0
            for m in _PART_RE.finditer(compact):
                if compact[pos:m.start()].strip(" ,，") != "":
                    raise bad
                seconds += float(m.group(1)) * _UNITS[m.group(2).lower()]
                pos = m.end()
            if pos == 0 or compact[pos:].strip() != "":
                raise bad
    else:
        raise bad
    if seconds < 0:
        raise fail("min", "时长不能为负数", "A duration cannot be negative", min=0)
    return int(round(seconds))


def format_duration(seconds: int, lang: str = "zh") -> str:
    seconds = int(seconds)
    if seconds == 0:
        return "0分钟" if lang == "zh" else "0m"
    parts = []
    rest = seconds
    for size, zh, en in ((86400, "天", "d"), (3600, "小时", "h"), (60, "分钟", "m"), (1, "秒", "s")):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{zh}" if lang == "zh" else f"{n}{en}")
    return "".join(parts) if lang == "zh" else " ".join(parts)


@register
class DurationType(FieldType):
    """A length of time in whole seconds.  ``min``/``max``: seconds or ``'30m'``."""

    name = "duration"
    label = {"zh": "时长", "en": "Duration"}
    widget = "duration"
    filter_ops = NUMBER_OPS
    definition_keys = {"min": {"type": ["integer", "string"]}, "max": {"type": ["integer", "string"]}}

    def check_definition(self, spec):
        return check_bounds(spec, parse_duration)

    def column_type(self, spec):
        return sa.BigInteger()

    def coerce(self, raw, spec):
        value = parse_duration(raw)
        if spec.get("min") is not None and value < parse_duration(spec["min"]):
            lo = parse_duration(spec["min"])
            raise fail("min", f"不能短于 {format_duration(lo)}", f"Must be at least {format_duration(lo, 'en')}", min=lo)
        if spec.get("max") is not None and value > parse_duration(spec["max"]):
            hi = parse_duration(spec["max"])
            raise fail("max", f"不能长于 {format_duration(hi)}", f"Must be at most {format_duration(hi, 'en')}", max=hi)
        return value

    def value_schema(self, spec):
        return {"type": "integer", "minimum": 0, "description": "seconds"}

    def from_db(self, value, spec):
        return None if value is None else int(value)

    def to_json(self, value, spec):
        return None if value is None else int(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else format_duration(value, lang)
