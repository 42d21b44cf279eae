"""The workflow engine: states, transitions, approvals, tasks; the glue to SLAs and journeys.

``runtime.services['flows']`` is a :class:`FlowService`.  Everything runs
inside the caller's unit of work, so a transition, the record change, its
actions, the SLA clock changes, the tasks and timers it writes and the
``flow.transition`` event all commit or roll back together.

Errors map to the API contract: :class:`Conflict` (409) when a transition is
not possible from the current state (or its guard fails), :class:`Forbidden`
(403) when the user may not fire it, :class:`RecordInvalid` (422) with one
entry per missing field / comment.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update

from engine import platform as P
from engine import scheduler
from engine.crypto import mask
from engine.auth import SYSTEM_USER, get_user, list_users
from engine.db import insert_ignore
from engine.clock import from_db, to_db
from engine.errors import Conflict, Forbidden, NotFound, RecordInvalid
from engine.events import Event
from engine.uow import UnitOfWork

from . import journeys, sla
from . import tables as T
from .common import bilingual, empty, evaluate, history, iso, lock, msg, publish, record_env, run_actions, truthy
from .model import ApprovalDef, JourneyDef, TransitionDef, WorkflowDef

log = logging.getLogger("loom.flows")
AFTER_KIND = "flow.after"
REMIND_KIND = "flow.remind"
MAX_AUTO = 10
NOTICE_KIND = "mention"   # inbox notices (forms/comments): dismissed, never transferred, not record events


_STATEMENTS: dict[str, dict[str, Any]] = {}


def _statements(dialect: str) -> dict[str, Any]:
    """The instance statements of the start path, built once per dialect: values go in as
    parameters, so SQLAlchemy reuses their compiled form instead of rebuilding (and re-keying)
    a statement for every new record."""
    stmts = _STATEMENTS.get(dialect)
    if stmts is None:
        i = T.instances
        find = select(i).where(i.c.app == bindparam("app"), i.c.flow == bindparam("flow"),
                               i.c.record_id == bindparam("record_id"))
        stmts = _STATEMENTS[dialect] = {
            "find": find,
            "find_locked": find.with_for_update() if dialect == "postgresql" else find,
            "insert": i.insert().returning(i),
            # start: one statement decides whether this call starts the instance (exactly once
            # per record and flow, by the unique key; a concurrent start waits and then does nothing)
            "insert_new": insert_ignore(i, ("app", "flow", "record_id"), dialect, returning=("id",)),
        }
    return stmts


def _guard_refusal(uow: UnitOfWork, t: TransitionDef, label: str) -> str:
    """Why a transition whose guard does not hold can't be fired: its ``guard_message``, else a
    bilingual default naming it."""
    return msg(uow, t.guard_message, "") or msg(uow, bilingual(f"不满足执行“{label}”的条件",
                                                              f"the conditions for '{label}' are not met"))


class FlowService:
    def __init__(self, runtime: Any):
        self.rt = runtime
        self._old_apps: dict[str, Any] = {}
        self._index: dict[str, dict] = {}
        self._state_updates: dict[tuple, Any] = {}   # (app digest, form) -> UPDATE <table> SET state

    # ------------------------------------------------------------------ definitions
    @staticmethod
    def flows(app: Any) -> Mapping[str, Any]:
        return app.section("flows", None) or {}

    def _idx(self, app: Any) -> dict:
        idx = self._index.get(app.digest)
        if idx is None:
            wf, jr, watch = {}, {}, {}
            for d in self.flows(app).values():
                if d.kind == "workflow":
                    wf[d.form] = d
                else:
                    jr.setdefault(d.form, []).append(d)
                    for target in set(d.watch.values()):
                        watch.setdefault(target, []).append(d)
            idx = {"workflows": wf, "journeys": jr, "watch": watch}
            if len(self._index) > 32:
                self._index.clear()
            self._index[app.digest] = idx
        return idx

    def workflow_for(self, app: Any, form: str) -> WorkflowDef | None:
        return self._idx(app)["workflows"].get(form)

    def journeys_for(self, app: Any, form: str) -> list[JourneyDef]:
        return self._idx(app)["journeys"].get(form, [])

    def journey_watchers(self, app: Any, form: str) -> list[JourneyDef]:
        return self._idx(app)["watch"].get(form, [])

    def definition(self, uow: UnitOfWork, name: str, app_digest: str, flow_digest: str) -> Any:
        """The flow definition an instance started on (the current one if unchanged)."""
        current = self.flows(uow.app).get(name)
        if current is not None and current.digest == flow_digest:
            return current
        old = self._old_app(uow, app_digest)
        if old is not None:
            d = self.flows(old).get(name)
            if d is not None and d.digest == flow_digest:
                return d
        return current

    def _old_app(self, uow: UnitOfWork, digest: str) -> Any:
        if digest == uow.app.digest:
            return uow.app
        if digest not in self._old_apps:
            from engine.definitions import compile_package
            from engine.package import read_package
            from engine.problems import DefinitionError
            blob = uow.conn.execute(select(P.app_versions.c.package).where(
                P.app_versions.c.app == uow.app.name, P.app_versions.c.digest == digest)
                .order_by(P.app_versions.c.id.desc()).limit(1)).scalar()
            app = None
            if blob is not None:
                try:
                    app = compile_package(read_package(blob))
                except DefinitionError as exc:
                    log.warning("cannot compile %s %s for running flow instances: %s", uow.app.name, digest[:8], exc)
            self._old_apps[digest] = app
        return self._old_apps[digest]

    # ------------------------------------------------------------------ instances
    def _instance(self, uow: UnitOfWork, wf: WorkflowDef, record_id: int, state: str | None = None,
                  for_update: bool = False) -> dict:
        stmts = _statements(uow.conn.dialect.name)
        row = uow.conn.execute(stmts["find_locked" if for_update else "find"],
                               {"app": uow.app.name, "flow": wf.name, "record_id": record_id}).mappings().first()
        if row is not None:
            return dict(row)
        # the new row comes back from the INSERT (and is this transaction's, so locked already)
        return dict(uow.conn.execute(stmts["insert"], self._instance_row(uow, wf, record_id, state)).mappings().one())

    @staticmethod
    def _instance_row(uow: UnitOfWork, wf: WorkflowDef, record_id: int, state: str | None) -> dict:
        now = to_db(uow.now)
        return {"app": uow.app.name, "flow": wf.name, "form": wf.form, "record_id": record_id, "state": state,
                "status": "active", "app_version": uow.app.version, "app_digest": uow.app.digest,
                "flow_digest": wf.digest, "started_at": now, "updated_at": now}

    def _wf_of(self, uow: UnitOfWork, inst: dict) -> WorkflowDef:
        return self.definition(uow, inst["flow"], inst["app_digest"], inst["flow_digest"])

    @staticmethod
    def _busy(uow: UnitOfWork) -> set:
        return uow.conn.info.setdefault("loom_flows_busy", set())

    # ------------------------------------------------------------------ start
    def start(self, uow: UnitOfWork, form: str, record: Mapping[str, Any] | int) -> dict | None:
        """Put a record under its form's workflow (initial state, SLAs) and enrol it in journeys.

        Called for every created record; idempotent (a record already started is left alone).
        """
        records = uow.service("records")
        rec = record if isinstance(record, Mapping) else records.load(uow, form, int(record))
        if rec is None:
            raise NotFound(f"{form} {record} not found")
        wf = self.workflow_for(uow.app, form)
        if wf is not None:
            self._start_workflow(uow, wf, rec)
        for j in self.journeys_for(uow.app, form):
            journeys.check(uow, self, j, rec, None, created=True)
        return dict(rec)

    def _start_workflow(self, uow: UnitOfWork, wf: WorkflowDef, rec: Mapping[str, Any]) -> None:
        state = rec.get("state")
        if not state or state not in wf.states:
            state = wf.initial
        row = self._instance_row(uow, wf, rec["id"], state)
        inst_id = uow.conn.execute(_statements(uow.conn.dialect.name)["insert_new"], row).scalar()
        if inst_id is None:
            return   # started already (a record is started once)
        inst = dict(row, id=inst_id, ended_at=None)
        if rec.get("state") != state:
            # a new record normally has its initial state already (on_saving); others get it here
            uow.conn.execute(self._state_update(uow, wf.form), {"record_id": rec["id"], "state": state})
            if isinstance(rec, dict):
                rec["state"] = state   # the event's record: later handlers (rules) see the state
        rec = dict(rec, state=state)
        busy = self._busy(uow)
        key = (wf.form, rec["id"])
        busy.add(key)
        try:
            sla.on_created(uow, wf, rec)
            st = wf.states[state]
            if st.on_enter:
                run_actions(uow, wf.form, rec, st.on_enter, trigger="transition", source=f"flow:{wf.name}:{state}:enter",
                            occurrence=f"{inst['id']}:start", event={"flow": wf.name, "to": state, "from": None})
            self._schedule_timed(uow, wf, inst, state)
        finally:
            busy.discard(key)
        if any(t.auto is not None for t in wf.transitions.values()):
            self._auto(uow, wf, rec["id"])   # (without automatic transitions it would only read the record again)

    def _state_update(self, uow: UnitOfWork, form: str) -> Any:
        key = (uow.app.digest, form)
        stmt = self._state_updates.get(key)
        if stmt is None:
            table = uow.service("records").table(uow.app, form)
            if len(self._state_updates) > 256:
                self._state_updates.clear()
            stmt = self._state_updates[key] = (update(table).where(table.c.id == bindparam("record_id"))
                                               .values(state=bindparam("state")))
        return stmt

    def start_flow(self, uow: UnitOfWork, flow: str, form: str, record_id: int) -> dict:
        """The rules engine's ``start_flow`` action: enrol in a journey (or start the workflow)."""
        d = self.flows(uow.app).get(flow)
        if d is None:
            raise NotFound(f"no flow '{flow}'")
        records = uow.service("records")
        rec = records.load(uow, d.form, record_id)
        if rec is None:
            raise NotFound(f"{d.form} {record_id} not found")
        if d.kind == "workflow":
            self._start_workflow(uow, d, rec)
            return {"started": flow}
        active = [e for e in journeys.enrolments_of(uow, d.form, record_id, d.name) if e["status"] == "active"]
        if active:
            return {"enrolment": active[0]["id"], "already": True}
        enr = journeys.enrol(uow, self, d, rec, rec.get(d.anchor) if d.anchor else None)
        return {"enrolment": enr["id"]}

    # ------------------------------------------------------------------ transitions
    def _may(self, uow: UnitOfWork, wf: WorkflowDef, t: TransitionDef, rec: Mapping[str, Any], env: dict | None = None) -> bool:
        user = uow.user
        if user.is_system:
            return True
        if t.system or (t.auto is not None and not t.roles and t.allow is None) or (t.after is not None and not t.roles and t.allow is None):
            return False
        if "admin" in user.roles:
            return True
        if t.roles and not (user.roles & set(t.roles)):
            return False
        if t.allow is not None:
            env = env or record_env(uow, wf.form, rec)
            if not truthy(uow, t.allow, env, what=f"{wf.name}.{t.name}.allow"):
                return False
        if not t.roles and t.allow is None:
            from forms.access import grant
            return grant(uow.service("records").form(uow.app, wf.form), user, "update").allowed
        return True

    def transition(self, uow: UnitOfWork, form: str, record_id: int, name: str, comment: str | None = None,
                   data: Mapping[str, Any] | None = None) -> dict:
        """Fire transition ``name`` on a record; returns the record (as stored) afterwards.

        With an approval, the transition is requested instead: approvers get tasks and the
        state changes when the approval completes.
        """
        records = uow.service("records")
        wf_now = self.workflow_for(uow.app, form)
        if wf_now is None:
            raise NotFound(f"form '{form}' has no workflow")
        rec = records.load(uow, form, record_id) if uow.user.is_system else records.get(uow, form, record_id)
        if rec is None:
            raise NotFound(f"{form} {record_id} not found")
        inst = self._instance(uow, wf_now, record_id, rec.get("state"), for_update=True)
        rec = records.load(uow, form, record_id) or rec   # re-read under the lock
        wf = self._wf_of(uow, inst) or wf_now
        t = wf.transitions.get(name)
        if t is None:
            raise NotFound(f"{wf.name} has no transition '{name}'"
                           + (f"; possible: {', '.join(sorted(wf.transitions))}" if wf.transitions else ""))
        state = rec.get("state")
        label = msg(uow, t.label, name)
        if not t.allowed_from(state, wf.states):
            here = msg(uow, wf.states[state].label, state) if state in wf.states else str(state)
            raise Conflict(msg(uow, bilingual(f"当前状态“{here}”下不能执行“{label}”",
                                              f"'{label}' is not possible in state '{here}'")))
        pending = self._pending_approval(uow, form, record_id)
        if pending is not None and pending["transition"] == name:
            raise Conflict(msg(uow, bilingual(f"“{label}”正在审批中", f"'{label}' is already waiting for approval")))
        env = record_env(uow, form, rec)
        if not self._may(uow, wf, t, rec, env):
            raise Forbidden(msg(uow, bilingual(f"您无权执行“{label}”", f"you may not '{label}' this record")))
        data = dict(data or {})
        errors = []
        if t.comment == "required" and empty(comment):
            errors.append({"field": "comment", "code": "required",
                           "message": msg(uow, bilingual(f"执行“{label}”需要填写说明", f"'{label}' needs a comment"))})
        fd = records.form(uow.app, form)
        for f in t.requires:
            value = data[f] if f in data else rec.get(f)
            if empty(value):
                flabel = msg(uow, fd.fields[f].label, f) if f in fd.fields else f
                errors.append({"field": f, "code": "required", "message": msg(uow, bilingual(
                    f"执行“{label}”前请填写“{flabel}”", f"{fd.fields[f].label.get('en') if f in fd.fields else f} is required to '{label}'"))})
        if errors:
            raise RecordInvalid(errors)
        key = (form, record_id)
        busy = self._busy(uow)
        nested = key in busy
        busy.add(key)          # no automatic transition may cut in while this one runs
        try:
            if data:
                trusted = set(data) <= set(t.fields) | set(t.requires)
                rec = records.update(uow, form, record_id, data, trusted=trusted)
                env = record_env(uow, form, rec)
            if t.guard is not None:
                try:
                    ok = bool(evaluate(uow, t.guard, env))
                except Exception as exc:  # noqa: BLE001 - a guard that cannot be evaluated does not hold
                    log.warning("guard of %s.%s failed: %s", wf.name, name, exc)
                    ok = False
                if not ok:
                    raise Conflict(_guard_refusal(uow, t, label))
            if t.approval is not None:
                self._request_approval(uow, wf, inst, rec, t, comment, data)
            else:
                self._change_state(uow, wf, inst, rec, t.target(state), t, comment)
        finally:
            if not nested:
                busy.discard(key)
        if not nested:
            self._auto(uow, wf, record_id)
        return records.load(uow, form, record_id)

    def _change_state(self, uow: UnitOfWork, wf: WorkflowDef, inst: dict, rec: Mapping[str, Any], to: str,
                      t: TransitionDef | None, comment: str | None, *, kind: str = "transition",
                      extra: dict | None = None) -> dict:
        records = uow.service("records")
        frm = rec.get("state")
        key = (wf.form, rec["id"])
        busy = self._busy(uow)
        nested = key in busy
        busy.add(key)
        try:
            new = records.update(uow, wf.form, rec["id"], {}, trusted=True, system_values={"state": to})
            name = t.name if t is not None else (extra or {}).get("transition")
            history(uow, wf.form, rec["id"], kind, {"transition": name, "from": frm, "to": to, "flow": wf.name,
                                                   **(extra or {})}, comment)
            i = T.instances
            final = wf.states[to].final if to in wf.states else False
            uow.conn.execute(update(i).where(i.c.id == inst["id"]).values(
                state=to, updated_at=to_db(uow.now), status="done" if final else "active",
                ended_at=to_db(uow.now) if final else None))
            scheduler.cancel(uow.conn, app=uow.app.name, kind=AFTER_KIND, key_prefix=f"flow:{uow.app.name}:{inst['id']}:after:")
            if to != frm:
                self._cancel_approvals(uow, wf.form, rec["id"], reason=f"state changed to {to}")
                sla.on_state(uow, wf, new, frm, to)
            occurrence = f"{inst['id']}:{name}:{iso(uow.now)}"
            ev = {"flow": wf.name, "transition": name, "from": frm, "to": to, "comment": comment, "actor": uow.user.username}
            if t is not None and t.actions:
                run_actions(uow, wf.form, new, t.actions, trigger="transition", source=f"flow:{wf.name}:{name}",
                            occurrence=occurrence, event=ev, old=rec)
                new = records.load(uow, wf.form, rec["id"]) or new
            st = wf.states.get(to)
            if st is not None and st.on_enter and to != frm:
                run_actions(uow, wf.form, new, st.on_enter, trigger="transition", source=f"flow:{wf.name}:{to}:enter",
                            occurrence=occurrence, event=ev, old=rec)
                new = records.load(uow, wf.form, rec["id"]) or new
            publish(uow, Event("flow.transition", uow.app.name, wf.form, dict(new), old=dict(rec),
                               changed=frozenset({"state"}), data=ev))
            new = records.load(uow, wf.form, rec["id"]) or new
            inst = dict(inst, state=to, updated_at=to_db(uow.now))
            if new.get("state") == to:
                self._schedule_timed(uow, wf, inst, to)
        finally:
            if not nested:
                busy.discard(key)
        if not nested:
            self._auto(uow, wf, rec["id"])
            new = records.load(uow, wf.form, rec["id"]) or new
        return new

    def _auto(self, uow: UnitOfWork, wf: WorkflowDef, record_id: int) -> None:
        """Fire automatic transitions (``auto: <condition>``) while one holds."""
        records = uow.service("records")
        sys_uow = uow.as_system()
        for _ in range(MAX_AUTO):
            rec = records.load(uow, wf.form, record_id)
            if rec is None:
                return
            inst = self._instance(uow, wf, record_id, rec.get("state"))
            cur = self._wf_of(uow, inst) or wf
            autos = [t for t in cur.transitions.values() if t.auto is not None and t.allowed_from(rec.get("state"), cur.states)]
            if not autos:
                return
            env = record_env(uow, cur.form, rec)
            fired = None
            for t in sorted(autos, key=lambda t: t.order):
                if truthy(uow, t.auto, env, what=f"{cur.name}.{t.name}.auto") and truthy(uow, t.guard, env):
                    fired = t
                    break
            if fired is None:
                return
            busy = self._busy(uow)
            key = (cur.form, record_id)
            nested = key in busy
            busy.add(key)      # this loop looks for the next automatic transition itself
            try:
                self._change_state(sys_uow, cur, inst, rec, fired.to, fired, None, extra={"auto": True})
            finally:
                if not nested:
                    busy.discard(key)
        log.warning("%s: automatic transitions of record %s kept firing; stopped after %d", wf.name, record_id, MAX_AUTO)

    def _schedule_timed(self, uow: UnitOfWork, wf: WorkflowDef, inst: dict, state: str) -> None:
        for t in wf.transitions.values():
            if t.after is None or state not in t.from_states:
                continue
            cal = sla.calendar_for(uow.app, t.calendar)
            due = cal.add(uow.now, t.after)
            scheduler.schedule_later(uow.conn, app=uow.app.name, kind=AFTER_KIND,
                               key=f"flow:{uow.app.name}:{inst['id']}:after:{t.name}:{iso(uow.now)}", due_at=due,
                               payload={"instance": inst["id"], "transition": t.name, "state": state, "entered": iso(uow.now)},
                               form=wf.form, record_id=inst["record_id"])

    def fire_after(self, uow: UnitOfWork, timer: dict) -> None:
        p = timer.get("payload") or {}
        i = T.instances
        row = uow.conn.execute(lock(select(i).where(i.c.id == p.get("instance")), uow.conn)).mappings().first()
        if row is None or row["state"] != p.get("state") or iso(from_db(row["updated_at"])) != p.get("entered"):
            return
        try:
            self.transition(uow, row["form"], row["record_id"], p["transition"])
        except (Conflict, NotFound) as exc:
            log.info("timed transition %s skipped: %s", p.get("transition"), exc)

    # ------------------------------------------------------------------ approvals
    def _pending_approval(self, uow: UnitOfWork, form: str, record_id: int) -> dict | None:
        a = T.approvals
        row = uow.conn.execute(select(a).where(a.c.app == uow.app.name, a.c.form == form, a.c.record_id == record_id,
                                               a.c.status == "pending").order_by(a.c.id.desc())).mappings().first()
        return dict(row) if row else None

    def _resolve_approvers(self, uow: UnitOfWork, wf: WorkflowDef, ap: ApprovalDef, rec: Mapping[str, Any]) -> list[dict]:
        env = record_env(uow, wf.form, rec)
        out: list[dict] = []
        seen: set[str] = set()
        stage = 0
        for entry in ap.approvers:
            if entry.when is not None and not truthy(uow, entry.when, env, what=f"{wf.name} approver when"):
                continue
            names: list[str] = []
            if entry.role is not None:
                for u in list_users(uow.conn, role=entry.role):
                    if entry.where is not None:
                        uenv = dict(u.env())
                        uenv.update(record=env, current_user=uow.user.env(), settings=dict(uow.app.settings))
                        if not truthy(uow, entry.where, uenv, what=f"{wf.name} approver where"):
                            continue
                    names.append(u.username)
                source = f"role:{entry.role}"
            else:
                try:
                    value = evaluate(uow, entry.user_expr, env)
                except Exception as exc:  # noqa: BLE001
                    log.warning("approver expression failed: %s", exc)
                    value = None
                values = value if isinstance(value, (list, tuple)) else [value]
                for v in values:
                    if isinstance(v, Mapping):
                        v = v.get("username") or v.get("name")
                    if v:
                        u = get_user(uow.conn, str(v))
                        if u is not None and u.active:
                            names.append(u.username)
                source = "user_expr"
            added = False
            for name in names:
                user, behalf = self._delegate(uow, name)
                if user in seen:
                    continue
                seen.add(user)
                out.append({"user": user, "on_behalf_of": behalf, "stage": stage, "source": source})
                added = True
            if added and ap.mode == "sequential":
                stage += 1
        return out

    def _delegate(self, uow: UnitOfWork, username: str) -> tuple[str, str | None]:
        """An approver who is away (``away_until`` in the future) hands over to ``delegate_to``."""
        u = P.users
        row = uow.conn.execute(select(u.c.away_until, u.c.delegate_to).where(u.c.username == username)).first()
        if row and row.delegate_to and row.away_until and from_db(row.away_until) > uow.now:
            target = get_user(uow.conn, row.delegate_to)
            if target is not None and target.active:
                return target.username, username
        return username, None

    def _request_approval(self, uow: UnitOfWork, wf: WorkflowDef, inst: dict, rec: Mapping[str, Any], t: TransitionDef,
                          comment: str | None, data: Mapping[str, Any]) -> dict:
        ap = t.approval
        label = msg(uow, t.label, t.name)
        approvers = self._resolve_approvers(uow, wf, ap, rec)
        if not approvers:
            raise Conflict(msg(uow, bilingual(f"找不到“{label}”的审批人，请联系管理员", f"no approver found for '{label}'; ask an administrator")))
        needed = {"count": ap.count, "percent": ap.percent}.get(ap.mode, len(approvers))
        if ap.mode == "count" and ap.count > len(approvers):
            raise Conflict(msg(uow, bilingual(f"“{label}”需要{ap.count}人同意，但只找到{len(approvers)}位审批人",
                                              f"'{label}' needs {ap.count} approvals but only {len(approvers)} approvers were found")))
        self._cancel_approvals(uow, wf.form, rec["id"], reason=f"new request: {t.name}")
        a = T.approvals
        approval_id = uow.conn.execute(a.insert().values(
            app=uow.app.name, instance_id=inst["id"], flow=wf.name, form=wf.form, record_id=rec["id"], transition=t.name,
            from_state=rec.get("state"), mode=ap.mode, needed=needed, status="pending", stage=0, approvers=approvers,
            requested_by=uow.user.username, requested_at=to_db(uow.now), comment=comment,
            payload={"data_fields": sorted(data)}).returning(a.c.id)).scalar_one()
        appr = self._approval(uow, approval_id)
        self._open_stage_tasks(uow, wf, appr, ap, t)
        history(uow, wf.form, rec["id"], "approval", {"event": "requested", "transition": t.name, "approval": approval_id,
                                                      "approvers": [x["user"] for x in approvers], "mode": ap.mode}, comment)
        return appr

    def _approval(self, uow: UnitOfWork, approval_id: int, for_update: bool = False) -> dict:
        a = T.approvals
        q = select(a).where(a.c.id == approval_id)
        row = uow.conn.execute(lock(q, uow.conn) if for_update else q).mappings().first()
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        return dict(row)

    def _open_stage_tasks(self, uow: UnitOfWork, wf: WorkflowDef, appr: dict, ap: ApprovalDef, t: TransitionDef) -> None:
        for entry in appr["approvers"]:
            if appr["mode"] == "sequential" and entry["stage"] != appr["stage"]:
                continue
            self._approval_task(uow, wf, appr, ap, t, entry)

    def _approval_task(self, uow: UnitOfWork, wf: WorkflowDef, appr: dict, ap: ApprovalDef | None, t: TransitionDef | None,
                       entry: dict) -> int:
        title = dict(ap.title) if ap is not None and ap.title else (
            {"zh": f"审批：{(t.label.get('zh') if t else appr['transition'])}", "en": f"Approve: {(t.label.get('en') if t else appr['transition'])}"})
        due = uow.now + ap.due if ap is not None and ap.due else None
        tk = P.tasks
        task_id = uow.conn.execute(tk.insert().values(
            app=uow.app.name, form=appr["form"], record_id=appr["record_id"], kind="approval", title=title,
            assignee=entry["user"], status="open", due_at=to_db(due), created_at=to_db(uow.now), flow=appr["flow"],
            step=appr["transition"],
            payload={"approval": appr["id"], "stage": entry["stage"], "on_behalf_of": entry.get("on_behalf_of")},
        ).returning(tk.c.id)).scalar_one()
        if ap is not None and ap.notify:
            self._notify_user(uow, appr["form"], appr["record_id"], entry["user"], ap.notify,
                              source=f"flow:{appr['flow']}:{appr['transition']}:approval", occurrence=f"task:{task_id}")
        if ap is not None and ap.remind_after:
            scheduler.schedule_later(uow.conn, app=uow.app.name, kind=REMIND_KIND, key=f"flow:{uow.app.name}:remind:{task_id}:1",
                               due_at=uow.now + ap.remind_after, payload={"task": task_id, "n": 1},
                               form=appr["form"], record_id=appr["record_id"])
        return task_id

    def _notify_user(self, uow: UnitOfWork, form: str, record_id: int, username: str, template: str, *,
                     source: str, occurrence: str) -> None:
        """Send a package template to one user (in-app by default) through the rules engine's notify."""
        from rules.actions.base import Literal, RunContext
        from rules.notify import NotifyParams, RecipientSpec, send
        rec = uow.service("records").load(uow, form, record_id) or {"id": record_id}
        rc = RunContext(uow, form, rec, trigger="approval", source=source, occurrence=occurrence)
        send(rc, NotifyParams(template, (RecipientSpec("user_expr", expr=Literal(username)),)))

    def _cancel_approvals(self, uow: UnitOfWork, form: str, record_id: int, reason: str) -> None:
        a = T.approvals
        pending = [dict(r) for r in uow.conn.execute(select(a).where(
            a.c.app == uow.app.name, a.c.form == form, a.c.record_id == record_id, a.c.status == "pending")).mappings()]
        for appr in pending:
            uow.conn.execute(update(a).where(a.c.id == appr["id"]).values(status="cancelled", decided_at=to_db(uow.now)))
            self._close_approval_tasks(uow, appr["id"], "cancelled", "cancelled")
            history(uow, form, record_id, "approval", {"event": "cancelled", "transition": appr["transition"],
                                                       "approval": appr["id"], "reason": reason})

    def _close_approval_tasks(self, uow: UnitOfWork, approval_id: int, status: str, outcome: str) -> None:
        tk = P.tasks
        a = T.approvals
        where = uow.conn.execute(select(a.c.form, a.c.record_id).where(a.c.id == approval_id)).first()
        if where is None:
            return
        rows = uow.conn.execute(select(tk.c.id, tk.c.payload).where(
            tk.c.app == uow.app.name, tk.c.form == where.form, tk.c.record_id == where.record_id,
            tk.c.kind == "approval", tk.c.status == "open")).all()
        ids = [r.id for r in rows if (r.payload or {}).get("approval") == approval_id]
        if ids:
            uow.conn.execute(update(tk).where(tk.c.id.in_(ids)).values(status=status, outcome=outcome,
                                                                       completed_at=to_db(uow.now)))

    def _tally(self, uow: UnitOfWork, appr: dict) -> str:
        v = T.votes
        votes = {}
        for r in uow.conn.execute(select(v).where(v.c.approval_id == appr["id"]).order_by(v.c.id)).mappings():
            votes[r["approver"]] = r["decision"]
        approvers = appr["approvers"]
        users = [e["user"] for e in approvers]
        approve = sum(1 for u in users if votes.get(u) == "approve")
        reject = sum(1 for u in users if votes.get(u) == "reject")
        pending = len(users) - approve - reject
        mode, total, needed = appr["mode"], len(users), appr["needed"]
        if mode in ("single", "any"):
            return "approved" if approve else ("rejected" if reject else "pending")
        if mode == "all":
            return "rejected" if reject else ("approved" if approve == total else "pending")
        if mode == "count":
            if approve >= needed:
                return "approved"
            return "rejected" if approve + pending < needed else "pending"
        if mode == "percent":
            if approve * 100 >= needed * total:
                return "approved"
            return "rejected" if (approve + pending) * 100 < needed * total else "pending"
        # sequential: each stage needs one approval of its approvers; any rejection ends it
        if reject:
            return "rejected"
        stage_users = [e["user"] for e in approvers if e["stage"] == appr["stage"]]
        if any(votes.get(u) == "approve" for u in stage_users):
            return "approved" if appr["stage"] >= max(e["stage"] for e in approvers) else "next"
        return "pending"

    # ------------------------------------------------------------------ tasks
    def _task(self, uow: UnitOfWork, task_id: int, for_update: bool = True) -> dict:
        tk = P.tasks
        q = select(tk).where(tk.c.id == task_id, tk.c.app == uow.app.name)
        row = uow.conn.execute(lock(q, uow.conn) if for_update else q).mappings().first()
        if row is None:
            raise NotFound(f"task {task_id} not found")
        return dict(row)

    def may_act_on(self, uow: UnitOfWork, task: dict) -> bool:
        user = uow.user
        if user.is_system or "admin" in user.roles:
            return True
        if task["assignee"]:
            return task["assignee"] == user.username
        if task["candidate_role"] and task["candidate_role"] in user.roles:
            if task["form"] and task["record_id"] is not None:
                try:
                    uow.service("records").get(uow, task["form"], task["record_id"])
                except (NotFound, Forbidden):
                    return False
            return True
        return False

    def _open_task_for(self, uow: UnitOfWork, task_id: int) -> dict:
        # Lock order everywhere: flow instance, then record, approval, task -- as a transition does.
        peek = self._task(uow, task_id, for_update=False)
        approval_id = (peek["payload"] or {}).get("approval") if peek["kind"] == "approval" else None
        if approval_id:
            inst_id = uow.conn.execute(select(T.approvals.c.instance_id).where(T.approvals.c.id == approval_id)).scalar()
            if inst_id is not None:
                uow.conn.execute(lock(select(T.instances.c.id).where(T.instances.c.id == inst_id), uow.conn)).first()
        task = self._task(uow, task_id)
        if not self.may_act_on(uow, task):
            raise Forbidden(msg(uow, bilingual("这不是您的任务", "this task is not yours")))
        if task["status"] != "open":
            raise Conflict(msg(uow, bilingual("任务已处理", f"this task is already {task['status']}")))
        return task

    def complete_task(self, uow: UnitOfWork, task_id: int, comment: str | None = None, outcome: str | None = None) -> dict:
        task = self._open_task_for(uow, task_id)
        if task["kind"] == "approval":
            raise Conflict(msg(uow, bilingual("审批任务请选择同意或驳回", "approval tasks are approved or rejected, not completed")))
        tk = P.tasks
        uow.conn.execute(update(tk).where(tk.c.id == task_id).values(
            status="done", outcome=(outcome or "done")[:24], completed_at=to_db(uow.now), completed_by=uow.user.username,
            assignee=task["assignee"] or uow.user.username))
        if task["form"] and task["record_id"] is not None and task["kind"] != NOTICE_KIND:   # dismissing a mention is not a record event
            history(uow, task["form"], task["record_id"], "task", {"task": task_id, "event": "completed",
                                                                   "outcome": outcome or "done", "title": task["title"]}, comment)
        return self._task(uow, task_id, for_update=False)

    def decide(self, uow: UnitOfWork, task_id: int, decision: str, comment: str | None = None) -> dict:
        """Approve or reject through an approval task."""
        if decision not in ("approve", "reject"):
            raise RecordInvalid([{"field": "decision", "code": "invalid", "message": "approve or reject"}])
        task = self._open_task_for(uow, task_id)
        if task["kind"] != "approval":
            raise Conflict(msg(uow, bilingual("这不是审批任务", "this task is not an approval; complete it instead")))
        approval_id = (task["payload"] or {}).get("approval")
        appr = self._approval(uow, approval_id, for_update=True)
        if appr["status"] != "pending":
            raise Conflict(msg(uow, bilingual("该审批已结束", f"this approval is already {appr['status']}")))
        wf_inst = dict(uow.conn.execute(select(T.instances).where(T.instances.c.id == appr["instance_id"])).mappings().one())
        wf = self._wf_of(uow, wf_inst)
        t = wf.transitions.get(appr["transition"])
        approver = task["assignee"] or uow.user.username
        uow.conn.execute(T.votes.insert().values(
            approval_id=appr["id"], stage=(task["payload"] or {}).get("stage", 0), approver=approver,
            on_behalf_of=(task["payload"] or {}).get("on_behalf_of"), decision=decision, comment=comment, at=to_db(uow.now)))
        tk = P.tasks
        uow.conn.execute(update(tk).where(tk.c.id == task_id).values(
            status="done", outcome="approved" if decision == "approve" else "rejected", completed_at=to_db(uow.now),
            completed_by=uow.user.username))
        history(uow, appr["form"], appr["record_id"], "approval", {
            "event": "approved" if decision == "approve" else "rejected", "transition": appr["transition"],
            "approval": appr["id"], "by": uow.user.username, **({"on_behalf_of": approver} if approver != uow.user.username else {})}, comment)
        outcome = self._tally(uow, appr)
        a = T.approvals
        records = uow.service("records")
        if outcome == "next":
            self._close_approval_tasks(uow, appr["id"], "cancelled", "not_needed")
            stage = appr["stage"] + 1
            uow.conn.execute(update(a).where(a.c.id == appr["id"]).values(stage=stage))
            appr = self._approval(uow, appr["id"])
            self._open_stage_tasks(uow, wf, appr, t.approval if t else None, t)
        elif outcome in ("approved", "rejected"):
            uow.conn.execute(update(a).where(a.c.id == appr["id"]).values(status=outcome, decided_at=to_db(uow.now)))
            self._close_approval_tasks(uow, appr["id"], "cancelled", "not_needed")
            rec = records.load(uow, appr["form"], appr["record_id"])
            inst = self._instance(uow, wf, appr["record_id"], for_update=True)
            history(uow, appr["form"], appr["record_id"], "approval", {"event": f"approval_{outcome}", "transition": appr["transition"],
                                                                       "approval": appr["id"]})
            if outcome == "approved" and t is not None:
                if rec.get("state") == appr["from_state"]:
                    self._change_state(uow, wf, inst, rec, t.target(rec.get("state")), t, comment, extra={"approval": appr["id"]})
            elif outcome == "rejected" and t is not None and t.approval is not None:
                if t.approval.on_reject:
                    run_actions(uow, wf.form, rec, t.approval.on_reject, trigger="transition",
                                source=f"flow:{wf.name}:{t.name}:rejected", occurrence=f"approval:{appr['id']}:rejected",
                                event={"flow": wf.name, "transition": t.name, "approval": appr["id"], "outcome": "rejected"})
                    rec = records.load(uow, appr["form"], appr["record_id"]) or rec
                to = t.approval.reject_to
                if to and rec.get("state") != to:
                    self._change_state(uow, wf, inst, rec, to, None, comment, kind="transition",
                                       extra={"transition": f"{t.name}:rejected", "approval": appr["id"]})
        return {"task": self._task(uow, task_id, for_update=False), "approval": self.approval_summary(uow, self._approval(uow, appr["id"]))}

    def transfer(self, uow: UnitOfWork, task_id: int, to_user: str, comment: str | None = None) -> dict:
        """转办: hand an open task over to another user."""
        task = self._open_task_for(uow, task_id)
        if task["kind"] == NOTICE_KIND:
            raise Conflict(msg(uow, bilingual("提及通知不能转交，阅后点“完成”即可", "a mention can't be transferred; dismiss it when read")))
        target = get_user(uow.conn, to_user or "")
        if target is None or not target.active:
            raise RecordInvalid([{"field": "to", "code": "not_found", "message": msg(uow, bilingual(
                f"用户“{to_user}”不存在或已停用", f"no active user '{to_user}'"))}])
        if target.username == task["assignee"]:
            raise Conflict(msg(uow, bilingual("任务已在该用户名下", "the task is already assigned to this user")))
        if task["kind"] == "approval":
            appr = self._approval(uow, (task["payload"] or {}).get("approval"), for_update=True)
            wf = self.definition(uow, appr["flow"], *self._digests(uow, appr))
            t = wf.transitions.get(appr["transition"]) if wf else None
            if t is not None and t.approval is not None and not t.approval.allow_transfer:
                raise Conflict(msg(uow, bilingual("该审批不允许转办", "this approval cannot be transferred")))
            if any(e["user"] == target.username for e in appr["approvers"]):
                raise Conflict(msg(uow, bilingual(f"“{target.username}”已是审批人", f"'{target.username}' is already an approver")))
            approvers = [dict(e, user=target.username, transferred_from=e["user"]) if e["user"] == task["assignee"] else e
                         for e in appr["approvers"]]
            uow.conn.execute(update(T.approvals).where(T.approvals.c.id == appr["id"]).values(approvers=approvers))
        tk = P.tasks
        payload = dict(task["payload"] or {})
        payload.setdefault("transfers", []).append({"from": task["assignee"], "to": target.username, "by": uow.user.username,
                                                    "at": iso(uow.now)})
        uow.conn.execute(update(tk).where(tk.c.id == task_id).values(assignee=target.username, payload=payload))
        if task["form"] and task["record_id"] is not None:
            history(uow, task["form"], task["record_id"], "task", {"task": task_id, "event": "transferred",
                                                                   "from": task["assignee"], "to": target.username}, comment)
        return self._task(uow, task_id, for_update=False)

    def add_signer(self, uow: UnitOfWork, task_id: int, username: str, comment: str | None = None) -> dict:
        """加签: add a co-signer to the approval of this task (after the current stage when sequential)."""
        task = self._open_task_for(uow, task_id)
        if task["kind"] != "approval":
            raise Conflict(msg(uow, bilingual("只有审批任务可以加签", "only approvals take co-signers")))
        target = get_user(uow.conn, username or "")
        if target is None or not target.active:
            raise RecordInvalid([{"field": "to", "code": "not_found", "message": msg(uow, bilingual(
                f"用户“{username}”不存在或已停用", f"no active user '{username}'"))}])
        appr = self._approval(uow, (task["payload"] or {}).get("approval"), for_update=True)
        wf = self.definition(uow, appr["flow"], *self._digests(uow, appr))
        t = wf.transitions.get(appr["transition"]) if wf else None
        if t is not None and t.approval is not None and not t.approval.allow_add_signer:
            raise Conflict(msg(uow, bilingual("该审批不允许加签", "this approval does not take co-signers")))
        if any(e["user"] == target.username for e in appr["approvers"]):
            raise Conflict(msg(uow, bilingual(f"“{target.username}”已是审批人", f"'{target.username}' is already an approver")))
        approvers = [dict(e) for e in appr["approvers"]]
        if appr["mode"] == "sequential":
            for e in approvers:
                if e["stage"] > appr["stage"]:
                    e["stage"] += 1
            entry = {"user": target.username, "on_behalf_of": None, "stage": appr["stage"] + 1, "source": f"added_by:{uow.user.username}"}
        else:
            entry = {"user": target.username, "on_behalf_of": None, "stage": appr["stage"], "source": f"added_by:{uow.user.username}"}
        approvers.append(entry)
        needed = appr["needed"] if appr["mode"] in ("count", "percent") else len(approvers)
        uow.conn.execute(update(T.approvals).where(T.approvals.c.id == appr["id"]).values(approvers=approvers, needed=needed))
        appr = self._approval(uow, appr["id"])
        if appr["mode"] != "sequential":
            self._approval_task(uow, wf, appr, t.approval if t else None, t, entry)
        history(uow, appr["form"], appr["record_id"], "approval", {"event": "signer_added", "approval": appr["id"],
                                                                   "user": target.username}, comment)
        return self.approval_summary(uow, appr)

    def _digests(self, uow: UnitOfWork, appr: dict) -> tuple[str, str]:
        i = T.instances
        row = uow.conn.execute(select(i.c.app_digest, i.c.flow_digest).where(i.c.id == appr["instance_id"])).first()
        return (row.app_digest, row.flow_digest) if row else (uow.app.digest, "")

    def fire_reminder(self, uow: UnitOfWork, timer: dict) -> None:
        from engine.outbox import enqueue_batched
        p = timer.get("payload") or {}
        tk = P.tasks
        task = uow.conn.execute(select(tk).where(tk.c.id == p.get("task"))).mappings().first()
        if task is None or task["status"] != "open" or not task["assignee"]:
            return
        n = int(p.get("n") or 1)
        a = T.approvals
        appr_id = (task["payload"] or {}).get("approval")
        ap = None
        if appr_id:
            appr = uow.conn.execute(select(a).where(a.c.id == appr_id)).mappings().first()
            if appr is not None:
                wf = self.definition(uow, appr["flow"], *self._digests(uow, dict(appr)))
                t = wf.transitions.get(appr["transition"]) if wf else None
                ap = t.approval if t else None
        if ap is not None and ap.remind_every and n < ap.max_reminders:
            scheduler.schedule_later(uow.conn, app=uow.app.name, kind=REMIND_KIND, key=f"flow:{uow.app.name}:remind:{task['id']}:{n + 1}",
                               due_at=uow.now + ap.remind_every, payload={"task": task["id"], "n": n + 1},
                               form=task["form"], record_id=task["record_id"])
        if ap is not None and ap.remind_template and task["form"]:
            self._notify_user(uow, task["form"], task["record_id"], task["assignee"], ap.remind_template,
                              source=f"flow:reminder:{task['id']}", occurrence=timer["key"])
            return
        title = task["title"] or {}
        text_ = {"zh": f"提醒：您有一项待处理的任务“{title.get('zh') or title.get('en') or ''}”（{task['form']} #{task['record_id']}）",
                 "en": f"Reminder: the task '{title.get('en') or title.get('zh') or ''}' is waiting for you ({task['form']} #{task['record_id']})"}
        user = get_user(uow.conn, task["assignee"])
        lang = (user.language if user and user.language else uow.app.default_language) or "zh"
        enqueue_batched(uow.conn, app=uow.app.name, template="flow_task_reminder", channel="inapp",
                        recipient=task["assignee"], rendered=text_.get(lang) or text_["zh"], key=timer["key"],
                        due_at=uow.now, now=uow.now, lang=lang, recipient_kind="user", form=task["form"],
                        record_id=task["record_id"])

    # ------------------------------------------------------------------ reading
    def approval_summary(self, uow: UnitOfWork, appr: dict) -> dict:
        v = T.votes
        votes = [{"approver": r["approver"], "on_behalf_of": r["on_behalf_of"], "decision": r["decision"],
                  "comment": r["comment"], "at": iso(from_db(r["at"])), "stage": r["stage"]}
                 for r in uow.conn.execute(select(v).where(v.c.approval_id == appr["id"]).order_by(v.c.id)).mappings()]
        return {"id": appr["id"], "transition": appr["transition"], "mode": appr["mode"], "needed": appr["needed"],
                "status": appr["status"], "stage": appr["stage"], "approvers": appr["approvers"], "votes": votes,
                "requested_by": appr["requested_by"], "requested_at": iso(from_db(appr["requested_at"])),
                "decided_at": iso(from_db(appr["decided_at"])), "comment": appr["comment"]}

    def available(self, uow: UnitOfWork, form: str, rec: Mapping[str, Any]) -> list[dict]:
        """Transitions the current user may fire now (for buttons)."""
        wf = self.workflow_for(uow.app, form)
        if wf is None:
            return []
        i = T.instances
        row = uow.conn.execute(select(i).where(i.c.app == uow.app.name, i.c.flow == wf.name, i.c.record_id == rec["id"])).mappings().first()
        if row is not None:
            wf = self._wf_of(uow, dict(row)) or wf
        env = record_env(uow, form, rec)
        fd = uow.service("records").form(uow.app, form)
        out = []
        for t in sorted(wf.transitions.values(), key=lambda t: t.order):
            if not t.allowed_from(rec.get("state"), wf.states) or not self._may(uow, wf, t, rec, env):
                continue
            if uow.user.is_system is False and (t.system or ((t.auto is not None or t.after is not None) and not t.roles and t.allow is None)):
                continue
            label = msg(uow, t.label, t.name)
            # a failing guard is said on the button (the page disables it when nothing the user enters
            # in the step can change that): the same words the transition would be refused with
            blocked = _guard_refusal(uow, t, label) if t.guard is not None and not truthy(uow, t.guard, env) else None
            target = t.target(rec.get("state"))
            to = wf.states.get(target or "")
            out.append({"name": t.name, "label": label, "to": target,
                        "to_label": msg(uow, to.label, target) if to else target, "comment": t.comment,
                        "requires": [{"field": f, "label": msg(uow, fd.fields[f].label, f) if f in fd.fields else f,
                                      "missing": empty(rec.get(f))} for f in t.requires],
                        "fields": list(t.fields), "approval": t.approval.mode if t.approval else None,
                        "blocked": blocked})
        return out

    def flow_info(self, uow: UnitOfWork, form: str, record_id: int) -> dict:
        records = uow.service("records")
        rec = records.get(uow, form, record_id)
        wf = self.workflow_for(uow.app, form)
        out: dict[str, Any] = {"form": form, "id": record_id, "state": rec.get("state"), "workflow": None,
                               "transitions": [], "pending_approval": None, "sla": [], "journeys": [],
                               "history": records.history(uow, form, record_id)}
        if wf is not None:
            i = T.instances
            row = uow.conn.execute(select(i).where(i.c.app == uow.app.name, i.c.flow == wf.name, i.c.record_id == record_id)).mappings().first()
            if row is not None:
                wf = self._wf_of(uow, dict(row)) or wf
            st = wf.states.get(rec.get("state") or "")
            out["workflow"] = {"name": wf.name, "label": msg(uow, wf.label, wf.name),
                               "states": [{"name": s.name, "label": msg(uow, s.label, s.name), "final": s.final,
                                           "color": s.color} for s in wf.states.values()],
                               "instance": ({"app_version": row["app_version"], "status": row["status"],
                                             "started_at": iso(from_db(row["started_at"])),
                                             "current_definition": row["flow_digest"] == self.workflow_for(uow.app, form).digest}
                                            if row is not None else None)}
            out["state_label"] = msg(uow, st.label, st.name) if st else rec.get("state")
            out["transitions"] = self.available(uow, form, rec)
            pending = self._pending_approval(uow, form, record_id)
            if pending is not None:
                out["pending_approval"] = self.approval_summary(uow, pending)
            out["sla"] = [sla.summary(c) for c in sla.clocks_of(uow, form, record_id)]
        out["journeys"] = [journeys.summary(e) for e in journeys.enrolments_of(uow, form, record_id)]
        tk = P.tasks
        out["tasks"] = [task_json(uow, dict(r)) for r in uow.conn.execute(select(tk).where(
            tk.c.app == uow.app.name, tk.c.form == form, tk.c.record_id == record_id).order_by(tk.c.id)).mappings()]
        return out

    def adopt_existing(self, uow: UnitOfWork) -> dict:
        """Instances, SLA clocks and enrolments for records written without events (bulk import, seed)."""
        from .adopt import adopt_existing
        return adopt_existing(uow, self)

    # ------------------------------------------------------------------ events
    def on_saving(self, event: Event, uow: UnitOfWork) -> None:
        """``record.saving`` (before the INSERT, after the rules' pre-save phase): a record of a form
        with a workflow is inserted in its initial state, so starting it on ``record.created`` needs
        no UPDATE of the row just inserted.  Same rule as :meth:`_start_workflow`: a missing or
        unknown state becomes the initial one."""
        if not self.flows(uow.app):
            return
        wf = self.workflow_for(uow.app, event.form)
        if wf is not None:
            state = event.record.get("state")
            if not state or state not in wf.states:
                event.record["state"] = wf.initial

    def on_created(self, event: Event, uow: UnitOfWork) -> None:
        if not self.flows(uow.app):
            return
        self.start(uow, event.form, event.record)

    def on_updated(self, event: Event, uow: UnitOfWork) -> None:
        if not self.flows(uow.app):
            return
        rec = event.record
        wf = self.workflow_for(uow.app, event.form)
        if wf is not None and rec.get("id") is not None:
            key = (event.form, rec["id"])
            i = T.instances
            row = uow.conn.execute(select(i).where(i.c.app == uow.app.name, i.c.flow == wf.name,
                                                   i.c.record_id == rec["id"])).mappings().first()
            if row is not None and "state" not in event.changed:
                cur = self._wf_of(uow, dict(row)) or wf
                sla.on_updated(uow, cur, rec, event.changed)
                if key not in self._busy(uow):
                    self._auto(uow, cur, rec["id"])
        for j in self.journeys_for(uow.app, event.form):
            journeys.check(uow, self, j, rec, event.old)
        if self.journey_watchers(uow.app, event.form):
            journeys.on_linked(uow, self, event.form, rec)

    def on_deleted(self, event: Event, uow: UnitOfWork) -> None:
        if not self.flows(uow.app):
            return
        rec = event.record
        app = uow.app.name
        for c in sla.clocks_of(uow, event.form, rec["id"]):
            scheduler.cancel(uow.conn, app=app, kind=sla.TIMER_KIND, key_prefix=f"sla:{app}:{c['id']}:")
        uow.conn.execute(update(T.sla_clocks).where(T.sla_clocks.c.app == app, T.sla_clocks.c.form == event.form,
                                                    T.sla_clocks.c.record_id == rec["id"], T.sla_clocks.c.status != "stopped")
                         .values(status="stopped", stopped_at=to_db(uow.now), updated_at=to_db(uow.now)))
        for e in journeys.enrolments_of(uow, event.form, rec["id"]):
            if e["status"] == "active":
                scheduler.cancel(uow.conn, app=app, kind=journeys.TIMER_KIND, key_prefix=f"journey:{app}:{e['id']}:")
                uow.conn.execute(update(T.enrolments).where(T.enrolments.c.id == e["id"]).values(
                    status="cancelled", end_reason="record_deleted", ended_at=to_db(uow.now)))
        i = T.instances
        for row in uow.conn.execute(select(i).where(i.c.app == app, i.c.form == event.form, i.c.record_id == rec["id"])).mappings():
            scheduler.cancel(uow.conn, app=app, kind=AFTER_KIND, key_prefix=f"flow:{app}:{row['id']}:after:")
        uow.conn.execute(update(i).where(i.c.app == app, i.c.form == event.form, i.c.record_id == rec["id"], i.c.status == "active")
                         .values(status="done", ended_at=to_db(uow.now), updated_at=to_db(uow.now)))
        a = T.approvals
        for appr in uow.conn.execute(select(a.c.id).where(a.c.app == app, a.c.form == event.form, a.c.record_id == rec["id"],
                                                          a.c.status == "pending")).all():
            uow.conn.execute(update(a).where(a.c.id == appr.id).values(status="cancelled", decided_at=to_db(uow.now)))
            self._close_approval_tasks(uow, appr.id, "cancelled", "cancelled")
        tk = P.tasks
        uow.conn.execute(update(tk).where(tk.c.app == app, tk.c.form == event.form, tk.c.record_id == rec["id"],
                                          tk.c.status == "open").values(status="cancelled", outcome="record_deleted",
                                                                        completed_at=to_db(uow.now)))


# ---------------------------------------------------------------------- task listing (across apps)

def task_json(uow: UnitOfWork | None, task: dict, record_title: str | None = None) -> dict:
    due = from_db(task["due_at"])
    now = uow.now if uow is not None else None
    return {"id": task["id"], "app": task["app"], "form": task["form"], "record_id": task["record_id"],
            "kind": task["kind"], "title": task["title"], "body": task["body"], "assignee": task["assignee"],
            "candidate_role": task["candidate_role"], "status": task["status"], "outcome": task["outcome"],
            "due_at": iso(due), "overdue": bool(due and now and task["status"] == "open" and due < now),
            "created_at": iso(from_db(task["created_at"])), "completed_at": iso(from_db(task["completed_at"])),
            "completed_by": task["completed_by"], "flow": task["flow"], "step": task["step"],
            "record_title": record_title,
            "link": f"/apps/{task['app']}/{task['form']}/{task['record_id']}" if task["form"] else None,
            "api": f"/api/apps/{task['app']}/{task['form']}/{task['record_id']}" if task["form"] else None,
            "actions": (["approve", "reject", "transfer", "add_signer"] if task["kind"] == "approval"
                        else ["complete"] if task["kind"] == NOTICE_KIND else ["complete", "transfer"])
            if task["status"] == "open" else []}


def _list_title(form: Any, rec: Mapping[str, Any]) -> Any:
    """A record's title in a task list.  A title that is personal data is masked for everyone: the
    list is a plain read that writes no ``pii.read`` audit row, so it may not show it unmasked (the
    record itself, opened from the task, shows it to those allowed -- audited)."""
    title = rec.get(form.title_field)
    f = form.fields.get(form.title_field)
    return mask(str(title)) if title is not None and f is not None and f.pii else title


def open_tasks(rt: Any, user: Any, app: str | None = None, limit: int = 200) -> list[dict]:
    """The user's open tasks: assigned to them, or waiting for one of their roles on records they can see."""
    from engine.runtime import AppNotFound
    tk = P.tasks
    cond = [tk.c.status == "open"]
    if app:
        cond.append(tk.c.app == app)
    roles = sorted(user.roles)
    who = tk.c.assignee == user.username
    if roles:
        who = or_(who, and_(tk.c.assignee.is_(None), tk.c.candidate_role.in_(roles)))
    with rt.db.read() as conn:
        rows = [dict(r) for r in conn.execute(select(tk).where(and_(*cond), who)
                                              .order_by(tk.c.due_at.is_(None), tk.c.due_at, tk.c.id).limit(limit * 2)).mappings()]
        out = []
        by_app: dict[str, list[dict]] = {}
        for r in rows:
            by_app.setdefault(r["app"], []).append(r)
        records = rt.services["records"]
        for app_name, items in by_app.items():
            try:
                appdef = rt.app(app_name)
            except AppNotFound:
                continue
            if not user.is_system and not (user.roles & set(appdef.roles)) and "admin" not in user.roles:
                continue
            uow = UnitOfWork(rt, conn, appdef, user, rt.clock.now(), lang=user.language or appdef.default_language)
            visible: dict[tuple, tuple[bool, Any]] = {}
            for r in items:
                title = None
                if r["form"] and r["record_id"] is not None and r["form"] in appdef.forms:
                    key = (r["form"], r["record_id"])
                    if key not in visible:
                        try:
                            rec = records.get(uow, r["form"], r["record_id"])
                            visible[key] = (True, _list_title(appdef.forms[r["form"]], rec))
                        except (NotFound, Forbidden):
                            visible[key] = (False, None)
                    seen, title = visible[key]
                    if not seen and r["assignee"] != user.username:
                        continue
                out.append(task_json(uow, r, str(title) if title is not None else None))
    return out[:limit]
