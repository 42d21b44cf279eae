"""Choices: boolean, select, radio (one option), multi_select, checkbox_group (several).

``options`` are ``[{value, label, color?, parent?}]`` or plain values.  A
value is stored as the option's value: ``int`` when every option value is a
whole number (``BIGINT`` column), otherwise text.  Input may give the value
or, for imports, an option's label in either language (``官网`` for
``website``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .base import (BOOL_OPS, CHOICE_OPS, LIST_OPS, FieldType, FieldValueError, JsonListFilters, fail, is_empty, json_column,
                   json_list_input, memo_parser, nfkc, quote_list, register, split_list, text_of)

TRUE_WORDS = frozenset({"true", "1", "on", "yes", "y", "t", "checked", "是", "对", "真", "√", "✓", "✔"})
FALSE_WORDS = frozenset({"false", "0", "off", "no", "n", "f", "unchecked", "否", "错", "假", "×", "✗", "✘"})


@register
class BooleanType(FieldType):
    """Yes/no.  Accepts true/false, 1/0, on/off, yes/no, 是/否, 对/错."""

    name = "boolean"
    label = {"zh": "是/否", "en": "Yes/no"}
    widget = "switch"
    filter_ops = BOOL_OPS

    def column_type(self, spec):
        return sa.Boolean()

    def coerce(self, raw, spec):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, (int, float)) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str):
            s = nfkc(raw).lower()
            if s in TRUE_WORDS:
                return True
            if s in FALSE_WORDS:
                return False
        raise fail("invalid_boolean", f"“{raw}”不是是/否，请填写 是 或 否（true/false）",
                   f"'{raw}' is not yes/no; use true or false (是/否)")

    def compile_parser(self, spec):
        if type(self).parse is not FieldType.parse or type(self).coerce is not BooleanType.coerce:
            return super().compile_parser(spec)
        parse = self.parse
        seed = {}
        for word in TRUE_WORDS | FALSE_WORDS:
            for w in (word, word.upper(), word.title()):
                try:
                    seed[w] = parse(w, spec)
                except FieldValueError:
                    pass
        memo = memo_parser(lambda raw: parse(raw, spec), seed, cap=256)

        def parser(raw):
            if type(raw) is bool:
                return raw
            return memo(raw)

        return parser

    def value_schema(self, spec):
        return {"type": "boolean"}

    def from_db(self, value, spec):
        return None if value is None else bool(value)

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        return ("是" if value else "否") if lang == "zh" else ("Yes" if value else "No")


# -- options ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    value: Any
    label: Any
    color: str | None = None
    parent: Any = None

    def text(self, lang: str = "zh") -> str:
        return text_of(self.label, lang, str(self.value))


_OPTIONS_CACHE: dict[int, tuple[Any, list[Option]]] = {}


def options_of(spec: Mapping) -> list[Option]:
    """The field's options, normalised (cached per options list: definitions are immutable)."""
    raw = spec.get("options")
    hit = _OPTIONS_CACHE.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    out = _normalise_options(spec)
    if raw is not None:
        if len(_OPTIONS_CACHE) > 10_000:
            _OPTIONS_CACHE.clear()
        _OPTIONS_CACHE[id(raw)] = (raw, out)   # keeps ``raw`` alive, so its id can't be reused
    return out


_EXACT_CACHE: dict[int, tuple[Any, dict]] = {}


def _exact_values(spec: Mapping) -> dict:
    """``str(value) -> canonical value`` for the fast path of :func:`match_option`."""
    raw = spec.get("options")
    hit = _EXACT_CACHE.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    table = {str(o.value): option_value(o, spec) for o in options_of(spec)}
    if raw is not None:
        if len(_EXACT_CACHE) > 10_000:
            _EXACT_CACHE.clear()
        _EXACT_CACHE[id(raw)] = (raw, table)
    return table


def _normalise_options(spec: Mapping) -> list[Option]:
    out = []
    for item in spec.get("options") or []:
        if isinstance(item, Mapping):
            out.append(Option(item.get("value"), item.get("label", item.get("value")), item.get("color"), item.get("parent")))
        else:
            out.append(Option(item, item))
    return out


def integer_options(spec: Mapping) -> bool:
    opts = options_of(spec)
    return bool(opts) and all(isinstance(o.value, int) and not isinstance(o.value, bool) for o in opts)


def option_value(o: Option, spec: Mapping) -> Any:
    """The canonical (stored) form of an option's value."""
    return o.value if integer_options(spec) else str(o.value)


def options_for(spec: Mapping, parent: Any) -> list[Option]:
    """Options whose ``parent`` matches (for ``depends_on``); options without a parent always show."""
    return [o for o in options_of(spec) if o.parent is None or str(o.parent) == str(parent)]


def match_option(raw: Any, spec: Mapping) -> Any:
    """Raw input -> the canonical option value, or ``invalid_option``."""
    t = type(raw)
    if t is str:
        exact = _exact_values(spec).get(raw)
        if exact is not None:
            return exact
    opts = options_of(spec)
    if t is not str and t is not int and isinstance(raw, Mapping) and "value" in raw:   # a UI may send the whole option
        raw = raw["value"]
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    key = nfkc(str(raw)) if not isinstance(raw, bool) else str(raw).lower()
    for o in opts:
        if str(o.value) == key:
            return option_value(o, spec)
    low = key.lower()
    for o in opts:
        if str(o.value).lower() == low:
            return option_value(o, spec)
    for o in opts:
        labels = o.label.values() if isinstance(o.label, Mapping) else [o.label]
        if any(nfkc(str(lab)).lower() == low for lab in labels if lab is not None):
            return option_value(o, spec)
    shown_zh = quote_list((o.text("zh") for o in opts), sep="、")
    shown_en = quote_list((f"{o.value}" + (f" ({o.text('en')})" if o.text("en") != str(o.value) else "") for o in opts))
    raise fail("invalid_option", f"“{raw}”不在可选项中，请从以下选择：{shown_zh}",
               f"'{raw}' is not one of the options; choose one of: {shown_en}")


def _check_options(spec: Mapping, *, required: bool = True) -> list[tuple[tuple, str]]:
    problems = []
    opts = spec.get("options")
    if not opts:
        if required:
            problems.append(((), "needs 'options': a list of values or {value, label} items"))
        return problems
    seen: dict[str, int] = {}
    for i, o in enumerate(options_of(spec)):
        if o.value is None or o.value == "":
            problems.append((("options", i), "an option needs a value"))
            continue
        if isinstance(o.value, bool):
            problems.append((("options", i), "true/false options: use type: boolean instead"))
            continue
        k = str(o.value)
        if k in seen:
            problems.append((("options", i), f"option value '{k}' is listed twice (also item {seen[k] + 1})"))
        seen[k] = i
    return problems


def _choice_column(spec: Mapping) -> sa.types.TypeEngine:
    if integer_options(spec):
        return sa.BigInteger()
    longest = max((len(str(o.value)) for o in options_of(spec)), default=0)
    return sa.String(max(64, longest))


_OPTION_KEYS = {"options": {"type": "array"}, "depends_on": {"type": "string"}, "options_filter": {"type": "string"}}


class _SingleChoice(FieldType):
    filter_ops = CHOICE_OPS
    definition_keys = _OPTION_KEYS

    def check_definition(self, spec):
        return _check_options(spec)

    def column_type(self, spec):
        return _choice_column(spec)

    def coerce(self, raw, spec):
        if isinstance(raw, (list, tuple)):
            if len(raw) != 1:
                raise fail("invalid_option", "只能选择一项", "Choose one option only")
            raw = raw[0]
        return match_option(raw, spec)

    def compile_parser(self, spec):
        """Option values looked up in a table; labels, other spellings and ints are
        remembered after their first ``parse`` (a pure function of the value)."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not _SingleChoice.coerce:
            return super().compile_parser(spec)
        try:
            seed = {k: v for k, v in _exact_values(spec).items() if not is_empty(k)}
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse = self.parse
        return memo_parser(lambda raw: parse(raw, spec), seed, cap=max(1024, 4 * len(seed)))

    def value_schema(self, spec):
        values = [option_value(o, spec) for o in options_of(spec)]
        return {"type": "integer" if integer_options(spec) else "string", "enum": values}

    def from_db(self, value, spec):
        if value is None:
            return None
        return int(value) if integer_options(spec) else str(value)

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        for o in options_of(spec):
            if str(o.value) == str(value):
                return o.text(lang)
        return str(value)       # an option removed since the value was saved


@register
class SelectType(_SingleChoice):
    """One option from a drop-down."""

    name = "select"
    label = {"zh": "下拉选择", "en": "Select"}
    widget = "select"


@register
class RadioType(_SingleChoice):
    """One option shown as radio buttons."""

    name = "radio"
    label = {"zh": "单选", "en": "Radio buttons"}
    widget = "radio"


class _MultiChoice(JsonListFilters, FieldType):
    """Several options: a JSON list in option order, no duplicates.

    ``min``/``max`` bound how many may be chosen.
    """

    filter_ops = LIST_OPS
    sortable = False
    definition_keys = {**_OPTION_KEYS, "min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 1}}

    def check_definition(self, spec):
        problems = _check_options(spec)
        lo, hi = spec.get("min"), spec.get("max")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append((("min",), f"min {lo} is larger than max {hi}"))
        return problems

    def column_type(self, spec):
        return json_column()

    def coerce(self, raw, spec):
        items = json_list_input(raw)
        if items is None:
            if isinstance(raw, str):
                items = split_list(raw)
            elif isinstance(raw, Mapping):
                raise fail("invalid_option", "应为选项列表", "Expected a list of options")
            else:
                items = [raw]
        chosen = {match_option(x, spec) for x in items if x is not None and str(x).strip() != ""}
        if not chosen:
            return None
        order = [option_value(o, spec) for o in options_of(spec)]
        values = [v for v in order if v in chosen]
        lo, hi = spec.get("min"), spec.get("max")
        if hi is not None and len(values) > int(hi):
            raise fail("too_many", f"最多选择 {hi} 项", f"Choose at most {hi}", max=int(hi))
        if lo is not None and len(values) < int(lo):
            raise fail("too_few", f"至少选择 {lo} 项", f"Choose at least {lo}", min=int(lo))
        return values

    def value_schema(self, spec):
        values = [option_value(o, spec) for o in options_of(spec)]
        schema = {"type": "array", "uniqueItems": True,
                  "items": {"type": "integer" if integer_options(spec) else "string", "enum": values}}
        if spec.get("max") is not None:
            schema["maxItems"] = int(spec["max"])
        if spec.get("min"):
            schema["minItems"] = int(spec["min"])
        return schema

    def from_db(self, value, spec):
        if isinstance(value, str):
            value = json.loads(value)
        return None if value is None else list(value)

    def to_json(self, value, spec):
        return None if value is None else list(value)

    def format(self, value, spec, lang="zh", tz=None):
        if not value:
            return ""
        one = SelectType()
        return ("、" if lang == "zh" else ", ").join(one.format(v, spec, lang) for v in value)

    def filter_value(self, raw, spec, bound=None):
        return match_option(raw, spec)

    def filter_fragment(self, raw, spec):
        return match_option(raw, spec)


@register
class MultiSelectType(_MultiChoice):
    name = "multi_select"
    label = {"zh": "多选下拉", "en": "Multi-select"}
    widget = "multiselect"


@register
class CheckboxGroupType(_MultiChoice):
    name = "checkbox_group"
    label = {"zh": "复选框组", "en": "Checkboxes"}
    widget = "checkboxes"
