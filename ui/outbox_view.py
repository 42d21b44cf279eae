"""The outbox as its admins see it -- on the admin page and over the API alike.

A message to a customer carries their address (a mobile number, an e-mail) and a text that
quotes their data (name, car, plate...): personal data, as a record's ``pii: true`` fields are.
So the outbox follows the records' rules:

* a caller lists the messages of the apps they manage (``manage_app``; the platform ``admin``
  role: every app's), never another app's;
* in an app where the caller lacks ``view_pii``, a customer's message shows its address masked
  (``138****1234``) and no text -- its status, template, record and error stay, which is what
  running the outbox needs;
* where the caller has ``view_pii``, the messages shown unmasked are audited: one ``pii.read``
  row per app (the message ids), written in the transaction of the read itself, as
  :mod:`ui.audited` does for records -- no audit row, no personal data.

Messages to staff (``recipient_kind`` ``user``: a username and an internal notification) are
shown as they are.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from sqlalchemy import Select

from engine import platform as P
from engine.audit import audit
from engine.auth import User
from engine.crypto import mask

from .deps import granting_apps, loaded_apps, permitted_apps

HIDDEN_FIELDS = ("recipient", "rendered", "subject")


def scope(rt: Any, user: User) -> tuple[list[str] | None, set[str]]:
    """(the apps whose messages ``user`` may list -- None: all of them, for the platform admin;
    the apps in which they see customers' personal data: where the app's roles grant ``view_pii``,
    for the platform admin too, as for records)."""
    apps = loaded_apps(rt)[0]
    return permitted_apps(rt, user, "manage_app", apps), set(granting_apps(rt, user, "view_pii", apps))


def personal(row: Any) -> bool:
    """Whether a message is to someone outside (a customer, an address): its address and text are
    their personal data.  Only messages to staff (``user``) are not."""
    return row["recipient_kind"] != "user"


def read_messages(rt: Any, user: User, query: Select, *, via: str,
                  also: Callable[[Any, list[str] | None], Any] | None = None) -> tuple[list[dict], Any]:
    """Run ``query`` (a select of ``loom_outbox``) limited to the caller's apps; return its rows as
    dicts, personal data masked where the caller may not see it, and audited where they see it.
    ``also(conn, apps)``: more reads in the same transaction (a count, per-status totals), its
    result returned beside the rows.  ``via`` goes into the audit rows (``page``, ``api``)."""
    managed, pii = scope(rt, user)
    o = P.outbox
    if managed is not None:
        query = query.where(o.c.app.in_(managed))
    # a read that may show personal data unmasked takes a write transaction from the start (see
    # ui.audited.AuditedRead): it writes its audit row in the same transaction
    may_show = bool(pii) if managed is None else bool(pii & set(managed))
    with (rt.db.write() if may_show else rt.db.read()) as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        extra = also(conn, managed) if also is not None else None
        shown: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            if personal(row):
                if row["app"] in pii:
                    shown[row["app"]].append(row["id"])
                else:
                    _mask(row)
        now = rt.clock.now()
        for app, ids in sorted(shown.items()):
            audit(conn, now, user.username, "pii.read", app=app, form=P.outbox.name,
                  record_id=ids[0] if len(ids) == 1 else None,
                  details={"fields": list(HIDDEN_FIELDS), "ids": ids[:500], "count": len(ids), "via": via})
    return rows, extra


def _mask(row: dict) -> None:
    address = row["recipient"]
    row["recipient"] = mask(address)
    row["rendered"] = None
    row["subject"] = None
    row["hidden"] = True
    if address and row.get("last_error"):
        # a transport's error may quote the address it refused
        row["last_error"] = row["last_error"].replace(address, row["recipient"])


__all__ = ["HIDDEN_FIELDS", "personal", "read_messages", "scope"]
