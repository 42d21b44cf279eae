"""The function library. Every function is total on None and raises only ExpressionError.

Functions that need the clock, the timezone or callbacks receive the evaluation context
first (``needs_ctx``); the others are called with the argument values only.
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from types import MappingProxyType
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from collections.abc import Mapping
from typing import Any, Callable

from . import runtime as rt
from .context import UTC, EvalContext
from .errors import ExpressionError

date, datetime, timedelta = dt.date, dt.datetime, dt.timedelta


@dataclass(frozen=True)
class Function:
    """A library function: its implementation, arity and documentation."""

    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None            # None: any number
    signature: str
    doc: str
    example: str
    needs_ctx: bool = False         # impl(ctx, *args)
    keywords: bool = False          # accepts field=value arguments (exists)
    sql: bool = False               # can be translated by Expression.to_sql

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.impl(*args, **kwargs)


def _err(fn: str, message: str) -> ExpressionError:
    return ExpressionError(f"{fn}(): {message}", code="runtime")


def _number(fn: str, v: Any, what: str = "a number") -> Any:
    if rt.is_num(v):
        return v
    raise _err(fn, f"expected {what}, got {rt.describe(v)}")


def _whole(fn: str, v: Any, what: str = "a whole number") -> int:
    if isinstance(v, int):
        return int(v)
    if isinstance(v, (float, Decimal)) and v == v and v not in (float("inf"), float("-inf")) and v == int(v):
        return int(v)
    raise _err(fn, f"expected {what}, got {rt.describe(v)}")


def _text(fn: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if rt.is_num(v) and not isinstance(v, bool):
        return rt.to_text(v, None)
    raise _err(fn, f"expected a text, got {rt.describe(v)}")


# -- dates and times -----------------------------------------------------------------------

def today(ctx: Any) -> date:
    return rt.ctx_or_system(ctx).today


def now(ctx: Any) -> datetime:
    return rt.ctx_or_system(ctx).now


def _overflow(fn: str) -> ExpressionError:
    return _err(fn, "the resulting date is out of range (years 1-9999)")


def add_days(ctx: Any, d: Any, n: Any) -> Any:
    d = rt.as_temporal(d, ctx, "add_days()")
    if d is None or n is None:
        return None
    try:
        if isinstance(d, datetime):     # calendar days: keeps the local time of day
            step = timedelta(days=_number("add_days", n))
            return (rt.local(d, ctx) + step).astimezone(UTC)
        return d + timedelta(days=_whole("add_days", n, "a whole number of days"))
    except OverflowError:
        raise _overflow("add_days") from None


def add_hours(ctx: Any, t: Any, n: Any) -> Any:
    t = rt.as_temporal(t, ctx, "add_hours()")
    if t is None or n is None:
        return None
    n = _number("add_hours", n)
    try:
        return (rt.to_instant(t, ctx) + timedelta(hours=float(n))).astimezone(UTC)
    except OverflowError:
        raise _overflow("add_hours") from None


def _add_months_to(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    year, month = d.year + y, m + 1
    if not 1 <= year <= 9999:
        raise _overflow("add_months")
    return d.replace(year=year, month=month, day=min(d.day, calendar.monthrange(year, month)[1]))


def add_months(ctx: Any, d: Any, n: Any) -> Any:
    d = rt.as_temporal(d, ctx, "add_months()")
    if d is None or n is None:
        return None
    n = _whole("add_months", n, "a whole number of months")
    if abs(n) > 120_000:
        raise _overflow("add_months")
    if isinstance(d, datetime):
        loc = rt.local(d, ctx)
        moved = _add_months_to(loc.date(), n)
        return datetime.combine(moved, loc.timetz().replace(tzinfo=None), tzinfo=loc.tzinfo).astimezone(UTC)
    return _add_months_to(d, n)


def _delta(fn: str, ctx: Any, a: Any, b: Any) -> timedelta | int | None:
    a = rt.as_temporal(a, ctx, f"{fn}()")
    b = rt.as_temporal(b, ctx, f"{fn}()")
    if a is None or b is None:
        return None
    if type(a) is date and type(b) is date:
        return b - a
    return rt.to_instant(b, ctx) - rt.to_instant(a, ctx)


_ZERO = timedelta(0)


def days_between(ctx: Any, a: Any, b: Any) -> int | None:
    """Whole days from a to b (b - a), truncated toward zero; a date counts as 00:00 local time."""
    if type(b) is date and type(a) is datetime and a.tzinfo is UTC and isinstance(ctx, EvalContext):
        d = ctx.midnight(b) - a                     # the common case: days_between(some_time, today())
    else:
        d = _delta("days_between", ctx, a, b)
        if d is None:
            return None
    return d.days if d >= _ZERO else -((-d).days)


def hours_between(ctx: Any, a: Any, b: Any) -> float | None:
    d = _delta("hours_between", ctx, a, b)
    if d is None:
        return None
    return d.total_seconds() / 3600.0


DATE_PARTS = ("year", "quarter", "month", "day", "weekday", "hour", "minute")


def date_part(ctx: Any, d: Any, part: Any) -> int | None:
    if part is None:
        return None
    if not isinstance(part, str) or part.lower() not in DATE_PARTS:
        raise _err("date_part", f"unknown part {rt.describe(part)}; use one of {', '.join(DATE_PARTS)}")
    d = rt.as_temporal(d, ctx, "date_part()")
    if d is None:
        return None
    p = part.lower()
    if isinstance(d, datetime):
        d = rt.local(d, ctx)
    if p == "year":
        return d.year
    if p == "quarter":
        return (d.month - 1) // 3 + 1
    if p == "month":
        return d.month
    if p == "day":
        return d.day
    if p == "weekday":
        return d.isoweekday()           # Monday = 1 ... Sunday = 7
    if p == "hour":
        return d.hour if isinstance(d, datetime) else 0
    return d.minute if isinstance(d, datetime) else 0


def date_(ctx: Any, s: Any) -> date | None:
    if s is None:
        return None
    if isinstance(s, datetime):
        return rt.local(s, ctx).date()
    if isinstance(s, date):
        return s
    if isinstance(s, str):
        v = rt.parse_temporal(s, ctx, "date()")
        return date_(ctx, v) if isinstance(v, datetime) else v
    raise _err("date", f"expected a text like '2026-01-31', got {rt.describe(s)}")


# -- text ------------------------------------------------------------------------------------

def len_(x: Any) -> int | None:
    if x is None:
        return None
    if isinstance(x, (str, list, tuple, Mapping)):
        return len(x)
    raise _err("len", f"expected a text or a list, got {rt.describe(x)}")


def lower(s: Any) -> str | None:
    return None if s is None else _text("lower", s).lower()


def upper(s: Any) -> str | None:
    return None if s is None else _text("upper", s).upper()


def trim(s: Any) -> str | None:
    return None if s is None else _text("trim", s).strip(rt.WHITESPACE)


def contains(s: Any, sub: Any) -> bool:
    if s is None or sub is None:
        return False
    if isinstance(s, str):
        return _text("contains", sub) in s
    if isinstance(s, (list, tuple)):
        return sub in s
    if isinstance(s, Mapping):
        return rt.in_(sub, s)
    raise _err("contains", f"expected a text or a list first, got {rt.describe(s)}")


def startswith(s: Any, prefix: Any) -> bool:
    if s is None or prefix is None:
        return False
    return _text("startswith", s).startswith(_text("startswith", prefix))


def endswith(s: Any, suffix: Any) -> bool:
    if s is None or suffix is None:
        return False
    return _text("endswith", s).endswith(_text("endswith", suffix))


def concat(ctx: Any, *parts: Any) -> str:
    return rt.concat_parts(parts, ctx)


def substr(s: Any, start: Any, length: Any = None) -> str | None:
    if s is None or start is None:
        return None
    s = _text("substr", s)
    i = max(_whole("substr", start, "a whole-number position (1 = first character)"), 1) - 1
    if length is None:
        return s[i:]
    n = _whole("substr", length, "a whole-number length")
    return s[i:i + max(n, 0)]


def mask(s: Any) -> str | None:
    """Hide the middle of personal data: '13812345678' -> '138****5678'."""
    if s is None:
        return None
    s = rt.to_text(s, None, "mask()") if not isinstance(s, str) else s
    n = len(s)
    if n <= 1:
        return "*" * n
    if n == 2:
        return s[0] + "*"
    if n <= 6:
        keep_head, keep_tail = 1, 1
    elif n <= 10:
        keep_head, keep_tail = 2, 2
    else:
        keep_head, keep_tail = 3, 4
    return s[:keep_head] + "*" * (n - keep_head - keep_tail) + s[n - keep_tail:]


# -- numbers ------------------------------------------------------------------------------------

def round_(x: Any, n: Any = 0) -> Any:
    """Half away from zero (2.5 -> 3, like a calculator and SQL), not Python's banker's rounding."""
    if x is None or n is None:
        return None
    x = _number("round", x)
    n = _whole("round", n, "a whole number of decimals")
    if abs(n) > 20:
        raise _err("round", f"{n} decimals is out of range (-20 to 20)")
    if isinstance(x, bool):
        x = int(x)
    if isinstance(x, int) and n >= 0:
        return x
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        raise _err("round", f"cannot round {x}")
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    try:
        r = d.quantize(Decimal(1).scaleb(-n), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise _err("round", f"cannot round {rt.describe(x)} to {n} decimals") from None
    if n <= 0:
        return int(r)
    return r if isinstance(x, Decimal) else float(r)


def abs_(x: Any) -> Any:
    return None if x is None else abs(_number("abs", x))


def _values(args: tuple) -> list:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = tuple(args[0])
    return [a for a in args if a is not None]


def min_(ctx: Any, *args: Any) -> Any:
    vals = _values(args)
    if not vals:
        return None
    best = vals[0]
    for v in vals[1:]:
        if rt.lt(v, best, ctx):
            best = v
    return best


def max_(ctx: Any, *args: Any) -> Any:
    vals = _values(args)
    if not vals:
        return None
    best = vals[0]
    for v in vals[1:]:
        if rt.gt(v, best, ctx):
            best = v
    return best


def sum_(xs: Any) -> Any:
    if xs is None:
        return None
    if not isinstance(xs, (list, tuple)):
        raise _err("sum", f"expected a list of numbers, got {rt.describe(xs)}")
    total: Any = 0
    for v in xs:
        if v is None:
            continue
        total = rt.add(total, _number("sum", v, "numbers in the list"))
    return total


def int_(x: Any) -> int | None:
    if x is None:
        return None
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, (float, Decimal)):
        if x != x or x in (float("inf"), float("-inf")) or (isinstance(x, Decimal) and not x.is_finite()):
            raise _err("int", f"cannot turn {x} into a whole number")
        return rt.check_int(int(x))
    if isinstance(x, str):
        text = x.strip()
        try:
            return rt.check_int(int(text))
        except ValueError:
            pass
        try:
            d = Decimal(text)
            if d.is_finite() and d.adjusted() < 1300:
                return rt.check_int(int(d))
        except (InvalidOperation, ValueError):
            pass
        raise _err("int", f"cannot turn {rt.describe(x)} into a whole number")
    raise _err("int", f"cannot turn {rt.describe(x)} into a whole number")


def float_(x: Any) -> float | None:
    if x is None:
        return None
    try:
        if isinstance(x, (int, float, Decimal)):
            return float(x)
        if isinstance(x, str):
            return float(x.strip())
    except (ValueError, OverflowError):
        pass
    raise _err("float", f"cannot turn {rt.describe(x)} into a number")


def str_(ctx: Any, x: Any) -> str | None:
    return None if x is None else rt.to_text(x, ctx, "str()")


def coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def is_empty(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return not x.strip(rt.WHITESPACE)
    if isinstance(x, (list, tuple, dict, set, frozenset, Mapping)):
        return len(x) == 0
    return False


# -- context callbacks --------------------------------------------------------------------------

def changed(ctx: Any, field: Any) -> bool:
    """True when the field changed in the update being processed (False where nothing changes)."""
    if ctx is rt.NO_CTX:
        raise rt.NeedsContext
    if ctx is None or ctx.changed is None or field is None:
        return False
    return bool(ctx.changed(field))


def exists(ctx: Any, form: Any, criteria: Mapping[str, Any] | None = None) -> bool:
    if ctx is rt.NO_CTX:
        raise rt.NeedsContext
    if ctx is None or ctx.exists is None:
        raise ExpressionError("exists() needs the database and is only available in rules, flows and validations",
                              code="runtime")
    return bool(ctx.exists(form, dict(criteria or {})))


# -- the table -------------------------------------------------------------------------------

def _f(name, impl, lo, hi, signature, doc, example, **kw) -> Function:
    return Function(name, impl, lo, hi, signature, doc, example, **kw)


_ALL = [
    _f("today", today, 0, 0, "today()", "The current local date in the app's timezone.",
       "delivery_date <= today()", needs_ctx=True, sql=True),
    _f("now", now, 0, 0, "now()", "The current date-time (UTC; shown in the app's timezone).",
       "due_at < now()", needs_ctx=True, sql=True),
    _f("add_days", add_days, 2, 2, "add_days(d, n)",
       "The date (or date-time) n days later; n may be negative.", "add_days(delivery_date, 85)", needs_ctx=True),
    _f("add_hours", add_hours, 2, 2, "add_hours(t, n)", "The date-time n hours later; n may be negative.",
       "add_hours(created_at, 4)", needs_ctx=True),
    _f("add_months", add_months, 2, 2, "add_months(d, n)",
       "The date n calendar months later; the 31st becomes the last day of shorter months.",
       "add_months(contract_start, 12)", needs_ctx=True),
    _f("days_between", days_between, 2, 2, "days_between(a, b)",
       "Whole days from a to b (b - a), truncated; a date counts as 00:00 local time.",
       "days_between(last_follow_up_at, today()) > 3", needs_ctx=True, sql=True),
    _f("hours_between", hours_between, 2, 2, "hours_between(a, b)", "Hours from a to b (b - a), with fractions.",
       "hours_between(created_at, now()) > 4", needs_ctx=True, sql=True),
    _f("date_part", date_part, 2, 2, "date_part(d, part)",
       "A part of a date in local time: 'year', 'quarter', 'month', 'day', 'weekday' (Monday = 1 ... "
       "Sunday = 7), 'hour' or 'minute'.", "date_part(created_at, 'month') == 12", needs_ctx=True, sql=True),
    _f("date", date_, 1, 1, "date(s)", "Reads a text like '2026-01-31' as a date (a date-time gives its local date).",
       "delivery_date >= date('2026-01-01')", needs_ctx=True),
    _f("len", len_, 1, 1, "len(x)", "The number of characters of a text or items of a list.",
       "len(phone) == 11", sql=True),
    _f("lower", lower, 1, 1, "lower(s)", "The text in lower case.", "lower(email) == 'a@b.com'", sql=True),
    _f("upper", upper, 1, 1, "upper(s)", "The text in upper case.", "upper(level) == 'H'", sql=True),
    _f("trim", trim, 1, 1, "trim(s)", "The text without leading and trailing spaces.", "trim(name) != ''", sql=True),
    _f("contains", contains, 2, 2, "contains(s, part)",
       "True if the text contains the part (case-sensitive), or the list contains the item.",
       "contains(remark, 'VIP')", sql=True),
    _f("startswith", startswith, 2, 2, "startswith(s, prefix)", "True if the text starts with prefix.",
       "startswith(phone, '138')", sql=True),
    _f("endswith", endswith, 2, 2, "endswith(s, suffix)", "True if the text ends with suffix.",
       "endswith(email, '@example.com')", sql=True),
    _f("concat", concat, 1, None, "concat(a, b, ...)", "Joins values as text; empty values are skipped.",
       "concat(province, ' ', city)", needs_ctx=True),
    _f("substr", substr, 2, 3, "substr(s, start, length)",
       "Part of a text: start is 1 for the first character; without length, to the end.",
       "substr(vin, 1, 3) == 'LSV'"),
    _f("round", round_, 1, 2, "round(x, n=0)",
       "x rounded to n decimals, halves away from zero (2.5 -> 3); a whole number when n is 0.",
       "round(amount * 0.13, 2)", sql=True),
    _f("abs", abs_, 1, 1, "abs(x)", "The absolute value.", "abs(balance) > 100", sql=True),
    _f("min", min_, 1, None, "min(a, b, ...)", "The smallest value (or of one list); empty values are skipped.",
       "min(quote, budget)", needs_ctx=True),
    _f("max", max_, 1, None, "max(a, b, ...)", "The largest value (or of one list); empty values are skipped.",
       "max(score, 60)", needs_ctx=True),
    _f("sum", sum_, 1, 1, "sum(list)", "The total of a list of numbers; empty values are skipped.",
       "sum(amounts) > 10000"),
    _f("int", int_, 1, 1, "int(x)", "A whole number from a number (truncated) or a text.", "int(mileage_text) > 5000"),
    _f("float", float_, 1, 1, "float(x)", "A number from a text or number.", "float(rate) * 100"),
    _f("str", str_, 1, 1, "str(x)", "A value as text (dates as YYYY-MM-DD).", "str(year) == '2026'", needs_ctx=True),
    _f("coalesce", coalesce, 1, None, "coalesce(a, b, ...)", "The first value that is not empty (None).",
       "coalesce(mobile, phone)", sql=True),
    _f("is_empty", is_empty, 1, 1, "is_empty(x)",
       "True for an empty value, a text of only spaces, or an empty list.", "is_empty(lost_reason)", sql=True),
    _f("changed", changed, 1, 1, "changed('field')",
       "In rules on updates: True if the field changed (always False where nothing is updated).",
       "changed('owner')", needs_ctx=True),
    _f("exists", exists, 1, 1, "exists('form', field=value, ...)",
       "True if a record of the form matches all the field=value conditions.",
       "exists('service_order', vehicle=id, kind='first_service')", needs_ctx=True, keywords=True),
    _f("mask", mask, 1, 1, "mask(s)", "Hides the middle of personal data: '13812345678' -> '138****5678'.",
       "mask(phone)"),
]

#: name -> Function: the library every expression may call (calling one: ``FUNCTIONS['lower']('ABC')``,
#: with the context first for ``needs_ctx`` functions).
FUNCTIONS: Mapping[str, Function] = MappingProxyType({f.name: f for f in _ALL})
