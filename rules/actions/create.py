"""``create``: a new record of any form, e.g. a complaint from a bad survey."""
from __future__ import annotations

from typing import Any

from engine.errors import RecordInvalid

from .base import Action, ActionCompiler, ActionError, RunContext, jsonable, register_action
from .record_ops import compile_assignments


@register_action
class CreateAction(Action):
    """``create: {form: complaint, values: {customer: customer, severity: "'high'"}, owner: "..."}``.

    ``values`` are expressions over the triggering record.  The new record is
    ``created`` for the actions that follow (``created.id``...).
    """

    name = "create"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if not isinstance(spec, dict):
            c.error((), "'create' takes {form: <form>, values: {field: expression}}")
            return None
        for k in spec:
            if k not in ("form", "values", "owner", "state"):
                c.error((k,), f"unknown key '{k}' for create; expected form, values, owner, state", at_key=True)
        target = spec.get("form")
        if not c.check_form(("form",), target):
            return None
        values = compile_assignments(c, spec.get("values") or {}, target, ("values",), "create", expr_form=c.form) \
            if spec.get("values") else ()
        owner = c.expr(("owner",), spec["owner"]) if spec.get("owner") is not None else None
        return {"form": target, "values": values, "owner": owner, "state": spec.get("state")}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from . import who
        env = rc.env()
        data = {}
        for name, e in params["values"]:
            v = rc.evaluate(e, env)
            if name == "owner":
                continue
            data[name] = jsonable(v)
        owner = rc.evaluate(params["owner"], env) if params["owner"] is not None else None
        if params.get("state"):
            data["state"] = params["state"]
        try:
            new = rc.records.create(rc.sys, params["form"], data, trusted=True, owner=owner or None)
        except RecordInvalid as exc:
            raise RecordInvalid([dict(e, field=f"{params['form']}.{e.get('field') or '-'}",
                                      message=f"{who(rc.source)} could not create a {params['form']}: {e['message']}")
                                 for e in exc.errors]) from None
        rc.created = new
        rc.invalidate()
        return {"form": params["form"], "id": new["id"]}


__all__ = ["CreateAction", "ActionError"]
