"""The pages' view of the flows and reports engines.

The pages never reach into an engine's internals: they call the services the
engines register on the runtime (``runtime.services['flows']``,
``['reports']``).  This module is the one place that knows those calls, so a
change of an engine's service API is a change here only.  Every function
degrades gracefully when an engine is not installed (the page simply shows no
transitions / no charts).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from engine.uow import UnitOfWork


def _svc(uow_or_rt: Any, name: str) -> Any:
    rt = getattr(uow_or_rt, "runtime", uow_or_rt)
    return rt.services.get(name)


def _call(fn, *args, **kwargs):
    """Call ``fn`` with the keyword arguments it accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


# -- workflows -----------------------------------------------------------------

def workflow_for(app, form_name: str):
    for wf in (app.section("flows") or {}).values():
        if getattr(wf, "kind", "") == "workflow" and getattr(wf, "form", None) == form_name:
            return wf
    return None


def state_label(app, form_name: str, state: str | None) -> tuple[str | Mapping | None, str | None]:
    """(label, color) of a record's state."""
    if not state:
        return None, None
    wf = workflow_for(app, form_name)
    if wf is None:
        return state, None
    st = wf.states.get(state)
    if st is None:
        return state, None
    return st.label, getattr(st, "color", None)


def available_transitions(uow: UnitOfWork, form_name: str, record: dict) -> list[dict]:
    """Transitions the user may fire now: ``[{name, label, comment, fields, approval}]``."""
    flows = _svc(uow, "flows")
    wf = workflow_for(uow.app, form_name)
    if flows is None or wf is None:
        return []
    items = None
    for meth in ("available_transitions", "transitions_for", "available"):
        fn = getattr(flows, meth, None)
        if fn is not None:
            items = _call(fn, uow, form_name, record)
            break
    if items is None:
        return []
    out = []
    for it in items:
        if isinstance(it, str):
            it = wf.transitions.get(it)
        if isinstance(it, Mapping):
            name = it.get("name")
            td = wf.transitions.get(name)
            out.append({"name": name, "label": it.get("label") or (td.label if td else name),
                        "comment": it.get("comment") or (td.comment if td else "optional"),
                        "approval": bool(it.get("approval") or (td is not None and td.approval is not None)),
                        "blocked": it.get("blocked"), "to_label": it.get("to_label"),
                        "requires": [r for r in (it.get("requires") or []) if isinstance(r, Mapping) and r.get("missing")],
                        "fields": list(it.get("fields") or (td.fields if td is not None else ()))})
        elif it is not None:
            out.append({"name": it.name, "label": it.label, "comment": getattr(it, "comment", "optional"),
                        "approval": getattr(it, "approval", None) is not None})
    return out


def fire_transition(uow: UnitOfWork, form_name: str, record_id: int, name: str, comment: str | None,
                    data: dict | None = None) -> Any:
    flows = _svc(uow, "flows")
    if flows is None:
        from engine.errors import NotFound
        raise NotFound("workflows are not available")
    for meth in ("transition", "fire", "do_transition"):
        fn = getattr(flows, meth, None)
        if fn is not None:
            return _call(fn, uow, form_name, record_id, name, comment=comment, data=data or {})
    from engine.errors import NotFound
    raise NotFound("workflows are not available")


def flow_summary(uow: UnitOfWork, form_name: str, record_id: int, lang: str) -> dict | None:
    """Pending approval and SLA clocks of a record, for the detail page."""
    flows = _svc(uow, "flows")
    wf = workflow_for(uow.app, form_name)
    if flows is None or wf is None or not hasattr(flows, "flow_info"):
        return None
    info = flows.flow_info(uow, form_name, record_id)
    tz = uow.app.tz

    def local(iso):
        if not iso:
            return ""
        import datetime as dt
        return dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone(tz).strftime("%Y-%m-%d %H:%M")

    slas = []
    for c in info.get("sla") or []:
        sd = next((s for s in wf.sla if s.name == c.get("sla")), None)
        lab = sd.label if sd is not None and sd.label else c.get("sla")
        slas.append({"label": lab, "status": c.get("status"), "due": local(c.get("due_at")), "breached": c.get("breached"),
                     "level": c.get("level"), "stopped": local(c.get("stopped_at"))})
    appr = info.get("pending_approval")
    approval = None
    if appr:
        td = wf.transitions.get(appr.get("transition"))
        approval = {"label": td.label if td else appr.get("transition"), "mode": appr.get("mode"),
                    "needed": appr.get("needed"), "votes": appr.get("votes") or [],
                    "requested_by": appr.get("requested_by"), "at": local(appr.get("requested_at"))}
    return {"sla": slas, "approval": approval, "journeys": info.get("journeys") or []}


# -- tasks ----------------------------------------------------------------------

def task_action(uow: UnitOfWork, task_id: int, action: str, comment: str | None = None, to: str | None = None) -> Any:
    """approve / reject / transfer / complete one task through the flows service."""
    flows = _svc(uow, "flows")
    if flows is None:
        from engine.errors import NotFound
        raise NotFound("tasks are not available")
    if action in ("approve", "reject"):
        return flows.decide(uow, task_id, action, comment=comment)
    if action == "transfer":
        if not to:
            from engine.errors import RecordInvalid
            raise RecordInvalid([{"field": "to", "code": "required",
                                  "message": "请选择转交给谁" if uow.lang == "zh" else "choose who to transfer it to"}])
        return flows.transfer(uow, task_id, to, comment=comment)
    return flows.complete_task(uow, task_id, comment=comment)


# -- reports --------------------------------------------------------------------

def reports_service(uow_or_rt: Any):
    return _svc(uow_or_rt, "reports")


def dashboard(uow: UnitOfWork, name: str, params: Mapping[str, str]) -> Any:
    svc = reports_service(uow)
    if svc is None or not hasattr(svc, "dashboard"):
        return None
    return _call(svc.dashboard, uow, name, params=dict(params))


def run_report(uow: UnitOfWork, name: str, params: Mapping[str, str]) -> Any:
    svc = reports_service(uow)
    if svc is None or not hasattr(svc, "run"):
        return None
    return _call(svc.run, uow, name, params=dict(params))


def chart(uow: UnitOfWork, name: str, params: Mapping[str, str]) -> Any:
    svc = reports_service(uow)
    if svc is None or not hasattr(svc, "chart"):
        return None
    return _call(svc.chart, uow, name, params=dict(params))
