"""Rule actions: a registry of small classes, one per action kind.

Stable API for the other engines (the flows engine compiles transition,
SLA and journey-step action lists with it):

* :func:`compile_actions` ``(ctx, file, path, raw_actions, form_name)`` ->
  ``tuple[CompiledAction, ...]``; problems are reported through ``ctx`` with
  positions, bad actions are left out.
* :func:`run_actions` ``(uow, form_name, record, actions, trigger)`` ->
  ``list[dict]`` describing what was done (one entry per action that did
  something).  Runs in the caller's transaction; raises ``ActionError`` /
  ``RecordInvalid`` when an action cannot be carried out.

Each action is ``{<kind>: <spec>}`` with an optional ``when:`` guard
expression; a bare string (``- claim_from_pool``) is an action without
parameters.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from engine.definitions import CompileContext
from engine.problems import one_of, suggest

from ..model import CompiledAction
from .base import ACTIONS, Action, ActionCompiler, ActionError, RunContext, register_action  # noqa: F401

# importing the modules registers the actions
from . import (assign, create, decide, notify, record_ops, related, run_rule, tasks,  # noqa: E402,F401
               webhook, workflow)


def compile_actions(ctx: CompileContext, file: str, path: tuple, raw_actions: Any, form_name: str | None,
                    *, source_form: str | None = None) -> tuple[CompiledAction, ...]:
    """Check and compile a YAML list of actions for records of ``form_name``."""
    if raw_actions is None:
        return ()
    path = tuple(path)
    if not isinstance(raw_actions, list):
        ctx.error(file, path, "'actions' must be a list of actions, e.g. [{notify: {...}}, {set: {...}}]")
        return ()
    src = ctx.files.get(file)
    out: list[CompiledAction] = []
    for i, item in enumerate(raw_actions):
        ipath = path + (i,)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict):
            ctx.error(file, ipath, f"an action is a mapping like {{notify: {{...}}}}; {one_of(ACTIONS, 30)}")
            continue
        kinds = [k for k in item if k != "when" and not str(k).startswith("x_")]
        if len(kinds) != 1:
            if not kinds:
                ctx.error(file, ipath, f"no action given; {one_of(ACTIONS, 30)}")
            else:
                ctx.error(file, ipath + (kinds[1],), f"one action per list item: '{kinds[0]}' and '{kinds[1]}' are in the "
                                                     f"same item; start the second with '- '", at_key=True)
            continue
        kind = kinds[0]
        action = ACTIONS.get(kind)
        if action is None:
            if file.startswith("rules/") and not isinstance(raw_actions[i], str):
                continue   # reported by rules.schema.json as an unknown key
            ctx.error(file, ipath + (kind,), f"unknown action '{kind}'{suggest(kind, ACTIONS) or '; ' + one_of(ACTIONS, 30)}",
                      at_key=True)
            continue
        c = ActionCompiler(ctx, file, ipath + (kind,), form_name, source_form=source_form)
        before = len(ctx.problems.items)
        params = action.compile(c, item[kind])
        when = None
        if "when" in item:
            wc = ActionCompiler(ctx, file, ipath, form_name, source_form=source_form)
            when = wc.expr(("when",), item["when"])
            c.needs |= wc.needs
        if len(ctx.problems.items) > before:
            continue
        line = src.loaded.position(ipath + (kind,), prefer_key=True)[0] if src else 1
        out.append(CompiledAction(kind, params, when, file, ipath, line, frozenset(c.needs)))
    return tuple(out)


def run_actions(uow: Any, form_name: str | None, record: Mapping[str, Any] | None, actions: Iterable[CompiledAction],
                trigger: str, *, source: str | None = None, occurrence: str | None = None,
                old: Mapping[str, Any] | None = None, payload: Any = None, event: Mapping[str, Any] | None = None) -> list[dict]:
    """Run compiled actions on ``record`` (of ``form_name``) in ``uow``; return what was done."""
    rc = RunContext(uow, form_name, record, trigger=trigger, source=source or trigger, occurrence=occurrence,
                    old=old, payload=payload, event=event)
    return execute(rc, actions)


def who(source: str) -> str:
    """'rule 'x'' for rules; flows pass sources like 'flow:complaint_process:start'."""
    return source if ":" in source else f"rule '{source}'"


def execute(rc: RunContext, actions: Iterable[CompiledAction], flush: bool = True) -> list[dict]:
    """Run ``actions``; staged changes to the record are written at the end (``flush=False``: left
    staged in ``rc`` for the caller, which writes the changes of several rules with one update)."""
    for a in actions:
        action = ACTIONS[a.kind]
        if a.when is not None and not rc.truthy(a.when):
            continue
        if action.flush_before:
            rc.flush()
        try:
            result = action.run(rc, a.params)
        except ActionError as exc:
            raise ActionError(f"{who(rc.source)}, action '{a.kind}' at {a.where}: {exc.message}") from exc
        if result is not None:
            rc.done.append({"action": a.kind, **result})
    if flush:
        rc.flush()
    return rc.done
