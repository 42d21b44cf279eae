"""JSON API for records (contract A3): list, create, read, update, delete."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Iterator

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from engine.audit import audit
from engine.auth import User
from engine.errors import RecordInvalid
from engine.uow import UnitOfWork
from forms.access import grant
from forms.comments import record_timeline

from ..deps import api_token, current_user, installed_app, language, runtime, signed_in_unit_of_work, unit_of_work

router = APIRouter(prefix="/api/apps", tags=["records"])

RESERVED_QUERY = {"q", "limit", "offset", "order", "lang", "format", "count"}


def _records(rt):
    return rt.services["records"]


@router.get("/{app}/{form}", summary="List records")
def list_records(app: str, form: str, request: Request, user: User = Depends(current_user),
                 q: str | None = None, limit: int = 50, offset: int = 0, order: str | None = None):
    rt = runtime(request)
    filters = {k: v for k, v in request.query_params.items() if k not in RESERVED_QUERY}
    with audited_read(rt, app, form, user, language(request, user)) as read:
        uow, svc = read.uow, _records(rt)
        rows, total = svc.list(uow, form, filters=filters, q=q, order=order, limit=limit, offset=offset)
        items = [svc.to_json(uow, read.form, r, read.grant) for r in rows]
        read.served([r["id"] for r in rows])
    return {"items": items, "total": total, "limit": limit, "offset": offset}


class AuditedRead:
    """A read of one form's records in the transaction that audits it.

    Every read that shows personal data unmasked writes one ``pii.read`` audit
    row (who, form, record ids, which fields) *in the transaction of the read
    itself*, so "served" and "audited" are one unit of work: the route
    returns only after that transaction has committed, and if the audit row
    can't be written (or the commit fails) the request fails -- 500/503, no
    personal data -- and nothing is recorded either.

    Which fields a read shows unmasked is known before reading: the form's PII
    fields the caller's grant doesn't hide, lookups that show a PII field, and
    (``children``) the PII fields of its child tables -- and only if the caller
    may view PII at all, decided by the very predicate ``to_json`` masks with.
    So the transaction is chosen up front:

    * nothing to show unmasked (no PII in the form, or masked for this user):
      a plain read transaction that writes nothing -- on SQLite it runs beside
      the writer, as every read does;
    * otherwise a write transaction from the start.  SQLite can't safely turn
      a read snapshot into a writer (the upgrade fails with SQLITE_BUSY as
      soon as another write has committed since the read began), so the read
      takes the write lock for its duration, once -- before, it took a read
      transaction and then the write lock for the audit row, on a second
      connection.  On PostgreSQL it is an ordinary transaction.  A read that
      finds no records writes nothing in it.

    The route reports the ids it serves with ``served``; leaving an audited
    read without doing so is a bug and fails the request rather than serve
    personal data unaudited.
    """

    def __init__(self, uow, form, g, fields: list[str]):
        self.uow, self.form, self.grant, self.fields = uow, form, g, fields
        self.ids: list[int] | None = None

    def served(self, ids: list[int]) -> None:
        self.ids = list(ids)

    def _audit(self) -> None:
        if not self.fields:
            return
        if self.ids is None:
            raise RuntimeError(f"read of {self.form.app}.{self.form.name} shows personal data but reported no records")
        if self.ids:
            uow, ids = self.uow, self.ids
            audit(uow.conn, uow.now, uow.user.username, "pii.read", app=self.form.app, form=self.form.name,
                  record_id=ids[0] if len(ids) == 1 else None,
                  details={"fields": self.fields, "ids": ids[:500], "count": len(ids)})


def pii_shown(svc, uow: UnitOfWork, fd, g, children: bool = False) -> list[str]:
    """The fields of ``fd`` whose personal data a read shows this user unmasked (``table.field`` for child tables)."""
    if not svc.can_view_pii(uow):
        return []
    shown = []
    for name, f in fd.fields.items():
        if name in g.hidden:
            continue
        target = svc.lookup_target(uow.app, fd, f)
        if f.pii or (target is not None and target.pii):
            shown.append(name)
        elif children and f.type == "child_table":
            child = svc.form(uow.app, f.target_form)
            shown += [f"{name}.{c}" for c in pii_shown(svc, uow, child, grant(child, uow.user, "read"))]
    return shown


@contextlib.contextmanager
def audited_read(rt, app_name: str, form_name: str, user: User, lang: str, *, children: bool = False) -> Iterator[AuditedRead]:
    """An ``AuditedRead`` of ``app_name.form_name``: see its docstring."""
    svc = _records(rt)
    plan = UnitOfWork(rt, None, installed_app(rt, app_name, user), user, rt.clock.now(), lang=lang)  # no transaction yet
    fd = svc.form(plan.app, form_name)
    g = grant(fd, user, "read")
    fields = pii_shown(svc, plan, fd, g, children)
    with (rt.db.write() if fields else rt.db.read()) as conn:
        read = AuditedRead(replace(plan, conn=conn), fd, g, fields)
        yield read
        read._audit()


@router.post("/{app}/{form}", status_code=201, summary="Create a record")
def create_record(app: str, form: str, request: Request, data: dict[str, Any] = Body(...),
                  token: str = Depends(api_token)):
    """One connection, one transaction: the caller is authenticated inside it (``signed_in_unit_of_work``)."""
    rt = runtime(request)
    with signed_in_unit_of_work(request, app, token, write=True) as uow:
        svc = _records(rt)
        rec = svc.create(uow, form, data)
        out = svc.to_json(uow, svc.form(uow.app, form), rec)
        dups = svc.duplicates(uow, form, data, exclude_id=rec["id"])
    if dups:
        out["_warnings"] = dups
    return JSONResponse(out, status_code=201)


class _Rollback(Exception):
    """Raised to roll back a dry-run write."""


@router.post("/{app}/{form}/_check", summary="Validate without saving; duplicate warnings")
def check_record(app: str, form: str, request: Request, data: dict[str, Any] = Body(...),
                 user: User = Depends(current_user)):
    """Runs exactly the validation of create, in a transaction that is rolled back."""
    rt = runtime(request)
    result: dict = {}
    try:
        with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
            svc = _records(rt)
            errors: list = []
            try:
                svc.create(uow, form, data)
            except RecordInvalid as exc:
                errors = exc.errors
            result = {"ok": not errors, "errors": errors, "warnings": svc.duplicates(uow, form, data)}
            raise _Rollback()
    except _Rollback:
        pass
    return result


@router.get("/{app}/{form}/{record_id}", summary="Read a record")
def get_record(app: str, form: str, record_id: int, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with audited_read(rt, app, form, user, language(request, user), children=True) as read:
        uow, svc, fd = read.uow, _records(rt), read.form
        rec = svc.get(uow, form, record_id)
        out = svc.to_json(uow, fd, rec, read.grant)
        for name, f in fd.fields.items():
            if f.type == "child_table" and name not in read.grant.hidden:
                child = svc.form(uow.app, f.target_form)
                out[name] = [svc.to_json(uow, child, r) for r in svc.children(uow, fd, name, record_id)]
        read.served([record_id])
    return out


@router.patch("/{app}/{form}/{record_id}", summary="Change fields of a record")
def patch_record(app: str, form: str, record_id: int, request: Request, data: dict[str, Any] = Body(...),
                 user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        svc = _records(rt)
        rec = svc.update(uow, form, record_id, data)
        return svc.to_json(uow, svc.form(uow.app, form), rec)


@router.delete("/{app}/{form}/{record_id}", status_code=204, summary="Delete a record")
def delete_record(app: str, form: str, record_id: int, request: Request, user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        _records(rt).delete(uow, form, record_id)
    return Response(status_code=204)


@router.get("/{app}/{form}/{record_id}/history", summary="A record's timeline (history and comments)")
def record_history(app: str, form: str, record_id: int, request: Request, user: User = Depends(current_user),
                   limit: int = Query(100, ge=1, le=500)):
    """The newest ``limit`` entries, oldest first; ``more`` says older ones exist."""
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        _records(rt).get(uow, form, record_id)
        items, more = record_timeline(uow, form, record_id, limit)
        return {"items": items, "more": more}
