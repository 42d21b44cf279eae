"""``/`` and an app's home page, per role (``app.yaml`` ``home``).

Widgets: ``tasks`` (my open tasks with counts), ``inbox`` (latest in-app
messages), ``{form: x}`` (my latest records of x), ``{report: r}`` and
``{dashboard: d}`` (charts from the reports service).  A user with several
roles gets the union, in order, without repeats.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from engine import platform as P
from engine.clock import from_db
from forms.access import grant

from ..audited import audited_titles
from . import engines
from .common import PageRoute, lang_of, optional_user, page_user, render, runtime
from .i18n import label
from .shell import user_apps

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/")
def root(request: Request):
    user = optional_user(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    apps = user_apps(runtime(request), user)
    if len(apps) == 1:
        return RedirectResponse(f"/apps/{apps[0].name}", status_code=303)
    return render(request, "apps_home.html", {})


def home_items(app, user) -> list:
    items, seen = [], set()
    roles = sorted(user.roles, key=lambda r: list(app.roles).index(r) if r in app.roles else 99)
    for role in roles:
        for it in app.home.get(role) or ():
            key = it if isinstance(it, str) else tuple(sorted(it.items()))
            if key not in seen:
                seen.add(key)
                items.append(it)
    if not items:
        items = ["tasks"] + [{"form": m["form"]} for m in app.menus if isinstance(m, dict) and "form" in m][:1]
    return items


def home_forms(app, user) -> list[str]:
    """The forms whose records the home page lists by title (its ``{form: x}`` widgets): planned before
    its read, whose transaction audits the titles that are personal data (``audited_titles``)."""
    return [it["form"] for it in home_items(app, user) if isinstance(it, dict) and "form" in it]


@router.get("/apps/{app_name}")
def app_home(app_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    try:
        default = rt.app(app_name).default_language
    except Exception:  # noqa: BLE001
        default = None
    lang = lang_of(request, user, default)
    from .dashboards import dashboard_view, widget_view
    from .records import Display, shown_titles
    from .tasks import load_tasks, task_counts
    blocks = []
    with audited_titles(rt, app_name, user, lang, lambda app: home_forms(app, user), via="page") as read:
        uow = read.uow
        app = uow.app
        for it in home_items(app, user):
            try:
                if it == "tasks":
                    tasks = load_tasks(uow, lang, limit=50)
                    blocks.append({"kind": "tasks", "tasks": tasks[:8], "counts": task_counts(tasks)})
                elif it == "inbox":
                    o = P.outbox
                    rows = uow.conn.execute(select(o).where(o.c.app == app_name, o.c.recipient == user.username,
                                                   o.c.recipient_kind == "user")
                                            .order_by(o.c.id.desc()).limit(5)).mappings().all()
                    blocks.append({"kind": "inbox", "items": [{"text": r["subject"] or r["rendered"][:80],
                                                               "at": from_db(r["created_at"]).astimezone(app.tz).strftime("%m-%d %H:%M")} for r in rows]})
                elif isinstance(it, dict) and "form" in it:
                    fd = app.forms.get(it["form"])
                    if fd is None or not grant(fd, user, "read").allowed:
                        continue
                    svc = uow.service("records")
                    filters = {"owner": user.username} if not ("admin" in user.roles) else {}
                    rows, total = svc.list(uow, fd.name, filters=filters, limit=6)
                    if not rows and filters:
                        rows, total = svc.list(uow, fd.name, limit=6)
                    disp = Display(uow, fd, lang)
                    titles = shown_titles(uow, fd, rows, lang)      # a PII title: masked, or shown and audited
                    blocks.append({"kind": "form", "label": label(fd.label, lang, fd.name), "total": total,
                                   "url": f"/apps/{app_name}/forms/{fd.name}", "can_create": grant(fd, user, "create").allowed,
                                   "rows": [{"url": f"/apps/{app_name}/forms/{fd.name}/{r['id']}",
                                             "title": titles[r["id"]],
                                             "state": disp.value("state", r), "at": disp.value("updated_at", r)["text"]} for r in rows]})
                elif isinstance(it, dict) and "dashboard" in it:
                    view = dashboard_view(uow, it["dashboard"], {})
                    if view is not None:
                        blocks.append({"kind": "dashboard", "label": view["label"], "board": view,
                                       "url": f"/apps/{app_name}/dashboards/{it['dashboard']}"})
                elif isinstance(it, dict) and "report" in it:
                    option = engines.chart(uow, it["report"], {})
                    if option is not None:
                        w = widget_view({"title": (option.get("loom") or {}).get("title"), "width": 12, "report": it["report"],
                                         "kind": (option.get("loom") or {}).get("kind"), "option": option,
                                         "drill": (option.get("loom") or {}).get("drill")})
                        blocks.append({"kind": "dashboard", "label": w["title"], "board": {"widgets": [w]},
                                       "url": f"/apps/{app_name}/reports/{it['report']}"})
            except Exception:  # noqa: BLE001 - one broken widget must not break the home page
                import logging
                logging.getLogger("loom.pages").exception("home widget %s failed", it)
        has_charts = any(b["kind"] == "dashboard" for b in blocks)
        return render(request, "home.html", {"app_name": app_name, "blocks": blocks, "has_charts": has_charts},
                      conn=uow.conn)


@router.get("/apps/{app_name}/{form_name}/{record_id:int}")
def record_shortcut(app_name: str, form_name: str, record_id: int):
    """Links made by engines (``/apps/<app>/<form>/<id>``) land on the record page."""
    return RedirectResponse(f"/apps/{app_name}/forms/{form_name}/{record_id}", status_code=307)
