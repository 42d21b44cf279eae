"""Compile step for ``rules/*.yaml`` (order 30, after forms and flows) and ``templates/``.

Runs after the JSON Schema checks (shapes and unknown keys); checks meaning
with positions: trigger forms and fields, roles, templates, decision tables,
rule references, cron texts, durations and every expression (names checked
against the form the rule works on).

Results in the app definition:

* ``app.section('rules')`` -- name -> :class:`RuleDef`;
* ``app.section('decision_tables')`` -- name -> :class:`DecisionTable`;
* ``app.section('rules_index')`` -- :class:`RuleSet` (rules by event, for the engine);
* ``app.section('templates')`` -- name -> {kind, variants} of ``templates/*.j2``.
"""
from __future__ import annotations

from typing import Any

from engine.definitions import CompileContext, register_step, text
from engine.problems import one_of, suggest

from .actions import compile_actions
from .actions.base import ActionCompiler, forms_of
from .decision import compile_table
from .model import RuleDef, RuleSet
from .templates import check_templates
from .triggers import EVENT_OF, compile_trigger


def _decide_usage(ctx: CompileContext) -> dict[str, list[str]]:
    """decision table name -> forms of the rules (with a plain trigger form) whose actions decide with it."""
    usage: dict[str, list[str]] = {}

    def scan(actions: Any, form: str | None) -> None:
        for a in actions or []:
            if not isinstance(a, dict):
                continue
            if "decide" in a:
                d = a["decide"]
                name = d.get("table") if isinstance(d, dict) else d
                if isinstance(name, str) and form:
                    usage.setdefault(name, [])
                    if form not in usage[name]:
                        usage[name].append(form)
            if isinstance(a.get("for_each"), dict):
                scan(a["for_each"].get("actions"), a["for_each"].get("form"))

    for src in ctx.yaml_files("rules"):
        if isinstance(src.data, dict):
            for r in src.data.get("rules") or []:
                if isinstance(r, dict) and isinstance(r.get("on"), dict):
                    on = r["on"]
                    form = next((v for k, v in on.items() if k in ("created", "updated", "deleted", "changed",
                                                                   "transition", "date") and isinstance(v, str)), None)
                    scan(r.get("actions"), form)
    return usage


def compile_rules(ctx: CompileContext) -> None:
    ctx.out["templates"] = check_templates(ctx)
    forms = forms_of(ctx)
    usage = _decide_usage(ctx)
    tables: dict[str, Any] = {}
    seen_tables: dict[str, tuple[str, int]] = {}
    for src in ctx.yaml_files("rules"):
        if not isinstance(src.data, dict):
            continue
        for i, raw in enumerate(src.data.get("decision_tables") or []):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            path = ("decision_tables", i)
            name = raw["name"]
            if name in seen_tables:
                f, line = seen_tables[name]
                ctx.error(src.path, path + ("name",), f"decision table '{name}' is already defined at {f}:{line}")
                continue
            seen_tables[name] = (src.path, src.loaded.position(path + ("name",))[0])
            form = raw.get("form")
            if form is not None and form not in forms:
                ctx.error(src.path, path + ("form",), f"unknown form '{form}'{suggest(str(form), forms) or '; ' + one_of(forms)}")
                continue
            used = [form] if form else usage.get(name, [])
            if len(used) > 1:
                # inputs must work for every form using the table: check against each, compile against the first
                for other in used[1:]:
                    c = ActionCompiler(ctx, src.path, path, other)
                    for j, inp in enumerate(raw.get("inputs") or []):
                        c.expr(("inputs", j), inp)
            checker_form = used[0] if used else None

            def checker_for(extra: tuple, _form: str | None = checker_form):
                if _form is None:
                    return lambda p: None
                c = ActionCompiler(ctx, src.path, path, _form)
                return c.checker(_form, extra)

            table = compile_table(ctx, src.path, path, raw, checker_for)
            if table is not None:
                tables[name] = table

    rules: dict[str, RuleDef] = {}
    positions: dict[str, tuple[str, int]] = {}
    order = 0
    for src in ctx.yaml_files("rules"):
        if not isinstance(src.data, dict):
            continue
        for i, raw in enumerate(src.data.get("rules") or []):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            path = ("rules", i)
            name = raw["name"]
            line = src.loaded.position(path + ("name",))[0]
            if name in positions:
                f, l0 = positions[name]
                ctx.error(src.path, path + ("name",), f"rule '{name}' is already defined at {f}:{l0}; rule names are unique per app")
                continue
            positions[name] = (src.path, line)
            trig = compile_trigger(ctx, src.path, path, raw.get("on"), forms)
            if trig is None:
                # still check the condition and actions, so every problem is reported at once
                on = raw.get("on") if isinstance(raw.get("on"), dict) else {}
                guess = next((v for k, v in on.items() if k in ("created", "updated", "deleted", "changed", "transition",
                                                                 "date", "webhook") and isinstance(v, str) and v in forms), None)
                if guess is None and any(k in on for k in ("created", "updated", "deleted", "changed", "transition", "date")):
                    continue   # the form is unknown: checking names against nothing would only add noise
                c = ActionCompiler(ctx, src.path, path, guess)
                if raw.get("when") is not None:
                    c.expr(("when",), raw.get("when"))
                compile_actions(ctx, src.path, path + ("actions",), raw.get("actions"), guess)
                continue
            c = ActionCompiler(ctx, src.path, path, trig.form)
            when = c.expr(("when",), raw.get("when")) if raw.get("when") is not None else None
            actions = compile_actions(ctx, src.path, path + ("actions",), raw.get("actions"), trig.form)
            if not raw.get("actions"):
                ctx.error(src.path, path + ("actions",), "a rule needs at least one action")
            needs = set(c.needs)
            for a in actions:
                needs |= set(a.needs)
            order += 1
            rules[name] = RuleDef(name=name, label=text(raw.get("label") or name), trigger=trig, when=when,
                                  priority=int(raw.get("priority", 100)), enabled=raw.get("enabled", True) is not False,
                                  actions=actions, file=src.path, line=line, order=order, needs=frozenset(needs))
    _infer_phases(ctx, rules, tables, forms)
    by_event: dict[tuple, list] = {}
    for rule in rules.values():
        if not rule.enabled:
            continue
        by_event.setdefault((EVENT_OF[rule.trigger.kind], rule.trigger.form), []).append(rule)
    index = {k: tuple(sorted(v, key=lambda r: r.sort_key)) for k, v in by_event.items()}
    ctx.out["rules"] = rules
    ctx.out["decision_tables"] = tables
    ctx.out["rules_index"] = RuleSet(rules, tables, index)


def _infer_phases(ctx: CompileContext, rules: dict, tables: dict, forms: dict) -> None:
    """Set ``RuleDef.presave`` on ``created`` rules (see :mod:`rules.phases`); analysts write nothing."""
    from dataclasses import replace
    from .phases import blocked_forms, mark_deferrable_lookups, presave_count, unsafe_fields
    flows = ctx.out.get("flows") or {}
    blocked = blocked_forms(flows)
    unsafe: dict[str, set] = {}
    for name, rule in list(rules.items()):
        form = rule.trigger.form
        if rule.trigger.kind != "created" or form is None or form in blocked:
            continue
        if form not in unsafe:
            unsafe[form] = unsafe_fields(form, forms.get(form) or {}, flows)
        n = presave_count(rule, unsafe[form], tables)
        if n is not None:
            rules[name] = replace(rule, presave=n)
    formdefs = ctx.out.get("forms") or {}
    for form in unsafe:
        created = sorted((r for r in rules.values() if r.enabled and r.trigger.kind == "created" and r.trigger.form == form),
                         key=lambda r: r.sort_key)
        if form in formdefs:
            mark_deferrable_lookups(created, formdefs[form], tables)


register_step("rules", 30, compile_rules)
