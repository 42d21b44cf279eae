"""Request plumbing shared by the JSON API and the HTML pages.

* ``current_user``: the caller, from a bearer token (API) or the session
  cookie (pages).  Every ``/api`` route depends on it, so none can be reached
  without signing in.
* ``read_uow`` / ``write_uow``: a unit of work in a read or write
  transaction, committed when the route returns normally.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from engine.auth import User, user_for_token
from engine.runtime import AppNotFound, Runtime
from engine.uow import UnitOfWork

SESSION_COOKIE = "loom_session"
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def current_user(request: Request, token: str | None = Depends(oauth2)) -> User:
    rt: Runtime = request.app.state.runtime
    if not token and request.cookies.get(SESSION_COOKIE):
        # Signed in by the browser's session cookie: a state-changing call must also
        # echo the CSRF cookie in a header (double submit), as the HTML pages do.
        if request.method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token")
            if not sent or sent != request.cookies.get("loom_csrf"):
                raise HTTPException(403, "missing or wrong X-CSRF-Token header for a cookie-authenticated request")
        token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise HTTPException(401, "sign in first: POST /api/auth/token with username and password",
                            headers={"WWW-Authenticate": "Bearer"})
    with rt.db.read() as conn:
        user = user_for_token(conn, rt.clock.now(), token)
    if user is None:
        raise HTTPException(401, "your sign-in has expired or was revoked; sign in again",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.user = user
    return user


def language(request: Request, user: User) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("loom_lang") or user.language
    if not lang:
        accept = request.headers.get("accept-language", "")
        lang = "en" if accept.lower().startswith("en") else "zh"
    return "en" if lang.startswith("en") else "zh"


@contextlib.contextmanager
def unit_of_work(rt: Runtime, app_name: str, user: User, lang: str = "zh", write: bool = False) -> Iterator[UnitOfWork]:
    try:
        app = rt.app(app_name)
    except AppNotFound:
        raise HTTPException(404, f"no app '{app_name}' is installed") from None
    if not user.is_system and not (user.roles & set(app.roles)) and "admin" not in user.roles:
        raise HTTPException(404, f"no app '{app_name}' is installed")
    cm = rt.db.write() if write else rt.db.read()
    with cm as conn:
        yield UnitOfWork(rt, conn, app, user, rt.clock.now(), lang=lang)
