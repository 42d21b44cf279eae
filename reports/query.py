"""Report -> ONE SQL statement (SQLAlchemy Core), executed by the database.

The statement starts from the record service's permission-filtered base
(``Records.readable``: the same WHERE a list or an export of the form uses),
LEFT JOINs each linked form a report follows (``dealer.region``) once, adds
the fixed filters (expressions compiled to SQL) and the user's parameters,
groups by the dimensions (date buckets in the app's timezone) and computes
the measures with aggregate FILTER clauses.  Only aggregated rows come back
to Python; pivots, funnel rates and cohort rates are reshaped from those.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Mapping

from sqlalchemy import Float, Table, and_, case, distinct, func, literal_column, select
from sqlalchemy.sql import ColumnElement, Select

from engine.errors import Forbidden, LoomError, RecordInvalid

from .model import DURATION_UNITS, Dimension, FieldRef, Measure, Param, ReportDef
from .periods import Period, PeriodError, local_today, resolve as resolve_period
from .sqlfuncs import as_float, bucket, duration_seconds, json_part, local_time

NUMERIC_TYPES = {"number", "decimal", "currency", "integer", "percent", "rating", "id"}
WEEKDAYS = {"zh": ["", "周一", "周二", "周三", "周四", "周五", "周六", "周日"],
            "en": ["", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}


class ReportError(LoomError):
    """The report can't run as asked (e.g. a percentile on SQLite); 422 with a message for people."""
    status = 422


def bad_param(name: str, message: str) -> RecordInvalid:
    return RecordInvalid([{"field": name, "code": "bad_param", "message": message}])


def plain(v: Any) -> Any:
    """DB value -> JSON-ready Python value."""
    if isinstance(v, Decimal):
        return round(float(v), 6)
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


class Builder:
    """Builds the statements of one report for one unit of work (user, clock, params)."""

    def __init__(self, uow, rd: ReportDef, params: Mapping[str, Any] | None = None):
        self.uow, self.rd = uow, rd
        self.params = dict(params or {})
        self.records = uow.service("records")
        app = uow.app
        self.form = self.records.form(app, rd.source)
        base, self.grant = self.records.readable(uow, self.form)   # raises Forbidden if the user may not read
        self.tables = self.records.tables(app)
        self.t: Table = self.tables[rd.source]
        self.dialect = uow.conn.dialect.name
        self.tz = app.tz
        self.now = uow.now
        self.today = local_today(uow.now, self.tz)
        self.joins: dict[str, Any] = {}
        self._user_env = None
        self.base_where = self._row_filter(base)
        self._check_fields()

    def _row_filter(self, base: Select) -> ColumnElement | None:
        """The user's row filter: the WHERE of ``Records.readable``.

        When the grant's row rules follow a link (``dealer.code == current_user.dealer``) the
        record service resolves ``dealer.code`` as a correlated scalar subquery, evaluated once
        per row -- 100x slower than a join on a million leads.  The same grant and the same
        ``row_filter_sql`` are then compiled with this builder's resolver, which reads the link
        through the report's (single) LEFT JOIN: identical rows, an index-friendly plan.
        """
        if self.grant.all_rows or not any(_follows_link(e) for e in self.grant.row_filters):
            return base.whereclause
        from forms.access import row_filter_sql
        return row_filter_sql(self.grant, self.resolver(), self.dialect, ctx=self.uow.eval_context())

    # -- permissions on fields --------------------------------------------
    def _check_fields(self) -> None:
        lang = self.uow.lang
        checked: dict[str, Any] = {}
        for ref in self.rd.uses():
            if ref.link is None:
                if ref.field in self.grant.hidden:
                    raise Forbidden(_t(lang, f"此报表使用了您无权查看的字段“{ref.label.get('zh')}”",
                                       f"this report uses '{ref.label.get('en') or ref.field}', which is hidden from you"))
                continue
            g = checked.get(ref.form)
            if g is None:
                target = self.records.form(self.uow.app, ref.form)
                _, g = self.records.readable(self.uow, target)   # raises Forbidden if the linked form is closed to the user
                checked[ref.form] = g
            if ref.field in g.hidden:
                raise Forbidden(_t(lang, f"此报表使用了您无权查看的字段“{ref.label.get('zh')}”",
                                   f"this report uses '{ref.name}', which is hidden from you"))

    # -- columns ------------------------------------------------------------
    def join(self, link: str):
        alias = self.joins.get(link)
        if alias is None:
            target = self.form.fields[link].spec.get("form")
            alias = self.tables[target].alias(f"j_{link}")
            self.joins[link] = alias
        return alias

    def from_clause(self):
        src = self.t
        for link, alias in self.joins.items():
            src = src.outerjoin(alias, alias.c.id == self.t.c[link])
        return src

    def col(self, ref: FieldRef, counted: bool = False) -> ColumnElement:
        from forms.tables import bi_column
        name = bi_column(ref.field) if (ref.pii and counted) else ref.field
        if ref.link is None:
            return self.t.c[name]
        return self.join(ref.link).c[name]

    def local(self, ref: FieldRef, c: ColumnElement | None = None) -> ColumnElement:
        c = self.col(ref) if c is None else c
        if ref.type == "datetime":
            return local_time(c, self.tz, self.now, self.dialect)
        return c

    def dim_expr(self, d: Dimension) -> ColumnElement:
        if d.bucket:
            return bucket(self.local(d.ref), d.bucket, self.dialect)
        if d.part is not None:
            return json_part(self.col(d.ref), d.part, self.dialect)
        return self.col(d.ref)

    def title_expr(self, d: Dimension) -> ColumnElement | None:
        """For a link dimension, the linked record's title (shown instead of the id)."""
        ref = d.ref
        if ref.type != "link" or ref.link is not None or not ref.target_title:
            return None
        target = self.records.form(self.uow.app, ref.target)
        tf = target.fields.get(ref.target_title)
        if tf is not None and tf.pii:
            return None
        return self.join(ref.field).c[ref.target_title]

    # -- expressions ------------------------------------------------------------
    def user_env(self) -> dict:
        if self._user_env is None:
            self._user_env = self.uow.user.env()
        return self._user_env

    def resolver(self, table: Table | None = None, form=None, joins: dict | None = None):
        """Names in expressions -> SQL: own columns, one hop through links (joined once), current_user."""
        from engine.expressions import ExpressionError
        table = self.t if table is None else table
        form = self.form if form is None else form

        def resolve(path: tuple):
            head = path[0]
            if head == "current_user":
                return self.user_env().get(path[1]) if len(path) > 1 else self.uow.user.username
            if head == "record":
                path = path[1:]
                head = path[0]
            f = form.fields.get(head)
            if len(path) == 1:
                if f is not None and f.pii:
                    raise ExpressionError(f"'{head}' is personal data (pii) and cannot be used in a report")
                return table.c[head]
            target_form = self.records.form(self.uow.app, f.spec.get("form"))
            tf = target_form.fields.get(path[1])
            if tf is not None and tf.pii:
                raise ExpressionError(f"'{'.'.join(path)}' is personal data (pii) and cannot be used in a report")
            if table is self.t:
                return self.join(head).c[path[1]]
            target = self.tables[target_form.name]
            return select(target.c[path[1]]).where(target.c.id == table.c[head]).scalar_subquery()
        return resolve

    def sql(self, expr, table: Table | None = None, form=None, mode: str = "filter") -> ColumnElement:
        """An expression as SQL: a predicate (``mode='filter'``) or a value (``'value'``)."""
        return expr.to_sql(self.resolver(table, form), self.dialect, ctx=self.uow.eval_context(), mode=mode)

    # -- filters ------------------------------------------------------------
    def conditions(self, period_override: Mapping[str, Period] | None = None) -> list[ColumnElement]:
        conds: list[ColumnElement] = []
        if self.base_where is not None:
            conds.append(self.base_where)
        for f in self.rd.fixed:
            conds.append(self.sql(f.expr))
        for p in self.rd.params:
            c = self.param_condition(p, (period_override or {}).get(p.name))
            if c is not None:
                conds.append(c)
        return conds

    def period(self, p: Param) -> Period | None:
        raw = self.params.get(p.name)
        if raw in (None, ""):
            raw = p.default
        if raw in (None, ""):
            if p.required:
                raise bad_param(p.name, _t(self.uow.lang, f"请选择“{p.label.get('zh')}”", f"choose a value for '{p.name}'"))
            return None
        try:
            return resolve_period(str(raw), self.today)
        except PeriodError as exc:
            raise bad_param(p.name, str(exc)) from None

    def period_condition(self, ref: FieldRef, per: Period) -> ColumnElement | None:
        c = self.col(ref)
        if ref.type == "datetime":
            a, b = per.utc_bounds(self.tz)
        else:
            a, b = per.start, per.end
        conds = []
        if a is not None:
            conds.append(c >= a)
        if b is not None:
            conds.append(c < b)
        return and_(*conds) if conds else None

    def param_condition(self, p: Param, override: Period | None = None) -> ColumnElement | None:
        if p.kind == "period":
            per = override or self.period(p)
            return self.period_condition(p.ref, per) if per is not None else None
        raw = self.params.get(p.name)
        if raw in (None, ""):
            raw = p.default
        if raw in (None, ""):
            if p.required:
                raise bad_param(p.name, _t(self.uow.lang, f"请选择“{p.label.get('zh')}”", f"choose a value for '{p.name}'"))
            return None
        if isinstance(raw, str) and raw.startswith("current_user."):
            raw = self.user_env().get(raw.split(".", 1)[1])
            if raw is None:
                return None
        c = self.col(p.ref)
        op = p.op
        if op in ("eq", "in") and isinstance(raw, str) and "," in raw:
            op = "in"
        if op == "in":
            values = [self.convert(p.ref, v.strip(), p.name) for v in str(raw).split(",") if v.strip()]
            return c.in_(values)
        value = self.convert(p.ref, raw, p.name)
        if op == "contains":
            s = str(value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return c.like(f"%{s}%", escape="\\")
        return {"eq": lambda: c == value, "ne": lambda: c != value, "gt": lambda: c > value, "gte": lambda: c >= value,
                "lt": lambda: c < value, "lte": lambda: c <= value}[op]()

    def convert(self, ref: FieldRef, raw: Any, name: str) -> Any:
        """A query-string value -> the column's Python value (checked against options)."""
        if raw is None:
            return None
        s = str(raw)
        try:
            if ref.type in NUMERIC_TYPES:
                v = float(s)
                return int(v) if v.is_integer() and ref.type in ("number", "integer", "id") else v
            if ref.type == "link":
                return int(s)
            if ref.type == "boolean":
                if s.lower() in ("1", "true", "yes", "是"):
                    return True
                if s.lower() in ("0", "false", "no", "否"):
                    return False
                raise ValueError(s)
            if ref.type == "date":
                return dt.date.fromisoformat(s)
            if ref.type == "datetime":
                v = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
                v = v if v.tzinfo is not None else v.replace(tzinfo=self.tz)      # a wall-clock time is the app's
                return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except ValueError:
            raise bad_param(name, _t(self.uow.lang, f"“{s}”不是有效的{ref.label.get('zh')}", f"'{s}' is not a valid {ref.type} for '{name}'")) from None
        if ref.options and s not in ref.options:
            raise bad_param(name, _t(self.uow.lang, f"“{s}”不是“{ref.label.get('zh')}”的选项", f"'{s}' is not an option of '{ref.name}'; expected one of: {', '.join(ref.options)}"))
        return s

    # -- measures -------------------------------------------------------------
    def measure_expr(self, m: Measure, _depth: int = 0) -> ColumnElement:
        rd = self.rd
        if m.kind == "ratio":
            num = self.measure_expr(rd.measure(m.ratio[0]), _depth + 1)
            den = self.measure_expr(rd.measure(m.ratio[1]), _depth + 1)
            return as_float(num) / func.nullif(as_float(den), literal_column("0"), type_=Float)
        if m.kind == "formula":
            if _depth > 20:
                raise ReportError(f"measure '{m.name}' nests too deeply")

            def resolve(path: tuple):
                return self.measure_expr(rd.measure(path[0]), _depth + 1)
            return m.formula.to_sql(resolve, self.dialect, ctx=self.uow.eval_context(), mode="value")
        cond = self.sql(m.when) if m.when is not None else None
        if m.kind == "count":
            agg = func.count()
        elif m.kind == "count_distinct":
            agg = func.count(distinct(self.col(m.arg, counted=True)))
        elif m.kind == "duration":
            secs = duration_seconds(self.col(m.start), self.col(m.end), self.dialect,
                                    dates=m.start.type == "date" or m.end.type == "date")
            value = secs / DURATION_UNITS[m.unit] if DURATION_UNITS[m.unit] != 1 else secs
            agg = self._aggregate(m.agg, value, m)
        else:
            value = self.col(m.arg) if isinstance(m.arg, FieldRef) else self.sql(m.arg, mode="value")
            agg = self._aggregate(m.kind, value, m)
        return agg.filter(cond) if cond is not None else agg

    def _aggregate(self, kind: str, value: ColumnElement, m: Measure):
        if kind in ("median", "percentile"):
            if self.dialect != "postgresql":
                raise ReportError(_t(self.uow.lang,
                                     f"指标“{m.label.get('zh')}”是百分位数，需要 PostgreSQL 数据库；SQLite 上请改用 avg/min/max",
                                     f"measure '{m.name}' is a {kind}, which needs PostgreSQL; on SQLite use avg, min or max"))
            return func.percentile_cont(0.5 if kind == "median" else m.p).within_group(value)
        return {"sum": func.sum, "avg": func.avg, "min": func.min, "max": func.max}[kind](value)

    # -- the grouped query ------------------------------------------------------
    def grouped(self, dims: list[Dimension], measures: list[tuple[str, ColumnElement]], conds: list,
                order: list | None = None, limit: int | None = None) -> tuple[Select, list[str], dict[str, int]]:
        """SELECT dims (+ link titles), measures ... GROUP BY dims; returns (stmt, column keys, title index)."""
        cols, keys, group = [], [], []
        titles: dict[str, int] = {}
        for i, d in enumerate(dims):
            e = self.dim_expr(d)
            cols.append(e.label(f"d{i}"))
            keys.append(d.name)
            group.append(e)
        for i, d in enumerate(dims):
            te = self.title_expr(d)
            if te is not None:
                titles[d.name] = len(cols)
                cols.append(te.label(f"t{i}"))
                group.append(te)
        for i, (name, e) in enumerate(measures):
            cols.append(e.label(f"m{i}"))
            keys.append(name)
        stmt = select(*cols).select_from(self.from_clause())
        if conds:
            stmt = stmt.where(and_(*conds))
        if group:
            stmt = stmt.group_by(*group)
        if order:
            stmt = stmt.order_by(*order)
        if limit is not None:
            stmt = stmt.limit(limit)
        return stmt, keys, titles

    def option_order(self, d: Dimension, e: ColumnElement) -> ColumnElement | None:
        """Select/state dimensions sort by their option (or workflow) order, not alphabetically."""
        if d.bucket or not d.ref.options or len(d.ref.options) > 200:
            return None
        return case({v: i for i, v in enumerate(d.ref.options)}, value=e, else_=len(d.ref.options))

    # -- drill: the records behind one cell ---------------------------------------
    def dim_condition(self, d: Dimension, raw: str) -> ColumnElement:
        e = self.dim_expr(d)
        if raw == "":
            return e.is_(None)
        if d.bucket in ("hour", "weekday"):
            try:
                return e == int(raw)
            except ValueError:
                raise bad_param(d.name, f"'{raw}' is not a number") from None
        if d.bucket or d.part is not None:
            return e == str(raw)
        return e == self.convert(d.ref, raw, d.name)


def _follows_link(expr: Any) -> bool:
    names = getattr(getattr(expr, "_parsed", None), "names", None) or getattr(expr, "names", None) or {}
    return any(len(p) > 1 and p[0] not in ("current_user", "settings", "app") and not (p[0] == "record" and len(p) == 2)
               for p in names)


def _t(lang: str, zh: str, en: str) -> str:
    return zh if lang == "zh" else en


def weekday_label(n: Any, lang: str) -> str:
    try:
        return WEEKDAYS[lang][int(n)]
    except (ValueError, IndexError, TypeError):
        return str(n)
