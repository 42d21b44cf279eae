"""The import page: upload a CSV/XLSX, watch a progress bar, read the per-row result.

Every upload from the page runs as a background job (``engine.jobs``, the
same code path as ``POST .../_import?async=1``): the POST answers at once
with a progress fragment that polls ``.../import/jobs/{id}`` every 0.5 s
(htmx ``load delay``: each answer schedules the next poll only while the
job runs) and is finally replaced by the result -- counts, or the problems
per row and field in the user's language.  No per-row work for the page:
the numbers come from the job's in-memory state.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from engine import jobs as J
from engine.errors import NotFound, RecordInvalid
from forms.transfer import MAX_IMPORT_BYTES

from ..api.transfer import check_mode, start_import_job
from ..deps import unit_of_work
from .common import PageRoute, fragment, page_user, render, runtime
from .i18n import label
from .records import _app_lang as _lang  # the app's default language, as on the list page

router = APIRouter(route_class=PageRoute, include_in_schema=False)
POLL = "500ms"
SHOWN_ERRORS = 200


def _base(app_name: str, form_name: str) -> str:
    return f"/apps/{app_name}/forms/{form_name}"


@router.get("/apps/{app_name}/forms/{form_name}/import")
def import_page(app_name: str, form_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _lang(request, user, app_name)
    with unit_of_work(rt, app_name, user, lang) as uow:
        from forms.transfer import import_form
        form = import_form(uow, form_name)
        return render(request, "records/import.html", {
            "app_name": app_name, "form": form, "form_label": label(form.label, lang, form.name),
            "base": _base(app_name, form_name), "max_mb": MAX_IMPORT_BYTES // (1024 * 1024),
        }, conn=uow.conn)


@router.post("/apps/{app_name}/forms/{form_name}/import")
async def import_submit(app_name: str, form_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _lang(request, user, app_name)
    data = await request.form()
    upload = data.get("file")
    mode = str(data.get("mode") or "all")
    dry_run = str(data.get("dry_run") or "") in ("1", "true", "on")
    base = _base(app_name, form_name)
    if upload is None or isinstance(upload, str) or not getattr(upload, "filename", ""):
        return _result(request, lang, base, {"status": "failed", "app": app_name, "form": form_name, "errors": [
            {"row": None, "field": None, "message": _t("import_no_file", lang)}]})
    blob = await upload.read(MAX_IMPORT_BYTES + 1)
    try:
        check_mode(mode)
        job = await run_in_threadpool(start_import_job, rt, app_name, form_name, user, lang, upload.filename, blob, mode, dry_run)
    except RecordInvalid as exc:
        return _result(request, lang, base, {"status": "failed", "app": app_name, "form": form_name,
                                              "errors": exc.errors})
    except J.JobRejected as exc:
        return _result(request, lang, base, {"status": "failed", "app": app_name, "form": form_name,
                                              "errors": [{"row": None, "field": None, "message": exc.message}]})
    # always the progress fragment first (even if the job is already done): the next poll shows the result
    return fragment(request, "records/_import_job.html", {"job": job, "poll": _poll_url(base, job), "delay": POLL,
                                                            "base": base, "lang": lang})


@router.get("/apps/{app_name}/forms/{form_name}/import/jobs/{job_id}")
def import_status(app_name: str, form_name: str, job_id: str, request: Request):
    user = page_user(request)
    lang = _lang(request, user, app_name)
    job = J.runner(runtime(request)).get(job_id)
    if job is None or not J.visible_to(job, user) or job["app"] != app_name or job["form"] != form_name:
        raise NotFound("job")
    base = _base(app_name, form_name)
    if job["status"] in ("done", "failed"):
        return _result(request, lang, base, job)
    return fragment(request, "records/_import_job.html", {"job": job, "poll": _poll_url(base, job), "delay": POLL,
                                                            "base": base, "lang": lang})


def _poll_url(base: str, job: dict) -> str:
    return f"{base}/import/jobs/{job['id']}"


def _t(key: str, lang: str, **kw) -> str:
    from .i18n import translate
    return translate(key, lang, **kw)


def _result(request: Request, lang: str, base: str, job: dict):
    """The finished job: counts and the first ``SHOWN_ERRORS`` problems (row, field, message).

    Always 200: htmx swaps only successful answers, and a failed import is a
    result to show in place, not a broken request."""
    result = job.get("result") or {}
    errors = [_without_row_prefix(e, lang) for e in job.get("errors") or []]
    n = result.get("error_count", len(errors)) if job["status"] == "done" else len(errors)
    return fragment(request, "records/_import_result.html", {
        "job": job, "result": result, "errors": errors[:SHOWN_ERRORS], "error_count": n, "base": base, "lang": lang,
        "ok_rows": max(0, (result.get("total") or 0) - len({e.get("row") for e in errors})),
        "labels": _labels(request, job, lang),
    })


def _without_row_prefix(error: dict, lang: str) -> dict:
    """The table has a row column: drop the "第 N 行：" / "row N: " that the 422 messages start with."""
    from forms.bulk import row_prefix
    row, msg = error.get("row"), str(error.get("message") or "")
    if isinstance(row, int) and msg.startswith(row_prefix(lang, row)):
        return {**error, "message": msg[len(row_prefix(lang, row)):]}
    return error


def _labels(request: Request, job: dict, lang: str) -> dict[str, str]:
    """Field name -> label in ``lang``, for the problems table (names unchanged when unknown)."""
    try:
        app = runtime(request).app(job["app"])
        form = app.forms[job["form"]]
    except Exception:  # noqa: BLE001 - labels are a nicety
        return {}
    return {n: label(f.label, lang, n) for n, f in form.fields.items()}
