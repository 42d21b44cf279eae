"""Definition versioning: what happens to running instances when a flow changes.

A flow instance (and its SLA clocks, and a journey enrolment) records the app
version/digest and the flow file's digest it started on.  After an upgrade
that changes the flow, running instances **continue on their version**: the
engine compiles the stored package of that version when it needs it.

A new flow file may instead migrate them explicitly with
``migrate: {old_state: new_state}``: in the install transaction every running
instance on an older version moves to the new definition, its state mapped
(states not listed keep their name if the new flow still has them; instances
in a state that is neither mapped nor present stay on their old version).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from engine import platform as P
from engine.clock import to_db

from . import tables as T


def migrate_instances(conn: Connection, old: Any, new: Any, runtime: Any) -> None:
    if old is None:
        return
    flows = new.section("flows", None) or {}
    now = runtime.clock.now()
    records = runtime.services.get("records")
    i = T.instances
    for wf in flows.values():
        if wf.kind != "workflow" or wf.migrate is None:
            continue
        rows = [dict(r) for r in conn.execute(select(i).where(
            i.c.app == new.name, i.c.flow == wf.name, i.c.status == "active", i.c.flow_digest != wf.digest)).mappings()]
        for row in rows:
            state = row["state"]
            target = wf.migrate.get(state) if state is not None else None
            if target is None:
                target = state if state in wf.states else None
            if target is None:
                continue
            if target != state and records is not None:
                table = records.table(new, wf.form)
                conn.execute(update(table).where(table.c.id == row["record_id"]).values(state=target, updated_at=to_db(now)))
            conn.execute(update(i).where(i.c.id == row["id"]).values(
                state=target, app_version=new.version, app_digest=new.digest, flow_digest=wf.digest, updated_at=to_db(now),
                status="done" if wf.states[target].final else "active"))
            c = T.sla_clocks
            conn.execute(update(c).where(c.c.app == new.name, c.c.form == wf.form, c.c.record_id == row["record_id"],
                                         c.c.flow == wf.name).values(app_digest=new.digest, flow_digest=wf.digest))
            a = T.approvals
            for appr in conn.execute(select(a.c.id, a.c.transition).where(
                    a.c.app == new.name, a.c.form == wf.form, a.c.record_id == row["record_id"], a.c.status == "pending")).all():
                if appr.transition not in wf.transitions:
                    conn.execute(update(a).where(a.c.id == appr.id).values(status="cancelled", decided_at=to_db(now)))
            conn.execute(P.history.insert().values(
                app=new.name, form=wf.form, record_id=row["record_id"], at=to_db(now), actor="system", kind="flow",
                changes={"event": "migrated", "flow": wf.name, "from_version": row["app_version"], "to_version": new.version,
                         "state": [state, target]}))
