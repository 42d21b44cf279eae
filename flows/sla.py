"""SLA clocks: targets by condition, working-hour calendars, pause/resume, warn, breach, escalation ladder.

One ``loom_sla_clocks`` row per record and SLA.  Starting a clock schedules
durable timers (warning, breach, each escalation level) with deterministic
keys ``sla:<app>:<clock id>:<generation>:<what>``; pausing cancels them,
resuming bumps the generation and schedules the remaining ones again with
the due time extended by the paused (working) time.  A timer whose clock has
moved on (other generation, stopped, paused) does nothing.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import select, update

from engine import scheduler
from engine.clock import from_db, to_db
from engine.db import insert_ignore

from . import tables as T
from .common import history, iso, lock, record_env, run_actions, truthy
from .model import SlaDef, WorkflowDef
from .timeutil import WALL_CLOCK, Calendar

TIMER_KIND = "flow.sla"


_CALENDARS: dict[tuple, Calendar] = {}


def calendar_for(app: Any, name: str | None):
    if not name:
        return WALL_CLOCK
    spec = (app.calendars or {}).get(name)
    if spec is None:
        return WALL_CLOCK
    digest = getattr(app, "digest", None)
    if digest is None:
        return Calendar.from_spec(name, spec, app.tz)
    key = (digest, name)   # the digest covers the calendars and the time zone
    cal = _CALENDARS.get(key)
    if cal is None:
        if len(_CALENDARS) > 256:
            _CALENDARS.clear()
        cal = _CALENDARS[key] = Calendar.from_spec(name, spec, app.tz)
    return cal


_STATEMENTS: dict[str, dict[str, Any]] = {}


def _statements(dialect: str) -> dict[str, Any]:
    """Clock statements built once per dialect, values passed as parameters."""
    stmts = _STATEMENTS.get(dialect)
    if stmts is None:
        c = T.sla_clocks
        stmts = _STATEMENTS[dialect] = {
            "insert": c.insert().returning(c),
            # a new record's clock: started once per record, flow and SLA (the unique key); the row
            # comes back from the INSERT, none if the clock exists already
            "insert_new": insert_ignore(c, ("app", "form", "record_id", "flow", "sla"), dialect,
                                        returning=tuple(c.c.keys())),
        }
    return stmts


def _key_prefix(app: str, clock_id: int) -> str:
    return f"sla:{app}:{clock_id}:"


def clocks_of(uow: Any, form: str, record_id: int, flow: str | None = None, for_update: bool = False) -> list[dict]:
    c = T.sla_clocks
    q = select(c).where(c.c.app == uow.app.name, c.c.form == form, c.c.record_id == record_id)
    if flow:
        q = q.where(c.c.flow == flow)
    if for_update:
        q = lock(q, uow.conn)
    return [dict(r) for r in uow.conn.execute(q.order_by(c.c.id)).mappings()]


def _target(uow: Any, wf: WorkflowDef, sla: SlaDef, rec: Mapping[str, Any]) -> dt.timedelta | None:
    env = record_env(uow, wf.form, rec)
    for t in sla.targets:
        if t.when is None or truthy(uow, t.when, env, what=f"{wf.name}.{sla.name} target"):
            return t.within
    return None


def _set_due_field(uow: Any, wf: WorkflowDef, sla: SlaDef, record_id: int, due: dt.datetime | None) -> None:
    if not sla.due_field:
        return
    records = uow.service("records")
    records.update(uow.as_system(), wf.form, record_id, {sla.due_field: iso(due)}, trusted=True)


def _schedule(uow: Any, clock: dict, sla: SlaDef) -> None:
    """Timers for what is still ahead of this clock (warning, breach, escalations)."""
    app = uow.app.name
    cal = calendar_for(uow.app, sla.calendar)
    due = from_db(clock["due_at"])
    prefix = f"{_key_prefix(app, clock['id'])}{clock['gen']}:"
    common = dict(app=app, kind=TIMER_KIND, form=clock["form"], record_id=clock["record_id"])
    payload = {"clock": clock["id"], "gen": clock["gen"]}
    if sla.warn_before and sla.warn and clock["warned_at"] is None and clock["level"] == 0:
        warn_at = max(cal.subtract(due, sla.warn_before), uow.now)
        scheduler.schedule_later(uow.conn, key=prefix + "warn", due_at=warn_at, payload={**payload, "what": "warn"}, **common)
    if clock["level"] == 0:
        scheduler.schedule_later(uow.conn, key=prefix + "breach", due_at=max(due, uow.now), payload={**payload, "what": "breach"}, **common)
    for i, esc in enumerate(sla.escalations):
        level = i + 2
        if clock["level"] < level:
            at = cal.add(due, esc.after)
            scheduler.schedule_later(uow.conn, key=prefix + f"esc{level}", due_at=max(at, uow.now),
                               payload={**payload, "what": "escalate", "level": level}, **common)


def _cancel(uow: Any, clock: dict) -> None:
    scheduler.cancel(uow.conn, app=uow.app.name, kind=TIMER_KIND, key_prefix=_key_prefix(uow.app.name, clock["id"]))


def _save(uow: Any, clock_id: int, **values: Any) -> dict:
    c = T.sla_clocks
    values = {k: (to_db(v) if isinstance(v, dt.datetime) else v) for k, v in values.items()}
    return dict(uow.conn.execute(update(c).where(c.c.id == clock_id).values(updated_at=to_db(uow.now), **values)
                                 .returning(c)).mappings().one())


def start(uow: Any, wf: WorkflowDef, sla: SlaDef, rec: Mapping[str, Any], existing: dict | None, *,
          if_absent: bool = False) -> dict | None:
    """Start (or restart) the clock of ``sla`` for ``rec`` now.

    ``if_absent`` (no ``existing``): only if the record has no clock of ``sla`` yet; None if it has."""
    within = _target(uow, wf, sla, rec)
    if within is None:
        return None
    cal = calendar_for(uow.app, sla.calendar)
    due = cal.add(uow.now, within)
    values = dict(status="running", started_at=to_db(uow.now), due_at=to_db(due), target_seconds=int(within.total_seconds()),
                  calendar=sla.calendar, paused_at=None, paused_seconds=0, warned_at=None, breached=False,
                  breached_at=None, level=0, stopped_at=None, app_digest=uow.app.digest, flow_digest=wf.digest,
                  updated_at=to_db(uow.now))
    c = T.sla_clocks
    if existing is None:
        stmt = _statements(uow.conn.dialect.name)["insert_new" if if_absent else "insert"]
        row = uow.conn.execute(stmt, dict(values, app=uow.app.name, form=wf.form, record_id=rec["id"], flow=wf.name,
                                          sla=sla.name, gen=1)).mappings().first()
        if row is None:
            return None   # if_absent: the record has this clock already
        clock = dict(row)
    else:
        _cancel(uow, existing)
        clock = dict(uow.conn.execute(update(c).where(c.c.id == existing["id"]).values(gen=existing["gen"] + 1, **values)
                                      .returning(c)).mappings().one())
    _schedule(uow, clock, sla)
    history(uow, wf.form, rec["id"], "sla", {"sla": sla.name, "event": "started", "due_at": iso(due)})
    _set_due_field(uow, wf, sla, rec["id"], due)
    if wf.pauses(sla, rec.get("state")):
        clock = pause(uow, wf, sla, clock)
    return clock


def pause(uow: Any, wf: WorkflowDef, sla: SlaDef, clock: dict) -> dict:
    _cancel(uow, clock)
    clock = _save(uow, clock["id"], status="paused", paused_at=uow.now)
    history(uow, wf.form, clock["record_id"], "sla", {"sla": sla.name, "event": "paused"})
    return clock


def resume(uow: Any, wf: WorkflowDef, sla: SlaDef, clock: dict) -> dict:
    cal = calendar_for(uow.app, clock["calendar"])
    paused_at = from_db(clock["paused_at"]) or uow.now
    paused = cal.between(paused_at, uow.now)
    old_due = from_db(clock["due_at"])
    due = cal.add(old_due, paused) if paused > dt.timedelta(0) else old_due
    clock = _save(uow, clock["id"], status="running", paused_at=None, due_at=due, gen=clock["gen"] + 1,
                  paused_seconds=clock["paused_seconds"] + int(paused.total_seconds()))
    _schedule(uow, clock, sla)
    history(uow, wf.form, clock["record_id"], "sla", {"sla": sla.name, "event": "resumed", "paused_seconds": int(paused.total_seconds()),
                                                      "due_at": iso(due)})
    if due != old_due:
        _set_due_field(uow, wf, sla, clock["record_id"], due)
    return clock


def stop(uow: Any, wf: WorkflowDef, sla: SlaDef, clock: dict, rec: Mapping[str, Any]) -> dict:
    _cancel(uow, clock)
    clock = _save(uow, clock["id"], status="stopped", stopped_at=uow.now, paused_at=None)
    met = not clock["breached"]
    history(uow, wf.form, clock["record_id"], "sla", {"sla": sla.name, "event": "met" if met else "stopped",
                                                      "breached": clock["breached"], "level": clock["level"]})
    if met and sla.met:
        run_actions(uow, wf.form, rec, sla.met, trigger="sla", source=f"flow:{wf.name}:sla:{sla.name}:met",
                    occurrence=f"{clock['id']}:{clock['gen']}:met", event={"sla": sla.name, "what": "met"})
    return clock


def on_created(uow: Any, wf: WorkflowDef, rec: Mapping[str, Any]) -> None:
    for sla in wf.sla:
        if wf.stops(sla, rec.get("state")):
            continue   # e.g. an imported record that is already closed
        if "created" in sla.start_on or rec.get("state") in sla.start_on:
            start(uow, wf, sla, rec, None, if_absent=True)   # unless the record has this clock already


def on_state(uow: Any, wf: WorkflowDef, rec: Mapping[str, Any], old_state: str | None, new_state: str | None) -> None:
    """Start, stop, pause and resume the record's clocks for a state change."""
    clocks = {c["sla"]: c for c in clocks_of(uow, wf.form, rec["id"], wf.name, for_update=True)}
    for sla in wf.sla:
        clock = clocks.get(sla.name)
        if clock is not None and clock["flow_digest"] != wf.digest:
            pass  # a clock started on another definition version keeps running by name
        if clock is not None and clock["status"] in ("running", "paused"):
            if wf.stops(sla, new_state):
                stop(uow, wf, sla, clock, rec)
            elif clock["status"] == "running" and wf.pauses(sla, new_state):
                pause(uow, wf, sla, clock)
            elif clock["status"] == "paused" and not wf.pauses(sla, new_state):
                resume(uow, wf, sla, clock)
            continue
        if new_state in sla.start_on and old_state != new_state and not wf.stops(sla, new_state):
            if clock is None or sla.restart:
                start(uow, wf, sla, rec, clock)


def on_updated(uow: Any, wf: WorkflowDef, rec: Mapping[str, Any], changed: frozenset) -> None:
    """A field a target depends on changed (e.g. severity): move the due time of unbreached clocks."""
    relevant = set()
    for sla in wf.sla:
        for t in sla.targets:
            for n in getattr(t.when, "names", ()) or ():
                path = tuple(n) if isinstance(n, (tuple, list)) else tuple(str(n).split("."))
                relevant.add(path[1] if path and path[0] == "record" and len(path) > 1 else path[0])
    if not (relevant & set(changed)):
        return
    clocks = {c["sla"]: c for c in clocks_of(uow, wf.form, rec["id"], wf.name, for_update=True)}
    for sla in wf.sla:
        clock = clocks.get(sla.name)
        if clock is None or clock["status"] not in ("running", "paused") or clock["breached"]:
            continue
        within = _target(uow, wf, sla, rec)
        if within is None or int(within.total_seconds()) == clock["target_seconds"]:
            continue
        cal = calendar_for(uow.app, clock["calendar"])
        due = cal.add(from_db(clock["started_at"]), within + dt.timedelta(seconds=clock["paused_seconds"]))
        _cancel(uow, clock)
        clock = _save(uow, clock["id"], due_at=due, target_seconds=int(within.total_seconds()), gen=clock["gen"] + 1)
        if clock["status"] == "running":
            _schedule(uow, clock, sla)
        history(uow, wf.form, rec["id"], "sla", {"sla": sla.name, "event": "retargeted", "due_at": iso(due)})
        _set_due_field(uow, wf, sla, rec["id"], due)


def fire(uow: Any, service: Any, timer: dict) -> None:
    """Timer handler: warning, breach or an escalation level."""
    p = timer.get("payload") or {}
    c = T.sla_clocks
    peek = uow.conn.execute(select(c.c.app, c.c.flow, c.c.record_id).where(c.c.id == p.get("clock"))).first()
    if peek is None:
        return
    i = T.instances   # lock order as in a transition: the instance first, then the clock
    uow.conn.execute(lock(select(i.c.id).where(i.c.app == peek.app, i.c.flow == peek.flow, i.c.record_id == peek.record_id),
                          uow.conn)).first()
    row = uow.conn.execute(lock(select(c).where(c.c.id == p.get("clock")), uow.conn)).mappings().first()
    if row is None:
        return
    clock = dict(row)
    if clock["status"] != "running" or clock["gen"] != p.get("gen"):
        return  # paused, stopped or re-scheduled since
    wf = service.definition(uow, clock["flow"], clock["app_digest"], clock["flow_digest"])
    sla = next((s for s in getattr(wf, "sla", ()) if s.name == clock["sla"]), None)
    if sla is None:
        return
    records = uow.service("records")
    rec = records.load(uow, clock["form"], clock["record_id"])
    if rec is None:
        _cancel(uow, clock)
        _save(uow, clock["id"], status="stopped", stopped_at=uow.now)
        return
    what = p.get("what")
    source = f"flow:{wf.name}:sla:{sla.name}"
    occurrence = timer["key"]
    event = {"sla": sla.name, "what": what, "due_at": iso(from_db(clock["due_at"]))}
    if what == "warn":
        if clock["warned_at"] is not None:
            return
        _save(uow, clock["id"], warned_at=uow.now)
        history(uow, wf.form, rec["id"], "sla", {"sla": sla.name, "event": "warning", "due_at": event["due_at"]})
        run_actions(uow, wf.form, rec, sla.warn, trigger="sla", source=source + ":warn", occurrence=occurrence,
                    event={**event, "level": 0})
    elif what == "breach":
        if clock["level"] >= 1:
            return
        _save(uow, clock["id"], breached=True, breached_at=uow.now, level=1)
        history(uow, wf.form, rec["id"], "sla", {"sla": sla.name, "event": "breached", "level": 1, "due_at": event["due_at"]})
        run_actions(uow, wf.form, rec, sla.breach, trigger="sla", source=source + ":breach", occurrence=occurrence,
                    event={**event, "level": 1})
    elif what == "escalate":
        level = int(p.get("level") or 2)
        if clock["level"] >= level:
            return
        _save(uow, clock["id"], breached=True, level=level, breached_at=clock["breached_at"] or uow.now)
        history(uow, wf.form, rec["id"], "sla", {"sla": sla.name, "event": "escalated", "level": level})
        esc = sla.escalations[level - 2] if level - 2 < len(sla.escalations) else None
        if esc is not None:
            run_actions(uow, wf.form, rec, esc.actions, trigger="sla", source=source + f":level{level}",
                        occurrence=occurrence, event={**event, "level": level})


def summary(clock: dict) -> dict:
    return {"sla": clock["sla"], "status": clock["status"], "started_at": iso(from_db(clock["started_at"])),
            "due_at": iso(from_db(clock["due_at"])), "breached": bool(clock["breached"]),
            "breached_at": iso(from_db(clock["breached_at"])), "level": clock["level"],
            "paused_seconds": clock["paused_seconds"], "stopped_at": iso(from_db(clock["stopped_at"]))}
