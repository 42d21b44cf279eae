"""``assign``, ``claim_from_pool`` and ``return_to_pool``; the strategies live in :mod:`rules.assignment`."""
from __future__ import annotations

from typing import Any

from .base import Action, ActionCompiler, RunContext, register_action


@register_action
class AssignAction(Action):
    """``assign: {strategy: round_robin, role: sales_consultant, match: {region: region}, fallback: {...}}``."""

    name = "assign"
    mutates_record = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..assignment import compile_assign
        return compile_assign(c, spec)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..assignment import assign
        return assign(rc, params)


@register_action
class ClaimFromPoolAction(Action):
    """``claim_from_pool: {cap: 20}`` -- the acting user takes a pool record (flows' ``claim`` transition)."""

    name = "claim_from_pool"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..assignment import compile_pool
        return compile_pool(c, spec, claiming=True)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..assignment import claim_from_pool
        return claim_from_pool(rc, params)


@register_action
class ReturnToPoolAction(Action):
    """``return_to_pool`` -- owner emptied, ``in_pool`` true, ``pool_entered_at`` now."""

    name = "return_to_pool"
    mutates_record = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..assignment import compile_pool
        return compile_pool(c, spec, claiming=False)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..assignment import return_to_pool
        return return_to_pool(rc, params)
