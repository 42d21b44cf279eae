"""``decide``: apply a decision table and set its outputs on the record."""
from __future__ import annotations

from typing import Any

from engine.problems import one_of, suggest

from ..decision import evaluate_table
from .base import Action, ActionCompiler, ActionError, RunContext, register_action, table_names_of


@register_action
class DecideAction(Action):
    """``decide: lead_scoring`` sets each output on the field of the same name;
    ``decide: {table: lead_scoring, set: {lead_score: score}}`` sets fields from outputs (field: output,
    like ``set``); ``set: {}`` sets nothing -- the outputs are ``event.decision.<output>`` for later actions.
    """

    name = "decide"
    mutates_record = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if isinstance(spec, dict):
            for k in spec:
                if k not in ("table", "set"):
                    c.error((k,), f"unknown key '{k}' for decide; expected table, set", at_key=True)
            name, mapping = spec.get("table"), spec.get("set")
            sub = ("table",)
        else:
            name, mapping, sub = spec, None, ()
        tables = table_names_of(c.ctx)
        if not isinstance(name, str) or name not in tables:
            c.error(sub, f"unknown decision table '{name}'{suggest(str(name), tables) or '; ' + one_of(tables)}")
            return None
        outputs = [o for o in (tables[name].get("outputs") or []) if isinstance(o, str)]
        if mapping is None:
            pairs = [(o, o) for o in outputs]
            for o in outputs:
                if c.form is None or o not in c.fields():
                    c.error(sub, f"decision table '{name}' outputs '{o}', which is not a field of '{c.form}'; "
                                 f"map it with decide: {{table: {name}, set: {{{o}: <field>}}}}")
                    return None
        elif not isinstance(mapping, dict):
            c.error(("set",), "'set' maps fields to outputs: {field: output}")
            return None
        else:
            pairs = []
            for f, o in mapping.items():
                ok = c.check_field(("set", f), f, what="decide")
                if o not in outputs:
                    c.error(("set", f), f"decision table '{name}' has no output '{o}'{suggest(str(o), outputs) or '; ' + one_of(outputs)}")
                    ok = False
                if ok:
                    pairs.append((o, f))
        return (name, tuple(pairs))

    def run(self, rc: RunContext, params: Any) -> dict | None:
        name, mapping = params
        table = (rc.app.section("decision_tables") or {}).get(name)
        if table is None:
            raise ActionError(f"decision table '{name}' is not defined")
        result = evaluate_table(rc, table, rc.env())
        if result is None:
            return {"table": name, "matched": False}
        out = {}
        for output, field in mapping:
            value = result.get(output)
            if rc.record.get(field) != value:
                out[field] = value
            rc.stage(field, value)
        rc.event = dict(rc.event, decision=result)
        rc.show_event()           # event.decision.<output> is new to the expressions
        return {"table": name, "matched": True, "outputs": result}
