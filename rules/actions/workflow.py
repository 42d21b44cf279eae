"""``transition`` and ``start_flow``: hand over to the flows engine (``uow.service('flows')``)."""
from __future__ import annotations

from typing import Any

from .base import Action, ActionCompiler, ActionError, RunContext, flow_names_of, register_action


def _flows(rc: RunContext) -> Any:
    flows = rc.uow.runtime.services.get("flows")
    if flows is None:
        raise ActionError("the flows engine is not running, so transitions and flows cannot be started")
    return flows


@register_action
class TransitionAction(Action):
    """``transition: close`` or ``{name: close, comment: "..."}`` -- fire a workflow transition as the system."""

    name = "transition"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if isinstance(spec, dict):
            for k in spec:
                if k not in ("name", "comment"):
                    c.error((k,), f"unknown key '{k}' for transition; expected name, comment", at_key=True)
            name, comment = spec.get("name"), spec.get("comment")
        else:
            name, comment = spec, None
        if not isinstance(name, str) or not name:
            c.error(("name",) if isinstance(spec, dict) else (), "'transition' needs the transition's name")
            return None
        if c.form is None:
            c.error((), "'transition' needs a triggering record; this rule has none")
            return None
        names = set()
        for flow in flow_names_of(c.ctx).values():
            if flow.get("form") == c.form and (flow.get("kind") or "workflow") == "workflow":
                names |= set((flow.get("transitions") or {}).keys())
        if names and name not in names:
            from engine.problems import one_of, suggest
            c.error(("name",) if isinstance(spec, dict) else (),
                    f"form '{c.form}' has no transition '{name}'{suggest(name, names) or '; ' + one_of(names)}")
            return None
        return {"name": name, "comment": comment}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        flows = _flows(rc)
        result = flows.transition(rc.sys, rc.form, rc.record_id, params["name"], comment=params.get("comment"))
        rc.reload()
        return {"transition": params["name"], "state": rc.record.get("state"),
                **({"result": result} if isinstance(result, dict) and len(str(result)) < 500 else {})}


@register_action
class StartFlowAction(Action):
    """``start_flow: care_90`` -- enrol the record in a journey (or start a workflow)."""

    name = "start_flow"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        name = spec.get("flow") if isinstance(spec, dict) else spec
        flows = flow_names_of(c.ctx)
        if not isinstance(name, str) or name not in flows:
            from engine.problems import one_of, suggest
            c.error(("flow",) if isinstance(spec, dict) else (), f"unknown flow '{name}'{suggest(str(name), flows) or '; ' + one_of(flows)}")
            return None
        if c.form and flows[name].get("form") not in (None, c.form):
            c.error(("flow",) if isinstance(spec, dict) else (),
                    f"flow '{name}' is for '{flows[name].get('form')}' records, this rule's record is a '{c.form}'")
            return None
        return name

    def run(self, rc: RunContext, params: Any) -> dict | None:
        flows = _flows(rc)
        start = getattr(flows, "start_flow", None) or getattr(flows, "start", None) or getattr(flows, "enrol", None)
        if start is None:
            raise ActionError("the flows engine cannot start flows from rules (no start_flow service)")
        result = start(rc.sys, params, rc.form, rc.record_id)
        return {"flow": params, **({"result": result} if isinstance(result, (dict, str, int)) else {})}
