"""The reference interpreter: the meaning of an expression, one node at a time.

Slow but obvious. It is used to fold constant parts at compile time, to fold the
Python-side parts of SQL translation, and by the tests as the oracle the compiled code
must agree with.
"""
from __future__ import annotations

from typing import Any, Callable

from . import runtime as rt
from .errors import ExpressionError
from .parser import (BinNode, BoolNode, CallNode, CompareNode, Const, IfNode, ListNode, Node, NotNode, Path,
                     UnaryNode, children)

BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": rt.add, "-": rt.sub, "*": rt.mul, "/": rt.truediv, "//": rt.floordiv, "%": rt.mod, "**": rt.pow_,
}
ORDER: dict[str, Callable[..., bool]] = {"<": rt.lt, "<=": rt.le, ">": rt.gt, ">=": rt.ge}


def date_text_const(node: Node) -> bool:
    return isinstance(node, Const) and rt.looks_temporal(node.value)


def list_has_date_text(node: Node) -> bool:
    if isinstance(node, Const) and isinstance(node.value, list):
        return any(rt.looks_temporal(v) for v in node.value)
    if isinstance(node, ListNode):
        return any(date_text_const(i) for i in node.items)
    return False


def compare(op: str, a: Any, b: Any, ctx: Any, left: Node, right: Node) -> bool:
    """One comparison; ``left``/``right`` are the nodes (ISO date texts written in the expression compare as dates)."""
    if op == "==" or op == "!=":
        if date_text_const(left) or date_text_const(right):
            r = rt.eq(a, b, ctx)
        else:
            r = a == b
        return r if op == "==" else not r
    if op in ORDER:
        return ORDER[op](a, b, ctx)
    if list_has_date_text(right):
        r = rt.in_coerce(a, tuple(b), ctx) if b is not None else False
    else:
        r = rt.in_(a, b)
    return r if op == "in" else not r


def call(node: CallNode, args: list, kwargs: dict, ctx: Any) -> Any:
    fn = node.fn
    if fn is None:
        return node.extra(*args, **kwargs)
    if fn.name == "exists":
        return fn.impl(ctx, args[0], kwargs)
    if fn.needs_ctx:
        return fn.impl(ctx, *args)
    return fn.impl(*args)


def interp(node: Node, lookup: Callable[[tuple], Any], ctx: Any) -> Any:
    try:
        return _interp(node, lookup, ctx)
    except ExpressionError as exc:
        if exc.col is None:             # the innermost node with a position names the column
            exc.col = node.col
        raise


def _interp(node: Node, lookup: Callable[[tuple], Any], ctx: Any) -> Any:
    t = type(node)
    if t is Const:
        v = node.value
        return list(v) if isinstance(v, list) else v
    if t is Path:
        return lookup(node.segs)
    if t is ListNode:
        return [interp(i, lookup, ctx) for i in node.items]
    if t is BoolNode:
        r: Any = None
        for v in node.values:
            r = interp(v, lookup, ctx)
            if (not r) if node.op == "and" else r:
                return r
        return r
    if t is NotNode:
        return not interp(node.operand, lookup, ctx)
    if t is UnaryNode:
        v = interp(node.operand, lookup, ctx)
        return rt.neg(v) if node.op == "-" else rt.pos(v)
    if t is BinNode:
        return BINOPS[node.op](interp(node.left, lookup, ctx), interp(node.right, lookup, ctx))
    if t is CompareNode:
        left_node = node.left
        a = interp(left_node, lookup, ctx)
        for op, right_node in zip(node.ops, node.rights):
            b = interp(right_node, lookup, ctx)
            if not compare(op, a, b, ctx, left_node, right_node):
                return False
            a, left_node = b, right_node
        return True
    if t is IfNode:
        if interp(node.test, lookup, ctx):
            return interp(node.body, lookup, ctx)
        return interp(node.orelse, lookup, ctx)
    if t is CallNode:
        args = [interp(a, lookup, ctx) for a in node.args]
        kwargs = {k: interp(v, lookup, ctx) for k, v in node.kwargs}
        return call(node, args, kwargs, ctx)
    raise AssertionError(f"unknown node {t.__name__}")


def evaluate_env(node: Node, env: Any, ctx: Any) -> Any:
    """Reference evaluation against a record (what compiled code must agree with)."""
    env = env if env is not None else {}
    return interp(node, lambda segs: rt.get_path(env.get(segs[0]), segs[1:]), ctx)


def _no_names(segs: tuple) -> Any:
    raise rt.NeedsContext


def _foldable(node: Node) -> bool:
    if isinstance(node, Path):
        return False
    if isinstance(node, CallNode) and node.fn is None:     # extra functions may be impure
        return False
    return all(isinstance(c, Const) for c in children(node))


def fold(node: Node) -> Node:
    """Replace constant parts by their values (bottom-up). Errors in them are compile errors."""
    t = type(node)
    if t is ListNode:
        node.items = tuple(fold(i) for i in node.items)
    elif t is BoolNode:
        values = [fold(v) for v in node.values]
        # leading constants decide or drop out: `true and x` -> x, `false and x` -> false
        while values and isinstance(values[0], Const) and len(values) > 1:
            decided = (not values[0].value) if node.op == "and" else bool(values[0].value)
            if decided:
                return values[0]
            values.pop(0)
        if len(values) == 1:
            return values[0]
        node.values = tuple(values)
    elif t is NotNode or t is UnaryNode:
        node.operand = fold(node.operand)
    elif t is BinNode:
        node.left, node.right = fold(node.left), fold(node.right)
    elif t is CompareNode:
        node.left = fold(node.left)
        node.rights = tuple(fold(r) for r in node.rights)
    elif t is IfNode:
        node.test, node.body, node.orelse = fold(node.test), fold(node.body), fold(node.orelse)
        if isinstance(node.test, Const):
            return node.body if node.test.value else node.orelse
    elif t is CallNode:
        node.args = tuple(fold(a) for a in node.args)
        node.kwargs = tuple((k, fold(v)) for k, v in node.kwargs)
    if t is Const or t is Path or not _foldable(node):
        return node
    try:
        value = interp(node, _no_names, rt.NO_CTX)
    except rt.NeedsContext:
        return node
    except ExpressionError as exc:
        if exc.col is None:
            exc.col = node.col
        raise
    except (TypeError, ValueError, ArithmeticError, RecursionError, MemoryError) as exc:
        raise ExpressionError(rt.friendly(exc), node.col, code="runtime") from None
    return Const(value, node.col)
