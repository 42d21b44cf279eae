"""Append-only audit log: sign-ins, imports, permission changes, PII reads.

Rows are only ever inserted; there is no code path that updates or deletes
them.  Record changes have their own per-record history (``loom_history``).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Connection

from . import platform as P
from .clock import to_db


def audit(conn: Connection, now: dt.datetime, actor: str | None, action: str, *, app: str | None = None,
          form: str | None = None, record_id: int | None = None, details: dict[str, Any] | None = None,
          ip: str | None = None) -> None:
    conn.execute(P.audit.insert().values(at=to_db(now), actor=actor, action=action, app=app, form=form,
                                         record_id=record_id, details=details or {}, ip=ip))
