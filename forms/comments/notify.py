"""Telling mentioned users: an inbox entry, and a message if the app wants one.

* Inbox: a ``loom_tasks`` row of kind ``mention`` assigned to the user, so it
  shows in ``GET /api/tasks``, the task inbox and the home page like any other
  task; "done" (``POST /api/tasks/{id}/complete``) dismisses it.  Deleting the
  comment cancels the mentions it made.
* Message: only when the app sets ``settings.mention_channel`` in app.yaml
  (``inapp``, ``email``, ``sms`` or ``wechat``) -- an outbox row in the same
  transaction, with a default text in the user's language, to the address in
  the user's attributes (``email`` / ``phone`` / ``wechat_id``; ``inapp`` uses
  the user name).  No address: no message (the inbox entry is still there).

The idempotency key is per comment and user, so one comment never notifies
one user twice, and the author is never notified about themselves.
"""
from __future__ import annotations

from sqlalchemy import update

from engine import platform as P
from engine.auth import User
from engine.clock import to_db
from engine.outbox import enqueue
from engine.uow import UnitOfWork

KIND = "mention"
TEMPLATE = "comment_mention"
CHANNEL_SETTING = "mention_channel"
ADDRESS = {"inapp": None, "email": ("email",), "sms": ("phone", "mobile"), "wechat": ("wechat_id", "wechat")}
EXCERPT = 200


def excerpt(body: str) -> str:
    text = " ".join(body.split())
    return text if len(text) <= EXCERPT else text[:EXCERPT - 1] + "…"


def _address(user: User, channel: str) -> str | None:
    fields = ADDRESS.get(channel)
    if fields is None:
        return user.username if channel == "inapp" else None
    return next((str(user.attrs[f]) for f in fields if user.attrs.get(f)), None)


def _form_label(uow: UnitOfWork, form: str, lang: str) -> str:
    lab = uow.app.forms[form].label if form in uow.app.forms else {}
    return lab.get(lang) or lab.get("zh") or lab.get("en") or form


def notify(uow: UnitOfWork, comment: dict, users: list[User]) -> int:
    """One inbox entry (and maybe one message) per mentioned user but the author; returns how many."""
    author = uow.user.display_name or uow.user.username
    sent = 0
    done: set[str] = set()
    for user in users:
        if user.username == uow.user.username or user.username in done:
            continue
        done.add(user.username)
        text = excerpt(comment["body"])
        uow.conn.execute(P.tasks.insert().values(
            app=uow.app.name, form=comment["form"], record_id=comment["record_id"], kind=KIND,
            title={"zh": f"{author} 在评论中提到了你", "en": f"{author} mentioned you in a comment"},
            body=text, assignee=user.username, status="open", created_at=to_db(uow.now),
            payload={"comment": comment["id"], "author": uow.user.username}))
        _message(uow, comment, user, author, text)
        sent += 1
    return sent


def _message(uow: UnitOfWork, comment: dict, user: User, author: str, text: str) -> None:
    channel = str((uow.app.settings or {}).get(CHANNEL_SETTING) or "")
    if channel not in ADDRESS:
        return
    address = _address(user, channel)
    if not address:
        return
    lang = "en" if (user.language or uow.app.default_language or "zh").startswith("en") else "zh"
    where = f"{_form_label(uow, comment['form'], lang)} #{comment['record_id']}"
    rendered = (f"{author} mentioned you in a comment on {where}: {text}" if lang == "en"
                else f"{author} 在「{where}」的评论中提到了你：{text}")
    enqueue(uow.conn, app=uow.app.name, template=TEMPLATE, channel=channel, recipient=address, rendered=rendered,
            key=f"comment:{uow.app.name}:{comment['id']}:{user.username}:{channel}", due_at=uow.now, now=uow.now,
            subject="有人提到了你" if lang == "zh" else "You were mentioned", lang=lang, recipient_kind="user",
            form=comment["form"], record_id=comment["record_id"])


def withdraw(uow: UnitOfWork, comment_id: int, form: str, record_id: int) -> None:
    """A deleted comment's open mentions disappear from the inboxes (messages already queued stay)."""
    t = P.tasks
    uow.conn.execute(update(t).where(t.c.app == uow.app.name, t.c.form == form, t.c.record_id == record_id,
                                     t.c.kind == KIND, t.c.status == "open",
                                     t.c.payload["comment"].as_integer() == comment_id)
                     .values(status="cancelled", completed_at=to_db(uow.now), completed_by=uow.user.username))
