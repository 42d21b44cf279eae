"""Compiled report and dashboard definitions: frozen, shared by every request.

A report is compiled once (``reports/compiler.py``) into a :class:`ReportDef`
whose parts point at the form fields they use; at run time the query builder
(``reports/query.py``) turns it into ONE SQL statement on top of the record
service's permission-filtered base query.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

PERIODS = ("today", "yesterday", "last_7_days", "last_30_days", "last_90_days", "this_week", "last_week",
           "this_month", "last_month", "this_quarter", "last_quarter", "this_year", "last_year", "all")
BUCKETS = ("day", "week", "month", "quarter", "year", "hour", "weekday")
MEASURE_KINDS = ("count", "count_distinct", "sum", "avg", "min", "max", "median", "percentile", "ratio", "duration", "formula")
AGGREGATES = ("avg", "sum", "min", "max", "median", "percentile")
DURATION_UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
REPORT_KINDS = ("table", "pivot", "funnel", "cohort", "kpi")
FORMATS = ("number", "integer", "percent", "currency", "hours", "days")
PARAM_OPS = ("eq", "in", "ne", "gt", "gte", "lt", "lte", "contains")
# query parameters the API itself uses; report parameters may not take these names
RESERVED_PARAMS = ("format", "lang", "limit", "offset", "measure", "stage", "cohort", "order", "q")


@dataclass(frozen=True)
class FieldRef:
    """A field a report uses: on the source form, or one hop through a link."""

    path: tuple[str, ...]            # ('state',) or ('dealer', 'region')
    form: str                        # the form the final field belongs to
    field: str                       # final field (or system column) name
    type: str                        # field type; system columns: id/datetime/user/state
    label: Mapping[str, str]
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)   # value -> {zh, en}
    target: str | None = None        # for a link field: the form it points at
    target_title: str | None = None  # ... and that form's title field
    pii: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def link(self) -> str | None:
        return self.path[0] if len(self.path) > 1 else None

    @property
    def is_temporal(self) -> bool:
        return self.type in ("date", "datetime")


@dataclass(frozen=True)
class Dimension:
    name: str                        # column name in results and the drill parameter
    ref: FieldRef
    bucket: str | None
    label: Mapping[str, str]
    part: int | str | None = None    # cascade level (1-based) or address part ('province') to group by


@dataclass(frozen=True)
class Measure:
    name: str
    kind: str                        # one of MEASURE_KINDS
    label: Mapping[str, str]
    arg: Any = None                  # FieldRef, or a compiled Expression (sum/avg/... of an expression)
    when: Any = None                 # compiled Expression: conditional measure
    p: float | None = None           # percentile
    ratio: tuple[str, str] | None = None
    formula: Any = None              # compiled Expression over other measures' names
    start: FieldRef | None = None    # duration
    end: FieldRef | None = None
    unit: str = "hours"
    agg: str = "avg"                 # duration aggregate
    format: str = "number"
    hidden: bool = False             # computed (e.g. for a ratio) but not shown
    when_source: str | None = None

    @property
    def needs_postgres(self) -> bool:
        return self.kind in ("median", "percentile") or (self.kind == "duration" and self.agg in ("median", "percentile"))


@dataclass(frozen=True)
class Param:
    """A filter the user chooses: ``?period=last_30_days&region=east``."""

    name: str
    ref: FieldRef
    kind: str                        # 'period' (date/datetime fields) or 'value'
    op: str = "eq"
    default: Any = None
    required: bool = False
    label: Mapping[str, str] = field(default_factory=dict)

    def describe(self, lang: str) -> dict:
        out = {"name": self.name, "field": self.ref.name, "kind": self.kind, "op": self.op,
               "label": self.label.get(lang) or self.name, "default": self.default, "required": self.required}
        if self.kind == "period":
            out["options"] = [{"value": p, "label": PERIOD_LABELS[p][lang]} for p in PERIODS]
        elif self.ref.options:
            out["options"] = [{"value": v, "label": lab.get(lang) or v} for v, lab in self.ref.options.items()]
        return out


@dataclass(frozen=True)
class FixedFilter:
    expr: Any                        # compiled Expression
    source: str


@dataclass(frozen=True)
class Chart:
    kind: str
    x: str | None = None             # a dimension name
    y: tuple[str, ...] = ()          # measure names
    series: str | None = None        # a second dimension: one series per value
    stack: bool = False
    horizontal: bool = False
    max: float | None = None         # gauge
    better: str = "higher"           # kpi: which way a change is good news ("higher" or "lower")
    title: Mapping[str, str] | None = None
    echarts: Mapping[str, Any] = field(default_factory=dict)   # merged into the generated option


@dataclass(frozen=True)
class Pivot:
    rows: tuple[str, ...]            # dimension names
    columns: str                     # dimension name
    measures: tuple[str, ...]
    totals: bool = True


@dataclass(frozen=True)
class Funnel:
    ref: FieldRef                    # usually `state`
    stages: tuple[str, ...]
    labels: Mapping[str, Mapping[str, str]]
    cumulative: bool = True


@dataclass(frozen=True)
class Cohort:
    date: FieldRef                   # cohort date on the source form
    bucket: str
    member: FieldRef | None          # what is counted (None = the source record itself)
    events_form: str
    events_link: str                 # link field on the events form pointing at the member
    events_date: str | None
    events_when: Any                 # compiled Expression on the events form
    within_days: int | None
    thresholds: tuple[int, ...]
    label: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportDef:
    app: str
    name: str
    label: Mapping[str, str]
    description: Mapping[str, str]
    source: str
    kind: str
    roles: frozenset[str]
    fixed: tuple[FixedFilter, ...]
    params: tuple[Param, ...]
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    sort: tuple[tuple[str, bool], ...]      # (name, descending)
    limit: int | None
    chart: Chart | None
    pivot: Pivot | None = None
    funnel: Funnel | None = None
    cohort: Cohort | None = None
    compare: str | None = None              # name of the period parameter shifted for the previous period
    drill_columns: tuple[str, ...] = ()
    file: str = ""
    position: tuple[int, int] = (1, 1)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    def measure(self, name: str) -> Measure | None:
        return next((m for m in self.measures if m.name == name), None)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def visible_measures(self) -> tuple[Measure, ...]:
        return tuple(m for m in self.measures if not m.hidden)

    def uses(self) -> list[FieldRef]:
        """Every field the report reads (for permission and index checks)."""
        refs = [d.ref for d in self.dimensions] + [p.ref for p in self.params]
        for m in self.measures:
            refs += [r for r in (m.arg, m.start, m.end) if isinstance(r, FieldRef)]
        if self.funnel:
            refs.append(self.funnel.ref)
        if self.cohort:
            refs += [r for r in (self.cohort.date, self.cohort.member) if r is not None]
        return refs


@dataclass(frozen=True)
class Widget:
    report: str
    width: int = 6
    height: int = 1
    title: Mapping[str, str] | None = None
    chart: Chart | None = None


@dataclass(frozen=True)
class DashboardDef:
    app: str
    name: str
    label: Mapping[str, str]
    roles: frozenset[str]
    filters: tuple[tuple[str, Any], ...]     # (param name, default)
    refresh_seconds: int | None
    widgets: tuple[Widget, ...]
    file: str = ""


PERIOD_LABELS = {
    "today": {"zh": "今天", "en": "Today"},
    "yesterday": {"zh": "昨天", "en": "Yesterday"},
    "last_7_days": {"zh": "最近7天", "en": "Last 7 days"},
    "last_30_days": {"zh": "最近30天", "en": "Last 30 days"},
    "last_90_days": {"zh": "最近90天", "en": "Last 90 days"},
    "this_week": {"zh": "本周", "en": "This week"},
    "last_week": {"zh": "上周", "en": "Last week"},
    "this_month": {"zh": "本月", "en": "This month"},
    "last_month": {"zh": "上月", "en": "Last month"},
    "this_quarter": {"zh": "本季度", "en": "This quarter"},
    "last_quarter": {"zh": "上季度", "en": "Last quarter"},
    "this_year": {"zh": "今年", "en": "This year"},
    "last_year": {"zh": "去年", "en": "Last year"},
    "all": {"zh": "全部", "en": "All time"},
}

EMPTY_LABEL = {"zh": "（空）", "en": "(empty)"}
