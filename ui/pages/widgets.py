"""Fields -> HTML widgets and back.

``field_view`` builds what a template needs to draw one field (its widget
name from the field type's ``widget``, label, options, current input value,
error); ``form_data`` turns a submitted HTML form back into the plain values
the record service takes -- the same ``Records.create/update`` path as the
JSON API, so validation happens in one place only.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Mapping
from collections.abc import Iterable
from typing import Any

from forms.model import FieldDef, FormDef

from .i18n import label

# field type name -> widget, for types whose registry entry doesn't say
TYPE_WIDGETS = {
    "text": "text", "textarea": "textarea", "rich_text": "textarea", "number": "number", "decimal": "number",
    "currency": "number", "percent": "number", "rating": "rating", "slider": "slider", "boolean": "switch",
    "date": "date", "time": "time", "datetime": "datetime", "duration": "text", "select": "select",
    "multi_select": "multiselect", "radio": "radio", "checkbox_group": "checkboxes", "cascade": "cascade",
    "phone": "tel", "email": "email", "url": "url", "id_card": "text", "vin": "text", "license_plate": "text",
    "address": "textarea", "geo_point": "text", "user": "user", "role": "select", "link": "link",
    "child_table": "child_table", "attachment": "file", "image": "file", "signature": "readonly",
    "formula": "readonly", "lookup": "readonly", "auto_number": "readonly", "tags": "tags", "json": "json",
}
# registry widget names -> the template macro that draws them
WIDGET_ALIASES = {
    "money": "number", "decimal": "number", "percent": "number", "richtext": "textarea", "multiselect": "multiselect",
    "duration": "text", "phone": "tel", "checkbox": "switch", "toggle": "switch", "datetime-local": "datetime",
    "cascader": "cascade", "link_picker": "link", "user_picker": "user", "file": "file", "upload": "file",
    "textarea": "textarea", "json": "json", "tags": "tags",
}
KNOWN = {"text", "textarea", "number", "slider", "rating", "switch", "date", "time", "datetime", "select",
         "multiselect", "radio", "checkboxes", "cascade", "tel", "email", "url", "user", "link", "child_table",
         "file", "readonly", "tags", "json"}
LIST_WIDGETS = {"multiselect", "checkboxes"}
NOT_INPUT = {"readonly"}
CHILD_WIDGETS = {"text", "tel", "email", "url", "number", "date", "datetime", "time", "select", "radio", "switch", "textarea", "tags"}


def widget_of(f: FieldDef) -> str:
    w = getattr(f.ftype, "widget", None) or TYPE_WIDGETS.get(f.type, "text")
    if f.type in TYPE_WIDGETS and TYPE_WIDGETS[f.type] in ("tel", "email", "url", "cascade", "link", "user",
                                                            "readonly", "child_table", "tags", "json", "file"):
        w = TYPE_WIDGETS[f.type]
    w = WIDGET_ALIASES.get(w, w)
    return w if w in KNOWN else "text"


def options_of(f: FieldDef, lang: str) -> list[dict]:
    opts = []
    for o in f.spec.get("options") or ():
        if isinstance(o, Mapping):
            v = o.get("value")
            opts.append({"value": "" if v is None else str(v), "label": label(o.get("label"), lang, str(v)),
                         "color": o.get("color")})
        else:
            opts.append({"value": str(o), "label": str(o), "color": None})
    return opts


def role_options(app, lang: str) -> list[dict]:
    return [{"value": n, "label": label(r.label, lang, n), "color": None} for n, r in app.roles.items()]


def format_value(f: FieldDef | None, value: Any, lang: str, tz) -> str:
    """Display text for a stored value, through the field type's ``format``."""
    if value is None or value == "" or value == []:
        return ""
    if f is not None:
        fmt = getattr(f.ftype, "format", None)
        if fmt is not None:
            try:
                spec = dict(f.spec)
                spec.setdefault("_tz", tz)
                return str(fmt(value, spec, lang, tz))
            except Exception:  # noqa: BLE001 - display must never fail a page
                pass
    return plain(value, lang, tz)


def plain(value: Any, lang: str, tz) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("Yes" if value else "No")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        s = format(value, "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    if isinstance(value, (list, tuple)):
        return ("、" if lang == "zh" else ", ").join(plain(v, lang, tz) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def input_value(f: FieldDef, value: Any, tz) -> Any:
    """A canonical value -> what the widget's ``value`` attribute shows."""
    if value is None:
        return [] if widget_of(f) in LIST_WIDGETS | {"cascade"} else ""
    w = widget_of(f)
    if w in LIST_WIDGETS:
        return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if w == "cascade":
        if isinstance(value, str):
            return [p for p in value.replace(" / ", "/").split("/") if p]
        if isinstance(value, Mapping):
            return [str(v) for v in value.values() if v]
        return [str(v) for v in value]
    if w == "tags":
        return ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    if w == "file":
        return json.dumps(file_ids(value))
    if w == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    if w == "switch":
        return bool(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(tz).strftime("%Y-%m-%dT%H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, decimal.Decimal):
        return plain(value, "en", tz)
    return str(value)


def submitted_value(f: FieldDef, form) -> Any:
    """One field's value from a submitted form (``form`` is Starlette FormData)."""
    w = widget_of(f)
    name = f.name
    if w == "switch":
        vals = form.getlist(name)
        return "true" in vals or "on" in vals
    if w in LIST_WIDGETS:
        return [v for v in form.getlist(name) if v != ""]
    if w == "cascade":
        vals = [v for v in form.getlist(name) if v != ""]
        return vals or None
    if w == "tags":
        raw = str(form.get(name) or "")
        from forms.fieldtypes.base import split_list
        items = split_list(raw)
        return items or None
    raw = form.get(name)
    if raw is None:
        return None
    raw = str(raw)
    if raw.strip() == "":
        return None
    if w in ("link",) and raw.strip().isdigit():
        return int(raw.strip())
    if w == "file":
        return file_ids(raw) or None
    if w == "json":
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def file_ids(value: Any) -> list[int]:
    """The file ids in a file field's value: stored metadata, or the widget's JSON list of ids."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        fid = item.get("id") if isinstance(item, Mapping) else item
        if isinstance(fid, str) and fid.strip().isdigit():
            fid = int(fid)
        if isinstance(fid, int) and not isinstance(fid, bool) and fid not in out:
            out.append(fid)
    return out


def editable_fields(form: FormDef, hidden: Iterable[str], readonly: Iterable[str], creating: bool) -> list[str]:
    """Fields the HTML form submits: not read-only for the user, not hidden from them."""
    hidden, readonly = set(hidden), set(readonly)
    out = []
    for name, f in form.fields.items():
        if name in hidden or name in readonly or f.readonly:
            continue
        if widget_of(f) in NOT_INPUT:
            continue
        out.append(name)
    return out


class _RowForm:
    """One submitted child row (``items.3.qty``...) seen like a form of its own."""

    def __init__(self, submitted, prefix: str):
        self.s, self.p = submitted, prefix

    def get(self, name, default=None):
        return self.s.get(self.p + name, default)

    def getlist(self, name):
        return self.s.getlist(self.p + name)


def child_rows(child: FormDef, submitted, field: str, hidden=frozenset()) -> tuple[list[dict], list[dict]]:
    """Rows of a child table from ``<field>.<i>.<column>`` inputs, in row order."""
    import re
    indices = sorted({int(m.group(1)) for k in submitted.keys()
                      for m in [re.match(re.escape(field) + r"\.(\d+)\._row$", k)] if m})
    rows, raws = [], []
    for i in indices:
        rf = _RowForm(submitted, f"{field}.{i}.")
        row, raw = {}, {}
        for name, cf in child.fields.items():
            if name in hidden or cf.readonly or widget_of(cf) not in CHILD_WIDGETS:
                continue
            row[name] = submitted_value(cf, rf)
            raw[name] = bool(row[name]) if widget_of(cf) == "switch" else ("" if rf.get(name) is None else str(rf.get(name)))
        if rf.get("_id"):
            raw["_id"] = str(rf.get("_id"))     # the stored row it was drawn from (see records.keep_blind_cells)
        rows.append(row)
        raws.append(raw)
    return rows, raws


def form_data(form: FormDef, submitted, names: Iterable[str], children: Mapping[str, FormDef] | None = None) -> tuple[dict, dict]:
    """(values for the record service, raw values to redraw the form with)."""
    data: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for name in names:
        f = form.fields[name]
        if widget_of(f) == "child_table":
            child = (children or {}).get(name)
            if child is None or str(submitted.get(f"{name}._present") or "") != "1":
                continue
            data[name], raw[name] = child_rows(child, submitted, name)
            continue
        value = submitted_value(f, submitted)
        data[name] = value
        w = widget_of(f)
        if w in LIST_WIDGETS or w == "cascade":
            raw[name] = value or []
        elif w == "switch":
            raw[name] = bool(value)
        elif w == "tags":
            raw[name] = str(submitted.get(name) or "")
        else:
            raw[name] = "" if submitted.get(name) is None else str(submitted.get(name))
    return data, raw


def layout_of(form: FormDef, names: Iterable[str] | None = None) -> list[dict]:
    """Sections and tabs from the form's ``layout`` (default: one section with every field)."""
    names = list(form.fields) if names is None else list(names)
    wanted = set(names)
    out = []
    placed: set[str] = set()
    for i, item in enumerate(form.layout or ()):
        fields = [n for n in (item.get("fields") or ()) if n in wanted]
        placed.update(item.get("fields") or ())
        kind = "tab" if "tab" in item else "section"
        out.append({"id": f"s{i}", "kind": kind, "title": item.get(kind), "columns": int(item.get("columns") or 1),
                    "fields": fields, "collapsed": bool(item.get("collapsed")), "visible_when": item.get("visible_when")})
    rest = [n for n in names if n not in placed]
    if rest:
        out.append({"id": f"s{len(out)}", "kind": "section", "title": None if not out else {"zh": "其他", "en": "More"},
                    "columns": 2 if len(rest) > 3 else 1, "fields": rest, "collapsed": False, "visible_when": None})
    return [s for s in out if s["fields"]]
