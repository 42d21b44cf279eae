"""JSON API for reports and dashboards.

* ``GET /api/apps/{app}/reports`` -> the reports and dashboards the user may open
* ``GET /api/apps/{app}/reports/{report}`` -> ``{"columns": [...], "rows": [[...]], ...}``;
  ``?format=csv`` / ``?format=xlsx`` downloads it; filters are query parameters
  (``?period=last_30_days&region=east``)
* ``GET /api/apps/{app}/reports/{report}/chart`` -> an Apache ECharts option
* ``GET /api/apps/{app}/reports/{report}/drill?<dimension>=<value>`` -> the records behind a bar
* ``GET /api/apps/{app}/dashboards/{name}`` -> the widgets with their options

Every route needs a signed-in user; permissions (report roles, the form's
read/row/field rules, the export permission) are applied by the service.
"""
from __future__ import annotations

import contextlib
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from engine.audit import audit
from engine.auth import User

from ..audited import audited_read
from ..deps import current_user, installed_app, language, runtime, unit_of_work

router = APIRouter(prefix="/api/apps", tags=["reports"])

CONTROL = {"format", "lang", "limit", "offset"}


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k not in CONTROL}


def _svc(rt):
    return rt.services["reports"]


@router.get("/{app}/reports", summary="Reports and dashboards you may open")
def list_reports(app: str, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        return _svc(rt).catalog(uow)


@router.get("/{app}/reports/{report}", summary="Run a report (JSON, or ?format=csv|xlsx)")
def run_report(app: str, report: str, request: Request, user: User = Depends(current_user), format: str | None = None):
    rt = runtime(request)
    params = _params(request)
    if format in ("csv", "xlsx"):
        with unit_of_work(rt, app, user, language(request, user)) as uow:
            filename, media, chunks = _svc(rt).export(uow, report, params, format)
        with contextlib.suppress(Exception):   # the audit line must never block an export
            with rt.db.write() as conn:
                audit(conn, rt.clock.now(), user.username, "report.export", app=app,
                      details={"report": report, "format": format, "params": params})
        headers = {"Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"}
        return StreamingResponse(iter(chunks), media_type=media, headers=headers)
    if format not in (None, "", "json"):
        from engine.errors import RecordInvalid
        raise RecordInvalid([{"field": "format", "code": "bad_param", "message": "format is json, csv or xlsx"}])
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        return _svc(rt).run(uow, report, params)


@router.get("/{app}/reports/{report}/chart", summary="The report as an Apache ECharts option")
def report_chart(app: str, report: str, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        return _svc(rt).chart(uow, report, _params(request))


@router.get("/{app}/reports/{report}/drill", summary="The records behind one bar, slice or cell")
def report_drill(app: str, report: str, request: Request, user: User = Depends(current_user),
                 limit: int = 50, offset: int = 0):
    """The records themselves, as the record API lists them: personal data shown unmasked is audited
    in the read's own transaction (``ui.audited``), as it is there."""
    rt = runtime(request)
    source = _svc(rt).definition(installed_app(rt, app, user), report).source
    with audited_read(rt, app, source, user, language(request, user)) as read:
        data = _svc(rt).drill(read.uow, report, _params(request), limit=limit, offset=offset)
        read.served([item["id"] for item in data.get("items") or []])
        return data


@router.get("/{app}/dashboards/{name}", summary="A dashboard: its widgets with chart options")
def dashboard(app: str, name: str, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        return _svc(rt).dashboard(uow, name, _params(request))
