"""Vetted IR -> one Python function ``f(env, ctx)``.

The function is generated as Python source by this module only (never from user text:
names, keys and constants are embedded with ``repr`` or bound as globals), compiled once,
and runs with ``__builtins__`` empty. Operations whose operand types cannot be proven
safe go through the bounded, None-total helpers of ``runtime``; the rest is native
Python (``==``, ``!=``, ``and``/``or``/``not``, ``x in (...)``, comparisons with a
number or text written in the expression, guarded against None). The reference
interpreter (``interp``) defines the meaning; this is an optimisation of it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from . import runtime as rt
from .interp import date_text_const, list_has_date_text
from .parser import (BinNode, BoolNode, CallNode, CompareNode, Const, IfNode, ListNode, Node, NotNode, Path,
                     UnaryNode)

_HELPERS = {
    "_get_path": rt.get_path, "_type": type, "_dict": dict, "_list": list,
    "_add": rt.add, "_sub": rt.sub, "_mul": rt.mul, "_truediv": rt.truediv, "_floordiv": rt.floordiv,
    "_mod": rt.mod, "_pow": rt.pow_, "_neg": rt.neg, "_pos": rt.pos,
    "_lt": rt.lt, "_le": rt.le, "_gt": rt.gt, "_ge": rt.ge, "_eq": rt.eq,
    "_in": rt.in_, "_in_set": rt.in_set, "_in_coerce": rt.in_coerce,
}
_BINOP_HELPER = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_truediv", "//": "_floordiv", "%": "_mod", "**": "_pow"}
_ORDER_HELPER = {"<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_TEMP_RE = re.compile(r"_t\d+\Z")
_INLINE_INT = 1 << 62


def _simple_scalar(v: Any) -> bool:
    """A constant that may be compared natively (after a None check) with the same meaning as the helpers."""
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, str) and not rt.looks_temporal(v)


_NUMBER_FUNCTIONS = frozenset({"len", "days_between", "hours_between", "date_part", "round", "abs", "int", "float",
                               "sum"})


def _plain_operand(node: Node) -> bool:
    """Values that are not produced by today()/now()/date texts: fields, numbers from functions."""
    if isinstance(node, Path):
        return True
    if isinstance(node, CallNode):
        return node.fn is not None and node.name in _NUMBER_FUNCTIONS
    return isinstance(node, Const) and _simple_scalar(node.value)


class _Bound(str):
    """Source text that stores its value in a temporary as it is evaluated."""

    def __new__(cls, text: str, name: str) -> "_Bound":
        obj = super().__new__(cls, text)
        obj.name = name
        return obj


class Generator:
    def __init__(self) -> None:
        self.globals: dict[str, Any] = {"__builtins__": {}}
        self.globals.update(_HELPERS)
        self.ntmp = 0
        self.nconst = 0
        self.env_lookups = 0

    def tmp(self) -> str:
        self.ntmp += 1
        return f"_t{self.ntmp}"

    def bind_global(self, value: Any, prefix: str = "_k") -> str:
        self.nconst += 1
        name = f"{prefix}{self.nconst}"
        self.globals[name] = value
        return name

    def bind(self, src: str) -> tuple[str, str]:
        """(source that evaluates once and stores, name to read it again)."""
        if _TEMP_RE.match(src):
            return src, src
        if isinstance(src, _Bound):
            return src, src.name
        t = self.tmp()
        return _Bound(f"({t} := {src})", t), t

    # -- values
    def const(self, v: Any) -> str:
        if v is None or isinstance(v, bool):
            return repr(v)
        if type(v) is int and abs(v) < _INLINE_INT:
            return f"({v!r})" if v < 0 else repr(v)
        if type(v) is float and math.isfinite(v):
            return f"({v!r})"
        if type(v) is str and len(v) <= 200:
            return repr(v)
        if isinstance(v, list):
            return f"_list({self.bind_global(tuple(v))})"
        return self.bind_global(v)

    def gen(self, node: Node) -> str:
        return getattr(self, "_" + type(node).__name__)(node)

    def _Const(self, node: Const) -> str:
        return self.const(node.value)

    def _Path(self, node: Path) -> str:
        segs = node.segs
        self.env_lookups += 1
        root = f"_g({segs[0]!r})"
        if len(segs) == 1:
            return root
        rest = segs[1:]
        if len(rest) == 1 and isinstance(rest[0], str):
            t = self.tmp()
            return f"({t}.get({rest[0]!r}) if _type({t} := {root}) is _dict else _get_path({t}, {rest!r}))"
        return f"_get_path({root}, {rest!r})"

    def _ListNode(self, node: ListNode) -> str:
        return "[" + ", ".join(self.gen(i) for i in node.items) + "]"

    def _BoolNode(self, node: BoolNode) -> str:
        return "(" + f" {node.op} ".join(self.gen(v) for v in node.values) + ")"

    def _NotNode(self, node: NotNode) -> str:
        return f"(not {self.gen(node.operand)})"

    def _UnaryNode(self, node: UnaryNode) -> str:
        return f"{'_neg' if node.op == '-' else '_pos'}({self.gen(node.operand)})"

    def _BinNode(self, node: BinNode) -> str:
        op, left, right = node.op, node.left, node.right
        rv = right.value if isinstance(right, Const) else None
        if (op in ("+", "-", "/") and isinstance(right, Const) and type(rv) is int and abs(rv) < _INLINE_INT
                and not (op == "/" and rv == 0)):
            # x + 1, x - 1, x / 100: native after a None check; a text/date x raises TypeError -> ExpressionError
            first, again = self.bind(self.gen(left))
            return f"(None if {first} is None else {again} {op} {self.const(rv)})"
        return f"{_BINOP_HELPER[op]}({self.gen(left)}, {self.gen(right)})"

    def _IfNode(self, node: IfNode) -> str:
        return f"({self.gen(node.body)} if {self.gen(node.test)} else {self.gen(node.orelse)})"

    def _CallNode(self, node: CallNode) -> str:
        args = [self.gen(a) for a in node.args]
        if node.fn is None:
            name = self.bind_global(node.extra, "_x")
            args += [f"{k}={self.gen(v)}" for k, v in node.kwargs]
            return f"{name}({', '.join(args)})"
        fn = node.fn
        name = f"_f_{fn.name}"
        self.globals[name] = fn.impl
        if fn.name == "exists":
            crit = "{" + ", ".join(f"{k!r}: {self.gen(v)}" for k, v in node.kwargs) + "}"
            return f"{name}(_ctx, {args[0]}, {crit})"
        if fn.needs_ctx:
            args.insert(0, "_ctx")
        return f"{name}({', '.join(args)})"

    # -- comparisons
    def _CompareNode(self, node: CompareNode) -> str:
        n = len(node.ops)
        parts = []
        left_node, left_src = node.left, self.gen(node.left)
        for i, (op, right_node) in enumerate(zip(node.ops, node.rights)):
            right_src = self.gen(right_node)
            reuse = None
            if i < n - 1 and not isinstance(right_node, Const):
                right_src, reuse = self.bind(right_src)
            parts.append(self.compare(op, left_src, right_src, left_node, right_node))
            left_node = right_node
            left_src = reuse if reuse is not None else self.gen(right_node) if isinstance(right_node, Const) else right_src
        return parts[0] if n == 1 else "(" + " and ".join(parts) + ")"

    def compare(self, op: str, l: str, r: str, lnode: Node, rnode: Node) -> str:
        if op in ("==", "!="):
            for this, other in ((lnode, r), (rnode, l)):
                if isinstance(this, Const) and this.value is None:
                    return f"({other} is {'' if op == '==' else 'not '}None)"
            if date_text_const(lnode) or date_text_const(rnode):
                return f"({'' if op == '==' else 'not '}_eq({l}, {r}, _ctx))"
            return f"({l} {op} {r})"
        if op in _ORDER_HELPER:
            if isinstance(rnode, Const) and _simple_scalar(rnode.value):
                first, again = self.bind(l)
                return f"({first} is not None and {again} {op} {r})"
            if isinstance(lnode, Const) and _simple_scalar(lnode.value):
                first, again = self.bind(r)
                return f"({first} is not None and {l} {op} {again})"
            if _plain_operand(lnode) and _plain_operand(rnode):
                # two fields: native order after None checks; a TypeError (date vs date-time, naive vs
                # aware, text vs number) sends the evaluation to the reference interpreter
                lfirst, lagain = self.bind(l)
                rfirst, ragain = self.bind(r)
                if isinstance(rnode, CallNode):
                    # both sides are evaluated first, as the reference interpreter does: a function's
                    # error (days_between of a number) must not hide behind a None on the left
                    return f"((({lfirst} is not None) & ({rfirst} is not None)) and {lagain} {op} {ragain})"
                return f"({lfirst} is not None and {rfirst} is not None and {lagain} {op} {ragain})"
            return f"{_ORDER_HELPER[op]}({l}, {r}, _ctx)"
        neg = "not " if op == "not in" else ""
        if isinstance(rnode, Const) and isinstance(rnode.value, list):
            items = rnode.value
            if list_has_date_text(rnode):
                return f"({neg}_in_coerce({l}, {self.bind_global(tuple(items))}, _ctx))"
            if len(items) <= 8 and all(v is None or isinstance(v, (bool, int, str)) for v in items):
                inner = ", ".join(self.const(v) for v in items) + ("," if len(items) == 1 else "")
                return f"({l} {op} ({inner}))"
            try:
                frozen = frozenset(items)
            except TypeError:
                return f"({l} {op} {self.bind_global(tuple(items))})"
            return f"({neg}_in_set({l}, {self.bind_global(frozen)}))"
        if isinstance(rnode, ListNode):
            if list_has_date_text(rnode):
                return f"({neg}_in_coerce({l}, {r}, _ctx))"
            inner = ", ".join(self.gen(i) for i in rnode.items) + ("," if len(rnode.items) == 1 else "")
            return f"({l} {op} ({inner}))"
        return f"({neg}_in({l}, {r}))"


def generate(root: Node, label: str = "<expression>") -> tuple[Callable[[Any, Any], Any], str]:
    """Compile the IR to ``f(env, ctx)``; also return the generated source (for debugging)."""
    gen = Generator()
    body = gen.gen(root)
    src = f"def _expression(_env, _ctx):\n    _g = _env.get\n    return {body}\n"
    code = compile(src, label, "exec")
    namespace: dict[str, Any] = {}
    exec(code, gen.globals, namespace)  # noqa: S102 - our own generated code, vetted IR, empty builtins
    return namespace["_expression"], src
