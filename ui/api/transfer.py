"""JSON API: spreadsheet import (CSV/XLSX, dry run, all-or-nothing or skip bad rows), export, and import jobs.

``POST /api/apps/{app}/{form}/_import`` answers as it always has (200 with
the report, 422 with row/field errors) unless the caller adds ``async=1``:
then it answers 202 ``{"job": {...}}`` at once and the import runs in the
background (``engine.jobs``); ``GET /api/jobs/{id}`` reports ``status``
(queued|running|done|failed), ``processed``, ``total``, ``errors`` and
``result`` -- the body the synchronous call would have returned.  Async is
opt-in, not decided by file size, so existing clients keep their 200/422.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from engine import jobs as J
from engine.audit import audit
from engine.auth import User
from engine.errors import NotFound, RecordInvalid
from forms.transfer import (MAX_IMPORT_BYTES, check_size, count_rows, export_rows, import_form, import_records, to_csv,
                            to_xlsx)

from ..deps import current_user, language, runtime, unit_of_work

router = APIRouter()
files = APIRouter(prefix="/api/apps", tags=["import/export"])
job_routes = APIRouter(prefix="/api/jobs", tags=["jobs"])
RESERVED = {"q", "order", "format", "lang", "limit", "offset"}


def run_import(rt, app: str, form: str, user: User, lang: str, filename: str, blob: bytes, mode: str, dry_run: bool,
               handle: J.Handle | None = None) -> dict:
    """The import in one write transaction; returns the 200 body (RecordInvalid -> 422 / a failed job).

    With ``handle`` (a background job) progress is reported to it and the
    job's ``done`` row is written in the same transaction as the rows.
    """
    with unit_of_work(rt, app, user, lang, write=True) as uow:
        report = import_records(uow, form, filename, blob, mode=mode, dry_run=dry_run,
                                progress=handle.progress if handle is not None else None)
        if not dry_run:
            audit(uow.conn, uow.now, user.username, "records.import", app=app, form=form,
                  details={"file": filename, "inserted": report.inserted, "errors": len(report.errors),
                           **({"job": handle.id} if handle is not None else {})})
        body = {**report.as_dict(), "dry_run": dry_run, "mode": mode}
        if handle is not None:
            handle.finish_in(uow.conn, body, report.total, report.total)
    return body


def check_mode(mode: str) -> None:
    if mode not in ("all", "skip"):
        raise RecordInvalid([{"field": "mode", "code": "invalid",
                              "message": "mode 只能是 all 或 skip / mode must be 'all' or 'skip'"}])


def start_import_job(rt, app: str, form: str, user: User, lang: str, filename: str, blob: bytes, mode: str,
                     dry_run: bool) -> dict:
    """Check what can be checked now (app, form, permission, file readable), then queue the import."""
    check_size(blob)
    with unit_of_work(rt, app, user, lang) as uow:      # unknown app/form, no permission: answered now, not in the job
        import_form(uow, form)

    def work(handle: J.Handle):
        body = run_import(rt, app, form, user, lang, filename, blob, mode, dry_run, handle)
        return body, body["total"], body["total"]

    return J.runner(rt).submit("import", user, work, app=app, form=form, total=count_rows(filename, blob))


@files.post("/{app}/{form}/_import", summary="Import records from a .csv or .xlsx file",
            responses={202: {"description": "async=1: the job was queued; poll GET /api/jobs/{id}"}})
async def import_file(app: str, form: str, request: Request, file: UploadFile = File(...), mode: str = "all",
                      dry_run: bool = False, run_async: bool = Query(False, alias="async"),
                      user: User = Depends(current_user)):
    """``mode=all``: any bad row -> nothing written (422 with row/field errors).
    ``mode=skip``: good rows written, bad rows reported.  ``dry_run=true``: report only.
    ``async=1``: 202 ``{"job": {...}}`` now; the same report later from ``GET /api/jobs/{id}``."""
    check_mode(mode)
    rt = runtime(request)
    blob = await file.read(MAX_IMPORT_BYTES + 1)
    lang = language(request, user)
    name = file.filename or "upload.csv"
    if run_async:
        try:
            job = await run_in_threadpool(start_import_job, rt, app, form, user, lang, name, blob, mode, dry_run)
        except J.JobRejected as exc:
            return JSONResponse({"errors": [{"field": None, "code": "busy", "message": exc.message}]}, status_code=503,
                                headers={"Retry-After": "30"})
        return JSONResponse({"job": job}, status_code=202, headers={"Location": f"/api/jobs/{job['id']}"})
    # a thread, not the event loop: a big synchronous import must not stall every other request
    return await run_in_threadpool(run_import, rt, app, form, user, lang, name, blob, mode, dry_run)


@job_routes.get("/{job_id}", summary="A background job's status, progress and final report")
def get_job(job_id: str, request: Request, user: User = Depends(current_user)):
    """Only the user who started the job, or an admin, may read it (others get 404)."""
    job = J.runner(runtime(request)).get(job_id)
    if job is None or not J.visible_to(job, user):
        raise NotFound("job")
    return job


@files.get("/{app}/{form}/_export", summary="Export a list view as CSV or XLSX")
def export_file(app: str, form: str, request: Request, format: str = "csv", q: str | None = None,
                order: str | None = None, user: User = Depends(current_user)):
    rt = runtime(request)
    filters = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        from ui.pages.records import link_titles     # linked records named as the pages name them

        def titles(target: str, ids: set) -> dict:
            return {i: t for (_, i), t in link_titles(uow, target, ids, uow.lang).items()}
        header, rows = export_rows(uow, form, filters, q, order, titles=titles)
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


router.include_router(files)
router.include_router(job_routes)
