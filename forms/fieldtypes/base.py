"""The field-type contract, its error type, the registry and shared helpers.

A field type is a small stateless object: one instance per type name in
``FIELD_TYPES``.  ``spec`` is always the field definition as plain data from
the YAML (plus keys the record service adds, which start with ``_``:
``_tz`` -- the app's time zone, ``_options_tree`` -- a loaded cascade file,
``_roles`` -- the app's roles, ``_target_spec`` -- the spec of the field a
lookup shows).

Values exist in four shapes:

* **raw** -- whatever arrives: JSON values, strings from an HTML form, a CSV
  or an Excel cell (``parse`` accepts all of them);
* **canonical** -- the Python value ``parse`` returns and the record service,
  expressions and rules work with;
* **db** -- what goes into the column (``to_db`` / ``from_db``; identity for
  most types, naive UTC for datetimes);
* **json** -- what the API returns (``to_json``; dates as ISO strings,
  ``Decimal`` as a string such as ``"1234.50"``).
"""
from __future__ import annotations

import datetime as dt
import decimal
import difflib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# -- errors ---------------------------------------------------------------


class FieldValueError(ValueError):
    """A value the user can fix: ``code`` for programs, ``message`` for people.

    ``message`` is ``{'zh': ..., 'en': ...}`` and says how to fix the value.
    """

    def __init__(self, code: str, message: Mapping[str, str] | str, **params: Any):
        if isinstance(message, str):
            message = {"zh": message, "en": message}
        self.code = code
        self.message: dict[str, str] = dict(message)
        self.params = params
        super().__init__(self.message.get("en") or self.message.get("zh") or code)

    def text(self, lang: str = "zh") -> str:
        return self.message.get(lang) or self.message.get("en") or self.message.get("zh") or self.code

    def __reduce__(self):  # picklable (pytest-xdist, multiprocessing)
        return (_rebuild_error, (self.code, self.message, self.params))


def _rebuild_error(code, message, params):
    return FieldValueError(code, message, **params)


def fail(code: str, zh: str, en: str, **params: Any) -> FieldValueError:
    """Build (not raise) a bilingual ``FieldValueError``."""
    return FieldValueError(code, {"zh": zh, "en": en}, **params)


# -- small helpers ----------------------------------------------------------

ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_empty(raw: Any) -> bool:
    """``None``, blank strings and empty lists/dicts count as "no value"."""
    if raw is None:
        return True
    if type(raw) is str:
        if raw.isprintable():       # no zero-width / control characters: only ' ' can be blank
            return raw.strip() == ""
        return raw.translate(ZERO_WIDTH).strip() == ""
    if isinstance(raw, str):
        return raw.translate(ZERO_WIDTH).strip() == ""
    if isinstance(raw, (list, tuple, dict, set, frozenset)):
        return len(raw) == 0
    return False


def nfkc(text: str) -> str:
    """Full-width to half-width (``１３８`` -> ``138``, ``＠`` -> ``@``), no zero-width chars."""
    return unicodedata.normalize("NFKC", text).translate(ZERO_WIDTH).strip()


def text_of(label: Any, lang: str = "zh", default: str = "") -> str:
    """A label (string or ``{zh, en}``) in ``lang``."""
    if label is None:
        return default
    if type(label) is str:
        return label
    if isinstance(label, Mapping):
        for key in (lang, "zh", "en"):
            if label.get(key):
                return str(label[key])
        for v in label.values():
            return str(v)
        return default
    return str(label)


def bilingual(label: Any) -> dict[str, str]:
    """A string or ``{zh, en}`` -> ``{zh, en}`` (both filled)."""
    return {"zh": text_of(label, "zh"), "en": text_of(label, "en")}


def quote_list(items: Iterable[Any], limit: int = 12, sep: str = ", ") -> str:
    items = [str(i) for i in items]
    more = len(items) - limit
    return sep.join(items[:limit]) + (f"{sep}…" if more > 0 else "")


def tz_of(spec: Mapping | None, tz: Any = None):
    """The zone to use: ``tz`` if given, else ``spec['_tz']``, else UTC (names or tzinfo)."""
    zone = tz if tz is not None else (spec or {}).get("_tz")
    if zone is None:
        return dt.timezone.utc
    if isinstance(zone, str):
        from zoneinfo import ZoneInfo
        return ZoneInfo(zone)
    return zone


_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def to_decimal(raw: Any) -> decimal.Decimal | None:
    """Numbers and numeric strings -> ``Decimal`` (``None`` when not a number).

    Accepts full-width digits, thousands separators (``1,234.5``), a leading
    ``+`` and surrounding spaces.  Booleans are not numbers.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, decimal.Decimal):
        value = raw
    elif isinstance(raw, int):
        value = decimal.Decimal(raw)
    elif isinstance(raw, float):
        value = decimal.Decimal(repr(raw))
    elif isinstance(raw, str):
        s = nfkc(raw).replace(",", "").replace("，", "").replace(" ", "").replace("_", "")
        s = s.replace("−", "-")
        if not _NUMBER_TEXT.fullmatch(s):
            return None
        try:
            value = decimal.Decimal(s)
        except decimal.InvalidOperation:
            return None
    else:
        return None
    if not value.is_finite():
        return None
    return value


def decimal_text(value: decimal.Decimal) -> str:
    """A Decimal as plain positional text (never ``1E+3``)."""
    return format(value, "f")


def strip_zeros(value: decimal.Decimal) -> str:
    s = decimal_text(value)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def jsonable(value: Any) -> Any:
    """Any canonical value -> JSON-safe data (used where the type is not known)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, decimal.Decimal):
        return decimal_text(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)


def display(value: Any, lang: str = "zh", tz: Any = None) -> str:
    """Generic display text for a value whose type is not known (lookups, formulas)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("Yes" if value else "No")
    if isinstance(value, decimal.Decimal):
        return strip_zeros(value) if value != value.to_integral_value() else decimal_text(value.quantize(1))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(tz_of(None, tz)).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {display(v, lang, tz)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ("、" if lang == "zh" else ", ").join(display(v, lang, tz) for v in value)
    return str(value)


def user_message(custom: Any, zh: str, en: str) -> dict[str, str]:
    """``pattern_message`` (string or ``{zh, en}``) or the default texts."""
    if custom is None or custom == "":
        return {"zh": zh, "en": en}
    if isinstance(custom, Mapping):
        return {"zh": str(custom.get("zh") or custom.get("en") or zh), "en": str(custom.get("en") or custom.get("zh") or en)}
    return {"zh": str(custom), "en": str(custom)}


def json_column() -> sa.types.TypeEngine:
    """JSON on SQLite, JSONB on PostgreSQL; Python ``None`` is SQL NULL (not JSON ``null``)."""
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def nullable(schema: dict) -> dict:
    """Allow ``null`` in a JSON Schema fragment (any field may be empty)."""
    s = dict(schema)
    if "enum" in s:
        s["enum"] = list(s["enum"]) + ([None] if None not in s["enum"] else [])
    if "type" in s:
        t = s["type"]
        types = list(t) if isinstance(t, list) else [t]
        if "null" not in types:
            types.append("null")
        s["type"] = types
        return s
    if "const" in s or "anyOf" in s or "oneOf" in s or "$ref" in s:
        return {"anyOf": [s, {"type": "null"}]}
    return s  # no type: anything, null included


# -- filter operator sets -----------------------------------------------------

TEXT_OPS = ("eq", "ne", "contains", "startswith", "in", "empty")
NUMBER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "empty")
RANGE_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "empty")
CHOICE_OPS = ("eq", "ne", "in", "empty")
BOOL_OPS = ("eq", "ne", "empty")
ID_OPS = ("eq", "ne", "in", "startswith", "contains", "empty")
LIST_OPS = ("contains", "empty")
EMPTY_OPS = ("empty",)

_FILTER_STRIP = ("min", "max", "min_length", "max_length", "pattern", "pattern_message", "required")


# -- the base class -----------------------------------------------------------------


class FieldType:
    """Base class: override what differs.  Instances are stateless and shared."""

    name: str = ""
    label: dict = {}
    widget: str = "text"
    filter_ops: tuple[str, ...] = ("eq", "ne", "empty")
    stored: bool = True
    readonly: bool = False          # formula / lookup / auto_number: never typed by users
    definition_keys: dict = {}      # JSON Schema 'properties' of the type-specific keys
    sortable: bool = True           # list views may order by the column

    # -- definitions ---------------------------------------------------------------------------
    def check_definition(self, spec: Mapping) -> list[tuple[tuple, str]]:
        """Semantic checks of a field definition; ``[(path_inside_field, message)]``."""
        return []

    # -- storage ------------------------------------------------------------------------------
    def column_type(self, spec: Mapping) -> sa.types.TypeEngine | None:
        raise NotImplementedError

    def to_db(self, value: Any, spec: Mapping) -> Any:
        return value

    def from_db(self, value: Any, spec: Mapping) -> Any:
        return value

    # -- API ----------------------------------------------------------------------------------
    def value_schema(self, spec: Mapping) -> dict:
        """JSON Schema of a (non-empty) value; ``json_schema`` adds ``null``."""
        return {}

    def json_schema(self, spec: Mapping) -> dict:
        schema = nullable(self.value_schema(spec))
        if self.readonly:
            schema["readOnly"] = True
        return schema

    def to_json(self, value: Any, spec: Mapping) -> Any:
        return jsonable(value)

    # -- input --------------------------------------------------------------------------------
    def parse(self, raw: Any, spec: Mapping) -> Any:
        """Raw input -> canonical value; empty input -> ``None``; else ``FieldValueError``."""
        if is_empty(raw):
            return None
        return self.coerce(raw, spec)

    def coerce(self, raw: Any, spec: Mapping) -> Any:
        raise NotImplementedError

    def compile_parser(self, spec: Mapping) -> Callable[[Any], Any]:
        """``parse`` bound to one ``spec``, for many values (imports, bulk writes).

        Hot types override this with a closure that works out everything
        ``spec`` implies once (bounds, patterns, option tables) and takes
        fast paths for the common input shapes, falling back to ``parse``
        for anything else: results and errors are always those of ``parse``.
        ``spec`` must not change while the parser is in use.
        """
        parse = self.parse
        return lambda raw: parse(raw, spec)

    # -- display ------------------------------------------------------------------------------
    def format(self, value: Any, spec: Mapping, lang: str = "zh", tz: Any = None) -> str:
        if value is None:
            return ""
        return display(value, lang, tz_of(spec, tz))

    # -- filters ------------------------------------------------------------------------------
    def parse_filter(self, op: str, raw: Any, spec: Mapping) -> Any:
        """A ``?field__op=value`` query parameter -> a value comparable with the column.

        Returns db-shaped values (``to_db`` applied): a single value, a list
        for ``in``, a ``(low, high)`` pair for ``between``, a bool for
        ``empty``, a text fragment for ``contains``/``startswith``.  Bounds
        such as ``min``/``max``/``pattern`` of the field do not apply.
        """
        if op not in self.filter_ops and op != "eq":
            raise fail("bad_operator", f"“{op}”不是此类字段可用的筛选方式，可用：{'、'.join(self.filter_ops)}",
                       f"'{op}' is not a filter for {self.name} fields; use one of: {', '.join(self.filter_ops)}")
        fspec = {k: v for k, v in (spec or {}).items() if k not in _FILTER_STRIP}
        if op == "empty":
            return parse_flag(raw)
        if op in ("contains", "startswith"):
            return self.filter_fragment(raw, fspec)
        if op == "in":
            items = list(raw) if isinstance(raw, (list, tuple)) else split_list(str(raw))
            return [self.filter_value(x, fspec, op) for x in items if not is_empty(x)]
        if op == "between":
            parts = list(raw) if isinstance(raw, (list, tuple)) else str(raw).split(",", 1)
            if len(parts) != 2 or is_empty(parts[0]) or is_empty(parts[1]):
                raise fail("invalid_range", "范围应写成“起,止”，如 10,20 或 2026-01-01,2026-03-31",
                           "A range is 'low,high', e.g. 10,20 or 2026-01-01,2026-03-31")
            return (self.filter_value(parts[0], fspec, "low"), self.filter_value(parts[1], fspec, "high"))
        bound = {"lt": "low", "gte": "low", "lte": "high", "gt": "high"}.get(op)
        return self.filter_value(raw, fspec, bound or op)

    def filter_value(self, raw: Any, spec: Mapping, bound: str | None = None) -> Any:
        value = self.parse(raw, spec)
        return None if value is None else self.to_db(value, spec)

    def filter_fragment(self, raw: Any, spec: Mapping) -> str:
        return nfkc(str(raw))

    def filter_clause(self, column: Any, op: str, value: Any, spec: Mapping) -> Any:
        """Optional SQL for ``op`` where a plain comparison would be wrong (JSON
        columns); ``None`` means "use the generic operator"."""
        return None

    def __repr__(self) -> str:
        return f"<FieldType {self.name}>"


def parse_flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    s = nfkc(str(raw)).lower()
    if s in ("1", "true", "yes", "y", "on", "是"):
        return True
    if s in ("0", "false", "no", "n", "off", "否"):
        return False
    raise fail("invalid_boolean", "应为 true 或 false", "Expected true or false")


_SPLIT = re.compile(r"\s*[,，、;；\n]\s*")


def split_list(text: str) -> list[str]:
    """``'a, b，c、d;e'`` -> ``['a', 'b', 'c', 'd', 'e']`` (blank items dropped)."""
    return [p for p in (x.strip() for x in _SPLIT.split(text)) if p]


def json_list_input(raw: Any) -> list | None:
    """A list, or a JSON array in a string (HTML forms post JSON text); else ``None``."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if isinstance(raw, str) and raw.strip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, list) else None
    return None


def json_contains_clause(column: Any, needle_value: Any, *, element: bool = True) -> Any:
    """``column`` (JSON) contains ``needle_value`` as a list element (or a substring).

    Works on SQLite's JSON text and PostgreSQL's JSONB text alike: both the
    ASCII-escaped and the raw UTF-8 spelling of the value are tried.
    """
    text_col = sa.cast(column, sa.Text)
    spellings = {json.dumps(needle_value), json.dumps(needle_value, ensure_ascii=False)}
    if not element:
        spellings = {s[1:-1] for s in spellings}
    return sa.or_(*[text_col.contains(s, autoescape=True) for s in sorted(spellings)])


class JsonListFilters:
    """Mixin: ``contains``/``eq`` filters on JSON list columns (element match)."""

    def filter_clause(self, column, op, value, spec):
        if op in ("contains", "eq", "in"):
            values = value if isinstance(value, (list, tuple)) else [value]
            values = [v for v in values if v is not None]
            if not values:
                return column.is_(None) if op == "eq" else None
            clauses = [json_contains_clause(column, v) for v in values]
            return sa.and_(*clauses) if op == "eq" else sa.or_(*clauses)
        if op == "empty":
            return column.is_(None) if value else column.is_not(None)
        return None


# -- definition checks shared by several types ----------------------------------------------


def check_bounds(spec: Mapping, parse_bound) -> list[tuple[tuple, str]]:
    """``min``/``max`` parse with ``parse_bound`` and ``min <= max``."""
    problems: list[tuple[tuple, str]] = []
    parsed = {}
    for key in ("min", "max"):
        if spec.get(key) is None:
            continue
        try:
            parsed[key] = parse_bound(spec[key])
        except (FieldValueError, ValueError, TypeError) as exc:
            problems.append(((key,), f"{key} {spec[key]!r} is not valid here: {exc}"))
    if len(parsed) == 2:
        try:
            if parsed["min"] > parsed["max"]:
                problems.append((("min",), f"min {spec['min']!r} is larger than max {spec['max']!r}"))
        except TypeError:
            pass
    return problems


def check_lengths(spec: Mapping, hard_max: int | None = None) -> list[tuple[tuple, str]]:
    problems = []
    lo, hi = spec.get("min_length"), spec.get("max_length")
    for key, v in (("min_length", lo), ("max_length", hi)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            problems.append(((key,), f"{key} must be a whole number ≥ 0"))
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        problems.append((("min_length",), f"min_length {lo} is larger than max_length {hi}"))
    if hard_max and isinstance(hi, int) and hi > hard_max:
        problems.append((("max_length",), f"max_length {hi} is more than this type can hold ({hard_max})"))
    if spec.get("pattern") is not None:
        try:
            re.compile(str(spec["pattern"]))
        except re.error as exc:
            problems.append((("pattern",), f"pattern is not a valid regular expression: {exc}"))
    return problems


def check_text_value(value: str, spec: Mapping, default_max: int | None, *, measure: str | None = None) -> str:
    """min_length / max_length / pattern for text-like values; returns ``value``."""
    n = len(measure if measure is not None else value)
    hi = spec.get("max_length") or default_max
    lo = spec.get("min_length")
    if hi is not None and n > int(hi):
        raise fail("too_long", f"最多 {hi} 个字，当前 {n} 个，请删减", f"At most {hi} characters (now {n}); please shorten it",
                   max_length=int(hi), length=n)
    if lo and n < int(lo):
        raise fail("too_short", f"至少 {lo} 个字，当前 {n} 个", f"At least {lo} characters (now {n})",
                   min_length=int(lo), length=n)
    pattern = spec.get("pattern")
    if pattern:
        if not re.fullmatch(str(pattern), value):
            msg = user_message(spec.get("pattern_message"), f"格式不正确（应符合 {pattern}）",
                               f"Wrong format (expected to match {pattern})")
            raise FieldValueError("pattern", msg, pattern=str(pattern))
    return value


def suggest_name(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


_NEWLINE_RUN = re.compile(r"\s*\n\s*")


def clean_text(raw: Any, *, multiline: bool) -> str:
    """Common text input: numbers become text, controls are refused, blanks trimmed."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, decimal.Decimal)):
        raise fail("invalid_text", "应为文字", "Expected text")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)      # an Excel cell holding 1001.0 for the code 1001
    s = str(raw).translate(ZERO_WIDTH).replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL.search(s):
        raise fail("invalid_text", "包含不可见的控制字符，请重新输入或粘贴为纯文本",
                   "Contains invisible control characters; retype it or paste as plain text")
    if not multiline and "\n" in s:
        s = _NEWLINE_RUN.sub(" ", s)
    return s.strip()


# -- compiled parsers ---------------------------------------------------------------------------

MISSING = object()


def memo_parser(fallback: Callable[[Any], Any], seed: Mapping[str, Any] | None = None,
                cap: int = 4096) -> Callable[[Any], Any]:
    """A parser for a *pure* ``fallback`` with immutable results: ``str`` and
    ``int`` inputs are looked up in a table of earlier successes (``seed``
    plus up to ``cap`` remembered values) before calling ``fallback``.
    Failures are never remembered, so errors are always ``fallback``'s own."""
    texts: dict[str, Any] = dict(seed or {})
    ints: dict[int, Any] = {}
    text_get, int_get = texts.get, ints.get

    def parser(raw: Any) -> Any:
        t = type(raw)
        if t is str:
            v = text_get(raw, MISSING)
            if v is not MISSING:
                return v
            v = fallback(raw)
            if len(texts) < cap:
                texts[raw] = v
            return v
        if t is int:
            v = int_get(raw, MISSING)
            if v is not MISSING:
                return v
            v = fallback(raw)
            if len(ints) < cap:
                ints[raw] = v
            return v
        if raw is None:
            return None
        return fallback(raw)

    return parser


# -- the registry ------------------------------------------------------------------------------

FIELD_TYPES: dict[str, FieldType] = {}


def register(cls: type[FieldType]) -> type[FieldType]:
    """Class decorator: put one instance of ``cls`` in ``FIELD_TYPES`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in FIELD_TYPES:
        raise ValueError(f"field type '{cls.name}' is registered twice")
    FIELD_TYPES[cls.name] = cls()
    return cls
