"""Parsing and vetting: source text -> a small, checked tree (IR).

Python's own parser reads the text; then a whitelist turns the Python AST into the IR
below. Anything not on the whitelist is refused with a message for a business analyst
and the 1-based column where it starts. Constant parts are folded here (so
``9**4000000`` is refused at import time, not at run time).
"""
from __future__ import annotations

import ast
import difflib
import io
import re
import tokenize
from typing import Any, Callable, Mapping

from . import runtime as rt
from .errors import ExpressionError
from .functions import DATE_PARTS, FUNCTIONS, Function

MAX_SOURCE = 2000       # characters
MAX_NODES = 500         # AST nodes (values, operations, calls...)
MAX_DEPTH = 50          # nesting of operations and brackets

CONSTANT_NAMES = {"true": True, "false": False, "null": None}


# -- the IR ----------------------------------------------------------------------------------

class Node:
    __slots__ = ("col",)


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any, col: int | None):
        self.value, self.col = value, col


class Path(Node):
    """A name: ``score``, ``customer.tier``, ``current_user['dealer']``, ``tags[0]``."""
    __slots__ = ("segs", "name_path")

    def __init__(self, segs: tuple, col: int | None):
        self.segs, self.col = segs, col
        prefix = []
        for s in segs:
            if not isinstance(s, str):
                break
            prefix.append(s)
        self.name_path = tuple(prefix)


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: tuple, col: int | None):
        self.items, self.col = items, col


class BoolNode(Node):
    __slots__ = ("op", "values")

    def __init__(self, op: str, values: tuple, col: int | None):
        self.op, self.values, self.col = op, values, col


class NotNode(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node, col: int | None):
        self.operand, self.col = operand, col


class UnaryNode(Node):
    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: Node, col: int | None):
        self.op, self.operand, self.col = op, operand, col


class BinNode(Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, op: str, left: Node, right: Node, col: int | None):
        self.op, self.left, self.right, self.col = op, left, right, col


class CompareNode(Node):
    __slots__ = ("left", "ops", "rights")

    def __init__(self, left: Node, ops: tuple, rights: tuple, col: int | None):
        self.left, self.ops, self.rights, self.col = left, ops, rights, col


class IfNode(Node):
    __slots__ = ("test", "body", "orelse")

    def __init__(self, test: Node, body: Node, orelse: Node, col: int | None):
        self.test, self.body, self.orelse, self.col = test, body, orelse, col


class CallNode(Node):
    __slots__ = ("name", "args", "kwargs", "fn", "extra")

    def __init__(self, name: str, args: tuple, kwargs: tuple, fn: Function | None, extra: Callable | None,
                 col: int | None):
        self.name, self.args, self.kwargs, self.fn, self.extra, self.col = name, args, kwargs, fn, extra, col


def children(node: Node) -> tuple:
    if isinstance(node, ListNode):
        return node.items
    if isinstance(node, BoolNode):
        return node.values
    if isinstance(node, (NotNode, UnaryNode)):
        return (node.operand,)
    if isinstance(node, BinNode):
        return (node.left, node.right)
    if isinstance(node, CompareNode):
        return (node.left,) + node.rights
    if isinstance(node, IfNode):
        return (node.test, node.body, node.orelse)
    if isinstance(node, CallNode):
        return node.args + tuple(v for _, v in node.kwargs)
    return ()


class Parsed:
    """What the parser learned: the tree and what it references."""

    def __init__(self, root: Node, names: dict, functions: frozenset, exists_refs: frozenset, changed: frozenset):
        self.root = root
        self.names = names              # name path -> column of its first use
        self.functions = functions
        self.exists_refs = exists_refs  # (form, (field, ...)) for each exists(...)
        self.changed = changed          # fields named in changed('...')


# -- messages ------------------------------------------------------------------------------------

def suggest(word: str, options, n: int = 3) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=n, cutoff=0.6)
    if not close:
        return ""
    if len(close) == 1:
        return f"; did you mean '{close[0]}'?"
    return "; did you mean " + ", ".join(f"'{c}'" for c in close[:-1]) + f" or '{close[-1]}'?"


_COMPREHENSION = ("'for' inside brackets (comprehensions and generators) is not allowed; "
                  "use functions such as sum(...), min(...), max(...) or contains(...)")
_FORBIDDEN = {
    ast.Lambda: "lambda (an inline function) is not allowed in expressions",
    ast.ListComp: _COMPREHENSION,
    ast.SetComp: _COMPREHENSION,
    ast.DictComp: _COMPREHENSION,
    ast.GeneratorExp: _COMPREHENSION,
    ast.NamedExpr: "':=' (assignment) is not allowed in expressions; to compare values use '=='",
    ast.Starred: "'*' unpacking is not allowed in expressions",
    ast.Dict: "'{...}' (dictionaries) cannot be written in expressions; use a list like ['a', 'b']",
    ast.Set: "'{...}' (sets) cannot be written in expressions; use a list like ['a', 'b']",
    ast.Await: "'await' is not allowed in expressions",
    ast.Yield: "'yield' is not allowed in expressions",
    ast.YieldFrom: "'yield' is not allowed in expressions",
    ast.Slice: "slices like s[1:3] are not allowed; use substr(s, start, length)",
}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_BAD_BINOPS = {
    ast.BitAnd: "'&' is not available; to combine conditions use 'and'",
    ast.BitOr: "'|' is not available; to combine conditions use 'or'",
    ast.BitXor: "'^' is not available; for powers use '**'",
    ast.LShift: "'<<' is not available in expressions",
    ast.RShift: "'>>' is not available in expressions",
    ast.MatMult: "'@' is not available in expressions",
}
_CMPOPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.In: "in", ast.NotIn: "not in"}
_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

def _tokens(src: str) -> list:
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            out.append(tok)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return out


def _operator_hint(src: str) -> tuple[int, str] | None:
    """Common slips from other languages: &&, ||, !, <>, ===, a single =."""
    toks = [t for t in _tokens(src) if t.type in (tokenize.OP, tokenize.ERRORTOKEN) and t.string.strip()]
    depth = 0
    for i, t in enumerate(toks):
        s, col = t.string, t.start[1] + 1
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        adjacent = nxt is not None and nxt.start == t.end
        if s in "([{":
            depth += 1
        elif s in ")]}":
            depth -= 1
        elif s == "&" and adjacent and nxt.string == "&":
            return col, "use 'and' instead of '&&'"
        elif s == "|" and adjacent and nxt.string == "|":
            return col, "use 'or' instead of '||'"
        elif s == "!":
            return col, "use 'not' instead of '!' (and '!=' for 'not equal')"
        elif s == "<" and adjacent and nxt.string == ">":
            return col, "use '!=' for 'not equal'"
        elif s == "==" and adjacent and nxt.string == "=":
            return col, "use '==' to compare"
        elif s == "=" and adjacent and nxt.string in ("<", ">"):
            return col, f"use '{nxt.string}=' for '{'less' if nxt.string == '<' else 'greater'} or equal'"
        elif s == "=" and depth == 0:
            return col, ("to compare values use '==' (a single '=' is only for named arguments, "
                         "like exists('form', field=value))")
    return None


def _syntax_message(src: str, exc: SyntaxError, shift: int) -> ExpressionError:
    msg = exc.msg or "invalid syntax"
    lines = src.split("\n")
    lineno = exc.lineno or 1
    if exc.offset and exc.offset > 0:
        col = sum(len(line) + 1 for line in lines[:lineno - 1]) + exc.offset + shift
        col = min(col, len(src) + shift)
    else:
        col = None
    stripped = src.rstrip()
    hint = _operator_hint(src) if len(lines) == 1 else None
    if hint is not None:
        c = hint[0] + shift
        return ExpressionError(f"syntax error at column {c}: {hint[1]}", c, code="syntax")
    if "was never closed" in msg:
        bracket = msg[1] if msg.startswith("'") else "("
        close = {"(": ")", "[": "]", "{": "}"}.get(bracket, ")")
        return ExpressionError(f"syntax error at column {col}: the '{bracket}' here is never closed; "
                               f"add the matching '{close}'", col, code="syntax")
    if "unterminated string" in msg or "EOL while scanning" in msg:
        return ExpressionError(f"syntax error at column {col}: the text starting here has no closing quote",
                               col, code="syntax")
    if msg.startswith("unmatched"):
        return ExpressionError(f"syntax error at column {col}: {msg}; remove it or add the opening bracket",
                               col, code="syntax")
    if col is None or col > len(stripped) + shift:
        last = stripped.split()[-1] if stripped.split() else ""
        at = len(stripped) + shift
        return ExpressionError(f"syntax error at column {at}: the expression is incomplete; something is "
                               f"missing after '{last[-20:]}'", at, code="syntax")
    detail = ""
    if "forgot a comma" in msg:
        detail = "; a comma or an operator such as 'and', 'or', '==' may be missing"
    elif msg not in ("invalid syntax",):
        detail = f" ({msg})"
    near = src[col - 1 - shift: col - 1 - shift + 12].strip()
    near_text = f" near '{near}'" if near else ""
    return ExpressionError(f"syntax error at column {col}{near_text}{detail}", col, code="syntax")


# -- the parser ----------------------------------------------------------------------------------

class _Builder:
    def __init__(self, text: str, shift: int, extra: Mapping[str, Callable]):
        self.lines = text.split("\n")
        self.shift = shift
        self.extra = extra
        self.names: dict[tuple, int | None] = {}
        self.functions: set[str] = set()
        self.exists_refs: set = set()
        self.changed: set = set()

    # positions: the AST counts UTF-8 bytes, analysts count characters
    def col(self, node: ast.AST) -> int | None:
        lineno = getattr(node, "lineno", None)
        off = getattr(node, "col_offset", None)
        if lineno is None or off is None:
            return None
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        chars = len(line.encode("utf-8")[:off].decode("utf-8", "ignore"))
        return sum(len(x) + 1 for x in self.lines[:lineno - 1]) + chars + 1 + self.shift

    def fail(self, node: ast.AST, message: str, code: str = "forbidden") -> ExpressionError:
        return ExpressionError(message, self.col(node), code=code)

    # -- dispatch
    def build(self, node: ast.AST) -> Node:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            message = _FORBIDDEN.get(type(node), f"this kind of expression ({type(node).__name__}) is not allowed")
            raise self.fail(node, message)
        return method(node)

    def _Constant(self, node: ast.Constant) -> Node:
        v = node.value
        if v is None or isinstance(v, (bool, int, float, str)):
            return Const(v, self.col(node))
        if isinstance(v, bytes):
            raise self.fail(node, "bytes literals (b'...') are not supported; write a normal text in quotes")
        if isinstance(v, complex):
            raise self.fail(node, "imaginary numbers (like 1j) are not supported")
        raise self.fail(node, "'...' is not allowed in expressions")

    def _Name(self, node: ast.Name) -> Node:
        name = node.id
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed ('{name}')")
        if name in CONSTANT_NAMES:
            return Const(CONSTANT_NAMES[name], self.col(node))
        return self._path(node, (name,))

    def _path(self, node: ast.AST, segs: tuple) -> Path:
        p = Path(segs, self.col(node))
        self.names.setdefault(p.name_path, p.col)
        return p

    def _chain(self, node: ast.AST) -> tuple:
        """The segments of a name chain rooted at a bare name, or an error."""
        segs: list = []
        cur = node
        while True:
            if isinstance(cur, ast.Attribute):
                if cur.attr.startswith("_"):
                    raise self.fail(cur, f"names starting with '_' are not allowed ('.{cur.attr}')")
                segs.append(cur.attr)
                cur = cur.value
            elif isinstance(cur, ast.Subscript):
                segs.append(self._index(cur))
                cur = cur.value
            elif isinstance(cur, ast.Name):
                if cur.id.startswith("_"):
                    raise self.fail(cur, f"names starting with '_' are not allowed ('{cur.id}')")
                if cur.id in CONSTANT_NAMES:
                    raise self.fail(node, f"'{cur.id}' is a constant and has no parts")
                segs.append(cur.id)
                return tuple(reversed(segs))
            else:
                what = f"'.{node.attr}'" if isinstance(node, ast.Attribute) else "'[...]'"
                if isinstance(cur, ast.Call) and isinstance(node, ast.Attribute):
                    raise self.fail(node, f"{what} cannot follow a function call; only field names have parts "
                                          "(like customer.tier)")
                raise self.fail(node, f"{what} can only follow a field name, like customer.tier or tags[0]")

    def _index(self, node: ast.Subscript) -> Any:
        sl = node.slice
        if isinstance(sl, ast.Slice):
            raise self.fail(sl, _FORBIDDEN[ast.Slice])
        value: Any = ...
        if isinstance(sl, ast.Constant) and (isinstance(sl.value, str) or type(sl.value) is int):
            value = sl.value
        elif (isinstance(sl, ast.UnaryOp) and isinstance(sl.op, ast.USub) and isinstance(sl.operand, ast.Constant)
              and type(sl.operand.value) is int):
            value = -sl.operand.value
        if value is ...:
            raise self.fail(node, "only a fixed position or key can go inside [ ], like tags[0] or "
                                  "customer['tier']")
        if isinstance(value, str) and (value.startswith("_") or not value):
            raise self.fail(sl, f"keys starting with '_' are not allowed ({value!r})")
        return value

    def _Attribute(self, node: ast.Attribute) -> Node:
        if node.attr.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed ('.{node.attr}')")
        return self._path(node, self._chain(node))

    def _Subscript(self, node: ast.Subscript) -> Node:
        return self._path(node, self._chain(node))

    def _List(self, node: ast.List) -> Node:
        return ListNode(tuple(self.build(e) for e in node.elts), self.col(node))

    _Tuple = _List

    def _BoolOp(self, node: ast.BoolOp) -> Node:
        op = "and" if isinstance(node.op, ast.And) else "or"
        return BoolNode(op, tuple(self.build(v) for v in node.values), self.col(node))

    def _UnaryOp(self, node: ast.UnaryOp) -> Node:
        operand = self.build(node.operand)
        if isinstance(node.op, ast.Not):
            return NotNode(operand, self.col(node))
        if isinstance(node.op, ast.USub):
            return UnaryNode("-", operand, self.col(node))
        if isinstance(node.op, ast.UAdd):
            return UnaryNode("+", operand, self.col(node))
        raise self.fail(node, "'~' is not available; to negate a condition use 'not'")

    def _BinOp(self, node: ast.BinOp) -> Node:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(node, _BAD_BINOPS.get(type(node.op), "this operator is not available"))
        left, right = self.build(node.left), self.build(node.right)
        if op == "**" and isinstance(right, Const) and rt.is_num(right.value) and abs(right.value) > rt.MAX_EXPONENT:
            raise ExpressionError(f"the exponent {right.value} is too large (the limit is {rt.MAX_EXPONENT})",
                                  right.col, code="limit")
        return BinNode(op, left, right, self.col(node))

    def _Compare(self, node: ast.Compare) -> Node:
        ops = []
        rights = []
        left = self.build(node.left)
        prev = left
        for op, comp in zip(node.ops, node.comparators):
            right = self.build(comp)
            if isinstance(op, (ast.Is, ast.IsNot)):
                if not ((isinstance(right, Const) and right.value is None)
                        or (isinstance(prev, Const) and prev.value is None)):
                    raise self.fail(node, "'is' only works with None (x is None); to compare values use '=='")
                ops.append("==" if isinstance(op, ast.Is) else "!=")
            else:
                ops.append(_CMPOPS[type(op)])
            rights.append(right)
            prev = right
        return CompareNode(left, tuple(ops), tuple(rights), self.col(node))

    def _IfExp(self, node: ast.IfExp) -> Node:
        return IfNode(self.build(node.test), self.build(node.body), self.build(node.orelse), self.col(node))

    def _JoinedStr(self, node: ast.JoinedStr) -> Node:
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                parts.append(Const(v.value, self.col(node)))
            elif isinstance(v, ast.FormattedValue):
                if v.conversion not in (-1, None) or v.format_spec is not None:
                    raise self.fail(node, "conversions and formats in f-strings (like {x!r} or {x:>10}) are not "
                                          "allowed; use round(...) or concat(...)")
                parts.append(self.build(v.value))
            else:
                raise self.fail(node, "this f-string is not allowed")
        return CallNode("concat", tuple(parts), (), FUNCTIONS["concat"], None, self.col(node))

    def _Call(self, node: ast.Call) -> Node:
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr.startswith("_"):
                raise self.fail(func, f"names starting with '_' are not allowed ('.{func.attr}')")
            if func.attr in FUNCTIONS or func.attr in self.extra:
                raise self.fail(func, f"methods are not available; write {func.attr}(x) instead of x.{func.attr}()")
            raise self.fail(func, f"methods like .{func.attr}() are not available; only the library functions can "
                                  "be called, by name, e.g. lower(name)")
        if not isinstance(func, ast.Name):
            self.build(func)            # a more specific problem first (lambda, '_' names...)
            raise self.fail(node, "only the library functions can be called, by name, e.g. lower(name)")
        name = func.id
        if name.startswith("_"):
            raise self.fail(func, f"names starting with '_' are not allowed ('{name}')")
        extra = self.extra.get(name)
        fn = None if extra is not None else FUNCTIONS.get(name)
        if fn is None and extra is None:
            known = set(FUNCTIONS) | set(self.extra)
            raise self.fail(func, f"unknown function '{name}'{suggest(name, known)} "
                                  f"(available: {', '.join(sorted(known))})", "function")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail(a, _FORBIDDEN[ast.Starred])
        for k in node.keywords:
            if k.arg is None:
                raise self.fail(k.value, "'**' unpacking is not allowed in expressions")
            if k.arg.startswith("_"):
                raise self.fail(k.value, f"names starting with '_' are not allowed ('{k.arg}')")
        args = tuple(self.build(a) for a in node.args)
        kwargs = tuple((k.arg, self.build(k.value)) for k in node.keywords)
        col = self.col(node)
        if fn is not None:
            self._check_call(node, fn, args, kwargs)
        else:
            self._check_extra(node, name, extra, args, kwargs)
        self.functions.add(name)
        return CallNode(name, args, kwargs, fn, extra, col)

    def _check_call(self, node: ast.Call, fn: Function, args: tuple, kwargs: tuple) -> None:
        n = len(args)
        if kwargs and not fn.keywords:
            k = node.keywords[0]
            raise self.fail(k.value, f"{fn.name}() does not take named arguments ('{k.arg}=...'); "
                                     f"pass the values in order: {fn.signature}", "arity")
        if n < fn.min_args or (fn.max_args is not None and n > fn.max_args):
            if fn.max_args is None:
                want = f"at least {fn.min_args} argument{'s' if fn.min_args != 1 else ''}"
            elif fn.min_args == fn.max_args:
                want = f"exactly {fn.min_args} argument{'s' if fn.min_args != 1 else ''}"
            else:
                want = f"{fn.min_args} to {fn.max_args} arguments"
            raise self.fail(node, f"{fn.name}() takes {want} but got {n}: {fn.signature}, e.g. {fn.example}", "arity")
        if fn.name == "exists":
            form = args[0]
            if not (isinstance(form, Const) and isinstance(form.value, str) and _FIELD_RE.match(form.value)):
                raise ExpressionError("the first argument of exists() must be a form name in quotes, "
                                      "e.g. exists('service_order', vehicle=id)", form.col, code="arity")
            for k, _ in kwargs:
                if k.startswith("_"):
                    raise self.fail(node, f"names starting with '_' are not allowed ('{k}')")
            self.exists_refs.add((form.value, tuple(k for k, _ in kwargs)))
        elif fn.name == "changed":
            f = args[0]
            if not (isinstance(f, Const) and isinstance(f.value, str) and _FIELD_RE.match(f.value)):
                raise ExpressionError("changed() needs a field name in quotes, e.g. changed('owner')",
                                      f.col, code="arity")
            self.changed.add(f.value)
            self.names.setdefault((f.value,), f.col)
        elif fn.name == "date_part":
            part = args[1]
            if isinstance(part, Const) and (not isinstance(part.value, str) or part.value.lower() not in DATE_PARTS):
                shown = part.value if isinstance(part.value, str) else rt.describe(part.value)
                raise ExpressionError(f"date_part(): unknown part '{shown}'{suggest(str(shown), DATE_PARTS)} "
                                      f"(use one of {', '.join(DATE_PARTS)})", part.col, code="arity")

    def _check_extra(self, node: ast.Call, name: str, fn: Callable, args: tuple, kwargs: tuple) -> None:
        import inspect
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(*args, **dict(kwargs))
        except TypeError as exc:
            raise self.fail(node, f"{name}(): wrong arguments ({exc})", "arity") from None


def _measure(tree: ast.AST) -> tuple[int, int, ast.AST | None]:
    """Number of value nodes, their deepest nesting, and the first node that is too deep."""
    count = 0
    deepest = 0
    too_deep = None
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        counted = isinstance(node, (ast.expr, ast.keyword))
        if counted:
            count += 1
            depth += 1
            if depth > deepest:
                deepest = depth
                if depth > MAX_DEPTH and too_deep is None:
                    too_deep = node
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth))
    return count, deepest, too_deep


def _bracket_depth(text: str) -> tuple[int, int | None]:
    depth = deepest = 0
    where = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP:
                if tok.string in "([{":
                    depth += 1
                    if depth > deepest:
                        deepest = depth
                        if depth > MAX_DEPTH and where is None:
                            where = tok.start[1] + 1
                elif tok.string in ")]}":
                    depth -= 1
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return deepest, where


def parse(source: Any, extra_functions: Mapping[str, Callable] | None = None) -> Parsed:
    """Parse and vet ``source``; raise ExpressionError with a column for anything wrong."""
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a text, not {rt.kind_name(source)}", code="syntax")
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"the expression is too long ({len(source)} characters; the limit is {MAX_SOURCE}); "
                              "split it into simpler rules or a formula field", MAX_SOURCE + 1, code="limit")
    extra = dict(extra_functions or {})
    for name in extra:
        if not isinstance(name, str) or not _FIELD_RE.match(name):
            raise ValueError(f"invalid extra function name {name!r}")
    text = source
    if "'''" not in text and '"""' not in text:
        text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")   # YAML block scalars
    stripped = text.lstrip()
    shift = len(text) - len(stripped)
    text = stripped
    if not text.strip():
        raise ExpressionError("the expression is empty", code="syntax")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise _syntax_message(text, exc, shift) from None
    except (MemoryError, RecursionError, ValueError):
        raise ExpressionError("the expression is too complex to read", 1, code="limit") from None
    deepest, where = _bracket_depth(text)
    if deepest > MAX_DEPTH:
        raise ExpressionError(f"the expression is nested too deeply ({deepest} levels of brackets; the limit is "
                              f"{MAX_DEPTH})", (where or 1) + shift, code="limit")
    builder = _Builder(text, shift, extra)
    count, depth, too_deep = _measure(tree.body)
    if count > MAX_NODES:
        raise ExpressionError(f"the expression has too many parts ({count}; the limit is {MAX_NODES}); split it "
                              "into simpler rules or a formula field", 1 + shift, code="limit")
    if depth > MAX_DEPTH:
        raise ExpressionError(f"the expression is nested too deeply ({depth} levels; the limit is {MAX_DEPTH})",
                              builder.col(too_deep) if too_deep is not None else 1 + shift, code="limit")
    if isinstance(tree.body, ast.Tuple):
        raise builder.fail(tree.body, "a comma at the top level makes a list; to combine conditions use 'and' or "
                                      "'or'", "syntax")
    root = builder.build(tree.body)
    return Parsed(root, builder.names, frozenset(builder.functions), frozenset(builder.exists_refs),
                  frozenset(builder.changed))
