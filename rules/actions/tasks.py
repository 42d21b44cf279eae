"""``task`` (a to-do for a person or a role) and ``complete_tasks``."""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, update

from engine import platform as P
from engine.clock import to_db
from engine.definitions import text

from .base import Action, ActionCompiler, ActionError, RunContext, register_action

TASK_KINDS = ("todo", "callback", "escalation", "approval", "visit")


@register_action
class TaskAction(Action):
    """``task: {title: {zh, en}, assignee: owner | {role:, where:} | "<user name expression>", due: 1d, kind: callback}``.

    With several candidates (a role) the one with the fewest open tasks gets it;
    with none, the task waits for anyone with ``candidate_role``.
    """

    name = "task"

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        from ..notify import compile_recipient
        if not isinstance(spec, dict):
            c.error((), "'task' takes {title: ..., assignee: ..., due: 1d}")
            return None
        for k in spec:
            if k not in ("title", "assignee", "due", "kind", "body", "template", "key"):
                c.error((k,), f"unknown key '{k}' for task; expected title, assignee, due, kind, body, template", at_key=True)
        if not spec.get("title"):
            c.error((), "'task' needs a title", at_key=True, schema="title" not in spec)
            return None
        kind = spec.get("kind", "todo")
        if kind not in TASK_KINDS:
            c.error(("kind",), f"unknown task kind '{kind}'; expected one of: {', '.join(TASK_KINDS)}", schema=True)
        due = c.check_duration(("due",), spec["due"]) if spec.get("due") is not None else None
        assignee = compile_recipient(c, ("assignee",), spec.get("assignee", "owner"), users_only=True)
        template = spec.get("template")
        if template is not None and not c.check_template(("template",), template):
            return None
        return {"title": text(spec["title"]), "assignee": assignee, "due": due, "kind": kind,
                "body": spec.get("body"), "template": template, "key": spec.get("key")}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        from ..notify import resolve_users
        uow = rc.uow
        users, role = resolve_users(rc, params["assignee"])
        assignee = None
        if len(users) == 1:
            assignee = users[0].username
        elif users:
            names = [u.username for u in users]
            t = P.tasks
            counts = dict(uow.conn.execute(select(t.c.assignee, func.count()).where(
                t.c.app == uow.app.name, t.c.status == "open", t.c.assignee.in_(names)).group_by(t.c.assignee)).all())
            assignee = min(names, key=lambda n: (counts.get(n, 0), n))
        if assignee is None and role is None:
            return {"skipped": "no assignee"}
        due = uow.now + params["due"] if params["due"] is not None else None
        payload = {"rule": rc.source, "trigger": rc.trigger}
        body = params.get("body")
        if params.get("template"):
            body = _render_body(rc, params["template"], assignee)
        res = uow.conn.execute(P.tasks.insert().values(
            app=uow.app.name, form=rc.form, record_id=rc.record_id, kind=params["kind"], title=dict(params["title"]),
            body=body, assignee=assignee, candidate_role=role, status="open", due_at=to_db(due),
            created_at=to_db(uow.now), payload=payload).returning(P.tasks.c.id))
        task_id = res.scalar_one()
        if rc.form and rc.record_id is not None:
            rc.records.add_history(rc.sys, rc.form, rc.record_id, "task",
                                   {"task": task_id, "title": dict(params["title"]), "assignee": assignee,
                                    "rule": rc.source})
        return {"task": task_id, "assignee": assignee, "candidate_role": role}


def _render_body(rc: RunContext, template: str, assignee: str | None) -> str:
    """The task's text from a template, in the assignee's language (channel 'task')."""
    from ..notify import Recipient, template_context
    from ..templates import TEMPLATES, TemplateProblem
    user = rc.user(assignee) if assignee else None
    lang = (user.language if user is not None and user.language in ("zh", "en") else None) or rc.app.default_language
    r = Recipient("user", assignee or "", (user.display_name or user.username) if user is not None else "", lang, user=user)
    try:
        return TEMPLATES.render(rc.app, template, "task", lang, template_context(rc, r, lang)).text
    except TemplateProblem as exc:
        raise ActionError(str(exc)) from None


@register_action
class CompleteTasksAction(Action):
    """``complete_tasks: {kind: callback, outcome: done}`` -- close the record's open tasks (e.g. after a follow-up)."""

    name = "complete_tasks"

    def compile(self, c: ActionCompiler, spec: Any) -> Any:
        spec = spec if isinstance(spec, dict) else {}
        for k in spec:
            if k not in ("kind", "outcome", "status"):
                c.error((k,), f"unknown key '{k}' for complete_tasks; expected kind, outcome, status", at_key=True)
        status = spec.get("status", "done")
        if status not in ("done", "cancelled"):
            c.error(("status",), "status is done or cancelled", schema=True)
        return {"kind": spec.get("kind"), "outcome": spec.get("outcome", "done"), "status": status}

    def run(self, rc: RunContext, params: Any) -> dict | None:
        if rc.record_id is None:
            return None
        uow = rc.uow
        t = P.tasks
        conds = [t.c.app == uow.app.name, t.c.form == rc.form, t.c.record_id == rc.record_id, t.c.status == "open"]
        if params["kind"]:
            conds.append(t.c.kind == params["kind"])
        n = uow.conn.execute(update(t).where(and_(*conds)).values(
            status=params["status"], outcome=params["outcome"], completed_at=to_db(uow.now),
            completed_by=uow.user.username)).rowcount
        return {"closed": n} if n else None


__all__ = ["TaskAction", "CompleteTasksAction", "ActionError"]
