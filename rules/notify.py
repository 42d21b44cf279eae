"""(work in progress)"""
from __future__ import annotations

from typing import Any


def _todo(*a: Any, **k: Any) -> Any:
    raise NotImplementedError("rules.notify is being written")

compile_recipient = resolve_users = compile_notify = send = _todo
