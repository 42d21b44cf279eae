"""References: link (another record), user, role, lookup (a field through a link), child_table.

Existence (does record 12 / user ``li.lei`` exist?) is checked by the record
service, which has the database; these types check shape only.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

import sqlalchemy as sa

from .base import (CHOICE_OPS, FIELD_TYPES, FieldType, display, fail, is_empty, jsonable, memo_parser, nfkc, register,
                   text_of, to_decimal)

_ID_MAX = 2**63 - 1
_PLAIN_ID = re.compile(r"[0-9]{1,19}")

ID_COLUMN = sa.BigInteger().with_variant(sa.Integer(), "sqlite")   # the same type as every table's id


@register
class LinkType(FieldType):
    """The id of a record of ``form``; accepts ``12``, ``"12"``, ``{"id": 12}``."""

    name = "link"
    label = {"zh": "关联记录", "en": "Link"}
    widget = "link"
    filter_ops = CHOICE_OPS
    definition_keys = {"form": {"type": "string"}, "depends_on": {"type": "string"}, "options_filter": {"type": "string"}}

    def column_type(self, spec):
        return ID_COLUMN

    def coerce(self, raw, spec):
        if type(raw) is not str and isinstance(raw, Mapping):
            raw = raw.get("id")
        if isinstance(raw, str):
            s = nfkc(raw).lstrip("#")
            d = to_decimal(s) if s.isdigit() else None
        else:
            d = to_decimal(raw)
        if d is None or d != d.to_integral_value() or d < 1 or d > 2**63 - 1:
            raise fail("invalid_link", f"“{raw}”不是有效的记录编号，请从列表中选择",
                       f"'{raw}' is not a record id; pick the record from the list")
        return int(d)

    def compile_parser(self, spec):
        """Fast path: ids as ints or ASCII digit strings."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not LinkType.coerce:
            return super().compile_parser(spec)
        parse, plain = self.parse, _PLAIN_ID.fullmatch

        def parser(raw):
            t = type(raw)
            if t is int:
                n = raw
            elif t is str and plain(raw):
                n = int(raw)
            else:
                return None if raw is None else parse(raw, spec)
            return n if 1 <= n <= _ID_MAX else parse(raw, spec)

        return parser

    def value_schema(self, spec):
        return {"type": "integer", "minimum": 1, "x-link-form": spec.get("form")}

    def from_db(self, value, spec):
        return None if value is None else int(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else f"#{value}"


@register
class UserType(FieldType):
    """A user name (``li.lei``).  ``roles``/``where`` limit the picker; the service checks existence."""

    name = "user"
    label = {"zh": "人员", "en": "User"}
    widget = "user"
    filter_ops = CHOICE_OPS
    definition_keys = {"roles": {"type": "array", "items": {"type": "string"}}, "where": {"type": "string"}}

    def column_type(self, spec):
        return sa.String(64)

    def coerce(self, raw, spec):
        if type(raw) is not str and isinstance(raw, Mapping):
            raw = raw.get("username") or raw.get("name")
        if not isinstance(raw, str):
            raise fail("invalid_user", "应为用户名", "Expected a user name")
        s = nfkc(raw)
        if len(s) > 64 or not all(c.isalnum() or c in "._-@" for c in s):
            raise fail("invalid_user", f"“{raw}”不是有效的用户名（字母、数字和 . _ - @，最多64位）",
                       f"'{raw}' is not a valid user name (letters, digits and . _ - @, up to 64)")
        return s

    def compile_parser(self, spec):
        """User names repeat in imports: remember each spelling's result (``parse`` is pure here)."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not UserType.coerce:
            return super().compile_parser(spec)
        parse = self.parse
        return memo_parser(lambda raw: parse(raw, spec), cap=8192)

    def value_schema(self, spec):
        return {"type": "string", "maxLength": 64}

    def from_db(self, value, spec):
        return None if value is None else str(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else str(value)


ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@register
class RoleType(FieldType):
    """A role name of the app.  ``roles`` limits the choice; the service may pass
    the app's roles as ``spec['_roles']`` (name -> {label}) to check and show labels."""

    name = "role"
    label = {"zh": "角色", "en": "Role"}
    widget = "role"
    filter_ops = CHOICE_OPS
    definition_keys = {"roles": {"type": "array", "items": {"type": "string"}}}

    def column_type(self, spec):
        return sa.String(64)

    def coerce(self, raw, spec):
        if not isinstance(raw, str):
            raise fail("invalid_role", "应为角色名", "Expected a role name")
        s = nfkc(raw)
        known = spec.get("_roles")
        allowed = list(spec.get("roles") or (list(known) if known else []))
        if allowed and s not in allowed and known:
            for name in allowed:            # a label typed in an import
                lab = (known.get(name) or {}).get("label") if isinstance(known.get(name), Mapping) else None
                if lab is not None and s in ((lab.values() if isinstance(lab, Mapping) else [lab])):
                    return name
        if not ROLE_NAME.fullmatch(s):
            raise fail("invalid_role", f"“{raw}”不是有效的角色名（小写字母、数字和下划线）",
                       f"'{raw}' is not a role name (lower-case letters, digits and _)")
        if allowed and s not in allowed:
            raise fail("invalid_role", f"角色“{raw}”不可选，可选：{'、'.join(allowed)}",
                       f"Role '{raw}' is not allowed here; choose one of: {', '.join(allowed)}")
        return s

    def value_schema(self, spec):
        schema: dict = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
        if spec.get("roles"):
            schema["enum"] = list(spec["roles"])
        return schema

    def from_db(self, value, spec):
        return None if value is None else str(value)

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        known = spec.get("_roles") or {}
        entry = known.get(value)
        if isinstance(entry, Mapping) and entry.get("label"):
            return text_of(entry["label"], lang, value)
        lab = getattr(entry, "label", None)
        return text_of(lab, lang, value) if lab else str(value)


def _readonly_error(what_zh: str, what_en: str):
    return fail("readonly", f"{what_zh}由系统计算，不能填写", f"{what_en} is computed and cannot be entered")


@register
class LookupType(FieldType):
    """Shows ``field`` of the record linked by ``via``; not stored, read-only.

    Its value has the type of the target field: the service may pass that
    field's spec as ``spec['_target_spec']`` so JSON and display use it.
    """

    name = "lookup"
    label = {"zh": "引用字段", "en": "Lookup"}
    widget = "lookup"
    filter_ops = ()
    stored = False
    readonly = True
    sortable = False
    definition_keys = {"via": {"type": "string"}, "field": {"type": "string"}}

    def check_definition(self, spec):
        problems = []
        if not spec.get("via"):
            problems.append(((), "a lookup field needs 'via: <link field of this form>'"))
        if not spec.get("field"):
            problems.append(((), "a lookup field needs 'field: <field of the linked form>'"))
        return problems

    def _target(self, spec):
        t = spec.get("_target_spec")
        if isinstance(t, Mapping) and t.get("type") in FIELD_TYPES and t.get("type") != "lookup":
            return FIELD_TYPES[t["type"]], t
        return None, None

    def column_type(self, spec):
        return None

    def parse(self, raw, spec):
        if is_empty(raw):
            return None
        raise _readonly_error("引用字段", "A lookup field")

    def coerce(self, raw, spec):
        raise _readonly_error("引用字段", "A lookup field")

    def value_schema(self, spec):
        ftype, tspec = self._target(spec)
        return ftype.value_schema(tspec) if ftype else {}

    def to_json(self, value, spec):
        ftype, tspec = self._target(spec)
        return ftype.to_json(value, tspec) if ftype and value is not None else jsonable(value)

    def format(self, value, spec, lang="zh", tz=None):
        ftype, tspec = self._target(spec)
        if ftype and value is not None:
            return ftype.format(value, tspec, lang, tz)
        return display(value, lang, tz) if value is not None else ""


@register
class ChildTableType(FieldType):
    """Rows of the child ``form``, kept in its own table (``stored = False``).

    ``parse`` checks the shape (a list of row objects, ``min_rows``/``max_rows``);
    each row is validated by the service against the child form.
    """

    name = "child_table"
    label = {"zh": "子表", "en": "Child table"}
    widget = "child_table"
    filter_ops = ()
    stored = False
    sortable = False
    definition_keys = {"form": {"type": "string"}, "min_rows": {"type": "integer", "minimum": 0},
                       "max_rows": {"type": "integer", "minimum": 1}, "totals": {"type": "array"}}

    def check_definition(self, spec):
        lo, hi = spec.get("min_rows"), spec.get("max_rows")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            return [(("min_rows",), f"min_rows {lo} is larger than max_rows {hi}")]
        return []

    def column_type(self, spec):
        return None

    def coerce(self, raw, spec):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise fail("invalid_rows", "应为行列表", "Expected a list of rows") from None
        if isinstance(raw, Mapping):
            raw = [raw]
        if not isinstance(raw, (list, tuple)) or not all(isinstance(r, Mapping) for r in raw):
            raise fail("invalid_rows", "应为行列表（每行是一组字段值）", "Expected a list of rows (each a set of field values)")
        rows = [dict(r) for r in raw]
        lo, hi = spec.get("min_rows"), spec.get("max_rows")
        if hi is not None and len(rows) > int(hi):
            raise fail("too_many_rows", f"最多 {hi} 行（当前 {len(rows)} 行）", f"At most {hi} rows (got {len(rows)})", max=int(hi))
        if lo and len(rows) < int(lo):
            raise fail("too_few_rows", f"至少 {lo} 行（当前 {len(rows)} 行）", f"At least {lo} rows (got {len(rows)})", min=int(lo))
        return rows or None

    def value_schema(self, spec):
        schema: dict = {"type": "array", "items": {"type": "object"}}
        if spec.get("max_rows") is not None:
            schema["maxItems"] = int(spec["max_rows"])
        return schema

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        n = len(value)
        return f"{n} 行" if lang == "zh" else f"{n} row{'s' if n != 1 else ''}"
