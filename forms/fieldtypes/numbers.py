"""Numeric types: number (whole), decimal, currency, percent, rating, slider.

Whole numbers are Python ``int``; everything with decimals is ``Decimal``
(never float), quantised to the field's scale.  In JSON a ``Decimal`` is a
string with exactly ``scale`` decimals (``"1234.50"``) so no precision is lost
in JavaScript; ``parse`` accepts numbers and strings alike.
"""
from __future__ import annotations

import decimal
import math
import re
from typing import Any, Mapping

import sqlalchemy as sa

from .base import (NUMBER_OPS, RANGE_OPS, FieldType, check_bounds, decimal_text, fail, nfkc, register, strip_zeros,
                   to_decimal)

BIGINT_MAX = 2**63 - 1

_BOUND_KEYS = {"min": {"type": ["number", "string"]}, "max": {"type": ["number", "string"]}}


def _not_a_number(raw: Any) -> Exception:
    return fail("invalid_number", f"“{raw}”不是数字，请输入如 1234 或 1234.5",
                f"'{raw}' is not a number; enter e.g. 1234 or 1234.5")


_UNITS_RE = re.compile(r"(.*?)\s*(万|亿)(元)?")
_STARS_RE = re.compile(r"\s*[★☆]+\s*")
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
# the plain shapes the compiled parsers read themselves (ASCII digits only)
_PLAIN_INT = re.compile(r"[+-]?[0-9]{1,18}")
_PLAIN_DEC = re.compile(r"[+-]?[0-9]{1,40}(?:\.[0-9]{1,40})?")
_FLOAT_EXACT = 2.0 ** 53       # integral floats below this have repr 'N.0' and convert exactly


def _plain_int(raw: Any) -> int | None:
    """``int`` for the plain inputs (ASCII digit strings, ints, small integral floats); else None."""
    t = type(raw)
    if t is int:
        return raw
    if t is str:
        if raw.isdigit() and raw.isascii() and len(raw) < 19:
            return int(raw)
        return int(raw) if _PLAIN_INT.fullmatch(raw) else None
    if t is float and -_FLOAT_EXACT < raw < _FLOAT_EXACT and raw.is_integer():
        return int(raw)
    return None


def _plain_decimal(raw: Any) -> decimal.Decimal | None:
    """``to_decimal`` for the plain inputs (ASCII number strings, ints, finite floats); else None."""
    t = type(raw)
    if t is str:
        return decimal.Decimal(raw) if _PLAIN_DEC.fullmatch(raw) else None
    if t is int:
        return decimal.Decimal(raw)
    if t is float:
        d = decimal.Decimal(repr(raw))
        return d if d.is_finite() else None
    return None


def _number_input(raw: Any, *, units: bool = False) -> decimal.Decimal:
    """Raw -> Decimal; with ``units`` also '1.5万' (×10 000) and '2亿' (×10^8)."""
    if units and isinstance(raw, str):
        s = nfkc(raw)
        m = _UNITS_RE.fullmatch(s)
        if m:
            base = to_decimal(m.group(1))
            if base is None:
                raise _not_a_number(raw)
            return base * (10000 if m.group(2) == "万" else 100000000)
    value = to_decimal(raw)
    if value is None:
        raise _not_a_number(raw)
    return value


def _bound(spec: Mapping, key: str) -> decimal.Decimal | None:
    v = spec.get(key)
    if v is None or v == "":
        return None
    d = to_decimal(v)
    if d is None:
        raise ValueError(f"{key} must be a number, not {v!r}")
    return d


def check_range(value: decimal.Decimal, spec: Mapping, show=strip_zeros) -> None:
    lo, hi = _bound(spec, "min"), _bound(spec, "max")
    if lo is not None and value < lo:
        raise fail("min", f"不能小于 {show(lo)}", f"Must be at least {show(lo)}", min=show(lo))
    if hi is not None and value > hi:
        raise fail("max", f"不能大于 {show(hi)}", f"Must be at most {show(hi)}", max=show(hi))


def _numeric_bounds_schema(spec: Mapping) -> dict:
    out = {}
    for key, name in (("min", "minimum"), ("max", "maximum")):
        try:
            b = _bound(spec, key)
        except ValueError:
            b = None
        if b is not None:
            out[name] = int(b) if b == b.to_integral_value() else float(b)
    return out


@register
class NumberType(FieldType):
    """A whole number (``BIGINT``): counts, years, scores."""

    name = "number"
    label = {"zh": "整数", "en": "Whole number"}
    widget = "number"
    filter_ops = NUMBER_OPS
    definition_keys = dict(_BOUND_KEYS)

    def check_definition(self, spec):
        return check_bounds(spec, _bound_parser)

    def column_type(self, spec):
        return sa.BigInteger()

    def coerce(self, raw: Any, spec: Mapping) -> int:
        value = _number_input(raw)
        if value != value.to_integral_value():
            raise fail("not_integer", f"应为整数，“{raw}”带有小数", f"Must be a whole number; '{raw}' has decimals")
        n = int(value)
        if abs(n) > BIGINT_MAX:
            raise fail("out_of_range", "数字太大", "Number too large")
        check_range(decimal.Decimal(n), spec)
        return n

    def compile_parser(self, spec):
        try:
            lo, hi = _bound(spec, "min"), _bound(spec, "max")
            # for a whole number n: n < lo <=> n < ceil(lo), n > hi <=> n > floor(hi)
            lo = -BIGINT_MAX if lo is None else max(math.ceil(lo), -BIGINT_MAX)
            hi = BIGINT_MAX if hi is None else min(math.floor(hi), BIGINT_MAX)
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse = self.parse

        def parser(raw):
            n = _plain_int(raw)
            if n is None:
                return None if raw is None else parse(raw, spec)
            if n < lo or n > hi:
                return parse(raw, spec)         # raises the usual error
            return n

        return parser

    def value_schema(self, spec):
        return {"type": "integer", **_numeric_bounds_schema(spec)}

    def from_db(self, value, spec):
        return None if value is None else int(value)

    def to_json(self, value, spec):
        return None if value is None else int(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else str(int(value))


def _bound_parser(v):
    d = to_decimal(v)
    if d is None:
        raise ValueError("not a number")
    return d


class _DecimalBase(FieldType):
    default_precision = 18
    default_scale = 2
    filter_ops = NUMBER_OPS
    units = True          # accept '15万'
    definition_keys = {**_BOUND_KEYS,
                       "precision": {"type": "integer", "minimum": 1, "maximum": 38},
                       "scale": {"type": "integer", "minimum": 0, "maximum": 18}}

    def precision(self, spec) -> int:
        return int(spec.get("precision") or self.default_precision)

    def scale(self, spec) -> int:
        s = spec.get("scale")
        return int(self.default_scale if s is None else s)

    def check_definition(self, spec):
        problems = check_bounds(spec, _bound_parser)
        p, s = spec.get("precision"), spec.get("scale")
        p = self.default_precision if p is None else p
        s = self.default_scale if s is None else s
        if isinstance(p, int) and isinstance(s, int) and s > p:
            problems.append((("scale",), f"scale {s} is larger than precision {p}"))
        return problems

    def column_type(self, spec):
        return sa.Numeric(self.precision(spec), self.scale(spec))

    def clean_input(self, raw: Any, spec: Mapping) -> Any:
        return raw

    def coerce(self, raw: Any, spec: Mapping) -> decimal.Decimal:
        value = _number_input(self.clean_input(raw, spec), units=self.units)
        return self.quantize(value, spec, raw)

    def quantize(self, value: decimal.Decimal, spec: Mapping, raw: Any = None) -> decimal.Decimal:
        p, s = self.precision(spec), self.scale(spec)
        exp = decimal.Decimal(1).scaleb(-s)
        try:
            q = value.quantize(exp, context=decimal.Context(prec=60))
        except decimal.InvalidOperation:
            raise fail("out_of_range", "数字太大", "Number too large") from None
        if q != value:
            raise fail("too_many_decimals", f"最多 {s} 位小数" if s else "不能有小数",
                       f"At most {s} decimal places" if s else "No decimals allowed", scale=s)
        if q != 0 and q.adjusted() + 1 > p - s:
            limit = "9" * (p - s) if p - s > 0 else "0"
            raise fail("too_many_digits", f"整数部分最多 {p - s} 位（最大 {limit}）",
                       f"At most {p - s} digits before the decimal point (max {limit})", precision=p)
        check_range(q, spec, show=lambda b: self.show(b, spec))
        return q

    def show(self, value: decimal.Decimal, spec: Mapping) -> str:
        return strip_zeros(value)

    def plain_numbers_pass(self, spec: Mapping) -> bool:
        """Whether ``clean_input`` leaves plain ASCII numbers (``-1234.50``) and ints as they are."""
        return type(self).clean_input is _DecimalBase.clean_input

    def compile_parser(self, spec):
        cls = type(self)
        if cls.coerce is not _DecimalBase.coerce or cls.quantize is not _DecimalBase.quantize \
                or cls.parse is not FieldType.parse:
            return super().compile_parser(spec)
        try:
            p, s = self.precision(spec), self.scale(spec)
            exp = decimal.Decimal(1).scaleb(-s)
            ctx = decimal.Context(prec=60)
            lo, hi = _bound(spec, "min"), _bound(spec, "max")
            if not self.plain_numbers_pass(spec):
                return super().compile_parser(spec)
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse, digits = self.parse, p - s
        invalid = decimal.InvalidOperation

        def parser(raw):
            value = _plain_decimal(raw)
            if value is None:
                return None if raw is None else parse(raw, spec)
            try:
                q = value.quantize(exp, context=ctx)
            except invalid:
                return parse(raw, spec)
            if q != value or (q != 0 and q.adjusted() + 1 > digits) or (lo is not None and q < lo) \
                    or (hi is not None and q > hi):
                return parse(raw, spec)         # raises the usual error
            return q

        return parser

    def value_schema(self, spec):
        s = self.scale(spec)
        frac = rf"(\.\d{{1,{s}}})?" if s else ""
        return {"type": ["string", "number"], "format": "decimal", "pattern": rf"^-?\d+{frac}$",
                **_numeric_bounds_schema(spec)}

    def from_db(self, value, spec):
        if value is None:
            return None
        d = value if isinstance(value, decimal.Decimal) else to_decimal(value)
        return d.quantize(decimal.Decimal(1).scaleb(-self.scale(spec))) if d is not None else None

    def to_json(self, value, spec):
        if value is None:
            return None
        return decimal_text(decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-self.scale(spec))))

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        return f"{decimal.Decimal(value):,.{self.scale(spec)}f}"


@register
class DecimalType(_DecimalBase):
    """A number with decimals: ``precision`` digits in all, ``scale`` after the point (default 18, 2)."""

    name = "decimal"
    label = {"zh": "小数", "en": "Decimal"}
    widget = "decimal"


CURRENCY_SYMBOLS = {
    "CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "JP¥", "HKD": "HK$", "TWD": "NT$", "MOP": "MOP$",
    "KRW": "₩", "SGD": "S$", "AUD": "A$", "CAD": "C$", "CHF": "CHF ", "RUB": "₽", "INR": "₹", "THB": "฿",
}
_SYMBOL_WORDS = {"CNY": ("¥", "￥", "元", "人民币", "RMB", "CNY"), "USD": ("$", "US$", "USD", "美元"),
                 "EUR": ("€", "EUR", "欧元"), "GBP": ("£", "GBP", "英镑"), "JPY": ("¥", "￥", "JP¥", "JPY", "円", "日元"),
                 "HKD": ("HK$", "$", "HKD", "港币", "港元")}
_ANY_SYMBOL = re.compile(r"[¥￥$€£₩₽₹฿]|[A-Z]{3}|元|人民币|美元|欧元|英镑|港币|港元|日元")


@register
class CurrencyType(_DecimalBase):
    """Money: ``Numeric(18,2)`` in the field's ``currency`` (ISO 4217, default CNY).

    Accepts ``'¥1,234.50'``, ``'1234.5元'``, ``'15万'``; shows ``¥1,234.50``.
    """

    name = "currency"
    label = {"zh": "金额", "en": "Money"}
    widget = "money"
    definition_keys = {**_DecimalBase.definition_keys, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}

    def currency(self, spec) -> str:
        return str(spec.get("currency") or "CNY").upper()

    def check_definition(self, spec):
        problems = super().check_definition(spec)
        c = spec.get("currency")
        if c is not None and not _CURRENCY_CODE.fullmatch(str(c)):
            problems.append((("currency",), f"currency '{c}' is not a 3-letter ISO 4217 code such as CNY, USD, EUR"))
        return problems

    def symbol_words(self, code: str) -> list[str]:
        return sorted(_SYMBOL_WORDS.get(code, (code, CURRENCY_SYMBOLS.get(code, code).strip())), key=len, reverse=True)

    def plain_numbers_pass(self, spec):
        if type(self).clean_input is not CurrencyType.clean_input:
            return False
        # a plain number is left alone unless a currency word could be part of one
        return all(w == "" or not set(w) <= set("0123456789.+-") for w in map(nfkc, self.symbol_words(self.currency(spec))))

    def clean_input(self, raw, spec):
        if not isinstance(raw, str):
            return raw
        s = nfkc(raw).replace(" ", "")
        code = self.currency(spec)
        words = self.symbol_words(code)
        for w in words:
            w = nfkc(w)
            if s.startswith(w) or s.startswith("-" + w):
                s = s.replace(w, "", 1)
                break
            if s.endswith(w):
                s = s[: -len(w)]
                break
        if _ANY_SYMBOL.search(s.replace("万", "").replace("亿", "")):
            raise fail("currency_mismatch", f"金额应以 {code} 填写，不要带其他币种符号，如 1234.50",
                       f"Enter the amount in {code} without another currency's sign, e.g. 1234.50", currency=code)
        return s

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        code = self.currency(spec)
        sym = CURRENCY_SYMBOLS.get(code, code + " ")
        v = decimal.Decimal(value)
        text = f"{abs(v):,.{self.scale(spec)}f}"
        return f"-{sym}{text}" if v < 0 else f"{sym}{text}"

    def show(self, value, spec):
        return self.format(value, spec)

    def value_schema(self, spec):
        return {**super().value_schema(spec), "x-currency": self.currency(spec)}


@register
class PercentType(_DecimalBase):
    """A percentage stored in percent points: ``12.5`` means 12.5 % (``Numeric(9, scale)``).

    Accepts ``12.5``, ``'12.5'`` and ``'12.5%'``; shows ``12.5%``.
    """

    name = "percent"
    label = {"zh": "百分比", "en": "Percent"}
    widget = "percent"
    default_precision = 9
    units = False

    def clean_input(self, raw, spec):
        if isinstance(raw, str):
            s = nfkc(raw)
            return s[:-1].strip() if s.endswith("%") else s
        return raw

    def show(self, value, spec):
        return strip_zeros(value) + "%"

    def plain_numbers_pass(self, spec):
        return type(self).clean_input is PercentType.clean_input

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else strip_zeros(decimal.Decimal(value)) + "%"


@register
class RatingType(FieldType):
    """Stars: an integer from ``min`` (default 1) to ``max`` (default 5, at most 10)."""

    name = "rating"
    label = {"zh": "评分", "en": "Rating"}
    widget = "rating"
    filter_ops = NUMBER_OPS
    definition_keys = {"min": {"type": "integer", "minimum": 0, "maximum": 1},
                       "max": {"type": "integer", "minimum": 1, "maximum": 10}}

    def bounds(self, spec) -> tuple[int, int]:
        lo = spec.get("min")
        hi = spec.get("max")
        return (1 if lo is None else int(lo)), (5 if hi is None else int(hi))

    def check_definition(self, spec):
        problems = []
        for key, lo_ok, hi_ok in (("min", 0, 1), ("max", 1, 10)):
            v = spec.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo_ok <= v <= hi_ok):
                problems.append(((key,), f"rating {key} must be a whole number from {lo_ok} to {hi_ok}"))
        return problems

    def column_type(self, spec):
        return sa.Integer()

    def coerce(self, raw, spec):
        lo, hi = self.bounds(spec)
        if isinstance(raw, str) and _STARS_RE.fullmatch(raw):
            raw = raw.count("★")
        value = _number_input(raw)
        if value != value.to_integral_value():
            raise fail("not_integer", f"评分应为 {lo} 到 {hi} 的整数", f"A rating is a whole number from {lo} to {hi}")
        n = int(value)
        if n < lo:
            raise fail("min", f"评分最低 {lo} 分", f"The lowest rating is {lo}", min=lo)
        if n > hi:
            raise fail("max", f"评分最高 {hi} 分", f"The highest rating is {hi}", max=hi)
        return n

    def compile_parser(self, spec):
        try:
            lo, hi = self.bounds(spec)
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse = self.parse

        def parser(raw):
            n = _plain_int(raw)
            if n is None or n < lo or n > hi:
                return None if raw is None else parse(raw, spec)
            return n

        return parser

    def value_schema(self, spec):
        lo, hi = self.bounds(spec)
        return {"type": "integer", "minimum": lo, "maximum": hi}

    def from_db(self, value, spec):
        return None if value is None else int(value)

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        _, hi = self.bounds(spec)
        n = max(0, min(int(value), hi))
        return "★" * n + "☆" * (hi - n)


@register
class SliderType(FieldType):
    """A value picked on a slider: ``min`` (0), ``max`` (100), ``step`` (1).

    Whole-number settings give an ``Integer`` column and ``int`` values,
    otherwise ``Numeric`` with as many decimals as ``step`` has.
    """

    name = "slider"
    label = {"zh": "滑块", "en": "Slider"}
    widget = "slider"
    filter_ops = RANGE_OPS
    definition_keys = {"min": {"type": "number"}, "max": {"type": "number"}, "step": {"type": "number", "exclusiveMinimum": 0}}

    def settings(self, spec) -> tuple[decimal.Decimal, decimal.Decimal, decimal.Decimal]:
        lo = to_decimal(spec.get("min", 0) if spec.get("min") is not None else 0)
        hi = to_decimal(spec.get("max", 100) if spec.get("max") is not None else 100)
        step = to_decimal(spec.get("step") if spec.get("step") is not None else 1)
        return lo, hi, step

    def decimals(self, spec) -> int:
        places = 0
        for d in self.settings(spec):
            if d is not None:
                places = max(places, -d.normalize().as_tuple().exponent if d != d.to_integral_value() else 0)
        return places

    def check_definition(self, spec):
        problems = []
        lo, hi, step = self.settings(spec)
        if lo is None or hi is None or step is None:
            return [((), "slider min, max and step must be numbers")]
        if step <= 0:
            problems.append((("step",), "step must be larger than 0"))
        if lo >= hi:
            problems.append((("min",), f"min {strip_zeros(lo)} must be smaller than max {strip_zeros(hi)}"))
        return problems

    def column_type(self, spec):
        places = self.decimals(spec)
        return sa.Integer() if places == 0 else sa.Numeric(18, places)

    def coerce(self, raw, spec):
        lo, hi, step = self.settings(spec)
        value = _number_input(raw)
        if value < lo:
            raise fail("min", f"不能小于 {strip_zeros(lo)}", f"Must be at least {strip_zeros(lo)}", min=strip_zeros(lo))
        if value > hi:
            raise fail("max", f"不能大于 {strip_zeros(hi)}", f"Must be at most {strip_zeros(hi)}", max=strip_zeros(hi))
        if step and (value - lo) % step != 0:
            raise fail("step", f"应按 {strip_zeros(step)} 递增（从 {strip_zeros(lo)} 开始）",
                       f"Must be in steps of {strip_zeros(step)} from {strip_zeros(lo)}", step=strip_zeros(step))
        places = self.decimals(spec)
        return int(value) if places == 0 else value.quantize(decimal.Decimal(1).scaleb(-places))

    def value_schema(self, spec):
        lo, hi, step = self.settings(spec)
        if self.decimals(spec) == 0:
            return {"type": "integer", "minimum": int(lo), "maximum": int(hi), "multipleOf": int(step)} if lo == 0 else \
                {"type": "integer", "minimum": int(lo), "maximum": int(hi)}
        return {"type": ["string", "number"], "format": "decimal"}

    def from_db(self, value, spec):
        if value is None:
            return None
        places = self.decimals(spec)
        if places == 0:
            return int(value)
        return to_decimal(value).quantize(decimal.Decimal(1).scaleb(-places))

    def to_json(self, value, spec):
        if value is None:
            return None
        return int(value) if self.decimals(spec) == 0 else decimal_text(decimal.Decimal(value))

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else strip_zeros(decimal.Decimal(value))
