"""Following link fields one hop in rule expressions (``customer.tier``, ``record.dealer.region``)."""
from __future__ import annotations

from typing import Any


def link_env(rc: Any, fd: Any, env: dict, record: Any) -> None:
    """Hook: make link fields followable in ``env`` (filled in once the expression engine's convention is known)."""
    return None
