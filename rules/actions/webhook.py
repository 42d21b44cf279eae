"""``webhook``: an outgoing, HMAC-signed HTTP POST, delivered by a timer with retries."""
from __future__ import annotations

from typing import Any

from .base import Action, ActionCompiler, RunContext, register_action


@register_action
class WebhookAction(Action):
    """``webhook: {url: https://..., body: {lead: id, phone: phone}, secret_env: CRM_HOOK_SECRET}``; see :mod:`rules.webhooks`."""

    name = "webhook"
    flush_before = False     # the body is taken from the staged record; delivery happens after commit

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..webhooks import compile_webhook
        return compile_webhook(c, spec)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..webhooks import queue_webhook
        return queue_webhook(rc, params)
