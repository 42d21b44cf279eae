"""JSON API for workflows and tasks.

* ``POST /api/apps/{app}/{form}/{id}/transitions/{transition}`` with
  ``{"comment": ..., "data": {...}}``: 200 with the record; 409 when the
  transition is not possible from the current state (or its guard fails),
  403 when the caller may not fire it, 422 with per-field errors when
  required fields (or the comment) are missing.  With an approval the
  transition is requested: approvers get tasks, the record keeps its state.
* ``GET /api/apps/{app}/{form}/{id}/flow``: state, the transitions the caller
  may fire, the pending approval, SLA clocks, journeys, tasks and history.
* ``GET /api/tasks``: the caller's open tasks (assigned to them, or waiting
  for one of their roles on records they can see).
* ``POST /api/tasks/{id}/complete|approve|reject|transfer|add_signer``.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from engine import platform as P
from engine.auth import User
from engine.db import storable_id

from ..audited import audit_response
from ..deps import current_user, language, runtime, unit_of_work

router = APIRouter(prefix="/api", tags=["flows"])


class TransitionBody(BaseModel):
    comment: str | None = Field(None, max_length=4000)
    data: dict[str, Any] = Field(default_factory=dict)


class TaskBody(BaseModel):
    comment: str | None = Field(None, max_length=4000)
    to: str | None = Field(None, max_length=64, description="transfer / add_signer: the user name")
    outcome: str | None = Field(None, max_length=24, description="complete: e.g. done, reached, no_answer")


def _flows(rt):
    svc = rt.services.get("flows")
    if svc is None:
        raise HTTPException(404, "workflows are not available in this build")
    return svc


@router.post("/apps/{app}/{form}/{record_id}/transitions/{transition}", summary="Fire a workflow transition")
def fire_transition(app: str, form: str, record_id: int, transition: str, request: Request,
                    body: TransitionBody = Body(default_factory=TransitionBody), user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        flows = _flows(rt)
        records = uow.service("records")
        flows.transition(uow, form, record_id, transition, comment=body.comment, data=body.data)
        rec = records.load(uow, form, record_id)   # not get(): the transition may have moved it out of the caller's rows
        fd = records.form(uow.app, form)
        audit_response(uow, fd, record_id)
        out = records.to_json(uow, fd, rec)
        pending = flows._pending_approval(uow, form, record_id)
        if pending is not None:
            out["_approval"] = flows.approval_summary(uow, pending)
        return out


@router.get("/apps/{app}/{form}/{record_id}/flow", summary="Workflow state, available transitions and history")
def record_flow(app: str, form: str, record_id: int, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        return _flows(rt).flow_info(uow, form, record_id)


@router.get("/tasks", summary="My open tasks")
def my_tasks(request: Request, user: User = Depends(current_user), app: str | None = Query(None),
             limit: int = Query(200, ge=1, le=500)):
    from flows.service import open_tasks
    rt = runtime(request)
    items = open_tasks(rt, user, app=app, limit=limit)
    return {"items": items, "total": len(items)}


def _task_app(rt, task_id: int) -> str:
    if not storable_id(task_id):
        raise HTTPException(404, f"task {task_id} not found")
    with rt.db.read() as conn:
        app = conn.execute(select(P.tasks.c.app).where(P.tasks.c.id == task_id)).scalar()
    if app is None:
        raise HTTPException(404, f"task {task_id} not found")
    return app


@router.post("/tasks/{task_id}/{action}", summary="Complete, approve, reject, transfer (转办) or add a co-signer (加签)")
def task_action(task_id: int, action: str, request: Request, body: TaskBody = Body(default_factory=TaskBody),
                user: User = Depends(current_user)):
    if action not in ("complete", "approve", "reject", "transfer", "add_signer"):
        raise HTTPException(404, f"unknown task action '{action}'; use complete, approve, reject, transfer or add_signer")
    rt = runtime(request)
    app = _task_app(rt, task_id)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        flows = _flows(rt)
        from flows.service import task_json
        if action in ("transfer", "add_signer") and not body.to:
            from engine.errors import RecordInvalid
            raise RecordInvalid([{"field": "to", "code": "required",
                                  "message": "请选择用户" if uow.lang == "zh" else "choose a user"}])
        if action == "complete":
            task = flows.complete_task(uow, task_id, comment=body.comment, outcome=body.outcome)
            return {"task": task_json(uow, task)}
        if action in ("approve", "reject"):
            result = flows.decide(uow, task_id, action, comment=body.comment)
            return {"task": task_json(uow, result["task"]), "approval": result["approval"]}
        if action == "transfer":
            return {"task": task_json(uow, flows.transfer(uow, task_id, body.to, comment=body.comment))}
        return {"approval": flows.add_signer(uow, task_id, body.to, comment=body.comment)}
