"""The task inbox: my open tasks (assigned to me, or to one of my roles),
counts, due/overdue highlighting, and approve / reject / transfer in place.
Mentions in comments arrive here too (kind ``mention``): open the record, or
dismiss them ("done"); they are never transferred.

Tasks are read from the platform's ``loom_tasks`` table; acting on one goes
through the flows service (``engines.task_action``), in one transaction.
"""
from __future__ import annotations

import datetime as dt
import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, or_, select

from engine import platform as P
from engine.auth import list_users
from engine.clock import from_db
from engine.db import storable_id

from ..deps import unit_of_work
from . import engines
from .common import PageRoute, fragment, lang_of, page_user, render, runtime
from .i18n import label, translate

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DUE_SOON = dt.timedelta(hours=24)


def my_tasks_query(app_name: str, user, status: str = "open"):
    t = P.tasks
    mine = or_(t.c.assignee == user.username,
               and_(t.c.assignee.is_(None), t.c.candidate_role.in_(sorted(user.roles) or [""])))
    return select(t).where(t.c.app == app_name, t.c.status == status, mine)


def load_tasks(uow, lang: str, limit: int = 200) -> list[dict]:
    t = P.tasks
    rows = uow.conn.execute(my_tasks_query(uow.app.name, uow.user).order_by(t.c.due_at.is_(None), t.c.due_at, t.c.id)
                            .limit(limit)).mappings().all()
    now = uow.now
    tz = uow.app.tz
    titles = {}
    from .records import link_titles
    by_form: dict[str, set] = {}
    for r in rows:
        if r["form"] and r["record_id"]:
            by_form.setdefault(r["form"], set()).add(int(r["record_id"]))
    for form, ids in by_form.items():
        titles.update(link_titles(uow, form, ids, lang))
    out = []
    for r in rows:
        due = from_db(r["due_at"]) if r["due_at"] else None
        status = "overdue" if due and due < now else "soon" if due and due - now < DUE_SOON else ""
        form = uow.app.forms.get(r["form"]) if r["form"] else None
        out.append({
            "id": r["id"], "title": label(r["title"], lang, r["kind"]), "kind": r["kind"], "body": r["body"],
            "due": due.astimezone(tz).strftime("%m-%d %H:%M") if due else "", "status": status,
            "form_label": label(form.label, lang, r["form"]) if form else "",
            "record_url": f"/apps/{uow.app.name}/forms/{r['form']}/{r['record_id']}" if form and r["record_id"] else None,
            "record_title": titles.get((r["form"], int(r["record_id"]))) if r["record_id"] else None,
            "approval": r["kind"] == "approval", "mention": r["kind"] == "mention",
            "assignee": r["assignee"], "role": r["candidate_role"],
            "flow": r["flow"], "step": r["step"],
        })
    return out


def task_counts(tasks: list[dict]) -> dict:
    return {"open": len(tasks), "overdue": sum(1 for t in tasks if t["status"] == "overdue"),
            "soon": sum(1 for t in tasks if t["status"] == "soon")}


@router.get("/apps/{app_name}/tasks")
def inbox(app_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = lang_of(request, user, _default_lang(rt, app_name))
    with unit_of_work(rt, app_name, user, lang) as uow:
        tasks = load_tasks(uow, lang)
        users = [{"value": u.username, "label": u.display_name or u.username}
                 for u in list_users(uow.conn) if u.username != user.username and (u.roles & set(uow.app.roles))]
    show = request.query_params.get("show", "")
    counts = task_counts(tasks)
    if show in ("overdue", "soon"):
        tasks = [t for t in tasks if t["status"] == show]
    return render(request, "tasks.html", {"app_name": app_name, "tasks": tasks, "counts": counts,
                                          "users": users, "show": show})


def _default_lang(rt, app_name):
    try:
        return rt.app(app_name).default_language
    except Exception:  # noqa: BLE001
        return None


@router.post("/apps/{app_name}/tasks/{task_id:int}/{action}")
async def act(app_name: str, task_id: int, action: str, request: Request):
    """approve / reject / transfer / complete one task; answers an empty swap + a toast."""
    user = page_user(request)
    rt = runtime(request)
    lang = lang_of(request, user, _default_lang(rt, app_name))
    actions = ("approve", "reject", "transfer", "complete")
    if action not in actions or not storable_id(task_id):
        from engine.errors import NotFound
        raise NotFound(f"task {task_id}" if action in actions else action)
    form = await request.form()
    comment = str(form.get("comment") or "").strip() or None
    to = str(form.get("to") or "").strip() or None
    with unit_of_work(rt, app_name, user, lang, write=True) as uow:
        row = uow.conn.execute(my_tasks_query(app_name, user).where(P.tasks.c.id == task_id)).first()
        if row is None:
            from engine.errors import NotFound
            raise NotFound(f"task {task_id}")
        engines.task_action(uow, task_id, action, comment=comment, to=to)
    # the toast first: task-done removes the task (and the form that triggered these events)
    trigger = {"loom:toast": {"message": translate("task_done", lang), "tone": "success"},
               "loom:task-done": {"value": task_id}}
    if request.headers.get("hx-request") == "true":
        return HTMLResponse("", headers={"HX-Trigger": json.dumps(trigger)})
    from .common import redirect
    return redirect(f"/apps/{app_name}/tasks", request)


@router.get("/apps/{app_name}/inbox")
def messages(app_name: str, request: Request):
    """In-app messages to me (channel ``inapp`` in the outbox)."""
    user = page_user(request)
    rt = runtime(request)
    lang = lang_of(request, user, _default_lang(rt, app_name))
    o = P.outbox
    with unit_of_work(rt, app_name, user, lang) as uow:
        rows = uow.conn.execute(select(o).where(o.c.app == app_name, o.c.recipient == user.username,
                                                o.c.recipient_kind == "user")
                                .order_by(o.c.id.desc()).limit(100)).mappings().all()
        items = [{"subject": r["subject"], "text": r["rendered"], "channel": r["channel"], "status": r["status"],
                  "at": from_db(r["created_at"]).astimezone(uow.app.tz).strftime("%Y-%m-%d %H:%M"),
                  "url": f"/apps/{app_name}/forms/{r['form']}/{r['record_id']}" if r["form"] and r["record_id"] else None}
                 for r in rows]
    return render(request, "inbox.html", {"app_name": app_name, "items": items})
