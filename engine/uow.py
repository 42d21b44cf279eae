"""The unit of work: one transaction, one acting user, one instant.

Everything a request or a timer does -- the record change, the rules it
triggers, the outbox rows and timers they write -- shares one ``UnitOfWork``
and so one transaction and one ``now``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Connection

from .auth import SYSTEM_USER, User
from .definitions import AppDef
from .expressions import EvalContext

MAX_DEPTH = 8   # rules triggering rules: beyond this we stop with a clear error


@dataclass
class UnitOfWork:
    runtime: Any
    conn: Connection
    app: AppDef
    user: User
    now: dt.datetime
    depth: int = 0
    lang: str = "zh"
    notes: list = field(default_factory=list)   # warnings collected for the response (e.g. duplicates)

    def service(self, name: str) -> Any:
        return self.runtime.services[name]

    def as_system(self) -> "UnitOfWork":
        """Same transaction, acting as the system (rules, timers) -- made once per unit of work: each
        rule run of a user's request asks for it."""
        if self.user.is_system:
            return self
        got = self.__dict__.get("_system")
        if got is None or got.now is not self.now or got.conn is not self.conn or got.depth != self.depth:
            got = self.__dict__["_system"] = replace(self, user=SYSTEM_USER)
        return got

    def deeper(self) -> "UnitOfWork":
        return replace(self, depth=self.depth + 1)

    def eval_context(self, **kw: Any):
        """The expressions' context at this unit's instant, in its app's timezone.  Without ``kw`` one
        context serves the whole unit of work (it is immutable; rules ask for it ~10 times per create)."""
        if kw:
            return EvalContext(now=self.now, tz=self.app.tz, **kw)
        got = self.__dict__.get("_ectx")
        if got is None or got[0] is not self.now or got[1] is not self.app:
            got = self.__dict__["_ectx"] = (self.now, self.app, EvalContext(now=self.now, tz=self.app.tz))
        return got[2]
