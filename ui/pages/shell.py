"""The page shell: which apps and menus a user sees, language, user menu.

Menus come from ``app.yaml`` ``menus``; an entry is shown when the user has
one of its ``roles`` (or, without ``roles``, may read its form), admins see
everything.  The language is a ``loom_lang`` cookie set by ``/lang/{zh|en}``.
"""
from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import func, or_, select

from engine import platform as P
from engine.auth import User
from engine.runtime import AppNotFound

from ..deps import granting_apps, loaded_apps
from .common import LANG_COOKIE, PageRoute, helpers, lang_of, optional_user, runtime, safe_next
from .i18n import label, translate

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def user_apps(rt, user: User, names: list[str] | None = None) -> list:
    """Installed apps the user belongs to (has one of their roles, or admin)."""
    out = []
    for name in (rt.app_names() if names is None else names):
        try:
            app = rt.app(name)
        except AppNotFound:
            continue
        except Exception:  # noqa: BLE001 - an app that no longer compiles is skipped in menus
            continue
        if "admin" in user.roles or user.roles & set(app.roles):
            out.append(app)
    return out


def has_permission(rt, user: User, permission: str, app_name: str | None = None, apps: list | None = None) -> bool:
    if "admin" in user.roles:
        return True
    if apps is None:
        apps = loaded_apps(rt, [app_name] if app_name else None)[0]
    elif app_name:
        apps = [a for a in apps if a.name == app_name]
    return bool(granting_apps(rt, user, permission, apps))


def menu_url(app_name: str, item: dict) -> str | None:
    base = f"/apps/{app_name}"
    if "form" in item:
        url = f"{base}/forms/{item['form']}"
        flt = item.get("filter") or {}
        if flt:
            url += "?" + urllib.parse.urlencode({k: _qv(v) for k, v in flt.items()})
        return url
    if "dashboard" in item:
        return f"{base}/dashboards/{item['dashboard']}"
    if "report" in item:
        return f"{base}/reports/{item['report']}"
    page = item.get("page")
    if page == "home":
        return base
    if page in ("tasks", "inbox"):
        return f"{base}/{page}"
    return None


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def app_menus(app, user: User, lang: str, current: str) -> list[dict]:
    from forms.access import can
    out = []
    for item in app.menus:
        if not isinstance(item, dict):
            continue
        roles = item.get("roles")
        if roles and "admin" not in user.roles and not (user.roles & set(roles)):
            continue
        if "form" in item:
            fd = app.forms.get(item["form"])
            if fd is None or not can(fd, user, "read"):
                continue
        url = menu_url(app.name, item)
        if url is None:
            continue
        icon = {"form": "☰", "dashboard": "▦", "report": "▤"}.get(next((k for k in ("form", "dashboard", "report") if k in item), ""), "")
        if item.get("page") == "tasks":
            icon = "✓"
        elif item.get("page") == "inbox":
            icon = "✉"
        elif item.get("page") == "home":
            icon = "⌂"
        out.append({"label": label(item.get("label"), lang, item.get("form") or item.get("page") or ""), "url": url,
                    "icon": icon, "page": item.get("page"), "active": False})
    # the exact URL, else the longest menu path the current page is under
    exact = [m for m in out if m["url"] == current]
    if exact:
        exact[0]["active"] = True
    else:
        path = current.split("?")[0]
        cands = [m for m in out if path == m["url"].split("?")[0]
                 or (m["page"] != "home" and path.startswith(m["url"].split("?")[0] + "/"))]
        cands.sort(key=lambda m: ("?" in m["url"], -len(m["url"].split("?")[0])))
        if cands:
            cands[0]["active"] = True
    return out


def _task_count_query(user: User, app_name: str | None):
    t = P.tasks
    q = select(func.count()).select_from(t).where(t.c.status == "open", or_(
        t.c.assignee == user.username, (t.c.assignee.is_(None) & t.c.candidate_role.in_(sorted(user.roles) or [""]))))
    return q.where(t.c.app == app_name) if app_name else q


def open_task_count(rt, user: User, app_name: str | None) -> int:
    try:
        with rt.db.read() as conn:
            return int(conn.execute(_task_count_query(user, app_name)).scalar() or 0)
    except Exception:  # noqa: BLE001 - the count is decoration, never break a page for it
        return 0


def _names_and_count(rt, user: User, app_name: str | None, conn=None) -> tuple[list[str], int]:
    """Installed app names and my open task count: one read for the whole shell."""
    if conn is None:
        with rt.db.read() as own:
            return _names_and_count(rt, user, app_name, own)
    names = [r.name for r in conn.execute(select(P.apps.c.name).order_by(P.apps.c.name))]
    count = int(conn.execute(_task_count_query(user, app_name)).scalar() or 0) if app_name else 0
    return names, count


def shell_context(request: Request, app_name: str | None = None, conn=None) -> dict:
    rt = runtime(request)
    user = optional_user(request)
    app = None
    if app_name:
        try:
            app = rt.app(app_name)
        except Exception:  # noqa: BLE001
            app = None
    lang = lang_of(request, user, app.default_language if app is not None else None)
    ctx = helpers(request, lang)
    ctx.update(user=user, app=app, app_name=app_name, menus=[], apps=[], task_count=0,
               can_admin=False, can_studio=False, can_users=False, can_audit=False)
    if user is None:
        return ctx
    current = request.url.path + (("?" + request.url.query) if request.url.query else "")
    names, count = _names_and_count(rt, user, app.name if app is not None else None, conn)
    apps = user_apps(rt, user, names)
    ctx["apps"] = [{"name": a.name, "title": label(a.title, lang, a.name)} for a in apps]
    if app is None and len(apps) == 1:
        app = apps[0]
        ctx["app"] = app
        ctx["app_name"] = app.name
        count = open_task_count(rt, user, app.name)
    if app is not None:
        ctx["menus"] = app_menus(app, user, lang, current)
        ctx["app_title"] = label(app.title, lang, app.name)
        ctx["task_count"] = count
        for m in ctx["menus"]:
            if m["page"] == "tasks":
                m["count"] = count
    ctx["can_admin"] = has_permission(rt, user, "manage_app", apps=apps)
    ctx["can_studio"] = ctx["can_admin"]
    ctx["can_users"] = has_permission(rt, user, "manage_users", apps=apps)
    ctx["can_audit"] = has_permission(rt, user, "view_audit", apps=apps)
    ctx["display_name"] = user.display_name or user.username
    ctx["initial"] = (user.display_name or user.username)[:1].upper()
    ctx["role_labels"] = [label(app.roles[r].label, lang, r) if app is not None and r in app.roles else r for r in sorted(user.roles)]
    other = "en" if lang == "zh" else "zh"
    ctx["lang_url"] = {l: f"/lang/{l}?" + urllib.parse.urlencode({"next": current}) for l in ("zh", "en")}
    ctx["other_lang"] = other
    return ctx


@router.get("/lang/{lang}")
def switch_language(lang: str, request: Request, next: str | None = None):
    lang = "en" if lang.startswith("en") else "zh"
    resp = RedirectResponse(safe_next(next or request.headers.get("referer", "/").split(request.url.netloc, 1)[-1]), status_code=303)
    resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax", secure=request.url.scheme == "https", path="/")
    return resp


def t_for(request: Request, key: str, **kw) -> str:
    return translate(key, lang_of(request, optional_user(request)), **kw)
