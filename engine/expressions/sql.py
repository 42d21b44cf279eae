"""Vetted IR -> a SQLAlchemy Core expression (row permissions, report filters and measures).

The translation keeps the meaning of the Python evaluation, including its treatment of
empty values: ``score < 3`` is false for an empty score, ``level != 'C'`` is *true* for an
empty level (so ``level IS NULL OR level != 'C'``), ``not (x > 3)`` is true for an empty x.
Conditions are translated with their polarity (``not`` is pushed inwards), so every
predicate is TRUE exactly where Python says True and FALSE or NULL elsewhere. Use the
result in WHERE / FILTER / CASE WHEN; to negate it, negate the expression, not the SQL.

Parts that do not depend on database columns (``current_user.dealer``, ``today()``,
``add_days(today(), -30)``) are computed in Python and bound as parameters.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement

from . import runtime as rt
from .context import UTC, EvalContext
from .errors import ExpressionError
from .functions import DATE_PARTS, FUNCTIONS
from .interp import compare as py_compare, date_text_const, interp, list_has_date_text
from .parser import (BinNode, BoolNode, CallNode, CompareNode, Const, IfNode, ListNode, Node, NotNode, Path,
                     UnaryNode, children)

date, datetime = dt.date, dt.datetime
SQL_FUNCTIONS = tuple(sorted(name for name, f in FUNCTIONS.items() if f.sql))
_BOOL_FUNCS = {"contains", "startswith", "endswith", "is_empty", "changed", "exists"}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class P:
    """A value known in Python at translation time."""
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class S:
    """A SQL value: expression, kind (bool/int/num/str/date/datetime/any), may it be NULL."""
    __slots__ = ("expr", "kind", "nullable")

    def __init__(self, expr: Any, kind: str, nullable: bool = True):
        self.expr, self.kind, self.nullable = expr, kind, nullable


def kind_of_type(t: Any) -> str:
    if isinstance(t, sa.types.TypeDecorator):
        t = t.impl_instance
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, (sa.Numeric, sa.Float)):
        return "num"
    if isinstance(t, sa.DateTime):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, (sa.String, sa.Enum)):
        return "str"
    return "any"


def kind_of_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, (float, Decimal)):
        return "num"
    if isinstance(v, str):
        return "str"
    if isinstance(v, datetime):
        return "datetime"
    if isinstance(v, date):
        return "date"
    return "any"


def _naive_utc(v: datetime) -> datetime:
    return rt.aware(v).astimezone(UTC).replace(tzinfo=None)


def literal(v: Any) -> Any:
    """A Python value as a typed bound parameter."""
    if v is None:
        return sa.null()
    if isinstance(v, bool):
        return sa.true() if v else sa.false()
    if isinstance(v, int):
        return sa.literal(v, sa.Integer)
    if isinstance(v, float):
        return sa.literal(v, sa.Float)
    if isinstance(v, Decimal):
        return sa.literal(v, sa.Numeric(asdecimal=True))
    if isinstance(v, str):
        return sa.literal(v, sa.String)
    if isinstance(v, datetime):
        return sa.literal(_naive_utc(v), sa.DateTime)
    if isinstance(v, date):
        return sa.literal(v, sa.Date)
    raise ExpressionError(f"{rt.describe(v)} cannot be used as a value in a database filter", code="sql")


def _and(parts: list) -> Any:
    out = []
    for p in parts:
        if p is False:
            return False
        if p is True:
            continue
        out.append(p)
    if not out:
        return True
    return out[0] if len(out) == 1 else sa.and_(*out)


def _or(parts: list) -> Any:
    out = []
    for p in parts:
        if p is True:
            return True
        if p is False:
            continue
        out.append(p)
    if not out:
        return False
    return out[0] if len(out) == 1 else sa.or_(*out)


def _sql_bool(p: Any) -> Any:
    if p is True:
        return sa.true()
    if p is False:
        return sa.false()
    return p


_NOMATCH = object()


class Translator:
    def __init__(self, source: str, resolve: Callable[[tuple], Any], dialect: str, ctx: EvalContext | None):
        self.source = source
        self.resolve_fn = resolve
        self.dialect = (dialect or "sqlite").lower()
        if self.dialect.startswith("postgres"):
            self.dialect = "postgresql"
        self.ctx = ctx if ctx is not None else EvalContext.system()
        self._resolved: dict[tuple, Any] = {}
        self._py: dict[int, bool] = {}

    # -- errors
    def fail(self, node: Node | None, message: str) -> ExpressionError:
        return ExpressionError(message, getattr(node, "col", None), source=self.source, code="sql")

    def cannot(self, node: Node, what: str, hint: str = "") -> ExpressionError:
        tail = f"; {hint}" if hint else ""
        return self.fail(node, f"{what} cannot be used in a database filter (row permissions, report filters and "
                               f"measures){tail}")

    # -- names
    def resolve(self, path: tuple) -> P | S:
        hit = self._resolved.get(path)
        if hit is not None:
            return hit
        try:
            r = self.resolve_fn(path)
        except ExpressionError:
            raise
        except (KeyError, LookupError) as exc:
            raise self.fail(None, f"'{'.'.join(path)}' cannot be used in a database filter ({exc})") from None
        if isinstance(r, BindParameter) and r.callable is None and not isinstance(r.value, ClauseElement):
            out: P | S = P(r.value)
        elif isinstance(r, ColumnElement):
            nullable = getattr(r, "nullable", True)
            out = S(r, kind_of_type(r.type), nullable is not False)
        elif isinstance(r, ClauseElement):
            raise self.fail(None, f"'{'.'.join(path)}' does not resolve to a column")
        else:
            out = P(r)
        self._resolved[path] = out
        return out

    def lookup(self, segs: tuple) -> Any:
        r = self.resolve(Path(segs, None).name_path)
        assert isinstance(r, P)
        rest = segs[len(Path(segs, None).name_path):]
        return rt.get_path(r.value, rest) if rest else r.value

    def is_py(self, node: Node) -> bool:
        key = id(node)
        hit = self._py.get(key)
        if hit is not None:
            return hit
        if isinstance(node, Path):
            r = isinstance(self.resolve(node.name_path), P)
        elif isinstance(node, CallNode) and node.fn is not None and node.name in ("changed", "exists"):
            r = False                       # about the record being processed, not rows of a table
        else:
            r = all(self.is_py(c) for c in children(node))
        self._py[key] = r
        return r

    def py(self, node: Node) -> Any:
        try:
            return interp(node, self.lookup, self.ctx)
        except ExpressionError as exc:
            if exc.col is None:
                exc.col = node.col
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ExpressionError(rt.friendly(exc), node.col, source=self.source, code="runtime") from None

    # -- values
    def val(self, node: Node) -> P | S:
        if self.is_py(node):
            return P(self.py(node))
        t = type(node)
        if t is Path:
            r = self.resolve(node.name_path)
            if len(node.segs) > len(node.name_path):
                raise self.cannot(node, "a position like [0] after a database column")
            return r
        if t is ListNode:
            raise self.cannot(node, "a list containing database columns", "lists must hold fixed values")
        if t in (CompareNode, NotNode, BoolNode) or (t is CallNode and node.name in _BOOL_FUNCS):
            if t is BoolNode and not all(self.is_condition(v) for v in node.values):
                raise self.cannot(node, f"'{node.op}' between values that are not conditions",
                                  "use coalesce(a, b) to pick the first non-empty value")
            p = self.pred(node, True)
            if isinstance(p, bool):
                return P(p)
            return S(sa.case((p, sa.true()), else_=sa.false()), "bool", False)
        if t is UnaryNode:
            v = self.val(node.operand)
            if v.kind not in ("int", "num", "any"):
                raise self.cannot(node, f"'{node.op}' before a {v.kind} column")
            return S(-v.expr if node.op == "-" else v.expr, v.kind, v.nullable)
        if t is BinNode:
            return self.binop(node)
        if t is IfNode:
            test = self.pred(node.test, True)
            body, orelse = self.val(node.body), self.val(node.orelse)
            kind = body.kind if isinstance(body, S) else orelse.kind if isinstance(orelse, S) else "any"
            if isinstance(test, bool):
                return body if test else orelse
            return S(sa.case((test, self.expr(body)), else_=self.expr(orelse)), kind, True)
        if t is CallNode:
            return self.call(node)
        raise self.cannot(node, "this part")

    def expr(self, v: P | S) -> Any:
        return v.expr if isinstance(v, S) else literal(v.value)

    def is_condition(self, node: Node) -> bool:
        t = type(node)
        if t in (CompareNode, NotNode):
            return True
        if t is BoolNode:
            return all(self.is_condition(v) for v in node.values)
        if t is CallNode:
            return node.name in _BOOL_FUNCS
        if t is Const:
            return isinstance(node.value, bool)
        if t is Path and not self.is_py(node):
            return self.resolve(node.name_path).kind == "bool"
        if t is IfNode:
            return self.is_condition(node.body) and self.is_condition(node.orelse)
        return False

    # -- conditions
    def pred(self, node: Node, positive: bool) -> Any:
        """SQL that is TRUE where Python's truth of ``node`` equals ``positive`` (else FALSE or NULL)."""
        if self.is_py(node):
            return bool(self.py(node)) == positive
        t = type(node)
        if t is NotNode:
            return self.pred(node.operand, not positive)
        if t is BoolNode:
            parts = [self.pred(v, positive) for v in node.values]
            return _and(parts) if (node.op == "and") == positive else _or(parts)
        if t is CompareNode:
            pairs = []
            left = node.left
            for op, right in zip(node.ops, node.rights):
                pairs.append(self.compare(op, left, right, positive))
                left = right
            return _and(pairs) if positive else _or(pairs)
        if t is IfNode:
            return _or([_and([self.pred(node.test, True), self.pred(node.body, positive)]),
                        _and([self.pred(node.test, False), self.pred(node.orelse, positive)])])
        if t is CallNode and node.name in _BOOL_FUNCS:
            return self.bool_call(node, positive)
        return self.truthy(node, self.val(node), positive)

    def truthy(self, node: Node, v: P | S, positive: bool) -> Any:
        if isinstance(v, P):
            return bool(v.value) == positive
        e, kind = v.expr, v.kind
        null = e.is_(None)
        if kind == "bool":
            if positive:
                return e
            return sa.or_(null, sa.not_(e)) if v.nullable else sa.not_(e)
        if kind == "str":
            return e != "" if positive else sa.or_(null, e == "")
        if kind in ("int", "num"):
            return e != 0 if positive else sa.or_(null, e == 0)
        if kind in ("date", "datetime"):
            return e.is_not(None) if positive else null
        raise self.cannot(node, f"'{_snippet(self.source, node)}' as a condition",
                          "compare it explicitly, e.g. x == true or x != None")

    # -- comparisons
    def coerce(self, kind: str, value: Any, node: Node, for_order: bool) -> Any:
        """The Python value in the column's terms, or _NOMATCH when Python's == would be False."""
        if kind in ("any",):
            return _naive_utc(value) if isinstance(value, datetime) else value
        if kind in ("int", "num"):
            if rt.is_num(value):
                return int(value) if isinstance(value, bool) else value
            return _NOMATCH
        if kind == "str":
            return value if isinstance(value, str) else _NOMATCH
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if type(value) is int and value in (0, 1):
                return bool(value)
            return _NOMATCH
        if kind in ("date", "datetime"):
            if isinstance(value, str) and (for_order or date_text_const(node) or list_has_date_text(node)):
                if not rt.looks_temporal(value) and not for_order:
                    return _NOMATCH
                value = rt.parse_temporal(value, self.ctx)
            if not isinstance(value, date):
                return _NOMATCH
            if kind == "datetime":
                if isinstance(value, datetime):
                    return _naive_utc(value)
                return _naive_utc(rt.midnight(value, self.ctx)) if for_order else _NOMATCH
            if isinstance(value, datetime):
                return _NOMATCH if not for_order else value      # handled by date_vs_instant
            return value
        return value

    def compare(self, op: str, lnode: Node, rnode: Node, positive: bool) -> Any:
        if op in ("in", "not in") and isinstance(rnode, ListNode) and not self.is_py(rnode):
            # x in [a, b]  ==  x == a or x == b
            if (op == "in") == positive:
                return _or([self.compare("==", lnode, item, True) for item in rnode.items])
            return _and([self.compare("==", lnode, item, False) for item in rnode.items])
        lv, rv = self.val(lnode), self.val(rnode)
        if isinstance(lv, P) and isinstance(rv, P):
            return py_compare(op, lv.value, rv.value, self.ctx, lnode, rnode) == positive
        if op in ("in", "not in"):
            return self.membership(op, lnode, rnode, lv, rv, positive)
        if isinstance(lv, P):               # keep the column on the left
            lv, rv, lnode, rnode, op = rv, lv, rnode, lnode, _FLIP[op]
        if op in ("==", "!="):
            return self.equality(lv, rv, lnode, rnode, (op == "==") == positive)
        return self.order(op, lv, rv, lnode, rnode, positive)

    def equality(self, a: S, b: P | S, anode: Node, bnode: Node, want_equal: bool) -> Any:
        if isinstance(b, P):
            if b.value is None:
                return a.expr.is_(None) if want_equal else a.expr.is_not(None)
            value = self.coerce(a.kind, b.value, bnode, False)
            if value is _NOMATCH:
                return not want_equal
            if want_equal:
                return a.expr == value
            return sa.or_(a.expr.is_(None), a.expr != value) if a.nullable else a.expr != value
        if {a.kind, b.kind} in ({"date", "datetime"}, {"str", "int"}, {"str", "num"}, {"bool", "str"},
                                {"date", "str"}, {"datetime", "str"}, {"date", "int"}, {"datetime", "num"}):
            return _and([a.expr.is_(None), b.expr.is_(None)]) if want_equal else \
                sa.or_(a.expr.is_not(None), b.expr.is_not(None))
        if want_equal:
            return a.expr.is_not_distinct_from(b.expr)
        return a.expr.is_distinct_from(b.expr)

    def _collate(self, v: S) -> Any:
        if v.kind == "str" and self.dialect == "postgresql":
            return v.expr.collate("C")          # code-point order, like Python
        return v.expr

    def order(self, op: str, a: S, b: P | S, anode: Node, bnode: Node, positive: bool) -> Any:
        if isinstance(b, P):
            if b.value is None:
                return not positive           # x < None is always false
            value = self.coerce(a.kind, b.value, bnode, True)
            if value is _NOMATCH:
                raise self.fail(anode, f"cannot compare a {a.kind} column with {rt.describe(b.value)} using '{op}'")
            if a.kind == "date" and isinstance(value, datetime):
                op, value = self.date_vs_instant(op, value)
            col = self._collate(a)
            if positive:
                return col.operate(_OPS[op], value)
            neg = col.operate(_OPS[_NEGATE[op]], value)
            return sa.or_(a.expr.is_(None), neg) if a.nullable else neg
        ae, be = self._collate(a), self._collate(b)
        if {a.kind, b.kind} == {"date", "datetime"}:
            ae = self.midnight_sql(a.expr) if a.kind == "date" else a.expr
            be = self.midnight_sql(b.expr) if b.kind == "date" else b.expr
            if self.dialect != "postgresql":        # text forms differ; compare as numbers
                ae, be = sa.func.julianday(ae), sa.func.julianday(be)
        elif "any" not in (a.kind, b.kind) and a.kind != b.kind and not {a.kind, b.kind} <= {"int", "num"}:
            raise self.fail(anode, f"cannot compare a {a.kind} column with a {b.kind} column using '{op}'")
        if positive:
            return ae.operate(_OPS[op], be)
        return sa.or_(a.expr.is_(None), b.expr.is_(None), ae.operate(_OPS[_NEGATE[op]], be))

    def date_vs_instant(self, op: str, instant: datetime) -> tuple[str, date]:
        """``date_column op instant`` (a date is 00:00 local) as a date comparison, exactly."""
        loc = rt.aware(instant).astimezone(self.ctx.tz)
        floor = loc.date()
        exact = rt.midnight(floor, self.ctx) == rt.aware(instant)
        ceil = floor if exact else floor + dt.timedelta(days=1)
        return {"<": ("<", ceil), "<=": ("<=", floor), ">": (">", floor), ">=": (">=", ceil)}[op]

    def membership(self, op: str, lnode: Node, rnode: Node, lv: P | S, rv: P | S, positive: bool) -> Any:
        want_in = (op == "in") == positive
        if isinstance(rv, P):
            items = rv.value
            if items is None:
                return not want_in
            if not isinstance(items, (list, tuple)):
                if isinstance(items, str) and isinstance(lv, S) and lv.kind in ("str", "any"):
                    found = self.text_contains(sa.literal(items, sa.String), lv.expr)
                    return found if want_in else sa.or_(lv.expr.is_(None), sa.not_(found))
                raise self.cannot(rnode, f"'in' with {rt.describe(items)}")
            assert isinstance(lv, S)
            has_none = any(i is None for i in items)
            values = []
            for i in items:
                if i is None:
                    continue
                c = self.coerce(lv.kind, i, rnode, False)
                if c is not _NOMATCH and c not in values:
                    values.append(c)
            e = lv.expr
            if want_in:
                return _or(([e.in_(values)] if values else []) + ([e.is_(None)] if has_none else []))
            if has_none:
                return _and([e.is_not(None)] + ([e.not_in(values)] if values else []))
            return _or([e.is_(None)] + ([e.not_in(values)] if values else [True]))
        if rv.kind == "str":
            needle = self.expr(lv) if isinstance(lv, S) else lv.value
            if isinstance(lv, P) and not isinstance(lv.value, str):
                return not want_in
            found = self.text_contains(rv.expr, needle)
            return found if want_in else sa.or_(rv.expr.is_(None), *( [lv.expr.is_(None)] if isinstance(lv, S) else []),
                                                 sa.not_(found))
        raise self.cannot(rnode, f"'in' with a {rv.kind} column on the right", "use a list of fixed values")

    def text_contains(self, haystack: Any, needle: Any) -> Any:
        if not isinstance(needle, ClauseElement):
            needle = sa.literal(needle, sa.String)
        if self.dialect == "postgresql":
            return sa.func.strpos(haystack, needle) > 0
        return sa.func.instr(haystack, needle) > 0

    # -- arithmetic
    def binop(self, node: BinNode) -> S:
        a, b = self.val(node.left), self.val(node.right)
        op = node.op
        ka = a.kind if isinstance(a, S) else kind_of_value(a.value)
        kb = b.kind if isinstance(b, S) else kind_of_value(b.value)
        if (isinstance(a, P) and a.value is None) or (isinstance(b, P) and b.value is None):
            return S(sa.null(), "any", True)
        if op == "+" and "str" in (ka, kb):
            if ka not in ("str", "any") or kb not in ("str", "any"):
                raise self.fail(node, "cannot add a text and a non-text; to join texts use concat(a, b)")
            return S(self.expr(a).concat(self.expr(b)), "str", True)
        numeric = ("int", "num", "any")
        if ka not in numeric or kb not in numeric:
            bad = ka if ka not in numeric else kb
            raise self.cannot(node, f"'{op}' on a {bad} value",
                              "use days_between(a, b) for dates" if bad in ("date", "datetime") else "")
        ea, eb = self.expr(a), self.expr(b)
        kind = "int" if ka == kb == "int" and op in ("+", "-", "*", "%") else "num"
        if op in ("+", "-", "*"):
            return S(ea.operate(_OPS[op], eb), kind, True)
        if op in ("/", "//"):
            q = sa.cast(ea, sa.Float) / sa.func.nullif(eb, 0)
            if op == "/":
                return S(q, "num", True)
            if self.dialect == "postgresql":
                return S(sa.func.floor(q), "num", True)
            whole = sa.cast(q, sa.Integer)            # SQLite: no floor(); truncate, then step down if negative
            return S(sa.case((q < whole, whole - 1), else_=whole), "int", True)
        if op == "%":
            if ka != "int" or kb != "int":
                raise self.cannot(node, "'%' on numbers that are not whole numbers")
            d = sa.func.nullif(eb, 0)
            return S(((ea % d) + d) % d, "int", True)
        raise self.cannot(node, f"'{op}'", "compute powers in a formula field instead")

    # -- functions
    def call(self, node: CallNode) -> S:
        name = node.name
        if node.fn is None or name not in SQL_FUNCTIONS:
            raise self.cannot(node, f"{name}()", f"the functions that can are: {', '.join(SQL_FUNCTIONS)}")
        args = [self.val(a) for a in node.args]
        if name in ("lower", "upper", "trim", "len"):
            (v,) = args
            if isinstance(v, S) and v.kind not in ("str", "any"):
                raise self.cannot(node, f"{name}() of a {v.kind} column")
            e = self.expr(v)
            if name == "trim":
                return S(self.trim_sql(e), "str", True)
            if name == "len":
                return S(sa.func.length(e), "int", True)
            return S(getattr(sa.func, name)(e), "str", True)
        if name == "abs":
            (v,) = args
            return S(sa.func.abs(self.expr(v)), v.kind if isinstance(v, S) else "num", True)
        if name == "round":
            v = args[0]
            n = args[1] if len(args) > 1 else P(0)
            if not isinstance(n, P) or type(n.value) is not int:
                raise self.cannot(node, "round() with a number of decimals that is not a fixed whole number")
            e = self.expr(v)
            if self.dialect == "postgresql":
                return S(sa.func.round(sa.cast(e, sa.Numeric), n.value), "num", True)
            return S(sa.func.round(e, n.value), "num", True)
        if name == "coalesce":
            kind = next((a.kind for a in args if isinstance(a, S)), "any")
            return S(sa.func.coalesce(*[self.expr(a) for a in args]), kind, True)
        if name in ("days_between", "hours_between"):
            return self.between(node, name, args)
        if name == "date_part":
            return self.date_part(node, args)
        if name in _BOOL_FUNCS:
            p = self.bool_call(node, True)
            return S(sa.case((_sql_bool(p), sa.true()), else_=sa.false()), "bool", False)
        raise self.cannot(node, f"{name}()")

    def trim_sql(self, e: Any) -> Any:
        chars = sa.literal(rt.WHITESPACE, sa.String)
        if self.dialect == "postgresql":
            return sa.func.btrim(e, chars)
        return sa.func.trim(e, chars)

    def bool_call(self, node: CallNode, positive: bool) -> Any:
        name = node.name
        args = [self.val(a) for a in node.args]
        if name == "is_empty":
            (v,) = args
            if isinstance(v, P):
                return FUNCTIONS["is_empty"](v.value) == positive
            e = v.expr
            if v.kind == "str":
                blank = self.trim_sql(e) == ""
                return sa.or_(e.is_(None), blank) if positive else sa.and_(e.is_not(None), sa.not_(blank))
            if v.kind in ("int", "num", "bool", "date", "datetime"):
                return e.is_(None) if positive else e.is_not(None)
            raise self.cannot(node, "is_empty() of a column of unknown type")
        if name in ("changed", "exists"):
            raise self.cannot(node, f"{name}()")
        s, part = args
        if isinstance(s, P) and isinstance(s.value, (list, tuple)) and name == "contains":
            return self.compare("in", node.args[1], node.args[0], positive)
        for v in (s, part):
            if isinstance(v, P) and v.value is None:
                return not positive
            if isinstance(v, S) and v.kind not in ("str", "any"):
                raise self.cannot(node, f"{name}() on a {v.kind} column")
            if isinstance(v, P) and not isinstance(v.value, str):
                raise self.cannot(node, f"{name}() with {rt.describe(v.value)}")
        se = self.expr(s)
        if name == "contains":
            found = self.text_contains(se, self.expr(part) if isinstance(part, S) else part.value)
        elif name == "startswith":
            pe = self.expr(part)
            found = sa.func.substr(se, 1, sa.func.length(pe)) == pe
        else:
            if not isinstance(part, P):
                raise self.cannot(node, "endswith() with a column as the ending")
            n = len(part.value)
            if n == 0:
                found = se.is_not(None)
            elif self.dialect == "postgresql":
                found = sa.func.right(se, n) == part.value
            else:
                found = sa.func.substr(se, -n) == part.value
        if positive:
            return found
        nulls = [v.expr.is_(None) for v in (s, part) if isinstance(v, S)]
        return sa.or_(*nulls, sa.not_(found))

    def midnight_sql(self, e: Any) -> Any:
        """A date column as the UTC timestamp of its local midnight."""
        if self.dialect == "postgresql":
            tz = getattr(self.ctx.tz, "key", None) or "UTC"
            return sa.func.timezone("UTC", sa.func.timezone(tz, sa.cast(e, sa.DateTime)))
        offset = self.ctx.now.astimezone(self.ctx.tz).utcoffset() or dt.timedelta(0)
        return sa.func.datetime(e, f"{-int(offset.total_seconds()):+d} seconds")

    def local_sql(self, e: Any) -> Any:
        """A UTC timestamp column in local time (SQLite: the offset at ctx.now)."""
        if self.dialect == "postgresql":
            tz = getattr(self.ctx.tz, "key", None) or "UTC"
            return sa.func.timezone(tz, sa.func.timezone("UTC", e))
        offset = self.ctx.now.astimezone(self.ctx.tz).utcoffset() or dt.timedelta(0)
        return sa.func.datetime(e, f"{int(offset.total_seconds()):+d} seconds")

    def between(self, node: CallNode, name: str, args: list) -> S:
        kinds = []
        args = list(args)
        for i, v in enumerate(args):
            if isinstance(v, P):
                if v.value is None:
                    return S(sa.null(), "num", True)
                val = rt.as_temporal(v.value, self.ctx, f"{name}()")
                args[i] = P(val)
                kinds.append("datetime" if isinstance(val, datetime) else "date")
            elif v.kind in ("date", "datetime"):
                kinds.append(v.kind)
            else:
                raise self.cannot(node, f"{name}() of a {v.kind} column")
        a, b = args
        if kinds == ["date", "date"]:
            ea, eb = self.expr(a), self.expr(b)
            if self.dialect == "postgresql":
                days = sa.cast(eb, sa.Date) - sa.cast(ea, sa.Date)
            else:
                days = sa.cast(sa.func.julianday(eb) - sa.func.julianday(ea), sa.Integer)
            if name == "days_between":
                return S(days, "int", True)
            return S(sa.cast(days, sa.Float) * 24.0, "num", True)
        ends = []
        for v, kind in zip(args, kinds):
            if isinstance(v, P):
                inst = rt.to_instant(v.value, self.ctx)
                ends.append(sa.literal(_naive_utc(inst), sa.DateTime))
            elif kind == "date":
                ends.append(self.midnight_sql(v.expr))
            else:
                ends.append(v.expr)
        ea, eb = ends
        if self.dialect == "postgresql":
            secs = sa.extract("epoch", sa.cast(eb, sa.DateTime) - sa.cast(ea, sa.DateTime))
            if name == "days_between":
                return S(sa.func.trunc(secs / 86400), "int", True)
            return S(secs / 3600.0, "num", True)
        secs = sa.cast(sa.func.round((sa.func.julianday(eb) - sa.func.julianday(ea)) * 86400.0), sa.Integer)
        if name == "days_between":
            return S(secs // 86400, "int", True)         # SQLite integer division truncates toward zero
        return S(secs / 3600.0, "num", True)

    def date_part(self, node: CallNode, args: list) -> S:
        d, part = args
        if not isinstance(part, P) or not isinstance(part.value, str) or part.value.lower() not in DATE_PARTS:
            raise self.cannot(node, "date_part() with a part that is not fixed text")
        p = part.value.lower()
        if d.kind not in ("date", "datetime"):
            raise self.cannot(node, f"date_part() of a {d.kind} column")
        e = self.local_sql(d.expr) if d.kind == "datetime" else d.expr
        if self.dialect == "postgresql":
            field = {"weekday": "isodow"}.get(p, p)
            return S(sa.cast(sa.extract(field, e), sa.Integer), "int", True)
        fmt = {"year": "%Y", "month": "%m", "quarter": "%m", "day": "%d", "hour": "%H", "minute": "%M",
               "weekday": "%w"}[p]
        v = sa.cast(sa.func.strftime(fmt, e), sa.Integer)
        if p == "quarter":
            v = (v + 2) // 3
        elif p == "weekday":
            v = ((v + 6) % 7) + 1
        return S(v, "int", True)


import operator as _op  # noqa: E402

_OPS = {"<": _op.lt, "<=": _op.le, ">": _op.gt, ">=": _op.ge, "+": _op.add, "-": _op.sub, "*": _op.mul}


def _snippet(source: str, node: Node) -> str:
    if node.col and source:
        return source[node.col - 1: node.col + 29].split(" ")[0]
    return "this value"


def is_condition_root(node: Node) -> bool:
    t = type(node)
    if t in (CompareNode, NotNode):
        return True
    if t is BoolNode:
        return True
    if t is CallNode:
        return node.name in _BOOL_FUNCS
    if t is Const:
        return isinstance(node.value, bool)
    if t is IfNode:
        return is_condition_root(node.body) and is_condition_root(node.orelse)
    return False


def to_sql(root: Node, source: str, resolve: Callable[[tuple], Any], dialect_name: str = "sqlite", *,
           ctx: EvalContext | None = None, mode: str = "auto") -> Any:
    if mode not in ("auto", "filter", "value"):
        raise ValueError("mode must be 'auto', 'filter' or 'value'")
    tr = Translator(source, resolve, dialect_name, ctx)
    if mode == "value" or (mode == "auto" and not is_condition_root(root)):
        v = tr.val(root)
        return tr.expr(v)
    return _sql_bool(tr.pred(root, True))
