"""The comment service: post, list and delete comments on a record.

Every call first reads the record through the record service as the caller
(``Records.get``), so form permissions *and* row filters decide: a record the
caller may not read is a ``NotFound`` (404), exactly like reading it.
Writes are audited (``comment.create`` / ``comment.delete``) in the same
transaction.  Bodies are plain text: stored as typed (control characters
other than newlines and tabs removed, length limited) and escaped wherever
they are shown.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select, update

from engine.audit import audit
from engine.clock import from_db, to_db
from engine.errors import Forbidden, NotFound, RecordInvalid
from engine.uow import UnitOfWork

from ..access import ADMIN_ROLE
from . import mentions as M
from . import notify
from .tables import comments as C

MAX_BODY = 4000
MAX_LIMIT = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _msg(uow: UnitOfWork, zh: str, en: str) -> str:
    return en if uow.lang == "en" else zh


def _iso(value: dt.datetime | None) -> str | None:
    return from_db(value).isoformat().replace("+00:00", "Z") if value is not None else None


def clean_body(uow: UnitOfWork, body: Any) -> str:
    """The body as stored, or per-field errors (missing, too long, not text)."""
    if not isinstance(body, str):
        raise RecordInvalid([{"field": "body", "code": "type", "message": _msg(uow, "评论内容须为文字", "the comment must be text")}])
    text = _CONTROL.sub("", body.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise RecordInvalid([{"field": "body", "code": "required", "message": _msg(uow, "请输入评论内容", "write a comment first")}])
    if len(text) > MAX_BODY:
        raise RecordInvalid([{"field": "body", "code": "max_length", "message": _msg(
            uow, f"评论最多 {MAX_BODY} 个字（现在 {len(text)} 个）", f"a comment has at most {MAX_BODY} characters (this one has {len(text)})")}])
    return text


class Comments:
    """Comments on records, with @mentions that notify the people mentioned."""

    def __init__(self, runtime: Any):
        self.rt = runtime

    def _check(self, uow: UnitOfWork, form: str, record_id: int) -> None:
        uow.service("records").get(uow, form, record_id)      # NotFound when the caller may not read it

    def may_delete(self, uow: UnitOfWork, row: Any) -> bool:
        return row["author"] == uow.user.username or ADMIN_ROLE in uow.user.roles or uow.user.is_system

    def to_json(self, uow: UnitOfWork, row: Any) -> dict:
        return {"id": row["id"], "app": row["app"], "form": row["form"], "record_id": row["record_id"],
                "author": row["author"], "body": row["body"], "mentions": list(row["mentions"] or []),
                "created_at": _iso(row["created_at"]), "edited_at": _iso(row["edited_at"]),
                "can_delete": self.may_delete(uow, row)}

    # -- reading -----------------------------------------------------------
    def recent(self, uow: UnitOfWork, form: str, record_id: int, limit: int) -> list[dict]:
        """The newest ``limit`` live comments, newest first, *without* the access check (callers made it)."""
        rows = uow.conn.execute(select(C).where(C.c.app == uow.app.name, C.c.form == form, C.c.record_id == record_id,
                                                C.c.deleted.is_(False))
                                .order_by(C.c.id.desc()).limit(max(1, min(int(limit), MAX_LIMIT + 1)))).mappings().all()
        return [self.to_json(uow, r) for r in rows]

    def list(self, uow: UnitOfWork, form: str, record_id: int, limit: int = 100) -> tuple[list[dict], bool]:
        """(comments oldest first, whether older ones were left out)."""
        self._check(uow, form, record_id)
        limit = max(1, min(int(limit), MAX_LIMIT))
        rows = self.recent(uow, form, record_id, limit + 1)
        return list(reversed(rows[:limit])), len(rows) > limit

    # -- writing -----------------------------------------------------------
    def add(self, uow: UnitOfWork, form: str, record_id: int, body: Any) -> dict:
        self._check(uow, form, record_id)
        text = clean_body(uow, body)
        names = M.mentioned_names(text)
        if len(names) > M.MAX_MENTIONS:
            raise RecordInvalid([{"field": "body", "code": "mentions", "message": _msg(
                uow, f"一条评论最多提及 {M.MAX_MENTIONS} 人", f"a comment can mention at most {M.MAX_MENTIONS} people")}])
        users, bad = M.resolve(uow, form, record_id, names)
        if bad:
            shown = "、".join("@" + n for n in bad)
            raise RecordInvalid([{"field": "body", "code": "mention", "message": _msg(
                uow, f"无法提及 {shown}：没有这个用户，或对方无权查看此记录。请从列表中选择能查看此记录的同事。",
                f"can't mention {', '.join('@' + n for n in bad)}: no such user, or they may not see this record. "
                "Pick a colleague who can see it from the list.")}])
        row = dict(app=uow.app.name, form=form, record_id=record_id, author=uow.user.username, body=text,
                   mentions=[u.username for u in users], created_at=to_db(uow.now), deleted=False)
        new_id = uow.conn.execute(C.insert().values(**row).returning(C.c.id)).scalar_one()
        comment = dict(row, id=new_id, edited_at=None)
        notified = notify.notify(uow, comment, users)
        audit(uow.conn, uow.now, uow.user.username, "comment.create", app=uow.app.name, form=form, record_id=record_id,
              details={"comment": new_id, "mentions": comment["mentions"], "notified": notified, "length": len(text)})
        return self.to_json(uow, comment)

    def delete(self, uow: UnitOfWork, form: str, record_id: int, comment_id: int) -> None:
        """Authors delete their own comments; admins any.  Someone else's: 403."""
        self._check(uow, form, record_id)
        row = uow.conn.execute(select(C).where(C.c.id == comment_id, C.c.app == uow.app.name, C.c.form == form,
                                               C.c.record_id == record_id, C.c.deleted.is_(False))).mappings().first()
        if row is None:
            raise NotFound(_msg(uow, f"评论 {comment_id} 不存在", f"comment {comment_id} not found"))
        if not self.may_delete(uow, row):
            raise Forbidden(_msg(uow, "只能删除自己的评论", "you may only delete your own comments"))
        uow.conn.execute(update(C).where(C.c.id == comment_id)
                         .values(deleted=True, deleted_at=to_db(uow.now), deleted_by=uow.user.username))
        notify.withdraw(uow, comment_id, form, record_id)
        audit(uow.conn, uow.now, uow.user.username, "comment.delete", app=uow.app.name, form=form, record_id=record_id,
              details={"comment": comment_id, "author": row["author"]})

    # -- the @ picker --------------------------------------------------------
    def mentionable(self, uow: UnitOfWork, form: str, record_id: int, q: str, limit: int = 8) -> list[dict]:
        self._check(uow, form, record_id)
        return M.candidates(uow, form, record_id, q, limit)
