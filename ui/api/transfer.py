"""JSON API: spreadsheet import (CSV/XLSX, dry run, all-or-nothing or skip bad rows) and export."""
from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from engine.auth import User
from engine.audit import audit
from forms.transfer import MAX_IMPORT_BYTES, export_rows, import_records, to_csv, to_xlsx

from ..deps import current_user, language, runtime, unit_of_work

router = APIRouter(prefix="/api/apps", tags=["import/export"])
RESERVED = {"q", "order", "format", "lang", "limit", "offset"}


@router.post("/{app}/{form}/_import", summary="Import records from a .csv or .xlsx file")
async def import_file(app: str, form: str, request: Request, file: UploadFile = File(...), mode: str = "all",
                      dry_run: bool = False, user: User = Depends(current_user)):
    """``mode=all``: any bad row -> nothing written (422 with row/field errors).
    ``mode=skip``: good rows written, bad rows reported.  ``dry_run=true``: report only."""
    if mode not in ("all", "skip"):
        from engine.errors import RecordInvalid
        raise RecordInvalid([{"field": "mode", "code": "invalid", "message": "mode must be 'all' or 'skip'"}])
    rt = runtime(request)
    blob = await file.read(MAX_IMPORT_BYTES + 1)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        report = import_records(uow, form, file.filename or "upload.csv", blob, mode=mode, dry_run=dry_run)
        if not dry_run:
            audit(uow.conn, uow.now, user.username, "records.import", app=app, form=form,
                  details={"file": file.filename, "inserted": report.inserted, "errors": len(report.errors)})
    return {**report.as_dict(), "dry_run": dry_run, "mode": mode}


@router.get("/{app}/{form}/_export", summary="Export a list view as CSV or XLSX")
def export_file(app: str, form: str, request: Request, format: str = "csv", q: str | None = None,
                order: str | None = None, user: User = Depends(current_user)):
    rt = runtime(request)
    filters = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        header, rows = export_rows(uow, form, filters, q, order)
        if format == "xlsx":
            blob = to_xlsx(header, rows, form)
            media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            out = Response(blob, media_type=media)
        else:
            out = StreamingResponse(iter(list(to_csv(header, rows))), media_type="text/csv; charset=utf-8")
    with rt.db.write() as conn:
        audit(conn, rt.clock.now(), user.username, "records.export", app=app, form=form, details={"format": format, "filters": filters})
    out.headers["Content-Disposition"] = f'attachment; filename="{form}.{"xlsx" if format == "xlsx" else "csv"}"'
    return out
