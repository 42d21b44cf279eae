"""Dashboards and reports: ECharts options from the reports service, drill-down
to the records behind a bar/slice, auto-refresh.

Charts are ``[data-echarts]`` elements with the option JSON in a child
``<script type="application/json">`` (loom.js boots them; no inline script).
``data-drill`` is the reports service's drill template turned into this
page's drill route, so a click opens the matching records as a list.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request

from ..audited import audited_read
from ..deps import installed_app, unit_of_work
from . import engines
from .common import PageRoute, fragment, lang_of, page_user, render, runtime
from .i18n import label

router = APIRouter(route_class=PageRoute, include_in_schema=False)
CONTROL = {"lang", "limit", "offset", "page"}


def page_drill(url: str | None) -> str | None:
    """``/api/apps/x/reports/r/drill?...`` -> ``/apps/x/reports/r/drill?...`` (this module's page)."""
    if not url:
        return None
    return url[len("/api"):] if url.startswith("/api/apps/") else url


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k not in CONTROL and v != ""}


def _lang(request, user, rt, app_name):
    try:
        default = rt.app(app_name).default_language
    except Exception:  # noqa: BLE001
        default = None
    return lang_of(request, user, default)


def widget_view(w: Mapping[str, Any]) -> dict:
    """A dashboard widget for the template: an ECharts option, a KPI card or an HTML table."""
    option = w.get("option")
    view = {"title": w.get("title"), "width": max(1, min(12, int(w.get("width") or 6))), "kind": w.get("kind"),
            "report": w.get("report"), "error": w.get("error"), "drill": page_drill(w.get("drill")),
            "option": None, "kpi": None, "table": None}
    if option is None:
        return view
    loom = option.get("loom") or {}
    kpi = loom.get("kpi")
    table = loom.get("table")
    if isinstance(kpi, Mapping) and w.get("kind") == "kpi":
        change = kpi.get("change")
        up, down = change is not None and change > 0, change is not None and change < 0
        good = up if kpi.get("better", "higher") == "higher" else down
        view["kpi"] = {"text": kpi.get("text"), "label": kpi.get("label"),
                       "change": None if change is None else round(abs(change) * 100, 1),
                       "up": up, "down": down, "good": good, "bad": (up or down) and not good}
    elif loom.get("render") == "table" and isinstance(table, Mapping):
        view["table"] = {"headers": [c.get("label") or c.get("name") for c in table.get("columns") or []],
                         "nums": [c.get("kind") == "measure" for c in table.get("columns") or []],
                         "rows": table.get("display") or table.get("rows") or []}
    else:
        view["option"] = {k: v for k, v in option.items() if k != "loom"}
    return view


def dashboard_view(uow, name: str, params: Mapping[str, str]) -> dict | None:
    data = engines.dashboard(uow, name, params)
    if data is None:
        return None
    return {"name": data.get("name"), "label": data.get("label"), "refresh": data.get("refresh_seconds"),
            "filters": data.get("filters") or [], "widgets": [widget_view(w) for w in data.get("widgets") or []]}


def _board(request: Request, app_name: str, name: str) -> tuple[str, dict, str, dict]:
    """(language, dashboard view, auto-refresh URL) -- shared by the page and its refresh fragment."""
    user = page_user(request)
    rt = runtime(request)
    lang = _lang(request, user, rt, app_name)
    params = _params(request)
    with unit_of_work(rt, app_name, user, lang) as uow:
        view = dashboard_view(uow, name, params)
    if view is None:
        from engine.errors import NotFound
        raise NotFound(name)
    query = urllib.parse.urlencode(params)
    return lang, view, f"/apps/{app_name}/dashboards/{name}/_widgets" + (f"?{query}" if query else ""), params


@router.get("/apps/{app_name}/dashboards/{name}")
def dashboard_page(app_name: str, name: str, request: Request):
    _, view, refresh_url, params = _board(request, app_name, name)
    return render(request, "dashboard.html", {"app_name": app_name, "board": view, "params": params,
                                              "refresh_url": refresh_url})


@router.get("/apps/{app_name}/dashboards/{name}/_widgets")
def dashboard_widgets(app_name: str, name: str, request: Request):
    """The widgets alone: the auto-refresh target."""
    lang, view, refresh_url, _ = _board(request, app_name, name)
    return fragment(request, "_widgets.html", {"lang": lang, "board": view, "app_name": app_name,
                                               "refresh_url": refresh_url})


@router.get("/apps/{app_name}/reports/{name}")
def report_page(app_name: str, name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _lang(request, user, rt, app_name)
    params = _params(request)
    svc = engines.reports_service(rt)
    if svc is None:
        from engine.errors import NotFound
        raise NotFound(name)
    with unit_of_work(rt, app_name, user, lang) as uow:
        rd = svc.definition(uow.app, name)
        option = svc.chart(uow, name, params)
        result = svc.run(uow, name, params)
        filters = [p.describe(lang) for p in rd.params]
        for f in filters:
            f["value"] = params.get(f["name"]) or (result.get("meta") or {}).get("params", {}).get(f["name"]) or f.get("default")
        can_export = svc.can_export(uow, rd)
    widget = widget_view({"title": label(rd.label, lang, rd.name), "width": 12, "kind": (option.get("loom") or {}).get("kind"),
                          "report": name, "option": option, "drill": (option.get("loom") or {}).get("drill")})
    query = urllib.parse.urlencode(params)
    exports = []
    if can_export:
        for fmt in ("csv", "xlsx"):
            exports.append({"fmt": fmt, "url": f"/api/apps/{app_name}/reports/{name}?" + urllib.parse.urlencode({**params, "format": fmt})})
    return render(request, "report.html", {"app_name": app_name, "report_label": label(rd.label, lang, rd.name),
                                           "widget": widget, "result": result, "filters": filters, "exports": exports,
                                           "query": query})


def drill_columns(rd, form, g) -> list[str]:
    """The columns of a drill-down, as the reports service lists them (the report's drill columns or the
    form's list columns) less the fields hidden from the user: known before the read, which audits them."""
    return [c for c in rd.drill_columns or form.list_columns if c not in g.hidden]


@router.get("/apps/{app_name}/reports/{name}/drill")
def drill_page(app_name: str, name: str, request: Request):
    """The records behind one bar/slice: a record list filtered accordingly."""
    user = page_user(request)
    rt = runtime(request)
    lang = _lang(request, user, rt, app_name)
    params = _params(request)
    page = max(1, int(request.query_params.get("page") or 1)) if (request.query_params.get("page") or "1").isdigit() else 1
    svc = engines.reports_service(rt)
    if svc is None:
        from engine.errors import NotFound
        raise NotFound(name)
    size = 50
    from .records import Display, col_label, title_of
    rd = svc.definition(installed_app(rt, app_name, user), name)
    with audited_read(rt, app_name, rd.source, user, lang, via="page",
                      columns=lambda fd, g: [*drill_columns(rd, fd, g), fd.title_field]) as read:
        uow, form, g = read.uow, read.form, read.grant
        data = svc.drill(uow, name, params, limit=size, offset=(page - 1) * size)
        cols = drill_columns(rd, form, g)
        recs = [uow.service("records").get(uow, form.name, item["id"]) for item in data.get("items") or []]
        read.served([r["id"] for r in recs])
        disp = Display(uow, form, lang)
        disp.preload(recs, cols)
        titles = title_of(uow, form, recs, lang, disp.pii, g.hidden)
        rows = [{"url": f"/apps/{app_name}/forms/{form.name}/{r['id']}", "title": titles[r["id"]],
                 "cells": [disp.value(c, r) for c in cols]} for r in recs]
        headers = [col_label(form, c, lang) for c in cols]
        applied = []
        for k, v in (data.get("filters") or {}).items():
            if v in (None, ""):
                continue
            d = rd.dimension(k) if hasattr(rd, "dimension") else None
            lab = label(getattr(d, "label", None), lang, k) if d is not None else k
            if k in form.fields:
                lab = col_label(form, k, lang)
            applied.append({"name": lab, "value": v})
        total = data.get("total") or 0
        pages = max(1, -(-total // size))
        return render(request, "drill.html", {"app_name": app_name, "report_label": label(rd.label, lang, rd.name),
                                              "form_label": label(form.label, lang, form.name), "rows": rows, "headers": headers,
                                              "total": total, "applied": applied, "page": page, "pages": pages,
                                              "report_url": f"/apps/{app_name}/reports/{name}",
                                              "list_url": f"/apps/{app_name}/forms/{form.name}"}, conn=uow.conn)
