"""Actions on other records: ``update_related``, ``update_many``, ``for_each``."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from engine.expressions import ExpressionError

from .base import Action, ActionCompiler, ActionError, RunContext, jsonable, register_action
from .record_ops import compile_assignments

MAX_MANY = 100_000


@register_action
class UpdateRelatedAction(Action):
    """Update the record(s) related to the triggering record.

    * ``{link: lead, set: {last_follow_up_at: "created_at"}}`` -- the record the
      link field ``lead`` points to;
    * ``{form: follow_up, via: lead, set: {...}}`` -- every ``follow_up`` whose
      link field ``lead`` points at this record.

    ``set`` expressions name the triggering record's fields; ``target.<field>``
    is the related record (``visits: "target.visits + 1"``).
    """

    name = "update_related"
    flush_before = True

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if not isinstance(spec, dict):
            c.error((), "'update_related' takes {link: <link field>, set: {...}} or {form:, via:, set:}")
            return None
        for k in spec:
            if k not in ("link", "form", "via", "set", "when"):
                c.error((k,), f"unknown key '{k}' for update_related; expected link, form, via, set", at_key=True)
        if c.form is None:
            c.error((), "'update_related' needs a triggering record; this rule has none")
            return None
        if "link" in spec:
            link = spec["link"]
            if not c.check_field(("link",), link, types=("link",), what="update_related"):
                return None
            target, via = c.fields()[link].get("form"), None
        else:
            target, via = spec.get("form"), spec.get("via")
            if not c.check_form(("form",), target):
                return None
            if not c.check_field(("via",), via, target, types=("link",), what="update_related"):
                return None
            if (c.fields(target)[via] or {}).get("form") != c.form:
                c.error(("via",), f"field '{via}' of form '{target}' links to '{c.fields(target)[via].get('form')}', not '{c.form}'")
                return None
            link = None
        sets = compile_assignments(c, spec.get("set"), target, ("set",), "update_related", expr_form=c.form)
        guard = c.expr(("when",), spec["when"], target) if spec.get("when") else None
        return {"link": link, "form": target, "via": via, "set": sets, "when": guard}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        target = params["form"]
        records = rc.records
        if params["link"]:
            rid = rc.record.get(params["link"])
            ids = [rid] if rid is not None else []
        else:
            table = records.table(rc.uow.app, target)
            ids = [r[0] for r in rc.uow.conn.execute(
                select(table.c.id).where(table.c[params["via"]] == rc.record_id).order_by(table.c.id))]
        base = rc.env()
        updated = []
        for rid in ids:
            rec = records.load(rc.uow, target, int(rid))
            if rec is None:
                continue
            env = dict(base)
            env["target"] = rec
            if params["when"] is not None:
                tenv = records.env(rc.uow, records.form(rc.uow.app, target), rec)
                if not rc.truthy(params["when"], tenv):
                    continue
            data = {name: jsonable(rc.evaluate(e, env)) for name, e in params["set"]}
            system = {k: data.pop(k) for k in ("owner", "state") if k in data}
            records.update(rc.sys, target, int(rid), data, trusted=True, system_values=system or None)
            rc.forget_link(target, rid)
            updated.append(int(rid))
        rc.invalidate()
        if not updated:
            return None
        return {"form": target, "ids": updated[:50], "count": len(updated)}


class _ManyBase(Action):
    flush_before = True

    def compile_query(self, c: ActionCompiler, spec: dict) -> tuple[str | None, Any]:
        target = spec.get("form")
        if not c.check_form(("form",), target):
            return None, None
        where = c.expr(("where",), spec["where"], target, extra=("source",)) if spec.get("where") else None
        return target, where

    def matching_ids(self, rc: RunContext, target: str, where: Any, limit: int | None) -> list[int]:
        """Ids of ``target`` records matching ``where``: in SQL when the expression compiles to SQL."""
        records = rc.records
        uow = rc.uow
        fd = records.form(uow.app, target)
        table = records.table(uow.app, target)
        q = select(table.c.id).order_by(table.c.id)
        if where is None:
            return [r[0] for r in uow.conn.execute(q.limit(limit or MAX_MANY))]
        source_env = rc.env().get("record") if rc.form else None
        if not _needs_python(where):
            try:
                resolve = records.resolver(uow.as_system(), fd, table)
                cond = where.to_sql(_with_source(resolve, source_env), uow.conn.dialect.name, ctx=uow.eval_context())
                return [r[0] for r in uow.conn.execute(q.where(cond).limit(limit or MAX_MANY))]
            except (ExpressionError, NotImplementedError, KeyError, TypeError):
                pass  # not expressible in SQL (PII, functions): filter in Python below
        ids = []
        for row in uow.conn.execute(select(table).order_by(table.c.id)).mappings():
            rec = records.decode(fd, row)
            env = records.env(uow, fd, rec)
            env["source"] = source_env
            sub = RunContext(uow, target, rec, trigger=rc.trigger, source=rc.source, occurrence=rc.occurrence, parent=rc)
            env = sub.env()
            if rc.truthy(where, env):
                ids.append(rec["id"])
                if limit and len(ids) >= limit:
                    break
        return ids


def _needs_python(expr: Any) -> bool:
    from .base import expr_roots
    return bool(expr_roots(expr) & {"source", "owner_user", "created", "event", "payload"})


def _with_source(resolve, source_env):
    return resolve


@register_action
class UpdateManyAction(_ManyBase):
    """``update_many: {form: customer, where: "status != 'churned'", set: {tier: "..."}}``.

    ``where`` and ``set`` name the target form's fields (``source.<field>``:
    the triggering record, if any).  Each record is updated through the record
    service (validation, history, events) only when a value really changes.
    """

    name = "update_many"

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        if not isinstance(spec, dict):
            c.error((), "'update_many' takes {form: <form>, where: <expression>, set: {field: expression}}")
            return None
        for k in spec:
            if k not in ("form", "where", "set", "limit"):
                c.error((k,), f"unknown key '{k}' for update_many; expected form, where, set, limit", at_key=True)
        target, where = self.compile_query(c, spec)
        if target is None:
            return None
        sets = compile_assignments(c, spec.get("set"), target, ("set",), "update_many", extra=("source",))
        return {"form": target, "where": where, "set": sets, "limit": spec.get("limit")}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        target = params["form"]
        records = rc.records
        ids = self.matching_ids(rc, target, params["where"], params.get("limit"))
        changed = 0
        for rid in ids:
            rec = records.load(rc.uow, target, rid)
            if rec is None:
                continue
            sub = RunContext(rc.uow, target, rec, trigger=rc.trigger, source=rc.source, occurrence=rc.occurrence, parent=rc)
            env = sub.env()
            values = {name: rc.evaluate(e, env) for name, e in params["set"]}
            diff = {k: v for k, v in values.items() if rec.get(k) != v}
            if not diff:
                continue
            data = {k: jsonable(v) for k, v in diff.items() if k not in ("owner", "state")}
            system = {k: v for k, v in diff.items() if k in ("owner", "state")}
            before = records.load(rc.uow, target, rid)
            after = records.update(rc.sys, target, rid, data, trusted=True, system_values=system or None)
            if before != after:
                changed += 1
        rc.invalidate()
        return {"form": target, "matched": len(ids), "changed": changed}


@register_action
class ForEachAction(_ManyBase):
    """``for_each: {form: customer, where: "...", actions: [...]}`` -- run actions on each matching record.

    The nested actions see each matching record as *their* record
    (``notify: {to: self}`` messages that customer); ``source`` is the record
    that fired the rule.
    """

    name = "for_each"

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from . import compile_actions
        if not isinstance(spec, dict):
            c.error((), "'for_each' takes {form: <form>, where: <expression>, actions: [...]}")
            return None
        for k in spec:
            if k not in ("form", "where", "actions", "limit"):
                c.error((k,), f"unknown key '{k}' for for_each; expected form, where, actions, limit", at_key=True)
        target, where = self.compile_query(c, spec)
        if target is None:
            return None
        if not spec.get("actions"):
            c.error((), "'for_each' needs 'actions: [...]'", at_key=True)
            return None
        actions = compile_actions(c.ctx, c.file, c.path + ("actions",), spec["actions"], target, source_form=c.form)
        return {"form": target, "where": where, "actions": actions, "limit": spec.get("limit")}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from . import execute
        ids = self.matching_ids(rc, params["form"], params["where"], params.get("limit"))
        done = 0
        for rid in ids:
            rec = rc.records.load(rc.uow, params["form"], rid)
            if rec is None:
                continue
            sub = RunContext(rc.uow, params["form"], rec, trigger=rc.trigger, source=rc.source,
                             occurrence=rc.occurrence, parent=rc)
            if execute(sub, params["actions"]):
                done += 1
        return {"form": params["form"], "matched": len(ids), "acted": done}


__all__ = ["UpdateRelatedAction", "UpdateManyAction", "ForEachAction", "ActionError"]
