"""JSON API: sign-in, apps (list, upload, export), tasks, outbox and the rule log."""
from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from engine import platform as P
from engine.audit import audit
from engine.auth import AuthError, User, authenticate, issue_token, revoke_token
from engine.clock import from_db
from engine.installer import InstallError, install
from engine.package import PackageError, read_package
from engine.problems import DefinitionError

from ..deps import (change_own_password, current_user, granting_apps, install_guard, language, loaded_apps, oauth2,
                    runtime, unit_of_work)
from ..outbox_view import read_messages

router = APIRouter(prefix="/api", tags=["platform"])
MAX_UPLOAD = 50 * 1024 * 1024


def _iso(v):
    v = from_db(v)
    return v.isoformat().replace("+00:00", "Z") if v else None


@router.post("/auth/token", tags=["auth"], summary="Sign in; returns a bearer token")
def sign_in(request: Request, username: str = Form(...), password: str = Form(...)):
    rt = runtime(request)
    now = rt.clock.now()
    ip = request.client.host if request.client else None
    failure: AuthError | None = None
    with rt.db.write() as conn:  # commits the failure counter too
        try:
            user = authenticate(conn, now, username, password)
        except AuthError as exc:
            failure = exc
            audit(conn, now, username[:64], "auth.failed", ip=ip)
        else:
            token = issue_token(conn, now, user.username)
            audit(conn, now, user.username, "auth.sign_in", ip=ip)
    if failure is not None:
        raise HTTPException(401, str(failure))
    return {"access_token": token, "token_type": "bearer"}


@router.post("/auth/revoke", tags=["auth"], summary="Sign out: revoke the token used")
def sign_out(request: Request, user: User = Depends(current_user), token: str | None = Depends(oauth2)):
    rt = runtime(request)
    with rt.db.write() as conn:
        revoke_token(conn, rt.clock.now(), token or request.cookies.get("loom_session", ""))
        audit(conn, rt.clock.now(), user.username, "auth.sign_out")
    return {"revoked": True}


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


@router.post("/me/password", tags=["auth"], summary="Change your own password; signs out your other sessions and tokens")
def change_my_password(body: PasswordChange, request: Request, user: User = Depends(current_user),
                       token: str | None = Depends(oauth2)):
    """The current password is checked like a sign-in (a wrong one counts toward the lock).  On
    success every other session and API token of the user is revoked; the one used stays valid."""
    revoked, problem = change_own_password(runtime(request), user, body.current_password, body.new_password, None,
                                           keep_token=token or request.cookies.get("loom_session"))
    if problem is not None:
        return JSONResponse({"errors": [{"field": problem.field, "code": problem.code, "message": str(problem)}]},
                            status_code=422)
    return {"changed": True, "other_sessions_signed_out": revoked}


@router.get("/me", tags=["auth"], summary="The signed-in user")
def me(user: User = Depends(current_user)):
    return {"username": user.username, "roles": sorted(user.roles), "attrs": dict(user.attrs),
            "display_name": user.display_name, "language": user.language}


def _require_permission(rt, user: User, permission: str, app_name: str | None = None) -> None:
    if "admin" in user.roles or granting_apps(rt, user, permission, loaded_apps(rt, [app_name] if app_name else None)[0]):
        return
    raise HTTPException(403, f"this needs the '{permission}' permission")


@router.get("/apps", tags=["apps"], summary="Installed apps")
def list_apps(request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with rt.db.read() as conn:
        rows = conn.execute(select(P.apps).order_by(P.apps.c.name)).mappings().all()
    out = []
    for r in rows:
        app = rt.app(r["name"])
        if "admin" in user.roles or user.roles & set(app.roles):
            out.append({"name": r["name"], "version": r["version"], "title": r["title"],
                        "installed_at": _iso(r["installed_at"]), "updated_at": _iso(r["updated_at"]),
                        "forms": sorted(app.forms)})
    return {"items": out}


@router.post("/apps", tags=["apps"], summary="Upload an app package (.zip) to install or upgrade")
async def upload_app(request: Request, file: UploadFile = File(...), dry_run: bool = False, allow_drop: bool = False,
                     user: User = Depends(current_user)):
    rt = runtime(request)
    _require_permission(rt, user, "manage_app")
    blob = await file.read(MAX_UPLOAD + 1)
    if len(blob) > MAX_UPLOAD:
        raise HTTPException(413, f"package too large (max {MAX_UPLOAD // 2**20} MB)")
    try:
        package = read_package(blob)
        report = install(rt, package, actor=user.username, dry_run=dry_run, allow_drop=allow_drop,
                         authorize=install_guard(user))
    except PackageError as exc:
        return JSONResponse({"problems": [{"file": "", "line": 0, "col": 0, "message": str(exc)}],
                             "errors": [{"field": None, "code": "package", "message": str(exc)}]}, status_code=422)
    except DefinitionError as exc:
        return JSONResponse({"problems": [p.as_dict() for p in exc.problems],
                             "errors": [{"field": p.file, "code": "definition", "message": str(p)} for p in exc.problems]},
                            status_code=422)
    except InstallError as exc:
        return JSONResponse({"problems": [], "errors": [{"field": None, "code": "install", "message": str(exc)}]},
                            status_code=422)
    return {**report.as_dict(), "report": report.lines()}


@router.get("/apps/{app}/package", tags=["apps"], summary="Export the installed package as a .zip")
def export_app(app: str, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    _require_permission(rt, user, "manage_app", app)
    try:
        appdef = rt.app(app)
    except Exception:  # noqa: BLE001
        raise HTTPException(404, f"no app '{app}' is installed") from None
    return Response(appdef.package.to_zip(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{app}-{appdef.version}.zip"'})


@router.get("/outbox", tags=["platform"], summary="Admin: messages queued or sent")
def list_outbox(request: Request, template: str | None = None, recipient: str | None = None, status: str | None = None,
                limit: int = 100, offset: int = 0, user: User = Depends(current_user)):
    """The messages of the apps the caller manages, newest first.  A customer's address and text are
    masked (``"hidden": true``) in an app where the caller lacks ``view_pii``, and audited where they
    are shown (``ui.outbox_view``)."""
    rt = runtime(request)
    _require_permission(rt, user, "manage_app")
    o = P.outbox
    q = select(o).order_by(o.c.id.desc())
    if template:
        q = q.where(o.c.template == template)
    if recipient:
        q = q.where(o.c.recipient == recipient)
    if status:
        q = q.where(o.c.status == status)
    rows, _ = read_messages(rt, user, q.limit(max(1, min(limit, 500))).offset(min(max(0, offset), 2**62)), via="api")
    return {"items": [{"id": r["id"], "app": r["app"], "template": r["template"], "channel": r["channel"],
                       "recipient": r["recipient"], "rendered": r["rendered"], "subject": r["subject"],
                       "hidden": r.get("hidden", False),
                       "kind": r["kind"], "status": r["status"], "due_at": _iso(r["due_at"]),
                       "sent_at": _iso(r["sent_at"]), "attempts": r["attempts"], "last_error": r["last_error"],
                       "form": r["form"], "record_id": r["record_id"]} for r in rows]}


@router.get("/apps/{app}/rules/log", tags=["platform"], summary="Analysts: rule firings, newest first")
def rule_log(app: str, request: Request, form: str | None = None, record_id: int | None = Query(None, ge=1, le=2**63 - 1),
             limit: int = Query(100, ge=1, le=500), user: User = Depends(current_user)):
    """Why did this happen: each firing with its trigger, the values its condition read (PII fields
    masked) and what each action did -- the timeline's rule lines and the rule log's own rows
    (errors, record-less rules), as ``RuleEngine.log_for`` reads them.  Needs ``manage_app``."""
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:   # 404 for an app the caller has no role in
        _require_permission(rt, user, "manage_app", app)
        rows = rt.services["rules"].log_for(uow, form, record_id, limit=limit)
    return {"items": [{"rule": r["rule"], "form": r["form"], "record_id": r["record_id"], "at": _iso(r["at"]),
                       "trigger": r["trigger"], "outcome": r["outcome"], "inputs": r["inputs"] or {},
                       "actions": r["actions"] or []} for r in rows]}
