"""Assignment: who gets the record -- correctly when many requests assign at once.

```yaml
- assign:
    strategy: round_robin      # round_robin | least_open | weighted | match | working_hours
    role: sales_consultant     # candidates: active users with the role ...
    match: {region: region}    # ... whose attribute equals the record expression
    where: "level in ['senior', 'lead']"    # ... and/or for whom this holds (user attributes; record.<field>)
    tie_break: least_open      # round_robin: among never-assigned users; others: round_robin
    weights: {wang: 3, li: 1}  # weighted (or weight_attribute: capacity); default weight 1
    calendar: default          # working_hours: on duty now per this calendar (or the user's 'calendar' attribute)
    open_when: "state != 'lost'"   # what counts as an open record for least_open (default: state not final)
    field: owner               # or another user field of the record
    fallback: {role: sales_manager, match: {dealer: dealer}}   # nobody matched: try this (or {user: "'admin'"})
    pool: true                 # still nobody: put the record into the public pool
```

Strategies:

* ``round_robin`` -- the least recently assigned candidate gets it (a stable
  set of users is served in turn; someone new is served next).  Ties between
  users never assigned go to the one with the fewest open records, then by name.
* ``least_open`` -- fewest open records of the form; ties round robin.
* ``weighted`` -- smooth weighted round robin (nginx's): over 6 records with
  weights 3/2/1 users get 3, 2 and 1, interleaved.
* ``match`` -- the candidates ``match``/``where`` selects, then ``tie_break``
  (default ``least_open``).
* ``working_hours`` -- only users on duty now (calendar days/hours/holidays,
  in the app's timezone), then ``tie_break`` (default ``round_robin``).

Users who are ``away_until`` a later time are never candidates.

Concurrency: each pool of candidates (form, role, match values) has a row in
``loom_rule_cursors`` that is locked with ``SELECT ... FOR UPDATE`` before
choosing and updated before the transaction commits, so concurrent requests
on PostgreSQL choose one after the other and see each other's choice (and,
for ``least_open``, each other's committed records).  SQLite serialises
writers anyway.

On PostgreSQL a new record's assignment usually skips that locked read: the
rule engine remembers each cursor as this process last read or wrote it
(``RuleEngine.cursors``), chooses from that copy and the user directory's
snapshot, and advances the row with ``loom_cursor_advance`` -- held, so it
goes with the INSERT -- which raises when the row's ``seq`` or the users
generation is no longer the remembered one.  The create is then rolled back
to its savepoint and run again with the locked read (:mod:`engine.optimistic`).
So another process, an admin's change to the users, or a concurrent request
costs a retry, never a choice made on a stale counter; after one, the pool's
next ``LOCKED_AFTER_STALE`` records of this process read under the lock (where
processes share a pool evenly, a retry every ~33 records, not every other one).

The public pool: ``return_to_pool`` empties the owner and sets ``in_pool``
and ``pool_entered_at`` (when the form has them); ``claim_from_pool`` lets the
acting user take a pool record -- at most ``cap`` (default 20) open claims
each, counted in ``loom_rule_claims`` under a per-user lock, with the record
row locked so two users can't claim the same record.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, String, bindparam, func, or_, select, update

from engine import platform as P
from engine.auth import User
from engine.clock import from_db, to_db
from engine.db import insert_ignore, run_driver
from engine.directory import USERS_GENERATION
from engine import optimistic
from engine.later import write_later
from engine.errors import Conflict, Forbidden
from engine.expressions import ExpressionError

from .actions.base import ActionCompiler, ActionError, RunContext, flow_names_of
from .durations import parse_time_of_day
from .notify import _user_names, users_with_role
from .tables import claims, cursors

STRATEGIES = ("round_robin", "least_open", "weighted", "match", "working_hours")
TIE_BREAKS = ("least_open", "round_robin", "name")
DEFAULT_CLAIM_CAP = 20
MAX_REMEMBERED = 10_000      # assignment cursors a process remembers (RuleEngine.cursors)
# after a stale remembered cursor (another process or request moved it), this many of the pool's next
# records read it under the lock: where several processes share a pool evenly, a retry every ~33
# records instead of every other one
LOCKED_AFTER_STALE = 32
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# ---------------------------------------------------------------------------
# cursors: one locked row per decision key

_CURSOR = select(cursors.c.value).where(cursors.c.app == bindparam("c_app"), cursors.c.key == bindparam("c_key"))
_CURSOR_LOCKED = _CURSOR.with_for_update()
# the assignment's cursor and the users generation (engine.directory) in one round trip
_CURSOR_GEN = select(cursors.c.value, USERS_GENERATION).where(cursors.c.app == bindparam("c_app"),
                                                               cursors.c.key == bindparam("c_key"))
_CURSOR_GEN_LOCKED = _CURSOR_GEN.with_for_update(of=cursors)
# the conditional advance of an optimistically read cursor (PostgreSQL; engine.migrate.CURSOR_ADVANCE)
_CURSOR_ADVANCE = select(func.loom_cursor_advance(
    bindparam("c_app", type_=String), bindparam("c_key", type_=String), bindparam("c_seq", type_=BigInteger),
    bindparam("c_gen", type_=BigInteger), bindparam("c_value", type_=JSON), bindparam("c_at", type_=DateTime)))
_CURSOR_SAVE = (update(cursors).where(cursors.c.app == bindparam("c_app"), cursors.c.key == bindparam("c_key"))
                .values(value=bindparam("c_value"), updated_at=bindparam("c_at")))
def lock_cursor(conn: Any, app: str, key: str, now: dt.datetime, default: dict, generation: bool = False) -> Any:
    """The cursor's value, with its row locked until the transaction ends (PostgreSQL).
    ``generation``: return ``(value, users generation)``, read with the same statement."""
    params = {"c_app": app, "c_key": key[:200]}
    pg = conn.dialect.name == "postgresql"
    q = (_CURSOR_GEN_LOCKED if pg else _CURSOR_GEN) if generation else (_CURSOR_LOCKED if pg else _CURSOR)

    def read() -> Any:
        # as driver SQL, without SQLAlchemy's per-statement work: psycopg2 decodes the JSON value
        # itself, SQLite hands back its text
        return run_driver(conn, q, params).first()
    row = read()
    if row is None:
        conn.execute(insert_ignore(cursors, ("app", "key"), conn.dialect.name),
                     {"app": app, "key": key[:200], "value": default, "updated_at": to_db(now)})
        row = read()
    value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return (dict(value or {}), row[1]) if generation else dict(value or {})


def save_cursor(conn: Any, app: str, key: str, now: dt.datetime, value: dict, expect: tuple | None = None) -> None:
    """Write the cursor's new value.  ``expect``: ``(seq, users generation)`` it was chosen from, when
    read optimistically (:func:`lock_pool`) -- the write then fails unless the row still has them."""
    # nobody reads the result: sent with the next statement (engine.later)
    if expect is not None:
        write_later(conn, _CURSOR_ADVANCE, {"c_app": app, "c_key": key[:200], "c_seq": expect[0], "c_gen": expect[1],
                                            "c_value": value, "c_at": to_db(now)})
    else:
        write_later(conn, _CURSOR_SAVE, {"c_app": app, "c_key": key[:200], "c_value": value, "c_at": to_db(now)})


# ---------------------------------------------------------------------------
# compile time

@dataclass(frozen=True, eq=False)
class AssignParams:
    strategy: str
    role: str | None
    users: Any                      # expression giving user names, or None
    match: tuple                    # ((attribute, expression), ...)
    where: Any
    tie_break: str
    weights: tuple                  # ((user, weight), ...)
    weight_attribute: str | None
    calendar: str | None
    open_when: Any
    final_states: tuple
    field: str
    fallback: "AssignParams | None"
    fallback_user: Any
    pool: bool
    form: str
    key: str | None


def _final_states(c: ActionCompiler, form: str) -> tuple:
    out = set()
    for flow in flow_names_of(c.ctx).values():
        if flow.get("form") == form and (flow.get("kind") or "workflow") == "workflow":
            for name, st in (flow.get("states") or {}).items():
                if isinstance(st, dict) and st.get("final"):
                    out.add(name)
    return tuple(sorted(out))


def compile_assign(c: ActionCompiler, spec: Any, sub: tuple = (), nested: bool = False) -> AssignParams | None:
    if isinstance(spec, str):
        spec = {"role": spec}
    if not isinstance(spec, dict):
        c.error(sub, "'assign' takes {strategy: round_robin, role: <role>, match: {...}}")
        return None
    allowed = ("strategy", "role", "users", "match", "where", "tie_break", "weights", "weight_attribute", "calendar",
               "open_when", "field", "fallback", "pool", "user", "cursor")
    for k in spec:
        if k not in allowed:
            c.error(sub + (k,), f"unknown key '{k}' for assign; expected one of: {', '.join(allowed)}", at_key=True)
    if c.form is None:
        c.error(sub, "'assign' needs a triggering record; this rule has none")
        return None
    strategy = spec.get("strategy", "round_robin")
    if strategy not in STRATEGIES:
        c.error(sub + ("strategy",), f"unknown strategy '{strategy}'; expected one of: {', '.join(STRATEGIES)}", schema=True)
        return None
    if "user" in spec and nested:
        e = c.expr(sub + ("user",), spec["user"])
        return AssignParams("user", None, e, (), None, "name", (), None, None, None, (), spec.get("field", "owner"),
                            None, e, False, c.form, None) if e is not None else None
    role = spec.get("role")
    users = c.expr(sub + ("users",), spec["users"]) if spec.get("users") is not None else None
    if role is None and users is None:
        c.error(sub, "'assign' needs 'role: <role>' (or 'users: <expression>') to choose from", at_key=True)
        return None
    if role is not None and not c.check_role(sub + ("role",), role):
        return None
    attrs = set(c.user_attributes) | {"name", "username", "display_name", "language", "calendar", "weight", "capacity"}
    match = []
    for attr, source in (spec.get("match") or {}).items():
        if attr not in c.user_attributes and attr not in ("name", "username"):
            from engine.problems import one_of, suggest
            c.error(sub + ("match", attr), f"unknown user attribute '{attr}'{suggest(attr, c.user_attributes) or '; ' + one_of(c.user_attributes)}"
                                           " (declare it under user_attributes in app.yaml)", at_key=True)
            continue
        e = c.expr(sub + ("match", attr), source)
        if e is not None:
            match.append((attr, e))
    where = c.expr(sub + ("where",), spec["where"], checker=c.user_checker()) if spec.get("where") else None
    tie = spec.get("tie_break", "least_open" if strategy in ("round_robin", "match") else "round_robin")
    if tie not in TIE_BREAKS:
        c.error(sub + ("tie_break",), f"unknown tie_break '{tie}'; expected one of: {', '.join(TIE_BREAKS)}", schema=True)
    weights = spec.get("weights") or {}
    if not isinstance(weights, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in weights.values()):
        c.error(sub + ("weights",), "weights map user names to numbers >= 0, e.g. {wang: 3, li: 1}")
        weights = {}
    calendar = spec.get("calendar")
    if calendar is not None and calendar not in (c.ctx.app_data.get("calendars") or {}):
        from engine.problems import one_of, suggest
        cals = c.ctx.app_data.get("calendars") or {}
        c.error(sub + ("calendar",), f"unknown calendar '{calendar}'{suggest(calendar, cals) or '; ' + one_of(cals)}")
    open_when = c.expr(sub + ("open_when",), spec["open_when"]) if spec.get("open_when") else None
    field = spec.get("field", "owner")
    if field != "owner":
        c.check_field(sub + ("field",), field, types=("user",), what="assign")
    fallback = fallback_user = None
    if spec.get("fallback") is not None:
        fb = spec["fallback"]
        if isinstance(fb, dict) and "user" in fb and len(fb) == 1:
            fallback_user = c.expr(sub + ("fallback", "user"), fb["user"])
        else:
            fallback = compile_assign(c, fb, sub + ("fallback",), nested=True)
    pool = bool(spec.get("pool", False))
    if pool and "in_pool" not in c.fields():
        c.error(sub + ("pool",), f"'pool: true' needs a boolean field 'in_pool' on form '{c.form}'")
    del attrs
    return AssignParams(strategy, role, users, tuple(match), where, tie, tuple(weights.items()),
                        spec.get("weight_attribute"), calendar, open_when, _final_states(c, c.form), field,
                        fallback, fallback_user, pool, c.form, spec.get("cursor"))


def compile_pool(c: ActionCompiler, spec: Any, claiming: bool) -> dict | None:
    spec = spec if isinstance(spec, dict) else {}
    allowed = ("cap", "flag", "entered_field") if claiming else ("flag", "entered_field")
    for k in spec:
        if k not in allowed:
            c.error((k,), f"unknown key '{k}'; expected one of: {', '.join(allowed)}", at_key=True)
    if c.form is None:
        c.error((), "the public pool needs a record; this rule has none")
        return None
    fields = c.fields()
    flag = spec.get("flag", "in_pool" if "in_pool" in fields else None)
    if flag is not None:
        c.check_field(("flag",), flag, types=("boolean",), what="pool flag")
    entered = spec.get("entered_field", "pool_entered_at" if "pool_entered_at" in fields else None)
    if entered is not None:
        c.check_field(("entered_field",), entered, types=("datetime", "date"), what="pool entered field")
    cap = spec.get("cap", DEFAULT_CLAIM_CAP)
    if claiming and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        c.error(("cap",), "'cap' is a whole number >= 1 (open pool claims per user)")
    return {"flag": flag, "entered": entered, "cap": cap, "form": c.form, "final_states": _final_states(c, c.form)}


# ---------------------------------------------------------------------------
# candidates

def _away(conn: Any, names: list[str], now: dt.datetime) -> set[str]:
    if not names:
        return set()
    u = P.users
    rows = conn.execute(select(u.c.username).where(u.c.username.in_(names), u.c.away_until.is_not(None),
                                                   u.c.away_until > to_db(now)))
    return {r[0] for r in rows}


def candidates(rc: RunContext, p: AssignParams) -> list[User]:
    if p.users is not None:
        users = [u for u in (rc.user(n) for n in _user_names(rc.evaluate(p.users))) if u is not None and u.active]
        if p.role:
            users = [u for u in users if p.role in u.roles]
    else:
        users = users_with_role(rc, p.role, None)
    env = rc.env()
    for attr, e in p.match:
        want = rc.evaluate(e, env)
        if want is None:
            return []
        users = [u for u in users if _attr(u, attr) == want or (isinstance(_attr(u, attr), list) and want in _attr(u, attr))]
    if p.where is not None:
        record_env = env.get("record")
        kept = []
        for u in users:
            uenv = u.env()
            uenv["record"] = record_env
            uenv["current_user"] = rc.uow.user.env()
            uenv["settings"] = dict(rc.app.settings)
            if rc.truthy(p.where, uenv):
                kept.append(u)
        users = kept
    if p.users is not None:
        away = _away(rc.uow.conn, [u.username for u in users], rc.uow.now)
    else:   # role_users() read away_until with the users
        now = to_db(rc.uow.now)
        away = {n for n, until in rc.__dict__.get("_away", {}).items() if until > now}
    users = [u for u in users if u.username not in away]
    if p.strategy == "working_hours":
        users = [u for u in users if on_duty(rc.app, u.attrs.get("calendar") or p.calendar or "default", rc.uow.now)]
    return sorted(users, key=lambda u: u.username)


def _attr(u: User, attr: str) -> Any:
    if attr in ("name", "username"):
        return u.username
    return u.attrs.get(attr)


def on_duty(app: Any, calendar: str, when: dt.datetime) -> bool:
    cal = (app.calendars or {}).get(calendar)
    if not cal:
        return True
    local = when.astimezone(app.tz)
    day = local.date()
    iso = day.isoformat()
    holidays = {str(h) for h in cal.get("holidays") or ()}
    workdays = {str(h) for h in cal.get("workdays") or ()}
    if iso in holidays:
        return False
    if iso not in workdays and _WEEKDAYS[day.weekday()] not in (cal.get("days") or _WEEKDAYS):
        return False
    t = local.time()
    for span in cal.get("hours") or ["00:00-23:59"]:
        a, _, b = str(span).partition("-")
        if parse_time_of_day(a) <= t < parse_time_of_day(b):
            return True
    return False


def open_counts(rc: RunContext, p: AssignParams, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    records = rc.records
    uow = rc.uow
    table = records.table(uow.app, p.form)
    col = table.c[p.field]
    q = select(col, func.count()).where(col.in_(names)).group_by(col)
    if p.open_when is not None:
        fd = records.form(uow.app, p.form)
        try:
            q = q.where(p.open_when.to_sql(records.resolver(uow.as_system(), fd, table), uow.conn.dialect.name,
                                           ctx=uow.eval_context()))
        except (ExpressionError, NotImplementedError) as exc:
            raise ActionError(f"open_when cannot be used as a database filter: {exc}") from exc
    elif p.final_states:
        q = q.where(or_(table.c.state.is_(None), table.c.state.not_in(p.final_states)))
    return {r[0]: int(r[1]) for r in uow.conn.execute(q)}


# ---------------------------------------------------------------------------
# strategies

def _cursor_key(rc: RunContext, p: AssignParams, kind: str) -> str:
    if p.key:
        return f"assign:{p.form}:{p.key}"
    env = rc.env()
    parts = [f"{a}={rc.evaluate(e, env)}" for a, e in p.match]
    return f"{kind}:{p.form}:{p.field}:{p.role or 'users'}:{','.join(parts)}"


def _strategy(p: AssignParams) -> str:
    """The strategy that decides among the candidates."""
    if p.strategy == "match":
        return p.tie_break if p.tie_break != "name" else "least_open"
    if p.strategy == "working_hours":
        return p.tie_break if p.tie_break in ("least_open", "round_robin") else "round_robin"
    return p.strategy


def lock_pool(rc: RunContext, p: AssignParams) -> tuple[str, dict, tuple | None]:
    """Lock the pool's cursor (before choosing candidates, so that concurrent requests choose one
    after the other); the users generation read with it spares the user directory a query.

    Or, for a new record on PostgreSQL, take the cursor as this process last saw it, with the
    directory's snapshot, and return what the write must find on the server (``(seq, users
    generation)``, see :func:`save_cursor` and the module's docstring)."""
    uow = rc.uow
    key = _cursor_key(rc, p, "weighted" if _strategy(p) == "weighted" else "rr")
    app = uow.app.name
    engine = rc.engine
    remembered, contended = engine.cursors, engine.contended
    known = remembered.get((app, key)) if rc.presave else None
    if known is not None and contended.get((app, key)):
        contended[(app, key)] -= 1          # moved elsewhere lately: the locked read, for a while
        known = None
    if known is not None:
        snap = uow.runtime.directory.cached()
        if snap is not None and snap.generation is not None and optimistic.begin(uow.conn):
            def forget(stale: bool) -> None:
                remembered.pop((app, key), None)
                if stale:
                    contended[(app, key)] = LOCKED_AFTER_STALE
            optimistic.on_failure(uow.conn, forget)
            rc.__dict__["_users_generation"] = snap.generation
            return key, dict(known), (int(known.get("seq") or 0), snap.generation)
    cur, generation = lock_cursor(uow.conn, app, key, uow.now, {"seq": 0, "last": {}}, generation=True)
    rc.__dict__["_users_generation"] = generation
    return key, cur, None


def choose(rc: RunContext, p: AssignParams, users: list[User], locked: tuple[str, dict, tuple | None]) -> tuple[str | None, str]:
    """(user name, how) -- advances the pool's cursor, locked by :func:`lock_pool`."""
    if not users:
        return None, "no candidate"
    names = [u.username for u in users]
    uow = rc.uow
    strategy = _strategy(p)
    key, cur, expect = locked
    last: dict = dict(cur.get("last") or {})
    seq = int(cur.get("seq") or 0)
    if strategy == "weighted":
        weights = dict(p.weights)
        current: dict = dict(cur.get("current") or {})
        total = 0.0
        best, best_cw = None, None
        for u in users:
            w = weights.get(u.username)
            if w is None and p.weight_attribute:
                try:
                    w = float(u.attrs.get(p.weight_attribute) or 0)
                except (TypeError, ValueError):
                    w = 0
            w = 1 if w is None else w
            if w <= 0:
                continue
            total += w
            current[u.username] = current.get(u.username, 0) + w
            if best is None or current[u.username] > best_cw:
                best, best_cw = u.username, current[u.username]
        if best is None:
            return None, "all candidates have weight 0"
        current[best] -= total
        current = {k: v for k, v in current.items() if k in names}
        _advance(rc, key, {"seq": seq + 1, "last": last, "current": current}, expect)
        return best, "weighted"
    if strategy == "least_open":
        counts = open_counts(rc, p, names)
        chosen = min(names, key=lambda n: (counts.get(n, 0), last.get(n, 0), n))
        how = f"least_open ({counts.get(chosen, 0)} open)"
    else:  # round robin: least recently assigned; never-assigned ties by tie_break
        oldest = min(last.get(n, 0) for n in names)
        tied = [n for n in names if last.get(n, 0) == oldest]
        if len(tied) > 1 and p.tie_break == "least_open":
            counts = open_counts(rc, p, tied)
            chosen = min(tied, key=lambda n: (counts.get(n, 0), n))
        else:
            chosen = tied[0]
        how = "round_robin"
    seq += 1
    last[chosen] = seq
    _advance(rc, key, {"seq": seq, "last": last}, expect)
    return chosen, how


def _advance(rc: RunContext, key: str, value: dict, expect: tuple | None) -> None:
    """Save the pool's cursor and remember it as saved: the next record of this process chooses
    from it (if another transaction moves it meanwhile, that record's write finds out)."""
    uow = rc.uow
    save_cursor(uow.conn, uow.app.name, key, uow.now, value, expect)
    if uow.conn.dialect.name == "postgresql":
        remembered, contended = rc.engine.cursors, rc.engine.contended
        if len(remembered) >= MAX_REMEMBERED:
            remembered.clear()            # (pools keyed by many match values: start over, never grow without end)
        if len(contended) >= MAX_REMEMBERED:
            contended.clear()
        remembered[(uow.app.name, key)] = value
        # the create failing (a check refused it): its transaction may never write this value
        optimistic.on_failure(uow.conn, lambda _stale, k=(uow.app.name, key): remembered.pop(k, None))


def assign(rc: RunContext, p: AssignParams) -> dict | None:
    if rc.record_id is None and not rc.presave:
        raise ActionError("there is no record to assign")
    tried = []
    params: AssignParams | None = p
    chosen = None
    how = ""
    while params is not None and chosen is None:
        if params.strategy == "user":
            names = _user_names(rc.evaluate(params.fallback_user))
            user = rc.user(names[0]) if names else None
            chosen, how = (user.username, "fallback user") if user is not None and user.active else (None, "")
        else:
            locked = lock_pool(rc, params)
            users = candidates(rc, params)
            chosen, how = choose(rc, params, users, locked)
            tried.append(params.role or "users")
        if chosen is None and params.fallback_user is not None:
            names = _user_names(rc.evaluate(params.fallback_user))
            user = rc.user(names[0]) if names else None
            if user is not None and user.active:
                chosen, how = user.username, "fallback user"
        if chosen is None:
            params = params.fallback
    if chosen is None:
        if p.pool:
            rc.stage(p.field, None)
            rc.stage("in_pool", True)
            if "pool_entered_at" in rc.formdef.fields:
                rc.stage("pool_entered_at", rc.uow.now)
            return {"assigned": None, "pool": True, "reason": f"no candidate ({', '.join(tried)})"}
        return {"assigned": None, "reason": f"no candidate ({', '.join(tried)})"}
    rc.stage(p.field, chosen)
    return {"assigned": chosen, "field": p.field, "how": how}


# ---------------------------------------------------------------------------
# the public pool

def _lock_record(rc: RunContext) -> None:
    table = rc.records.table(rc.uow.app, rc.form)
    q = select(table.c.id).where(table.c.id == rc.record_id)
    if rc.uow.conn.dialect.name == "postgresql":
        q = q.with_for_update()
    rc.uow.conn.execute(q).first()
    rc.reload()


def in_pool(rc: RunContext, params: dict) -> bool:
    if params["flag"]:
        return bool(rc.record.get(params["flag"]))
    return not rc.record.get("owner")


def open_claims(rc: RunContext, username: str) -> int:
    c = claims
    return int(rc.uow.conn.execute(select(func.count()).select_from(c).where(
        c.c.app == rc.app.name, c.c.username == username, c.c.released_at.is_(None))).scalar() or 0)


def claim_from_pool(rc: RunContext, params: dict) -> dict | None:
    uow = rc.uow
    user = uow.user
    if user.is_system:
        raise ActionError("claim_from_pool is done by a person: the acting user takes the record")
    if rc.record_id is None:
        raise ActionError("there is no record to claim")
    lock_cursor(uow.conn, uow.app.name, f"claim:{user.username}", uow.now, {})
    _lock_record(rc)
    if not in_pool(rc, params):
        owner = rc.record.get("owner")
        raise Conflict(f"this record is no longer in the pool" + (f" ({owner} has it)" if owner else ""))
    cap = params["cap"]
    n = open_claims(rc, user.username)
    if n >= cap:
        raise Forbidden(f"you already hold {n} records claimed from the pool; the limit is {cap} -- "
                        f"follow up or release some first")
    rc.stage("owner", user.username)
    if params["flag"]:
        rc.stage(params["flag"], False)
    rc.flush()
    uow.conn.execute(claims.insert().values(app=uow.app.name, form=rc.form, record_id=rc.record_id,
                                            username=user.username, claimed_at=to_db(uow.now)))
    return {"claimed_by": user.username, "open_claims": n + 1, "cap": cap}


def return_to_pool(rc: RunContext, params: dict) -> dict | None:
    if rc.record_id is None:
        raise ActionError("there is no record to return to the pool")
    previous = rc.record.get("owner")
    if in_pool(rc, params) and previous is None:
        return None
    rc.stage("owner", None)
    if params["flag"]:
        rc.stage(params["flag"], True)
    if params["entered"]:
        rc.stage(params["entered"], rc.uow.now)
    release_claims(rc.uow, rc.form, rc.record_id)
    return {"returned_from": previous}


def release_claims(uow: Any, form: str, record_id: int, keep_user: str | None = None) -> int:
    c = claims
    conds = [c.c.app == uow.app.name, c.c.form == form, c.c.record_id == record_id, c.c.released_at.is_(None)]
    if keep_user:
        conds.append(c.c.username != keep_user)
    return uow.conn.execute(update(c).where(*conds).values(released_at=to_db(uow.now))).rowcount


__all__ = ["assign", "claim_from_pool", "return_to_pool", "compile_assign", "compile_pool", "lock_cursor",
           "save_cursor", "on_duty", "release_claims", "from_db"]
