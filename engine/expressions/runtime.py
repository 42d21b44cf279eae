"""Value semantics shared by compiled expressions, the reference interpreter and SQL folding.

Everything here is *total* on ``None`` (comparisons give False, arithmetic gives None) and
bounded (no huge strings, lists or integers), and reports bad types as ``ExpressionError``
with a message for a business analyst. Nothing here ever reads an attribute of a value:
dotted names are dictionary keys only.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .context import UTC, EvalContext
from .errors import ExpressionError

MAX_LENGTH = 100_000        # longest text or list an expression may build
MAX_INT_BITS = 4096         # largest integer an expression may build
MAX_EXPONENT = 100          # largest |exponent| for **
_INT_LIMIT = 1 << MAX_INT_BITS

date = dt.date
datetime = dt.datetime


# -- evaluation context ----------------------------------------------------------------

class NeedsContext(Exception):
    """Raised while constant-folding at compile time when a value needs the clock or timezone."""


class _NoContext:
    """Sentinel 'ctx' used for compile-time folding: anything that needs a context refuses."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_CTX"


NO_CTX: Any = _NoContext()


def ctx_or_system(ctx: Any) -> EvalContext:
    if ctx is None:
        return EvalContext.system()
    if ctx is NO_CTX:
        raise NeedsContext
    return ctx


def tz_of(ctx: Any):
    if ctx is None:
        return UTC
    if ctx is NO_CTX:
        raise NeedsContext
    return ctx.tz


# -- describing values in messages -----------------------------------------------------

def kind_name(v: Any) -> str:
    if v is None:
        return "an empty value"
    if isinstance(v, bool):
        return "a true/false value"
    if isinstance(v, (int, float, Decimal)):
        return "a number"
    if isinstance(v, str):
        return "a text"
    if isinstance(v, datetime):
        return "a date-time"
    if isinstance(v, date):
        return "a date"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, Mapping):
        return "a record"
    return "a value of an unsupported kind"


def describe(v: Any) -> str:
    """'the text 'abc'' / 'the number 3' / 'an empty value' ..."""
    if v is None or isinstance(v, (list, tuple, Mapping)) or not isinstance(v, (bool, int, float, Decimal, str, date)):
        return kind_name(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        shown = v if len(v) <= 30 else v[:27] + "..."
        return f"the text {shown!r}"
    if isinstance(v, datetime):
        return f"the date-time {v.isoformat(' ', 'seconds')}"
    if isinstance(v, date):
        return f"the date {v.isoformat()}"
    shown = str(v)
    if len(shown) > 30:
        shown = shown[:27] + "..."
    return f"the number {shown}"


def err(message: str, code: str = "runtime") -> ExpressionError:
    return ExpressionError(message, code=code)


# -- numbers -----------------------------------------------------------------------------

_NUMF = frozenset({int, float, bool})          # fast path: native arithmetic is exact and safe


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal))


def _too_big() -> ExpressionError:
    return err(f"the result is too large a number (more than {MAX_INT_BITS} bits)", "limit")


def check_int(r: Any) -> Any:
    if type(r) is int and (r >= _INT_LIMIT or r <= -_INT_LIMIT):
        raise _too_big()
    return r


def _dec(v: Any) -> Any:
    return Decimal(repr(v)) if isinstance(v, float) else v


def num_pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Decimal mixed with float works in Decimal (money stays exact)."""
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return _dec(a), _dec(b)
    return a, b


# -- dates -------------------------------------------------------------------------------

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?\Z")


def looks_temporal(s: Any) -> bool:
    return isinstance(s, str) and bool(_DATE_RE.match(s) or _DATETIME_RE.match(s))


def parse_temporal(s: str, ctx: Any, where: str = "") -> date:
    """ISO text -> date, or aware UTC datetime (a date-time without offset is local time)."""
    text = s.strip()
    try:
        if _DATE_RE.match(text):
            return date.fromisoformat(text)
        if _DATETIME_RE.match(text):
            v = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if v.tzinfo is None:
                v = v.replace(tzinfo=tz_of(ctx))
            return v.astimezone(UTC)
    except ValueError:
        pass
    prefix = f"{where}: " if where else ""
    raise err(f"{prefix}{describe(s)} is not a date; write dates as YYYY-MM-DD (e.g. '2026-01-31') "
              f"and date-times as YYYY-MM-DD HH:MM")


def aware(v: datetime) -> datetime:
    """Naive date-times are UTC (that is how they are stored)."""
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def midnight(d: date, ctx: Any) -> datetime:
    """A date stands for 00:00 local time when it meets a date-time (as an aware UTC datetime)."""
    if ctx is None or ctx is NO_CTX:
        return datetime(d.year, d.month, d.day, tzinfo=tz_of(ctx))
    return ctx.midnight(d)


def to_instant(v: Any, ctx: Any) -> datetime:
    if isinstance(v, datetime):
        return aware(v)
    if isinstance(v, date):
        return midnight(v, ctx)
    if isinstance(v, str):
        return to_instant(parse_temporal(v, ctx), ctx)
    raise err(f"expected a date or date-time, got {describe(v)}")


def as_temporal(v: Any, ctx: Any, where: str) -> Any:
    """date / datetime / ISO text -> date or datetime; None stays None; others are an error."""
    if v is None or isinstance(v, date):
        return v
    if isinstance(v, str):
        return parse_temporal(v, ctx, where)
    raise err(f"{where}: expected a date or date-time, got {describe(v)}")


def local(v: datetime, ctx: Any) -> datetime:
    return aware(v).astimezone(tz_of(ctx))


# -- comparisons -------------------------------------------------------------------------

_FAST_ORDER = frozenset({int, float, str, Decimal, date, bool, datetime})   # same type: native order
# (two datetimes raise TypeError only when one is naive and the other aware: then order_pair decides)


def order_pair(a: Any, b: Any, ctx: Any, sym: str) -> tuple[Any, Any]:
    if is_num(a) and is_num(b):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    at, bt = isinstance(a, date), isinstance(b, date)
    if at or bt:
        if not at and isinstance(a, str):
            a, at = parse_temporal(a, ctx, f"comparing with '{sym}'"), True
        if not bt and isinstance(b, str):
            b, bt = parse_temporal(b, ctx, f"comparing with '{sym}'"), True
        if at and bt:
            if isinstance(a, datetime) or isinstance(b, datetime):
                return to_instant(a, ctx), to_instant(b, ctx)
            return a, b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a), list(b)
    raise err(f"cannot compare {describe(a)} with {describe(b)} using '{sym}'")


def lt(a: Any, b: Any, ctx: Any = None) -> bool:
    if a is None or b is None:
        return False
    t = type(a)
    if t is type(b) and t in _FAST_ORDER:
        try:
            return a < b
        except TypeError:
            pass
    a, b = order_pair(a, b, ctx, "<")
    return a < b


def le(a: Any, b: Any, ctx: Any = None) -> bool:
    if a is None or b is None:
        return False
    t = type(a)
    if t is type(b) and t in _FAST_ORDER:
        try:
            return a <= b
        except TypeError:
            pass
    a, b = order_pair(a, b, ctx, "<=")
    return a <= b


def gt(a: Any, b: Any, ctx: Any = None) -> bool:
    if a is None or b is None:
        return False
    t = type(a)
    if t is type(b) and t in _FAST_ORDER:
        try:
            return a > b
        except TypeError:
            pass
    a, b = order_pair(a, b, ctx, ">")
    return a > b


def ge(a: Any, b: Any, ctx: Any = None) -> bool:
    if a is None or b is None:
        return False
    t = type(a)
    if t is type(b) and t in _FAST_ORDER:
        try:
            return a >= b
        except TypeError:
            pass
    a, b = order_pair(a, b, ctx, ">=")
    return a >= b


def eq(a: Any, b: Any, ctx: Any = None) -> bool:
    """``==``. Native equality, except that ISO text meeting a date is read as a date."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, date) and looks_temporal(a):
        a = parse_temporal(a, ctx)
    elif isinstance(b, str) and isinstance(a, date) and looks_temporal(b):
        b = parse_temporal(b, ctx)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return aware(a) == aware(b)
    return a == b


def ne(a: Any, b: Any, ctx: Any = None) -> bool:
    return not eq(a, b, ctx)


def in_(x: Any, c: Any) -> bool:
    """``x in c``: membership in a list, a key of a record, or a part of a text. Never raises for None."""
    if c is None:
        return False
    tc = type(c)
    if tc is list or tc is tuple:
        return x in c
    if tc is str:
        return type(x) is str and x in c
    if isinstance(c, (set, frozenset, Mapping)):
        try:
            return x in c
        except TypeError:       # unhashable left side: cannot be a key
            return False
    if isinstance(c, (list, tuple)):
        return x in c
    if isinstance(c, str):
        return isinstance(x, str) and x in c
    raise err(f"'in' needs a list or a text on its right side, not {describe(c)}")


def in_set(x: Any, s: frozenset) -> bool:
    try:
        return x in s
    except TypeError:
        return False


def in_coerce(x: Any, items: tuple, ctx: Any = None) -> bool:
    """``x in [...]`` where the list has ISO date texts: compare like ``==`` does."""
    return any(eq(x, it, ctx) for it in items)


# -- arithmetic --------------------------------------------------------------------------

def _check_len(n: int, what: str) -> None:
    if n > MAX_LENGTH:
        unit = "characters" if what == "the text" else "items"
        raise err(f"{what} would be too long ({n} {unit}; the limit is {MAX_LENGTH})", "limit")


def add(a: Any, b: Any) -> Any:
    if type(a) in _NUMF and type(b) in _NUMF:
        return check_int(a + b)
    if a is None or b is None:
        return None
    if is_num(a) and is_num(b):
        a, b = num_pair(a, b)
        return check_int(a + b)
    if isinstance(a, str) and isinstance(b, str):
        _check_len(len(a) + len(b), "the text")
        return a + b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        _check_len(len(a) + len(b), "the list")
        return list(a) + list(b)
    if isinstance(a, date) or isinstance(b, date):
        raise err("dates cannot be added with '+'; use add_days(d, n), add_hours(t, n) or add_months(d, n)")
    if isinstance(a, str) or isinstance(b, str):
        raise err(f"cannot add {describe(a)} and {describe(b)}; to join texts use concat(a, b)")
    raise err(f"cannot add {describe(a)} and {describe(b)}")


def sub(a: Any, b: Any) -> Any:
    if type(a) in _NUMF and type(b) in _NUMF:
        return check_int(a - b)
    if a is None or b is None:
        return None
    if is_num(a) and is_num(b):
        a, b = num_pair(a, b)
        return check_int(a - b)
    if isinstance(a, date) and isinstance(b, date):
        raise err("dates cannot be subtracted with '-'; use days_between(a, b) or hours_between(a, b)")
    if isinstance(a, date):
        raise err("to go back in time use add_days(d, -n) or add_hours(t, -n)")
    raise err(f"cannot subtract {describe(b)} from {describe(a)}")


def _repeat(seq: Any, n: Any) -> Any:
    if isinstance(n, float) or isinstance(n, Decimal):
        if n != int(n):
            raise err(f"a text or list can only be repeated a whole number of times, not {n}")
        n = int(n)
    if n <= 0:
        return "" if isinstance(seq, str) else []
    _check_len(len(seq) * n, "the text" if isinstance(seq, str) else "the list")
    return seq * n if isinstance(seq, str) else list(seq) * n


def mul(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta in _NUMF and tb in _NUMF:
        if ta is int and tb is int and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
            raise _too_big()
        return check_int(a * b)
    if a is None or b is None:
        return None
    if is_num(a) and is_num(b):
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
            raise _too_big()
        a, b = num_pair(a, b)
        return check_int(a * b)
    if isinstance(a, (str, list, tuple)) and is_num(b):
        return _repeat(a, b)
    if isinstance(b, (str, list, tuple)) and is_num(a):
        return _repeat(b, a)
    raise err(f"cannot multiply {describe(a)} by {describe(b)}")


def _num_args(a: Any, b: Any, sym: str) -> tuple[Any, Any]:
    if not (is_num(a) and is_num(b)):
        extra = " (the remainder of a division)" if sym == "%" else ""
        raise err(f"'{sym}'{extra} works on numbers only, not on {describe(a)} and {describe(b)}")
    if b == 0:
        raise err(f"division by zero ({describe(a)} {sym} 0)")
    return num_pair(a, b)


def truediv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _num_args(a, b, "/")
    try:
        return a / b
    except (OverflowError, ArithmeticError):
        raise _too_big() from None


def floordiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _num_args(a, b, "//")
    try:
        return a // b
    except (OverflowError, ArithmeticError):
        raise _too_big() from None


def mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = _num_args(a, b, "%")
    try:
        return a % b
    except ArithmeticError:
        raise err(f"cannot compute {describe(a)} % {describe(b)}") from None


def pow_(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if not (is_num(a) and is_num(b)):
        raise err(f"'**' (power) works on numbers only, not on {describe(a)} and {describe(b)}")
    if abs(b) > MAX_EXPONENT:
        raise err(f"the exponent {b} is too large (the limit is {MAX_EXPONENT})", "limit")
    a, b = num_pair(a, b)
    if isinstance(a, int) and isinstance(b, int) and b > 0 and (a.bit_length() - 1) * b > MAX_INT_BITS:
        raise _too_big()
    if a == 0 and b < 0:
        raise err("division by zero (0 raised to a negative power)")
    try:
        r = a ** b
    except InvalidOperation:
        raise err(f"cannot raise {describe(a)} to the power {describe(b)}") from None
    except (OverflowError, ArithmeticError):
        raise _too_big() from None
    if isinstance(r, complex):
        raise err("a negative number cannot be raised to a fractional power")
    return check_int(r)


def neg(a: Any) -> Any:
    if a is None:
        return None
    if is_num(a):
        return -a
    raise err(f"cannot put a minus sign before {describe(a)}")


def pos(a: Any) -> Any:
    if a is None:
        return None
    if is_num(a):
        return +a
    raise err(f"cannot put a plus sign before {describe(a)}")


# -- names -------------------------------------------------------------------------------

def get_path(v: Any, segs: tuple) -> Any:
    """Follow ``a.b['c'][0]`` through dictionaries (keys) and lists (positions) only.

    Anything else (None, numbers, texts, objects, modules...) ends the walk with None:
    no attribute of any value is ever read.
    """
    for s in segs:
        if v is None:
            return None
        tv = type(v)
        if tv is dict:
            v = v.get(s)
        elif tv is list or tv is tuple:
            if type(s) is int and -len(v) <= s < len(v):
                v = v[s]
            else:
                return None
        elif issubclass(tv, Mapping):          # (issubclass: not even the instance's __class__ is read)
            try:
                v = v[s]
            except (KeyError, TypeError):
                return None
        else:
            return None
    return v


# -- text --------------------------------------------------------------------------------

WHITESPACE = " \t\r\n\u3000\u00a0"   # trim() and is_empty() ignore these (incl. the full-width space)


def to_text(v: Any, ctx: Any, where: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return local(v, ctx).replace(tzinfo=None).isoformat(" ", "seconds")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        out = ", ".join(to_text(x, ctx, where) for x in v if x is not None)
        _check_len(len(out), "the text")
        return out
    prefix = f"{where}: " if where else ""
    raise err(f"{prefix}cannot turn {describe(v)} into text")


def concat_parts(parts: tuple, ctx: Any) -> str:
    out = "".join(to_text(p, ctx, "concat()") for p in parts)
    _check_len(len(out), "the text")
    return out


# -- friendly messages for native errors ---------------------------------------------------

_TYPE_WORDS = {
    "str": "a text", "int": "a number", "float": "a number", "decimal.Decimal": "a number", "Decimal": "a number",
    "NoneType": "an empty value", "bool": "a true/false value", "datetime.date": "a date", "date": "a date",
    "datetime.datetime": "a date-time", "datetime": "a date-time", "list": "a list", "tuple": "a list",
    "dict": "a record", "datetime.timedelta": "a duration", "timedelta": "a duration",
}


def friendly(exc: BaseException) -> str:
    text = str(exc)
    m = re.match(r"'(.+)' not supported between instances of '([\w.]+)' and '([\w.]+)'", text)
    if m:
        op, a, b = m.groups()
        return f"cannot compare {_TYPE_WORDS.get(a, a)} with {_TYPE_WORDS.get(b, b)} using '{op}'"
    m = re.match(r"unsupported operand type\(s\) for ([^:]+): '([\w.]+)' and '([\w.]+)'", text)
    if m:
        op, a, b = m.groups()
        hint = "; to join texts use concat(a, b)" if op.strip() == "+" and "str" in (a, b) else ""
        return f"cannot use '{op.strip()}' on {_TYPE_WORDS.get(a, a)} and {_TYPE_WORDS.get(b, b)}{hint}"
    if "can only concatenate str" in text or "must be str, not" in text:
        return "cannot add a text and something that is not a text; to join values use concat(a, b)"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, (OverflowError, MemoryError, RecursionError)):
        return "the result is too large"
    return f"the expression could not be evaluated ({type(exc).__name__}: {text})"
