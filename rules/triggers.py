"""Triggers: what makes a rule run.

```yaml
on: {created: lead}                       # a lead was created
on: {updated: lead}                       # ... changed in any way
on: {deleted: lead}
on: {changed: lead, fields: [level, budget]}      # one of these fields changed (env: old.<field>)
on: {transition: complaint, name: close, from: [resolved], to: closed}   # the flows engine moved it
on: {schedule: "0 2 * * *"}               # cron, in the app's timezone; no record
on: {date: lead, field: assigned_at, offset: 3d}  # at field + offset (date fields: at 09:00, or at: "10:00")
on: {webhook: true, secret_env: WEBSITE_HOOK_SECRET}       # POST /api/apps/<app>/hooks/<rule>
on: {webhook: lead, auth: token, roles: [admin]}          # ... with {"id": ...}: runs on that lead
```

Timers (``loom_timers``, fired by the scheduler exactly once):

* ``schedule`` -- on install/upgrade the next occurrence of every cron rule is
  scheduled with key ``rule:<app>:<rule>:<iso>``; each firing schedules the
  next one (after the firing's due time, so ``loom tick --now`` replays every
  occurrence).  Timers of removed or changed cron rules are cancelled.
* ``date`` -- when a record is created, or its date field changes, a timer is
  set at ``field + offset`` with a key that includes the field's value, the
  offset and the time of day; timers for an old value are cancelled.  When it
  fires, the record is re-read: if the date changed meanwhile the timer is
  stale and does nothing; otherwise the rule's ``when`` is checked *then*
  (e.g. "still no follow-up") and its actions run.  Times already past when
  the date is set are not fired retroactively.  Installing a new or changed
  date rule schedules timers for existing records.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import and_, select, update

from engine import platform as P
from engine.clock import from_db, parse_instant, to_db
from engine.db import insert_ignore
from engine.later import made_here, write_later
from engine.definitions import CompileContext
from engine.problems import one_of, suggest
from engine.scheduler import cancel, schedule

from .cron import CronError, parse_cron
from .durations import format_duration, parse_duration, parse_time_of_day
from .model import TRIGGER_KINDS, TriggerDef, secret_env_problem

DATE_TIMER = "rules.date"
CRON_TIMER = "rules.schedule"
DEFAULT_TIME = dt.time(9, 0)
EVENT_OF = {"created": "record.created", "updated": "record.updated", "changed": "record.updated",
            "deleted": "record.deleted", "transition": "flow.transition", "date": "date", "schedule": "schedule",
            "webhook": "webhook"}
_TRIGGER_KEYS = {
    "created": (), "updated": (), "deleted": (), "changed": ("fields",),
    "transition": ("name", "from", "to"), "schedule": (), "date": ("field", "offset", "at"),
    "webhook": ("auth", "secret_env", "roles"),
}


def _as_tuple(v: Any) -> tuple:
    if v is None:
        return ()
    return tuple(v) if isinstance(v, list) else (v,)


def compile_trigger(ctx: CompileContext, file: str, path: tuple, on: Any, forms: Mapping[str, dict]) -> TriggerDef | None:
    p = path + ("on",)
    if not isinstance(on, dict) or not on:
        ctx.error(file, p, f"'on' names the trigger, e.g. {{created: lead}}; one of: {', '.join(TRIGGER_KINDS)}")
        return None
    kinds = [k for k in on if k in TRIGGER_KINDS]
    if len(kinds) != 1:
        if not kinds:
            ctx.error(file, p, f"no trigger given; use one of: {', '.join(TRIGGER_KINDS)} (e.g. on: {{created: lead}})")
        else:
            ctx.error(file, p + (kinds[1],), f"one trigger per rule: '{kinds[0]}' and '{kinds[1]}' are both given; "
                                             f"write two rules", at_key=True)
        return None
    kind = kinds[0]
    option_keys = {k for keys in _TRIGGER_KEYS.values() for k in keys}
    for k in on:
        if k != kind and k in option_keys and k not in _TRIGGER_KEYS[kind]:
            ctx.error(file, p + (k,), f"'{k}' does not go with a {kind} trigger"
                                      + (f"; it takes: {', '.join(_TRIGGER_KEYS[kind])}" if _TRIGGER_KEYS[kind] else ""), at_key=True)
            return None
    value = on[kind]

    def need_form(v: Any) -> str | None:
        if not isinstance(v, str) or v not in forms:
            ctx.error(file, p + (kind,), f"unknown form '{v}'{suggest(str(v), forms) or '; ' + one_of(forms)}")
            return None
        return v

    if kind in ("created", "updated", "deleted"):
        form = need_form(value)
        return TriggerDef(kind, form) if form else None
    if kind == "changed":
        form = need_form(value)
        if not form:
            return None
        fields = _as_tuple(on.get("fields"))
        if not fields:
            ctx.error(file, p, "a changed trigger lists the fields to watch: {changed: lead, fields: [level]}", at_key=True)
            return None
        pool = set((forms[form].get("fields") or {})) | {"owner", "state"}
        for i, f in enumerate(fields):
            if f not in pool:
                ctx.error(file, p + ("fields", i) if isinstance(on.get("fields"), list) else p + ("fields",),
                          f"unknown field '{f}' in form '{form}'{suggest(str(f), pool) or '; ' + one_of(pool)}")
                return None
        return TriggerDef(kind, form, fields=fields)
    if kind == "transition":
        form = need_form(value)
        if not form:
            return None
        return TriggerDef(kind, form, transition=on.get("name"), from_states=_as_tuple(on.get("from")),
                          to_states=_as_tuple(on.get("to")))
    if kind == "schedule":
        try:
            cron = parse_cron(str(value))
        except CronError as exc:
            ctx.error(file, p + ("schedule",), str(exc))
            return None
        return TriggerDef(kind, None, cron=cron, cron_text=str(value))
    if kind == "date":
        form = need_form(value)
        if not form:
            return None
        field = on.get("field")
        fdefs = forms[form].get("fields") or {}
        if field not in fdefs and field not in ("created_at", "updated_at"):
            ctx.error(file, p + (("field",) if "field" in on else ()), f"a date trigger needs 'field:' naming a date or "
                      f"datetime field of '{form}'" + (f"; unknown field '{field}'{suggest(str(field), fdefs)}" if field else ""),
                      at_key="field" not in on)
            return None
        ftype = (fdefs.get(field) or {}).get("type", "datetime")
        if ftype not in ("date", "datetime"):
            ctx.error(file, p + ("field",), f"field '{field}' is a {ftype} field; a date trigger needs a date or datetime field")
            return None
        try:
            offset = parse_duration(on.get("offset", "0d"))
        except ValueError as exc:
            ctx.error(file, p + ("offset",), str(exc))
            return None
        at = None
        if on.get("at") is not None:
            try:
                at = parse_time_of_day(on["at"])
            except ValueError as exc:
                ctx.error(file, p + ("at",), str(exc))
                return None
        return TriggerDef(kind, form, date_field=field, offset=offset, at_time=at)
    # webhook
    form = None
    if value is not True:
        form = need_form(value)
        if not form:
            return None
    auth = on.get("auth", "hmac")
    if auth not in ("hmac", "token", "either"):
        ctx.error(file, p + ("auth",), "auth is hmac (a signed request), token (a Loom API token) or either")
        return None
    secret_env = on.get("secret_env")
    problem = secret_env_problem(secret_env) if auth in ("hmac", "either") or secret_env is not None else None
    if problem:
        ctx.error(file, p + (("secret_env",) if "secret_env" in on else ()),
                  "an hmac webhook needs 'secret_env: <ENVIRONMENT_VARIABLE>' holding the shared secret "
                  "(secrets never go into the package)" if "secret_env" not in on else problem,
                  at_key="secret_env" not in on)
        return None
    roles = _as_tuple(on.get("roles"))
    app_roles = ctx.app_data.get("roles") or {}
    for i, r in enumerate(roles):
        if r not in app_roles:
            ctx.error(file, p + ("roles", i), f"unknown role '{r}'{suggest(str(r), app_roles) or '; ' + one_of(app_roles)}")
            return None
    return TriggerDef(kind, form, auth=auth, secret_env=secret_env, roles=roles)


# ---------------------------------------------------------------------------
# date-relative timers

def date_due(app: Any, trig: TriggerDef, value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value) if len(value) == 10 else parse_instant(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        base = from_db(value) if value.tzinfo is None else value
    elif isinstance(value, dt.date):
        base = dt.datetime.combine(value, trig.at_time or DEFAULT_TIME, tzinfo=app.tz)
    else:
        return None
    due = base + trig.offset
    if isinstance(value, dt.datetime) and trig.at_time is not None:
        local = due.astimezone(app.tz)
        due = dt.datetime.combine(local.date(), trig.at_time, tzinfo=app.tz)
    return due.astimezone(dt.timezone.utc)


def date_iso(value: Any) -> str:
    """A date field's value as it appears in a date timer's key (and payload): ``20261123T020000``
    (UTC) for a datetime -- formatted from its fields, strftime's text without its cost."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and value.tzinfo is not dt.timezone.utc:
            value = value.astimezone(dt.timezone.utc)       # (naive: UTC already, as stored)
        if value.year < 1000:
            return value.strftime("%Y%m%dT%H%M%S")
        return (f"{value.year}{value.month:02d}{value.day:02d}"
                f"T{value.hour:02d}{value.minute:02d}{value.second:02d}")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def date_key_prefix(app: str, rule: str, form: str, record_id: int) -> str:
    return f"rule:{app}:{rule}:{form}:{record_id}:"


def date_key(app: str, rule: Any, record_id: int, value: Any) -> str:
    return _date_key(app, rule, record_id, date_iso(value))


def _date_key(app: str, rule: Any, record_id: int, iso: str) -> str:
    t = rule.trigger
    at = t.at_time.strftime("%H%M") if t.at_time else ""
    return f"{date_key_prefix(app, rule.name, t.form, record_id)}{iso}:{format_duration(t.offset)}:{at}"


def schedule_or_revive(conn: Any, *, app: str, kind: str, key: str, due_at: dt.datetime, payload: dict,
                       form: str | None = None, record_id: int | None = None) -> bool:
    """Like ``schedule``, but a cancelled timer with the same key comes back (a date set back to an old value)."""
    if schedule(conn, app=app, kind=kind, key=key, due_at=due_at, payload=payload, form=form, record_id=record_id):
        return True
    t = P.timers
    return conn.execute(update(t).where(t.c.key == key[:255], t.c.status == "cancelled").values(
        status="pending", due_at=to_db(due_at), attempts=0, last_error=None, payload=payload)).rowcount > 0


def _next_due(app: Any, rules: Any, record: Mapping[str, Any], after: dt.datetime,
              strict: bool = False) -> list[tuple[Any, dt.datetime]]:
    """Per date field, the rules due soonest at or after ``after`` (``strict``: after it), all of
    them if tied."""
    best: dict[str, list] = {}
    for rule in rules:
        due = date_due(app, rule.trigger, record.get(rule.trigger.date_field))
        if due is None or due < after or (strict and due == after):
            continue
        group = best.get(rule.trigger.date_field)
        if group is None or due < group[0][1]:
            best[rule.trigger.date_field] = [(rule, due)]
        elif due == group[0][1]:
            group.append((rule, due))
    return [pair for group in best.values() for pair in group]


def schedule_date_rules(uow: Any, rules: Any, record: Mapping[str, Any], reschedule: Any = (),
                        created: bool = False) -> list[str]:
    """(Re)schedule the date rules of one record; ``reschedule``: the rules whose old timers must be
    cancelled first; ``created``: the record was just inserted (``record.created``).

    The rules on one date field form a chain: only the one due first gets a timer now, and when it
    fires the next one is scheduled (:func:`schedule_following`).  The CRM's lead has 3 rules on
    ``assigned_at`` (3, 7 and 15 days): one timer row per lead instead of three -- on a create, and
    in the timers table -- with the same keys, due times and exactly-once guarantee as before."""
    app = uow.app.name
    rid = record.get("id")
    if rid is None:
        return []
    for rule in rules:
        if rule in reschedule:
            cancel(uow.conn, app=app, kind=DATE_TIMER, key_prefix=date_key_prefix(app, rule.name, rule.trigger.form, rid))
    return _write_date_timers(uow, _next_due(uow.app, rules, record, uow.now), record, created=created)


def schedule_following(uow: Any, rules: Any, record: Mapping[str, Any], fired_due: dt.datetime) -> list[str]:
    """After a date timer due at ``fired_due`` fired: the timer(s) of the next rule(s) on the same
    field -- even if already past (a worker that was down catches up, in order)."""
    return _write_date_timers(uow, _next_due(uow.app, rules, record, fired_due, strict=True), record)


def _write_date_timers(uow: Any, due: list, record: Mapping[str, Any], created: bool = False) -> list[str]:
    app = uow.app.name
    rid = record["id"]
    rows = []
    for rule, when in due:
        t = rule.trigger
        iso = date_iso(record.get(t.date_field))
        rows.append(dict(app=app, kind=DATE_TIMER, key=_date_key(app, rule, rid, iso)[:255], due_at=to_db(when),
                         payload={"rule": rule.name, "field": t.date_field, "date": iso},
                         form=t.form, record_id=rid, status="pending", attempts=0))
    if not rows:
        return []
    # new, or a cancelled timer with this key comes back (the date was set back to an old value);
    # nobody reads the result, so the statement rides along with the next one (engine.later).  A
    # record just inserted, with an id never given before (``made_here``), has no timer, cancelled
    # or not, under its keys yet: a plain INSERT, which the server runs faster than the upsert
    dialect = uow.conn.dialect.name
    fresh = created and made_here(uow.conn, ("record", app, rows[0]["form"], rid))
    write_later(uow.conn, insert_ignore(P.timers, ("key",), dialect) if fresh else _upsert_timers(dialect), rows)
    return [r["key"] for r in rows]


_UPSERT: dict[str, Any] = {}


def _upsert_timers(dialect: str) -> Any:
    """``INSERT`` timers; on a key that exists, revive it only if it was cancelled (what
    :func:`schedule_or_revive` does for one timer) -- one statement, built once per dialect."""
    stmt = _UPSERT.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        ins = insert(P.timers)
        t = P.timers
        stmt = _UPSERT[dialect] = ins.on_conflict_do_update(
            index_elements=["key"], where=t.c.status == "cancelled",
            set_={"status": "pending", "due_at": ins.excluded.due_at, "attempts": 0, "last_error": None,
                  "payload": ins.excluded.payload})
    return stmt


def schedule_date_rule(uow: Any, rule: Any, record: Mapping[str, Any], reschedule: bool) -> str | None:
    """(Re)schedule ``rule``'s timer for ``record``; return the key scheduled, if any."""
    app = uow.app.name
    rid = record.get("id")
    if rid is None:
        return None
    if reschedule:
        cancel(uow.conn, app=app, kind=DATE_TIMER, key_prefix=date_key_prefix(app, rule.name, rule.trigger.form, rid))
    value = record.get(rule.trigger.date_field)
    due = date_due(uow.app, rule.trigger, value)
    if due is None or due < uow.now:
        return None
    key = date_key(app, rule, rid, value)
    schedule_or_revive(uow.conn, app=app, kind=DATE_TIMER, key=key, due_at=due,
                       payload={"rule": rule.name, "field": rule.trigger.date_field}, form=rule.trigger.form,
                       record_id=rid)
    return key


def backfill_date_rule(conn: Any, runtime: Any, appdef: Any, rule: Any, now: dt.datetime) -> int:
    """Timers for existing records when a date rule is installed or changed."""
    from engine.auth import SYSTEM_USER
    from engine.uow import UnitOfWork
    records = runtime.services.get("records")
    if records is None:
        return 0
    uow = UnitOfWork(runtime, conn, appdef, SYSTEM_USER, now)
    form = rule.trigger.form
    table = records.table(appdef, form)
    fd = records.form(appdef, form)
    field = rule.trigger.date_field
    cancel(conn, app=appdef.name, kind=DATE_TIMER, key_prefix=f"rule:{appdef.name}:{rule.name}:")
    n = 0
    q = select(table.c.id, table.c[field]).where(table.c[field].is_not(None)).order_by(table.c.id)
    for rid, raw in conn.execute(q):
        f = fd.fields.get(field)
        value = f.ftype.from_db(raw, f.spec) if f is not None else from_db(raw)
        if schedule_date_rule(uow, rule, {"id": rid, field: value}, reschedule=False):
            n += 1
    return n


# ---------------------------------------------------------------------------
# cron timers

def cron_key(app: str, rule: str, due: dt.datetime) -> str:
    return f"rule:{app}:{rule}:{due.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M')}"


def schedule_next_cron(conn: Any, appdef: Any, rule: Any, after: dt.datetime) -> str:
    due = rule.trigger.cron.next_after(after, appdef.tz)
    key = cron_key(appdef.name, rule.name, due)
    schedule_or_revive(conn, app=appdef.name, kind=CRON_TIMER, key=key, due_at=due,
                       payload={"rule": rule.name, "cron": rule.trigger.cron_text})
    return key


def sync_cron_timers(conn: Any, appdef: Any, rules: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """After install: exactly one pending timer per enabled cron rule."""
    t = P.timers
    wanted = []
    pending = {r.key: dict(r.payload or {}) for r in conn.execute(
        select(t.c.key, t.c.payload).where(t.c.app == appdef.name, t.c.kind == CRON_TIMER, t.c.status == "pending"))}
    keep: set[str] = set()
    todo = []
    for rule in rules.values():
        if rule.trigger.kind != "schedule" or not rule.enabled:
            continue
        current = [k for k, p in pending.items() if p.get("rule") == rule.name and p.get("cron") == rule.trigger.cron_text]
        if current:
            keep.update(current[:1])
        else:
            todo.append(rule)
    stale = [k for k in pending if k not in keep]
    if stale:
        conn.execute(update(t).where(and_(t.c.key.in_(stale), t.c.status == "pending")).values(status="cancelled"))
    for rule in todo:
        wanted.append(schedule_next_cron(conn, appdef, rule, now))
    return wanted + sorted(keep)
