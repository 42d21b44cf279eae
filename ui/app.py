"""The FastAPI application: JSON API, HTML pages and static files.

Errors are mapped here, once: a ``LoomError`` becomes its HTTP status with a
message written for people, per-field problems become the contract's
``{"errors": [{"field", "code", "message"}]}``, a database that can't be
reached (restarting, failing over, out of connections) is a 503 with
``Retry-After`` (a transient condition: clients retry), and anything
unexpected is logged and answered with a short apology -- never a traceback.
A browser that reaches no route (an unknown URL: 404, a wrong method: 405...)
gets the pages' friendly bilingual error page instead of JSON; ``/api/*``
stays JSON.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import LoomError, RecordInvalid
from engine.expressions import ExpressionError
from engine.runtime import Runtime

from .openapi import install_openapi

log = logging.getLogger("loom")
STATIC = Path(__file__).with_name("static")

# Routers are collected from these modules if they exist; engines' API
# modules (tasks, transitions, reports...) plug in the same way.  Order
# matters: specific paths before the generic /api/apps/{app}/{form}.
ROUTER_MODULES = ("ui.api.hooks", "ui.api.platform", "ui.api.flows", "ui.api.reports", "ui.api.admin", "ui.api.transfer",
                  "ui.api.files", "ui.api.comments", "ui.api.records", "ui.pages")


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Loom", version="0.1.0",
                  description="Metadata-driven apps: forms, flows, rules and reports from YAML.")
    app.state.runtime = rt
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        app.include_router(module.router)
    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _errors(app)
    _security_headers(app)
    install_openapi(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RecordInvalid)
    async def _invalid(request: Request, exc: RecordInvalid):
        return JSONResponse({"errors": exc.errors}, status_code=422)

    @app.exception_handler(LoomError)
    async def _loom(request: Request, exc: LoomError):
        return JSONResponse({"errors": [{"field": None, "code": type(exc).__name__.lower(), "message": exc.message}],
                             "detail": exc.message}, status_code=exc.status)

    @app.exception_handler(ExpressionError)
    async def _expr(request: Request, exc: ExpressionError):
        return JSONResponse({"errors": [{"field": None, "code": "expression", "message": str(exc)}]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "form")]
            errors.append({"field": ".".join(loc) or None, "code": e.get("type", "invalid"), "message": e.get("msg", "invalid")})
        return JSONResponse({"errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if wants_html(request):
            from .pages.common import error_page
            resp = error_page(request, exc.status_code)
            for k, v in (getattr(exc, "headers", None) or {}).items():
                resp.headers.setdefault(k, v)
            return resp
        return JSONResponse({"detail": exc.detail, "errors": [{"field": None, "code": f"http_{exc.status_code}", "message": str(exc.detail)}]},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError):
        # OperationalError/InterfaceError (connection refused or dropped, server shutting down, "database is
        # locked") or any error that invalidated the connection: transient and not the request's fault, so
        # 503 + Retry-After tells clients and load balancers to retry (without this, a PostgreSQL restart
        # answered every request with the generic 500 and logged a traceback each).  Other DBAPIErrors
        # (integrity, data) are bugs: 500 below.
        if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
            log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                        str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0][:200])
            if wants_html(request):
                from .pages.common import error_page
                resp = error_page(request, 503)
                resp.headers["Retry-After"] = "2"
                return resp
            return JSONResponse({"errors": [{"field": None, "code": "database_unavailable",
                                             "message": "数据库暂时无法连接，请稍后重试。 The database is not reachable right now; "
                                                        "please try again in a moment."}]},
                                status_code=503, headers={"Retry-After": "2"})
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        if wants_html(request):
            from .pages.common import error_page
            return error_page(request, 500)
        return JSONResponse({"errors": [{"field": None, "code": "internal",
                                         "message": "系统出错，已记录，请重试。 Something went wrong on our side; "
                                                    "it has been logged. Please try again."}]},
                            status_code=500)


def wants_html(request: Request) -> bool:
    """A browser asking for a page: ``Accept: text/html`` and not under ``/api``
    (the JSON API answers JSON whatever the Accept header says, per contract)."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "").lower()


_CSP = (b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; frame-ancestors 'none'")
_SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                     (b"referrer-policy", b"same-origin"))


class SecurityHeaders:
    """Adds the security headers a response doesn't set itself (CSP except on the API docs).

    A plain ASGI middleware: ``@app.middleware("http")`` (Starlette's
    BaseHTTPMiddleware) runs every request through an extra task and stream
    and cost several milliseconds per request -- half of an API create."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wants_csp = not scope.get("path", "").startswith(("/docs", "/redoc"))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                if wants_csp and b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", _CSP))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RefuseNul:
    """Answers 400 to a URL whose path or query carries a NUL character (``%00``).  No Loom
    parameter can hold one and PostgreSQL refuses it in any string, so without this a search such
    as ``?q=%00`` reached the database and came back as a 500."""

    MESSAGE = ("网址中含有空字符（%00），请删除后重试。 The address contains a NUL character (%00); "
               "remove it and try again.")

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (b"%00" in scope.get("query_string", b"")
                                        or "\x00" in scope.get("path", "")):
            request = Request(scope)
            if wants_html(request):
                from .pages.common import error_page
                response = error_page(request, 400, self.MESSAGE)
            else:
                response = JSONResponse({"errors": [{"field": None, "code": "bad_request", "message": self.MESSAGE}]},
                                        status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _security_headers(app: FastAPI) -> None:
    app.add_middleware(RefuseNul)
    app.add_middleware(SecurityHeaders)      # (added last: the outermost, so the 400 gets the headers too)
