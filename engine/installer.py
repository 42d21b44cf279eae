"""Install or upgrade an app package, atomically.

Everything -- table migrations, the stored package, the audit entry, each
engine's post-install work -- happens in one database transaction: any error
rolls all of it back and the database is exactly as it was.  PostgreSQL and
SQLite both have transactional DDL, which is what makes this possible.

Engines plug in with :func:`register_install_hook`: ``plan`` says what would
change (shown by ``--dry-run``), ``apply`` does it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from . import platform as P
from .audit import audit
from .clock import to_db
from .definitions import AppDef, compile_package
from .package import SourcePackage, read_package
from .problems import DefinitionError


class InstallError(Exception):
    """The import cannot proceed; nothing was changed."""


@dataclass(frozen=True)
class Change:
    kind: str          # create_table, add_column, rename_column, alter_column, rebuild_table, drop_column, drop_table, create_index, drop_index, note
    table: str
    detail: str
    destructive: bool = False
    data: Any = None   # engine-specific payload for apply

    def __str__(self) -> str:
        sign = {"create_table": "+", "add_column": "+", "create_index": "+", "rename_column": "~",
                "alter_column": "~", "rebuild_table": "~", "drop_column": "-", "drop_table": "-", "drop_index": "-"}.get(self.kind, "*")
        return f"  {sign} {self.detail}"


class InstallHook(Protocol):
    def plan(self, conn: Connection, old: AppDef | None, new: AppDef, allow_drop: bool) -> list[Change]: ...
    def apply(self, conn: Connection, changes: list[Change], old: AppDef | None, new: AppDef) -> None: ...


_HOOKS: list[tuple[int, str, Any]] = []
_AFTER: list[tuple[int, str, Callable]] = []


def register_install_hook(name: str, hook: InstallHook, order: int = 10) -> None:
    _HOOKS[:] = [h for h in _HOOKS if h[1] != name] + [(order, name, hook)]
    _HOOKS.sort(key=lambda h: h[0])


def register_after_install(name: str, fn: Callable[[Connection, AppDef | None, AppDef, Any], None], order: int = 50) -> None:
    """``fn(conn, old, new, runtime)`` runs in the install transaction (e.g. schedule cron timers)."""
    _AFTER[:] = [h for h in _AFTER if h[1] != name] + [(order, name, fn)]
    _AFTER.sort(key=lambda h: h[0])


@dataclass
class InstallReport:
    app: str
    version: str
    previous: str | None
    status: str                    # installed, upgraded, unchanged, planned
    changes: list[Change] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = {"installed": "Installed", "upgraded": "Upgraded", "unchanged": "Unchanged",
                "planned": "Plan for"}[self.status]
        head = f"{verb} {self.app} {self.version}" + (f" (from {self.previous})" if self.previous and self.previous != self.version else "")
        if self.status == "unchanged":
            return [head + ": already installed, nothing to do"]
        return [head] + ([str(c) for c in self.changes] or ["  (no table changes)"])

    def as_dict(self) -> dict:
        return {"app": self.app, "version": self.version, "previous": self.previous, "status": self.status,
                "changes": [{"kind": c.kind, "table": c.table, "detail": c.detail, "destructive": c.destructive}
                            for c in self.changes]}


def installed_package(conn: Connection, app: str) -> tuple[str, str, SourcePackage] | None:
    """(version, digest, package) of the installed version of ``app``."""
    row = conn.execute(select(P.apps.c.version, P.apps.c.digest).where(P.apps.c.name == app)).first()
    if not row:
        return None
    blob = conn.execute(select(P.app_versions.c.package).where(P.app_versions.c.app == app, P.app_versions.c.digest == row.digest)
                        .order_by(P.app_versions.c.id.desc()).limit(1)).scalar()
    return row.version, row.digest, read_package(blob)


class _DryRun(Exception):
    pass


def install(runtime: Any, package: SourcePackage, *, actor: str = "system", dry_run: bool = False,
            allow_drop: bool = False,
            authorize: Callable[[AppDef, AppDef | None, bool], None] | None = None) -> InstallReport:
    """Install/upgrade ``package``; raise DefinitionError or InstallError with nothing changed.

    ``authorize(new, old, installed)``: called once the package is compiled, with the installed
    version as this transaction reads it (``old``: its definition, None when there is none or it
    no longer compiles; ``installed``: whether an app of the name is installed), before anything
    is planned or written; it raises (e.g. ``Forbidden``) to refuse -- the caller's rule for who
    may add or upgrade what, judged against the version being replaced, not a cached one."""
    new = compile_package(package)
    now = runtime.clock.now()
    report: InstallReport | None = None
    try:
        with runtime.db.write() as conn:
            current = installed_package(conn, new.name)
            old: AppDef | None = None
            if current:
                version, digest, old_pkg = current
                if digest == new.digest:
                    old = new
                else:
                    try:
                        old = compile_package(old_pkg)
                    except DefinitionError:
                        old = None  # the old package no longer compiles: plan from the live tables only
            if authorize is not None:
                authorize(new, old, current is not None)
            if current:
                if digest == new.digest:
                    return InstallReport(new.name, new.version, version, "unchanged")
                if version == new.version and not dry_run:
                    raise InstallError(f"{new.name} {version} is already installed with different content; "
                                       f"raise 'version' in app.yaml (e.g. to {_bump(version)}) to upgrade")
            changes: list[Change] = []
            for _, _, hook in _HOOKS:
                changes.extend(hook.plan(conn, old, new, allow_drop))
            blocked = [c for c in changes if c.destructive and not allow_drop]
            report = InstallReport(new.name, new.version, current[0] if current else None,
                                   "planned" if dry_run else ("upgraded" if current else "installed"), changes)
            if dry_run:
                raise _DryRun()
            if blocked:
                raise InstallError("this upgrade would delete data:\n" + "\n".join(str(c) for c in blocked)
                                   + "\nkeep the fields (or declare renamed_from), or pass --allow-drop to confirm")
            for _, _, hook in _HOOKS:
                hook.apply(conn, changes, old, new)
            _store(conn, now, new, report, actor)
            for _, _, fn in _AFTER:
                fn(conn, old, new, runtime)
            audit(conn, now, actor, "app.install", app=new.name,
                  details={"version": new.version, "previous": report.previous, "changes": len(changes)})
    except _DryRun:
        return report  # type: ignore[return-value]
    runtime.forget_app(new.name)
    return report


def _store(conn: Connection, now: dt.datetime, new: AppDef, report: InstallReport, actor: str) -> None:
    values = dict(version=new.version, digest=new.digest, title=dict(new.title), updated_at=to_db(now))
    if conn.execute(select(P.apps.c.name).where(P.apps.c.name == new.name)).first():
        conn.execute(update(P.apps).where(P.apps.c.name == new.name).values(**values))
    else:
        conn.execute(P.apps.insert().values(name=new.name, installed_at=to_db(now), **values))
    conn.execute(P.app_versions.insert().values(
        app=new.name, version=new.version, digest=new.digest, package=new.package.to_zip(),
        plan=report.as_dict(), installed_at=to_db(now), installed_by=actor))


def _bump(version: str) -> str:
    parts = version.split("-")[0].split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return version + ".1"
    return ".".join(parts)
