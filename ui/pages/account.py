"""The signed-in user's own account (``/account``): their name and language, and changing their
password -- which signs out every other session and API token of theirs, so whoever knew the old
password is out.  A wrong current password counts toward the sign-in lock, like a failed sign-in:
the form can't be used to guess it."""
from __future__ import annotations

from fastapi import APIRouter, Request

from engine.audit import audit
from engine.auth import get_user, upsert_user

from ..deps import change_own_password
from .common import SESSION_COOKIE, PageRoute, lang_of, page_user, redirect, render, runtime
from .i18n import password_message, translate

router = APIRouter(route_class=PageRoute, include_in_schema=False)

MAX_NAME = 100


def _page(request: Request, user, *, status: int = 200, errors: dict | None = None, done: str | None = None,
          values: dict | None = None):
    return render(request, "account.html", {"account": user, "errors": errors or {}, "done": done,
                                            "values": values or {}}, status=status)


@router.get("/account")
def account_page(request: Request):
    user = page_user(request)
    return _page(request, user, done=request.query_params.get("done"))


@router.post("/account")
async def save_profile(request: Request):
    user = page_user(request)
    form = await request.form()
    lang = lang_of(request, user)
    name = str(form.get("display_name") or "").strip()
    language = str(form.get("language") or "")
    errors = {}
    if len(name) > MAX_NAME:
        errors["display_name"] = translate("name_too_long", lang, n=MAX_NAME)
    if language not in ("", "zh", "en"):
        errors["language"] = translate("language_choice", lang)
    if errors:
        return _page(request, user, status=422, errors=errors, values={"display_name": name})
    rt = runtime(request)
    with rt.db.write() as conn:
        current = get_user(conn, user.username)
        upsert_user(conn, rt.clock.now(), user.username, sorted(current.roles), dict(current.attrs),
                    display_name=name, language=language, active=current.active)
        audit(conn, rt.clock.now(), user.username, "user.profile", details={"display_name": name, "language": language})
    resp = redirect("/account?done=profile", request)
    if language:
        resp.set_cookie("loom_lang", language, max_age=365 * 24 * 3600, samesite="lax", path="/")
    return resp


@router.post("/account/password")
async def save_password(request: Request):
    user = page_user(request)
    form = await request.form()
    lang = lang_of(request, user)
    _, problem = change_own_password(runtime(request), user, str(form.get("current_password") or ""),
                                     str(form.get("new_password") or ""), str(form.get("confirm_password") or ""),
                                     keep_token=request.cookies.get(SESSION_COOKIE))
    if problem is not None:
        return _page(request, user, status=422, errors={problem.field: password_message(problem, lang)})
    return redirect("/account?done=password", request)
