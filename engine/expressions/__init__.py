"""Loom's expression language: safe, Python-like formulas written by business analysts.

    expr = compile_expression("score < 3 and source in ['referral', 'walk_in']", check_name=checker)
    expr.evaluate({"score": 2, "source": "referral"}, EvalContext(now=clock.now(), tz=app.tz))
    select(t).where(expr.to_sql(resolve, "postgresql", ctx=ctx))

Expressions are parsed and vetted once (``parser``), constant parts folded (``interp``),
compiled to a Python function (``compiler``) and can be translated to SQL (``sql``).
See docs/expressions.md.
"""
from .context import EvalContext
from .core import Expression, compile_expression
from .errors import ExpressionError
from .functions import FUNCTIONS, Function
from .parser import MAX_DEPTH, MAX_NODES, MAX_SOURCE
from .runtime import MAX_EXPONENT, MAX_INT_BITS, MAX_LENGTH

__all__ = [
    "compile_expression", "Expression", "ExpressionError", "EvalContext", "FUNCTIONS", "Function",
    "MAX_SOURCE", "MAX_NODES", "MAX_DEPTH", "MAX_LENGTH", "MAX_INT_BITS", "MAX_EXPONENT",
]
