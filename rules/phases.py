"""Which part of a ``created`` rule can run *before* the record is inserted (the pre-save phase).

Nobody writes this down in YAML: it is inferred at compile time, once per app definition, from what a
rule reads and does.  A rule on ``on: {created: <form>}`` gets ``RuleDef.presave``:

* ``None`` -- the rule runs after the INSERT, as every rule did before (its condition reads something
  that only exists once the record is stored: ``id``, ``state``, an auto-number, an SLA due field...);
* ``n`` -- its condition and its first ``n`` actions can run on the record about to be inserted.  The
  pre-save actions are those that only change the new record's own fields, computed in memory:
  ``set``, ``decide``, ``assign`` (its database reads -- candidates, the locked round-robin cursor --
  happen in the same transaction, before the INSERT), ``add_tag``, ``remove_tag``; each with a guard
  and values that read no unsafe name.  Action ``n`` (notify, create, start_flow, run_rule, a task,
  a webhook...) and everything after it run after the INSERT, in the same transaction, with the id.

At run time the engine walks the form's ``created`` rules in their usual order (priority, then file
order) and stops the pre-save phase at the first rule that cannot go on before the INSERT: everything
from there on runs after it, exactly in the same order as before -- so a later rule still sees an
earlier rule's changes, and nothing runs earlier than a rule before it.

A whole form stays out of the pre-save phase (every rule ``None``) when something besides the rules
may change the new record between its INSERT and the rules: its workflow's initial state has
``on_enter`` actions or the workflow has automatic transitions, or a journey works on the form.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .actions.base import Literal, Lookup, expr_paths

# actions that only stage values on the triggering record (see RunContext.stage), reading the
# database at most through look-ups that do not need the record's id
PRESAVE_ACTIONS = ("set", "decide", "assign", "add_tag", "remove_tag")
# names a pre-save rule may not read on its record: they are only known after the INSERT
ALWAYS_UNSAFE = ("id", "state")


def blocked_forms(flows: Mapping[str, Any]) -> set[str]:
    """Forms whose new records may be changed by a flow before their ``created`` rules run."""
    out = set()
    for d in (flows or {}).values():
        form = getattr(d, "form", None)
        if form is None:
            continue
        if getattr(d, "kind", "workflow") != "workflow":
            out.add(form)                       # a journey: enrolment may act on the record at once
            continue
        initial = (getattr(d, "states", None) or {}).get(getattr(d, "initial", None))
        if initial is not None and getattr(initial, "on_enter", ()):
            out.add(form)
        if any(getattr(t, "auto", None) is not None for t in (getattr(d, "transitions", None) or {}).values()):
            out.add(form)
    return out


def unsafe_fields(form: str, form_spec: Mapping[str, Any], flows: Mapping[str, Any]) -> set[str]:
    """Fields of ``form`` that get their value at or after the INSERT."""
    out = set(ALWAYS_UNSAFE)
    for name, f in ((form_spec or {}).get("fields") or {}).items():
        if isinstance(f, dict) and f.get("type") == "auto_number":
            out.add(name)
    for d in (flows or {}).values():
        if getattr(d, "form", None) == form:
            for s in getattr(d, "sla", ()) or ():
                if getattr(s, "due_field", None):
                    out.add(s.due_field)
    return out


def _fields_read(expr: Any, *, user_expr: bool = False) -> Iterable[tuple]:
    if expr is None or isinstance(expr, Literal):
        return ()
    if isinstance(expr, Lookup):
        return [p for _, e in expr.conds for p in _fields_read(e)]
    paths = expr_paths(expr)
    if user_expr:    # assign's where: user attributes, plus record.<field> and the rule roots
        from .actions.base import RULE_ROOTS
        paths = {p for p in paths if p and (p[0] == "record" or p[0] in RULE_ROOTS)}
    return paths


def _safe(exprs: Iterable[Any], unsafe: set[str], *, user_expr: bool = False) -> bool:
    for e in exprs:
        for path in _fields_read(e, user_expr=user_expr):
            if not path:
                continue
            head = str(path[0])
            if head in ("record", "old"):
                if len(path) > 1 and str(path[1]) in unsafe:
                    return False
                continue
            if head in unsafe:
                return False
    return True


def _assign_exprs(p: Any) -> tuple[list, list]:
    """(record expressions, user expressions) an assign reads -- open_when filters *other* records in SQL."""
    rec, users = [], []
    while p is not None:
        rec += [p.users, p.fallback_user] + [e for _, e in p.match]
        users.append(p.where)
        p = p.fallback
    return rec, users


def action_presave(action: Any, unsafe: set[str], tables: Mapping[str, Any]) -> bool:
    if action.kind not in PRESAVE_ACTIONS or action.params is None:
        return False
    if not _safe([action.when], unsafe):
        return False
    p = action.params
    if action.kind == "set":
        return _safe([e for _, e in p], unsafe)
    if action.kind in ("add_tag", "remove_tag"):
        return _safe([p[1]], unsafe)
    if action.kind == "decide":
        table = tables.get(p[0])
        if table is None:
            return False
        cells = [c.test for row in table.rows for c in row.cells]
        return _safe(list(table.inputs) + cells, unsafe)
    if action.kind == "assign":
        rec, users = _assign_exprs(p)
        return _safe(rec, unsafe) and _safe(users, unsafe, user_expr=True)
    return False


def presave_count(rule: Any, unsafe: set[str], tables: Mapping[str, Any]) -> int | None:
    """None: the rule runs after the INSERT; n: its condition and first n actions can run before it."""
    if rule.trigger.kind != "created" or not _safe([rule.when], unsafe):
        return None
    n = 0
    for a in rule.actions:
        if not action_presave(a, unsafe, tables):
            break
        n += 1
    return n
