"""The record service: the only way records are read and written.

Server-side validation here is the single source of truth -- the JSON API,
the HTML forms, Excel imports and the rules engine all come through it and
get the same per-field errors.  Every write happens inside the caller's
unit of work, is recorded in the record's history, and publishes an event
(``record.created`` / ``record.updated`` / ``record.deleted``) that the rules
and flows engines react to in the same transaction.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.sql import ColumnElement, Select

from engine import optimistic
from engine import platform as P
from engine.clock import from_db, to_db
from engine.crypto import mask
from engine.db import storable_id
from engine.definitions import AppDef
from engine.errors import Forbidden, NotFound, RecordInvalid
from engine.events import Event
from engine.later import execute_row, made_here, write_later
from engine.expressions import ExpressionError
from engine.uow import MAX_DEPTH, UnitOfWork

from .access import Grant, grant, row_filter_sql
from .attachments import attach_files, file_field_names, only_ids, resolve_files
from .fieldtypes import FieldValueError, get_type
from .model import SYSTEM_COLUMNS, FieldDef, FormDef
from .sequences import allocate
from .tables import bi_column, build_tables, child_forms

MAX_LIMIT = 500
MAX_OFFSET = 2**62   # past any table's end; larger offsets overflow the driver's 64-bit bind


def _msg(uow: UnitOfWork, text: Mapping[str, str] | str) -> str:
    if isinstance(text, str):
        return text
    return text.get(uow.lang) or text.get("zh") or text.get("en") or ""


# the type a system column's ?filter parses with
_SYSTEM_FILTER_TYPES = {"id": "number", "created_at": "datetime", "updated_at": "datetime",
                        "created_by": "text", "owner": "text", "state": "text"}


def _not_again(errors: list[dict], more: list[dict]) -> list[dict]:
    """The record's checks, less those on a field whose value was already refused: a note four
    characters long is 'too short', not also 'required' (the refused value never reached the record)."""
    refused = {e.get("field") for e in errors}
    return [e for e in more if e.get("field") is None or e.get("field") not in refused]


def _err(field: str | None, code: str, message: str) -> dict:
    return {"field": field, "code": code, "message": message}


def _bilingual(zh: str, en: str) -> dict:
    return {"zh": zh, "en": en}


class Records:
    """Create, read, update, delete and list records of any form."""

    def __init__(self, runtime: Any):
        self.rt = runtime
        self._tables: dict[str, tuple[dict[str, Table], set[str]]] = {}
        self._lookup_fields: dict[tuple, FieldDef] = {}
        self._trees: dict[tuple, Any] = {}
        self._specs: dict[tuple, tuple] = {}
        self._system_specs: dict[str, dict] = {}       # app digest -> the system columns' filter spec
        self._file_fields: dict[tuple, tuple[str, ...]] = {}
        self._link_fields: dict[tuple, tuple[tuple[str, str], ...]] = {}
        self._link_aliases: dict[tuple, Any] = {}      # (app digest, form, link field) -> its join alias
        # statements built once per (app digest, form): building a Core statement and its bind
        # parameters on every request was a visible share of an API create
        self._statements: dict[tuple, Any] = {}

    # -- definitions and tables ------------------------------------------
    def tables(self, app: AppDef) -> dict[str, Table]:
        cached = self._tables.get(app.digest)
        if cached is None:
            _, tables = build_tables(app.forms)
            for form in app.forms.values():
                for f in form.fields.values():
                    target = self.lookup_target(app, form, f)
                    if target is not None:
                        self._lookup_fields[(form.app, form.name, f.name)] = target
            cached = (tables, child_forms(app.forms))
            self._tables[app.digest] = cached
        return cached[0]

    def table(self, app: AppDef, form: str) -> Table:
        return self.tables(app)[form]

    def form(self, app: AppDef, name: str) -> FormDef:
        fd = app.forms.get(name)
        if fd is None:
            raise NotFound(f"no form '{name}' in app '{app.name}'")
        return fd

    # -- value conversion ------------------------------------------------
    def _encode(self, f: FieldDef, value: Any) -> dict[str, Any]:
        """Python value -> column values (ciphertext + blind index for PII)."""
        if value is None:
            return {f.name: None, **({bi_column(f.name): None} if f.pii else {})}
        if f.pii:
            plain = str(value)
            return {f.name: self.rt.keyring.encrypt(plain), bi_column(f.name): self.rt.keyring.blind_index(plain)}
        return {f.name: f.ftype.to_db(value, f.spec)}

    def decode(self, form: FormDef, row: Mapping[str, Any], app: AppDef | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        for col in SYSTEM_COLUMNS:
            v = row.get(col)
            rec[col] = from_db(v) if isinstance(v, dt.datetime) else v
        if "parent_id" in row:
            rec["parent_id"] = row["parent_id"]
        for f in form.stored_fields():
            v = row.get(f.name)
            if v is not None and f.pii:
                v = self.rt.keyring.decrypt(v)
            rec[f.name] = f.ftype.from_db(v, f.spec) if v is not None else None
        for f in form.fields.values():
            if f.type == "lookup" and f.name in row:
                target = self._lookup_fields.get((form.app, form.name, f.name))
                v = row[f.name]
                if v is not None and target is not None:
                    v = self.rt.keyring.decrypt(v) if target.pii else v
                    v = target.ftype.from_db(v, target.spec)
                rec[f.name] = v
        return rec

    def to_json(self, uow: UnitOfWork, form: FormDef, rec: Mapping[str, Any], g: Grant | None = None) -> dict:
        """What a user sees: hidden fields removed, PII masked without ``view_pii``."""
        g = g or grant(form, uow.user, "read")
        show_pii = self.can_view_pii(uow)
        out: dict[str, Any] = {}
        for col in SYSTEM_COLUMNS:
            v = rec.get(col)
            out[col] = _iso(v) if isinstance(v, dt.datetime) else v
        for name, f in form.fields.items():
            if name in g.hidden:
                continue
            if f.type == "formula" and not f.stored and f.formula is not None:
                try:
                    rec = {**rec, name: f.formula.evaluate(self.env(uow, form, rec), uow.eval_context())}
                except ExpressionError:
                    rec = {**rec, name: None}
            if name not in rec:
                continue
            v = rec[name]
            if f.type == "lookup":
                target = self._lookup_fields.get((form.app, form.name, name))
                if v is not None and target is not None:
                    out[name] = mask(str(v)) if target.pii and not show_pii else target.ftype.to_json(v, target.spec)
                else:
                    out[name] = None
                continue
            if v is not None and f.pii and not show_pii:
                out[name] = mask(str(v))
            else:
                out[name] = f.ftype.to_json(v, f.spec) if v is not None else None
        return out

    def can_view_pii(self, uow: UnitOfWork) -> bool:
        if uow.user.is_system:
            return True
        return any("view_pii" in uow.app.roles[r].permissions for r in uow.user.roles if r in uow.app.roles)

    # -- expression environment -----------------------------------------
    def env(self, uow: UnitOfWork, form: FormDef, rec: Mapping[str, Any], old: Mapping[str, Any] | None = None,
            pending: "_PendingLookups | None" = None, links: bool = True) -> dict:
        """The names a form's expressions see for ``rec``.  ``pending``: link fields of a record about
        to be inserted whose look-up is left to the INSERT -- reading one runs it now.  ``links=False``:
        link ids are left as they are, for a caller that shows them its own way (the rules)."""
        data = dict(rec)
        for name, target in self.link_fields(uow.app, form) if links else ():
            if isinstance(rec.get(name), int):
                data[name] = self.linked(uow, target, rec[name])
        data["record"] = rec
        if pending:
            data = _Resolving(data, pending, linked=True)
            data["record"] = _Resolving(rec, pending, linked=False)
        data["current_user"] = uow.user.env()
        data["settings"] = dict(uow.app.settings)
        if old is not None:
            data["old"] = dict(old)
        return data

    def linked(self, uow: UnitOfWork, target: str, record_id: int) -> "LinkedRecord":
        """A link's value in an expression: the id, and the linked record's fields on first use."""
        return LinkedRecord(record_id, lambda rid, t=target: self.load(uow.as_system(), t, rid))

    def link_fields(self, app: AppDef, form: FormDef) -> tuple:
        """(field, target form) of the form's link fields, worked out once per app version."""
        key = (app.digest, form.name)
        got = self._link_fields.get(key)
        if got is None:
            got = self._link_fields[key] = tuple((n, f.target_form) for n, f in form.fields.items()
                                                if f.type == "link" and f.target_form in app.forms)
        return got

    def resolver(self, uow: UnitOfWork, form: FormDef, table: Table | None = None, joins: dict | None = None):
        """Map expression names to SQL for ``Expression.to_sql``.

        ``link.field`` becomes a column of the linked table: through a LEFT
        JOIN when the caller collects ``joins`` (link -> alias; the planner can
        use indexes), else a correlated subquery.
        """
        table = table if table is not None else self.table(uow.app, form.name)
        user_env = uow.user.env()
        tables = self.tables(uow.app)

        def resolve(path: tuple):
            head = path[0]
            if head == "current_user":
                return user_env.get(path[1]) if len(path) > 1 else uow.user.username
            if head == "record":
                path = path[1:]
                head = path[0]
            if len(path) == 1:
                f = form.fields.get(head)
                if f is not None and f.pii:
                    raise ExpressionError(f"'{head}' is personal data (pii) and cannot be compared in a database filter")
                return table.c[head]
            link = form.fields[head]
            target = tables[link.target_form]
            if joins is not None:
                if head not in joins:
                    joins[head] = self._link_alias(uow.app, form, head, target)
                return joins[head].c[path[1]]
            return select(target.c[path[1]]).where(target.c.id == table.c[head]).scalar_subquery()
        return resolve

    def _link_alias(self, app: AppDef, form: FormDef, link: str, target: Table) -> Any:
        """The alias a row filter joins ``link``'s table under, made once per app version: an alias
        is an immutable part of a query, and making it copies all the target's columns (and left
        them in reference cycles) on every filtered read."""
        key = (app.digest, form.name, link)
        got = self._link_aliases.get(key)
        if got is None or got.element is not target:
            if len(self._link_aliases) > 2000:
                self._link_aliases.clear()
            got = self._link_aliases[key] = target.alias(f"link_{link}")
        return got

    # -- reading ---------------------------------------------------------
    def readable(self, uow: UnitOfWork, form: FormDef, action: str = "read") -> tuple[Select, Grant]:
        """``SELECT * FROM form WHERE <user may read>``: the base of lists, reports and exports."""
        g = grant(form, uow.user, action)
        if not g.allowed:
            raise Forbidden(f"you may not {action} {form.label.get('en') or form.name} records")
        table = self.table(uow.app, form.name)
        q = self.base_select(uow.app, form, table)
        if not g.all_rows:
            joins: dict = {}
            q = q.where(row_filter_sql(g, self.resolver(uow, form, table, joins), uow.conn.dialect.name, ctx=uow.eval_context()))
            if joins:   # links are many-to-one, so joining them never multiplies rows
                source = table
                for link, alias in joins.items():
                    source = source.outerjoin(alias, alias.c.id == table.c[link])
                q = q.select_from(source)
        return q, g

    def get(self, uow: UnitOfWork, form_name: str, record_id: int, action: str = "read") -> dict:
        """The record as Python values, or NotFound (also when the user may not read it)."""
        form = self.form(uow.app, form_name)
        q, _ = self.readable(uow, form, action)
        table = self.table(uow.app, form.name)
        if not storable_id(record_id):   # a path id past BIGINT: no such record (the driver would raise)
            raise NotFound(f"{form.name} {record_id} not found")
        row = uow.conn.execute(q.where(table.c.id == record_id)).mappings().first()
        if row is None:
            raise NotFound(f"{form.name} {record_id} not found")
        return self.decode(form, row)

    def load(self, uow: UnitOfWork, form_name: str, record_id: int) -> dict | None:
        """Unchecked read for engines acting as the system."""
        form = self.form(uow.app, form_name)
        table = self.table(uow.app, form.name)
        if not storable_id(record_id):
            return None
        key = ("load", uow.app.digest, form.name)
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = self.base_select(uow.app, form, table).where(table.c.id == bindparam("record_id"))
        row = uow.conn.execute(stmt, {"record_id": record_id}).mappings().first()
        return self.decode(form, row) if row else None

    @staticmethod
    def created_here(uow: UnitOfWork, form_name: str, record_id: Any) -> bool:
        """Whether the record was inserted by this (PostgreSQL write) transaction -- so no other
        transaction can have written rows keyed by its id.  False when not known (SQLite)."""
        return record_id is not None and made_here(uow.conn, ("record", uow.app.name, form_name, record_id))

    def base_select(self, app: AppDef, form: FormDef, table: Table) -> Select:
        """``SELECT *`` plus each lookup field as a correlated subquery (one query, no N+1)."""
        extra = []
        for f in form.fields.values():
            target = self.lookup_target(app, form, f)
            if target is not None:
                link = form.fields[f.spec["via"]]
                tt = self.table(app, link.target_form)
                extra.append(select(tt.c[target.name]).where(tt.c.id == table.c[link.name])
                             .scalar_subquery().label(f.name))
        return select(table, *extra)

    @staticmethod
    def lookup_target(app: AppDef, form: FormDef, f: FieldDef) -> FieldDef | None:
        """The field a lookup shows (``plate`` via ``vehicle``), if it is a stored field."""
        if f.type != "lookup":
            return None
        link = form.fields.get(f.spec.get("via"))
        target_form = app.forms.get(link.target_form) if link is not None else None
        target = target_form.fields.get(f.spec.get("field")) if target_form is not None else None
        return target if target is not None and target.stored else None

    def list(self, uow: UnitOfWork, form_name: str, *, filters: Mapping[str, str] | None = None, q: str | None = None,
             order: str | None = None, limit: int = 50, offset: int = 0, count: bool = True) -> tuple[list[dict], int | None]:
        form = self.form(uow.app, form_name)
        base, g = self.readable(uow, form)
        table = self.table(uow.app, form.name)
        conds = self._filter_conditions(uow, form, table, filters or {}, g)
        if q:
            conds.append(self._search_condition(form, table, q))
        if conds:
            base = base.where(and_(*conds))
        total = None
        if count:
            total = uow.conn.execute(select(func.count()).select_from(base.subquery())).scalar()
        order = order or form.list_order
        col_name = order.lstrip("-")
        if col_name not in table.c or (col_name in form.fields and form.fields[col_name].pii):
            raise RecordInvalid([_err(None, "bad_order", f"cannot sort by '{col_name}'")])
        col = table.c[col_name]
        base = base.order_by(col.desc() if order.startswith("-") else col.asc(), table.c.id.desc())
        limit = max(1, min(int(limit), MAX_LIMIT))
        rows = uow.conn.execute(base.limit(limit).offset(min(max(0, int(offset)), MAX_OFFSET))).mappings().all()
        return [self.decode(form, r) for r in rows], total

    def _filter_conditions(self, uow, form: FormDef, table: Table, filters: Mapping[str, str], g: Grant) -> list:
        """``?field__op=value`` -> SQL conditions.  Values are parsed by the field's type with the
        app's timezone (``assigned_at__gte=2026-11-23`` is from the start of that day in the app's
        timezone, as the record's own dates are entered); the system columns by the type they are
        (``id`` a number, ``created_at``/``updated_at`` a datetime, the rest text).  A value that
        does not parse is a 422 naming the filter, never a database error."""
        conds: list[ColumnElement] = []
        for key, raw in filters.items():
            name, _, op = key.partition("__")
            op = op or "eq"
            if name in SYSTEM_COLUMNS:
                ftype, spec = get_type(_SYSTEM_FILTER_TYPES[name]), self._system_filter_spec(uow.app)
            else:
                f = form.fields.get(name)
                if f is None or not f.stored or name in g.hidden:
                    raise RecordInvalid([_err(name, "unknown_field", f"cannot filter by '{name}': no such field")])
                ftype, spec = f.ftype, self.parse_spec(uow.app, f)
                if f.pii and op not in ("eq", "empty"):
                    raise RecordInvalid([_err(name, "bad_operator", f"'{name}' is personal data: only exact match is possible")])
            if op not in ftype.filter_ops and op != "eq":
                raise RecordInvalid([_err(name, "bad_operator", f"'{op}' is not a filter for {ftype.name} fields; use one of: {', '.join(ftype.filter_ops)}")])
            if op == "empty":
                conds.append(table.c[name].is_(None) if str(raw).lower() in ("1", "true", "yes") else table.c[name].is_not(None))
                continue
            try:
                value = ftype.parse_filter(op, raw, spec)
            except FieldValueError as exc:
                raise RecordInvalid([_err(name, exc.code, _msg(uow, exc.message))]) from None
            if value is None and op not in ("eq", "ne"):
                raise RecordInvalid([_err(name, "missing_value", _msg(uow, _bilingual(
                    f"筛选条件“{key}”缺少值，例如 {key}=…", f"the filter '{key}' needs a value, e.g. {key}=...")))])
            if name not in SYSTEM_COLUMNS and form.fields[name].pii:
                conds.append(table.c[name].is_(None) if value is None       # (``phone=``: no phone)
                             else table.c[bi_column(name)] == self.rt.keyring.blind_index(str(value)))
                continue
            special = ftype.filter_clause(table.c[name], op, value, spec)
            conds.append(special if special is not None else _op(table.c[name], op, value, name))
        return conds

    def _system_filter_spec(self, app: AppDef) -> dict:
        """What the system columns' filters parse with: the app's timezone (made once per app version)."""
        got = self._system_specs.get(app.digest)
        if got is None:
            got = self._system_specs[app.digest] = {"_tz": app.tz}
        return got

    def _search_condition(self, form: FormDef, table: Table, q: str) -> ColumnElement:
        q = q.strip()[:100]
        clauses = []
        for name in form.search:
            f = form.fields.get(name)
            if f is None:
                if name in table.c:
                    clauses.append(table.c[name] == q)
                continue
            if f.pii:
                clauses.append(table.c[bi_column(name)] == self.rt.keyring.blind_index(q))
            else:
                pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                clauses.append(table.c[name].like(pattern, escape="\\"))
        if q.isdigit():
            clauses.append(table.c.id == int(q))
        return or_(*clauses) if clauses else literal(False)

    # -- writing ---------------------------------------------------------
    def create(self, uow: UnitOfWork, form_name: str, data: Mapping[str, Any], *, trusted: bool = False,
               owner: str | None = None, parent_id: int | None = None, reclaim: frozenset[int] = frozenset()) -> dict:
        """A new record; ``reclaim``: ids of rows this one replaces (child rows), whose files it may take over.

        Run as one :func:`engine.optimistic.attempt`: if its rules chose the owner from a remembered
        assignment cursor that another transaction has moved meanwhile, the create is rolled back to
        its savepoint and done again with the cursor read under a lock."""
        notes = len(uow.notes)

        def attempt() -> dict:
            del uow.notes[notes:]
            return self._create(uow, form_name, data, trusted, owner, parent_id, reclaim)
        return optimistic.attempt(uow.conn, attempt)

    def _create(self, uow: UnitOfWork, form_name: str, data: Mapping[str, Any], trusted: bool, owner: str | None,
                parent_id: int | None, reclaim: frozenset[int]) -> dict:
        form = self.form(uow.app, form_name)
        g = grant(form, uow.user, "create")
        if not g.allowed and not trusted:
            raise Forbidden(f"you may not create {form.label.get('en') or form.name} records")
        table = self.table(uow.app, form.name)
        values, errors, children = self._parse_input(uow, form, data, g, trusted, creating=True)
        files = self._files_given(uow.app, form, values)
        if files:
            file_errors, files = resolve_files(uow, form, values, files, reclaim=reclaim)
            errors += file_errors
        rec = {c: None for c in SYSTEM_COLUMNS}
        rec.update({f: None for f in form.fields})
        rec.update(values)
        rec["created_at"] = rec["updated_at"] = uow.now
        rec["created_by"] = uow.user.username
        owner_given = data.get("owner") if trusted or uow.user.has_role("admin") else None
        rec["owner"] = owner or owner_given or None
        if "state" in data and trusted:
            rec["state"] = data["state"]
        self._apply_defaults(uow, form, rec, values)
        self._compute_formulas(uow, form, rec)
        by, verified, pending = self._before_insert(uow, form, rec, values, g) if not errors else ({}, {}, None)
        errors += _not_again(errors, self._check_record(uow, form, rec, None, table, verified=verified, pending=pending))
        if errors:
            raise RecordInvalid([dict(e, message=f"{by[e['field']]}: {e['message']}") if e.get("field") in by else e
                                 for e in errors])
        self._number(uow, form, rec)
        row = self._row_values(form, rec, form.fields.keys())
        row.update(created_at=to_db(uow.now), updated_at=to_db(uow.now), created_by=rec["created_by"],
                   owner=rec["owner"], state=rec.get("state"))
        if parent_id is not None:
            row["parent_id"] = parent_id
        if pending:
            new_id = self._insert_deferred(uow, form, table, row, rec, pending.lookups)
        else:
            key = ("insert", uow.app.digest, form.name)
            insert = self._statements.get(key)
            if insert is None:
                insert = self._statements[key] = table.insert().returning(table.c.id)
            new_id = execute_row(uow.conn, insert, row)[0]
        rec["id"] = new_id
        made_here(uow.conn, ("record", uow.app.name, form.name, new_id), add=True)
        if files:
            attach_files(uow, files, new_id)
        for fname, rows in children.items():
            self._write_children(uow, form.fields[fname], new_id, rows, replace_existing=False)
        self._history(uow, form, new_id, "create", {k: [None, self._history_value(form, k, v)] for k, v in values.items() if v is not None})
        self._publish(uow, Event("record.created", uow.app.name, form.name, rec, changed=frozenset(values)))
        return self.load(uow, form.name, new_id) or rec

    def update(self, uow: UnitOfWork, form_name: str, record_id: int, data: Mapping[str, Any], *,
               trusted: bool = False, system_values: Mapping[str, Any] | None = None) -> dict:
        """Change fields; ``system_values`` sets ``owner``/``state`` (engines only)."""
        form = self.form(uow.app, form_name)
        if trusted:
            old = self.load(uow, form.name, record_id)
            if old is None:
                raise NotFound(f"{form.name} {record_id} not found")
            g = grant(form, uow.user, "update") if not uow.user.is_system else Grant(True, True, (), frozenset(), frozenset())
        else:
            old = self.get(uow, form.name, record_id, action="read")
            g = grant(form, uow.user, "update")
            if not g.allowed:
                raise Forbidden(f"you may not change {form.label.get('en') or form.name} records")
            self.get(uow, form.name, record_id, action="update")  # row-level update rights
        table = self.table(uow.app, form.name)
        values, errors, children = self._parse_input(uow, form, data, g, trusted, creating=False, old=old)
        files = self._files_given(uow.app, form, values)
        if files:
            file_errors, files = resolve_files(uow, form, values, files, record_id=record_id)
            errors += file_errors
        rec = dict(old)
        rec.update(values)
        for key in ("owner", "state"):
            if system_values and key in system_values:
                rec[key] = system_values[key]
        if not trusted and "owner" in data and uow.user.has_role("admin"):
            rec["owner"] = data["owner"] or None
        self._compute_formulas(uow, form, rec)
        changed = {k for k in form.fields if rec.get(k) != old.get(k)} | {k for k in ("owner", "state") if rec.get(k) != old.get(k)}
        errors += _not_again(errors, self._check_record(uow, form, rec, old, table, only_changed=changed))
        if errors:
            raise RecordInvalid(errors)
        if not changed and not children:
            return old
        row = self._row_values(form, rec, [k for k in changed if k in form.fields])
        for key in ("owner", "state"):
            if key in changed:
                row[key] = rec[key]
        rec["updated_at"] = uow.now
        row["updated_at"] = to_db(uow.now)
        uow.conn.execute(update(table).where(table.c.id == record_id).values(**row))
        if files:
            attach_files(uow, files, record_id)
        for fname, rows in children.items():
            self._write_children(uow, form.fields[fname], record_id, rows, replace_existing=True)
        self._history(uow, form, record_id, "update",
                      {k: [self._history_value(form, k, old.get(k)), self._history_value(form, k, rec.get(k))] for k in sorted(changed)})
        self._publish(uow, Event("record.updated", uow.app.name, form.name, rec, old=old, changed=frozenset(changed)))
        return self.load(uow, form.name, record_id) or rec

    def delete(self, uow: UnitOfWork, form_name: str, record_id: int, *, trusted: bool = False) -> None:
        form = self.form(uow.app, form_name)
        if trusted:
            old = self.load(uow, form.name, record_id)
            if old is None:
                raise NotFound(f"{form.name} {record_id} not found")
        else:
            self.get(uow, form.name, record_id)          # 404 if not readable
            old = self.get(uow, form.name, record_id, action="delete")
        table = self.table(uow.app, form.name)
        children = child_forms(uow.app.forms)
        for f in form.fields.values():
            if f.type == "child_table" and f.target_form in children:
                ct = self.table(uow.app, f.target_form)
                uow.conn.execute(ct.delete().where(ct.c.parent_id == record_id))
        uow.conn.execute(table.delete().where(table.c.id == record_id))
        self._history(uow, form, record_id, "delete", {})
        self._publish(uow, Event("record.deleted", uow.app.name, form.name, old))

    # -- internals -------------------------------------------------------
    def _files_given(self, app: AppDef, form: FormDef, values: Mapping[str, Any]) -> list[str]:
        """The file fields among ``values`` (an empty list, at the cost of a dict lookup, for forms without any)."""
        key = (app.digest, form.name)
        names = self._file_fields.get(key)
        if names is None:
            names = self._file_fields[key] = file_field_names(form)
        return [n for n in names if n in values] if names else []

    def _before_insert(self, uow: UnitOfWork, form: FormDef, rec: dict, values: Mapping[str, Any], g: Grant) -> dict:
        """``record.saving``: the rules' pre-save phase fills in fields of the record about to be
        inserted (score, owner...), so it is inserted once instead of inserted and then updated.
        Handlers put ``event.data['set']`` (field -> JSON value, parsed like trusted input),
        ``['system']`` (owner/state), ``['by']`` (field -> who set it, to name it in errors) and
        ``['verified']`` (link field -> the form a lookup in this transaction found its record in) and
        ``['deferred']`` (link field -> a look-up whose SELECT goes into the INSERT, see ``_insert_deferred``).
        Returns ``(by, verified, pending)``.  The record is checked afterwards with everything else."""
        if uow.depth >= MAX_DEPTH:
            return {}, {}, None           # _publish reports the loop after the insert is refused
        event = Event("record.saving", uow.app.name, form.name, rec, changed=frozenset(values))
        self.rt.bus.publish(event, uow.deeper())
        if not event.data:
            return {}, {}, None
        by = event.data.get("by") or {}
        parsed, errors, _ = self._parse_input(uow, form, event.data.get("set") or {}, g, True, creating=True)
        if errors:
            raise RecordInvalid([dict(e, message=f"{by.get(e.get('field'), 'rule')}: {e['message']}") for e in errors])
        rec.update(parsed)
        rec.update(event.data.get("system") or {})
        verified = dict(event.data.get("verified") or {})
        pending = _PendingLookups(self, uow, form, rec, dict(event.data.get("deferred") or {}), verified)
        self._compute_formulas(uow, form, rec, pending)
        return by, verified, pending

    def _insert_deferred(self, uow: UnitOfWork, form: FormDef, table: Table, row: dict, rec: dict,
                         deferred: Mapping[str, Any]) -> int:
        """INSERT with link fields whose look-up the rules left to the database (``rules.phases``): each
        is a ``(SELECT id ... LIMIT 1)`` subquery of the INSERT, its result read back with the new id --
        no round trip of its own.  Nothing before the INSERT read those fields (a check that does runs
        the look-up at once: ``_PendingLookups``), and a look-up finds a record that exists."""
        names = tuple(sorted(deferred))
        key = ("insert", uow.app.digest, form.name, tuple((n, id(deferred[n].query)) for n in names))
        insert = self._statements.get(key)
        if insert is None:
            insert = self._statements[key] = (
                table.insert().values({n: deferred[n].query.scalar_subquery() for n in names})
                .returning(table.c.id, *(table.c[n] for n in names)))
        params = dict(row)
        for n in names:
            params.pop(n, None)
        for n in names:
            params.update(deferred[n].params)
        got = execute_row(uow.conn, insert, params)
        for n, value in zip(names, got[1:]):
            rec[n] = value
            deferred[n].resolve(value)
        return got[0]

    def _publish(self, uow: UnitOfWork, event: Event) -> None:
        if uow.depth >= MAX_DEPTH:
            raise RecordInvalid([_err(None, "loop", f"rules changed records {MAX_DEPTH} levels deep while handling "
                                      f"{event.form}; a rule probably triggers itself -- add a condition that stops it")])
        self.rt.bus.publish(event, uow.deeper())

    def _parse_input(self, uow, form: FormDef, data: Mapping[str, Any], g: Grant, trusted: bool, creating: bool,
                     old: Mapping[str, Any] | None = None) -> tuple[dict, list, dict]:
        values: dict[str, Any] = {}
        errors: list[dict] = []
        children: dict[str, list] = {}
        if not isinstance(data, Mapping):
            raise RecordInvalid([_err(None, "bad_body", "expected a JSON object of field values")])
        file_names = self._files_given(uow.app, form, data)
        for key, raw in data.items():
            if key in SYSTEM_COLUMNS:
                if key in ("owner", "state") or (key == "id" and old is not None and raw == old.get("id")):
                    continue  # owner/state are set by assignment and flows, not by plain edits
                if key in ("created_at", "updated_at", "created_by", "id"):
                    continue
            f = form.fields.get(key)
            if f is None:
                errors.append(_err(key, "unknown_field", f"unknown field '{key}'"))
                continue
            if not trusted:
                if key in g.hidden:
                    errors.append(_err(key, "forbidden", _msg(uow, _bilingual(f"无权修改字段“{_msg(uow, f.label)}”", f"you may not set '{key}'"))))
                    continue
                readonly = f.readonly or key in g.readonly
                if readonly:
                    if old is not None and raw == self._json_value(f, old.get(key)):
                        continue
                    if f.type in ("formula", "lookup", "auto_number") or readonly:
                        errors.append(_err(key, "readonly", _msg(uow, _bilingual(f"字段“{_msg(uow, f.label)}”为只读", f"'{key}' is read-only"))))
                        continue
            if f.type == "child_table":
                if raw is None:
                    raw = []
                if not isinstance(raw, list):
                    errors.append(_err(key, "invalid", _msg(uow, _bilingual("应为行列表", "expected a list of rows"))))
                    continue
                children[key] = raw
                continue
            if file_names and key in file_names:
                raw = only_ids(raw)     # what a file is comes from loom_files, not from the request
            try:
                values[key] = f.ftype.parse(raw, self.parse_spec(uow.app, f))
            except FieldValueError as exc:
                errors.append(_err(key, exc.code, _msg(uow, exc.message)))
        return values, errors, children

    def parse_spec(self, app: AppDef, f: FieldDef) -> dict:
        """The spec a field's parser takes: the field's own, with the app's timezone (and a cascade's
        options tree) -- made once per app version and field, not copied for every value parsed.
        Parsers only read it."""
        key = (app.digest, id(f))
        got = self._specs.get(key)
        if got is None or got[0] is not f:         # (the FieldDef kept: its id is never another's)
            spec = dict(f.spec)
            spec["_tz"] = app.tz
            if f.type == "cascade" and f.spec.get("options_file"):
                spec["_options_tree"] = self._options_tree(app, f.spec["options_file"])
            got = self._specs[key] = (f, spec)
        return got[1]

    def _json_value(self, f: FieldDef, value: Any) -> Any:
        return f.ftype.to_json(value, f.spec) if value is not None else None

    def _options_tree(self, app: AppDef, path: str) -> Any:
        """A cascade's options file, parsed once per package digest."""
        key = (app.digest, path)
        if key not in self._trees:
            from engine.yamlpos import load_yaml
            import json
            raw = app.package.text(path)
            self._trees[key] = json.loads(raw) if path.endswith(".json") else load_yaml(raw).data
        return self._trees[key]

    def _apply_defaults(self, uow, form: FormDef, rec: dict, given: Mapping[str, Any]) -> None:
        env = None
        for name, f in form.fields.items():
            if f.default is None or rec.get(name) is not None or name in given:
                continue
            env = env or self.env(uow, form, rec)
            try:
                value = f.default.evaluate(env, uow.eval_context())
                rec[name] = f.ftype.parse(_jsonable(value), self.parse_spec(uow.app, f)) if value is not None else None
            except (ExpressionError, FieldValueError):
                rec[name] = None

    def _compute_formulas(self, uow, form: FormDef, rec: dict, pending: "_PendingLookups | None" = None) -> None:
        env = None
        for name, f in form.formula_fields:
            env = env or self.env(uow, form, rec, pending=pending)
            try:
                rec[name] = f.formula.evaluate(env, uow.eval_context())
            except ExpressionError:
                rec[name] = None
            env[name] = rec[name]

    def _check_record(self, uow, form: FormDef, rec: dict, old: dict | None, table: Table,
                      only_changed: Iterable[str] | None = None, verified: Mapping[str, str] | None = None,
                      pending: "_PendingLookups | None" = None) -> list[dict]:
        """Required fields, validations, unique values, and that links and users exist.  ``verified``:
        link fields whose record a lookup found in this transaction (field -> form) -- not read again.
        ``pending``: link fields whose look-up waits for the INSERT (run now if a check reads one)."""
        errors: list[dict] = []
        env = self.env(uow, form, rec, old, pending=pending)
        ctx = uow.eval_context()

        def truthy(expr) -> bool:
            try:
                return bool(expr.evaluate(env, ctx))
            except ExpressionError:
                return False

        for name, f in form.fields.items():
            if f.type in ("formula", "lookup", "auto_number", "child_table"):
                continue
            visible = f.visible_when is None or truthy(f.visible_when)
            required = f.required or (f.required_when is not None and truthy(f.required_when))
            if visible and required and _empty(rec.get(name)):
                errors.append(_err(name, "required", _msg(uow, _bilingual(f"请填写“{_msg(uow, f.label)}”", f"{f.label.get('en') or name} is required"))))
        for v in form.validations:
            if v.when is not None and not truthy(v.when):
                continue
            try:
                ok = v.rule.evaluate(env, ctx)
            except ExpressionError:
                ok = False
            if not ok:
                errors.append(_err(v.field, "validation", _msg(uow, v.message)))
        changed = set(only_changed) if only_changed is not None else None
        for name, f in form.fields.items():
            if not f.unique or rec.get(name) is None or (changed is not None and name not in changed
                                                         and not (isinstance(f.unique, tuple) and set(f.unique) & changed)):
                continue
            col = table.c[bi_column(name)] if f.pii else table.c[name]
            value = self.rt.keyring.blind_index(str(rec[name])) if f.pii else f.ftype.to_db(rec[name], f.spec)
            cond = [col == value]
            if isinstance(f.unique, tuple):
                for scope in f.unique:
                    sv = rec.get(scope)
                    cond.append(table.c[scope].is_(None) if sv is None else table.c[scope] == (
                        form.fields[scope].ftype.to_db(sv, form.fields[scope].spec) if scope in form.fields else sv))
            if rec.get("id") is not None:
                cond.append(table.c.id != rec["id"])
            if uow.conn.execute(select(table.c.id).where(*cond).limit(1)).first():
                scope_txt = "" if not isinstance(f.unique, tuple) else "（同一" + "、".join(_msg(uow, form.fields[s].label) if s in form.fields else s for s in f.unique) + "内）"
                errors.append(_err(name, "unique", _msg(uow, _bilingual(
                    f"“{_msg(uow, f.label)}”已存在{scope_txt}，请检查是否重复录入",
                    f"another record already has this {f.label.get('en') or name}"))))
        tables = self.tables(uow.app)
        for name, f in form.fields.items():
            if (f.type == "link" and rec.get(name) is not None and (changed is None or name in changed)
                    and not (verified and verified.get(name) == f.target_form)):
                target = tables.get(f.target_form)
                if target is not None and not uow.conn.execute(select(target.c.id).where(target.c.id == rec[name])).first():
                    errors.append(_err(name, "not_found", _msg(uow, _bilingual(
                        f"“{_msg(uow, f.label)}”指向的记录不存在（编号 {rec[name]}）", f"{f.label.get('en') or name}: record {rec[name]} does not exist"))))
            if f.type == "user" and rec.get(name) and (changed is None or name in changed):
                if not uow.conn.execute(select(P.users.c.id).where(P.users.c.username == rec[name])).first():
                    errors.append(_err(name, "not_found", _msg(uow, _bilingual(f"用户“{rec[name]}”不存在", f"no user '{rec[name]}'"))))
        return errors

    def duplicates(self, uow: UnitOfWork, form_name: str, data: Mapping[str, Any], exclude_id: int | None = None) -> list[dict]:
        """Warnings before save: other records with the same phone/VIN/..."""
        form = self.form(uow.app, form_name)
        table = self.table(uow.app, form.name)
        found = []
        for name in form.duplicate_check:
            f = form.fields.get(name)
            raw = data.get(name)
            if f is None or raw in (None, ""):
                continue
            try:
                value = f.ftype.parse(raw, dict(f.spec))
            except FieldValueError:
                continue
            col = table.c[bi_column(name)] if f.pii else table.c[name]
            key = self.rt.keyring.blind_index(str(value)) if f.pii else f.ftype.to_db(value, f.spec)
            q = select(table.c.id).where(col == key)
            if exclude_id:
                q = q.where(table.c.id != exclude_id)
            ids = [r.id for r in uow.conn.execute(q.limit(5))]
            if ids:
                found.append({"field": name, "ids": ids, "message": _msg(uow, _bilingual(
                    f"已有相同“{_msg(uow, f.label)}”的记录：{', '.join(map(str, ids))}", f"records with the same {f.label.get('en') or name} exist: {', '.join(map(str, ids))}"))})
        return found

    def _number(self, uow, form: FormDef, rec: dict) -> None:
        """Fill auto_number fields from a gap-free per-key counter in this transaction."""
        for name, f in form.fields.items():
            if f.type != "auto_number" or rec.get(name):
                continue
            local = uow.now.astimezone(uow.app.tz)
            pattern = f.spec.get("pattern") or "{######}"
            key = f"{form.name}.{name}:{f.ftype.sequence_key(pattern, local)}"
            seq = allocate(uow.conn, uow.app.name, key)
            rec[name] = f.ftype.render_pattern(pattern, local, seq)

    def _row_values(self, form: FormDef, rec: Mapping[str, Any], names: Iterable[str]) -> dict:
        row: dict[str, Any] = {}
        for name in names:
            f = form.fields[name]
            if f.stored:
                row.update(self._encode(f, rec.get(name)))
        return row

    def _write_children(self, uow, f: FieldDef, parent_id: int, rows: list, replace_existing: bool) -> None:
        child = self.form(uow.app, f.target_form)
        ct = self.table(uow.app, child.name)
        reclaim: frozenset[int] = frozenset()
        if replace_existing:
            if self._files_given(uow.app, child, dict.fromkeys(child.fields)):   # their files move to the new rows
                reclaim = frozenset(r.id for r in uow.conn.execute(select(ct.c.id).where(ct.c.parent_id == parent_id)))
            uow.conn.execute(ct.delete().where(ct.c.parent_id == parent_id))
        errors = []
        for i, row in enumerate(rows):
            try:
                self.create(uow, child.name, row, trusted=True, parent_id=parent_id, reclaim=reclaim)
            except RecordInvalid as exc:
                errors += [_err(f"{f.name}[{i}].{e['field']}", e["code"], e["message"]) for e in exc.errors]
        if errors:
            raise RecordInvalid(errors)

    def children(self, uow, form: FormDef, field: str, parent_id: int) -> list[dict]:
        f = form.fields[field]
        child = self.form(uow.app, f.target_form)
        ct = self.table(uow.app, child.name)
        rows = uow.conn.execute(select(ct).where(ct.c.parent_id == parent_id).order_by(ct.c.id)).mappings().all()
        return [self.decode(child, r) for r in rows]

    def _history_value(self, form: FormDef, name: str, value: Any) -> Any:
        f = form.fields.get(name)
        if value is None:
            return None
        if f is not None and f.pii:
            return mask(str(value))
        if f is not None:
            return f.ftype.to_json(value, f.spec)
        return _iso(value) if isinstance(value, dt.datetime) else value

    def _history(self, uow, form: FormDef, record_id: int, kind: str, changes: dict, comment: str | None = None) -> None:
        self.add_history(uow, form.name, record_id, kind, changes, comment)

    def add_history(self, uow, form_name: str, record_id: int, kind: str, changes: dict | None = None, comment: str | None = None) -> None:
        """For other engines: a line on the record's timeline (transition, rule, message...).  A line
        is only recorded, never read back in the request: it rides along with the next statement."""
        write_later(uow.conn, P.HISTORY_INSERT, {"app": uow.app.name, "form": form_name, "record_id": record_id,
                                                 "at": to_db(uow.now), "actor": uow.user.username, "kind": kind,
                                                 "changes": changes or {}, "comment": comment})

    def history(self, uow, form_name: str, record_id: int, limit: int | None = None) -> list[dict]:
        """The record's history, oldest first; with ``limit``, only the newest ``limit`` entries (request paths)."""
        h = P.history
        q = select(h).where(h.c.app == uow.app.name, h.c.form == form_name, h.c.record_id == record_id)
        if limit is None:
            rows = uow.conn.execute(q.order_by(h.c.id)).mappings().all()
        else:
            rows = list(reversed(uow.conn.execute(q.order_by(h.c.id.desc()).limit(limit)).mappings().all()))
        return [{"at": _iso(from_db(r["at"])), "actor": r["actor"], "kind": r["kind"], "changes": _shown(r["kind"], r["changes"]),
                 "comment": r["comment"]} for r in rows]


def _shown(kind: str, changes: Any) -> Any:
    hidden = P.HIDDEN_CHANGES.get(kind)
    if hidden and isinstance(changes, dict) and any(k in changes for k in hidden):
        return {k: v for k, v in changes.items() if k not in hidden}
    return changes


class _PendingLookups:
    """Link fields of a record about to be inserted whose look-up the rules left to its INSERT
    (``rules.phases``): field -> the look-up (``query``, ``params``, ``resolve(value)``).  Until the
    INSERT the record holds None there; an expression of the form that reads one of them (a
    validation, a formula) runs its look-up at once, and it becomes an ordinary, verified value."""

    def __init__(self, records: "Records", uow: UnitOfWork, form: FormDef, rec: dict, lookups: dict, verified: dict):
        self.records, self.uow, self.form, self.rec = records, uow, form, rec
        self.lookups, self.verified = lookups, verified
        for name in lookups:
            rec[name] = None                  # whatever the input said, the rule's look-up decides

    def __bool__(self) -> bool:
        return bool(self.lookups)

    def __contains__(self, name: Any) -> bool:
        return name in self.lookups

    def resolve(self, name: str) -> Any:
        lookup = self.lookups.pop(name)
        value = self.uow.conn.execute(lookup.query, lookup.params).scalar()
        lookup.resolve(value)
        self.rec[name] = value
        if value is not None:
            self.verified[name] = self.form.fields[name].target_form
        return value


class _Resolving(dict):
    """Names for the checks of a record with pending look-ups: reading one of those fields runs its
    look-up (``_PendingLookups.resolve``) before the value is handed out."""

    def __init__(self, data: Mapping[str, Any], pending: _PendingLookups, linked: bool):
        super().__init__(data)
        self._pending, self._linked = pending, linked     # linked: show a link as its record (not ``record``)
        self._waiting = pending.lookups                   # (the look-ups not run yet: a name read is checked here)

    def _ready(self, key: Any) -> None:
        value = self._pending.resolve(key)
        if value is not None and self._linked:
            value = self._pending.records.linked(self._pending.uow, self._pending.form.fields[key].target_form, value)
        dict.__setitem__(self, key, value)

    def get(self, key: Any, default: Any = None) -> Any:
        # every name a check reads comes through here: one dict test for the usual case
        if key in self._waiting:
            self._ready(key)
        return dict.get(self, key, default)

    def __getitem__(self, key: Any) -> Any:
        if key in self._waiting:
            self._ready(key)
        return dict.__getitem__(self, key)


class LinkedRecord(Mapping):
    """A link field's value in an expression: equal to the linked id, and
    ``customer.tier`` reads the linked record (loaded once, on first use).

    Expressions only ever read items of it, which are plain data; the loader
    is not reachable from an expression (no attribute access exists there).
    """

    __slots__ = ("id", "_load", "_data")

    def __init__(self, record_id: int, load):
        self.id, self._load, self._data = record_id, load, None

    def _record(self) -> Mapping:
        if self._data is None:
            self._data = self._load(self.id) or {}
        return self._data

    def __getitem__(self, key):
        return self._record()[key]

    def get(self, key, default=None):
        # the expressions read names with get(): the mixin's try/except around [] costs more
        return self._record().get(key, default)

    def __iter__(self):
        return iter(self._record())

    def __len__(self):
        return len(self._record())

    def __eq__(self, other):
        return other == self.id if not isinstance(other, LinkedRecord) else other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"LinkedRecord({self.id})"


def _op(col, op: str, value: Any, name: str) -> ColumnElement:
    if op == "eq":
        return col.is_(None) if value is None else col == value
    if op == "ne":
        return col != value
    if op in ("lt", "lte", "gt", "gte"):
        return {"lt": col < value, "lte": col <= value, "gt": col > value, "gte": col >= value}[op]
    if op == "in":
        return col.in_(value if isinstance(value, (list, tuple)) else str(value).split(","))
    if op == "contains":
        return col.like(f"%{value}%")
    if op == "startswith":
        return col.like(f"{value}%")
    if op == "between":
        lo, hi = value if isinstance(value, (list, tuple)) else str(value).split(",", 1)
        return col.between(lo, hi)
    raise RecordInvalid([_err(name, "bad_operator", f"unknown filter operator '{op}'")])


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value
