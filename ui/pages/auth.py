"""Sign-in and sign-out pages.

The session is a token of kind ``session`` (``engine.auth.issue_token``) in
the ``loom_session`` cookie: HttpOnly, SameSite=Lax, Secure over https.  The
same cookie is accepted by the JSON API (``ui.deps.current_user``).  Sign-in
itself is CSRF-protected too (login CSRF), by the token set on the form page.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from engine.audit import audit
from engine.auth import AuthError, authenticate, issue_token, revoke_token

from .common import (SESSION_COOKIE, PageRoute, fragment, lang_of, optional_user, runtime, safe_next,
                     set_csrf_cookie)
from .i18n import translate

router = APIRouter(route_class=PageRoute, include_in_schema=False)

_ZH_AUTH = {
    "wrong user name or password": "用户名或密码错误",
    "account locked after too many failed sign-ins; try again later or ask an admin": "连续登录失败次数过多，账号已临时锁定，请稍后再试或联系管理员",
    "this account is deactivated; ask an admin": "该账号已停用，请联系管理员",
}


def _login_page(request, error: str = "", username: str = "", next_url: str = "/", status: int = 200):
    lang = lang_of(request)
    resp = fragment(request, "login.html", {"lang": lang, "error": error, "username": username, "next": next_url},
                    status=status)
    set_csrf_cookie(request, resp)
    return resp


@router.get("/login")
def login_form(request: Request, next: str | None = None):
    if optional_user(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    username = str(form.get("username") or "").strip()[:64]
    password = str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or "/"))
    rt = runtime(request)
    now = rt.clock.now()
    ip = request.client.host if request.client else None
    failure: AuthError | None = None
    with rt.db.write() as conn:     # a failure commits too: its count toward the lock must stay
        try:
            user = authenticate(conn, now, username, password)
        except AuthError as exc:
            failure = exc
            audit(conn, now, username or "-", "auth.failed", ip=ip)
        else:
            token = issue_token(conn, now, user.username, kind="session")
            audit(conn, now, user.username, "auth.sign_in", ip=ip)
    if failure is not None:
        msg = str(failure)
        if lang_of(request) == "zh":
            msg = _ZH_AUTH.get(msg, translate("sign_in_failed", "zh"))
        return _login_page(request, msg, username, next_url, status=401)
    resp = RedirectResponse(next_url, status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                    path="/", max_age=12 * 3600)
    if user.language:
        resp.set_cookie("loom_lang", user.language, max_age=365 * 24 * 3600, samesite="lax", path="/")
    return resp


@router.post("/logout")
def logout(request: Request):
    rt = runtime(request)
    token = request.cookies.get(SESSION_COOKIE)
    user = optional_user(request)
    if token:
        with rt.db.write() as conn:
            revoke_token(conn, rt.clock.now(), token)
            if user is not None:
                audit(conn, rt.clock.now(), user.username, "auth.sign_out")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
