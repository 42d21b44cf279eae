"""Actions on the triggering record itself: ``set``, ``add_tag``, ``remove_tag``.

They stage values; the run context writes them with one update.
"""
from __future__ import annotations

from typing import Any

from .base import Action, ActionCompiler, ActionError, DeferredLookup, Lookup, RunContext, jsonable, register_action

_UNSETTABLE = ("id", "created_at", "updated_at", "created_by")


def compile_assignments(c: ActionCompiler, spec: Any, form: str | None, sub: tuple = (), what: str = "set",
                        extra: tuple = (), expr_form: str | None = None) -> tuple:
    """``{field: expression, ...}`` for fields of ``form`` -> ((field, compiled), ...).

    The expressions name fields of ``expr_form`` (default: ``form``).
    """
    if not isinstance(spec, dict) or not spec:
        c.error(sub, f"'{what}' takes a mapping of field: expression, e.g. {{level: \"'H'\"}}")
        return ()
    out = []
    fields = c.fields(form)
    for name, source in spec.items():
        if name in _UNSETTABLE:
            c.error(sub + (name,), f"'{name}' is maintained by the system and cannot be set", at_key=True)
            continue
        if name not in ("owner", "state") and not c.check_field(sub + (name,), name, form, what=what):
            continue
        ftype = (fields.get(name) or {}).get("type")
        if ftype in ("formula", "lookup", "auto_number", "child_table"):
            c.error(sub + (name,), f"field '{name}' is a {ftype} field and cannot be set by a rule", at_key=True)
            continue
        e = c.value_expr(sub + (name,), source, expr_form or form, extra)
        if e is not None:
            out.append((name, e))
    return tuple(out)


@register_action
class SetAction(Action):
    """``set: {field: expression}`` on the triggering record (``owner`` and ``state`` too)."""

    name = "set"
    mutates_record = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if c.form is None:
            c.error((), "'set' changes the triggering record, but this rule has no record; use update_many")
            return ()
        return compile_assignments(c, spec, c.form)

    def run(self, rc: RunContext, params: Any) -> dict | None:
        if rc.record_id is None and not rc.presave:
            raise ActionError("there is no record to set values on")
        env = rc.env()
        values = {name: e.defer_in(rc, env) if rc.presave and isinstance(e, Lookup) and e.deferrable
                  else rc.evaluate(e, env) for name, e in params}
        changed = {k: v for k, v in values.items() if rc.record.get(k) != v}
        for name, e in params:
            if isinstance(e, Lookup) and values[name] is not None and not isinstance(values[name], DeferredLookup):
                rc.verified[name] = (e.form, values[name])
        for k, v in values.items():
            rc.stage(k, v)
        if not changed:
            return None
        return {"set": {k: _show(v) for k, v in changed.items()}}


def _show(value: Any) -> Any:
    return jsonable(value)


class _TagAction(Action):
    mutates_record = True
    adding = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if c.form is None:
            c.error((), f"'{self.name}' changes the triggering record, but this rule has no record")
            return None
        if isinstance(spec, dict):
            field = spec.get("field", "tags")
            tag = spec.get("tag")
            if tag is None:
                c.error((), f"'{self.name}' needs 'tag: <text>'", at_key=True)
                return None
            for k in spec:
                if k not in ("field", "tag"):
                    c.error((k,), f"unknown key '{k}' for {self.name}; expected field, tag", at_key=True)
        else:
            field, tag = "tags", spec
        sub = ("field",) if isinstance(spec, dict) else ()
        if not c.check_field(sub, field, types=("tags", "multi_select", "checkbox_group"), what=self.name):
            return None
        tsub = ("tag",) if isinstance(spec, dict) else ()
        if not isinstance(tag, str) or not tag:
            c.error(tsub, f"'{self.name}': the tag must be text")
            return None
        # a plain word is the tag itself; quote or compute to use an expression
        if tag.replace("_", "").replace("-", "").isalnum() and not c.fields().get(tag):
            from .base import Literal
            return (field, Literal(tag))
        return (field, c.expr(tsub, tag))

    def run(self, rc: RunContext, params: Any) -> dict | None:
        field, expr = params
        tag = rc.evaluate(expr)
        if tag in (None, ""):
            return None
        current = list(rc.record.get(field) or [])
        if self.adding:
            if tag in current:
                return None
            new = current + [tag]
        else:
            if tag not in current:
                return None
            new = [t for t in current if t != tag]
        rc.stage(field, new)
        return {"field": field, "tag": tag}


@register_action
class AddTagAction(_TagAction):
    name = "add_tag"
    adding = True


@register_action
class RemoveTagAction(_TagAction):
    name = "remove_tag"
    adding = False
