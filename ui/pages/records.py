"""Generated pages for every form: list, detail, create/edit, and their htmx helpers.

Everything goes through the record service (``runtime.services['records']``)
exactly like the JSON API: the list is ``Records.list`` (row filters of the
user's access rules apply), a save is ``Records.create/update`` (server-side
validation is the single source of truth; its per-field errors are drawn
under each field), a record the user may not read is a 404.

``POST .../_form_state`` evaluates ``visible_when`` / ``required_when`` /
``readonly_when`` on the server for the values being typed, so the browser
shows exactly what the server will enforce.
"""
from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from engine import platform as P
from engine.auth import list_users
from engine.clock import from_db
from engine.crypto import mask
from engine.errors import NotFound, RecordInvalid
from forms.access import grant
from forms.comments import record_timeline
from forms.comments.mentions import segments as mention_segments
from forms.model import SYSTEM_COLUMNS, SYSTEM_LABELS, FormDef

from ..audited import audited_read, pii_title, titles_shown
from ..deps import unit_of_work
from . import engines
from .common import PageRoute, fragment, lang_of, page_user, redirect, render, runtime
from .file_widgets import file_items, file_widget
from .i18n import label, translate
from .widgets import (CHILD_WIDGETS, editable_fields, form_data, format_value, input_value, layout_of, options_of,
                      role_options, widget_of)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

RESERVED = {"q", "order", "page", "size", "cols", "lang"}
PAGE_SIZES = (10, 20, 50, 100)
TIMELINE_LIMIT = 100     # newest entries on the detail page; the API pages further (?limit=)


def _svc(rt):
    return rt.services["records"]


def _lang(request, user, app=None) -> str:
    return lang_of(request, user, getattr(app, "default_language", None))


def _app_lang(request, user, app_name) -> str:
    try:
        app = runtime(request).app(app_name)
    except Exception:  # noqa: BLE001
        app = None
    return _lang(request, user, app)


def _form(uow, name: str) -> FormDef:
    fd = uow.app.forms.get(name)
    if fd is None or fd.child:
        raise NotFound(f"no form '{name}'")
    return fd


def col_label(form: FormDef, name: str, lang: str) -> str:
    if name in form.fields:
        return label(form.fields[name].label, lang, name)
    return label(SYSTEM_LABELS.get(name), lang, name)


def can_view_pii(uow) -> bool:
    return _svc(uow.runtime).can_view_pii(uow)


# widgets that can be drawn empty with the masked value as their placeholder
BLIND_WIDGETS = {"text", "tel", "email", "url", "textarea", "number"}


def blind_pii(uow, fd: FormDef, creating: bool) -> set[str]:
    """The PII fields of ``fd`` this user edits without seeing them.

    Someone without ``view_pii`` may still be allowed to update a record; writing
    the stored phone into an ``<input value>`` would hand them what every other
    page masks.  Such inputs are drawn empty (the masked value as placeholder)
    and an empty one means "keep".  A new record has nothing stored to hide.
    """
    if creating or can_view_pii(uow):
        return set()
    return {n for n, f in fd.fields.items() if f.pii}


def keep_blind(data: dict, blind: set[str]) -> dict:
    """``data`` without the blind PII fields left empty: the stored value stays."""
    return {k: v for k, v in data.items() if not (k in blind and v in (None, "", []))}


def blind_input(item: dict, stored: Any, typed: Any, lang: str) -> None:
    """A blind PII input (a field or a child cell): what was just typed or nothing, and, if a value is
    stored, its masked form as placeholder beside the hint that leaving it empty keeps it."""
    item["value"] = typed if typed is not None else ""
    if stored not in (None, ""):
        item["placeholder"], item["hint"] = mask(str(stored)), translate("pii_keep", lang)


# ---------------------------------------------------------------------------
# display helpers

FILE_TYPES = {"attachment", "image"}
CACHED_TYPES = {"select", "radio", "boolean", "multi_select", "checkbox_group", "role", "cascade", "rating"}


class Display:
    """Formats values of one form for one user: types, links, users, states, PII."""

    def __init__(self, uow, form: FormDef, lang: str):
        self.uow, self.form, self.lang = uow, form, lang
        self.tz = uow.app.tz
        self.pii = can_view_pii(uow)
        self.titles: dict[tuple[str, int], str] = {}
        self.users: dict[str, str] | None = None
        self.cache: dict = {}          # (field, value) -> cell, for option-like types repeated on every row

    def preload(self, records: list[dict], names) -> None:
        """One query per linked form for the titles of every linked record shown."""
        want: dict[str, set] = {}
        for name in names:
            f = self.form.fields.get(name)
            if f is None or f.type != "link":
                continue
            for r in records:
                v = r.get(name)
                if isinstance(v, int):
                    want.setdefault(f.target_form, set()).add(v)
        for target, ids in want.items():
            self.titles.update(link_titles(self.uow, target, ids, self.lang))

    def is_pii(self, f) -> bool:
        """A PII field, or a lookup showing one of a linked record: masked alike, as ``to_json`` does."""
        target = _svc(self.uow.runtime).lookup_target(self.uow.app, self.form, f)
        return f.pii or (target is not None and target.pii)

    def user_name(self, username: str | None) -> str:
        if not username:
            return ""
        if self.users is None:
            self.users = user_names(self.uow)
        if username == "system" and username not in self.users:
            return "系统" if self.lang == "zh" else "System"
        return self.users.get(username, username)

    def value(self, name: str, rec: Mapping[str, Any]) -> dict:
        """``{text, url, badge, color}`` for one cell."""
        v = rec.get(name)
        if name == "state":
            lab, color = engines.state_label(self.uow.app, self.form.name, v)
            return {"text": label(lab, self.lang, v or ""), "badge": bool(v), "color": tone(color, _state_tone(v))}
        if name in ("owner", "created_by"):
            return {"text": self.user_name(v)}
        if name in ("created_at", "updated_at"):
            return {"text": format_value(None, v, self.lang, self.tz)}
        if name == "id":
            return {"text": str(v)}
        f = self.form.fields.get(name)
        if f is None or v is None or v == "" or v == []:
            return {"text": ""}
        if not self.pii and self.is_pii(f):
            return {"text": mask(str(v))}
        if f.type == "link" and isinstance(v, int):
            key = (f.target_form, v)
            if key not in self.titles:
                self.titles.update(link_titles(self.uow, f.target_form, {v}, self.lang))
            return {"text": self.titles.get(key) or f"#{v}", "url": f"/apps/{self.uow.app.name}/forms/{f.target_form}/{v}"}
        if f.type == "user":
            return {"text": self.user_name(str(v))}
        if f.type in FILE_TYPES:
            return {"text": format_value(f, v, self.lang, self.tz), "files": file_items(v), "image": f.type == "image"}
        if f.type in CACHED_TYPES:
            key = (name, v if not isinstance(v, list) else tuple(v))
            hit = self.cache.get(key)
            if hit is None:
                hit = self.cache[key] = self._formatted(name, f, v)
            return hit
        return self._formatted(name, f, v)

    def _formatted(self, name: str, f, v) -> dict:
        text = format_value(f, v, self.lang, self.tz)
        if f.type in ("select", "radio") and f.spec.get("options"):
            for o in f.spec.get("options") or ():
                if isinstance(o, Mapping) and str(o.get("value")) == str(v) and o.get("color"):
                    return {"text": text, "badge": True, "color": tone(o.get("color"))}
        return {"text": text}


TONES = {"red": "danger", "orange": "warning", "yellow": "warning", "amber": "warning", "blue": "info", "cyan": "info",
         "green": "success", "gray": "muted", "grey": "muted", "purple": "info", "black": "neutral"}
KNOWN_TONES = {"neutral", "info", "success", "warning", "danger", "muted", "draft", "pending", "submitted", "in-progress",
               "approved", "done", "returned", "on-hold", "rejected", "overdue", "closed", "cancelled"}


def tone(color: str | None, fallback: str = "info") -> str:
    """An option/state colour from the YAML -> a badge tone of the design system."""
    if not color:
        return fallback
    c = str(color).lower()
    return c if c in KNOWN_TONES else TONES.get(c, fallback)


def _state_tone(state: str | None) -> str:
    s = (state or "").lower()
    for key, tone in (("reject", "rejected"), ("lost", "rejected"), ("cancel", "cancelled"), ("closed", "closed"),
                      ("won", "approved"), ("done", "done"), ("resolved", "approved"), ("approved", "approved"),
                      ("pending", "pending"), ("new", "draft"), ("draft", "draft"), ("progress", "in-progress")):
        if key in s:
            return tone
    return "info"


def link_titles(uow, target: str, ids, lang: str) -> dict[tuple[str, int], str]:
    """``{(form, id): title}`` for the records of ``target`` the user may read."""
    svc = _svc(uow.runtime)
    fd = uow.app.forms.get(target)
    if fd is None or not ids:
        return {}
    try:
        q, g = svc.readable(uow, fd)
    except Exception:  # noqa: BLE001 - not readable: show ids only
        return {}
    table = svc.table(uow.app, fd.name)
    rows = uow.conn.execute(q.where(table.c.id.in_(sorted(ids)))).mappings().all()
    recs = [svc.decode(fd, r) for r in rows]
    return {(target, i): t for i, t in shown_titles(uow, fd, recs, lang).items()}


def shown_titles(uow, fd: FormDef, recs: list[Mapping], lang: str) -> dict[int, str]:
    """``{id: title}`` of records of ``fd`` as this user may see them -- every title shown of a record
    that isn't the page's own goes through here (links, link pickers, filter options, the
    home page's lists).

    A PII title is masked without ``view_pii``.  With it, it is shown only if the read it is shown in
    audits it (``ui.audited.titles_shown``: the page's ``audited_read``), else masked: personal data
    is never shown unaudited, not even as the name of a linked customer."""
    hidden = grant(fd, uow.user, "read").hidden
    linked = _linked_titles(uow, fd, recs, lang, hidden)
    if linked is not None:
        return linked
    pii = can_view_pii(uow)
    if pii and recs and pii_title(_svc(uow.runtime), uow, fd):
        pii = titles_shown(uow, fd, [r["id"] for r in recs])
    return {r["id"]: record_title(fd, r, lang, uow.app.tz, pii, hidden) for r in recs}


def _title_link(uow, fd: FormDef, hidden=()) -> Any:
    """The title field when it is a link (a survey known by its customer) to a form whose own title
    is not a link -- one level, so a form titled by a link to itself can't loop; else None."""
    f = fd.fields.get(fd.title_field)
    if f is None or f.type != "link" or fd.title_field in hidden:
        return None
    target = uow.app.forms.get(f.target_form)
    tf = target.fields.get(target.title_field) if target is not None else None
    return f if tf is None or tf.type != "link" else None


def _linked_titles(uow, fd: FormDef, recs: list[Mapping], lang: str, hidden=()) -> dict[int, str] | None:
    """``{id: title}`` of records titled by a link: the linked records' titles as links show them
    (their permissions and personal-data rules), one query; None when ``fd``'s title is not a link."""
    f = _title_link(uow, fd, hidden)
    if f is None:
        return None
    ids = {r.get(fd.title_field) for r in recs if isinstance(r.get(fd.title_field), int)}
    named = link_titles(uow, f.target_form, ids, lang) if ids else {}
    return {r["id"]: named.get((f.target_form, r.get(fd.title_field))) or f"#{r['id']}" for r in recs}


def title_of(uow, fd: FormDef, recs: list[Mapping], lang: str, pii: bool, hidden=()) -> dict[int, str]:
    """``{id: title}`` of records a page of ``fd`` itself shows (its heading, a drill-down's rows):
    ``record_title``, or the linked records' titles when the title field is a link."""
    linked = _linked_titles(uow, fd, recs, lang, hidden)
    if linked is not None:
        return linked
    return {r["id"]: record_title(fd, r, lang, uow.app.tz, pii, hidden) for r in recs}


def record_title(fd: FormDef, rec: Mapping, lang: str, tz, pii: bool = True, hidden=()) -> str:
    name = fd.title_field
    v = rec.get(name)
    if v is None or name in hidden:
        return f"#{rec.get('id')}"
    f = fd.fields.get(name)
    if f is not None and f.pii and not pii:
        return mask(str(v))
    return format_value(f, v, lang, tz) or f"#{rec.get('id')}"


def user_names(uow) -> dict[str, str]:
    rows = uow.conn.execute(select(P.users.c.username, P.users.c.display_name)).all()
    return {r.username: (r.display_name or r.username) for r in rows}


# ---------------------------------------------------------------------------
# list

def _filters_from_query(form: FormDef, params, hidden) -> dict[str, str]:
    out = {}
    for key, value in params.multi_items():
        if key in RESERVED or key.startswith("_") or value == "":
            continue
        name = key.partition("__")[0]
        if name in form.fields and name not in hidden or name in SYSTEM_COLUMNS:
            out[key] = value
    return out


def _filter_controls(uow, form: FormDef, lang: str, active: Mapping[str, str], hidden) -> list[dict]:
    names = list((form.spec.get("list") or {}).get("filters") or [])
    out = []
    for name in names:
        if name in hidden:
            continue
        ctl = {"name": name, "label": col_label(form, name, lang)}
        f = form.fields.get(name)
        if name == "state":
            wf = engines.workflow_for(uow.app, form.name)
            opts = [{"value": s, "label": label(st.label, lang, s)} for s, st in (wf.states.items() if wf else [])]
            ctl.update(kind="select", options=opts, value=active.get("state", ""))
        elif name in ("owner", "created_by") or (f is not None and f.type == "user"):
            ctl.update(kind="text", param=name, value=active.get(name, ""))
        elif name in ("created_at", "updated_at") or (f is not None and widget_of(f) in ("date", "datetime", "number", "slider", "rating")):
            kind = "date" if name in ("created_at", "updated_at") or widget_of(f) in ("date", "datetime") else "number"
            ctl.update(kind="range", input=kind, lo=active.get(f"{name}__gte", ""), hi=active.get(f"{name}__lte", ""))
        elif f is not None and f.type == "boolean":
            ctl.update(kind="select", options=[{"value": "true", "label": translate("yes", lang)},
                                                {"value": "false", "label": translate("no", lang)}], value=active.get(name, ""))
        elif f is not None and f.type == "role":
            ctl.update(kind="select", options=role_options(uow.app, lang), value=active.get(name, ""))
        elif f is not None and f.spec.get("options"):
            ops = getattr(f.ftype, "filter_ops", ())
            param = name if "eq" in ops or not ops or f.type in ("select", "radio") else f"{name}__contains"
            ctl.update(kind="select", param=param, options=options_of(f, lang), value=active.get(param, ""))
        elif f is not None and f.type == "link":
            target = uow.app.forms.get(f.target_form)
            opts = []
            if target is not None:
                try:
                    recs, _ = _svc(uow.runtime).list(uow, target.name, limit=200, count=False, order=None)
                    opts = [{"value": str(i), "label": t} for i, t in shown_titles(uow, target, recs, lang).items()]
                except Exception:  # noqa: BLE001 - a target the user can't read: no options
                    opts = []
            ctl.update(kind="select", options=opts, value=active.get(name, ""))
        else:
            ops = getattr(f.ftype, "filter_ops", ()) if f is not None else ()
            param = f"{name}__contains" if "contains" in ops and not (f is not None and f.pii) else name
            ctl.update(kind="text", param=param, value=active.get(param, ""))
        ctl.setdefault("param", name)
        out.append(ctl)
    return out


def _export_links(request: Request, app: str, form: str, query: str) -> list[dict]:
    """CSV/XLSX links of the list export API (same filters as the page)."""
    base = f"/api/apps/{app}/{form}/_export"
    extra = "&".join(p for p in query.split("&") if p and not p.startswith(("page=", "size=", "cols="))) if query else ""
    return [{"fmt": fmt, "url": f"{base}?format={fmt}" + (f"&{extra}" if extra else "")} for fmt in ("csv", "xlsx")]


def _columns(form: FormDef, g, params) -> tuple[list[str], list[str]]:
    """(columns the user may pick, columns shown): ``?cols=`` or the form's list columns, less hidden fields."""
    available = [c for c in list(form.fields) + list(SYSTEM_COLUMNS)
                 if c not in g.hidden and (c not in form.fields or (form.fields[c].stored and form.fields[c].type != "child_table"))]
    cols = [c for c in (params.get("cols") or "").split(",") if c in available] or \
           [c for c in form.list_columns if c not in g.hidden]
    return available, cols


@router.get("/apps/{app_name}/forms/{form_name}")
def list_page(app_name: str, form_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    params = request.query_params
    q = (params.get("q") or "").strip()
    order = params.get("order") or None
    page = max(1, _int(params.get("page"), 1))
    with audited_read(rt, app_name, form_name, user, lang, columns=lambda fd, g: _columns(fd, g, params)[1],
                      via="page") as read:
        uow, svc, g = read.uow, _svc(rt), read.grant
        form = _form(uow, form_name)
        if not g.allowed:
            raise NotFound(form_name)
        size = _int(params.get("size"), int((form.spec.get("list") or {}).get("page_size") or 20))
        size = size if size in PAGE_SIZES else 20
        available, cols = _columns(form, g, params)
        filters = _filters_from_query(form, params, g.hidden)
        if order and order.lstrip("-") not in available:
            order = None
        rows, total = svc.list(uow, form.name, filters=filters, q=q or None, order=order,
                               limit=size, offset=(page - 1) * size)
        disp = Display(uow, form, lang)
        disp.preload(rows, cols)
        title_col = form.title_field if form.title_field in cols else cols[0] if cols else "id"
        base = f"/apps/{app_name}/forms/{form_name}"
        table = [{"id": r["id"], "url": f"{base}/{r['id']}",
                  "cells": [dict(disp.value(c, r), col=c, link=(c == title_col)) for c in cols]} for r in rows]
        controls = _filter_controls(uow, form, lang, dict(params), g.hidden)
        read.served([r["id"] for r in rows])
        can_create = grant(form, user, "create").allowed
        current_order = order or form.list_order
        headers = []
        for c in cols:
            f = form.fields.get(c)
            sortable = c in SYSTEM_COLUMNS or (f is not None and f.stored and not f.pii and getattr(f.ftype, "sortable", True))
            direction = "ascending" if current_order == c else "descending" if current_order == f"-{c}" else None
            nxt = f"-{c}" if current_order == c else c
            headers.append({"name": c, "label": col_label(form, c, lang), "sortable": sortable, "sort": direction,
                            "url": _qs(params, order=nxt, page=None), "num": bool(f is not None and widget_of(f) == "number")})
        pages = max(1, -(-(total or 0) // size))
        keep = {k: v for k, v in params.multi_items() if k not in ("page",)}
        return render(request, "records/list.html", {
            "app_name": app_name, "form": form, "form_label": label(form.label, lang, form.name),
            "rows": table, "headers": headers, "total": total or 0, "page": page, "pages": pages, "size": size,
            "sizes": PAGE_SIZES, "q": q, "controls": controls, "base": base, "can_create": can_create,
            "prev_url": _qs(params, page=page - 1) if page > 1 else None,
            "next_url": _qs(params, page=page + 1) if page < pages else None,
            "page_links": _page_links(params, page, pages),
            "columns": [{"name": c, "label": col_label(form, c, lang), "on": c in cols} for c in available],
            "cols_param": ",".join(cols), "order": order or "", "keep": keep,
            "exports": _export_links(request, app_name, form_name, request.url.query),
            "active_filters": {k: v for k, v in filters.items()},
        }, conn=uow.conn)


def _int(v, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _qs(params, **changes) -> str:
    items = [(k, v) for k, v in params.multi_items() if k not in changes]
    for k, v in changes.items():
        if v is not None and v != "":
            items.append((k, str(v)))
    return "?" + urllib.parse.urlencode(items)


def _page_links(params, page: int, pages: int) -> list[dict]:
    want = sorted({1, pages, page - 2, page - 1, page, page + 1, page + 2})
    out, last = [], 0
    for n in want:
        if n < 1 or n > pages:
            continue
        if n - last > 1:
            out.append({"gap": True})
        out.append({"n": n, "url": _qs(params, page=n), "current": n == page})
        last = n
    return out


# ---------------------------------------------------------------------------
# detail

@router.get("/apps/{app_name}/forms/{form_name}/{record_id:int}")
def detail_page(app_name: str, form_name: str, record_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with audited_read(rt, app_name, form_name, user, lang, children=True, via="page") as read:
        uow, svc, g = read.uow, _svc(rt), read.grant
        form = _form(uow, form_name)
        rec = svc.get(uow, form.name, record_id)      # 404 when the user may not read it
        read.served([record_id])
        disp = Display(uow, form, lang)
        disp.preload([rec], form.fields)
        ctx_state = field_states(uow, form, rec)
        sections = []
        for sec in layout_of(form, [n for n in form.fields if n not in g.hidden]):
            items = []
            for name in sec["fields"]:
                f = form.fields[name]
                if not ctx_state.get(name, {}).get("visible", True):
                    continue
                if f.type == "child_table":
                    items.append({"name": name, "label": label(f.label, lang, name), "child": child_table(uow, form, name, record_id, lang)})
                    continue
                items.append(dict(disp.value(name, rec), name=name, label=label(f.label, lang, name),
                                  wide=widget_of(f) in ("textarea", "json", "file")))
            if items:
                sections.append({"title": sec["title"], "items": items, "columns": sec["columns"]})
        system = [dict(disp.value(c, rec), label=col_label(form, c, lang)) for c in ("state", "owner", "created_by", "created_at", "updated_at") if rec.get(c) not in (None, "")]
        timeline, timeline_more = build_timeline(uow, form, record_id, lang, disp)
        transitions = engines.available_transitions(uow, form.name, rec)
        with_fields = [t for t in transitions if t.get("fields")]
        if with_fields:
            views = {fv["name"]: fv for sec in build_form(uow, form, lang, {}, [], rec)["sections"] for fv in sec["fields"]}
            for t in with_fields:
                needed = {r.get("field") for r in t.get("requires") or []}
                t["inputs"] = [dict(views[n], id=f"t-{t['name']}-{n}", visible=True, wide=True, dup=False,
                                    required=views[n]["required"] or n in needed)
                               for n in t["fields"] if n in views and views[n]["widget"] != "display"]
        can_edit = grant(form, user, "update").allowed and _row_allowed(uow, form, record_id, "update")
        can_delete = grant(form, user, "delete").allowed and _row_allowed(uow, form, record_id, "delete")
        title = title_of(uow, form, [rec], lang, disp.pii, g.hidden)[rec["id"]]
        tasks = record_tasks(uow, form.name, record_id, lang)
        try:
            flow = engines.flow_summary(uow, form.name, record_id, lang)
        except Exception:  # noqa: BLE001 - the flow panel is extra information
            import logging
            logging.getLogger("loom.pages").exception("flow summary failed")
            flow = None
        base = f"/apps/{app_name}/forms/{form_name}"
        return render(request, "records/detail.html", {
            "app_name": app_name, "form": form, "form_label": label(form.label, lang, form.name), "rec": rec,
            "title": title, "sections": sections, "system": system, "timeline": timeline, "transitions": transitions,
            "timeline_more": timeline_more, "comments_url": f"{base}/{record_id}/comments",
            "can_edit": can_edit, "can_delete": can_delete, "base": base, "record_url": f"{base}/{record_id}",
            "tasks": tasks, "flash": request.query_params.get("saved"), "flow": flow,
        }, conn=uow.conn)


def _row_allowed(uow, form: FormDef, record_id: int, action: str) -> bool:
    try:
        _svc(uow.runtime).get(uow, form.name, record_id, action=action)
        return True
    except Exception:  # noqa: BLE001
        return False


def child_table(uow, form: FormDef, field: str, record_id: int, lang: str) -> dict:
    svc = _svc(uow.runtime)
    f = form.fields[field]
    child = uow.app.forms.get(f.target_form)
    if child is None:
        return {"headers": [], "rows": []}
    rows = svc.children(uow, form, field, record_id)
    hidden = grant(child, uow.user, "read").hidden
    cols = [n for n, cf in child.fields.items() if n not in hidden and cf.stored][:8]
    disp = Display(uow, child, lang)
    disp.preload(rows, cols)
    return {"headers": [label(child.fields[c].label, lang, c) for c in cols],
            "nums": [widget_of(child.fields[c]) == "number" for c in cols],
            "rows": [[disp.value(c, r)["text"] for c in cols] for r in rows]}


KIND_KEYS = {"create": "created", "update": "updated", "transition": "transition", "rule": "rule",
             "message": "message", "task": "task", "comment": "comment", "approval": "approval", "sla": "sla",
             "journey": "journey"}
EVENTS = {
    "requested": ("发起", "requested"), "approved": ("通过", "approved"), "rejected": ("驳回", "rejected"),
    "approval_approved": ("审批通过", "approved"), "approval_rejected": ("审批驳回", "rejected"),
    "cancelled": ("取消", "cancelled"), "completed": ("完成", "completed"), "transferred": ("转交", "transferred"),
    "signer_added": ("加签", "signer added"), "vote": ("表决", "voted"), "started": ("开始计时", "started"),
    "paused": ("暂停", "paused"), "resumed": ("恢复", "resumed"), "stopped": ("停止", "stopped"),
    "met": ("按时完成", "met"), "breached": ("超时", "breached"), "warned": ("即将超时", "warning"),
    "escalated": ("升级", "escalated"), "enrolled": ("加入", "enrolled"), "done": ("完成", "done"),
    "skipped": ("跳过", "skipped"), "waiting": ("等待", "waiting"), "missed": ("错过", "missed"),
    "timeout": ("超时", "timed out"), "exited": ("退出", "exited"), "goal": ("达成目标", "goal reached"),
}


def _event(name: str, lang: str) -> str:
    pair = EVENTS.get(str(name))
    return (pair[1] if lang == "en" else pair[0]) if pair else str(name)


def _summary(uow, form: FormDef, kind: str, data: Mapping, lang: str) -> str | None:
    """One readable line for engine entries (transitions, approvals, tasks, SLA, journeys)."""
    wf = engines.workflow_for(uow.app, form.name)

    def state(name):
        lab, _ = engines.state_label(uow.app, form.name, name)
        return label(lab, lang, name or "—")

    def transition(name):
        td = wf.transitions.get(name) if wf is not None and name else None
        return label(td.label, lang, name) if td is not None else (name or "")

    try:
        if kind == "transition" and "to" in data:
            return f"{transition(data.get('transition'))}（{state(data.get('from'))} → {state(data.get('to'))}）"
        if kind == "approval":
            return f"{transition(data.get('transition'))} · {_event(data.get('event'), lang)}"
        if kind == "task":
            extra = f" → {data.get('to')}" if data.get("to") else ""
            return f"{label(data.get('title'), lang, '')} · {_event(data.get('event'), lang)}{extra}".strip(" ·")
        if kind == "sla":
            sd = next((x for x in (wf.sla if wf is not None else ()) if x.name == data.get("sla")), None)
            name = label(sd.label, lang, sd.name) if sd is not None and sd.label else data.get("sla")
            return f"SLA {name} · {_event(data.get('event'), lang)}"
        if kind == "journey":
            flows = uow.app.section("flows") or {}
            j = flows.get(data.get("journey"))
            name = label(getattr(j, "label", None), lang, data.get("journey") or "")
            step = f" · {data.get('step')}" if data.get("step") else ""
            return f"{name}{step} · {_event(data.get('event'), lang)}"
    except Exception:  # noqa: BLE001 - fall back to the raw entry
        return None
    return None


def build_timeline(uow, form: FormDef, record_id: int, lang: str, disp: Display,
                   limit: int = TIMELINE_LIMIT) -> tuple[list[dict], bool]:
    """(entries newest first, whether older ones were left out): history and comments, bounded."""
    items = []
    hidden = grant(form, uow.user, "read").hidden
    entries, more = record_timeline(uow, form.name, record_id, limit)
    for h in reversed(entries):
        if h.get("kind") == "comment":
            items.append(_comment_item(h, disp, lang, _local_time(uow, h.get("at"))))
            continue
        changes = []
        data = h.get("changes") or {}
        if isinstance(data, Mapping):
            for name, pair in list(data.items())[:30]:
                if name in hidden:
                    continue
                if isinstance(pair, (list, tuple)) and len(pair) == 2:
                    old, new = pair
                    changes.append({"label": col_label(form, name, lang) if (name in form.fields or name in SYSTEM_COLUMNS) else name,
                                    "old": _hist_text(uow, form, name, old, lang, disp),
                                    "new": _hist_text(uow, form, name, new, lang, disp)})
                else:
                    changes.append({"label": name, "old": None, "new": _short(pair)})
        when = _local_time(uow, h.get("at"))
        kind = h.get("kind") or ""
        summary = _summary(uow, form, kind, data, lang) if isinstance(data, Mapping) else None
        items.append({"kind": kind, "kind_label": translate(KIND_KEYS.get(kind, kind), lang),
                      "actor": disp.user_name(h.get("actor")), "at": when, "summary": summary,
                      "changes": [] if summary else changes, "comment": h.get("comment")})
    return items, more


def _local_time(uow, at: Any) -> str:
    if not at:
        return ""
    try:
        return dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).astimezone(uow.app.tz).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(at)


def _comment_item(h: Mapping, disp: Display, lang: str, when: str) -> dict:
    """A comment on the timeline: its text as escaped segments with the checked @mentions highlighted."""
    names = {u: disp.user_name(u) for u in h.get("mentions") or ()}
    return {"kind": "comment", "kind_label": translate("commented", lang), "actor": disp.user_name(h.get("actor")),
            "at": when, "comment_id": h["comment_id"], "can_delete": h.get("can_delete"),
            "segments": mention_segments(h.get("comment") or "", names, names)}


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else str(v)
    return s if len(s) < 120 else s[:117] + "…"


def _hist_text(uow, form: FormDef, name: str, value: Any, lang: str, disp: Display) -> str:
    """History values are JSON shapes: parse back through the type to format them."""
    if value is None or value == "":
        return None
    f = form.fields.get(name)
    if name == "state":
        return disp.value("state", {"state": value})["text"]
    if name in ("owner", "created_by"):
        return disp.user_name(value)
    if f is None:
        return _short(value)
    if f.pii:
        return str(value)          # already masked in history
    try:
        spec = dict(f.spec)
        spec["_tz"] = uow.app.tz
        parsed = f.ftype.parse(value, spec)
    except Exception:  # noqa: BLE001
        parsed = value
    return _short(disp.value(name, {name: parsed})["text"] or value)


def record_tasks(uow, form_name: str, record_id: int, lang: str) -> list[dict]:
    t = P.tasks
    rows = uow.conn.execute(select(t).where(t.c.app == uow.app.name, t.c.form == form_name, t.c.record_id == record_id,
                                            t.c.status == "open").order_by(t.c.due_at)).mappings().all()
    out = []
    for r in rows:
        mine = r["assignee"] == uow.user.username or (r["assignee"] is None and r["candidate_role"] in uow.user.roles)
        out.append({"id": r["id"], "title": label(r["title"], lang, r["kind"]), "assignee": r["assignee"], "mine": mine,
                    "kind": r["kind"]})
    return out


# ---------------------------------------------------------------------------
# create / edit

def field_states(uow, form: FormDef, rec: Mapping[str, Any]) -> dict[str, dict]:
    """``{field: {visible, required, readonly}}`` for the values in ``rec`` --
    the same expressions, evaluated the same way, as the record service."""
    svc = _svc(uow.runtime)
    env = svc.env(uow, form, rec)
    ctx = uow.eval_context()
    g = grant(form, uow.user, "update" if rec.get("id") else "create")

    def truthy(expr) -> bool:
        try:
            return bool(expr.evaluate(env, ctx))
        except Exception:  # noqa: BLE001 - an expression that can't be evaluated yet counts as false
            return False

    out = {}
    for name, f in form.fields.items():
        visible = f.visible_when is None or truthy(f.visible_when)
        required = f.required or (f.required_when is not None and truthy(f.required_when))
        readonly = f.readonly or name in g.readonly or (f.readonly_when is not None and truthy(f.readonly_when))
        out[name] = {"visible": visible, "required": bool(required and visible), "readonly": bool(readonly)}
    return out


def section_states(uow, form: FormDef, rec: Mapping[str, Any]) -> dict[str, bool]:
    out = {}
    exprs = []
    for i, item in enumerate(form.layout or ()):
        if item.get("visible_when"):
            exprs.append((f"s{i}", item["visible_when"]))
    if not exprs:
        return out
    from engine.expressions import compile_expression
    svc = _svc(uow.runtime)
    env = svc.env(uow, form, rec)
    for sid, source in exprs:
        try:
            out[sid] = bool(compile_expression(source).evaluate(env, uow.eval_context()))
        except Exception:  # noqa: BLE001
            out[sid] = False
    return out


def parse_for_state(uow, form: FormDef, data: Mapping[str, Any]) -> dict:
    """Typed values of what the user has typed so far; unparseable values count as empty."""
    out = {}
    svc = _svc(uow.runtime)
    for name, raw in data.items():
        f = form.fields.get(name)
        if f is None:
            continue
        spec = dict(f.spec)
        spec["_tz"] = uow.app.tz
        if f.type == "cascade" and f.spec.get("options_file"):
            try:
                spec["_options_tree"] = svc._options_tree(uow.app, f.spec["options_file"])
            except Exception:  # noqa: BLE001
                pass
        try:
            out[name] = f.ftype.parse(raw, spec)
        except Exception:  # noqa: BLE001
            out[name] = None
    return out


def build_form(uow, form: FormDef, lang: str, values: Mapping[str, Any], errors: list[dict], rec: Mapping | None,
               raw: Mapping[str, Any] | None = None) -> dict:
    """Everything ``records/form.html`` draws: sections, fields, widgets, errors."""
    creating = rec is None
    g = grant(form, uow.user, "create" if creating else "update")
    hidden = grant(form, uow.user, "read").hidden | g.hidden
    merged = dict(rec or {})
    merged.update(values)
    states = field_states(uow, form, merged)
    sstates = section_states(uow, form, merged)
    blind = blind_pii(uow, form, creating)
    editable = set(editable_fields(form, hidden, g.readonly, creating))
    editable -= {n for n in blind if widget_of(form.fields[n]) not in BLIND_WIDGETS}    # shown masked instead
    disp = Display(uow, form, lang)
    errs: dict[str, list[str]] = {}
    general = []
    for e in errors or []:
        fname = e.get("field")
        if fname in form.fields and fname not in hidden:
            errs.setdefault(fname, []).append(e.get("message", ""))
        elif fname and "[" in fname and fname.split("[")[0] in form.fields:
            continue                  # a child row's cell: shown in the row
        else:
            general.append((col_label(form, fname.split(".")[0].split("[")[0], lang) + "：" if fname and fname.split("[")[0] in form.fields else "") + e.get("message", ""))
    for fname, msgs in errs.items():
        codes = [e.get("code") for e in errors if e.get("field") == fname]
        if len(msgs) > 1 and "required" in codes and any(c != "required" for c in codes):
            errs[fname] = [e.get("message", "") for e in errors if e.get("field") == fname and e.get("code") != "required"]
    base = f"/apps/{uow.app.name}/forms/{form.name}"
    sections = []
    for sec in layout_of(form, [n for n in form.fields if n not in hidden]):
        fields = []
        for name in sec["fields"]:
            f = form.fields[name]
            st = states.get(name, {})
            w = widget_of(f)
            is_input = name in editable and not st.get("readonly")
            fv = {"name": name, "id": f"f-{name}", "label": label(f.label, lang, name), "widget": w if is_input else "display",
                  "type": f.type, "required": st.get("required", False), "visible": st.get("visible", True),
                  "help": label(f.spec.get("help"), lang), "placeholder": label(f.spec.get("placeholder"), lang),
                  "errors": errs.get(name, []), "min": f.spec.get("min"), "max": f.spec.get("max"),
                  "step": f.spec.get("step"), "maxlength": f.spec.get("max_length"), "dup": name in form.duplicate_check,
                  "wide": w in ("textarea", "json", "checkboxes", "file") and sec["columns"] > 1}
            if raw is not None and name in raw:
                fv["value"] = raw[name]
            else:
                fv["value"] = input_value(f, merged.get(name), uow.app.tz)
            if is_input and name in blind:
                blind_input(fv, (rec or {}).get(name), (raw or {}).get(name), lang)
                fv["required"] = fv["required"] and not fv.get("placeholder")    # empty keeps the stored value
            if not is_input and creating and merged.get(name) in (None, "", []):
                continue          # maintained by the system (scores, timestamps...): nothing to show on a new record
            if is_input and w == "child_table":
                fv["editor"] = child_editor(uow, form, f, rec, (raw or {}).get(name), errors, lang)
                fv["wide"] = True
                fields.append(fv)
                continue
            if not is_input:
                cell = disp.value(name, merged) if merged.get(name) not in (None, "", []) else {"text": ""}
                fv["display"] = cell.get("text", "")
                if w == "child_table" and rec is not None:
                    fv["child"] = child_table(uow, form, name, rec["id"], lang)
                    fv["widget"] = "child_display"
            else:
                _widget_extras(uow, form, f, fv, merged, lang, base)
            fields.append(fv)
        if fields:
            sections.append({**sec, "title": label(sec["title"], lang) if sec["title"] else "",
                             "visible": sstates.get(sec["id"], True), "fields": fields})
    return {"sections": sections, "general_errors": general, "error_count": len(errors or []),
            "field_names": sorted(editable), "tabs": [s for s in sections if s["kind"] == "tab"]}


def _widget_extras(uow, form: FormDef, f, fv: dict, merged: Mapping, lang: str, base: str) -> None:
    w = fv["widget"]
    if w in ("select", "radio", "multiselect", "checkboxes"):
        fv["options"] = role_options(uow.app, lang) if f.type == "role" else options_of(f, lang)
        cur = fv["value"] if isinstance(fv["value"], list) else [fv["value"]]
        fv["selected"] = {str(v) for v in cur if v not in (None, "")}
    elif w == "file":
        file_widget(uow, form, f, fv, merged, lang)
    elif w == "rating":
        fv["stars"] = list(range(1, int(f.spec.get("max") or 5) + 1))
    elif w == "cascade":
        tree = cascade_tree(uow, f)
        levels = f.spec.get("levels") or [None, None, None]
        chosen = list(fv["value"] or [])
        lv = []
        node = tree
        for i, lev in enumerate(levels):
            opts = [{"value": str(n.get("value")), "label": label(n.get("label"), lang, str(n.get("value")))}
                    for n in (node or []) if isinstance(n, Mapping)]
            cur = chosen[i] if i < len(chosen) else ""
            lv.append({"i": i, "label": label(lev, lang) if lev else f"{i + 1}", "options": opts, "value": cur,
                       "url": f"{base}/_cascade/{f.name}?level={i + 1}" if i + 1 < len(levels) else None})
            nxt = next((n for n in (node or []) if isinstance(n, Mapping) and str(n.get("value")) == cur), None)
            node = (nxt or {}).get("children") if nxt else []
        fv["levels"] = lv
    elif w == "link":
        v = merged.get(f.name)
        fv["current"] = None
        if isinstance(fv["value"], str) and fv["value"].isdigit():
            v = int(fv["value"])
        if isinstance(v, int):
            titles = link_titles(uow, f.target_form, {v}, lang)
            fv["current"] = {"value": str(v), "label": titles.get((f.target_form, v), f"#{v}")}
        fv["search_url"] = f"{base}/_link/{f.name}"
        fv["options"] = link_options(uow, f.target_form, "", lang, limit=20)
    elif w == "user":
        v = merged.get(f.name)
        v = fv["value"] or v
        fv["current"] = {"value": str(v), "label": user_names(uow).get(str(v), str(v))} if v else None
        fv["search_url"] = f"{base}/_user/{f.name}"
        fv["options"] = user_options(uow, f, "", limit=20)


def child_editor(uow, form: FormDef, f, rec: Mapping | None, raw_rows: list | None, errors: list, lang: str) -> dict:
    """Rows of an editable child table: existing rows, or the rows just submitted."""
    import re
    child = uow.app.forms.get(f.target_form)
    if child is None:
        return {"cols": [], "rows": []}
    hidden = grant(form, uow.user, "read").hidden
    blind = blind_pii(uow, child, rec is None)
    cols = []
    for n, cf in child.fields.items():
        w = widget_of(cf)
        if not cf.stored and cf.type != "formula":
            continue
        editable = not cf.readonly and w in CHILD_WIDGETS and (n not in blind or w in BLIND_WIDGETS)
        col = {"name": n, "label": label(cf.label, lang, n), "widget": w if editable else "display",
               "required": cf.required, "num": w == "number" or cf.type in ("formula", "currency", "decimal")}
        if w in ("select", "radio") and editable:
            col["widget"] = "select"
            col["options"] = options_of(cf, lang)
        cols.append(col)
    cell_errors: dict[tuple[int, str], str] = {}
    for e in errors or []:
        m = re.match(re.escape(f.name) + r"\[(\d+)\]\.(\w+)$", str(e.get("field") or ""))
        if m:
            cell_errors[(int(m.group(1)), m.group(2))] = e.get("message", "")
    rows = []
    stored_rows = stored_children(uow, form, f.name, rec)
    if raw_rows is not None:                 # redrawn after an error: the rows as submitted, each with its stored row
        source = [(r, stored_rows.get(r.get("_id"))) for r in raw_rows]
    else:
        source = [(None, r) for r in stored_rows.values()]
    disp = Display(uow, child, lang)
    for i, (raw, stored) in enumerate(source):
        cells = []
        for c in cols:
            cf = child.fields[c["name"]]
            if raw is not None:
                value = raw.get(c["name"], "")
            else:
                value = input_value(cf, stored.get(c["name"]), uow.app.tz)
            text = disp.value(c["name"], stored)["text"] if stored is not None and c["widget"] == "display" else ""
            cell = {"col": c, "value": value, "text": text, "error": cell_errors.get((i, c["name"]))}
            if c["name"] in blind and c["widget"] != "display":
                blind_input(cell, (stored or {}).get(c["name"]), None if raw is None else value, lang)
            cells.append(cell)
        rows.append({"i": i, "id": stored["id"] if stored else None, "cells": cells})
    return {"cols": cols, "rows": rows, "field": f.name, "min": f.spec.get("min_rows"), "max": f.spec.get("max_rows")}


def stored_children(uow, form: FormDef, field: str, rec: Mapping | None) -> dict[str, dict]:
    """The stored rows of a record's child table by id (as the ``._id`` input carries it)."""
    if rec is None or not rec.get("id"):
        return {}
    return {str(r["id"]): r for r in _svc(uow.runtime).children(uow, form, field, rec["id"])}


def keep_blind_cells(uow, form: FormDef, old: Mapping, children: Mapping[str, FormDef], data: dict, raw: dict) -> None:
    """Child rows are replaced whole on save, so a blind PII cell left empty in a row that was
    stored (its ``._id``) gets the stored value back -- in ``data`` only; ``raw`` redraws it empty."""
    for name, child in children.items():
        blind = blind_pii(uow, child, False)
        if not blind or name not in data:
            continue
        stored_rows = stored_children(uow, form, name, old)
        for row, typed in zip(data[name], raw[name]):
            stored = stored_rows.get(typed.get("_id"))
            for c in blind:
                v = (stored or {}).get(c)
                if v is not None and row.get(c) in (None, "", []):
                    row[c] = child.fields[c].ftype.to_json(v, child.fields[c].spec)


def cascade_tree(uow, f) -> list:
    path = f.spec.get("options_file")
    if path:
        try:
            tree = _svc(uow.runtime)._options_tree(uow.app, path)
        except Exception:  # noqa: BLE001
            tree = []
    else:
        tree = f.spec.get("options") or []
    if isinstance(tree, Mapping):
        tree = tree.get("options") or tree.get("items") or [{"value": k, "label": k, "children": v} for k, v in tree.items()]
    return tree or []


def link_options(uow, target: str, q: str, lang: str, limit: int = 20) -> list[dict]:
    fd = uow.app.forms.get(target)
    if fd is None:
        return []
    try:
        recs, _ = _svc(uow.runtime).list(uow, target, q=q or None, limit=limit, count=False)
    except Exception:  # noqa: BLE001 - not readable: nothing to pick
        return []
    return [{"value": str(i), "label": t} for i, t in shown_titles(uow, fd, recs, lang).items()]


def user_options(uow, f, q: str, limit: int = 20) -> list[dict]:
    roles = (f.spec.get("roles") or []) if f is not None else []
    users = list_users(uow.conn)
    q = (q or "").lower()
    out = []
    for u in users:
        if roles and not (u.roles & set(roles)):
            continue
        name = u.display_name or u.username
        if q and q not in u.username.lower() and q not in name.lower():
            continue
        out.append({"value": u.username, "label": f"{name} ({u.username})" if name != u.username else name})
        if len(out) >= limit:
            break
    return out


def _form_page(request, uow, form: FormDef, lang: str, rec: Mapping | None, values: Mapping, errors: list,
               raw: Mapping | None = None, warnings: list | None = None, status: int = 200):
    data = build_form(uow, form, lang, values, errors, rec, raw)
    base = f"/apps/{uow.app.name}/forms/{form.name}"
    title = None
    if rec is not None:
        title = title_of(uow, form, [rec], lang, can_view_pii(uow), grant(form, uow.user, "read").hidden)[rec["id"]]
    return render(request, "records/form.html", {
        "app_name": uow.app.name, "form": form, "form_label": label(form.label, lang, form.name), "rec": rec,
        "title": title, "base": base, "action": f"{base}/{rec['id']}/edit" if rec else f"{base}/new",
        "cancel_url": f"{base}/{rec['id']}" if rec else base, "warnings": warnings or [], **data,
    }, status=status, conn=uow.conn)


@router.get("/apps/{app_name}/forms/{form_name}/new")
def new_page(app_name: str, form_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with audited_read(rt, app_name, form_name, user, lang, columns=_nothing_stored, via="page") as read:
        uow = read.uow
        form = _form(uow, form_name)
        if not grant(form, user, "create").allowed:
            from engine.errors import Forbidden
            raise Forbidden(f"you may not create {form.name} records")
        values = defaults(uow, form)
        # prefill from the query string (?customer=12 from a related record's page)
        for k, v in request.query_params.items():
            if k in form.fields and v:
                values.update(parse_for_state(uow, form, {k: v}))
        return _form_page(request, uow, form, lang, None, values, [])


def _nothing_stored(form: FormDef, g) -> tuple:
    """``columns`` of an ``audited_read`` that shows none of the form's stored values, only titles of
    linked records (a new record's form, a link picker's options, duplicate warnings)."""
    return ()


def defaults(uow, form: FormDef) -> dict:
    """Default values to show on a new form (the service applies them again on save)."""
    svc = _svc(uow.runtime)
    rec = {c: None for c in SYSTEM_COLUMNS}
    rec.update({f: None for f in form.fields})
    rec["created_by"] = uow.user.username
    try:
        svc._apply_defaults(uow, form, rec, {})
    except Exception:  # noqa: BLE001 - defaults are a convenience on the page
        pass
    return {k: v for k, v in rec.items() if k in form.fields and v is not None}


@router.post("/apps/{app_name}/forms/{form_name}/new")
async def create_submit(app_name: str, form_name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    submitted = await request.form()
    return _save(request, rt, user, lang, app_name, form_name, None, submitted)


@router.get("/apps/{app_name}/forms/{form_name}/{record_id:int}/edit")
def edit_page(app_name: str, form_name: str, record_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with audited_read(rt, app_name, form_name, user, lang, children=True, via="page") as read:
        uow, svc = read.uow, _svc(rt)
        form = _form(uow, form_name)
        rec = svc.get(uow, form.name, record_id)
        if not grant(form, user, "update").allowed or not _row_allowed(uow, form, record_id, "update"):
            from engine.errors import Forbidden
            raise Forbidden(f"you may not change this {form.name}")
        read.served([record_id])
        return _form_page(request, uow, form, lang, rec, {}, [])


@router.post("/apps/{app_name}/forms/{form_name}/{record_id:int}/edit")
async def edit_submit(app_name: str, form_name: str, record_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    submitted = await request.form()
    return _save(request, rt, user, lang, app_name, form_name, record_id, submitted)


def _save(request, rt, user, lang, app_name, form_name, record_id, submitted):
    svc = _svc(rt)
    errors: list[dict] = []
    with unit_of_work(rt, app_name, user, lang) as uow:
        form = _form(uow, form_name)
        old = svc.get(uow, form.name, record_id) if record_id else None
        g = grant(form, user, "update" if old else "create")
        hidden = grant(form, user, "read").hidden | g.hidden
        names = [n for n in editable_fields(form, hidden, g.readonly, old is None)
                 if n in set(str(submitted.get("_fields") or "").split(","))]
        children = _children(uow, form)
        data, raw = form_data(form, submitted, names, children)
        data = keep_blind(data, blind_pii(uow, form, old is None))
        if old is not None:
            keep_blind_cells(uow, form, old, children, data, raw)
            # only what changed: read-only-when fields left as they were don't trip the service
            data = {k: v for k, v in data.items() if _changed(form, k, v, old, uow)}
    try:
        with unit_of_work(rt, app_name, user, lang, write=True) as uow:
            if old is None:
                rec = svc.create(uow, form_name, data)
            else:
                rec = svc.update(uow, form_name, record_id, data)
            rid = rec["id"]
    except RecordInvalid as exc:
        errors = exc.errors
    if errors:
        # the redraw shows the stored values (raw PII with view_pii) as the edit page does: audited alike
        with audited_read(rt, app_name, form_name, user, lang, children=old is not None,
                          columns=None if old else _nothing_stored, via="page") as read:
            uow = read.uow
            form = _form(uow, form_name)
            read.served([old["id"]] if old else [])
            values = parse_for_state(uow, form, data)
            return _form_page(request, uow, form, lang, old, values, errors, raw=raw, status=422)
    return redirect(f"/apps/{app_name}/forms/{form_name}/{rid}?saved=1", request)


def _children(uow, form: FormDef) -> dict[str, FormDef]:
    return {n: uow.app.forms[f.target_form] for n, f in form.fields.items()
            if f.type == "child_table" and f.target_form in uow.app.forms}


def _changed(form: FormDef, name: str, value: Any, old: Mapping, uow) -> bool:
    f = form.fields[name]
    if f.type == "child_table":
        return True               # the rows are replaced as a whole
    spec = dict(f.spec)
    spec["_tz"] = uow.app.tz
    try:
        parsed = f.ftype.parse(value, spec)
    except Exception:  # noqa: BLE001 - invalid input: let the service report it
        return True
    return parsed != old.get(name)


@router.post("/apps/{app_name}/forms/{form_name}/{record_id:int}/delete")
def delete_submit(app_name: str, form_name: str, record_id: int, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with unit_of_work(rt, app_name, user, lang, write=True) as uow:
        _form(uow, form_name)
        _svc(rt).delete(uow, form_name, record_id)
    return redirect(f"/apps/{app_name}/forms/{form_name}?deleted=1", request)


# ---------------------------------------------------------------------------
# htmx helpers of the form page

@router.post("/apps/{app_name}/forms/{form_name}/_form_state")
async def form_state(app_name: str, form_name: str, request: Request):
    """Which fields are visible/required/read-only for the values typed so far."""
    user = page_user(request)
    rt = runtime(request)
    submitted = await request.form()
    lang = _app_lang(request, user, app_name)
    with unit_of_work(rt, app_name, user, lang) as uow:
        form = _form(uow, form_name)
        rec: dict = {c: None for c in SYSTEM_COLUMNS}
        rid = str(submitted.get("_id") or "")
        if rid.isdigit():
            rec.update(_svc(rt).get(uow, form.name, int(rid)))
        names = [n for n in str(submitted.get("_fields") or "").split(",") if n in form.fields]
        data, _ = form_data(form, submitted, names)
        rec.update(parse_for_state(uow, form, keep_blind(data, blind_pii(uow, form, not rid.isdigit()))))
        hidden = grant(form, user, "read").hidden
        states = {k: v for k, v in field_states(uow, form, rec).items() if k not in hidden}
        sections = section_states(uow, form, rec)
    return JSONResponse({"fields": states, "sections": sections})


@router.post("/apps/{app_name}/forms/{form_name}/_duplicates")
async def duplicates(app_name: str, form_name: str, request: Request):
    """Duplicate warnings (same phone/VIN...) before saving."""
    user = page_user(request)
    rt = runtime(request)
    submitted = await request.form()
    lang = _app_lang(request, user, app_name)
    with audited_read(rt, app_name, form_name, user, lang, columns=_nothing_stored, via="page",
                      title_forms=(form_name,)) as read:      # the duplicates are shown by their titles
        uow = read.uow
        form = _form(uow, form_name)
        data = {n: submitted.get(n) for n in form.duplicate_check if submitted.get(n)}
        rid = str(submitted.get("_id") or "")
        found = _svc(rt).duplicates(uow, form.name, data, exclude_id=int(rid) if rid.isdigit() else None) if data else []
        items = []
        for d in found:
            links = []
            titles = link_titles(uow, form.name, set(d.get("ids") or []), lang)
            for i in d.get("ids") or []:
                if (form.name, i) in titles:
                    links.append({"url": f"/apps/{app_name}/forms/{form_name}/{i}", "label": titles[(form.name, i)]})
                else:
                    links.append({"url": None, "label": f"#{i}"})
            items.append({"message": d.get("message"), "links": links})
    return fragment(request, "records/_duplicates.html", {"lang": lang, "items": items})


@router.get("/apps/{app_name}/forms/{form_name}/_cascade/{field}")
def cascade_options(app_name: str, form_name: str, field: str, request: Request, level: int = 1):
    """Options of level ``level`` of a cascade, for the values chosen above it."""
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    with unit_of_work(rt, app_name, user, lang) as uow:
        form = _form(uow, form_name)
        f = form.fields.get(field)
        if f is None or widget_of(f) != "cascade":
            raise NotFound(field)
        # htmx sends every level's select (in no guaranteed order): walk the tree by membership
        chosen = [v for v in request.query_params.getlist(field) if v]
        wanted = set(chosen)
        node = cascade_tree(uow, f)
        for _ in range(level):
            nxt = next((n for n in node if isinstance(n, Mapping) and str(n.get("value")) in wanted), None)
            node = (nxt or {}).get("children") or []
        opts = [{"value": str(n.get("value")), "label": label(n.get("label"), lang, str(n.get("value")))}
                for n in node if isinstance(n, Mapping)]
        depth = len(f.spec.get("levels") or [None, None, None])
    return fragment(request, "records/_cascade.html", {"lang": lang, "options": opts, "field": field,
                                                      "deeper": list(range(level + 1, depth))})


@router.get("/apps/{app_name}/forms/{form_name}/_link/{field}")
def link_search(app_name: str, form_name: str, field: str, request: Request):
    """Records of the link's target form the user may read, matching ``_q_<field>``."""
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    q = (request.query_params.get(f"_q_{field}") or request.query_params.get("q") or "").strip()
    with audited_read(rt, app_name, form_name, user, lang, columns=_nothing_stored, via="page") as read:
        uow = read.uow
        form = uow.app.forms.get(form_name)
        f = form.fields.get(field) if form else None
        if f is None or f.type != "link":
            raise NotFound(field)
        opts = link_options(uow, f.target_form, q, lang)
    return fragment(request, "records/_options.html", {"lang": lang, "options": opts, "q": q, "auto": len(opts) == 1,
                                                       "current": request.query_params.get(field) or ""})


@router.get("/apps/{app_name}/forms/{form_name}/_user/{field}")
def user_search(app_name: str, form_name: str, field: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    q = (request.query_params.get(f"_q_{field}") or request.query_params.get("q") or "").strip()
    with unit_of_work(rt, app_name, user, lang) as uow:
        form = uow.app.forms.get(form_name)
        f = form.fields.get(field) if form else None
        if f is None:
            raise NotFound(field)
        opts = user_options(uow, f, q)
    return fragment(request, "records/_options.html", {"lang": lang, "options": opts, "q": q, "auto": len(opts) == 1,
                                                       "current": request.query_params.get(field) or ""})


# ---------------------------------------------------------------------------
# workflow transitions

@router.post("/apps/{app_name}/forms/{form_name}/{record_id:int}/transition/{name}")
async def transition(app_name: str, form_name: str, record_id: int, name: str, request: Request):
    user = page_user(request)
    rt = runtime(request)
    lang = _app_lang(request, user, app_name)
    submitted = await request.form()
    comment = str(submitted.get("comment") or "").strip() or None
    with unit_of_work(rt, app_name, user, lang, write=True) as uow:
        form = _form(uow, form_name)
        _svc(rt).get(uow, form_name, record_id)
        data = {}
        wf = engines.workflow_for(uow.app, form_name)
        td = wf.transitions.get(name) if wf is not None else None
        wanted = [n for n in str(submitted.get("_fields") or "").split(",") if n]
        if td is not None and wanted:
            g = grant(form, user, "update")
            hidden = grant(form, user, "read").hidden | g.hidden
            allowed = set(td.fields) & set(editable_fields(form, hidden, g.readonly, False))
            data, _ = form_data(form, submitted, [n for n in wanted if n in allowed], _children(uow, form))
        engines.fire_transition(uow, form_name, record_id, name, comment, data)
    return redirect(f"/apps/{app_name}/forms/{form_name}/{record_id}", request)


def not_found_fragment(request) -> Response:
    return HTMLResponse("", status_code=404)
