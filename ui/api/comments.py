"""JSON API for comments on a record (contract A3, issue #8).

* ``GET  /api/apps/{app}/{form}/{id}/comments?limit=`` -- the newest comments, oldest first.
* ``POST /api/apps/{app}/{form}/{id}/comments`` ``{"body": "..."}`` -- 201 with the comment;
  ``@username`` mentions notify those users; a mention of someone who may not
  read the record is a 422 ``{"errors": [{"field": "body", "code": "mention", ...}]}``.
* ``DELETE /api/apps/{app}/{form}/{id}/comments/{comment_id}`` -- 204; your own
  comments only (admins: any), else 403.

Every route reads the record as the caller first: a record they may not read
is a 404, whatever the comment.
"""
from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from engine.auth import User

from ..deps import current_user, language, runtime, unit_of_work

router = APIRouter(prefix="/api/apps", tags=["comments"])


class CommentBody(BaseModel):
    body: str = Field(..., description="plain text; newlines kept; @username mentions a colleague who can read the record")


def _comments(rt):
    return rt.services["comments"]


@router.get("/{app}/{form}/{record_id}/comments", summary="Comments on a record")
def list_comments(app: str, form: str, record_id: int, request: Request, user: User = Depends(current_user),
                  limit: int = Query(100, ge=1, le=500)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user)) as uow:
        items, more = _comments(rt).list(uow, form, record_id, limit=limit)
    return {"items": items, "more": more}


@router.post("/{app}/{form}/{record_id}/comments", status_code=201, summary="Comment on a record (@mentions notify)")
def add_comment(app: str, form: str, record_id: int, request: Request, data: CommentBody = Body(...),
                user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        out = _comments(rt).add(uow, form, record_id, data.body)
    return JSONResponse(out, status_code=201)


@router.delete("/{app}/{form}/{record_id}/comments/{comment_id}", status_code=204,
               summary="Delete a comment (your own; admins any)")
def delete_comment(app: str, form: str, record_id: int, comment_id: int, request: Request,
                   user: User = Depends(current_user)):
    rt = runtime(request)
    with unit_of_work(rt, app, user, language(request, user), write=True) as uow:
        _comments(rt).delete(uow, form, record_id, comment_id)
    return Response(status_code=204)
