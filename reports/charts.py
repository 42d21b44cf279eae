"""Apache ECharts options from report results: a registry of small classes.

Each chart kind checks, at definition time, that the report gives it what it
needs (``check``) and turns a :class:`Result` into an ECharts option
(``option``).  Labels come from the definitions (zh/en), never from raw
values, and every clickable data item carries the raw dimension value
(``loomRaw`` for ``{name}``, ``id`` for ``{id}``) so the front-end's
``data-drill`` template (``option['loom']['drill']``) opens exactly the
records behind it.

Kinds: bar, stacked_bar, line, area, pie, donut, funnel, kpi, gauge, table,
pivot, heatmap, map (China provinces; the front-end registers map 'china').
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .model import EMPTY_LABEL, Chart, Dimension, Measure

CHARTS: dict[str, type["ChartKind"]] = {}


def register_chart(cls: type["ChartKind"]) -> type["ChartKind"]:
    CHARTS[cls.name] = cls
    return cls


@dataclass
class Column:
    name: str
    label: str
    kind: str                   # 'dimension' | 'measure'
    type: str = "text"          # field type for dimensions
    format: str = "number"      # for measures

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "kind": self.kind, "type": self.type, "format": self.format}


@dataclass
class Result:
    """What a report run produces; JSON-ready with :meth:`as_dict`."""

    columns: list[Column]
    rows: list[list]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)   # column -> raw value (as str) -> label
    meta: dict = field(default_factory=dict)

    def col(self, name: str) -> int:
        for i, c in enumerate(self.columns):
            if c.name == name:
                return i
        raise KeyError(name)

    def dims(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "dimension"]

    def measures(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "measure"]

    def label(self, column: str, value: Any, lang: str) -> str:
        if value is None:
            return EMPTY_LABEL[lang]
        return self.labels.get(column, {}).get(str(value), str(value))

    def as_dict(self) -> dict:
        out = {"columns": [c.as_dict() for c in self.columns], "rows": self.rows, "labels": self.labels}
        out.update(self.meta)
        return out


def format_value(value: Any, fmt: str, lang: str) -> str:
    if value is None:
        return "—"
    if fmt == "percent":
        return f"{value * 100:.1f}%"
    if fmt == "integer":
        return f"{int(round(value)):,}"
    if fmt == "currency":
        return f"¥{value:,.2f}"
    if fmt == "hours":
        return f"{value:,.1f} {'小时' if lang == 'zh' else 'h'}"
    if fmt == "days":
        return f"{value:,.1f} {'天' if lang == 'zh' else 'd'}"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _merge(base: dict, extra: Any) -> dict:
    for k, v in dict(extra or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _plain(v: Any) -> Any:
    if isinstance(v, dict) or hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass
class ChartInput:
    chart: Chart
    result: Result
    lang: str
    report_kind: str
    title: str | None = None


class ChartKind:
    """One chart kind. Subclasses set ``name`` and implement ``build``."""

    name = ""
    needs_dimensions = 1        # minimum number of dimensions (table-like kinds: 0)
    max_dimensions = 2
    report_kinds: tuple[str, ...] = ("table", "pivot", "funnel", "cohort")

    @classmethod
    def check(cls, chart: Chart, report_kind: str, dims: list[Dimension], measures: list[Measure]) -> list[tuple[tuple, str]]:
        problems: list[tuple[tuple, str]] = []
        if report_kind not in cls.report_kinds:
            problems.append((("kind",), f"a {cls.name} chart does not fit a {report_kind} report; "
                                        f"it shows {', '.join(cls.report_kinds)} reports"))
            return problems
        if report_kind in ("table", "pivot"):
            if len(dims) < cls.needs_dimensions:
                problems.append(((), f"a {cls.name} chart needs {cls.needs_dimensions} dimension(s); the report has {len(dims)}"))
            elif cls.max_dimensions is not None and len(dims) > cls.max_dimensions and chart.series is None and chart.x is None:
                problems.append(((), f"a {cls.name} chart shows at most {cls.max_dimensions} dimensions; "
                                     f"choose x (and series) or remove dimensions"))
        return problems

    def option(self, inp: ChartInput) -> dict:
        opt = self.build(inp)
        if inp.chart.title or inp.title:
            opt.setdefault("title", {"text": inp.title or (inp.chart.title or {}).get(inp.lang, ""), "left": "center", "textStyle": {"fontSize": 14}})
        return _merge(opt, _plain(inp.chart.echarts))

    def build(self, inp: ChartInput) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def drill_keys(self, inp: ChartInput) -> dict[str, str]:
        """Template placeholder -> drill parameter, e.g. {'name': 'state', 'id': 'measure'}."""
        x, series, _ = self._axes(inp)
        keys = {}
        if x is not None:
            keys["name"] = x
        if series is not None:
            keys["id"] = series
        elif len(self._ys(inp)) > 1:
            keys["id"] = "measure"
        return keys

    # -- helpers for category charts ------------------------------------
    @staticmethod
    def _axes(inp: ChartInput) -> tuple[str | None, str | None, list[Column]]:
        res = inp.result
        dims = res.dims()
        x = inp.chart.x or (dims[0].name if dims else None)
        series = inp.chart.series
        return x, series, dims

    @staticmethod
    def _ys(inp: ChartInput) -> list[Column]:
        res = inp.result
        ms = res.measures()
        if inp.chart.y:
            by = {c.name: c for c in ms}
            return [by[y] for y in inp.chart.y if y in by]
        if inp.report_kind == "funnel":
            return [c for c in ms if c.name == "count"] or ms[:1]
        if inp.report_kind == "cohort":
            return [c for c in ms if c.name.startswith("rate_")] or ms[:1]
        return ms[:1] if inp.chart.series else ms


def _num(v: Any, fmt: str) -> Any:
    if v is None:
        return None
    if fmt == "percent":
        return round(v * 100, 2)
    return round(v, 4) if isinstance(v, float) else v


class _Category(ChartKind):
    """bar / line / area: x = a dimension, one series per measure or per value of a second dimension."""

    series_type = "bar"
    area = False
    stacked = False

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        x, series, _ = self._axes(inp)
        ys = self._ys(inp)
        xi = res.col(x)
        cats: list = []
        seen: set = set()
        for r in res.rows:
            key = r[xi]
            if key not in seen:
                seen.add(key)
                cats.append(key)
        stack = "total" if (inp.chart.stack or self.stacked) else None
        out_series = []
        percent_axis = any(c.format == "percent" for c in ys) and not all(c.format == "percent" for c in ys)
        if series is not None:
            si, yc = res.col(series), ys[0]
            yi = res.col(yc.name)
            svals: list = []
            cells: dict = {}
            for r in res.rows:
                if r[si] not in svals:
                    svals.append(r[si])
                cells[(r[xi], r[si])] = r[yi]
            for sv in svals:
                out_series.append(self._series(res.label(series, sv, lang), [
                    {"value": _num(cells.get((c, sv)), yc.format), "loomRaw": _raw(c), "id": _raw(sv)} for c in cats], stack, yc, False))
        else:
            for yc in ys:
                yi = res.col(yc.name)
                values = {r[xi]: r[yi] for r in res.rows}
                out_series.append(self._series(yc.label, [
                    {"value": _num(values.get(c), yc.format), "loomRaw": _raw(c), "id": yc.name} for c in cats],
                    stack, yc, percent_axis and yc.format == "percent"))
        cat_axis = {"type": "category", "data": [res.label(x, c, lang) for c in cats],
                    "axisLabel": {"interval": 0 if len(cats) <= 12 else "auto", "hideOverlap": True}}
        val_axes: list[dict] = [{"type": "value"}]
        if ys and all(c.format == "percent" for c in ys):
            val_axes[0]["axisLabel"] = {"formatter": "{value}%"}
        if percent_axis:
            val_axes.append({"type": "value", "axisLabel": {"formatter": "{value}%"}, "splitLine": {"show": False}})
        horizontal = inp.chart.horizontal
        opt = {
            "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow" if self.series_type == "bar" else "line"}},
            "legend": {"type": "scroll", "bottom": 0},
            "grid": {"left": 8, "right": 16, "top": 40 if (inp.chart.title or inp.title) else 16, "bottom": 36, "containLabel": True},
            "xAxis": val_axes if horizontal else cat_axis,
            "yAxis": ([dict(cat_axis, inverse=True)] if horizontal else val_axes),
            "series": out_series,
        }
        if horizontal:
            opt["xAxis"] = val_axes[0] if len(val_axes) == 1 else val_axes
            opt["yAxis"] = dict(cat_axis, inverse=True)
        elif len(val_axes) == 1:
            opt["yAxis"] = val_axes[0]
        if self.series_type == "line":
            opt["xAxis" if not horizontal else "yAxis"]["boundaryGap"] = False
        return opt

    def _series(self, name: str, data: list, stack: str | None, col: Column, second_axis: bool) -> dict:
        s: dict[str, Any] = {"name": name, "type": self.series_type, "data": data}
        if stack:
            s["stack"] = stack
        if self.area:
            s["areaStyle"] = {}
        if self.series_type == "line":
            s["smooth"] = False
            s["showSymbol"] = len(data) <= 40
        if second_axis:
            s["yAxisIndex"] = 1
        if self.series_type == "bar" and stack:
            s["emphasis"] = {"focus": "series"}
        return s


def _raw(v: Any) -> Any:
    return "" if v is None else v


@register_chart
class Bar(_Category):
    name = "bar"


@register_chart
class StackedBar(_Category):
    name = "stacked_bar"
    stacked = True

    @classmethod
    def check(cls, chart, report_kind, dims, measures):
        problems = super().check(chart, report_kind, dims, measures)
        if not problems and chart.series is None and len([m for m in measures if not m.hidden]) < 2 and len(dims) < 2:
            problems.append(((), "a stacked bar needs a series dimension (series: ...) or several measures"))
        return problems


@register_chart
class Line(_Category):
    name = "line"
    series_type = "line"


@register_chart
class Area(_Category):
    name = "area"
    series_type = "line"
    area = True


@register_chart
class Pie(ChartKind):
    name = "pie"
    max_dimensions = 1
    radius: Any = "65%"
    report_kinds = ("table", "funnel", "cohort")

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        x, _, _ = self._axes(inp)
        yc = self._ys(inp)[0]
        xi, yi = res.col(x), res.col(yc.name)
        data = [{"name": res.label(x, r[xi], lang), "value": _num(r[yi], yc.format), "loomRaw": _raw(r[xi])} for r in res.rows]
        return {"tooltip": {"trigger": "item", "formatter": "{b}: {c} ({d}%)"},
                "legend": {"type": "scroll", "bottom": 0},
                "series": [{"name": yc.label, "type": "pie", "radius": self.radius, "center": ["50%", "45%"],
                            "data": data, "label": {"formatter": "{b}\n{d}%"}}]}

    def drill_keys(self, inp):
        x, _, _ = self._axes(inp)
        return {"name": x} if x else {}


@register_chart
class Donut(Pie):
    name = "donut"
    radius = ["42%", "68%"]


@register_chart
class FunnelChart(ChartKind):
    name = "funnel"
    max_dimensions = 1
    report_kinds = ("table", "funnel")

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        x, _, _ = self._axes(inp)
        yc = self._ys(inp)[0]
        xi, yi = res.col(x), res.col(yc.name)
        rows = res.rows if inp.report_kind == "funnel" else sorted(res.rows, key=lambda r: -(r[yi] or 0))
        data = [{"name": res.label(x, r[xi], lang), "value": _num(r[yi], yc.format), "loomRaw": _raw(r[xi])} for r in rows]
        top = max([d["value"] or 0 for d in data] or [0])
        return {"tooltip": {"trigger": "item", "formatter": "{b}: {c}"},
                "legend": {"type": "scroll", "bottom": 0},
                "series": [{"name": yc.label, "type": "funnel", "sort": "none", "left": "10%", "width": "80%",
                            "min": 0, "max": top or 1, "gap": 2, "label": {"show": True, "position": "inside", "formatter": "{b}: {c}"},
                            "data": data}]}

    def drill_keys(self, inp):
        x, _, _ = self._axes(inp)
        return {"name": x} if x else {}


@register_chart
class Kpi(ChartKind):
    """A number card: the value, and the change against the previous period when the report compares."""

    name = "kpi"
    needs_dimensions = 0
    max_dimensions = 0
    report_kinds = ("kpi", "table")

    def _values(self, inp: ChartInput) -> tuple[Column, Any, Any, Any]:
        res = inp.result
        if inp.report_kind == "kpi":
            wanted = inp.chart.y[0] if inp.chart.y else None
            row = next((r for r in res.rows if wanted is None or r[0] == wanted), res.rows[0] if res.rows else None)
            meta = res.meta.get("measures", {})
            name = row[0] if row else (wanted or "")
            info = meta.get(name, {})
            col = Column(name, info.get("label", name), "measure", format=info.get("format", "number"))
            return col, row[1] if row else None, row[2] if row else None, row[3] if row else None
        yc = self._ys(inp)[0]
        yi = res.col(yc.name)
        return yc, (res.rows[0][yi] if res.rows else None), None, None

    def build(self, inp: ChartInput) -> dict:
        col, value, prev, change = self._values(inp)
        lang = inp.lang
        sub = col.label
        color = "#646a73"
        better = inp.chart.better
        if change is not None:
            arrow = "▲" if change > 0 else ("▼" if change < 0 else "■")
            good = change > 0 if better == "higher" else change < 0
            color = "#646a73" if not change else ("#14a38b" if good else "#e5483f")
            sub += f"  {arrow} {abs(change) * 100:.1f}% " + ("较上期" if lang == "zh" else "vs previous period")
        elif prev is not None:
            sub += "  " + ("上期 " if lang == "zh" else "previous ") + format_value(prev, col.format, lang)
        return {"title": {"text": format_value(value, col.format, lang), "subtext": sub, "left": "center", "top": "middle",
                          "textStyle": {"fontSize": 36, "fontWeight": "bold"}, "subtextStyle": {"fontSize": 14, "color": color}},
                "series": [],
                "loom": {"kpi": {"measure": col.name, "label": col.label, "value": value, "previous": prev,
                                 "change": change, "better": better, "format": col.format,
                                 "text": format_value(value, col.format, lang)}}}

    def drill_keys(self, inp):
        return {}


@register_chart
class Gauge(Kpi):
    name = "gauge"

    def build(self, inp: ChartInput) -> dict:
        col, value, _, _ = self._values(inp)
        percent = col.format == "percent"
        v = _num(value, col.format) if value is not None else 0
        top = inp.chart.max if inp.chart.max is not None else (100 if percent else max(1, (v or 0) * 1.25))
        if percent and inp.chart.max is not None and inp.chart.max <= 1:
            top = inp.chart.max * 100
        # the value as the measure's format writes it (3.87, 23.4%), not the raw number (3.8747)
        shown = format_value(value, col.format, inp.lang) if value is not None else "—"
        return {"tooltip": {"formatter": f"{{b}}: {shown}"},
                "series": [{"type": "gauge", "min": 0, "max": top, "progress": {"show": True, "width": 14},
                            "axisLine": {"lineStyle": {"width": 14}}, "pointer": {"show": False},
                            "detail": {"formatter": shown, "fontSize": 28, "offsetCenter": [0, "10%"]},
                            "title": {"offsetCenter": [0, "45%"]},
                            "data": [{"value": v, "name": col.label}]}]}


@register_chart
class Table(ChartKind):
    """Not drawn by ECharts: the front-end renders ``option['loom']['table']`` as an HTML table."""

    name = "table"
    needs_dimensions = 0
    max_dimensions = None
    report_kinds = ("table", "pivot", "funnel", "cohort", "kpi")

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        table = inp.result.meta.get("table") or {"columns": [c.as_dict() for c in res.columns], "rows": res.rows}
        display = []
        for r in table["rows"]:
            out = []
            for c, v in zip(table["columns"], r):
                if c["kind"] == "dimension":
                    out.append(res.label(c["name"], v, lang))
                else:
                    out.append(format_value(v, c.get("format", "number"), lang))
            display.append(out)
        return {"series": [], "loom": {"render": "table", "table": {"columns": table["columns"], "rows": table["rows"], "display": display}}}

    def drill_keys(self, inp):
        return {}


@register_chart
class PivotTable(Table):
    name = "pivot"
    report_kinds = ("pivot",)
    needs_dimensions = 2


@register_chart
class Heatmap(ChartKind):
    name = "heatmap"
    needs_dimensions = 2
    report_kinds = ("table", "pivot")

    def _xy(self, inp: ChartInput) -> tuple[str, str]:
        dims = inp.result.dims()
        x = inp.chart.x or dims[0].name
        y = inp.chart.series or next(d.name for d in dims if d.name != x)
        return x, y

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        x, y = self._xy(inp)
        yc = self._ys(inp)[0] if not inp.chart.series else (
            next((c for c in res.measures() if c.name in inp.chart.y), None) or res.measures()[0])
        xi, yi, vi = res.col(x), res.col(y), res.col(yc.name)
        xs: list = []
        ys: list = []
        for r in res.rows:
            if r[xi] not in xs:
                xs.append(r[xi])
            if r[yi] not in ys:
                ys.append(r[yi])
        data = [{"value": [xs.index(r[xi]), ys.index(r[yi]), _num(r[vi], yc.format)], "loomRaw": _raw(r[xi]), "id": _raw(r[yi])}
                for r in res.rows]
        vals = [d["value"][2] for d in data if d["value"][2] is not None]
        return {"tooltip": {"position": "top"},
                "grid": {"left": 8, "right": 16, "top": 16, "bottom": 60, "containLabel": True},
                "xAxis": {"type": "category", "data": [res.label(x, v, lang) for v in xs], "splitArea": {"show": True}},
                "yAxis": {"type": "category", "data": [res.label(y, v, lang) for v in ys], "splitArea": {"show": True}},
                "visualMap": {"min": min(vals) if vals else 0, "max": max(vals) if vals else 1, "calculable": True,
                              "orient": "horizontal", "left": "center", "bottom": 0},
                "series": [{"name": yc.label, "type": "heatmap", "data": data, "label": {"show": len(data) <= 150}}]}

    def drill_keys(self, inp):
        x, y = self._xy(inp)
        return {"name": x, "id": y}


@register_chart
class Map(ChartKind):
    """China by province; data names are province names (either '广东省' or '广东'), the front-end maps them."""

    name = "map"
    max_dimensions = 1
    report_kinds = ("table",)

    def build(self, inp: ChartInput) -> dict:
        res, lang = inp.result, inp.lang
        x, _, _ = self._axes(inp)
        yc = self._ys(inp)[0]
        xi, yi = res.col(x), res.col(yc.name)
        data = [{"name": res.label(x, r[xi], lang), "value": _num(r[yi], yc.format), "loomRaw": _raw(r[xi])}
                for r in res.rows if r[xi] is not None]
        vals = [d["value"] for d in data if d["value"] is not None]
        return {"tooltip": {"trigger": "item", "formatter": "{b}: {c}"},
                "visualMap": {"min": min(vals) if vals else 0, "max": max(vals) if vals else 1, "left": "left", "bottom": 0,
                              "calculable": True, "text": ["高", "低"] if lang == "zh" else ["High", "Low"]},
                "series": [{"name": yc.label, "type": "map", "map": "china", "roam": False,
                            "emphasis": {"label": {"show": True}}, "data": data}]}

    def drill_keys(self, inp):
        x, _, _ = self._axes(inp)
        return {"name": x} if x else {}


def chart_kinds() -> Iterable[str]:
    return sorted(CHARTS)
