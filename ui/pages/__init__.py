"""The HTML web app: server-rendered jinja2 pages + htmx, for end users,
admins and analysts.

``router`` collects the page modules; ``ui.app`` includes it last so the
``/api/...`` routes win.  Module map:

* ``auth``       sign-in/out (session cookie, CSRF)
* ``account``    the user's own name, language and password
* ``shell``      menus, language switch, the layout context
* ``home``       ``/`` and an app's home page per role
* ``records``    list / detail / create / edit pages for every form
* ``comments``   comments and the @ picker on a record's detail page
* ``transfer``   the import page (progress of the background job, then the per-row result)
* ``tasks``      the task inbox (approve / reject / transfer in place)
* ``dashboards`` dashboards and reports (ECharts, drill-down)
* ``admin``      apps (upload, plan, install, export, roll back), users, outbox, timers, audit
* ``studio``     the analysts' YAML editor with live problems, preview, plan, publish
"""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from . import account, admin, auth, comments, dashboards, home, records, shell, studio, tasks, transfer
from .common import ASSETS

router = APIRouter(include_in_schema=False)

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@router.get("/_pages/{name}")
def asset(name: str):
    """The pages' own JS/CSS (no inline scripts: the CSP is script-src 'self')."""
    path = ASSETS / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=300"})


for _module in (auth, account, shell, home, tasks, dashboards, admin, studio, comments, transfer, records):
    router.include_router(_module.router)
