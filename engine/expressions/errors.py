"""The one error type of the expression engine."""
from __future__ import annotations


class ExpressionError(Exception):
    """Something is wrong with an expression, found at import time or while evaluating it.

    ``message`` is written for a business analyst: what is wrong and how to fix it.
    ``col`` is the 1-based column inside the expression source when known.
    ``str(error)`` is the message (without the column), so it can be shown as is.
    """

    def __init__(self, message: str, col: int | None = None, *, source: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.col = col
        self.source = source
        #: a short machine-readable kind: syntax, name, function, arity, forbidden, limit, runtime, sql, invalid
        self.code = code

    def __str__(self) -> str:  # the message only; see describe() for a caret line
        return self.message

    def __repr__(self) -> str:
        return f"ExpressionError({self.message!r}, col={self.col!r}, code={self.code!r})"

    def describe(self) -> str:
        """Message plus the source with a caret under the column, for logs and CLIs."""
        if not self.source or not self.col:
            return self.message
        line = self.source.replace("\n", " ")
        return f"{self.message}\n  {line}\n  {' ' * (self.col - 1)}^"
