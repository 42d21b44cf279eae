"""Request plumbing shared by the JSON API and the HTML pages.

* ``current_user``: the caller, from a bearer token (API) or the session
  cookie (pages).  Every ``/api`` route depends on it (or, for a create, on
  ``api_token`` plus ``signed_in_unit_of_work``), so none can be reached
  without signing in.
* ``unit_of_work``: a unit of work in a read or write transaction, committed
  when the route returns normally.
* ``signed_in_unit_of_work``: the same, but the caller is looked up inside
  that transaction (one connection and one transaction for a whole create).
"""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Callable, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from sqlalchemy.engine import Connection

from engine.audit import audit
from engine.auth import PasswordProblem, User, change_password, user_for_token
from engine.definitions import AppDef
from engine.errors import Forbidden
from engine.runtime import AppNotFound, Runtime
from engine.uow import UnitOfWork

SESSION_COOKIE = "loom_session"
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


async def api_token(request: Request, token: str | None = Depends(oauth2)) -> str:
    """The caller's token, with every check that needs no database: a bearer
    token, or the session cookie plus the CSRF header on a state-changing call.

    Async and database-free, so it costs no worker thread; the token itself is
    checked by ``current_user`` or inside ``signed_in_unit_of_work``.  Raising
    here, as a dependency, keeps the order of answers: 403 (CSRF) and 401 (no
    token) come before the body is validated and before any 404."""
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
    return token


def _signed_in(request: Request, conn: Connection, now: dt.datetime, token: str) -> User:
    """The token's user (not expired, not revoked, active) or 401."""
    user = user_for_token(conn, now, token)
    if user is None:
        raise HTTPException(401, "your sign-in has expired or was revoked; sign in again",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.user = user
    return user


def current_user(request: Request, token: str = Depends(api_token)) -> User:
    rt: Runtime = request.app.state.runtime
    with rt.db.read() as conn:
        return _signed_in(request, conn, rt.clock.now(), token)


def language(request: Request, user: User) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("loom_lang") or user.language
    if not lang:
        accept = request.headers.get("accept-language", "")
        lang = "en" if accept.lower().startswith("en") else "zh"
    return "en" if lang.startswith("en") else "zh"


def installed_app(rt: Runtime, app_name: str, user: User) -> AppDef:
    """The app, or 404 when it isn't installed or the user has no role in it (the same answer: no probing)."""
    try:
        app = rt.app(app_name)
    except AppNotFound:
        app = None
    return _usable(app, app_name, user)


def _usable(app: AppDef | None, app_name: str, user: User) -> AppDef:
    if app is None or not (user.is_system or user.roles & set(app.roles) or "admin" in user.roles):
        raise HTTPException(404, f"no app '{app_name}' is installed")
    return app


@contextlib.contextmanager
def unit_of_work(rt: Runtime, app_name: str, user: User, lang: str = "zh", write: bool = False) -> Iterator[UnitOfWork]:
    app = installed_app(rt, app_name, user)
    cm = rt.db.write() if write else rt.db.read()
    with cm as conn:
        yield UnitOfWork(rt, conn, app, user, rt.clock.now(), lang=lang)


@contextlib.contextmanager
def signed_in_unit_of_work(request: Request, app_name: str, token: str, write: bool = False) -> Iterator[UnitOfWork]:
    """A unit of work whose caller is authenticated inside its own transaction.

    ``current_user`` costs a route a connection and a read transaction of its
    own (and a worker thread) before the route opens the transaction it works
    in; here the token is looked up as the transaction's first statement, so a
    create is one connection and one transaction.  Nothing is weakened:

    * CSRF and "no token at all" are checked before, by the ``api_token``
      dependency, as for every route;
    * expiry, revocation and deactivation are the same query, at the unit of
      work's own instant; a 401 raised here rolls back a transaction that has
      written nothing;
    * 401 still comes before 404 (unknown app, no role in it) and before any
      check of the data, so a caller without a valid token learns nothing
      about apps or records (a create's uniqueness errors, for one).  The only
      answer that can precede a 401 is FastAPI's 422 for a body that is no
      JSON object at all -- as for malformed JSON already;
    * a database that can't be reached fails when the transaction begins: the
      same 503.

    On SQLite a write transaction takes the write lock (``BEGIN IMMEDIATE``)
    before the token is checked, so a request with a bad token queues with the
    writers for one indexed lookup -- the same as a failed sign-in does.  The
    app definition is resolved before the transaction (it may load and compile
    a package), and its 404 is raised only once the caller is known.
    """
    rt: Runtime = request.app.state.runtime
    try:
        app: AppDef | None = rt.app(app_name)
    except AppNotFound:
        app = None
    cm = rt.db.write() if write else rt.db.read()
    with cm as conn:
        now = rt.clock.now()
        user = _signed_in(request, conn, now, token)
        yield UnitOfWork(rt, conn, _usable(app, app_name, user), user, now, lang=language(request, user))


def loaded_apps(rt: Runtime, names: list[str] | None = None) -> tuple[list[AppDef], list[str]]:
    """(the installed apps' definitions, the names of those that don't load) -- read once for a
    decision over all apps (or those of ``names``)."""
    apps, broken = [], []
    for name in rt.app_names() if names is None else names:
        try:
            apps.append(rt.app(name))
        except Exception:  # noqa: BLE001 - a broken package: its roles are unknown
            broken.append(name)
    return apps, broken


def granting_apps(rt: Runtime, user: User, permission: str, apps: list[AppDef] | None = None) -> list[str]:
    """The installed apps (or of ``apps``) whose roles grant ``user`` ``permission`` (the user's
    roles that the app defines)."""
    return [app.name for app in (loaded_apps(rt)[0] if apps is None else apps)
            if any(permission in app.roles[r].permissions for r in user.roles if r in app.roles)]


def permitted_apps(rt: Runtime, user: User, permission: str, apps: list[AppDef] | None = None) -> list[str] | None:
    """The apps in which ``user`` may use an admin ``permission`` -- None for the platform ``admin``
    role: every app.  Platform-wide admin pages and routes (outbox, timers, audit) show only these
    apps' rows."""
    return None if "admin" in user.roles else granting_apps(rt, user, permission, apps)


def install_guard(user: User, only: str | None = None) -> Callable[[AppDef, AppDef | None, bool], None]:
    """Who may install what (``engine.installer.install(authorize=...)``).

    * The platform ``admin`` role adds and upgrades any app.
    * ``manage_app`` in an installed app lets a user upgrade (or roll back) that app only -- not
      another app, and not add a new one.
    * Such a user can't grant a permission they don't hold in the app: an upgrade that gives any
      role a permission it didn't have (``view_pii``, ``manage_users``...) needs the uploader to
      hold it, so an analyst can't grant themselves the customers' personal data.

    ``only``: the one app this route edits (the studio), whatever name the edited ``app.yaml`` gives.
    Permissions are those of the installed version as the install's own transaction reads it
    (``old``), so an upgrade committed a moment before is the one compared against."""
    def check(new: AppDef, old: AppDef | None, installed: bool) -> None:
        name = new.name
        if only is not None and name != only:
            raise Forbidden(f"this page edits '{only}'; the package is named '{name}' -- keep 'name: {only}' in app.yaml")
        if "admin" in user.roles:
            return
        if not installed:
            raise Forbidden(f"'{name}' is not installed: only the platform administrator adds a new app")
        if old is None:
            raise Forbidden(f"the installed version of '{name}' no longer loads, so its roles are unknown: "
                            f"only the platform administrator may replace it")
        held = set().union(*(old.roles[r].permissions for r in user.roles if r in old.roles))
        if "manage_app" not in held:
            raise Forbidden(f"upgrading '{name}' needs the manage_app permission in '{name}'")
        for role_name, role in sorted(new.roles.items()):
            before = old.roles[role_name].permissions if role_name in old.roles else frozenset()
            granted = sorted(role.permissions - before - held)
            if granted:
                raise Forbidden(f"this version gives role '{role_name}' {', '.join(granted)}, which you don't hold in "
                                f"'{name}': only someone who holds a permission (or the platform administrator) may grant it")
    return check


def assignable_roles(rt: Runtime, admin: User) -> set[str] | None:
    """The roles ``admin`` may give and take away (``manage_users``); None for the platform admin:
    any role.  Role names are shared by all apps (a user's roles count wherever an app defines
    them), so a role is assignable only if *every* app that defines it is one in which ``admin``
    holds ``manage_users`` -- giving ``manager`` in one app must not grant another app's
    ``manager`` -- and never the platform ``admin`` role."""
    if "admin" in admin.roles:
        return None
    apps, broken = loaded_apps(rt)
    managed = set(granting_apps(rt, admin, "manage_users", apps))
    unknown = set(broken)              # apps that don't load: they may define any role
    defined_in: dict[str, set[str]] = {}
    for app in apps:
        for r in app.roles:
            defined_in.setdefault(r, set()).add(app.name)
    return {r for r, names in defined_in.items() if names | unknown <= managed} - {"admin"}


def check_user_change(rt: Runtime, admin: User, target: User | None, roles: set[str] | None) -> None:
    """Refuse (``Forbidden``) a user-management change beyond ``admin``'s reach: giving or taking a
    role outside :func:`assignable_roles`, or changing at all (password, roles, attributes, active)
    a user who holds such a role -- someone with more power than the apps ``admin`` manages, whose
    account they could otherwise take over by setting its password.  ``roles``: the new roles, or
    None when they don't change."""
    allowed = assignable_roles(rt, admin)
    if allowed is None:
        return
    current = set(target.roles) if target is not None else set()
    beyond = sorted(current - allowed)
    if beyond:
        raise Forbidden(f"'{target.username}' holds {', '.join(beyond)}, outside the apps whose users you manage: "
                        f"only the platform administrator may change this account")
    changed = sorted(((roles or set()) ^ current if roles is not None else set()) - allowed)
    if changed:
        raise Forbidden(f"you may not give or take {', '.join(changed)}: you manage the users of apps whose roles "
                        f"are {', '.join(sorted(allowed)) or 'none'}")


def change_own_password(rt: Runtime, user: User, current: str, new: str, confirm: str | None,
                        keep_token: str | None) -> tuple[int, PasswordProblem | None]:
    """``user`` changing their own password (the account page and ``POST /api/me/password``):
    (how many other sessions and tokens were signed out, the refusal or None).  Audited either
    way; a refusal is committed too, so a wrong current password counts toward the lock."""
    now = rt.clock.now()
    with rt.db.write() as conn:
        try:
            revoked = change_password(conn, now, user.username, current, new, confirm, keep_token=keep_token)
        except PasswordProblem as exc:
            audit(conn, now, user.username, "user.password_change_failed", details={"reason": exc.code})
            return 0, exc
        audit(conn, now, user.username, "user.password_changed", details={"other_sessions_signed_out": revoked})
    return revoked, None
