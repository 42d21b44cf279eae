"""@mentions in comment text: finding them, checking who may be mentioned, and
splitting a body into text / mention segments for display.

A mention is ``@`` + a user name (letters -- Chinese too --, digits, ``. _ -
@``), not preceded by a letter, digit, dot or ``@`` (so ``a@b.cn`` is an
address, not a mention).  Trailing ``.``/``-`` are sentence punctuation, not
part of the name.  The page's picker inserts ``@username `` with a space, so
display names with spaces never need parsing.

Only a user who can *read the record* may be mentioned: an active user with a
role in the app whose row filters let them see it -- checked by reading the
record as that user through the record service, the same check every route
makes.  Anyone else (unknown, inactive, or without access) is reported back to
the author as one per-field error and the comment is not saved: a silent
"not notified" would leave the author thinking a colleague was told.  The
message does not say *which* of those it is, so mentions cannot be used to
probe who exists or who may see what.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Iterable

from sqlalchemy import func, or_, select

from engine import platform as P
from engine.auth import User, get_user
from engine.errors import Forbidden, NotFound
from engine.uow import UnitOfWork

from ..access import ADMIN_ROLE

MENTION_RE = re.compile(r"(?<![\w.@])@([\w.@\-]{1,64})")
MAX_MENTIONS = 20
_TRAILING = ".-@"


def mentioned_names(body: str) -> list[str]:
    """Distinct user names mentioned in ``body``, in order of first appearance."""
    seen: dict[str, None] = {}
    for m in MENTION_RE.finditer(body):
        name = m.group(1).rstrip(_TRAILING)
        if name:
            seen.setdefault(name, None)
    return list(seen)


def segments(body: str, mentions: Iterable[str], names: dict[str, str]) -> list[dict]:
    """``[{"text": ...} | {"mention": username, "text": "@Display"}]`` -- for templates,
    which escape every piece; only names in ``mentions`` (checked when posted) are highlighted."""
    wanted = set(mentions)
    out: list[dict] = []
    pos = 0
    for m in MENTION_RE.finditer(body):
        name = m.group(1).rstrip(_TRAILING)
        if name not in wanted:
            continue
        start, end = m.start(), m.start(1) + len(name)
        if start > pos:
            out.append({"text": body[pos:start]})
        out.append({"mention": name, "text": "@" + (names.get(name) or name)})
        pos = end
    if pos < len(body):
        out.append({"text": body[pos:]})
    return out


def in_app(uow: UnitOfWork, user: User) -> bool:
    return ADMIN_ROLE in user.roles or bool(user.roles & set(uow.app.roles))


def can_read(uow: UnitOfWork, user: User, form: str, record_id: int) -> bool:
    """May ``user`` read this record?  The record service decides, as for every route."""
    if not user.active or not in_app(uow, user):
        return False
    try:
        uow.service("records").get(replace(uow, user=user), form, record_id)
        return True
    except (NotFound, Forbidden):
        return False


def resolve(uow: UnitOfWork, form: str, record_id: int, names: list[str]) -> tuple[list[User], list[str]]:
    """(users who may be mentioned, names that may not) -- at most MAX_MENTIONS lookups."""
    ok: list[User] = []
    bad: list[str] = []
    for name in names:
        user = get_user(uow.conn, name)
        if user is not None and can_read(uow, user, form, record_id):
            ok.append(user)
        else:
            bad.append(name)
    return ok, bad


def candidates(uow: UnitOfWork, form: str, record_id: int, q: str, limit: int = 8) -> list[dict]:
    """Users matching ``q`` (name or display name) who can read the record, for the @ picker.

    One bounded query (at most ``limit * 3`` rows), then the access check per
    candidate: never a scan of all users in Python."""
    u = P.users
    q = (q or "").strip().lower()[:64]
    stmt = select(u.c.username).where(u.c.active.is_(True), u.c.username != uow.user.username)
    if q:
        plain = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")   # wildcards are search terms here
        like = f"%{plain}%"
        stmt = stmt.where(or_(func.lower(u.c.username).like(like, escape="\\"),
                              func.lower(u.c.display_name).like(like, escape="\\")))
    rows = uow.conn.execute(stmt.order_by(u.c.username).limit(limit * 3)).scalars().all()
    out: list[dict[str, Any]] = []
    for name in rows:
        user = get_user(uow.conn, name)
        if user is None or not can_read(uow, user, form, record_id):
            continue
        shown = user.display_name or user.username
        out.append({"username": user.username, "label": f"{shown} ({user.username})" if shown != user.username else shown})
        if len(out) >= limit:
            break
    return out
