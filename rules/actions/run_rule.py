"""``run_rule``: run another rule's condition and actions on the same record."""
from __future__ import annotations

from typing import Any

from engine.errors import RecordInvalid
from engine.uow import MAX_DEPTH

from .base import Action, ActionCompiler, ActionError, RunContext, register_action, rule_names_of


@register_action
class RunRuleAction(Action):
    """``run_rule: other_rule`` (or ``{rule: other_rule}``).

    The called rule runs one level deeper: a chain of rules calling rules is
    stopped at ``engine.uow.MAX_DEPTH`` with a clear error, like record
    changes triggering rules.
    """

    name = "run_rule"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        name = spec.get("rule") if isinstance(spec, dict) else spec
        known = rule_names_of(c.ctx)
        if not isinstance(name, str) or name not in known:
            from engine.problems import one_of, suggest
            c.error(("rule",) if isinstance(spec, dict) else (), f"unknown rule '{name}'{suggest(str(name), known) or '; ' + one_of(known)}")
            return None
        other = known[name]
        other_on = other.get("on") if isinstance(other.get("on"), dict) else {}
        other_form = next((v for k, v in other_on.items() if k in ("created", "updated", "deleted", "changed", "transition", "date")
                           and isinstance(v, str)), None) or other_on.get("form")
        if other_form and c.form and other_form != c.form:
            c.error(("rule",) if isinstance(spec, dict) else (),
                    f"rule '{name}' works on '{other_form}' records, this one on '{c.form}'")
            return None
        return name

    def run(self, rc: RunContext, params: Any) -> dict | None:
        uow = rc.uow
        if uow.depth >= MAX_DEPTH:
            raise RecordInvalid([{"field": None, "code": "loop", "message":
                                  f"rules called rules {MAX_DEPTH} levels deep (run_rule '{params}' from '{rc.source}'); "
                                  f"a rule probably calls itself -- add a condition that stops it"}])
        engine = uow.service("rules")
        rule = engine.rule(uow.app, params)
        if rule is None:
            raise ActionError(f"rule '{params}' no longer exists")
        outcome = engine.fire(uow.deeper(), rule, rc.form, rc.record, trigger=f"run_rule:{rc.source}",
                              occurrence=rc.occurrence, old=rc.old, payload=rc.payload, event=rc.event)
        rc.reload()
        return {"rule": params, "outcome": outcome}
