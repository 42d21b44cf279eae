"""Definition problems with positions, collected all at once.

Like Jinja's ``TemplateSyntaxError(lineno, filename)``: every problem names a
file, line and column, and says what was expected, so an analyst can fix the
YAML from the message alone.  Validation collects every problem it finds
instead of stopping at the first one.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    col: int
    message: str

    def __post_init__(self) -> None:
        # One problem, one ``FILE:LINE:COL: message`` line: a value quoted in a
        # message may carry newlines from the YAML; show them escaped.
        if any(sep in self.message for sep in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"):
            object.__setattr__(self, "message", "\\n".join(self.message.splitlines()))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message}


class DefinitionError(Exception):
    """Raised when a package has problems; carries all of them."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Problems:
    """A collector; ``add`` never raises, ``raise_if_any`` at the end."""

    items: list[Problem] = field(default_factory=list)

    def add(self, file: str, line: int, col: int, message: str) -> None:
        self.items.append(Problem(file, line, col, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DefinitionError(self.items)


def suggest(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'score'?"`` or ``""`` -- appended to unknown-name messages."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices: Iterable[str], limit: int = 12) -> str:
    """``"expected one of: a, b, c"`` with a sensible length cap."""
    items = sorted(map(str, choices))
    shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
    return f"expected one of: {shown}"
