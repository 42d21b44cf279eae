"""Adopting records that were written without events (bulk imports, demo seed data).

Bulk writers bypass ``record.created``, so such records have no flow
instance, no SLA clocks and no journey enrolments.  :func:`adopt_existing`
gives them what they would have had, without replaying the past:

* a flow instance in the record's state (the initial state if it has none);
* SLA clocks for records not in a stop state, counted from ``created_at``:
  what is already past (a warning, the breach, escalation levels) is marked
  as happened *silently* (no messages for history), what is still ahead is
  scheduled as usual;
* journey enrolments for records whose journey is not over yet: steps whose
  time has passed are skipped (unless the journey says ``catch_up``), the
  next one is scheduled.

Idempotent: records that already have an instance/clock/enrolment are left
alone.  Runs in the caller's transaction.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, select, update

from engine.clock import from_db, to_db

from . import journeys, sla
from . import tables as T
from .common import record_env, truthy


def adopt_existing(uow: Any, service: Any) -> dict:
    records = uow.service("records")
    counts = {"instances": 0, "sla_clocks": 0, "enrolments": 0}
    for d in service.flows(uow.app).values():
        table = records.table(uow.app, d.form)
        fd = records.form(uow.app, d.form)
        if d.kind == "workflow":
            i = T.instances
            have = select(i.c.record_id).where(i.c.app == uow.app.name, i.c.flow == d.name)
            rows = uow.conn.execute(select(table).where(table.c.id.not_in(have)).order_by(table.c.id)).mappings().all()
            for row in rows:
                rec = records.decode(fd, row)
                state = rec.get("state")
                if not state or state not in d.states:
                    state = d.initial
                    uow.conn.execute(update(table).where(table.c.id == rec["id"]).values(state=state))
                    rec["state"] = state
                service._instance(uow, d, rec["id"], state)
                final = d.states[state].final
                if final:
                    uow.conn.execute(update(i).where(i.c.app == uow.app.name, i.c.flow == d.name, i.c.record_id == rec["id"])
                                     .values(status="done", ended_at=to_db(rec.get("updated_at") or uow.now)))
                counts["instances"] += 1
                for s in d.sla:
                    if d.stops(s, state) or not ("created" in s.start_on or state in s.start_on):
                        continue
                    if _adopt_clock(uow, d, s, rec):
                        counts["sla_clocks"] += 1
        else:
            e = T.enrolments
            have = select(e.c.record_id).where(e.c.app == uow.app.name, e.c.journey == d.name)
            q = select(table).where(table.c.id.not_in(have))
            horizon = _horizon(d)
            if d.anchor and horizon is not None and d.anchor in table.c:
                oldest = (uow.now - horizon).astimezone(uow.app.tz).date()
                col = table.c[d.anchor]
                q = q.where(and_(col.is_not(None), col >= (oldest if fd.fields.get(d.anchor) is None or
                                                            fd.fields[d.anchor].type == "date" else to_db(uow.now - horizon))))
            for row in uow.conn.execute(q.order_by(table.c.id)).mappings().all():
                rec = records.decode(fd, row)
                env = record_env(uow, d.form, rec)
                if d.enrol_when is not None and not truthy(uow, d.enrol_when, env):
                    continue
                if (d.exit_when is not None and truthy(uow, d.exit_when, env)) or (d.goal is not None and truthy(uow, d.goal, env)):
                    continue
                anchor = rec.get(d.anchor) if d.anchor else None
                if d.anchor and anchor is None:
                    continue
                if anchor is not None and not d.catch_up and horizon is not None:
                    last = max(s.at.apply(anchor, uow.app.tz, d.default_time) for s in d.steps)
                    if last < uow.now:
                        continue   # the whole journey lies in the past
                journeys.enrol(uow, service, d, rec, anchor)
                counts["enrolments"] += 1
    return counts


def _horizon(j: Any) -> dt.timedelta | None:
    """How long after its anchor a journey can still have steps ahead (None: unknown)."""
    if not j.steps or any(s.at is None for s in j.steps):
        return None
    return max(s.at.delta for s in j.steps) + dt.timedelta(days=1)


def _adopt_clock(uow: Any, wf: Any, s: Any, rec: dict) -> bool:
    c = T.sla_clocks
    exists = uow.conn.execute(select(c.c.id).where(c.c.app == uow.app.name, c.c.form == wf.form, c.c.record_id == rec["id"],
                                                   c.c.flow == wf.name, c.c.sla == s.name)).first()
    if exists:
        return False
    within = sla._target(uow, wf, s, rec)
    if within is None:
        return False
    cal = sla.calendar_for(uow.app, s.calendar)
    started = rec.get("created_at") or uow.now
    started = from_db(started) if isinstance(started, dt.datetime) else uow.now
    due = cal.add(started, within)
    warned_at = breached_at = None
    level = 0
    if s.warn_before and cal.subtract(due, s.warn_before) <= uow.now:
        warned_at = uow.now
    if due <= uow.now:
        level, breached_at = 1, due
        for k, esc in enumerate(s.escalations):
            if cal.add(due, esc.after) <= uow.now:
                level = k + 2
    paused = wf.pauses(s, rec.get("state"))
    clock_id = uow.conn.execute(c.insert().values(
        app=uow.app.name, form=wf.form, record_id=rec["id"], flow=wf.name, sla=s.name, gen=1,
        status="paused" if paused else "running", started_at=to_db(started), due_at=to_db(due),
        target_seconds=int(within.total_seconds()), calendar=s.calendar, paused_at=to_db(uow.now) if paused else None,
        paused_seconds=0, warned_at=to_db(warned_at), breached=level > 0, breached_at=to_db(breached_at), level=level,
        app_digest=uow.app.digest, flow_digest=wf.digest, updated_at=to_db(uow.now)).returning(c.c.id)).scalar_one()
    clock = dict(uow.conn.execute(select(c).where(c.c.id == clock_id)).mappings().one())
    if not paused:
        sla._schedule(uow, clock, s)
    if s.due_field and rec.get(s.due_field) is None:
        table = uow.service("records").table(uow.app, wf.form)
        uow.conn.execute(update(table).where(table.c.id == rec["id"]).values({s.due_field: to_db(due)}))
    return True
