"""Computed values: formula (an expression) and auto_number (a running number).

Neither is typed by users; the record service fills them in.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Mapping

import sqlalchemy as sa

from .base import (FIELD_TYPES, TEXT_OPS, FieldType, FieldValueError, display, fail, is_empty, jsonable, nfkc,
                   register)

# result types a formula may declare (they must be stored scalars)
FORMULA_RESULTS = ("text", "number", "decimal", "currency", "percent", "boolean", "date", "datetime", "duration", "rating",
                   "select")


@register
class FormulaType(FieldType):
    """``formula: <expression>`` computed on every save (``store: false``: on read).

    ``result`` names the value's type (text, number, decimal, currency,
    percent, boolean, date, datetime, duration, rating, select) and so its column,
    JSON and display -- ``select`` with ``options``, so a computed code such as an NPS group
    reads as its label.  Without ``result`` a stored formula is kept as text.
    ``parse`` refuses input (code ``readonly``); ``compute`` turns an
    expression result into the canonical value (``None`` if it does not fit).
    """

    name = "formula"
    label = {"zh": "公式", "en": "Formula"}
    widget = "formula"
    readonly = True
    definition_keys = {"formula": {"type": "string"}, "store": {"type": "boolean"},
                       "result": {"enum": list(FORMULA_RESULTS)}, "precision": {"type": "integer"},
                       "scale": {"type": "integer"}, "currency": {"type": "string"},
                       "options": {"type": "array"}}

    filter_ops = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "contains", "empty")

    def result(self, spec) -> FieldType | None:
        r = spec.get("result")
        return FIELD_TYPES.get(r) if r in FORMULA_RESULTS else None

    def check_definition(self, spec):
        problems = []
        if not spec.get("formula"):
            problems.append(((), "a formula field needs 'formula: <expression>'"))
        r = spec.get("result")
        if r is not None and r not in FORMULA_RESULTS:
            problems.append((("result",), f"result '{r}' is not a formula result type; use one of: {', '.join(FORMULA_RESULTS)}"))
        if r == "select" and not spec.get("options"):
            problems.append((("result",), "a formula with result: select needs 'options' (value and label of each result)"))
        return problems

    def column_type(self, spec):
        inner = self.result(spec)
        return inner.column_type(spec) if inner else sa.Text()

    def parse(self, raw, spec):
        if is_empty(raw):
            return None
        raise fail("readonly", "公式字段由系统计算，不能填写", "A formula field is computed and cannot be entered")

    def coerce(self, raw, spec):
        return self.parse(raw, spec)

    def compute(self, value: Any, spec: Mapping) -> Any:
        """An expression result -> the canonical value of ``result`` (``None`` if it does not fit)."""
        if value is None:
            return None
        inner = self.result(spec)
        if inner is None:
            return value
        try:
            return inner.parse(jsonable(value) if not isinstance(value, (dt.date, bool)) else value, _bare(spec))
        except (FieldValueError, ValueError, TypeError, ArithmeticError):
            return None

    def to_db(self, value, spec):
        if value is None:
            return None
        inner = self.result(spec)
        if inner is None:
            return _as_text(value)
        canonical = self.compute(value, spec)
        return None if canonical is None else inner.to_db(canonical, spec)

    def from_db(self, value, spec):
        inner = self.result(spec)
        return inner.from_db(value, spec) if inner and value is not None else value

    def value_schema(self, spec):
        inner = self.result(spec)
        return inner.value_schema(_bare(spec)) if inner else {}

    def to_json(self, value, spec):
        if value is None:
            return None
        inner = self.result(spec)
        if inner is None:
            return jsonable(value)
        canonical = self.compute(value, spec)
        return None if canonical is None else inner.to_json(canonical, spec)

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        inner = self.result(spec)
        if inner is None:
            return display(value, lang, tz)
        canonical = self.compute(value, spec)
        return "" if canonical is None else inner.format(canonical, spec, lang, tz)

    def parse_filter(self, op, raw, spec):
        inner = self.result(spec)
        if inner is None:
            return FIELD_TYPES["text"].parse_filter(op, raw, {}) if op in TEXT_OPS else nfkc(str(raw))
        return inner.parse_filter(op, raw, _bare(spec))


def _bare(spec: Mapping) -> dict:
    """The spec without input rules (a computed value is not bounded by min/max)."""
    return {k: v for k, v in spec.items() if k not in ("min", "max", "min_length", "max_length", "pattern", "required")}


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    j = jsonable(value)
    if isinstance(j, (list, dict)):
        return json.dumps(j, ensure_ascii=False)
    return str(j)


# -- auto number -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{([^{}]+)\}")
DATE_TOKENS = {
    "YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d", "HH": "%H",
    "YYYYMMDD": "%Y%m%d", "YYYYMM": "%Y%m", "YYMMDD": "%y%m%d", "YYMM": "%y%m",
}
SEQ_TOKEN = re.compile(r"#+|seq")


def _check_pattern(pattern: str) -> list[str]:
    problems = []
    seqs = 0
    for m in _TOKEN.finditer(pattern):
        tok = m.group(1)
        if SEQ_TOKEN.fullmatch(tok):
            seqs += 1
        elif tok not in DATE_TOKENS:
            problems.append(f"unknown token '{{{tok}}}' in pattern; use {{YYYY}}, {{YY}}, {{MM}}, {{DD}}, {{YYYYMMDD}}, "
                            f"{{YYMMDD}}, {{YYYYMM}}, {{HH}} and one {{####}} (digits of the running number)")
    if seqs != 1:
        problems.append("the pattern needs exactly one running-number token such as {####}")
    rest = _TOKEN.sub("", pattern)
    if "{" in rest or "}" in rest:
        problems.append("unbalanced { } in pattern")
    return problems


def render_pattern(pattern: str, now_local: dt.datetime, seq: int) -> str:
    """``'TS{YYYYMMDD}{####}'``, 2026-11-23, 7 -> ``'TS202611230007'``.

    ``{####}`` pads the running number to that many digits (longer numbers
    are not cut); ``{seq}`` is unpadded.  Dates use ``now_local`` as given
    (pass the app's local time).
    """
    def sub(m: re.Match) -> str:
        tok = m.group(1)
        if tok == "seq":
            return str(seq)
        if tok.startswith("#") and set(tok) == {"#"}:
            return str(seq).zfill(len(tok))
        if tok in DATE_TOKENS:
            return now_local.strftime(DATE_TOKENS[tok])
        raise ValueError(f"unknown token {{{tok}}} in auto_number pattern")
    return _TOKEN.sub(sub, pattern)


def sequence_key(pattern: str, now_local: dt.datetime) -> str:
    """The counter a number belongs to: the pattern with its date parts filled in and
    the running number left out (``'TS{YYYYMMDD}{####}'`` -> ``'TS20261123'``), so the
    count restarts each day (or month, year...) the pattern shows."""
    def sub(m: re.Match) -> str:
        tok = m.group(1)
        if SEQ_TOKEN.fullmatch(tok):
            return ""
        if tok in DATE_TOKENS:
            return now_local.strftime(DATE_TOKENS[tok])
        raise ValueError(f"unknown token {{{tok}}} in auto_number pattern")
    return _TOKEN.sub(sub, pattern)


@register
class AutoNumberType(FieldType):
    """A number given on create, e.g. ``pattern: TS{YYYYMMDD}{####}`` -> ``TS202611230001``.

    Read-only for users (the service refuses input).  ``parse`` accepts an
    existing number as text so imports can keep numbers from an old system.
    """

    name = "auto_number"
    label = {"zh": "自动编号", "en": "Auto number"}
    widget = "autonumber"
    filter_ops = TEXT_OPS
    readonly = True
    definition_keys = {"pattern": {"type": "string"}}
    DEFAULT_PATTERN = "{######}"

    def check_definition(self, spec):
        pattern = spec.get("pattern")
        if pattern is None:
            return []
        return [(("pattern",), p) for p in _check_pattern(str(pattern))]

    def column_type(self, spec):
        return sa.String(64)

    def coerce(self, raw, spec):
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise fail("invalid_number_text", "编号应为文字", "A number must be text")
        s = nfkc(str(raw))
        if len(s) > 64 or re.search(r"\s", s):
            raise fail("invalid_number_text", "编号最多64个字符，且不含空格", "A number has at most 64 characters and no spaces")
        return s

    def render_pattern(self, pattern: str, now_local: dt.datetime, seq: int) -> str:
        return render_pattern(pattern or self.DEFAULT_PATTERN, now_local, seq)

    def sequence_key(self, pattern: str, now_local: dt.datetime) -> str:
        return sequence_key(pattern or self.DEFAULT_PATTERN, now_local)

    def value_schema(self, spec):
        return {"type": "string", "maxLength": 64}

    def from_db(self, value, spec):
        return None if value is None else str(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else str(value)
