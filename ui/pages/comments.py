"""Comments on the record detail page: post, delete, and the @ picker.

All three go through the comment service (``runtime.services['comments']``),
which reads the record as the signed-in user first, so a record they may not
read is the usual 404 page.  With htmx the answer is the timeline card
(``records/_timeline.html``) re-rendered, swapped in place with a toast; a
post with a problem (empty, too long, a mention of someone who may not see
the record) comes back as the same card with the text kept and the error
under the box.  Without JavaScript the forms post normally and redirect back.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.errors import RecordInvalid

from ..deps import unit_of_work
from .common import PageRoute, error_page, fragment, is_htmx, page_user, redirect, runtime
from .i18n import translate
from .records import Display, _app_lang, _form, build_timeline

router = APIRouter(route_class=PageRoute, include_in_schema=False)
BASE = "/apps/{app_name}/forms/{form_name}/{record_id:int}/comments"


def _card(request: Request, uow, form, record_id: int, lang: str, body: str = "", error: str = "",
          toast: str | None = None):
    """The timeline card for the htmx swap (an HX-Trigger toast on success)."""
    timeline, more = build_timeline(uow, form, record_id, lang, Display(uow, form, lang))
    headers = {"HX-Trigger": json.dumps({"loom:toast": {"message": toast, "tone": "success"}})} if toast else None
    url = f"/apps/{uow.app.name}/forms/{form.name}/{record_id}/comments"
    return fragment(request, "records/_timeline.html", {
        "lang": lang, "timeline": timeline, "timeline_more": more, "comments_url": url,
        "comment_body": body, "comment_error": error}, headers=headers)


@router.post(BASE)
async def post_comment(app_name: str, form_name: str, record_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    body = str((await request.form()).get("body") or "")
    with unit_of_work(rt, app_name, user, lang, write=True) as uow:
        form = _form(uow, form_name)
        try:
            rt.services["comments"].add(uow, form.name, record_id, body)    # checks everything before writing
        except RecordInvalid as exc:
            message = "；".join(e.get("message", "") for e in exc.errors)
            if not is_htmx(request):
                return error_page(request, 422, message)
            return _card(request, uow, form, record_id, lang, body=body[:8000], error=message)
        if not is_htmx(request):
            return redirect(f"/apps/{app_name}/forms/{form_name}/{record_id}#timeline-card")
        return _card(request, uow, form, record_id, lang, toast=translate("comment_posted", lang))


@router.post(BASE + "/{comment_id:int}/delete")
def delete_comment(app_name: str, form_name: str, record_id: int, comment_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with unit_of_work(rt, app_name, user, lang, write=True) as uow:
        form = _form(uow, form_name)
        rt.services["comments"].delete(uow, form.name, record_id, comment_id)
        if not is_htmx(request):
            return redirect(f"/apps/{app_name}/forms/{form_name}/{record_id}#timeline-card")
        return _card(request, uow, form, record_id, lang, toast=translate("comment_deleted", lang))


@router.get(BASE + "/_mentions")
def mention_picker(app_name: str, form_name: str, record_id: int, request: Request):
    """``{"items": [{"username", "label"}]}``: colleagues matching ``?q=`` who can read this record."""
    user = page_user(request)
    rt = runtime(request)
    q = (request.query_params.get("q") or "")[:64]
    with unit_of_work(rt, app_name, user, _app_lang(request, user, app_name)) as uow:
        form = _form(uow, form_name)
        items = rt.services["comments"].mentionable(uow, form.name, record_id, q)
    return JSONResponse({"items": items}, headers={"Cache-Control": "no-store"})
