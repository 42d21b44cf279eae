"""``compile_expression`` and ``Expression``: the public face of the engine."""
from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any, Callable, Mapping

from . import runtime as rt
from .compiler import generate
from .context import EvalContext
from .errors import ExpressionError
from .interp import evaluate_env, fold
from .parser import Node, Parsed, parse

_NATIVE_ERRORS = (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError, RecursionError,
                  MemoryError)


class Expression:
    """A parsed, vetted and compiled expression. Evaluate it many times; it is immutable."""

    __slots__ = ("source", "names", "functions", "exists_refs", "changed_fields", "_root", "_fn", "_python")

    def __init__(self, source: str, parsed: Parsed, root: Node, fn: Callable[[Any, Any], Any], python: str):
        self.source = source
        #: every name path referenced, e.g. ('score',), ('customer', 'tier'); includes changed('x') fields
        self.names: frozenset[tuple[str, ...]] = frozenset(parsed.names)
        #: the library (and extra) functions called
        self.functions: frozenset[str] = parsed.functions
        #: (form, (field, ...)) of each exists('form', field=...) call, for reference checks
        self.exists_refs: frozenset = parsed.exists_refs
        #: fields named in changed('...')
        self.changed_fields: frozenset[str] = parsed.changed
        self._root = root
        self._fn = fn
        self._python = python

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, env: Mapping[str, Any] | None, ctx: EvalContext | None = None) -> Any:
        """The value for one record. ``env`` holds plain data; a missing name is None.

        Without ``ctx``, today()/now() use the real clock in UTC. Runtime problems (bad types,
        division by zero, limits) raise ExpressionError.
        """
        try:
            return self._fn(env if env is not None else {}, ctx)
        except ExpressionError as exc:
            if exc.col is None:
                self._locate(exc, env, ctx)
            if exc.source is None:
                exc.source = self.source
            raise
        except _NATIVE_ERRORS:
            # the compiled code is optimistic (native operations); when they fail, the reference
            # interpreter decides: the right value (e.g. a date vs a date-time) or a clear error
            return self.evaluate_reference(env, ctx)

    def _locate(self, exc: ExpressionError, env: Any, ctx: Any) -> None:
        """Give a runtime error the column of the part that failed (the reference interpreter knows)."""
        try:
            evaluate_env(self._root, env, ctx)
        except ExpressionError as located:
            if located.message == exc.message:
                exc.col = located.col
        except Exception:  # noqa: BLE001 - only looking for a position
            pass

    def evaluate_reference(self, env: Mapping[str, Any] | None, ctx: EvalContext | None = None) -> Any:
        """The same value computed by the slow reference interpreter (for tests and debugging)."""
        try:
            return evaluate_env(self._root, env, ctx)
        except ExpressionError as exc:
            if exc.source is None:
                exc.source = self.source
            raise
        except _NATIVE_ERRORS as exc:
            raise ExpressionError(rt.friendly(exc), source=self.source, code="runtime") from exc

    @property
    def is_constant(self) -> bool:
        """True if the value does not depend on names, the clock or callbacks."""
        from .parser import Const
        return isinstance(self._root, Const)

    @property
    def python_source(self) -> str:
        """The generated Python code (read-only; for debugging and review)."""
        return self._python

    def to_sql(self, resolve: Callable[[tuple[str, ...]], Any], dialect_name: str = "sqlite", *,
               ctx: EvalContext | None = None, mode: str = "auto") -> Any:
        """Translate to a SQLAlchemy Core expression (see ``engine.expressions.sql``).

        ``mode``: "auto" (a condition becomes a WHERE predicate, anything else a value),
        "filter" (always a predicate, by truthiness) or "value".
        """
        from .sql import to_sql
        return to_sql(self._root, self.source, resolve, dialect_name, ctx=ctx, mode=mode)


_CACHE: "OrderedDict[tuple, tuple[Parsed, Node, Callable, str]]" = OrderedDict()
_CACHE_SIZE = 2048
_LOCK = Lock()


def _build(source: str, extra: Mapping[str, Callable] | None) -> tuple[Parsed, Node, Callable, str]:
    key = None
    try:
        key = (source, tuple(sorted(extra.items())) if extra else ())
        hash(key)
    except TypeError:
        key = None
    if key is not None:
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
    parsed = parse(source, extra)
    root = fold(parsed.root)
    label = f"<expression {source[:60]!r}>"
    try:
        fn, python = generate(root, label)
    except (RecursionError, MemoryError, SyntaxError, ValueError):
        raise ExpressionError("the expression is too complex; split it into simpler rules or a formula field",
                              code="limit") from None
    built = (parsed, root, fn, python)
    if key is not None:
        with _LOCK:
            _CACHE[key] = built
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return built


def compile_expression(source: str, *, check_name: Callable[[tuple[str, ...]], str | None] | None = None,
                       extra_functions: Mapping[str, Callable] | None = None) -> Expression:
    """Parse, vet and compile ``source``.

    ``check_name(path)`` is called once for each distinct name path (``('score',)``,
    ``('customer', 'tier')``) and returns None if fine or an error message, which is raised
    as ExpressionError at the name's column. ``extra_functions`` adds (or overrides) functions
    callable by bare name; they are called with the argument values and never constant-folded.
    """
    try:
        parsed, root, fn, python = _build(source, extra_functions)
    except ExpressionError as exc:
        if exc.source is None:
            exc.source = source if isinstance(source, str) else None
        raise
    if check_name is not None:
        for path, col in parsed.names.items():
            problem = check_name(path)
            if problem:
                raise ExpressionError(problem, col, source=source, code="name")
    return Expression(source, parsed, root, fn, python)
