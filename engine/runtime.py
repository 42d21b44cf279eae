"""The process-wide runtime: database, clock, event bus, installed apps.

Compiled apps are cached by content digest: a request never re-parses YAML.
When another process upgrades an app, the digest in ``loom_apps`` changes and
the next :meth:`Runtime.app` call here recompiles it once.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import platform as P
from .clock import Clock
from .crypto import KeyRing
from .db import Database
from .directory import Directory
from .definitions import AppDef, compile_package
from .events import EventBus
from .installer import installed_package
from .migrate import upgrade_platform


class AppNotFound(Exception):
    pass


class Runtime:
    APP_CHECK_SECONDS = 2.0   # how often to look for upgrades made by other processes

    def __init__(self, db_url: str | None = None, clock: Clock | None = None, keyring: KeyRing | None = None):
        self.db = Database(db_url)
        self.clock = clock or Clock()
        self.bus = EventBus()
        self._apps: dict[str, AppDef] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._keyring = keyring
        self._files: Any = None
        self.services: dict[str, Any] = {}    # engines register their services here (records, flows, ...)
        self.directory = Directory()          # active users, cached until they change

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "Runtime":
        upgrade_platform(self.db)
        return self

    @property
    def keyring(self) -> KeyRing:
        if self._keyring is None:
            keyfile = None
            if self.db.is_sqlite and ":memory:" not in self.db.url:
                db_path = Path(self.db.url.split("///", 1)[-1])
                keyfile = db_path.with_name(db_path.name + ".key")
            self._keyring = KeyRing.from_environment(keyfile)
        return self._keyring

    @property
    def files(self) -> Any:
        """The file store (``engine.files.FileStore``): local disk unless one was set."""
        if self._files is None:
            from .files import LocalFileStore, default_files_dir
            self._files = LocalFileStore(default_files_dir(self.db.url))
        return self._files

    @files.setter
    def files(self, store: Any) -> None:
        self._files = store

    # -- apps ------------------------------------------------------------
    def app_names(self) -> list[str]:
        with self.db.read() as conn:
            return [r.name for r in conn.execute(select(P.apps.c.name).order_by(P.apps.c.name))]

    def app(self, name: str) -> AppDef:
        cached = self._apps.get(name)
        now = time.monotonic()
        if cached is not None and now - self._checked.get(name, 0) < self.APP_CHECK_SECONDS:
            return cached
        with self.db.read() as conn:
            digest = conn.execute(select(P.apps.c.digest).where(P.apps.c.name == name)).scalar()
            if digest is None:
                raise AppNotFound(name)
            if cached is not None and cached.digest == digest:
                self._checked[name] = now
                return cached
            found = installed_package(conn, name)
        with self._lock:
            appdef = compile_package(found[2])
            self._apps[name] = appdef
            self._checked[name] = now
        return appdef

    def forget_app(self, name: str) -> None:
        self._apps.pop(name, None)
        self._checked.pop(name, None)
