"""JSON API for records (contract A3): list, create, read, update, delete."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from engine.auth import User
from engine.errors import RecordInvalid
from forms.comments import record_timeline

from ..audited import audit_created, audit_response, audited_read
from ..deps import api_token, current_user, language, runtime, signed_in_unit_of_work, unit_of_work

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


@router.post("/{app}/{form}", status_code=201, summary="Create a record")
def create_record(app: str, form: str, request: Request, data: dict[str, Any] = Body(...),
                  token: str = Depends(api_token)):
    """One connection, one transaction: the caller is authenticated inside it (``signed_in_unit_of_work``)."""
    rt = runtime(request)
    with signed_in_unit_of_work(request, app, token, write=True) as uow:
        svc = _records(rt)
        rec = svc.create(uow, form, data)
        fd = svc.form(uow.app, form)
        audit_created(uow, fd, rec, given=data)
        out = svc.to_json(uow, fd, rec)
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
        fd = svc.form(uow.app, form)
        audit_response(uow, fd, record_id)
        return svc.to_json(uow, fd, rec)


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
