"""Plumbing shared by every HTML page: templates, sign-in, CSRF, errors.

* Templates are jinja2 with ``autoescape=True`` from ``ui/templates``,
  compiled once per process.
* ``PageRoute`` turns every error into a friendly page in the user's language
  (404/403/400/500), or a redirect to the sign-in page -- never a traceback.
  htmx requests get the same page; loom.js shows its ``[data-error-message]``
  as a toast.
* CSRF: double-submit token.  A random ``loom_csrf`` cookie is set on every
  page; every HTML POST must echo it in a ``csrf_token`` form field or the
  ``X-CSRF-Token`` header (htmx sends it from ``hx-headers`` on ``<body>``).
"""
from __future__ import annotations

import hmac
import json
import logging
import secrets
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import jinja2
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.auth import User, user_for_token
from engine.errors import Conflict, Forbidden, LoomError, NotFound, RecordInvalid
from engine.runtime import AppNotFound, Runtime

from .i18n import label, translate

log = logging.getLogger("loom.pages")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ASSETS = Path(__file__).resolve().parent / "assets"
SESSION_COOKIE = "loom_session"
CSRF_COOKIE = "loom_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LANG_COOKIE = "loom_lang"


class SignInRequired(Exception):
    pass


class CsrfFailed(Exception):
    pass


class PageError(Exception):
    """An error with a status and a message already written for the user."""

    def __init__(self, status: int, message: str = "", title: str | None = None):
        super().__init__(message)
        self.status, self.message, self.title = status, message, title


# ---------------------------------------------------------------------------
# templates

def _tojson(value: Any) -> str:
    # safe inside <script type="application/json"> and attributes
    return json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
    undefined=jinja2.ChainableUndefined,
)
env.filters["tojson"] = _tojson
env.filters["urlencode_qs"] = lambda d: urllib.parse.urlencode([(k, v) for k, v in d.items() if v not in (None, "")])


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def lang_of(request: Request, user: User | None = None, default: str | None = None) -> str:
    """Cookie ``loom_lang`` > the user's language > the app's default > the browser's."""
    lang = request.cookies.get(LANG_COOKIE) or (user.language if user else None) or default
    if not lang:
        accept = request.headers.get("accept-language", "").lower()
        lang = "en" if accept.startswith("en") else "zh"
    return "en" if str(lang).startswith("en") else "zh"


def csrf_token(request: Request) -> str:
    """The request's CSRF token (from the cookie, or a new one set on the response)."""
    tok = getattr(request.state, "csrf", None)
    if tok:
        return tok
    tok = request.cookies.get(CSRF_COOKIE)
    if not tok or len(tok) < 20 or len(tok) > 100:
        tok = secrets.token_urlsafe(24)
        request.state.csrf_new = True
    request.state.csrf = tok
    return tok


def set_csrf_cookie(request: Request, response: Response) -> None:
    if getattr(request.state, "csrf_new", False):
        response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/")


async def check_csrf(request: Request) -> None:
    """Every HTML POST: the cookie token must equal the field/header token."""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or ""
    if not sent:
        ctype = request.headers.get("content-type", "")
        if "form" in ctype:
            form = await request.form()
            sent = str(form.get(CSRF_FIELD) or "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfFailed()


def page_user(request: Request) -> User:
    """The signed-in user from the session cookie, else redirect to sign in."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return user
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    rt = runtime(request)
    with rt.db.read() as conn:
        user = user_for_token(conn, rt.clock.now(), token)
    if user is None:
        raise SignInRequired()
    request.state.user = user
    return user


def optional_user(request: Request) -> User | None:
    try:
        return page_user(request)
    except SignInRequired:
        return None


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(request: Request, template: str, ctx: dict | None = None, status: int = 200,
           headers: dict | None = None, conn=None) -> HTMLResponse:
    """Render ``template`` with the shell context (user, menus, language, CSRF).

    ``conn``: an open connection (a page's unit of work) the shell may reuse."""
    from .shell import shell_context  # late: shell imports this module
    data = shell_context(request, (ctx or {}).get("app_name"), conn)
    data.update(ctx or {})
    html = env.get_template(template).render(**data)
    resp = HTMLResponse(html, status_code=status, headers=headers)
    set_csrf_cookie(request, resp)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def fragment(request: Request, template: str, ctx: dict, status: int = 200, headers: dict | None = None) -> HTMLResponse:
    """Render a partial (htmx swap target) with just the helpers, no shell."""
    lang = ctx.get("lang") or lang_of(request, optional_user(request))
    data = helpers(request, lang)
    data.update(ctx)
    resp = HTMLResponse(env.get_template(template).render(**data), status_code=status, headers=headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def helpers(request: Request, lang: str) -> dict:
    return {
        "lang": lang,
        "html_lang": "en" if lang == "en" else "zh-CN",
        "t": lambda key, **kw: translate(key, lang, **kw),
        "L": lambda value, default="": label(value, lang, default),
        "csrf": csrf_token(request),
        "request": request,
        "path": request.url.path,
        "query": request.url.query,
    }


def redirect(url: str, request: Request | None = None) -> Response:
    if request is not None and is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def safe_next(url: str | None) -> str:
    """Only same-site relative paths: no open redirects."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


# ---------------------------------------------------------------------------
# errors -> pages

def error_page(request: Request, status: int, message: str = "", title: str | None = None) -> HTMLResponse:
    user = optional_user(request)
    lang = lang_of(request, user)
    key = {404: "not_found", 403: "forbidden", 405: "method_not_allowed", 419: "csrf",
           500: "server_error"}.get(status, "server_error" if status >= 500 else "bad_request")
    detail_key = {404: "not_found_detail", 403: "forbidden_detail", 405: "method_not_allowed_detail", 419: "csrf_detail",
                  500: "server_error_detail"}.get(status, "server_error_detail" if status >= 500 else None)
    ctx = {"status": status, "title": title or translate(key, lang),
           "message": message or (translate(detail_key, lang) if detail_key else "")}
    http_status = 403 if status == 419 else status
    try:
        if user is None:
            return fragment(request, "error.html", {**ctx, "lang": lang, "standalone": True}, status=http_status)
        return render(request, "error.html", ctx, status=http_status)
    except Exception:  # noqa: BLE001 - the error page itself must never fail
        log.exception("error page failed")
        return HTMLResponse(f"<!doctype html><h1 data-error-message>{translate(key, lang)}</h1>", status_code=http_status)


class PageRoute(APIRoute):
    """An APIRoute whose errors become HTML pages in the user's language."""

    def get_route_handler(self) -> Callable:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    await check_csrf(request)
                return await original(request)
            except SignInRequired:
                target = request.url.path + (("?" + request.url.query) if request.url.query else "")
                return redirect("/login?" + urllib.parse.urlencode({"next": target}), request)
            except CsrfFailed:
                return error_page(request, 419)
            except (NotFound, AppNotFound):
                return error_page(request, 404)
            except Forbidden as exc:
                return error_page(request, 403, _friendly(request, exc.message, 403))
            except RecordInvalid as exc:
                return error_page(request, 422, "; ".join(e.get("message", "") for e in exc.errors))
            except (Conflict, LoomError) as exc:
                return error_page(request, exc.status if exc.status < 500 else 400, exc.message)
            except PageError as exc:
                return error_page(request, exc.status, exc.message, exc.title)
            except RequestValidationError:
                return error_page(request, 404)
            except (HTTPException, StarletteHTTPException) as exc:
                if exc.status_code == 401:
                    return redirect("/login", request)
                return error_page(request, exc.status_code, "" if exc.status_code in (403, 404) else str(exc.detail))
            except Exception:  # noqa: BLE001
                log.exception("page %s %s failed", request.method, request.url.path)
                return error_page(request, 500)

        return handler


def _friendly(request: Request, message: str, status: int) -> str:
    # engine messages are English; zh users get the generic sentence
    lang = lang_of(request, optional_user(request))
    return message if lang == "en" else ""


def form_value(form, name: str, default: str = "") -> str:
    v = form.get(name)
    return default if v is None else str(v)
