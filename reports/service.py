"""The report service (``runtime.services['reports']``).

* ``run(uow, report, params)``   -> ``{"columns": [...], "rows": [[...]], "labels": {...}, ...}``
* ``chart(uow, report, params)`` -> an Apache ECharts option (``option['loom']['drill']`` is the
  drill URL template for the front-end's ``data-drill``)
* ``dashboard(uow, name, params)`` -> the widgets with their options
* ``drill(uow, report, params)`` -> the records behind one bar / slice / cell
* ``export(uow, report, params, 'csv'|'xlsx')`` -> (file name, media type, byte chunks)

Permissions: the report's ``roles`` (admins always pass), then the source
form's read permission and row filters (``Records.readable``) inside the
query, field-level hiding (a report using a field hidden from the user is
refused), and for exports the ``export`` permission (a role permission, or the
form's ``export`` action).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping
from urllib.parse import quote, urlencode

from sqlalchemy import and_, func, select

from engine.errors import Forbidden, NotFound, RecordInvalid

from .charts import CHARTS, ChartInput, Column, Result
from .model import Chart, DashboardDef, Dimension, ReportDef
from .periods import previous
from .query import Builder, ReportError, _t, plain, weekday_label
from .sqlfuncs import bucket

MAX_GROUPS = 5000          # rows a report returns to a page or chart (more: 'truncated': true)
EXPORT_MAX = 1_000_000     # rows an export may write
ADDITIVE = ("count", "count_distinct", "sum")


class ReportService:
    def __init__(self, runtime: Any):
        self.rt = runtime

    # -- definitions and access ----------------------------------------------------
    def definition(self, app, name: str) -> ReportDef:
        rd = (app.section("reports") or {}).get(name)
        if rd is None:
            raise NotFound(f"no report '{name}' in app '{app.name}'")
        return rd

    def dashboard_def(self, app, name: str) -> DashboardDef:
        db = (app.section("dashboards") or {}).get(name)
        if db is None:
            raise NotFound(f"no dashboard '{name}' in app '{app.name}'")
        return db

    @staticmethod
    def _role_ok(uow, roles: frozenset) -> bool:
        user = uow.user
        return not roles or user.is_system or "admin" in user.roles or bool(roles & set(user.roles))

    def allowed(self, uow, rd: ReportDef) -> bool:
        return self._role_ok(uow, rd.roles)

    def _check(self, uow, rd: ReportDef) -> None:
        if not self.allowed(uow, rd):
            raise Forbidden(_t(uow.lang, f"您无权查看报表“{rd.label.get('zh')}”", f"you may not view the report '{rd.label.get('en') or rd.name}'"))

    def can_export(self, uow, rd: ReportDef) -> bool:
        user = uow.user
        if user.is_system or "admin" in user.roles:
            return True
        if any("export" in uow.app.roles[r].permissions for r in user.roles if r in uow.app.roles):
            return True
        from forms.access import grant
        form = uow.service("records").form(uow.app, rd.source)
        return grant(form, user, "export").allowed

    def catalog(self, uow) -> dict:
        """Reports and dashboards this user may open, with their parameters."""
        lang = uow.lang
        from forms.access import grant
        readable = {name: grant(fd, uow.user, "read").allowed for name, fd in uow.app.forms.items()}
        reports = [{"name": rd.name, "label": rd.label.get(lang), "description": rd.description.get(lang),
                    "kind": rd.kind, "source": rd.source, "chart": rd.chart.kind if rd.chart else None,
                    "params": [p.describe(lang) for p in rd.params]}
                   for rd in (uow.app.section("reports") or {}).values()
                   if rd is not None and self.allowed(uow, rd) and readable.get(rd.source)]
        boards = [{"name": d.name, "label": d.label.get(lang), "refresh_seconds": d.refresh_seconds}
                  for d in (uow.app.section("dashboards") or {}).values() if d is not None and self._role_ok(uow, d.roles)]
        return {"reports": reports, "dashboards": boards}

    # -- running --------------------------------------------------------------
    def run(self, uow, report: str, params: Mapping[str, Any] | None = None) -> dict:
        return self.result(uow, report, params).as_dict()

    def result(self, uow, report: str, params: Mapping[str, Any] | None = None, *, long: bool = False,
               max_rows: int = MAX_GROUPS) -> Result:
        rd = self.definition(uow.app, report)
        self._check(uow, rd)
        b = Builder(uow, rd, params)
        if rd.kind == "funnel":
            res = self._funnel(b)
        elif rd.kind == "cohort":
            res = self._cohort(b)
        elif rd.kind == "kpi":
            res = self._kpi(b)
        else:
            res = self._table(b, max_rows)
            if rd.kind == "pivot" and not long:
                res = self._pivot(rd, res, uow.lang)
        res.meta.update({"report": rd.name, "label": rd.label.get(uow.lang), "kind": rd.kind,
                         "params": self._applied(b), "timezone": uow.app.timezone})
        return res

    def _applied(self, b: Builder) -> dict:
        out = {}
        for p in b.rd.params:
            v = b.params.get(p.name)
            out[p.name] = v if v not in (None, "") else p.default
        return out

    def _dim_labels(self, b: Builder, dims: list[Dimension], rows: list, titles: dict[str, int]) -> dict:
        lang = b.uow.lang
        labels: dict[str, dict[str, str]] = {}
        for i, d in enumerate(dims):
            m: dict[str, str] = {}
            if d.bucket == "weekday":
                m = {str(n): weekday_label(n, lang) for n in range(1, 8)}
            elif d.bucket == "hour":
                m = {str(n): f"{n:02d}:00" for n in range(24)}
            elif d.ref.options and not d.bucket:
                m = {v: lab.get(lang) or v for v, lab in d.ref.options.items()}
            elif d.ref.type == "boolean":
                m = {"True": "是" if lang == "zh" else "Yes", "False": "否" if lang == "zh" else "No"}
            if d.name in titles:
                ti = titles[d.name]
                for r in rows:
                    if r[i] is not None and r[ti] is not None:
                        m[str(r[i])] = str(r[ti])
            if m:
                labels[d.name] = m
        return labels

    def _order(self, b: Builder, dims, measure_names: list[str], labels: dict) -> list:
        rd = b.rd
        order = []
        dim_index = {d.name: i for i, d in enumerate(dims)}
        sort = list(rd.sort)
        if not sort and rd.limit:
            first = next((m.name for m in rd.measures if not m.hidden), None)
            if first:
                sort = [(first, True)]
        used = set()
        for name, desc in sort + [(d.name, False) for d in dims]:
            if name in used:
                continue
            used.add(name)
            if name in dim_index:
                d = dims[dim_index[name]]
                expr = b.dim_expr(d)
                oo = b.option_order(d, expr)
                key = oo if oo is not None else labels[f"d{dim_index[name]}"]
            else:
                key = labels[f"m{measure_names.index(name)}"]
            order.append((key.desc() if desc else key.asc()).nulls_last())
        return order

    def _table(self, b: Builder, max_rows: int) -> Result:
        rd, lang = b.rd, b.uow.lang
        dims = list(rd.dimensions)
        measures = [(m.name, b.measure_expr(m)) for m in rd.measures]
        conds = b.conditions()
        stmt, keys, titles = b.grouped(dims, measures, conds)
        labels = {c.name: c for c in stmt.selected_columns}
        order = self._order(b, dims, [n for n, _ in measures], labels)
        limit = min(rd.limit, max_rows) if rd.limit else max_rows + 1
        stmt = stmt.order_by(*order).limit(limit)
        raw = b.uow.conn.execute(stmt).all()
        truncated = len(raw) > max_rows
        raw = raw[:max_rows]
        shown = [i for i, m in enumerate(rd.measures) if not m.hidden]
        nd = len(dims)
        mstart = nd + len(titles)
        rows = [[plain(r[i]) for i in range(nd)] + [plain(r[mstart + i]) for i in shown] for r in raw]
        columns = [Column(d.name, d.label.get(lang) or d.name, "dimension", d.ref.type if not d.bucket else f"bucket:{d.bucket}") for d in dims]
        columns += [Column(rd.measures[i].name, rd.measures[i].label.get(lang) or rd.measures[i].name, "measure",
                           format=rd.measures[i].format) for i in shown]
        res = Result(columns, rows, self._dim_labels(b, dims, [list(r) for r in raw], titles))
        if truncated:
            res.meta["truncated"] = True
        return res

    def _pivot(self, rd: ReportDef, long: Result, lang: str) -> Result:
        pv = rd.pivot
        row_idx = [long.col(r) for r in pv.rows]
        ci = long.col(pv.columns)
        mcols = {c.name: c for c in long.measures()}
        ms = [m for m in pv.measures if m in mcols]
        col_values: list = []
        table: dict[tuple, dict] = {}
        for r in long.rows:
            key = tuple(r[i] for i in row_idx)
            cv = r[ci]
            if cv not in col_values:
                col_values.append(cv)
            cell = table.setdefault(key, {})
            for m in ms:
                cell[(cv, m)] = r[long.col(m)]
        columns = [long.columns[i] for i in row_idx]
        keys: list[tuple] = []
        for cv in col_values:
            for m in ms:
                name = ("" if cv is None else str(cv)) if len(ms) == 1 else f"{'' if cv is None else cv}|{m}"
                label = long.label(pv.columns, cv, lang) if len(ms) == 1 else f"{long.label(pv.columns, cv, lang)} · {mcols[m].label}"
                columns.append(Column(name, label, "measure", format=mcols[m].format))
                keys.append((cv, m))
        totals = [m for m in ms if (rd.measure(m) is not None and rd.measure(m).kind in ADDITIVE)] if pv.totals else []
        for m in totals:
            columns.append(Column("total" if len(ms) == 1 else f"total|{m}", ("合计" if lang == "zh" else "Total")
                                  + ("" if len(ms) == 1 else f" · {mcols[m].label}"), "measure", format=mcols[m].format))
        rows = []
        for key, cell in table.items():
            row = list(key) + [cell.get(k) for k in keys]
            for m in totals:
                row.append(sum((cell.get((cv, m)) or 0) for cv in col_values))
            rows.append(row)
        labels = {k: v for k, v in long.labels.items() if k in pv.rows}
        res = Result(columns, rows, labels, dict(long.meta))
        res.meta["pivot"] = {"rows": list(pv.rows), "columns": pv.columns, "measures": ms,
                             "column_values": [plain(v) for v in col_values]}
        return res

    def _funnel(self, b: Builder) -> Result:
        rd, lang = b.rd, b.uow.lang
        f = rd.funnel
        col = b.col(f.ref)
        measures = []
        for i, st in enumerate(f.stages):
            if f.cumulative:
                agg = func.count() if i == 0 else func.count().filter(col.in_(list(f.stages[i:])))
            else:
                agg = func.count().filter(col == st)
            measures.append((f"s{i}", agg))
        dims = list(rd.dimensions)
        stmt, _, titles = b.grouped(dims, measures, b.conditions())
        labels = {c.name: c for c in stmt.selected_columns}
        if dims:
            stmt = stmt.order_by(*[(b.option_order(d, b.dim_expr(d)) if b.option_order(d, b.dim_expr(d)) is not None
                                    else labels[f"d{i}"]).asc().nulls_last() for i, d in enumerate(dims)])
        raw = b.uow.conn.execute(stmt.limit(MAX_GROUPS)).all()
        nd = len(dims)
        mstart = nd + len(titles)
        rows = []
        for r in raw:
            first = r[mstart] or 0
            prev = None
            for i, st in enumerate(f.stages):
                n = r[mstart + i] or 0
                rows.append([plain(r[j]) for j in range(nd)] + [st, n, round(n / first, 6) if first else None,
                                                                 (round(n / prev, 6) if prev else None) if i else 1.0 if n else None])
                prev = n
        columns = [Column(d.name, d.label.get(lang) or d.name, "dimension", d.ref.type) for d in dims]
        columns += [Column("stage", f.ref.label.get(lang) or "stage", "dimension", f.ref.type),
                    Column("count", "数量" if lang == "zh" else "Count", "measure", format="integer"),
                    Column("rate", "占首阶段" if lang == "zh" else "Of first stage", "measure", format="percent"),
                    Column("step_rate", "环节转化率" if lang == "zh" else "Step conversion", "measure", format="percent")]
        labels_out = self._dim_labels(b, dims, [list(r) for r in raw], titles)
        labels_out["stage"] = {st: f.labels[st].get(lang) or st for st in f.stages}
        return Result(columns, rows, labels_out, {"stages": list(f.stages), "cumulative": f.cumulative})

    def _cohort(self, b: Builder) -> Result:
        rd, lang, uow = b.rd, b.uow.lang, b.uow
        c = rd.cohort
        records = uow.service("records")
        date_col = b.col(c.date)
        cohort_e = bucket(b.local(c.date), c.bucket, b.dialect)
        member_e = b.col(c.member) if c.member is not None else b.t.c.id
        conds = b.conditions() + [date_col.is_not(None), member_e.is_not(None)]
        m = (select(cohort_e.label("cohort"), member_e.label("member"), date_col.label("d"))
             .select_from(b.from_clause()).where(and_(*conds)).subquery("m"))
        ev_form = records.form(uow.app, c.events_form)
        ev_base, _ = records.readable(uow, ev_form)
        et = records.tables(uow.app)[c.events_form]
        ev_cols = [et.c.id.label("eid"), et.c[c.events_link].label("ref")]
        if c.events_date:
            ev_cols.append(et.c[c.events_date].label("ed"))
        # Keep the readable query's FROM (its row filter may join linked tables) and WHERE.
        ev = ev_base.with_only_columns(*ev_cols)
        if c.events_when is not None:
            ev = ev.where(b.sql(c.events_when, et, ev_form))
        ev = ev.subquery("e")
        on = [ev.c.ref == m.c.member]
        if c.within_days:
            ed_type = "datetime" if c.events_date in ("created_at", "updated_at") else getattr(ev_form.fields.get(c.events_date), "type", "datetime")
            ed = ev.c.ed
            if c.date.type == "date" and ed_type == "datetime":
                from .sqlfuncs import local_time
                ed = local_time(ed, b.tz, b.now, b.dialect)
            on += [ed >= m.c.d, ed < _add_days(m.c.d, c.within_days, b.dialect)]
        pm = (select(m.c.cohort, m.c.member, func.count(ev.c.eid.distinct()).label("n"))
              .select_from(m.outerjoin(ev, and_(*on))).group_by(m.c.cohort, m.c.member).subquery("pm"))
        cols = [pm.c.cohort, func.count().label("members")]
        cols += [func.count().filter(pm.c.n >= k).label(f"n_{k}") for k in c.thresholds]
        stmt = select(*cols).group_by(pm.c.cohort).order_by(pm.c.cohort).limit(MAX_GROUPS)
        raw = uow.conn.execute(stmt).all()
        k = len(c.thresholds)
        rows = []
        for r in raw:
            members = r[1] or 0
            rows.append([r[0], members] + [r[2 + i] or 0 for i in range(k)]
                        + [round((r[2 + i] or 0) / members, 6) if members else None for i in range(k)])
        zh = lang == "zh"
        columns = [Column("cohort", c.label.get(lang), "dimension", f"bucket:{c.bucket}"),
                   Column("members", "人数" if zh else "Members", "measure", format="integer")]
        columns += [Column(f"n_{t}", f"≥{t}次" if zh else f"≥{t} times", "measure", format="integer") for t in c.thresholds]
        columns += [Column(f"rate_{t}", f"≥{t}次比例" if zh else f"≥{t} times rate", "measure", format="percent") for t in c.thresholds]
        return Result(columns, rows, {}, {"thresholds": list(c.thresholds)})

    def _kpi(self, b: Builder) -> Result:
        """One row per measure: value, previous period's value, relative change (one extra query when comparing)."""
        rd, lang = b.rd, b.uow.lang
        shown = [m for m in rd.measures if not m.hidden]
        exprs = [b.measure_expr(m).label(f"m{i}") for i, m in enumerate(shown)]

        def run(conds) -> list:
            stmt = select(*exprs).select_from(b.from_clause())
            if conds:
                stmt = stmt.where(and_(*conds))
            return list(b.uow.conn.execute(stmt).one())

        current = run(b.conditions())
        prev_values: list = [None] * len(shown)
        prev_period = None
        if rd.compare:
            p = rd.param(rd.compare)
            per = b.period(p)
            prev_period = previous(per, b.today) if per is not None else None
            if prev_period is not None:
                prev_values = run(b.conditions({p.name: prev_period}))
        rows = []
        for m, v, pv in zip(shown, current, prev_values):
            v, pv = plain(v), plain(pv)
            change = None
            if v is not None and pv not in (None, 0):
                change = round((v - pv) / abs(pv), 6)
            rows.append([m.name, v if v is not None or m.kind != "count" else 0, pv, change])
        columns = [Column("measure", "指标" if lang == "zh" else "Measure", "dimension"),
                   Column("value", "本期" if lang == "zh" else "Value", "measure"),
                   Column("previous", "上期" if lang == "zh" else "Previous", "measure"),
                   Column("change", "变化" if lang == "zh" else "Change", "measure", format="percent")]
        meta = {"measures": {m.name: {"label": m.label.get(lang) or m.name, "format": m.format} for m in shown}}
        if prev_period is not None:
            meta["previous_period"] = {"start": prev_period.start.isoformat(), "end": prev_period.end.isoformat()}
        return Result(columns, rows, {"measure": {m.name: m.label.get(lang) or m.name for m in shown}}, meta)

    # -- charts -----------------------------------------------------------------
    @staticmethod
    def default_chart(rd: ReportDef) -> Chart:
        if rd.chart is not None:
            return rd.chart
        if rd.kind == "kpi":
            return Chart("kpi")
        if rd.kind == "funnel":
            return Chart("funnel")
        if rd.kind == "cohort":
            return Chart("line")
        if rd.kind == "pivot":
            return Chart("pivot")
        if 1 <= len(rd.dimensions) <= 2:
            return Chart("bar", series=rd.dimensions[1].name if len(rd.dimensions) == 2 else None)
        return Chart("table")

    def chart(self, uow, report: str, params: Mapping[str, Any] | None = None, *, chart: Chart | None = None,
              title: str | None = None, cache: dict | None = None, drill_base: str | None = None) -> dict:
        """The report as an ECharts option.

        ``cache`` shares one run between widgets of the same report; ``drill_base`` replaces the
        drill URL's path (default: the JSON API route) -- an HTML page can point clicks at itself.
        """
        rd = self.definition(uow.app, report)
        spec = chart or self.default_chart(rd)
        long = spec.kind != "pivot"
        key = (report, long, tuple(sorted((k, str(v)) for k, v in (params or {}).items())))
        res = cache.get(key) if cache is not None else None
        if res is None:
            res = self.result(uow, report, params, long=long)
            if cache is not None:
                cache[key] = res
        res = Result(res.columns, res.rows, res.labels, dict(res.meta))
        if spec.kind in ("table", "pivot"):
            res.meta["table"] = {"columns": [c.as_dict() for c in res.columns], "rows": res.rows}
        kind = CHARTS[spec.kind]()
        inp = ChartInput(spec, res, uow.lang, rd.kind, title)
        option = kind.option(inp)
        loom = option.setdefault("loom", {})
        loom.update({"report": rd.name, "kind": spec.kind, "title": title or rd.label.get(uow.lang),
                     "drill": self.drill_template(uow, rd, res.meta.get("params") or {}, kind.drill_keys(inp), drill_base),
                     "data_url": f"/api/apps/{uow.app.name}/reports/{rd.name}"})
        if res.meta.get("truncated"):
            loom["truncated"] = True
        return option

    def drill_template(self, uow, rd: ReportDef, applied: Mapping[str, Any], keys: Mapping[str, str],
                       base: str | None = None) -> str:
        """``<base>?<the report's parameters>&<dimension>={name}...`` for the front-end's data-drill."""
        base = (base or "/api/apps/{app}/reports/{report}/drill").format(app=quote(uow.app.name), report=quote(rd.name))
        taken = set(keys.values())
        query = urlencode({k: v for k, v in applied.items() if v not in (None, "") and k not in taken})
        parts = [query] if query else []
        for placeholder, param in keys.items():
            parts.append(f"{quote(param)}={{{placeholder}}}")
        return base + ("?" + "&".join(parts) if parts else "")

    # -- dashboards ---------------------------------------------------------------
    def dashboard(self, uow, name: str, params: Mapping[str, Any] | None = None, *, drill_base: str | None = None) -> dict:
        """``drill_base`` as for :meth:`chart`, with ``{app}`` and ``{report}`` placeholders."""
        db = self.dashboard_def(uow.app, name)
        lang = uow.lang
        if not self._role_ok(uow, db.roles):
            raise Forbidden(_t(lang, f"您无权查看看板“{db.label.get('zh')}”", f"you may not view the dashboard '{db.label.get('en') or db.name}'"))
        values = dict(params or {})
        for pname, default in db.filters:
            if values.get(pname) in (None, "") and default is not None:
                values[pname] = default
        reports = uow.app.section("reports") or {}
        widgets = []
        filters: dict[str, dict] = {}
        cache: dict = {}
        for w in db.widgets:
            rd = reports.get(w.report)
            if rd is None or not self.allowed(uow, rd):
                continue
            wparams = {k: v for k, v in values.items() if rd.param(k) is not None}
            title = (w.title or rd.label).get(lang) or rd.name
            item = {"report": rd.name, "title": title, "width": w.width, "height": w.height,
                    "kind": (w.chart or self.default_chart(rd)).kind, "data_url": f"/api/apps/{uow.app.name}/reports/{rd.name}"}
            try:
                option = self.chart(uow, rd.name, wparams, chart=w.chart, title=None, cache=cache, drill_base=drill_base)
            except Forbidden:
                continue                      # the user can't read the widget's form: the widget is left out
            except (ReportError, RecordInvalid) as exc:
                item.update(option=None, drill=None, error=exc.message)
            else:
                item.update(option=option, drill=option["loom"]["drill"], error=None)
            widgets.append(item)
            for pname, _ in db.filters:
                p = rd.param(pname)
                if p is not None and pname not in filters:
                    d = p.describe(lang)
                    d["value"] = values.get(pname)
                    filters[pname] = d
        return {"name": db.name, "label": db.label.get(lang), "refresh_seconds": db.refresh_seconds,
                "filters": list(filters.values()), "widgets": widgets}

    # -- drill-down -------------------------------------------------------------------
    def drill(self, uow, report: str, params: Mapping[str, Any] | None = None, *, limit: int = 50, offset: int = 0) -> dict:
        rd = self.definition(uow.app, report)
        self._check(uow, rd)
        params = dict(params or {})
        b = Builder(uow, rd, params)
        conds = b.conditions()
        applied = {}
        for d in rd.dimensions:
            if d.name in params:
                conds.append(b.dim_condition(d, str(params[d.name])))
                applied[d.name] = params[d.name]
        mname = params.get("measure")
        if mname:
            m = rd.measure(mname)
            if m is None:
                raise RecordInvalid([{"field": "measure", "code": "bad_param", "message": f"no measure '{mname}' in this report"}])
            conds += self._measure_conditions(b, m)
            applied["measure"] = mname
        if rd.funnel is not None and params.get("stage"):
            f = rd.funnel
            st = str(params["stage"])
            if st not in f.stages:
                raise RecordInvalid([{"field": "stage", "code": "bad_param", "message": f"'{st}' is not a stage of this funnel"}])
            i = f.stages.index(st)
            col = b.col(f.ref)
            if not f.cumulative:
                conds.append(col == st)
            elif i > 0:
                conds.append(col.in_(list(f.stages[i:])))
            applied["stage"] = st
        if rd.cohort is not None and params.get("cohort"):
            conds.append(bucket(b.local(rd.cohort.date), rd.cohort.bucket, b.dialect) == str(params["cohort"]))
            applied["cohort"] = params["cohort"]
        records = uow.service("records")
        where = and_(*conds) if conds else None
        q = select(*b.t.c).select_from(b.from_clause())
        cq = select(func.count()).select_from(b.from_clause())
        if where is not None:
            q, cq = q.where(where), cq.where(where)
        limit = max(1, min(int(limit), 500))
        rows = uow.conn.execute(q.order_by(b.t.c.id.desc()).limit(limit).offset(min(max(0, int(offset)), 2**62))).mappings().all()
        total = uow.conn.execute(cq).scalar()
        items = [records.to_json(uow, b.form, records.decode(b.form, r), b.grant) for r in rows]
        return {"report": rd.name, "form": rd.source, "columns": list(rd.drill_columns) or list(b.form.list_columns),
                "filters": {**self._applied(b), **applied}, "items": items, "total": total, "limit": limit, "offset": offset}

    def _measure_conditions(self, b: Builder, m) -> list:
        rd = b.rd
        if m.kind == "ratio":
            return self._measure_conditions(b, rd.measure(m.ratio[0]))
        conds = []
        if m.when is not None:
            conds.append(b.sql(m.when))
        if m.kind == "duration":
            conds += [b.col(m.start).is_not(None), b.col(m.end).is_not(None)]
        elif m.kind in ("count_distinct", "sum", "avg", "min", "max", "median", "percentile") and hasattr(m.arg, "path"):
            conds.append(b.col(m.arg, counted=m.kind == "count_distinct").is_not(None))
        return conds

    # -- exports ------------------------------------------------------------------
    def export(self, uow, report: str, params: Mapping[str, Any] | None, fmt: str) -> tuple[str, str, Iterator[bytes]]:
        rd = self.definition(uow.app, report)
        self._check(uow, rd)
        if not self.can_export(uow, rd):
            raise Forbidden(_t(uow.lang, "您没有导出权限", "you may not export this report (the 'export' permission is needed)"))
        if fmt not in ("csv", "xlsx"):
            raise RecordInvalid([{"field": "format", "code": "bad_param", "message": "format is csv or xlsx"}])
        res = self.result(uow, report, params, max_rows=EXPORT_MAX)
        from .export import csv_chunks, xlsx_chunks
        stamp = uow.now.astimezone(uow.app.tz).strftime("%Y%m%d-%H%M")
        filename = f"{rd.name}-{stamp}.{fmt}"
        title = rd.label.get(uow.lang) or rd.name
        if fmt == "csv":
            return filename, "text/csv; charset=utf-8", csv_chunks(res, uow.lang)
        return filename, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", xlsx_chunks(res, uow.lang, title)

    # -- advice ---------------------------------------------------------------------
    def index_advice(self, app) -> list[str]:
        """Columns reports group or filter by that have no index (advice, not an error)."""
        out = []
        for rd in (app.section("reports") or {}).values():
            if rd is None:
                continue
            form = app.forms.get(rd.source)
            if form is None:
                continue
            indexed = {"id", "owner", "state", "created_at"} | {c[0] for c in form.indexes if c}
            indexed |= {n for n, f in form.fields.items() if f.index or f.unique or f.type in ("link", "user") or f.pii}
            refs = [d.ref for d in rd.dimensions] + [p.ref for p in rd.params]
            if rd.cohort is not None:
                refs.append(rd.cohort.date)
            for ref in refs:
                if ref.link is None and ref.field not in indexed:
                    out.append(f"report '{rd.name}': {rd.source}.{ref.field} is grouped or filtered but has no index; "
                               f"add 'index: true' to the field or an entry under 'indexes:'")
        return sorted(set(out))


def _add_days(x, days: int, dialect: str):
    from .sqlfuncs import add_days
    return add_days(x, days, dialect)
