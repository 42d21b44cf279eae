"""Reads of personal data audited in their own transaction, for the JSON API and the HTML pages alike.

Both ``ui.api.records`` and ``ui.pages.records`` read records through
``audited_read``, so a page and an API call that show the same personal data
write the same ``pii.read`` audit row, the same way; so do a report's
drill-down (``audited_read``) and the home page's lists of records by title
(``audited_titles``).  This module depends only on the engines and
``ui.deps``, never on the API or the pages.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import Iterator

from engine.audit import audit
from engine.auth import User
from engine.definitions import AppDef
from engine.uow import UnitOfWork
from forms.access import Grant, grant
from forms.model import FormDef

from .deps import installed_app


class AuditedRead:
    """A read of one form's records in the transaction that audits it.

    Every read that shows personal data unmasked writes one ``pii.read`` audit
    row (who, form, record ids, which fields) *in the transaction of the read
    itself*, so "served" and "audited" are one unit of work: the route
    returns only after that transaction has committed, and if the audit row
    can't be written (or the commit fails) the request fails -- 500/503 (an
    error page for the HTML pages), no personal data -- and nothing is
    recorded either.

    Which fields a read shows unmasked is known before reading: the form's PII
    fields the caller's grant doesn't hide, lookups that show a PII field, and
    (``children``) the PII fields of its child tables -- and only if the caller
    may view PII at all, decided by the very predicate ``to_json`` and the
    pages' ``Display`` mask with.  So the transaction is chosen up front:

    * nothing to show unmasked (no PII in the form, or masked for this user):
      a plain read transaction that writes nothing -- on SQLite it runs beside
      the writer, as every read does;
    * otherwise a write transaction from the start.  SQLite can't safely turn
      a read snapshot into a writer (the upgrade fails with SQLITE_BUSY as
      soon as another write has committed since the read began), so the read
      takes the write lock for its duration, once -- before, it took a read
      transaction and then the write lock for the audit row, on a second
      connection.  On PostgreSQL it is an ordinary transaction.  A read that
      finds no records writes nothing in it.

    The route reports the ids it serves with ``served``; leaving an audited
    read without doing so is a bug and fails the request rather than serve
    personal data unaudited.

    Titles of *other* records (a ticket's link to its customer, a link picker's
    options, a filter's options) are personal data too when the linked form is
    titled by a PII field.  The read plans for them (``title_forms``) and the
    title lookup reports the ids it shows unmasked (``titles_shown``); they are
    audited here, one row per linked form, naming the page's form in ``on``.
    A page of no one form (the home page: ``audited_titles``) has ``form`` None
    and shows records by their titles only; its rows have no ``on``.
    """

    def __init__(self, uow: UnitOfWork, form: FormDef | None, g: Grant | None, fields: list[str],
                 via: str | None = None):
        self.uow, self.form, self.grant, self.fields, self.via = uow, form, g, fields, via
        self.ids: list[int] | None = None

    def served(self, ids: list[int]) -> None:
        self.ids = list(ids)

    def _audit(self, titles: dict[str, set[int]]) -> None:
        if self.fields:
            if self.ids is None:
                raise RuntimeError(f"read of {self.form.app}.{self.form.name} shows personal data but reported no records")
            self._row(self.form, self.fields, self.ids)
        on = {"on": self.form.name} if self.form is not None else {}
        for name, ids in sorted(titles.items()):
            fd = self.uow.app.forms[name]
            self._row(fd, [fd.title_field], sorted(ids), **on)

    def _row(self, fd: FormDef, fields: list[str], ids: list[int], **extra) -> None:
        if ids:
            uow = self.uow
            details = {"fields": fields, "ids": ids[:500], "count": len(ids), **extra}
            if self.via:
                details["via"] = self.via
            audit(uow.conn, uow.now, uow.user.username, "pii.read", app=fd.app, form=fd.name,
                  record_id=ids[0] if len(ids) == 1 else None, details=details)


def audit_response(uow: UnitOfWork, fd: FormDef, record_id: int) -> None:
    """A write whose answer is the stored record (an update, a workflow transition) shows its
    personal data like a read does: audited in the write's own transaction -- which is open, so the
    row goes in with the change or not at all."""
    g = grant(fd, uow.user, "read")
    _audit_answer(uow, fd, g, pii_shown(uow.service("records"), uow, fd, g), record_id)


def audit_created(uow: UnitOfWork, fd: FormDef, rec: dict, given: Collection[str]) -> None:
    """A create answers with the stored record.  Personal data in it that the caller did not send --
    a lookup's (a linked record's field), or a value a default or a rule filled in -- is shown like
    a read shows it: audited in the create's own transaction.  The caller's own input is not (they
    sent it)."""
    g = grant(fd, uow.user, "read")
    fields = [n for n in pii_shown(uow.service("records"), uow, fd, g) if n not in given and rec.get(n) not in (None, "")]
    _audit_answer(uow, fd, g, fields, rec["id"])


def _audit_answer(uow: UnitOfWork, fd: FormDef, g: Grant, fields: list[str], record_id: int) -> None:
    if fields:
        read = AuditedRead(uow, fd, g, fields)
        read.served([record_id])
        read._audit({})


TITLES = "loom_pii_titles"      # conn.info, during an audited read: {form: ids} whose PII titles it showed


def pii_title(svc, uow: UnitOfWork, fd: FormDef) -> bool:
    """Whether ``fd``'s record titles are personal data this user sees unmasked (a PII title field
    the user's grant doesn't hide).  Without ``view_pii`` they are masked, and so never audited."""
    f = fd.fields.get(fd.title_field)
    return (f is not None and f.pii and svc.can_view_pii(uow)
            and fd.title_field not in grant(fd, uow.user, "read").hidden)


def titles_shown(uow: UnitOfWork, fd: FormDef, ids: Iterable[int]) -> bool:
    """Report that the PII titles of ``fd``'s records ``ids`` are about to be shown unmasked.

    False when the transaction audits no titles (a plain read, not planned by ``audited_read`` for
    ``fd``'s titles): the caller masks them then -- personal data is never shown unaudited."""
    shown = uow.conn.info.get(TITLES)
    if shown is None:
        return False
    shown.setdefault(fd.name, set()).update(ids)
    return True


def linked_forms(svc, app, fd: FormDef, children: bool = False) -> set[str]:
    """The forms whose titles a page of ``fd`` may show: the targets of its links (and its child
    tables'), and -- for a target titled by a link of its own (a survey known by its customer) --
    that link's target, whose title names it.  ``fd``'s own title link counts too (its heading)."""
    out = set()
    for f in fd.fields.values():
        if f.type == "link":
            out.add(f.target_form)
            target = app.forms.get(f.target_form)
            title = target.fields.get(target.title_field) if target is not None else None
            if title is not None and title.type == "link":
                out.add(title.target_form)
        elif children and f.type == "child_table":
            out |= linked_forms(svc, app, svc.form(app, f.target_form))
    return out


def pii_shown(svc, uow: UnitOfWork, fd: FormDef, g: Grant, children: bool = False,
              names: Collection[str] | None = None) -> list[str]:
    """The fields of ``fd`` whose personal data a read shows this user unmasked (``table.field`` for child tables).

    ``names``: the only fields the read shows (a list page's columns); by default every field the grant doesn't hide."""
    if not svc.can_view_pii(uow):
        return []
    shown = []
    for name, f in fd.fields.items():
        if name in g.hidden or (names is not None and name not in names):
            continue
        target = svc.lookup_target(uow.app, fd, f)
        if f.pii or (target is not None and target.pii):
            shown.append(name)
        elif children and f.type == "child_table":
            child = svc.form(uow.app, f.target_form)
            shown += [f"{name}.{c}" for c in pii_shown(svc, uow, child, grant(child, uow.user, "read"))]
    return shown


def _plan(rt, app_name: str, user: User, lang: str) -> UnitOfWork:
    """A unit of work without a transaction yet: what a read will show is worked out on it first."""
    return UnitOfWork(rt, None, installed_app(rt, app_name, user), user, rt.clock.now(), lang=lang)


@contextlib.contextmanager
def audited_read(rt, app_name: str, form_name: str, user: User, lang: str, *, children: bool = False,
                 columns: Callable[[FormDef, Grant], Collection[str]] | None = None,
                 via: str | None = None, title_forms: Collection[str] = ()) -> Iterator[AuditedRead]:
    """An ``AuditedRead`` of ``app_name.form_name``: see its docstring.

    ``columns(form, grant)``: the fields the read will show, when it shows only some (a list page's
    columns) -- worked out before the transaction, as the transaction depends on it.  ``via`` is
    recorded in the audit row (``"page"`` for the HTML pages).  ``title_forms``: forms whose titles
    the read shows besides those of the form's links (``linked_forms``)."""
    svc = rt.services["records"]
    plan = _plan(rt, app_name, user, lang)
    fd = svc.form(plan.app, form_name)
    g = grant(fd, user, "read")
    fields = pii_shown(svc, plan, fd, g, children, columns(fd, g) if columns else None)
    with _audited(plan, fd, g, fields, linked_forms(svc, plan.app, fd, children) | set(title_forms), via) as read:
        yield read


@contextlib.contextmanager
def audited_titles(rt, app_name: str, user: User, lang: str, title_forms: Callable[[AppDef], Collection[str]],
                   via: str | None = None) -> Iterator[AuditedRead]:
    """An ``AuditedRead`` of a page that shows records only by their titles, of several forms and of
    none in particular (the home page's lists of a user's latest records): no stored field is shown
    but the title, and each form's PII titles are audited as linked titles are (``shown_titles``).

    ``title_forms(app)``: the forms whose titles the page may show, worked out before the transaction."""
    plan = _plan(rt, app_name, user, lang)
    with _audited(plan, None, None, [], title_forms(plan.app), via) as read:
        yield read


@contextlib.contextmanager
def _audited(plan: UnitOfWork, fd: FormDef | None, g: Grant | None, fields: list[str],
             title_forms: Collection[str], via: str | None) -> Iterator[AuditedRead]:
    """The transaction of an audited read planned on ``plan``: a writer only if it may show personal
    data unmasked -- ``fields`` of ``fd``, or the PII titles of ``title_forms`` -- else a plain read."""
    svc = plan.runtime.services["records"]
    titled = [t for t in title_forms if t in plan.app.forms and pii_title(svc, plan, plan.app.forms[t])]
    writes = bool(fields or titled)
    db = plan.runtime.db
    with (db.write() if writes else db.read()) as conn:
        read = AuditedRead(replace(plan, conn=conn), fd, g, fields, via)
        if writes:
            conn.info[TITLES] = {}          # any write transaction can audit the titles it shows
        try:
            yield read
            read._audit(conn.info.get(TITLES) or {})
        finally:
            conn.info.pop(TITLES, None)     # the connection goes back to the pool
