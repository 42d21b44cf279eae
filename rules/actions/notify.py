"""``notify``: a message from a template to users or customers, through the outbox."""
from __future__ import annotations

from typing import Any

from .base import Action, ActionCompiler, RunContext, register_action


@register_action
class NotifyAction(Action):
    """``notify: {template: lead_assigned, to: owner, channel: sms, delay: 1h}``; see :mod:`rules.notify`."""

    name = "notify"
    flush_before = False     # renders from the staged record; nothing needs to be written first

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..notify import compile_notify
        return compile_notify(c, spec)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..notify import send
        return send(rc, params)
