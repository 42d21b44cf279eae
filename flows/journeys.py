"""Journeys: time-based steps for each enrolled record (e.g. the 90-day care journey).

A record is enrolled when ``enrol_when`` holds on create/update (subject to
``reenrol``).  Only the next step has a timer, keyed
``journey:<app>:<enrolment id>:<step>`` -- so each step of an enrolment
happens exactly once however many workers run and however often the
scheduling code is repeated.  Before each step the journey's ``exit_when``
and ``goal`` are checked; either ends the enrolment.  A step may be
skipped (``when``), branch (first matching ``branch``), jump forward
(``goto``) or wait for a condition (``wait_until`` with a ``timeout``).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import and_, select, update

from engine import scheduler
from engine.clock import from_db, to_db

from . import tables as T
from .common import history, iso, lock, record_env, run_actions, truthy
from .model import JourneyDef, StepDef

TIMER_KIND = "flow.journey"


def _prefix(app: str, enrolment_id: int) -> str:
    return f"journey:{app}:{enrolment_id}:"


def _anchor_of(j: JourneyDef, rec: Mapping[str, Any]) -> Any:
    return rec.get(j.anchor) if j.anchor else None


def _parse_anchor(text: str | None) -> Any:
    if not text:
        return None
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def enrolments_of(uow: Any, form: str, record_id: int, journey: str | None = None) -> list[dict]:
    e = T.enrolments
    q = select(e).where(e.c.app == uow.app.name, e.c.form == form, e.c.record_id == record_id)
    if journey:
        q = q.where(e.c.journey == journey)
    return [dict(r) for r in uow.conn.execute(q.order_by(e.c.id)).mappings()]


def _active(uow: Any, journey: str, record_id: int) -> dict | None:
    e = T.enrolments
    q = select(e).where(e.c.app == uow.app.name, e.c.journey == journey, e.c.record_id == record_id, e.c.status == "active")
    row = uow.conn.execute(lock(q.order_by(e.c.id.desc()), uow.conn)).mappings().first()
    return dict(row) if row else None


def _save(uow: Any, enr: dict, **values: Any) -> dict:
    e = T.enrolments
    uow.conn.execute(update(e).where(e.c.id == enr["id"]).values(**values))
    enr = dict(enr)
    enr.update(values)
    return enr


def _track(uow: Any, j: JourneyDef, enr: dict) -> None:
    """Mirror the enrolment's status and step into the record's ``track`` fields.

    Written straight to the form's table, like a workflow's ``state``: it is
    the journey's bookkeeping, not a user's change, so no rules or history fire.
    """
    if not j.track:
        return
    values = {}
    if "status" in j.track:
        values[j.track["status"]] = enr["status"]
    if "step" in j.track:
        values[j.track["step"]] = enr["current_step"]
    table = uow.service("records").table(uow.app, j.form)
    uow.conn.execute(update(table).where(table.c.id == enr["record_id"]).values(**values))


def end(uow: Any, j: JourneyDef, enr: dict, status: str, reason: str) -> dict:
    scheduler.cancel(uow.conn, app=uow.app.name, kind=TIMER_KIND, key_prefix=_prefix(uow.app.name, enr["id"]))
    enr = _save(uow, enr, status=status, end_reason=reason, ended_at=to_db(uow.now), waiting=False)
    _track(uow, j, enr)
    history(uow, enr["form"], enr["record_id"], "journey", {"journey": j.name, "event": status, "reason": reason})
    return enr


# -- enrolment ------------------------------------------------------------------------

def check(uow: Any, service: Any, j: JourneyDef, rec: Mapping[str, Any], old: Mapping[str, Any] | None,
          created: bool = False) -> None:
    """React to a created/updated record: exit, goal, resume a waiting step, (re-)enrol."""
    env = record_env(uow, j.form, rec, old)
    enr = _active(uow, j.name, rec["id"])
    if enr is not None:
        jd = service.definition(uow, j.name, enr["app_digest"], enr["flow_digest"]) or j
        if jd.exit_when is not None and truthy(uow, jd.exit_when, env, what=f"{j.name}.exit_when"):
            end(uow, jd, enr, "exited", "exit_when")
            return
        if jd.goal is not None and truthy(uow, jd.goal, env, what=f"{j.name}.goal"):
            end(uow, jd, enr, "goal", "goal")
            return
        anchor = _anchor_of(j, rec)
        if j.reenrol == "on_change" and anchor is not None and iso(anchor) != enr["anchor"]:
            end(uow, jd, enr, "replaced", "anchor_changed")
        else:
            if enr["waiting"]:
                step = jd.step(enr["current_step"] or "")
                if step is not None and step.wait_until is not None and truthy(uow, step.wait_until, env, what=f"{j.name}.{step.name}.wait_until"):
                    scheduler.cancel(uow.conn, app=uow.app.name, kind=TIMER_KIND,
                                     key_prefix=_prefix(uow.app.name, enr["id"]) + step.name + ":timeout")
                    _run_step(uow, service, jd, enr, step, rec, env, occurrence=_prefix(uow.app.name, enr["id"]) + step.name)
            return
    if j.enrol_when is not None and not truthy(uow, j.enrol_when, env, what=f"{j.name}.enrol_when"):
        return
    anchor = _anchor_of(j, rec)
    if j.anchor and anchor is None:
        return
    previous = enrolments_of(uow, j.form, rec["id"], j.name)
    if previous:
        last = previous[-1]
        if last["status"] == "active":
            return
        if j.reenrol == "never":
            return
        if j.reenrol == "on_change" and last["anchor"] == iso(anchor):
            return
        if j.reenrol == "always" and old is not None and j.enrol_when is not None:
            old_env = record_env(uow, j.form, old)
            if truthy(uow, j.enrol_when, old_env):
                return   # enrol_when did not become true with this change
    if j.exit_when is not None and truthy(uow, j.exit_when, env):
        return
    if j.goal is not None and truthy(uow, j.goal, env):
        return
    enrol(uow, service, j, rec, anchor)


def enrol(uow: Any, service: Any, j: JourneyDef, rec: Mapping[str, Any], anchor: Any = None) -> dict:
    e = T.enrolments
    enr_id = uow.conn.execute(e.insert().values(
        app=uow.app.name, journey=j.name, form=j.form, record_id=rec["id"], status="active", anchor=iso(anchor),
        enrolled_at=to_db(uow.now), waiting=False, steps_done=[], app_digest=uow.app.digest, flow_digest=j.digest,
    ).returning(e.c.id)).scalar_one()
    enr = dict(uow.conn.execute(select(e).where(e.c.id == enr_id)).mappings().one())
    history(uow, j.form, rec["id"], "journey", {"journey": j.name, "event": "enrolled", "anchor": iso(anchor)})
    _advance(uow, j, enr, 0, uow.now, enrolling=True)
    return enr


def _due(uow: Any, j: JourneyDef, enr: dict, step: StepDef, base: dt.datetime) -> dt.datetime:
    if step.at is not None:
        anchor = _parse_anchor(enr["anchor"]) or from_db(enr["enrolled_at"])
        return step.at.apply(anchor, uow.app.tz, j.default_time)
    if step.after is not None:
        return step.after.apply(base, uow.app.tz, j.default_time)
    return base


def _advance(uow: Any, j: JourneyDef, enr: dict, index: int, base: dt.datetime, enrolling: bool = False) -> None:
    """Schedule step ``index`` (skipping steps missed before the enrolment), or complete."""
    enrolled_at = from_db(enr["enrolled_at"])
    while index < len(j.steps):
        step = j.steps[index]
        due = _due(uow, j, enr, step, base)
        if enrolling and step.at is not None and due < enrolled_at and not j.catch_up:
            history(uow, j.form, enr["record_id"], "journey", {"journey": j.name, "step": step.name, "event": "missed",
                                                               "due_at": iso(due)})
            index += 1
            continue
        key = _prefix(uow.app.name, enr["id"]) + step.name
        scheduler.schedule_later(uow.conn, app=uow.app.name, kind=TIMER_KIND, key=key, due_at=max(due, uow.now),
                           payload={"enrolment": enr["id"], "step": step.name, "what": "step"},
                           form=j.form, record_id=enr["record_id"])
        _track(uow, j, _save(uow, enr, current_step=step.name, waiting=False))
        return
    end(uow, j, enr, "completed", "last_step")


def _run_step(uow: Any, service: Any, j: JourneyDef, enr: dict, step: StepDef, rec: Mapping[str, Any], env: dict,
              occurrence: str) -> None:
    app = uow.app.name
    if step.wait_until is not None and not enr["waiting"] and not truthy(uow, step.wait_until, env):
        _save(uow, enr, waiting=True)
        if step.timeout is not None:
            scheduler.schedule_later(uow.conn, app=app, kind=TIMER_KIND, key=_prefix(app, enr["id"]) + step.name + ":timeout",
                               due_at=uow.now + step.timeout,
                               payload={"enrolment": enr["id"], "step": step.name, "what": "timeout"},
                               form=j.form, record_id=enr["record_id"])
        history(uow, j.form, rec["id"], "journey", {"journey": j.name, "step": step.name, "event": "waiting"})
        return
    source = f"flow:{j.name}:{step.name}"
    event = {"journey": j.name, "step": step.name, "enrolment": enr["id"]}
    goto = step.goto
    done: list = []
    if step.when is not None and not truthy(uow, step.when, env, what=f"{j.name}.{step.name}.when"):
        history(uow, j.form, rec["id"], "journey", {"journey": j.name, "step": step.name, "event": "skipped"})
    else:
        done = run_actions(uow, j.form, rec, step.actions, trigger="journey", source=source, occurrence=occurrence, event=event)
        branch = None
        for i, b in enumerate(step.branch):
            if b.when is None or truthy(uow, b.when, env, what=f"{j.name}.{step.name}.branch"):
                branch = i
                done += run_actions(uow, j.form, rec, b.actions, trigger="journey", source=f"{source}:branch{i + 1}",
                                    occurrence=occurrence, event=event)
                goto = b.goto or goto
                break
        history(uow, j.form, rec["id"], "journey", {"journey": j.name, "step": step.name, "event": "done",
                                                    **({"branch": branch + 1} if branch is not None else {}),
                                                    "actions": [d.get("action") for d in done]})
    enr = _save(uow, enr, waiting=False, steps_done=list(enr["steps_done"] or []) + [step.name])
    e = T.enrolments
    if uow.conn.execute(select(e.c.status).where(e.c.id == enr["id"])).scalar() != "active":
        return   # the step's own actions met the goal or the exit condition
    nxt = j.index(goto) if goto else j.index(step.name) + 1
    _advance(uow, j, enr, nxt, uow.now)


def fire(uow: Any, service: Any, timer: dict) -> None:
    """Timer handler: run a step (or its wait timeout) of an active enrolment."""
    p = timer.get("payload") or {}
    e = T.enrolments
    row = uow.conn.execute(lock(select(e).where(e.c.id == p.get("enrolment")), uow.conn)).mappings().first()
    if row is None:
        return
    enr = dict(row)
    if enr["status"] != "active" or enr["current_step"] != p.get("step"):
        return
    if p.get("what") == "timeout" and not enr["waiting"]:
        return
    j = service.definition(uow, enr["journey"], enr["app_digest"], enr["flow_digest"])
    if j is None or j.kind != "journey":
        return
    records = uow.service("records")
    rec = records.load(uow, enr["form"], enr["record_id"])
    if rec is None:
        end(uow, j, enr, "cancelled", "record_deleted")
        return
    env = record_env(uow, j.form, rec)
    if j.exit_when is not None and truthy(uow, j.exit_when, env, what=f"{j.name}.exit_when"):
        end(uow, j, enr, "exited", "exit_when")
        return
    if j.goal is not None and truthy(uow, j.goal, env, what=f"{j.name}.goal"):
        end(uow, j, enr, "goal", "goal")
        return
    step = j.step(p.get("step") or "")
    if step is None:
        end(uow, j, enr, "cancelled", "step_removed")
        return
    if p.get("what") == "timeout":
        run_actions(uow, j.form, rec, step.on_timeout, trigger="journey", source=f"flow:{j.name}:{step.name}:timeout",
                    occurrence=timer["key"], event={"journey": j.name, "step": step.name, "enrolment": enr["id"]})
        history(uow, j.form, rec["id"], "journey", {"journey": j.name, "step": step.name, "event": "timeout"})
        enr = _save(uow, enr, waiting=False, steps_done=list(enr["steps_done"] or []) + [step.name + ":timeout"])
        nxt = j.index(step.timeout_goto) if step.timeout_goto else j.index(step.name) + 1
        _advance(uow, j, enr, nxt, uow.now)
        return
    _run_step(uow, service, j, enr, step, rec, env, occurrence=timer["key"])


def on_linked(uow: Any, service: Any, form: str, rec: Mapping[str, Any]) -> None:
    """A linked record changed (e.g. the customer churned): re-check goal/exit of enrolments that follow it."""
    records = uow.service("records")
    e = T.enrolments
    for j in service.journey_watchers(uow.app, form):
        for link_field in [f for f, target in j.watch.items() if target == form]:
            table = records.table(uow.app, j.form)
            active_ids = select(e.c.record_id).where(e.c.app == uow.app.name, e.c.journey == j.name, e.c.status == "active")
            ids = [r[0] for r in uow.conn.execute(select(table.c.id).where(and_(table.c[link_field] == rec["id"],
                                                                                table.c.id.in_(active_ids))))]
            for rid in ids:
                r = records.load(uow, j.form, rid)
                if r is not None:
                    check(uow, service, j, r, None)


def summary(enr: dict) -> dict:
    return {"journey": enr["journey"], "status": enr["status"], "enrolled_at": iso(from_db(enr["enrolled_at"])),
            "anchor": enr["anchor"], "current_step": enr["current_step"], "waiting": bool(enr["waiting"]),
            "steps_done": list(enr["steps_done"] or []), "ended_at": iso(from_db(enr["ended_at"])),
            "end_reason": enr["end_reason"]}
