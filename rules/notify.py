"""Notifications: who gets the message, on which channel, when -- and whether at all.

```yaml
- notify:
    template: lead_assigned           # templates/lead_assigned[.<channel>].<lang>.j2
    to: owner                         # see below; or a list of these
    channel: sms                      # sms | app | wechat | email | inapp, or an expression
    delay: 1h                         # optional: send later
```

Recipients (``to``):

* ``owner`` -- the user who owns the record; ``created_by`` likewise;
* a ``user`` field of the record -- that user;
* a ``link`` field to a customer-like record (one with phone/email fields) --
  that customer, using its ``phone``/``email``/``wechat_id``,
  ``preferred_channel``, ``language``, ``consent_marketing`` and
  ``do_not_disturb`` fields when present;
* ``self`` -- the record itself is the customer (rules on the customer form);
* ``{role: regional_manager, where: "region == record.dealer.region"}`` --
  active users with the role whose attributes match;
* ``{user: "<expression>"}`` or any other string -- an expression giving a
  user name (or a list of names).

Staff get ``inapp`` messages unless a channel is given and their user
attributes hold the address (``phone``/``email``/``wechat_id``).  Customers
get their ``preferred_channel`` (else ``sms``); when it has no address
(WeChat preferred, no WeChat id) the message falls back to SMS, then e-mail.

Customer messages also obey the app's rules, and a message that may not go
out is still written, with status ``suppressed`` and the reason, so the
timeline shows why nothing was sent:

* consent -- a ``marketing`` template (``{% set kind = 'marketing' %}``) to a
  customer without ``consent_marketing`` (or with ``do_not_disturb``);
* frequency cap -- ``frequency_cap: {per_customer: 3, per: 1d}`` in app.yaml:
  whole days are calendar days in the app's timezone, other periods are a
  rolling window; counted over every channel of that customer; a per-customer
  row lock makes the count exact under concurrent requests;
* quiet hours -- ``quiet_hours: {start: "21:00", end: "08:00"}``: a message
  due inside the window waits until its end.

Every message is an outbox row written in the rule's transaction with a
deterministic idempotency key, so a retried timer cannot queue it twice; the
rows of one ``notify`` go in with one statement (``engine.outbox.enqueue_rows``),
which tells which keys were new, so a repeat is reported as ``duplicate``.  Messages
about a record inserted in the same transaction can't repeat another transaction's
(the key holds the new id): on PostgreSQL their INSERT rides along with the next
statement (``engine.outbox.enqueue_fresh``) and repeats are told apart in memory.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from engine import platform as P
from engine.auth import User, list_users
from engine.clock import to_db
from engine.outbox import enqueue_fresh, enqueue_rows, message_row, row_key

from .actions.base import ActionCompiler, ActionError, Literal, RunContext
from .durations import parse_duration, parse_time_of_day
from .templates import CHANNELS, TEMPLATES, TemplateProblem

CONTACT_FIELDS = ("phone", "email", "wechat_id", "mobile")
ADDRESS_FIELD = {"sms": ("phone", "mobile"), "email": ("email",), "wechat": ("wechat_id", "wechat")}


# ---------------------------------------------------------------------------
# compile time

@dataclass(frozen=True, eq=False)
class RecipientSpec:
    kind: str                      # owner | user_field | contact_link | self | role | user_expr
    field: str | None = None
    form: str | None = None        # contact_link: the linked form
    role: str | None = None
    where: Any = None
    expr: Any = None

    def describe(self) -> str:
        return {"owner": "owner", "self": "self", "role": f"role {self.role}"}.get(self.kind, self.field or self.kind)


def _is_contact_form(c: ActionCompiler, form: str | None) -> bool:
    return bool(form) and any(f in c.fields(form) for f in CONTACT_FIELDS)


def compile_recipient(c: ActionCompiler, sub: tuple, spec: Any, users_only: bool = False) -> tuple[RecipientSpec, ...]:
    if isinstance(spec, list):
        out: list[RecipientSpec] = []
        for i, item in enumerate(spec):
            out.extend(compile_recipient(c, sub + (i,), item, users_only))
        return tuple(out)
    if spec is None:
        c.error(sub, "who? give 'to: owner', a link field, {role: ..., where: ...} or a user name expression")
        return ()
    if isinstance(spec, dict):
        for k in spec:
            if k not in ("role", "where", "user"):
                c.error(sub + (k,), f"unknown key '{k}' for a recipient; expected role and where, or user", at_key=True)
        if "role" in spec:
            if not c.check_role(sub + ("role",), spec["role"]):
                return ()
            where = c.expr(sub + ("where",), spec["where"], checker=c.user_checker()) if spec.get("where") else None
            return (RecipientSpec("role", role=spec["role"], where=where),)
        if "user" in spec:
            e = c.expr(sub + ("user",), spec["user"])
            return (RecipientSpec("user_expr", expr=e),) if e is not None else ()
        c.error(sub, "a recipient mapping needs 'role:' (and optionally 'where:') or 'user:'")
        return ()
    if not isinstance(spec, str):
        c.error(sub, f"'{spec}' is not a recipient")
        return ()
    fields = c.fields()
    if spec == "owner":
        return (RecipientSpec("owner"),)
    if spec == "created_by":
        return (RecipientSpec("user_field", field="created_by"),)
    if spec in ("self", "record"):
        if users_only:
            c.error(sub, "a task goes to a user, not to the record itself")
            return ()
        if not _is_contact_form(c, c.form):
            c.error(sub, f"'to: self' needs a form with phone or email fields; '{c.form}' has none")
            return ()
        return (RecipientSpec("self", form=c.form),)
    if spec in fields:
        ftype = fields[spec].get("type")
        if ftype == "user":
            return (RecipientSpec("user_field", field=spec),)
        if ftype == "link":
            target = fields[spec].get("form")
            if users_only:
                c.error(sub, f"'{spec}' links to a {target} record; a task goes to a user (owner, a user field, {{role: ...}})")
                return ()
            if not _is_contact_form(c, target):
                c.error(sub, f"'{spec}' links to form '{target}', which has no phone/email fields to send to")
                return ()
            return (RecipientSpec("contact_link", field=spec, form=target),)
        if ftype in ("text", "select"):
            e = c.expr(sub, spec)
            return (RecipientSpec("user_expr", expr=e),) if e is not None else ()
        c.error(sub, f"field '{spec}' is a {ftype} field; it cannot receive messages")
        return ()
    e = c.expr(sub, spec)
    return (RecipientSpec("user_expr", expr=e),) if e is not None else ()


@dataclass(frozen=True, eq=False)
class NotifyParams:
    template: str
    to: tuple
    channel: Any = None            # Literal | Expression | None
    delay: dt.timedelta | None = None


def compile_notify(c: ActionCompiler, spec: Any) -> NotifyParams | None:
    if not isinstance(spec, dict):
        c.error((), "'notify' takes {template: <name>, to: <who>, channel: <channel>}")
        return None
    for k in spec:
        if k not in ("template", "to", "channel", "delay"):
            c.error((k,), f"unknown key '{k}' for notify; expected template, to, channel, delay", at_key=True)
    if "template" not in spec:
        c.error((), "'notify' needs 'template: <name>' (a file templates/<name>.<lang>.j2)", at_key=True, schema=True)
        return None
    ok = c.check_template(("template",), spec.get("template"))
    to = compile_recipient(c, ("to",), spec.get("to", "owner"))
    channel = None
    if spec.get("channel") is not None:
        ch = spec["channel"]
        if isinstance(ch, str) and ch in CHANNELS:
            channel = Literal(ch)
        elif isinstance(ch, str) and ch.isidentifier() and "." not in ch and ch not in c.fields():
            c.error(("channel",), f"unknown channel '{ch}'; expected one of: {', '.join(CHANNELS)} (or an expression)")
        else:
            channel = c.expr(("channel",), ch)
    delay = c.check_duration(("delay",), spec["delay"]) if spec.get("delay") is not None else None
    if not ok or not to:
        return None
    return NotifyParams(spec["template"], to, channel, delay)


# ---------------------------------------------------------------------------
# run time

@dataclass
class Recipient:
    kind: str                      # user | customer
    key: str                       # user name, or '<form>:<id>'
    name: str
    language: str | None
    user: User | None = None
    contact: Mapping[str, Any] = field(default_factory=dict)
    form: str | None = None

    def default_channel(self) -> str:
        if self.kind == "user":
            return "inapp"
        ch = self.contact.get("preferred_channel")
        return ch if ch in CHANNELS else "sms"

    def address(self, channel: str) -> str | None:
        if self.kind == "user":
            if channel in ADDRESS_FIELD and self.user is not None:
                for f in ADDRESS_FIELD[channel]:
                    if self.user.attrs.get(f):
                        return str(self.user.attrs[f])
            return self.key
        if channel in ADDRESS_FIELD:
            for f in ADDRESS_FIELD[channel]:
                if self.contact.get(f):
                    return str(self.contact[f])
            return None
        return self.key              # app push / inapp: the customer's record

    def addresses(self) -> list[str]:
        out = [self.key]
        for names in ADDRESS_FIELD.values():
            for f in names:
                if self.contact.get(f):
                    out.append(str(self.contact[f]))
        return out

    def env(self) -> dict:
        if self.user is not None:
            return {**self.user.env(), "kind": "user"}
        return {**self.contact, "kind": "customer"}


def _user_recipient(u: User) -> Recipient:
    return Recipient("user", u.username, u.display_name or u.username, u.language, user=u)


def _contact_recipient(form: str, rec: Mapping[str, Any]) -> Recipient:
    name = rec.get("name") or rec.get("title") or f"{form} {rec.get('id')}"
    return Recipient("customer", f"{form}:{rec.get('id')}", str(name), rec.get("language"), contact=dict(rec), form=form)


def role_users(rc: RunContext, role: str) -> list[User]:
    """Active users with ``role``, from the process-wide user directory (``engine.directory``: read
    again only when the users changed); their ``away_until`` goes to ``rc._away``."""
    snap = rc.uow.runtime.directory.active(rc.uow.conn, rc.__dict__.get("_users_generation"))
    found = snap.with_role(role)
    away = rc.__dict__.setdefault("_away", {})
    for user in found:
        rc._users.setdefault(user.username, user)
        until = snap.away_until.get(user.username)
        if until is not None:
            away[user.username] = until
    return list(found)


def users_with_role(rc: RunContext, role: str, where: Any) -> list[User]:
    users = role_users(rc, role)
    if where is None:
        return list(users)
    record_env = rc.env().get("record")
    out = []
    for u in users:
        env = u.env()
        env["record"] = record_env
        env["current_user"] = rc.uow.user.env()
        env["settings"] = dict(rc.app.settings)
        for k in ("owner_user", "event", "payload", "created", "source"):
            env.setdefault(k, rc.env().get(k))
        if rc.truthy(where, env):
            out.append(u)
    return out


def _user_names(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    return [str(value)]


def resolve_users(rc: RunContext, specs: tuple) -> tuple[list[User], str | None]:
    """Users named by recipient specs (customers are skipped); plus the role, if one was given."""
    users: list[User] = []
    role = None
    for s in specs:
        if s.kind == "owner":
            names = _user_names(rc.record.get("owner"))
        elif s.kind == "user_field":
            names = _user_names(rc.record.get(s.field))
        elif s.kind == "user_expr":
            names = _user_names(rc.evaluate(s.expr))
        elif s.kind == "role":
            role = role or s.role
            users.extend(users_with_role(rc, s.role, s.where))
            continue
        else:
            continue
        for n in names:
            u = rc.user(n)
            if u is not None and u.active:
                users.append(u)
    seen, unique = set(), []
    for u in users:
        if u.username not in seen:
            seen.add(u.username)
            unique.append(u)
    return unique, role


def resolve_recipients(rc: RunContext, specs: tuple) -> list[Recipient]:
    out: list[Recipient] = []
    for s in specs:
        if s.kind == "contact_link":
            rid = rc.record.get(s.field)
            rec = rc.linked(s.form, rid) if rid is not None else None
            if rec is not None:
                out.append(_contact_recipient(s.form, rec))
        elif s.kind == "self":
            if rc.record.get("id") is not None:
                out.append(_contact_recipient(rc.form, rc.record))
        else:
            users, _ = resolve_users(rc, (s,))
            out.extend(_user_recipient(u) for u in users)
    seen, unique = set(), []
    for r in out:
        if r.key not in seen:
            seen.add(r.key)
            unique.append(r)
    return unique


def after_quiet_hours(app: Any, when: dt.datetime) -> dt.datetime:
    """``when``, or the end of the app's quiet-hours window if ``when`` falls inside it."""
    qh = app.quiet_hours
    if not qh or not qh.get("start") or not qh.get("end"):
        return when
    start, end = parse_time_of_day(qh["start"]), parse_time_of_day(qh["end"])
    tz = app.tz
    local = when.astimezone(tz)
    t = local.time()
    if start == end:
        return when
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:                                   # wraps midnight: 21:00-08:00
        inside = t >= start or t < end
        end_day = local.date() + dt.timedelta(days=1) if t >= start else local.date()
    if not inside:
        return when
    return dt.datetime.combine(end_day, end, tzinfo=tz).astimezone(dt.timezone.utc)


def cap_window(app: Any, due: dt.datetime, per: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    if per >= dt.timedelta(days=1) and per.total_seconds() % 86400 == 0:
        tz = app.tz
        day = due.astimezone(tz).date()
        start = dt.datetime.combine(day - dt.timedelta(days=per.days - 1), dt.time(0), tzinfo=tz)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
        return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
    return due - per, due + dt.timedelta(microseconds=1)


def _lock_customer(rc: RunContext, key: str) -> None:
    """Serialise concurrent messages to one customer (PostgreSQL), so the cap count is exact."""
    from .assignment import lock_cursor
    lock_cursor(rc.uow.conn, rc.app.name, f"cap:{key}", rc.uow.now, {})


def frequency_capped(rc: RunContext, r: Recipient, due: dt.datetime) -> str | None:
    cap = rc.app.frequency_cap
    if not cap or not cap.get("per_customer"):
        return None
    per = parse_duration(cap.get("per", "1d"))
    limit = int(cap["per_customer"])
    _lock_customer(rc, r.key)
    start, end = cap_window(rc.app, due, per)
    o = P.outbox
    n = rc.uow.conn.execute(select(func.count()).select_from(o).where(
        o.c.app == rc.app.name, o.c.recipient_kind == "customer", o.c.recipient.in_(r.addresses()),
        o.c.status.in_(("queued", "sent")), o.c.due_at >= to_db(start), o.c.due_at < to_db(end))).scalar()
    if n >= limit:
        return f"frequency cap: {limit} messages per {cap.get('per', '1d')} already reached for this customer"
    return None


def idempotency_key(rc: RunContext, template: str, channel: str, recipient: str) -> str:
    raw = "|".join(map(str, (rc.app.name, rc.source, rc.form, rc.record_id, template, channel, recipient, rc.occurrence)))
    return f"n:{rc.app.name}:{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


_APP_BLOCKS: dict[tuple, tuple[dict, dict]] = {}


def _app_blocks(app: Any, lang: str) -> tuple[dict, dict]:
    """The ``app`` and ``settings`` parts of a template context: they depend only on the app version
    and the language, so they are computed once per (digest, language)."""
    key = (app.digest, lang)
    found = _APP_BLOCKS.get(key)
    if found is None:
        settings = {k: (v.get(lang) or v.get("zh") if isinstance(v, Mapping) and ("zh" in v or "en" in v) else v)
                    for k, v in app.settings.items()}
        found = ({"name": app.name, "title": app.title.get(lang) or app.title.get("zh"), "settings": dict(app.settings),
                  "timezone": app.timezone}, settings)
        if len(_APP_BLOCKS) > 80:
            _APP_BLOCKS.clear()
        _APP_BLOCKS[key] = found
    return found


def template_context(rc: RunContext, r: Recipient, lang: str) -> dict:
    app = rc.app
    ctx = dict(rc.env())
    ctx.pop("current_user", None)
    local_now = rc.uow.now.astimezone(app.tz)
    app_block, settings = _app_blocks(app, lang)
    # shared between messages: the sandbox lets no template change what it is given
    ctx.update(recipient=r.env(), now=local_now, today=local_now.date(), lang=lang, app=app_block, settings=settings)
    return ctx


def send(rc: RunContext, params: NotifyParams) -> dict | None:
    """Queue ``params.template`` for each recipient; the result says, per message, whether it was
    queued, suppressed (and why) or a duplicate of one already in the outbox.

    The rows of one call are written together: one ``INSERT ... ON CONFLICT DO NOTHING`` (with
    ``RETURNING idempotency_key`` when there are several, so duplicates are still told apart) --
    and before a frequency-cap count, so the count sees the messages queued just before it.
    """
    uow = rc.uow
    recipients = resolve_recipients(rc, params.to)
    if not recipients:
        return {"template": params.template, "sent": 0, "skipped": "no recipient (" +
                ", ".join(s.describe() for s in params.to) + ")"}
    results: list[dict] = []
    pending: list[tuple[dict, str, tuple]] = []       # (result entry, its status if new, outbox row)
    try:
        for r in recipients:
            channel = rc.evaluate(params.channel) if params.channel is not None else None
            if channel not in CHANNELS:
                channel = r.default_channel()
            address = r.address(channel)
            if address is None and params.channel is None and r.kind == "customer":
                for alt in ("sms", "email"):      # the preferred channel has no address: fall back
                    if r.address(alt):
                        channel, address = alt, r.address(alt)
                        break
            lang = r.language if r.language in ("zh", "en") else uow.app.default_language
            try:
                rendered = TEMPLATES.render(uow.app, params.template, channel, lang, template_context(rc, r, lang))
            except TemplateProblem as exc:
                raise ActionError(str(exc)) from None
            due = uow.now + (params.delay or dt.timedelta())
            status, reason = "queued", None
            if address is None:
                status, reason = "suppressed", f"no {channel} address for this recipient"
            elif r.kind == "customer":
                if rendered.kind == "marketing" and not r.contact.get("consent_marketing"):
                    status, reason = "suppressed", "no marketing consent (consent_marketing is not set)"
                elif rendered.kind == "marketing" and r.contact.get("do_not_disturb"):
                    status, reason = "suppressed", "customer asked not to be disturbed"
                else:
                    due = after_quiet_hours(uow.app, due)
                    if pending and rc.app.frequency_cap:
                        _write(rc, pending)        # the count below must see them
                    capped = frequency_capped(rc, r, due)
                    if capped:
                        status, reason = "suppressed", capped
            key = idempotency_key(rc, params.template, channel, r.key)
            row = message_row(app=uow.app.name, template=params.template, channel=channel,
                              recipient=address or r.key, rendered=rendered.text, key=key, due_at=due, now=uow.now,
                              subject=rendered.subject, lang=lang, kind=rendered.kind, status=status,
                              recipient_kind="user" if r.kind == "user" else "customer", form=rc.form,
                              record_id=rc.record_id, last_error=reason)
            entry = {"to": r.name if r.kind == "user" else r.key, "channel": channel, "status": status}
            if reason:
                entry["reason"] = reason
            if due != uow.now:
                entry["due_at"] = due.isoformat()
            results.append(entry)
            pending.append((entry, status, row))
    except ActionError:
        _write(rc, pending)          # as when each message was written as soon as it was made
        raise
    _write(rc, pending)
    return {"template": params.template, "messages": results}


def _write(rc: RunContext, pending: list[tuple[dict, str, tuple]]) -> None:
    """Write the held rows with one statement; a row whose key was already there is a 'duplicate'.
    Messages about a record this transaction inserted can't be duplicates of another transaction's
    (their keys hold its new id): their INSERT rides along with the next statement."""
    if not pending:
        return
    rows = [row for _, _, row in pending]
    fresh = rc.form is not None and rc.records.created_here(rc.uow, rc.form, rc.record_id)
    new = enqueue_fresh(rc.uow.conn, rows) if fresh else enqueue_rows(rc.uow.conn, rows)
    for entry, status, row in pending:
        entry["status"] = status if row_key(row) in new else "duplicate"
    pending.clear()
