"""Compile step for ``reports/*.yaml``: reports and dashboards.

Runs after forms (10), flows (20) and rules (30).  The JSON Schema has already
checked shapes; this step checks meaning, with positions: the source form,
every field (``dealer.region`` one hop through a link), buckets on date
fields, measure kinds and their arguments, expressions, parameters and their
defaults, chart kinds and what each chart needs, roles, and dashboard widgets.
Personal-data (pii) fields can't be grouped, shown or filtered.

Fills ``ctx.out['reports']`` and ``ctx.out['dashboards']`` (name -> compiled
definition) -- the menus in app.yaml are checked against them.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from engine.definitions import CompileContext, register_step, text
from engine.problems import one_of, suggest

from .charts import CHARTS
from .model import (AGGREGATES, BUCKETS, DURATION_UNITS, FORMATS, MEASURE_KINDS, PARAM_OPS,
                    RESERVED_PARAMS, Chart, Cohort, DashboardDef, Dimension, FieldRef, FixedFilter, Funnel, Measure,
                    Param, Pivot, ReportDef, Widget)
from .periods import PeriodError, resolve as resolve_period

SYSTEM_TYPES = {"id": "id", "created_at": "datetime", "updated_at": "datetime", "created_by": "user",
                "owner": "user", "state": "state"}
SYSTEM_LABELS = {
    "id": {"zh": "编号", "en": "ID"},
    "created_at": {"zh": "创建时间", "en": "Created"},
    "updated_at": {"zh": "更新时间", "en": "Updated"},
    "created_by": {"zh": "创建人", "en": "Created by"},
    "owner": {"zh": "负责人", "en": "Owner"},
    "state": {"zh": "状态", "en": "State"},
}
# field types that are not one value per record, so they can't be grouped or aggregated
NOT_GROUPABLE = {"child_table", "attachment", "image", "geo_point", "multi_select", "tags", "checkbox_group",
                 "json", "rich_text", "signature", "cascade", "address", "lookup", "textarea"}
ADDRESS_PARTS = ("province", "city", "district")
NOT_NUMERIC = {"text", "textarea", "select", "radio", "multi_select", "tags", "checkbox_group", "phone", "email",
               "url", "date", "datetime", "time", "boolean", "link", "user", "cascade", "id_card", "plate",
               "vin", "attachment", "image", "geo_point", "child_table", "auto_number", "state", "rich_text"}
PATH_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
COUNT_LABEL = {"zh": "数量", "en": "Count"}


def _mp(d: dict) -> MappingProxyType:
    return MappingProxyType(dict(d))


def parse_days(value: Any) -> int | None:
    """``90d`` / ``12w`` / ``1y``-free durations for cohort windows, in days."""
    m = re.fullmatch(r"(\d+)([dw])", str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * (7 if m.group(2) == "w" else 1)


def parse_seconds(value: Any) -> int | None:
    total, rest = 0, str(value or "").strip()
    if not rest:
        return None
    for num, unit in re.findall(r"(\d+)([wdhms])", rest):
        total += int(num) * {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total or None


def _error_once(ctx: CompileContext, file: str, path: tuple, message: str, at_key: bool) -> None:
    """Report a problem; a generic schema message at the same place is replaced by this more specific one."""
    src = ctx.files.get(file)
    if src is not None:
        line, col = src.loaded.position(path, prefer_key=at_key)
        ctx.problems.items[:] = [p for p in ctx.problems.items if not (p.file == file and p.line == line and p.col == col)]
    ctx.error(file, path, message, at_key=at_key)


# ---------------------------------------------------------------------------
# workflow states (ordered), read from the flow sources -- the flows engine's
# compiled objects are not needed and not imported

def workflow_states(ctx: CompileContext) -> tuple[dict[str, dict[str, dict]], dict[str, list[str]]]:
    """(form -> {state: label} in the order the workflow lists them, form -> its final states)."""
    out: dict[str, dict[str, dict]] = {}
    finals: dict[str, list[str]] = {}
    for src in ctx.yaml_files("flows"):
        data = src.data
        if not isinstance(data, dict) or data.get("kind", "workflow") != "workflow":
            continue
        form, states = data.get("form"), data.get("states")
        if isinstance(form, str) and isinstance(states, dict):
            out.setdefault(form, {}).update(
                {str(s): text((spec or {}).get("label") if isinstance(spec, dict) else None) or {"zh": str(s), "en": str(s)}
                 for s, spec in states.items()})
            finals.setdefault(form, []).extend(str(s) for s, spec in states.items() if isinstance(spec, dict) and spec.get("final"))
    return out, finals


def option_labels(spec: Any) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for opt in (spec or {}).get("options") or []:
        if isinstance(opt, dict) and "value" in opt:
            out[str(opt["value"])] = text(opt.get("label") or str(opt["value"]))
        elif not isinstance(opt, (dict, list)):
            out[str(opt)] = {"zh": str(opt), "en": str(opt)}
    return out


class _Fields:
    """Field lookup over the compiled forms, one hop through links."""

    def __init__(self, forms: dict, states: dict, finals: dict | None = None):
        self.forms, self.states, self.finals = forms, states, finals or {}

    def field_ref(self, form: str, name: str, path: tuple) -> FieldRef | str:
        fd = self.forms.get(form)
        if fd is None:
            return f"unknown form '{form}'"
        if name in SYSTEM_TYPES:
            opts = self.states.get(form, {}) if name == "state" else {}
            return FieldRef(path, form, name, SYSTEM_TYPES[name], _mp(SYSTEM_LABELS[name]), _mp(opts))
        f = fd.fields.get(name)
        if f is None:
            known = sorted(set(fd.fields) | set(SYSTEM_TYPES))
            return f"unknown field '{name}' in form '{form}'{suggest(name, known) or '; ' + one_of(known)}"
        target = f.spec.get("form") if f.type == "link" else None
        title = None
        if target and target in self.forms:
            title = self.forms[target].title_field
        if not f.stored:
            return f"'{name}' is not stored (a computed field), so it cannot be used in a report"
        return FieldRef(path, form, name, f.type, _mp(f.label), _mp(option_labels(f.spec)), target, title, f.pii)

    def resolve(self, source: str, dotted: str) -> FieldRef | str:
        if not isinstance(dotted, str) or not PATH_RE.match(dotted):
            return f"'{dotted}' is not a field name: write a field of '{source}' or link.field (e.g. dealer.region)"
        parts = tuple(dotted.split("."))
        if len(parts) == 1:
            return self.field_ref(source, parts[0], parts)
        head = self.field_ref(source, parts[0], parts[:1])
        if isinstance(head, str):
            return head
        if head.type != "link" or not head.target:
            return f"'{parts[0]}' is not a link field, so '{dotted}' cannot be followed"
        ref = self.field_ref(head.target, parts[1], parts)
        if isinstance(ref, str):
            return ref + f" (via '{parts[0]}')"
        return ref

    def checker(self, form: str, allow_pii: bool = False):
        """``check_name`` for expressions over records of ``form`` compiled to SQL."""
        def check(path: tuple) -> str | None:
            head, rest = path[0], path[1:]
            if head == "current_user" or head in ("true", "false", "null", "None", "True", "False"):
                return None
            if head == "record":
                if not rest:
                    return "'record' alone is not a value here; write record.<field>"
                return check(rest)
            if len(path) > 2:
                return f"'{'.'.join(path)}': links can be followed one level only"
            ref = self.resolve(form, ".".join(path))
            if isinstance(ref, str):
                return ref
            if ref.pii and not allow_pii:
                return f"'{ref.name}' is personal data (pii) and cannot be used in a report"
            return None
        return check


# ---------------------------------------------------------------------------

class _ReportCompiler:
    def __init__(self, ctx: CompileContext, file: str, base: tuple, spec: dict, fields: _Fields, app: str, roles: set):
        self.ctx, self.file, self.base, self.spec = ctx, file, base, spec
        self.fields, self.app, self.roles = fields, app, roles
        self.ok = True
        self.source = spec.get("source")

    # -- helpers ------------------------------------------------------------
    def err(self, path: tuple, message: str, at_key: bool = False) -> None:
        self.ok = False
        _error_once(self.ctx, self.file, self.base + tuple(path), f"report '{self.spec.get('name')}': {message}", at_key)

    def ref(self, dotted: Any, path: tuple, *, form: str | None = None, purpose: str = "used") -> FieldRef | None:
        r = self.fields.resolve(form or self.source, dotted)
        if isinstance(r, str):
            self.err(path, r)
            return None
        if r.pii and purpose != "counted":
            self.err(path, f"'{r.name}' is personal data (pii) and cannot be {purpose} in a report")
            return None
        return r

    def expr(self, source: Any, path: tuple, form: str | None = None):
        from engine.expressions import ExpressionError, compile_expression
        if source is None:
            return None
        src = source if isinstance(source, str) else (str(source).lower() if isinstance(source, bool) else str(source))
        try:
            return compile_expression(src, check_name=self.fields.checker(form or self.source))
        except ExpressionError as exc:
            self.ok = False
            self.ctx.error_in_expression(self.file, self.base + tuple(path), exc)
            return None

    # -- the report ---------------------------------------------------------
    def compile(self) -> ReportDef | None:
        s = self.spec
        name = s.get("name")
        if self.source not in self.fields.forms:
            forms = self.fields.forms
            self.err(("source",), f"unknown form '{self.source}'{suggest(str(self.source), forms) or '; ' + one_of(forms)}")
            return None
        kind = s.get("kind", "table")
        for i, role in enumerate(s.get("roles") or []):
            if role not in self.roles:
                self.err(("roles", i), f"unknown role '{role}'{suggest(role, self.roles) or '; ' + one_of(self.roles)}")
        fixed, params = self.filters(s.get("filters") or [])
        dims = self.dimensions(s.get("dimensions") or [])
        measures = self.measures(s.get("measures") or ({} if kind in ("funnel", "cohort") else {"count": "count"}))
        names = [d.name for d in dims] + [m.name for m in measures]
        for n in set(names):
            if names.count(n) > 1:
                self.err(("dimensions",), f"'{n}' names both a dimension and a measure; give one of them another name (name: ...)")
        for p in params:
            same_dim = next((d for d in dims if d.name == p.name), None)
            if same_dim is not None and same_dim.ref.name == p.ref.name and not same_dim.bucket and same_dim.part is None \
                    and p.op in ("eq", "in"):
                continue    # ?region=east filters the same column the 'region' dimension groups by: one meaning
            if p.name in names:
                self.err(("filters",), f"parameter '{p.name}' has the name of a dimension or measure; choose another param name")
        pivot = funnel = cohort = None
        if kind == "pivot":
            pivot = self.pivot(s.get("pivot") or {}, dims, measures)
        elif s.get("pivot") is not None:
            self.err(("pivot",), "'pivot' is only for kind: pivot", at_key=True)
        if kind == "funnel":
            funnel = self.funnel(s.get("funnel") or {})
        elif s.get("funnel") is not None:
            self.err(("funnel",), "'funnel' is only for kind: funnel", at_key=True)
        if kind == "cohort":
            if "cohort" not in s:
                self.err((), "a cohort report needs 'cohort: {date: ..., events: {form: ..., link: ...}}'")
            else:
                cohort = self.cohort(s["cohort"])
            if dims:
                self.err(("dimensions",), "a cohort report groups by its cohort date; remove 'dimensions'", at_key=True)
        elif s.get("cohort") is not None:
            self.err(("cohort",), "'cohort' is only for kind: cohort", at_key=True)
        compare = None
        if kind == "kpi":
            if dims:
                self.err(("dimensions",), "a KPI report has no dimensions (one number per measure); remove 'dimensions'", at_key=True)
            cmp = s.get("compare")
            if cmp:
                periods = [p for p in params if p.kind == "period"]
                if isinstance(cmp, str) and cmp != "previous_period":
                    match = [p for p in periods if p.name == cmp]
                    if not match:
                        self.err(("compare",), f"'{cmp}' is not a period parameter of this report"
                                 f"{suggest(cmp, [p.name for p in periods])}; write compare: previous_period")
                    else:
                        compare = cmp
                elif not periods:
                    self.err(("compare",), "comparing with the previous period needs a date filter with a parameter, "
                             "e.g. filters: [{field: created_at, param: period, default: this_month}]")
                else:
                    compare = periods[0].name
        elif s.get("compare"):
            self.err(("compare",), "'compare' is only for kind: kpi", at_key=True)
        sort = self.sort(s.get("sort") or [], names, kind)
        chart = self.chart(s.get("chart"), ("chart",), dims, measures, kind) if s.get("chart") is not None else None
        drill_cols = []
        drill = s.get("drill") or {}
        for i, c in enumerate(drill.get("columns") or []):
            if self.ref(c, ("drill", "columns", i), purpose="shown") is not None:
                if "." in c:
                    self.err(("drill", "columns", i), "drill columns are fields of the source form (no link.field)")
                drill_cols.append(c)
        if not self.ok:
            return None
        line, col = self.ctx.files[self.file].loaded.position(self.base, prefer_key=False)
        return ReportDef(
            app=self.app, name=name, label=_mp(text(s.get("label") or name)), description=_mp(text(s.get("description"))),
            source=self.source, kind=kind, roles=frozenset(s.get("roles") or ()), fixed=tuple(fixed), params=tuple(params),
            dimensions=tuple(dims), measures=tuple(measures), sort=tuple(sort), limit=s.get("limit"), chart=chart,
            pivot=pivot, funnel=funnel, cohort=cohort, compare=compare, drill_columns=tuple(drill_cols),
            file=self.file, position=(line, col))

    def filters(self, items: list) -> tuple[list, list]:
        fixed, params = [], []
        seen: set[str] = set()
        for i, item in enumerate(items):
            if isinstance(item, str) or isinstance(item, bool):
                e = self.expr(item, ("filters", i))
                if e is not None:
                    fixed.append(FixedFilter(e, str(item)))
                continue
            if not isinstance(item, dict):
                continue
            if "field" not in item:
                self.err(("filters", i), "a filter is an expression (\"in_pool == false\") or {field: ..., param: ...}")
                continue
            ref = self.ref(item["field"], ("filters", i, "field"), purpose="filtered")
            if ref is None:
                continue
            pname = item.get("param") or ref.name.replace(".", "_")
            if pname in RESERVED_PARAMS:
                self.err(("filters", i, "param"), f"'{pname}' is used by the API itself; choose another parameter name")
                continue
            if pname in seen:
                self.err(("filters", i, "param"), f"parameter '{pname}' is defined twice")
                continue
            seen.add(pname)
            kind = "period" if ref.is_temporal else "value"
            op = item.get("op", "eq")
            if kind == "period" and "op" in item:
                self.err(("filters", i, "op"), "a date filter takes a period (last_30_days, 2026-10 ...), not an operator")
            if op not in PARAM_OPS:
                self.err(("filters", i, "op"), f"unknown operator '{op}'; {one_of(PARAM_OPS)}")
            if ref.type in NOT_GROUPABLE:
                self.err(("filters", i, "field"), f"'{ref.name}' ({ref.type}) cannot be filtered in a report")
            default = item.get("default")
            if default is not None and kind == "period":
                try:
                    resolve_period(str(default), dt.date(2026, 1, 15))
                except PeriodError as exc:
                    self.err(("filters", i, "default"), str(exc))
            elif default is not None and ref.options and op == "eq" and str(default) not in ref.options \
                    and not str(default).startswith("current_user."):
                self.err(("filters", i, "default"), f"'{default}' is not an option of '{ref.name}'"
                         f"{suggest(str(default), ref.options) or '; ' + one_of(ref.options)}")
            params.append(Param(pname, ref, kind, op, default, bool(item.get("required")),
                                _mp(text(item.get("label")) or ref.label)))
        return fixed, params

    def dimensions(self, items: list) -> list[Dimension]:
        out = []
        for i, item in enumerate(items):
            spec = {"field": item} if isinstance(item, str) else item
            if not isinstance(spec, dict):
                continue
            where = ("dimensions", i) if isinstance(item, str) else ("dimensions", i, "field")
            ref = self.ref(spec.get("field"), where, purpose="grouped or shown")
            if ref is None:
                continue
            bucket = spec.get("bucket")
            part = None
            if "level" in spec or "part" in spec:
                if ref.type == "cascade" and "level" in spec:
                    levels = len(self._field_spec(ref).get("levels") or []) or 9
                    part = spec["level"]
                    if not isinstance(part, int) or isinstance(part, bool) or not 1 <= part <= levels:
                        self.err(("dimensions", i, "level"), f"level is 1..{levels} for '{ref.name}' (1 = the first level, e.g. province)")
                        continue
                elif ref.type == "address" and "part" in spec:
                    part = spec["part"]
                    if part not in ADDRESS_PARTS:
                        self.err(("dimensions", i, "part"), f"unknown address part '{part}'; {one_of(ADDRESS_PARTS)}")
                        continue
                else:
                    key = "level" if "level" in spec else "part"
                    self.err(("dimensions", i, key), f"'{key}' is for {'cascade' if key == 'level' else 'address'} fields; "
                             f"'{ref.name}' is a {ref.type} field", at_key=True)
                    continue
            elif ref.type in ("cascade", "address"):
                self.err(where, f"'{ref.name}' is a {ref.type}: group it by one level, e.g. "
                         + (f"{{field: {ref.name}, level: 1}}" if ref.type == "cascade" else f"{{field: {ref.name}, part: province}}"))
                continue
            if ref.type in NOT_GROUPABLE and part is None:
                self.err(where, f"'{ref.name}' ({ref.type}) holds several values and cannot be grouped")
                continue
            if bucket is not None:
                if bucket not in BUCKETS:
                    self.err(("dimensions", i, "bucket"), f"unknown bucket '{bucket}'{suggest(bucket, BUCKETS) or '; ' + one_of(BUCKETS)}")
                    continue
                if not ref.is_temporal:
                    self.err(("dimensions", i, "bucket"), f"'{ref.name}' is not a date or datetime field ({ref.type}); buckets are for dates")
                    continue
                if ref.type == "date" and bucket == "hour":
                    self.err(("dimensions", i, "bucket"), f"'{ref.name}' is a date without a time; use day, week, month, quarter or year")
                    continue
            elif ref.type == "datetime":
                self.err(where, f"'{ref.name}' is a date-time: group it by a bucket, e.g. {{field: {ref.name}, bucket: month}}")
                continue
            suffix = bucket or (f"l{part}" if isinstance(part, int) else part)
            name = spec.get("name") or (f"{ref.name}_{suffix}" if suffix else ref.name)
            if any(d.name == name for d in out):
                self.err(where, f"dimension '{name}' appears twice")
                continue
            label = text(spec.get("label")) or ref.label
            if isinstance(part, int) and not spec.get("label"):
                lv = (self._field_spec(ref).get("levels") or [])
                if len(lv) >= part:
                    label = text(lv[part - 1])
            if bucket and not spec.get("label"):
                label = {k: f"{v}（{_BUCKET_LABELS[bucket]['zh']}）" if k == "zh" else f"{v} ({bucket})" for k, v in ref.label.items()}
            out.append(Dimension(name, ref, bucket, _mp(label), part))
        return out

    def measures(self, spec: Any) -> list[Measure]:
        out: list[Measure] = []
        if not isinstance(spec, dict):
            return out
        ratios: list[tuple[str, tuple, tuple]] = []
        formulas: list[tuple[str, str, tuple]] = []
        for name, m in spec.items():
            where = ("measures", name)
            if isinstance(m, str):
                if m != "count":
                    self.err(where, f"unknown measure kind '{m}'{suggest(m, MEASURE_KINDS) or '; ' + one_of(MEASURE_KINDS)}")
                    continue
                out.append(Measure(name, "count", _mp(COUNT_LABEL if name == "count" else {"zh": name, "en": name}), format="integer"))
                continue
            if not isinstance(m, dict):
                continue
            kinds = [k for k in m if k in MEASURE_KINDS]
            if not kinds:
                self.err(where, f"measure '{name}' needs one of: {', '.join(MEASURE_KINDS)}", at_key=True)
                continue
            if len(kinds) > 1:
                self.err(where + (kinds[1],), f"measure '{name}' has two kinds ({kinds[0]}, {kinds[1]}); one per measure", at_key=True)
                continue
            kind, arg = kinds[0], m[kinds[0]]
            label = _mp(text(m.get("label")) or {"zh": name, "en": name})
            fmt = m.get("format")
            if fmt is not None and fmt not in FORMATS:
                self.err(where + ("format",), f"unknown format '{fmt}'; {one_of(FORMATS)}")
            when = self.expr(m.get("when"), where + ("when",)) if m.get("when") is not None else None
            common = dict(label=label, hidden=bool(m.get("hidden")), when=when, when_source=m.get("when"))
            if kind == "count":
                if isinstance(arg, str) and arg not in ("all", "*"):
                    if m.get("when") is not None:
                        self.err(where + ("when",), "write the condition once: {count: \"<condition>\"} or {count: true, when: ...}")
                        continue
                    common["when"] = self.expr(arg, where + ("count",))
                    common["when_source"] = arg
                out.append(Measure(name, "count", format=fmt or "integer", **common))
            elif kind == "count_distinct":
                ref = self.ref(arg, where + (kind,), purpose="counted")
                if ref is not None:
                    out.append(Measure(name, kind, arg=ref, format=fmt or "integer", **common))
            elif kind in ("sum", "avg", "min", "max", "median", "percentile"):
                value = self.value(arg, where + (kind,), kind)
                p = None
                if kind == "percentile":
                    p = m.get("p")
                    if not isinstance(p, (int, float)) or not 0 < float(p) < 1:
                        self.err(where, f"measure '{name}': a percentile needs p between 0 and 1, e.g. p: 0.9", at_key=True)
                        continue
                    p = float(p)
                if value is not None:
                    out.append(Measure(name, kind, arg=value, p=p, format=fmt or "number", **common))
            elif kind == "ratio":
                if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, str) for a in arg)):
                    self.err(where + ("ratio",), "a ratio is [numerator, denominator], two measure names, e.g. [won, leads]")
                    continue
                if when is not None:
                    self.err(where + ("when",), "a ratio takes its conditions from its two measures; remove 'when'")
                    continue
                ratios.append((name, tuple(arg), where))
                out.append(Measure(name, "ratio", ratio=(arg[0], arg[1]), format=fmt or "percent", **common))
            elif kind == "formula":
                if when is not None:
                    self.err(where + ("when",), "a formula takes its conditions from its measures; remove 'when'")
                    continue
                if not isinstance(arg, str):
                    self.err(where + ("formula",), "a formula is an expression over other measures, e.g. \"(promoters - detractors) * 100 / answers\"")
                    continue
                formulas.append((name, arg, where))
                out.append(Measure(name, "formula", format=fmt or "number", **common))
            elif kind == "duration":
                if not (isinstance(arg, list) and len(arg) == 2):
                    self.err(where + ("duration",), "a duration is [start_field, end_field], e.g. [created_at, resolved_at]")
                    continue
                start = self.ref(arg[0], where + ("duration", 0))
                end = self.ref(arg[1], where + ("duration", 1))
                for r, i in ((start, 0), (end, 1)):
                    if r is not None and not r.is_temporal:
                        self.err(where + ("duration", i), f"'{r.name}' is not a date or datetime field ({r.type})")
                        r = None
                unit = m.get("unit", "hours")
                if unit not in DURATION_UNITS:
                    self.err(where + ("unit",), f"unknown unit '{unit}'; {one_of(DURATION_UNITS)}")
                    continue
                agg = m.get("agg", "avg")
                if agg not in AGGREGATES:
                    self.err(where + ("agg",), f"unknown aggregate '{agg}'; {one_of(AGGREGATES)}")
                    continue
                p = m.get("p")
                if agg == "percentile" and (not isinstance(p, (int, float)) or not 0 < float(p) < 1):
                    self.err(where, f"measure '{name}': a percentile needs p between 0 and 1, e.g. p: 0.9", at_key=True)
                    continue
                if start is not None and end is not None and self.ok:
                    out.append(Measure(name, "duration", start=start, end=end, unit=unit, agg=agg,
                                       p=float(p) if p is not None else None,
                                       format=fmt or (unit if unit in ("hours", "days") else "number"), **common))
        names = {m.name for m in out}
        kinds = {m.name: m for m in out}
        deps: dict[str, tuple] = {m.name: m.ratio for m in out if m.kind == "ratio"}
        for name, src, where in formulas:
            used: list[str] = []

            def check(path: tuple, _name=name, _used=used) -> str | None:
                if len(path) != 1 or path[0] not in names or path[0] == _name:
                    known = sorted(n for n in names if n != _name)
                    return (f"'{'.'.join(path)}' is not another measure of this report"
                            f"{suggest('.'.join(path), known) or ('; ' + one_of(known) if known else '')}")
                _used.append(path[0])
                return None
            from engine.expressions import ExpressionError, compile_expression
            try:
                expr = compile_expression(src, check_name=check)
            except ExpressionError as exc:
                self.ok = False
                self.ctx.error_in_expression(self.file, self.base + where + ("formula",), exc)
                continue
            i = next(i for i, m in enumerate(out) if m.name == name)
            out[i] = replace(out[i], formula=expr)
            kinds[name] = out[i]
            deps[name] = tuple(used)
        for name, (a, b), where in ratios:
            for i, operand in enumerate((a, b)):
                if operand not in names:
                    known = [n for n in names if n != name]
                    self.err(where + ("ratio", i), f"unknown measure '{operand}'{suggest(operand, known) or '; ' + one_of(known)}")
                elif operand == name:
                    self.err(where + ("ratio", i), "a ratio cannot use itself")
        # cycles between ratios and formulas (a direct self-reference is reported above)
        for name, _, where in ratios + formulas:
            if name not in deps or name in deps[name]:
                continue
            stack, seen = list(deps[name]), set()
            while stack:
                cur = stack.pop()
                if cur == name:
                    self.err(where, f"measure '{name}' depends on itself through other measures", at_key=True)
                    break
                if cur in seen:
                    continue
                seen.add(cur)
                stack.extend(deps.get(cur, ()))
        return out

    def _field_spec(self, ref: FieldRef) -> dict:
        fd = self.fields.forms.get(ref.form)
        f = fd.fields.get(ref.field) if fd is not None else None
        return dict(f.spec) if f is not None else {}

    def value(self, arg: Any, where: tuple, kind: str):
        """A field (FieldRef) or an expression to aggregate."""
        if isinstance(arg, str) and PATH_RE.match(arg) and arg not in ("true", "false", "null", "None"):
            ref = self.ref(arg, where, purpose="aggregated")
            if ref is None:
                return None
            numeric_only = kind in ("sum", "avg", "median", "percentile")
            if (numeric_only and ref.type in NOT_NUMERIC) or ref.type in NOT_GROUPABLE:
                self.err(where, f"'{ref.name}' is a {ref.type} field; {kind} needs a number field")
                return None
            return ref
        if isinstance(arg, (int, float)) and not isinstance(arg, bool):
            arg = str(arg)
        if not isinstance(arg, str):
            self.err(where, f"{kind} needs a field name or an expression")
            return None
        return self.expr(arg, where)

    def sort(self, items: list, names: list[str], kind: str) -> list[tuple[str, bool]]:
        out = []
        for i, s in enumerate(items):
            if not isinstance(s, str):
                continue
            name = s[1:] if s.startswith("-") else s
            if name not in names:
                self.err(("sort", i), f"cannot sort by '{name}': not a dimension or measure of this report"
                         f"{suggest(name, names) or ('; ' + one_of(names) if names else '')}")
                continue
            out.append((name, s.startswith("-")))
        if out and kind in ("funnel", "cohort", "kpi"):
            self.err(("sort",), f"a {kind} report has its own order; remove 'sort'", at_key=True)
        return out

    def pivot(self, spec: dict, dims: list[Dimension], measures: list[Measure]) -> Pivot | None:
        names = [d.name for d in dims]
        if len(dims) < 2:
            self.err(("dimensions",), "a pivot report needs at least two dimensions (rows and columns)", at_key=True)
            return None
        rows = spec.get("rows") or names[:-1]
        rows = [rows] if isinstance(rows, str) else rows
        cols = spec.get("columns") or names[-1]
        for i, r in enumerate(rows):
            if r not in names:
                self.err(("pivot", "rows", i), f"unknown dimension '{r}'{suggest(r, names) or '; ' + one_of(names)}")
        if cols not in names:
            self.err(("pivot", "columns"), f"unknown dimension '{cols}'{suggest(cols, names) or '; ' + one_of(names)}")
        if cols in rows:
            self.err(("pivot", "columns"), f"'{cols}' is already a row dimension")
        if set(rows) | {cols} != set(names):
            self.err(("pivot",), "every dimension must be a pivot row or the pivot column", at_key=True)
        mnames = [m.name for m in measures if not m.hidden]
        ms = spec.get("measures") or mnames
        for i, mn in enumerate(ms):
            if mn not in [m.name for m in measures]:
                self.err(("pivot", "measures", i), f"unknown measure '{mn}'{suggest(mn, mnames) or '; ' + one_of(mnames)}")
        return Pivot(tuple(rows), cols, tuple(ms), bool(spec.get("totals", True)))

    def funnel(self, spec: dict) -> Funnel | None:
        fname = spec.get("field", "state")
        ref = self.ref(fname, ("funnel", "field") if "field" in spec else ("kind",), purpose="grouped or shown")
        if ref is None:
            return None
        known = dict(ref.options)
        stages = spec.get("stages")
        if stages is None:
            if not known:
                self.err(("funnel",), f"list the stages: funnel: {{field: {fname}, stages: [...]}} "
                         f"('{fname}' has no options or workflow states to take them from)", at_key=True)
                return None
            stages = list(known)
            finals = self.fields.finals.get(ref.form, []) if ref.field == "state" else []
            # the workflow's happy path: its states in order up to the first final state (won, closed...)
            first_final = next((i for i, st in enumerate(stages) if st in finals), None)
            if first_final is not None:
                stages = stages[:first_final + 1]
        for i, st in enumerate(stages):
            if known and str(st) not in known:
                self.err(("funnel", "stages", i), f"'{st}' is not a state/option of '{fname}'{suggest(str(st), known) or '; ' + one_of(known)}")
        labels = {str(st): known.get(str(st)) or {"zh": str(st), "en": str(st)} for st in stages}
        return Funnel(ref, tuple(str(s) for s in stages), _mp(labels), bool(spec.get("cumulative", True)))

    def cohort(self, spec: dict) -> Cohort | None:
        date = self.ref(spec.get("date"), ("cohort", "date"))
        if date is not None and not date.is_temporal:
            self.err(("cohort", "date"), f"'{date.name}' is not a date or datetime field ({date.type})")
            date = None
        bucket = spec.get("bucket", "month")
        if bucket not in ("day", "week", "month", "quarter", "year"):
            self.err(("cohort", "bucket"), f"unknown bucket '{bucket}'; expected one of: day, week, month, quarter, year")
        member = None
        if spec.get("member"):
            member = self.ref(spec["member"], ("cohort", "member"), purpose="counted")
            if member is not None and (member.type != "link" or "." in member.name):
                self.err(("cohort", "member"), f"'{member.name}' must be a link field of '{self.source}' (e.g. customer)")
                member = None
        ev = spec.get("events") or {}
        eform = ev.get("form")
        forms = self.fields.forms
        if eform not in forms:
            self.err(("cohort", "events", "form"), f"unknown form '{eform}'{suggest(str(eform), forms) or '; ' + one_of(forms)}")
            return None
        link = self.ref(ev.get("link"), ("cohort", "events", "link"), form=eform, purpose="counted")
        want = member.target if member is not None else self.source
        if link is not None:
            if link.type != "link" or "." in link.name:
                self.err(("cohort", "events", "link"), f"'{link.name}' must be a link field of '{eform}'")
            elif link.target != want:
                self.err(("cohort", "events", "link"), f"'{eform}.{link.name}' points at '{link.target}', but the cohort counts "
                         f"'{want}' records" + ("" if member else f"; set cohort.member to the link of '{self.source}' that points at '{link.target}'"))
        edate = None
        if ev.get("date"):
            r = self.ref(ev["date"], ("cohort", "events", "date"), form=eform)
            if r is not None and not r.is_temporal:
                self.err(("cohort", "events", "date"), f"'{r.name}' is not a date or datetime field")
            elif r is not None:
                if "." in r.name:
                    self.err(("cohort", "events", "date"), "the events date must be a field of the events form")
                edate = r.field
        within = None
        if ev.get("within") is not None:
            within = parse_days(ev["within"])
            if within is None:
                self.err(("cohort", "events", "within"), f"'{ev['within']}' is not a window: write days or weeks, e.g. 180d or 26w")
            elif edate is None:
                self.err(("cohort", "events", "within"), "a window needs the events' date: events: {date: created_at, within: 180d}")
        when = self.expr(ev.get("when"), ("cohort", "events", "when"), form=eform) if ev.get("when") is not None else None
        thresholds = spec.get("thresholds") or [1]
        if any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in thresholds) or list(thresholds) != sorted(set(thresholds)):
            self.err(("cohort", "thresholds"), "thresholds are increasing whole numbers ≥ 1, e.g. [1, 2]")
        if date is None or link is None or not self.ok:
            return None
        return Cohort(date, bucket, member, eform, link.field, edate, when, within, tuple(thresholds),
                      _mp(text(spec.get("label")) or {"zh": "批次", "en": "Cohort"}))

    def chart(self, spec: Any, where: tuple, dims, measures, kind: str, *, report: str | None = None) -> Chart | None:
        if not isinstance(spec, dict):
            return None
        ckind = spec.get("kind")
        cls = CHARTS.get(ckind)
        if cls is None:
            self.err(where + ("kind",), f"unknown chart kind '{ckind}'{suggest(str(ckind), CHARTS) or '; ' + one_of(CHARTS)}")
            return None
        dnames = [d.name for d in dims]
        mnames = [m.name for m in measures]
        x = spec.get("x")
        if x is not None and x not in dnames and kind not in ("funnel", "cohort"):
            self.err(where + ("x",), f"'{x}' is not a dimension of this report{suggest(x, dnames) or ('; ' + one_of(dnames) if dnames else '')}")
        y = spec.get("y")
        ys = [y] if isinstance(y, str) else list(y or [])
        for i, yn in enumerate(ys):
            if yn not in mnames and kind not in ("funnel", "cohort", "kpi"):
                self.err(where + (("y", i) if isinstance(y, list) else ("y",)),
                         f"'{yn}' is not a measure of this report{suggest(yn, mnames) or ('; ' + one_of(mnames) if mnames else '')}")
        series = spec.get("series")
        if series is not None and series not in dnames:
            self.err(where + ("series",), f"'{series}' is not a dimension of this report{suggest(series, dnames)}")
        if series is not None and series == x:
            self.err(where + ("series",), "the series dimension must differ from x")
        if spec.get("better") is not None and ckind != "kpi":
            self.err(where + ("better",), f"'better' colours a KPI card's change; a {ckind} chart has none -- "
                     "remove it or use kind: kpi", at_key=True)
        chart = Chart(kind=ckind, x=x, y=tuple(ys), series=series, stack=bool(spec.get("stack", False)),
                      horizontal=bool(spec.get("horizontal", False)), max=spec.get("max"),
                      better=spec.get("better") or "higher",
                      title=_mp(text(spec.get("title"))) if spec.get("title") else None,
                      echarts=MappingProxyType(dict(spec.get("echarts") or {})))
        for sub, msg in cls.check(chart, kind, dims, measures):
            self.err(where + tuple(sub), msg, at_key=not sub)
        return chart


_BUCKET_LABELS = {"day": {"zh": "日"}, "week": {"zh": "周"}, "month": {"zh": "月"}, "quarter": {"zh": "季度"},
                  "year": {"zh": "年"}, "hour": {"zh": "小时"}, "weekday": {"zh": "星期"}}


# ---------------------------------------------------------------------------

def compile_reports(ctx: CompileContext) -> None:
    forms = dict(ctx.out.get("forms") or {})
    fields = _Fields(forms, *workflow_states(ctx))
    app = ctx.app_data.get("name") or "app"
    roles = set(ctx.app_data.get("roles") or {})
    reports: dict[str, Any] = {}
    compilers: dict[str, _ReportCompiler] = {}
    boards_raw: list[tuple[str, tuple, dict]] = []
    seen_at: dict[str, str] = {}
    for src in ctx.yaml_files("reports"):
        data = src.data
        if not isinstance(data, dict):
            continue
        for i, spec in enumerate(data.get("reports") or []):
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                continue
            name = spec["name"]
            if name in seen_at:
                ctx.error(src.path, ("reports", i, "name"), f"report '{name}' is already defined in {seen_at[name]}")
                continue
            seen_at[name] = src.path
            rc = _ReportCompiler(ctx, src.path, ("reports", i), spec, fields, app, roles)
            compilers[name] = rc
            try:
                rd = rc.compile()
            except Exception as exc:  # noqa: BLE001 - a bug here must not hide the other problems
                ctx.error(src.path, ("reports", i), f"report '{name}': cannot compile ({type(exc).__name__}: {exc})")
                rd = None
            # an erroneous report still has a name: menus referring to it are not "unknown"
            reports[name] = rd
        for i, spec in enumerate(data.get("dashboards") or []):
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                boards_raw.append((src.path, ("dashboards", i), spec))
    dashboards: dict[str, Any] = {}
    for file, base, spec in boards_raw:
        name = spec["name"]
        if name in dashboards:
            ctx.error(file, base + ("name",), f"dashboard '{name}' is defined twice")
            continue
        dashboards[name] = _compile_dashboard(ctx, file, base, spec, reports, compilers, app, roles)
    ctx.out["reports"] = reports
    ctx.out["dashboards"] = dashboards


def _compile_dashboard(ctx, file, base, spec, reports, compilers, app, roles) -> DashboardDef | None:
    name = spec["name"]
    ok = True

    def err(path, msg, at_key=False):
        nonlocal ok
        ok = False
        _error_once(ctx, file, base + tuple(path), f"dashboard '{name}': {msg}", at_key)

    for i, role in enumerate(spec.get("roles") or []):
        if role not in roles:
            err(("roles", i), f"unknown role '{role}'{suggest(role, roles) or '; ' + one_of(roles)}")
    widgets = []
    for i, w in enumerate(spec.get("widgets") or []):
        if not isinstance(w, dict):
            continue
        rname = w.get("report")
        if rname not in reports:
            err(("widgets", i, "report"), f"unknown report '{rname}'{suggest(str(rname), reports) or '; ' + one_of(reports)}")
            continue
        rd = reports[rname]
        chart = None
        if w.get("chart") is not None and rd is not None:
            rc = compilers[rname]
            saved = (rc.file, rc.base, rc.ok)
            rc.file, rc.base, rc.ok = file, base + ("widgets", i), True
            chart = rc.chart(w["chart"], ("chart",), list(rd.dimensions), list(rd.measures), rd.kind)
            if not rc.ok:
                ok = False
            rc.file, rc.base, rc.ok = saved
        widgets.append(Widget(rname, int(w.get("width", 6)), int(w.get("height", 1)),
                              _mp(text(w.get("title"))) if w.get("title") else None, chart))
    filters = []
    for i, f in enumerate(spec.get("filters") or []):
        if not isinstance(f, dict):
            continue
        pname = f.get("param")
        params = [rd.param(pname) for rd in (reports.get(w.report) for w in widgets) if rd is not None]
        params = [p for p in params if p is not None]
        if not params and all(reports.get(w.report) is not None for w in widgets):
            names = sorted({p.name for w in widgets if reports.get(w.report) for p in reports[w.report].params})
            err(("filters", i, "param"), f"no widget's report has a parameter '{pname}'{suggest(str(pname), names) or ('; ' + one_of(names) if names else '')}")
            continue
        default = f.get("default")
        if default is not None and params and params[0].kind == "period":
            try:
                resolve_period(str(default), dt.date(2026, 1, 15))
            except PeriodError as exc:
                err(("filters", i, "default"), str(exc))
        filters.append((pname, default))
    refresh = parse_seconds(spec.get("refresh")) if spec.get("refresh") else None
    if not ok:
        return None
    return DashboardDef(app, name, _mp(text(spec.get("label") or name)), frozenset(spec.get("roles") or ()),
                        tuple(filters), refresh, tuple(widgets), file)


register_step("reports", 40, compile_reports)
