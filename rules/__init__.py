"""The rule engine: business rules from ``rules/*.yaml`` and message templates.

Importing this package registers its compile step (``rules``, order 30) and
its after-install hook (cron and date timers); ``setup(runtime)`` registers
the service ``runtime.services['rules']``, the event subscriptions and the
timer handlers.
"""
from __future__ import annotations

from typing import Any

from engine.installer import register_after_install
from engine.scheduler import register_timer_handler

from . import compiler, tables  # noqa: F401  (registration side effects)
from .actions import compile_actions, run_actions  # noqa: F401  (the API for the flows engine)


def _after_install(conn: Any, old: Any, new: Any, runtime: Any) -> None:
    from .triggers import backfill_date_rule, sync_cron_timers
    rules = new.section("rules") or {}
    now = runtime.clock.now()
    sync_cron_timers(conn, new, rules, now)
    old_rules = (old.section("rules") or {}) if old is not None else {}
    for rule in rules.values():
        if rule.trigger.kind != "date" or not rule.enabled:
            continue
        prev = old_rules.get(rule.name)
        same = (prev is not None and prev.trigger.kind == "date" and prev.enabled and prev.trigger.form == rule.trigger.form
                and prev.trigger.date_field == rule.trigger.date_field and prev.trigger.offset == rule.trigger.offset
                and prev.trigger.at_time == rule.trigger.at_time)
        if not same:
            backfill_date_rule(conn, runtime, new, rule, now)


register_after_install("rules", _after_install)


def setup(runtime: Any) -> None:
    from .engine import RuleEngine
    from .triggers import CRON_TIMER, DATE_TIMER
    from .webhooks import TIMER_KIND, deliver
    engine = RuleEngine(runtime)
    runtime.services["rules"] = engine
    runtime.bus.subscribe("record.saving", engine.on_saving, order=50)
    runtime.bus.subscribe("record.created", engine.on_created, order=50)
    runtime.bus.subscribe("record.updated", engine.on_updated, order=50)
    runtime.bus.subscribe("record.deleted", engine.on_deleted, order=50)
    runtime.bus.subscribe("flow.transition", engine.on_transition, order=50)
    register_timer_handler(DATE_TIMER, engine.on_date_timer)
    register_timer_handler(CRON_TIMER, engine.on_cron_timer)
    register_timer_handler(TIMER_KIND, deliver)
