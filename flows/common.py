"""Small helpers the flow engine's parts share: expressions, actions, events, history."""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from engine.clock import from_db, to_db
from engine.events import Event
from engine.expressions import EvalContext, ExpressionError

log = logging.getLogger("loom.flows")


def iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = from_db(value) if value.tzinfo is None else value
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == [] or value == {}


def msg(uow: Any, text: Mapping[str, str] | str | None, default: str = "") -> str:
    if text is None:
        return default
    if isinstance(text, str):
        return text
    return text.get(uow.lang) or text.get("zh") or text.get("en") or default


def bilingual(zh: str, en: str) -> dict:
    return {"zh": zh, "en": en}


# -- expressions ------------------------------------------------------------------

def exists_hook(uow: Any):
    """``exists('service_order', vehicle=id, kind='first_service')`` through the record service."""
    def exists(form: str, conds: Mapping[str, Any] | None = None) -> bool:
        records = uow.service("records")
        try:
            fd = records.form(uow.app, form)
        except Exception:  # noqa: BLE001 - unknown form: the compiler should have caught it
            raise ExpressionError(f"exists(): no form '{form}'") from None
        table = records.table(uow.app, form)
        q = select(table.c.id)
        for name, value in (conds or {}).items():
            if name not in table.c:
                raise ExpressionError(f"exists(): form '{form}' has no field '{name}'")
            f = fd.fields.get(name)
            if value is None:
                q = q.where(table.c[name].is_(None))
            elif f is not None and f.pii:
                q = q.where(table.c[f"{name}__bi"] == uow.runtime.keyring.blind_index(str(value)))
            elif f is not None:
                if isinstance(value, Mapping) and "id" in value:   # a followed link
                    value = value["id"]
                try:
                    q = q.where(table.c[name] == f.ftype.to_db(value, f.spec))
                except Exception:  # noqa: BLE001 - a value that can't be stored can't match
                    return False
            else:
                q = q.where(table.c[name] == (to_db(value) if isinstance(value, dt.datetime) else value))
        return uow.conn.execute(q.limit(1)).first() is not None
    return exists


def eval_context(uow: Any):
    try:
        return EvalContext(now=uow.now, tz=uow.app.tz, exists=exists_hook(uow))
    except TypeError:  # an expression engine without the exists hook
        return uow.eval_context()


def record_env(uow: Any, form: str, rec: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> dict:
    """The names an expression over a record sees (fields, record, current_user, settings, old, links)."""
    records = uow.service("records")
    fd = records.form(uow.app, form)
    env = records.env(uow, fd, rec, old)
    _follow_links(uow, fd, env, rec)
    return env


def _follow_links(uow: Any, fd: Any, env: dict, rec: Mapping[str, Any]) -> None:
    """Make ``customer.status`` work: the rules engine's link convention, when it has one."""
    try:
        from rules.actions.links import link_env
        from rules.actions.base import RunContext
    except ImportError:
        return
    try:
        rc = RunContext(uow, fd.name, rec, trigger="flow", source="flow")
        link_env(rc, fd, env, rec)
    except Exception as exc:  # noqa: BLE001 - following links is best effort for conditions
        log.debug("link following failed: %s", exc)


def evaluate(uow: Any, expr: Any, env: Mapping[str, Any]) -> Any:
    return expr.evaluate(env, eval_context(uow))


def truthy(uow: Any, expr: Any, env: Mapping[str, Any], *, default: bool = False, what: str = "") -> bool:
    if expr is None:
        return True
    try:
        return bool(expr.evaluate(env, eval_context(uow)))
    except ExpressionError as exc:
        log.warning("flow condition %s failed: %s", what, exc)
        return default


# -- actions, events, history --------------------------------------------------------

def run_actions(uow: Any, form: str, record: Mapping[str, Any], actions: Iterable[Any], *, trigger: str,
                source: str, occurrence: str, event: Mapping[str, Any] | None = None,
                old: Mapping[str, Any] | None = None) -> list[dict]:
    actions = tuple(actions or ())
    if not actions:
        return []
    from rules.actions import run_actions as _run
    return _run(uow, form, record, actions, trigger, source=source, occurrence=occurrence, event=event, old=old)


def publish(uow: Any, event: Event) -> None:
    from engine.uow import MAX_DEPTH
    from engine.errors import RecordInvalid
    if uow.depth >= MAX_DEPTH:
        raise RecordInvalid([{"field": None, "code": "loop", "message":
                              f"flows and rules changed records {MAX_DEPTH} levels deep while handling {event.form}; "
                              "a rule or automatic transition probably triggers itself"}])
    uow.runtime.bus.publish(event, uow.deeper())


def history(uow: Any, form: str, record_id: int, kind: str, changes: dict, comment: str | None = None) -> None:
    uow.service("records").add_history(uow, form, record_id, kind, changes, comment)


def lock(q, conn):
    """``SELECT ... FOR UPDATE`` on PostgreSQL (SQLite serialises writers anyway)."""
    return q.with_for_update() if conn.dialect.name == "postgresql" else q
