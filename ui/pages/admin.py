"""Admin pages: apps (upload -> validation report or migration plan -> confirm;
export; roll back), users, the outbox with retry, upcoming timers, audit log.

An uploaded package is checked and planned with ``install(dry_run=True)``;
nothing changes until the admin confirms.  The confirm form carries the
package itself (base64, with its SHA-256), so the step is stateless and works
with any number of server processes.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import and_, func, or_, select

from engine import platform as P
from engine.audit import audit
from engine.auth import AuthError, PasswordProblem, get_user, revoke_user_tokens, upsert_user
from engine.clock import from_db, to_db
from engine.errors import Forbidden, NotFound
from engine.installer import InstallError, install
from engine.outbox import retry as outbox_retry
from engine.package import PackageError, read_package
from engine.problems import DefinitionError

from ..deps import assignable_roles, check_user_change, install_guard, loaded_apps, permitted_apps
from ..outbox_view import read_messages
from .common import PageRoute, lang_of, page_user, redirect, render, runtime
from .i18n import label, password_message, translate
from .shell import has_permission

router = APIRouter(route_class=PageRoute, include_in_schema=False)
MAX_UPLOAD = 20 * 1024 * 1024
PAGE = 50


def _need(request: Request, permission: str):
    user = page_user(request)
    if not has_permission(runtime(request), user, permission):
        raise Forbidden(f"this needs the '{permission}' permission")
    return user


def _fmt(v, tz=None) -> str:
    v = from_db(v)
    if v is None:
        return ""
    return v.astimezone(tz).strftime("%Y-%m-%d %H:%M") if tz else v.strftime("%Y-%m-%d %H:%M UTC")


def _tz(rt):
    names = rt.app_names()
    try:
        return rt.app(names[0]).tz if names else dt.timezone.utc
    except Exception:  # noqa: BLE001
        return dt.timezone.utc


# ---------------------------------------------------------------------------
# apps

def apps_overview(rt, lang: str) -> list[dict]:
    tz = _tz(rt)
    out = []
    with rt.db.read() as conn:
        apps = conn.execute(select(P.apps).order_by(P.apps.c.name)).mappings().all()
        for a in apps:
            v = P.app_versions
            versions = conn.execute(select(v.c.id, v.c.version, v.c.digest, v.c.installed_at, v.c.installed_by)
                                    .where(v.c.app == a["name"]).order_by(v.c.id.desc()).limit(10)).mappings().all()
            prev = next((x for x in versions if x["digest"] != a["digest"]), None)
            out.append({"name": a["name"], "version": a["version"], "title": label(a["title"], lang, a["name"]),
                        "installed_at": _fmt(a["installed_at"], tz), "updated_at": _fmt(a["updated_at"], tz),
                        "versions": [{"version": x["version"], "at": _fmt(x["installed_at"], tz), "by": x["installed_by"],
                                      "current": x["digest"] == a["digest"]} for x in versions],
                        "previous": prev["version"] if prev else None, "previous_id": prev["id"] if prev else None})
    return out


@router.get("/admin")
def admin_root(request: Request):
    _need(request, "manage_app")
    return redirect("/admin/apps")


@router.get("/admin/apps")
def apps_page(request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    lang = lang_of(request, user)
    return render(request, "admin/apps.html", {"installed": apps_overview(rt, lang),
                                               "done": request.query_params.get("done")})


def _problem_view(package, problems) -> list[dict]:
    out = []
    for p in problems:
        src = ""
        try:
            lines = package.text(p.file).splitlines()
            src = lines[p.line - 1] if 0 < p.line <= len(lines) else ""
        except Exception:  # noqa: BLE001
            src = ""
        out.append({"where": f"{p.file}:{p.line}:{p.col}", "message": p.message, "source": src,
                    "caret": " " * max(0, p.col - 1) + "^" if src else ""})
    return out


def _plan_page(request, rt, user, blob: bytes, source: str, rollback_of: str | None = None):
    lang = lang_of(request, user)
    ctx: dict[str, Any] = {"installed": apps_overview(rt, lang), "source": source, "rollback_of": rollback_of}
    try:
        package = read_package(blob)
    except PackageError as exc:
        ctx["package_error"] = str(exc)
        return render(request, "admin/apps.html", ctx, status=422)
    try:
        report = install(rt, package, actor=user.username, dry_run=True, authorize=install_guard(user))
    except Forbidden as exc:
        ctx["package_error"] = exc.message
        return render(request, "admin/apps.html", ctx, status=403)
    except DefinitionError as exc:
        ctx["problems"] = _problem_view(package, exc.problems)
        return render(request, "admin/apps.html", ctx, status=422)
    except InstallError as exc:
        ctx["package_error"] = str(exc)
        return render(request, "admin/apps.html", ctx, status=422)
    ctx["plan"] = {"lines": report.lines(), "status": report.status, "app": report.app, "version": report.version,
                   "previous": report.previous, "destructive": any(c.destructive for c in report.changes),
                   "package": base64.b64encode(blob).decode(), "sha": hashlib.sha256(blob).hexdigest()}
    return render(request, "admin/apps.html", ctx)


@router.post("/admin/apps/upload")
async def upload(request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    form = await request.form()
    f = form.get("package")
    blob = await f.read(MAX_UPLOAD + 1) if f is not None and hasattr(f, "read") else b""
    name = getattr(f, "filename", "") or "package.zip"
    if not blob:
        return _plan_page(request, rt, user, b"", name)
    if len(blob) > MAX_UPLOAD:
        from .common import PageError
        raise PageError(413, f"package too large (max {MAX_UPLOAD // 2**20} MB)")
    return _plan_page(request, rt, user, blob, name)


@router.post("/admin/apps/install")
async def install_confirmed(request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    lang = lang_of(request, user)
    form = await request.form()
    try:
        blob = base64.b64decode(str(form.get("package") or ""), validate=True)
    except ValueError:
        blob = b""
    if not blob or hashlib.sha256(blob).hexdigest() != str(form.get("sha") or ""):
        from .common import PageError
        raise PageError(400, "the package was changed in transit; upload it again")
    allow_drop = form.get("allow_drop") == "1"
    try:
        report = install(rt, read_package(blob), actor=user.username, allow_drop=allow_drop,
                         authorize=install_guard(user))
    except (DefinitionError, InstallError, PackageError, Forbidden) as exc:
        ctx = {"installed": apps_overview(rt, lang), "package_error": str(exc)}
        return render(request, "admin/apps.html", ctx, status=403 if isinstance(exc, Forbidden) else 422)
    return render(request, "admin/apps.html", {"installed": apps_overview(rt, lang), "result": report.lines(),
                                               "result_app": report.app})


@router.get("/admin/apps/{app_name}/export")
def export(app_name: str, request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    if not has_permission(rt, user, "manage_app", app_name):
        raise Forbidden(f"exporting '{app_name}' needs the manage_app permission in '{app_name}'")
    try:
        appdef = rt.app(app_name)
    except Exception:  # noqa: BLE001
        raise NotFound(app_name) from None
    with rt.db.write() as conn:
        audit(conn, rt.clock.now(), user.username, "app.export", app=app_name, details={"version": appdef.version})
    return Response(appdef.package.to_zip(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{app_name}-{appdef.version}.zip"'})


@router.post("/admin/apps/{app_name}/rollback")
def rollback(app_name: str, request: Request):
    """Plan re-installing the previous version (from ``loom_app_versions``); confirm installs it."""
    user = _need(request, "manage_app")
    rt = runtime(request)
    if not has_permission(rt, user, "manage_app", app_name):
        raise Forbidden(f"rolling back '{app_name}' needs the manage_app permission in '{app_name}'")
    v = P.app_versions
    with rt.db.read() as conn:
        current = conn.execute(select(P.apps.c.digest, P.apps.c.version).where(P.apps.c.name == app_name)).first()
        if current is None:
            raise NotFound(app_name)
        prev = conn.execute(select(v.c.package, v.c.version).where(v.c.app == app_name, v.c.digest != current.digest)
                            .order_by(v.c.id.desc()).limit(1)).first()
    if prev is None:
        from .common import PageError
        raise PageError(409, translate("no_previous", lang_of(request, user)))
    return _plan_page(request, rt, user, bytes(prev.package), f"{app_name} {prev.version}", rollback_of=current.version)


# ---------------------------------------------------------------------------
# users

def _all_roles(rt, lang, allowed: set[str] | None) -> list[dict]:
    """Every role, each marked whether this user admin may give it (``assignable_roles``; None: any)
    -- the others are shown, greyed, so that a user's roles are all visible."""
    seen: dict[str, str] = {}
    for app in loaded_apps(rt)[0]:
        for r, rd in app.roles.items():
            seen.setdefault(r, label(rd.label, lang, r))
    seen.setdefault("admin", "admin")
    return [{"name": k, "label": v, "assignable": allowed is None or k in allowed} for k, v in sorted(seen.items())]


def _user_rows(rows, allowed: set[str] | None, q: str = "") -> list[dict]:
    """The users list; ``locked``: an account holding a role beyond this admin's reach, which only
    the platform administrator may change (``check_user_change``)."""
    return [{"username": r["username"], "display_name": r["display_name"] or "", "roles": list(r["roles"] or []),
             "attrs": "\n".join(f"{k}={v}" for k, v in (r["attrs"] or {}).items()), "active": r["active"],
             "language": r["language"] or "",
             "locked": allowed is not None and not set(r["roles"] or []) <= allowed} for r in rows
            if not q or q in r["username"].lower() or q in (r["display_name"] or "").lower()]


def _parse_attrs(text: str) -> dict:
    out = {}
    for line in (text or "").replace(";", "\n").splitlines():
        if "=" in line:
            k, _, v = line.partition("=")
            if k.strip():
                out[k.strip()] = v.strip()
    return out


@router.get("/admin/users")
def users_page(request: Request):
    user = _need(request, "manage_users")
    rt = runtime(request)
    lang = lang_of(request, user)
    q = (request.query_params.get("q") or "").strip().lower()
    allowed = assignable_roles(rt, user)
    with rt.db.read() as conn:
        rows = conn.execute(select(P.users).order_by(P.users.c.username)).mappings().all()
    users = _user_rows(rows, allowed, q)
    edit = request.query_params.get("edit")
    return render(request, "admin/users.html", {"users": users, "roles": _all_roles(rt, lang, allowed), "q": q,
                                                "edit": next((u for u in users if u["username"] == edit), None),
                                                "error": None, "done": request.query_params.get("done")})


@router.post("/admin/users")
async def save_user(request: Request):
    admin = _need(request, "manage_users")
    rt = runtime(request)
    lang = lang_of(request, admin)
    form = await request.form()
    username = str(form.get("username") or "").strip()
    roles = [r for r in form.getlist("roles") if r]
    attrs = _parse_attrs(str(form.get("attrs") or ""))
    password = str(form.get("password") or "") or None
    try:
        with rt.db.write() as conn:
            existing = get_user(conn, username) if username else None
            check_user_change(rt, admin, existing, set(roles))
            if existing is None and not password:
                raise AuthError("a new user needs a password (at least 8 characters)" if lang == "en" else "新用户需要设置密码（至少 8 位）")
            upsert_user(conn, rt.clock.now(), username, roles, attrs, password=password,
                        display_name=str(form.get("display_name") or "").strip() or None,
                        language=str(form.get("language") or "") or None,
                        active=existing.active if existing is not None else True)
            if password and existing is not None:
                revoke_user_tokens(conn, rt.clock.now(), username)     # a reset signs them out everywhere
            audit(conn, rt.clock.now(), admin.username, "user.save", details={"user": username, "roles": roles,
                                                                              "attrs": attrs, "password_changed": bool(password)})
    except (AuthError, Forbidden) as exc:
        allowed = assignable_roles(rt, admin)
        with rt.db.read() as conn:
            rows = conn.execute(select(P.users).order_by(P.users.c.username)).mappings().all()
        users = _user_rows(rows, allowed)
        stored = next((u for u in users if u["username"] == username), None)
        return render(request, "admin/users.html", {"users": users, "roles": _all_roles(rt, lang, allowed), "q": "",
                                                    "edit": {"username": username, "display_name": form.get("display_name") or "",
                                                             "roles": roles, "attrs": str(form.get("attrs") or ""), "active": True,
                                                             "language": form.get("language") or "",
                                                             "locked": bool(stored and stored["locked"])},
                                                    "error": password_message(exc, lang) if isinstance(exc, PasswordProblem) else str(exc),
                                                    "done": None}, status=403 if isinstance(exc, Forbidden) else 422)
    return redirect("/admin/users?done=" + username, request)


@router.post("/admin/users/{username}/active")
async def set_active(username: str, request: Request):
    admin = _need(request, "manage_users")
    rt = runtime(request)
    form = await request.form()
    active = form.get("active") == "1"
    if username == admin.username and not active:
        raise Forbidden("you cannot deactivate yourself")
    with rt.db.write() as conn:
        u = get_user(conn, username)
        if u is None:
            raise NotFound(username)
        check_user_change(rt, admin, u, None)
        upsert_user(conn, rt.clock.now(), username, sorted(u.roles), dict(u.attrs), active=active)
        if not active:
            revoke_user_tokens(conn, rt.clock.now(), username)
        audit(conn, rt.clock.now(), admin.username, "user.activate" if active else "user.deactivate", details={"user": username})
    return redirect("/admin/users?done=" + username, request)


# ---------------------------------------------------------------------------
# outbox, timers, audit

@router.get("/admin/outbox")
def outbox_page(request: Request):
    """The messages of the apps the user manages; a customer's address and text masked where they
    lack ``view_pii``, audited where shown (``ui.outbox_view``)."""
    user = _need(request, "manage_app")
    rt = runtime(request)
    o = P.outbox
    status = request.query_params.get("status") or ""
    page = _page(request)
    q = select(o)
    cq = select(func.count()).select_from(o)
    if status:
        q, cq = q.where(o.c.status == status), cq.where(o.c.status == status)
    tz = _tz(rt)

    def totals(conn, apps):
        scoped = (lambda s: s.where(o.c.app.in_(apps))) if apps is not None else (lambda s: s)
        return (conn.execute(scoped(cq)).scalar() or 0,
                {r[0]: r[1] for r in conn.execute(scoped(select(o.c.status, func.count()).group_by(o.c.status)))})
    rows, (total, counts) = read_messages(rt, user, q.order_by(o.c.id.desc()).limit(PAGE).offset((page - 1) * PAGE),
                                          via="page", also=totals)
    lang = lang_of(request, user)
    items = [{"id": r["id"], "app": r["app"], "template": r["template"], "channel": r["channel"], "recipient": r["recipient"],
              "status": r["status"], "due": _fmt(r["due_at"], tz), "sent": _fmt(r["sent_at"], tz), "attempts": r["attempts"],
              "error": (r["last_error"] or "")[:300],
              "text": translate("pii_hidden", lang) if r.get("hidden") else (r["rendered"] or "")[:200],
              "url": f"/apps/{r['app']}/forms/{r['form']}/{r['record_id']}" if r["form"] and r["record_id"] else None} for r in rows]
    return render(request, "admin/outbox.html", {"items": items, "status": status, "counts": counts, "total": total,
                                                 "page": page, "pages": max(1, -(-total // PAGE))})


@router.post("/admin/outbox/{message_id:int}/retry")
def retry_message(message_id: int, request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    managed = permitted_apps(rt, user, "manage_app")
    with rt.db.write() as conn:
        app = outbox_retry(conn, message_id, managed)
        if app is not None:
            audit(conn, rt.clock.now(), user.username, "outbox.retry", app=app, details={"message": message_id})
    if app is None:
        from .common import PageError
        raise PageError(409, "only failed messages can be retried" if lang_of(request, user) == "en" else "只能重试发送失败的消息")
    return redirect("/admin/outbox?status=queued", request)


@router.get("/admin/timers")
def timers_page(request: Request):
    user = _need(request, "manage_app")
    rt = runtime(request)
    t = P.timers
    status = request.query_params.get("status") or "pending"
    tz = _tz(rt)
    q = select(t).where(t.c.status == status)
    managed = permitted_apps(rt, user, "manage_app")
    if managed is not None:
        q = q.where(t.c.app.in_(managed))
    with rt.db.read() as conn:
        rows = conn.execute(q.order_by(t.c.due_at if status == "pending" else t.c.id.desc()).limit(200)).mappings().all()
    items = [{"id": r["id"], "app": r["app"], "kind": r["kind"], "key": r["key"], "due": _fmt(r["due_at"], tz),
              "attempts": r["attempts"], "error": (r["last_error"] or "")[:300],
              "url": f"/apps/{r['app']}/forms/{r['form']}/{r['record_id']}" if r["form"] and r["record_id"] else None,
              "record": f"{r['form']} #{r['record_id']}" if r["form"] and r["record_id"] else ""} for r in rows]
    return render(request, "admin/timers.html", {"items": items, "status": status})


def _page(request) -> int:
    try:
        return max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        return 1


@router.get("/admin/audit")
def audit_page(request: Request):
    """The audit log of the apps in which the user has ``view_audit`` (and the platform's own rows:
    sign-ins, user changes); the platform admin sees all of it."""
    user = _need(request, "view_audit")
    rt = runtime(request)
    a = P.audit
    p = request.query_params
    conds = []
    apps = permitted_apps(rt, user, "view_audit")
    if apps is not None:
        conds.append(or_(a.c.app.in_(apps), a.c.app.is_(None)))
    if p.get("actor"):
        conds.append(a.c.actor == p["actor"].strip())
    if p.get("action"):
        conds.append(a.c.action.like(p["action"].strip().replace("%", "") + "%"))
    if p.get("app"):
        conds.append(a.c.app == p["app"].strip())
    tz = _tz(rt)
    for key, op in (("since", "ge"), ("until", "lt")):
        if p.get(key):
            try:
                day = dt.date.fromisoformat(p[key])
            except ValueError:
                continue
            if key == "until":
                day += dt.timedelta(days=1)
            at = to_db(dt.datetime.combine(day, dt.time(), tz))
            conds.append(a.c.at >= at if op == "ge" else a.c.at < at)
    page = _page(request)
    where = and_(*conds) if conds else None
    q = select(a)
    cq = select(func.count()).select_from(a)
    if where is not None:
        q, cq = q.where(where), cq.where(where)
    with rt.db.read() as conn:
        total = conn.execute(cq).scalar() or 0
        rows = conn.execute(q.order_by(a.c.id.desc()).limit(PAGE).offset((page - 1) * PAGE)).mappings().all()
    items = [{"at": _fmt(r["at"], tz), "actor": r["actor"], "action": r["action"], "app": r["app"] or "",
              "record": f"{r['form']} #{r['record_id']}" if r["form"] and r["record_id"] else (r["form"] or ""),
              "details": r["details"] or {}, "ip": r["ip"] or ""} for r in rows]
    keep = {k: v for k, v in p.items() if k != "page"}
    return render(request, "admin/audit.html", {"items": items, "f": keep, "total": total, "page": page,
                                                "pages": max(1, -(-total // PAGE))})
