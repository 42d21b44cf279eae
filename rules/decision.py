"""(work in progress)"""
from __future__ import annotations

from typing import Any


def _todo(*a: Any, **k: Any) -> Any:
    raise NotImplementedError("rules.decision is being written")

evaluate_table = _todo
