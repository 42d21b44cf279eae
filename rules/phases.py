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

A pre-save ``set`` of a link field from a look-up (``dealer: {lookup: dealer, where: {code: ...}}``)
need not wait for its SELECT when no later pre-save condition, guard or value reads that field and
the field is neither required nor unique: :func:`mark_deferrable_lookups` marks such look-ups, and
the record service runs them as a subquery of the INSERT (``... VALUES (..., (SELECT id FROM ...
LIMIT 1)) RETURNING id, dealer``) -- one round trip to the database fewer per record.  If one of the
form's own checks reads the field before the INSERT (a validation, a formula), the record service
runs the look-up right then.  After the INSERT the field has its value as before.
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


def _action_reads(action: Any, tables: Mapping[str, Any]) -> tuple[list, list] | None:
    """(record expressions, user expressions) a pre-save action reads; None if it can't run pre-save."""
    if action.kind not in PRESAVE_ACTIONS or action.params is None:
        return None
    p = action.params
    if action.kind == "set":
        return [action.when] + [e for _, e in p], []
    if action.kind in ("add_tag", "remove_tag"):
        return [action.when, p[1]], []
    if action.kind == "decide":
        table = tables.get(p[0])
        if table is None:
            return None
        cells = [c.test for row in table.rows for c in row.cells]
        return [action.when] + list(table.inputs) + cells, []
    if action.kind == "assign":
        rec, users = _assign_exprs(p)
        return [action.when] + rec, users
    return None


def action_presave(action: Any, unsafe: set[str], tables: Mapping[str, Any]) -> bool:
    reads = _action_reads(action, tables)
    return reads is not None and _safe(reads[0], unsafe) and _safe(reads[1], unsafe, user_expr=True)


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


def _reads_field(exprs: Iterable[Any], name: str, *, user_expr: bool = False) -> bool:
    """Whether any of ``exprs`` may read field ``name`` of the record (a bare ``record`` reads all)."""
    for e in exprs:
        for path in _fields_read(e, user_expr=user_expr):
            if not path:
                continue
            head = str(path[0])
            if head in ("record", "old") and (len(path) == 1 or str(path[1]) == name):
                return True
            if head == name:
                return True
    return False


def _deferrable_field(formdef: Any, name: str) -> bool:
    """A plain optional link: the required, unique and link checks before the INSERT need no value."""
    f = formdef.fields.get(name)
    if f is None or f.type != "link" or f.required or f.required_when is not None or f.unique or f.pii:
        return False
    return not any(isinstance(o.unique, tuple) and name in o.unique for o in formdef.fields.values())


def mark_deferrable_lookups(rules: list, formdef: Any, tables: Mapping[str, Any]) -> None:
    """Mark pre-save ``set`` look-ups whose field nothing reads before the INSERT (``Lookup.deferrable``).

    ``rules``: the form's ``created`` rules in firing order, with ``presave`` already inferred."""
    steps: list[tuple] = []              # (record exprs, user exprs, set params or None), in run order
    for rule in rules:
        if rule.presave is None:
            break                        # the pre-save phase never goes past this rule
        steps.append(([rule.when], [], None))
        for action in rule.actions[:rule.presave]:
            reads = _action_reads(action, tables)
            steps.append((reads[0], reads[1], action.params if action.kind == "set" else None))
    for i, (_, _, params) in enumerate(steps):
        for name, e in params or ():
            if not isinstance(e, Lookup) or not _deferrable_field(formdef, name):
                continue
            later = steps[i + 1:]
            if any(_reads_field(rec, name) or _reads_field(users, name, user_expr=True) for rec, users, _ in later):
                continue
            e.deferrable = True
