"""The action framework: compile-time checks and the run-time context actions share.

An action is a small class with two methods:

* ``compile(c, spec)`` -- check the YAML (references, expressions) through the
  :class:`ActionCompiler` ``c``, which reports problems with positions, and
  return the action's compiled parameters;
* ``run(rc, params)`` -- do it inside the caller's unit of work, through the
  :class:`RunContext` ``rc``; return a short JSON-able summary (for the rule
  log and the record's timeline) or ``None`` when there was nothing to do.

Actions that only change the triggering record (``set``, ``assign``,
``decide``, tags) stage their values in ``rc``; the context writes them with a
single record update before any action that needs the database to be current
and at the end of the list (:meth:`RunContext.flush`).  So a rule that sets
five fields costs one UPDATE, one history line and one ``record.updated``.
"""
from __future__ import annotations

import datetime as dt
import itertools
import weakref
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import bindparam, select

from engine.definitions import CompileContext
from engine.errors import LoomError, RecordInvalid
from engine.expressions import ExpressionError, compile_expression
from engine.problems import one_of, suggest

from .links import LazyMapping, LinkRef, link_env, link_ref, load_linked, plain

SYSTEM_ROOTS = ("current_user", "settings", "app", "record", "old", "true", "false", "null", "None", "True", "False")
# Extra names a rule's expressions may use besides the record's fields:
#   owner_user  the owner's user attributes (owner_user.dealer, .region, .name)
#   event       the trigger's data (transition: event.transition/from/to)
#   payload     an incoming webhook's JSON body
#   created     the record the last `create` action made
#   source      update_many / for_each: the record that fired the rule
#   target      update_related: the related record being updated
RULE_ROOTS = ("owner_user", "event", "payload", "created", "source", "target")
USER_ROOTS = ("name", "username", "roles", "display_name", "language")


class ActionError(LoomError):
    """An action cannot be carried out; the message names what to fix."""
    status = 422


# ---------------------------------------------------------------------------
# registry

class Action:
    name: str = ""
    flush_before: bool = False      # needs the triggering record written first (create, run_rule, ...)
    mutates_record: bool = False    # stages changes to the triggering record

    def compile(self, c: "ActionCompiler", spec: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, rc: "RunContext", params: Any) -> dict | None:  # pragma: no cover - interface
        raise NotImplementedError(f"action '{self.name}' is not implemented yet")


ACTIONS: dict[str, Action] = {}


def register_action(cls: type[Action]) -> type[Action]:
    ACTIONS[cls.name] = cls()
    return cls


# ---------------------------------------------------------------------------
# compile time

def _cached(ctx: CompileContext, key: str, make: Callable[[], Any]) -> Any:
    store = ctx.__dict__.setdefault("_rules_cache", {})
    if key not in store:
        store[key] = make()
    return store[key]


def forms_of(ctx: CompileContext) -> dict[str, dict]:
    from forms.compiler import form_specs
    return _cached(ctx, "forms", lambda: form_specs(ctx))


def rule_names_of(ctx: CompileContext) -> dict[str, dict]:
    """name -> raw rule (from every rules/*.yaml), for run_rule references checked before the rules step runs."""
    def make():
        out = {}
        for src in ctx.yaml_files("rules"):
            if isinstance(src.data, dict):
                for r in src.data.get("rules") or []:
                    if isinstance(r, dict) and isinstance(r.get("name"), str):
                        out.setdefault(r["name"], r)
        return out
    return _cached(ctx, "rule_names", make)


def table_names_of(ctx: CompileContext) -> dict[str, dict]:
    def make():
        out = {}
        for src in ctx.yaml_files("rules"):
            if isinstance(src.data, dict):
                for t in src.data.get("decision_tables") or []:
                    if isinstance(t, dict) and isinstance(t.get("name"), str):
                        out.setdefault(t["name"], t)
        return out
    return _cached(ctx, "tables", make)


def flow_names_of(ctx: CompileContext) -> dict[str, dict]:
    def make():
        out = {}
        for src in ctx.yaml_files("flows"):
            if isinstance(src.data, dict):
                stem = src.path.rsplit("/", 1)[1].rsplit(".", 1)[0]
                out[src.data.get("name") or stem] = src.data
        return out
    return _cached(ctx, "flows", make)


def expr_roots(expr: Any) -> set[str]:
    roots = set()
    for n in getattr(expr, "names", ()) or ():
        if isinstance(n, (tuple, list)):
            if n:
                roots.add(str(n[0]))
        else:
            roots.add(str(n).split(".", 1)[0])
    return roots


def expr_paths(expr: Any) -> set[tuple]:
    out = set()
    for n in getattr(expr, "names", ()) or ():
        out.add(tuple(n) if isinstance(n, (tuple, list)) else tuple(str(n).split(".")))
    return out


class ActionCompiler:
    """What an action's ``compile`` sees: positions, references and expression checks."""

    def __init__(self, ctx: CompileContext, file: str, path: tuple, form: str | None, *, source_form: str | None = None):
        self.ctx = ctx
        self.file = file
        self.path = tuple(path)
        self.form = form
        self.source_form = source_form   # for nested lists (for_each): the form of the record that fired the rule
        self.needs: set[str] = set()
        self.paths: set[tuple] = set()

    # -- reporting -------------------------------------------------------
    @property
    def schema_checked(self) -> bool:
        """rules/*.yaml are checked by rules.schema.json (unknown keys, enums, required keys) before this step."""
        return self.file.startswith("rules/")

    def error(self, sub: tuple, message: str, at_key: bool = False, schema: bool = False) -> None:
        """``schema=True``: a problem rules.schema.json reports already -- only reported for other files (flows)."""
        if (schema or message.startswith("unknown key")) and self.schema_checked:
            return
        self.ctx.error(self.file, self.path + tuple(sub), message, at_key=at_key)

    def nested(self, sub: tuple, form: str | None, *, source_form: str | None = None) -> "ActionCompiler":
        c = ActionCompiler(self.ctx, self.file, self.path + tuple(sub), form, source_form=source_form)
        c.needs, c.paths = self.needs, self.paths
        return c

    # -- references ------------------------------------------------------
    @property
    def forms(self) -> dict[str, dict]:
        return forms_of(self.ctx)

    @property
    def roles(self) -> dict:
        return self.ctx.app_data.get("roles") or {}

    @property
    def user_attributes(self) -> dict:
        return self.ctx.app_data.get("user_attributes") or {}

    def fields(self, form: str | None = None) -> dict[str, dict]:
        form = form or self.form
        return (self.forms.get(form) or {}).get("fields") or {} if form else {}

    def check_form(self, sub: tuple, name: Any) -> bool:
        if not isinstance(name, str) or name not in self.forms:
            self.error(sub, f"unknown form '{name}'{suggest(str(name), self.forms) or '; ' + one_of(self.forms)}")
            return False
        return True

    def check_field(self, sub: tuple, name: Any, form: str | None = None, *, system: bool = False,
                    types: Iterable[str] | None = None, what: str = "field") -> bool:
        form = form or self.form
        if form is None:
            self.error(sub, f"{what} '{name}': this rule has no record (its trigger names no form)")
            return False
        from forms.model import SYSTEM_COLUMNS
        fields = self.fields(form)
        pool = set(fields) | (set(SYSTEM_COLUMNS) if system else set())
        if not isinstance(name, str) or name not in pool:
            self.error(sub, f"{what}: unknown field '{name}' in form '{form}'{suggest(str(name), pool) or '; ' + one_of(pool)}")
            return False
        if types is not None and name in fields:
            types = tuple(types)
            if fields[name].get("type") not in types:
                self.error(sub, f"{what}: field '{name}' of form '{form}' is a {fields[name].get('type')} field; "
                                f"expected {' or '.join(types)}")
                return False
        return True

    def check_role(self, sub: tuple, role: Any) -> bool:
        if role not in self.roles:
            self.error(sub, f"unknown role '{role}'{suggest(str(role), self.roles) or '; ' + one_of(self.roles)}")
            return False
        return True

    def check_template(self, sub: tuple, name: Any) -> bool:
        if not isinstance(name, str) or not self.ctx.has_template(name):
            have = sorted({p.split("/", 1)[1].split(".", 1)[0] for p in self.ctx.package.files
                           if p.startswith("templates/") and p.endswith(".j2")})
            self.error(sub, f"unknown template '{name}': no file templates/{name}.<lang>.j2"
                            f"{suggest(str(name), have) or ('; ' + one_of(have) if have else '')}")
            return False
        return True

    def check_duration(self, sub: tuple, value: Any) -> dt.timedelta | None:
        from ..durations import parse_duration
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(sub, str(exc))
            return None

    # -- expressions -----------------------------------------------------
    def checker(self, form: str | None = None, extra: tuple[str, ...] = ()) -> Callable[[tuple], str | None]:
        form = form if form is not None else self.form
        if form is None:
            def no_record(path: tuple) -> str | None:
                head = path[0]
                if head in SYSTEM_ROOTS or head in RULE_ROOTS or head in extra:
                    return None
                return (f"unknown name '{head}': this rule has no record (its trigger names no form); "
                        f"use current_user, settings, payload or functions")
            return no_record
        from forms.compiler import name_checker
        return name_checker(self.forms, form, extra=RULE_ROOTS + tuple(extra))

    def expr(self, sub: tuple, source: Any, form: str | None = None, extra: tuple[str, ...] = (),
             checker: Callable[[tuple], str | None] | None = None) -> Any:
        """Compile an expression; report problems at its position; None if it failed."""
        if source is None:
            return None
        if isinstance(source, bool):
            source = "true" if source else "false"
        elif not isinstance(source, str):
            source = repr(source)
        try:
            expr = compile_expression(source, check_name=checker or self.checker(form, extra))
        except ExpressionError as exc:
            self.ctx.error_in_expression(self.file, self.path + tuple(sub), exc)
            return None
        self.needs |= expr_roots(expr)
        self.paths |= expr_paths(expr)
        return expr

    def value_expr(self, sub: tuple, source: Any, form: str | None = None, extra: tuple[str, ...] = ()) -> Any:
        """A value that may be a literal (number, bool, list) or an expression string."""
        if source is None:
            return Literal(None)
        if isinstance(source, (bool, int, float)):
            return Literal(source)
        if isinstance(source, list):
            return Literal(list(source))
        if isinstance(source, dict) and set(source) <= {"lookup", "where"} and "lookup" in source:
            return self.lookup(sub, source, form, extra)
        return self.expr(sub, source, form, extra)

    def lookup(self, sub: tuple, spec: dict, form: str | None, extra: tuple) -> Any:
        """``{lookup: dealer, where: {code: "owner_user.dealer"}}`` -> the id of the first match."""
        target = spec.get("lookup")
        if not self.check_form(sub + ("lookup",), target):
            return None
        where = spec.get("where") or {}
        if not isinstance(where, dict) or not where:
            self.error(sub + ("where",), "lookup needs 'where: {<field of " + str(target) + ">: <expression>}'")
            return None
        conds = {}
        for k, v in where.items():
            if self.check_field(sub + ("where", k), k, target, system=True, what="lookup"):
                e = self.value_expr(sub + ("where", k), v, form, extra)
                if e is not None:
                    conds[k] = e
        return Lookup(target, tuple(conds.items()))

    def user_checker(self, form: str | None = None) -> Callable[[tuple], str | None]:
        """Names in ``{role:, where:}``: candidate users' attributes, plus ``record.<field>``."""
        attrs = set(self.user_attributes) | set(USER_ROOTS)
        record_check = self.checker(form)

        def check(path: tuple) -> str | None:
            head = path[0]
            if head in ("current_user", "settings", "app", "true", "false", "null", "None", "True", "False"):
                return None
            if head == "record":
                return record_check(path[1:]) if len(path) > 1 else None
            if head in RULE_ROOTS:
                return record_check(path)
            if head in attrs:
                return None
            return (f"unknown user attribute '{head}'{suggest(head, attrs) or '; ' + one_of(attrs)} "
                    f"(write record.<field> for the record's fields)")
        return check


class Literal:
    """A constant where an expression is accepted."""

    __slots__ = ("value",)
    names: tuple = ()

    def __init__(self, value: Any):
        self.value = value

    def evaluate(self, env: Any, ctx: Any = None) -> Any:
        return self.value


class Lookup:
    """Id of the first ``form`` record whose fields equal the given values (None when none)."""

    names: tuple = ()
    _serial = itertools.count()

    def __init__(self, form: str, conds: tuple):
        self.form, self.conds = form, conds
        self.names = tuple(n for _, e in conds for n in (getattr(e, "names", ()) or ()))
        self._query: tuple | None = None       # (app digest, statement, per-condition converters)
        # parameter names of its own: the SELECT can be a subquery of a statement with other parameters
        self._prefix = f"lookup{next(Lookup._serial)}_"
        # set at compile time (rules.phases): in the pre-save phase, leave the SELECT to the INSERT
        self.deferrable = False

    def _compiled(self, rc: "RunContext") -> tuple:
        """The SELECT, built once per app version, with one parameter per condition."""
        app = rc.uow.app
        got = self._query
        if got is None or got[0] != app.digest:
            table = rc.records.table(app, self.form)
            fd = rc.records.form(app, self.form)
            q = select(table.c.id)
            converters = []
            for i, (field, _) in enumerate(self.conds):
                f = fd.fields.get(field)
                if f is not None and f.pii:
                    q = q.where(table.c[f"{field}__bi"] == bindparam(f"{self._prefix}{i}"))
                    converters.append(lambda v, rc: rc.uow.runtime.keyring.blind_index(str(v)))
                else:
                    q = q.where(table.c[field] == bindparam(f"{self._prefix}{i}"))
                    converters.append((lambda v, rc, f=f: f.ftype.to_db(v, f.spec)) if f is not None else (lambda v, rc: v))
            # one condition on a field unique across the form: at most one row, nothing to order
            # (the server plans the bare subquery of the record's INSERT in less time)
            only = fd.fields.get(self.conds[0][0]) if len(self.conds) == 1 else None
            if only is None or only.unique is not True:
                q = q.order_by(table.c.id).limit(1)
            got = self._query = (app.digest, q, tuple(converters))
        return got

    def _params(self, rc: "RunContext", env: Mapping, converters: tuple) -> dict | None:
        params = {}
        for i, ((_, e), convert) in enumerate(zip(self.conds, converters)):
            v = rc.evaluate(e, env)
            if v is None:
                return None
            params[f"{self._prefix}{i}"] = convert(v, rc)
        return params

    def evaluate_in(self, rc: "RunContext", env: Mapping) -> Any:
        _, query, converters = self._compiled(rc)
        params = self._params(rc, env, converters)
        return None if params is None else rc.uow.conn.execute(query, params).scalar()

    def defer_in(self, rc: "RunContext", env: Mapping) -> "DeferredLookup | None":
        """The look-up with its values worked out now and its SELECT left for later (None: a value is
        missing, so there is nothing to look up)."""
        _, query, converters = self._compiled(rc)
        params = self._params(rc, env, converters)
        return None if params is None else DeferredLookup(query, params)


class DeferredLookup:
    """A pre-save look-up left to the database: the record service puts its SELECT into the INSERT of
    the record as a subquery and reads the result back with the new id (``resolve``)."""

    __slots__ = ("query", "params", "value", "resolved")

    def __init__(self, query: Any, params: dict):
        self.query, self.params = query, params
        self.value: Any = None
        self.resolved = False

    def resolve(self, value: Any) -> None:
        self.value, self.resolved = value, True

    def __repr__(self) -> str:
        return f"DeferredLookup({self.value!r})" if self.resolved else "DeferredLookup(<before the INSERT>)"


# ---------------------------------------------------------------------------
# run time

_UNSET = object()


class RunContext:
    """One run of an action list on one record, inside the caller's unit of work."""

    def __init__(self, uow: Any, form: str | None, record: Mapping[str, Any] | None, *, trigger: str,
                 source: str, occurrence: str | None = None, old: Mapping[str, Any] | None = None,
                 payload: Any = None, event: Mapping[str, Any] | None = None, parent: "RunContext | None" = None,
                 changed: Any = None):
        self.uow = uow
        self.records: Any = uow.service("records")
        self._formdef: Any = _UNSET
        self.sys = uow.as_system() if not uow.user.is_system else uow
        self.form = form
        self.record: dict = dict(record or {})
        self.trigger = trigger
        self.source = source                     # rule name, or the caller (e.g. 'flow:complaint_process:start')
        self.occurrence = occurrence or uow.now.isoformat()
        self.old = dict(old) if old is not None else None
        self.payload = payload
        self.event = dict(event or {})
        self.parent = parent
        self.pending: dict[str, Any] = {}
        self.pending_system: dict[str, Any] = {}
        self.created: dict | None = None
        self.done: list[dict] = []
        self._env: dict | None = None
        self._ectx: Any = None
        self.changed: frozenset = frozenset(changed or ())
        self._users: dict[str, Any] = parent._users if parent is not None else {}
        # link fields staged from a lookup in this transaction -> (its form, the id it found): the
        # record service need not check again that the record exists
        self.verified: dict[str, tuple] = parent.verified if parent is not None else {}
        self._links: dict[tuple, Any] = parent._links if parent is not None else {}
        # pre-save phase (rules.phases): the record is not inserted yet -- no id; staged values are
        # handed to the record service for the INSERT instead of being written with an UPDATE
        self.presave = False

    # -- services --------------------------------------------------------
    @property
    def app(self) -> Any:
        return self.uow.app

    @property
    def engine(self) -> Any:
        """The runtime's ``RuleEngine`` (what it remembers across requests: assignment cursors)."""
        return self.uow.runtime.services["rules"]

    @property
    def formdef(self) -> Any:
        # the unit of work, its app and the form are fixed for a run: looked up once
        fd = self._formdef
        if fd is _UNSET:
            fd = self._formdef = self.records.form(self.uow.app, self.form) if self.form else None
        return fd

    @property
    def record_id(self) -> int | None:
        return self.record.get("id")

    # -- expressions -----------------------------------------------------
    def env(self) -> dict:
        if self._env is None:
            self._env = build_env(self, self.record, self.form)
        return self._env

    def invalidate(self) -> None:
        self._env = None

    def adopt_env(self, other: "RunContext") -> None:
        """Take over ``other``'s names for the expressions -- the next rule on the same record --
        instead of building them again: only ``event`` (and ``old``) are the rule's own."""
        env = other._env
        if (env is None or other.form != self.form or other.parent is not None or self.parent is not None
                or other.payload is not None or self.payload is not None or other.created is not None
                or self.created is not None or env.get("record") != self.record):
            return                         # (the names show a record as it was: built again)
        env["event"] = self.event
        if other.old != self.old:          # (the changed-rules after a create: ``old`` is theirs)
            if self.old is None:
                env.pop("old", None)
            else:
                env["old"] = dict(self.old)
        if other._ectx is not None and other.changed == self.changed and other.uow is self.uow:
            self._ectx = other._ectx       # (its exists() reads through the same unit of work)
        if env.get("record") is other.record:
            env["record"] = self.record    # (a form without links shows the record dict itself)
        self._env = env
        other._env = None                  # one owner: staging changes it in place

    def show_event(self) -> None:
        """``rc.event`` was replaced: show the new one to the expressions."""
        if self._env is not None:
            self._env["event"] = self.event

    def evaluate(self, expr: Any, env: Mapping | None = None) -> Any:
        if expr is None:
            return None
        env = self.env() if env is None else env
        if isinstance(expr, Lookup):
            return expr.evaluate_in(self, env)
        try:
            return expr.evaluate(env, self.eval_ctx())
        except ExpressionError as exc:
            raise ActionError(f"{getattr(exc, 'message', exc)}") from exc

    def eval_ctx(self) -> Any:
        """The expressions' context: one per unit of work and set of changed fields, shared by the
        runs of an event's rules (``changed()`` and ``exists()`` read nothing else)."""
        if self._ectx is None:
            self._ectx = RunContext.shared_eval_ctx(self.uow, self.changed, self.records)
        return self._ectx

    @staticmethod
    def shared_eval_ctx(uow: Any, changed: frozenset, records: Any) -> Any:
        """The context of :meth:`eval_ctx`, kept on ``uow`` per set of changed fields."""
        shared = uow.__dict__.get("_rule_contexts")
        if shared is None or shared[0] is not uow.now or shared[1] is not uow.app:
            shared = uow.__dict__["_rule_contexts"] = (uow.now, uow.app, {})
        got = shared[2].get(changed)
        if got is None:
            # the unit of work keeps this context, so ``exists()`` holds it by a weak reference: a
            # strong one would make a cycle, and every request's objects would wait for the
            # garbage collector instead of going when the request ends
            got = shared[2][changed] = uow.eval_context(changed=changed.__contains__,
                                                        exists=partial(_exists_in, weakref.ref(uow), records))
        return got

    def truthy(self, expr: Any, env: Mapping | None = None) -> bool:
        return bool(self.evaluate(expr, env))

    # -- users -----------------------------------------------------------
    def user(self, name: str | None) -> Any:
        return _user(self._users, self.uow, name)

    def linked(self, form: str, record_id: Any) -> dict | None:
        return load_linked(self._links, self.records, self.uow, form, record_id)

    def forget_link(self, form: str, record_id: Any) -> None:
        self._links.pop((form, record_id), None)

    # -- staging changes to the triggering record ------------------------
    def stage(self, field: str, value: Any) -> None:
        value = plain(value)
        if field in ("owner", "state"):
            self.pending_system[field] = value
        else:
            self.pending[field] = value
        self.record[field] = value
        env = self._env
        if env is None:
            return
        # change it in the names the expressions see instead of building them all again
        shown = value
        if field in _link_fields(self):
            shown = _link_value(self, field, value)
            if shown is _REBUILD:
                self.invalidate()
                return
        env[field] = shown
        view = env.get("record")
        if isinstance(view, dict) and view is not self.record:
            view[field] = shown
        if field == "owner":
            env["owner_user"] = _owner_user(self, value)

    def flush(self) -> dict:
        """Write staged values with one record update (which fires ``record.updated``)."""
        if (not (self.pending or self.pending_system) or self.form is None or self.record_id is None
                or self.trigger == "deleted"):      # the record is gone: nothing to write back
            self.pending.clear()
            self.pending_system.clear()
            return {}
        data = {k: jsonable(v) for k, v in self.pending.items()}
        system = dict(self.pending_system)
        self.pending.clear()
        self.pending_system.clear()
        try:
            fresh = self.records.update(self.sys, self.form, self.record_id, data, trusted=True, system_values=system or None)
        except RecordInvalid as exc:
            from . import who
            raise RecordInvalid([dict(e, message=f"{who(self.source)}: {e['message']}") for e in exc.errors]) from None
        self.record = dict(fresh)
        self.forget_link(self.form, self.record_id)
        self.invalidate()
        return {**data, **system}

    def reload(self) -> None:
        if self.form and self.record_id is not None:
            fresh = self.records.load(self.uow, self.form, self.record_id)
            if fresh is not None:
                self.record = fresh
                self.invalidate()


def _user(users: dict, uow: Any, name: str | None) -> Any:
    """The user ``name`` from the directory, once per run (``users``: the run's cache)."""
    if not name:
        return None
    if name not in users:
        users[name] = uow.runtime.directory.user(uow.conn, name)
    return users[name]


def _exists_in(uow_ref: Any, records: Any, form: str, conds: Mapping[str, Any]) -> bool:
    uow = uow_ref()
    if uow is None:        # (its run contexts hold the unit of work while they evaluate)
        raise ExpressionError("exists() was called after its request ended")
    return _exists(uow, records, form, conds)


def _exists(uow: Any, records: Any, form: str, conds: Mapping[str, Any]) -> bool:
    """``exists('service_order', vehicle=id, opened_at__gte=add_days(today(), -7))``.

    Criteria are equalities; a ``__gt``/``__gte``/``__lt``/``__lte``/``__ne`` suffix compares instead.
    """
    try:
        fd = records.form(uow.app, form)
    except LoomError:
        raise ExpressionError(f"exists(): unknown form '{form}'") from None
    table = records.table(uow.app, form)
    q = select(table.c.id)
    for key, value in (conds or {}).items():
        field, _, op = str(key).partition("__")
        value = plain(value)
        f = fd.fields.get(field)
        if field not in table.c:
            raise ExpressionError(f"exists(): form '{form}' has no field '{field}'")
        if op not in ("", "eq", "ne", "gt", "gte", "lt", "lte"):
            raise ExpressionError(f"exists(): unknown comparison '__{op}'; use __gt, __gte, __lt, __lte or __ne")
        if f is not None and f.pii:
            if op not in ("", "eq"):
                raise ExpressionError(f"exists(): '{field}' is personal data: only equality is possible")
            q = q.where(table.c[f"{field}__bi"] == uow.runtime.keyring.blind_index(str(value)))
            continue
        col = table.c[field]
        if value is None:
            q = q.where(col.is_(None) if op in ("", "eq") else col.is_not(None))
            continue
        if isinstance(value, dt.datetime) or (f is not None and f.type == "datetime" and isinstance(value, dt.date)):
            from engine.clock import to_db
            if not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time(0), tzinfo=uow.app.tz)
            v = to_db(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
        else:
            v = f.ftype.to_db(value, f.spec) if f is not None else value
        q = q.where({"": col == v, "eq": col == v, "ne": col != v, "gt": col > v, "gte": col >= v,
                     "lt": col < v, "lte": col <= v}[op])
    return uow.conn.execute(q.limit(1)).first() is not None


_REBUILD = object()


def _link_value(rc: RunContext, field: str, value: Any) -> Any:
    """What the expressions see for a link or user field just staged (as ``build_env`` shows it:
    a link as its record, a user as the name), or ``_REBUILD`` for a link to a form the app
    doesn't have, which only a fresh environment shows right."""
    target = dict(rc.records.link_fields(rc.uow.app, rc.formdef)).get(field)
    if target is None:
        return value if field not in rc.formdef.fields or rc.formdef.fields[field].type != "link" else _REBUILD
    if value is None or isinstance(value, bool):
        return value
    ref = link_ref(rc, target, value)
    return value if ref is None else ref          # not an id (a look-up left to the INSERT): as it is


def _owner_user(rc: RunContext, owner_name: Any) -> Any:
    """``owner_user``: the owner's attributes, read from the user directory on first use."""
    if not owner_name:
        return None
    # (not a closure over ``rc``: the names it goes into belong to ``rc``, and that cycle would
    # leave every run's objects to the garbage collector)
    return LazyMapping(partial(_user_env, rc._users, rc.uow, owner_name))


def _user_env(users: dict, uow: Any, name: str) -> Mapping | None:
    user = _user(users, uow, name)
    return user.env() if user is not None else None


def _link_fields(rc: RunContext) -> frozenset:
    """Fields whose value the expression names show as something else (a linked record)."""
    fd = rc.formdef
    if fd is None:
        return frozenset()
    got = getattr(fd, "_rules_link_names", None)
    if got is None:
        got = frozenset(n for n, f in fd.fields.items() if f.type in ("link", "user"))
        try:
            object.__setattr__(fd, "_rules_link_names", got)
        except (AttributeError, TypeError):
            return got
    return got


_AS_IS = frozenset((str, int, float, bool, type(None)))    # exact types: a LinkRef is an int subclass


def jsonable(value: Any) -> Any:
    if type(value) in _AS_IS:
        return value
    if isinstance(value, LinkRef):
        return int(value)
    if isinstance(value, DeferredLookup):     # for a log line: the id it found, once it is known
        return value.value if value.resolved else value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def build_env(rc: RunContext, record: Mapping[str, Any], form: str | None) -> dict:
    """The names a rule's expressions see: the record's fields, links one hop, and the rule roots."""
    uow = rc.uow
    if form is not None:
        fd = rc.records.form(uow.app, form)
        env = rc.records.env(uow, fd, record, rc.old, links=False)     # link_env shows the links
        link_env(rc, fd, env, record)
    else:
        fd = None
        env = {"record": dict(record), "current_user": uow.user.env(), "settings": dict(uow.app.settings)}
    env["owner_user"] = _owner_user(rc, record.get("owner"))
    env["event"] = rc.event
    env["payload"] = rc.payload if rc.payload is not None else {}
    env["created"] = rc.created
    env["app"] = {"name": uow.app.name, "timezone": uow.app.timezone, "title": dict(uow.app.title)}
    if rc.parent is not None:
        env["source"] = rc.parent.env().get("record")
    return env
