"""Structured values kept in one JSON column: cascade, address, geo_point, tags, json."""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import (EMPTY_OPS, LIST_OPS, FieldType, JsonListFilters, check_lengths, check_text_value, clean_text, fail,
                   is_empty, json_column, json_contains_clause, json_list_input, jsonable, nfkc, quote_list, register,
                   split_list, text_of)


def _json_from_db(value: Any) -> Any:
    """JSON columns give Python data; personal-data columns give back ``str(value)``."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


class _JsonStored(FieldType):
    sortable = False

    def column_type(self, spec):
        return json_column()

    def from_db(self, value, spec):
        return None if value is None else _json_from_db(value)


# -- cascade ---------------------------------------------------------------------------------------

def _children(node: Any) -> list:
    if isinstance(node, Mapping):
        kids = node.get("children")
        return list(kids) if isinstance(kids, Sequence) and not isinstance(kids, str) else []
    return []


def _value(node: Any) -> str:
    return str(node.get("value")) if isinstance(node, Mapping) else str(node)


def _labels(node: Any) -> list[str]:
    if not isinstance(node, Mapping):
        return [str(node)]
    lab = node.get("label")
    if isinstance(lab, Mapping):
        return [str(v) for v in lab.values() if v]
    return [str(lab)] if lab else []


def cascade_roots(spec: Mapping) -> list | None:
    """The options tree: ``spec['_options_tree']`` (loaded ``options_file``) or inline ``options``."""
    tree = spec.get("_options_tree")
    if tree is None:
        tree = spec.get("options")
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        for key in ("options", "children", "items"):
            if isinstance(tree.get(key), Sequence):
                return list(tree[key])
        return None
    return list(tree)


def _find(nodes: list, raw: str) -> Any:
    key = nfkc(raw)
    for n in nodes:
        if _value(n) == key:
            return n
    low = key.lower()
    for n in nodes:
        if _value(n).lower() == low or any(nfkc(lab).lower() == low for lab in _labels(n)):
            return n
    if len(key) >= 2:                     # '深圳' for '深圳市', '广西' for '广西壮族自治区'
        hits = [n for n in nodes if _value(n).startswith(key)]
        if len(hits) == 1:
            return hits[0]
    return None


def _level_name(spec: Mapping, i: int, lang: str) -> str:
    levels = spec.get("levels") or []
    if i < len(levels):
        return text_of(levels[i], lang)
    return f"第{i + 1}级" if lang == "zh" else f"level {i + 1}"


@register
class CascadeType(JsonListFilters, _JsonStored):
    """A path in a tree of options, e.g. ``['广东省', '深圳市', '南山区']``.

    The tree comes from ``options_file`` (the service passes it as
    ``spec['_options_tree']``): a list of ``{value, label, children}``.  Input
    is a list or text like ``广东省/深圳市/南山区``; labels and unique
    prefixes (``深圳``) are accepted.  The path must end at a leaf.  Without
    a tree only the shape is checked (1..len(levels) non-empty names).
    """

    name = "cascade"
    label = {"zh": "级联选择", "en": "Cascade"}
    widget = "cascade"
    filter_ops = LIST_OPS
    definition_keys = {"options_file": {"type": "string"}, "levels": {"type": "array"}, "options": {"type": "array"}}

    def check_definition(self, spec):
        if not spec.get("options_file") and not spec.get("options"):
            return [((), "a cascade field needs 'options_file' (a JSON/YAML tree in the package) or nested 'options'")]
        return []

    def coerce(self, raw, spec):
        items = json_list_input(raw)
        if items is None:
            if not isinstance(raw, str):
                raise fail("invalid_option", "应为选择路径，如 广东省/深圳市/南山区", "Expected a path such as 广东省/深圳市/南山区")
            items = [p.strip() for p in re.split(r"\s*[/>＞,，|]\s*", nfkc(raw))]
        items = [str(x).strip() if not isinstance(x, Mapping) else str(x.get("value", "")).strip() for x in items]
        while items and items[-1] == "":
            items.pop()
        if not items or any(x == "" for x in items):
            if not items:
                return None
            raise fail("invalid_option", "路径中有空的一级", "The path has an empty level")
        levels = spec.get("levels") or []
        if levels and len(items) > len(levels):
            raise fail("too_deep", f"最多选择 {len(levels)} 级", f"At most {len(levels)} levels", max=len(levels))
        nodes = cascade_roots(spec)
        if nodes is None:
            return [x[:100] for x in items]
        path = []
        for i, x in enumerate(items):
            node = _find(nodes, x)
            if node is None:
                where_zh = f"“{path[-1]}”下" if path else ""
                where_en = f" under '{path[-1]}'" if path else ""
                choices = quote_list((_value(n) for n in nodes), limit=8, sep="、")
                raise fail("invalid_option",
                           f"{where_zh}没有{_level_name(spec, i, 'zh')}“{x}”，可选：{choices}",
                           f"'{x}' is not a {_level_name(spec, i, 'en').lower()}{where_en}; choose one of: {choices}")
            path.append(_value(node))
            nodes = _children(node)
        if nodes:
            i = len(path)
            raise fail("incomplete", f"请继续选择{_level_name(spec, i, 'zh')}（“{path[-1]}”下还有下一级）",
                       f"Please also choose the {_level_name(spec, i, 'en').lower()} under '{path[-1]}'")
        return path

    def value_schema(self, spec):
        schema = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        if spec.get("levels"):
            schema["maxItems"] = len(spec["levels"])
        return schema

    def to_json(self, value, spec):
        return None if value is None else list(value)

    def format(self, value, spec, lang="zh", tz=None):
        if not value:
            return ""
        nodes = cascade_roots(spec) or []
        out = []
        for v in value:
            node = next((n for n in nodes if _value(n) == str(v)), None)
            out.append(text_of(node.get("label"), lang, str(v)) if isinstance(node, Mapping) else str(v))
            nodes = _children(node) if node is not None else []
        return " / ".join(out)

    def filter_value(self, raw, spec, bound=None):
        return nfkc(str(raw))

    def filter_fragment(self, raw, spec):
        return nfkc(str(raw))


# -- address -------------------------------------------------------------------------------------

ADDRESS_KEYS = ("province", "city", "district", "detail")
ADDRESS_OPTIONAL = ("postcode",)
_ADDRESS_ALIASES = {"省": "province", "省份": "province", "市": "city", "城市": "city", "区": "district", "区县": "district",
                    "county": "district", "street": "detail", "address": "detail", "详细地址": "detail", "zip": "postcode",
                    "邮编": "postcode"}


@register
class AddressType(_JsonStored):
    """A postal address ``{province, city, district, detail}`` (``postcode`` optional).

    A plain string is taken as ``detail``.  ``max_length`` bounds ``detail``
    (default 200).  Shown as ``广东省深圳市南山区科技园路1号`` (zh) or
    ``detail, district, city, province`` (en).
    """

    name = "address"
    label = {"zh": "地址", "en": "Address"}
    widget = "address"
    filter_ops = ("contains", "empty")
    definition_keys = {"max_length": {"type": "integer", "minimum": 1}}

    def check_definition(self, spec):
        return check_lengths(spec)

    def coerce(self, raw, spec):
        if isinstance(raw, str) and raw.strip().startswith("{"):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise fail("invalid_address", "地址格式不正确", "Not a valid address") from None
        if isinstance(raw, str):
            raw = {"detail": raw}
        if not isinstance(raw, Mapping):
            raise fail("invalid_address", "地址应包含 省/市/区/详细地址", "An address has province, city, district and detail")
        out: dict[str, Any] = {k: None for k in ADDRESS_KEYS}
        for key, v in raw.items():
            k = _ADDRESS_ALIASES.get(str(key), str(key))
            if k not in ADDRESS_KEYS + ADDRESS_OPTIONAL:
                raise fail("invalid_address", f"地址中不认识的项“{key}”，可用：province、city、district、detail、postcode",
                           f"Unknown address part '{key}'; use province, city, district, detail, postcode")
            if v is None or (isinstance(v, str) and v.strip() == ""):
                continue
            text = clean_text(v, multiline=False)
            limit = int(spec.get("max_length") or 200) if k == "detail" else 50
            if k == "detail":
                check_text_value(text, {"max_length": limit}, None)
            elif len(text) > limit:
                raise fail("too_long", f"地址中的“{key}”太长（最多 {limit} 字）", f"The address part '{key}' is too long (max {limit})")
            if k == "postcode" and not re.fullmatch(r"[0-9A-Za-z -]{3,10}", text):
                raise fail("invalid_address", "邮编格式不正确，如 518057", "Not a valid postcode, e.g. 518057")
            out[k] = text
        if all(v is None for v in out.values()):
            return None
        if "postcode" in out and out["postcode"] is None:
            del out["postcode"]
        return out

    def value_schema(self, spec):
        return {"type": "object", "additionalProperties": False,
                "properties": {k: {"type": ["string", "null"]} for k in ADDRESS_KEYS + ADDRESS_OPTIONAL}}

    def format(self, value, spec, lang="zh", tz=None):
        if not value:
            return ""
        parts = [value.get(k) for k in ADDRESS_KEYS if value.get(k)]
        if lang == "zh":
            dedup = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]  # 北京市北京市 -> 北京市
            return "".join(dedup)
        return ", ".join(reversed([p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]))

    def filter_value(self, raw, spec, bound=None):
        return nfkc(str(raw))

    def filter_fragment(self, raw, spec):
        return nfkc(str(raw))

    def filter_clause(self, column, op, value, spec):
        if op in ("contains", "eq") and value:
            return json_contains_clause(column, str(value), element=False)
        if op == "empty":
            return column.is_(None) if value else column.is_not(None)
        return None


# -- geo point -------------------------------------------------------------------------------------

@register
class GeoPointType(_JsonStored):
    """A map location ``{lat, lng}`` in degrees (WGS-84 unless the app says otherwise).

    Text input is ``'lat,lng'`` (``31.2304,121.4737``).  Rounded to 7 decimals (~1 cm).
    """

    name = "geo_point"
    label = {"zh": "地理位置", "en": "Map location"}
    widget = "geo"
    filter_ops = EMPTY_OPS

    def coerce(self, raw, spec):
        bad = fail("invalid_geo", "位置应为 纬度,经度，如 31.2304,121.4737", "A location is 'lat,lng', e.g. 31.2304,121.4737")
        if isinstance(raw, str):
            s = nfkc(raw)
            if s.startswith("{"):
                try:
                    raw = json.loads(s)
                except ValueError:
                    raise bad from None
            else:
                parts = [p for p in re.split(r"\s*[,，\s]\s*", s) if p]
                if len(parts) != 2:
                    raise bad
                raw = {"lat": parts[0], "lng": parts[1]}
        if not isinstance(raw, Mapping):
            raise bad
        lat = raw.get("lat", raw.get("latitude"))
        lng = raw.get("lng", raw.get("lon", raw.get("longitude")))
        if is_empty(lat) and is_empty(lng):
            return None
        try:
            if isinstance(lat, bool) or isinstance(lng, bool):
                raise ValueError
            lat_f, lng_f = float(lat), float(lng)
        except (TypeError, ValueError):
            raise bad from None
        if not (-90 <= lat_f <= 90) or not (-180 <= lng_f <= 180) or lat_f != lat_f or lng_f != lng_f:
            raise fail("out_of_range", "纬度应在 -90 到 90、经度在 -180 到 180 之间",
                       "Latitude must be within -90..90 and longitude within -180..180")
        return {"lat": round(lat_f, 7), "lng": round(lng_f, 7)}

    def value_schema(self, spec):
        return {"type": "object", "required": ["lat", "lng"], "additionalProperties": False,
                "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
                               "lng": {"type": "number", "minimum": -180, "maximum": 180}}}

    def format(self, value, spec, lang="zh", tz=None):
        if not value:
            return ""
        return f"{value['lat']:.6f}, {value['lng']:.6f}"


# -- tags ------------------------------------------------------------------------------------------

TAGS_MAX = 20
TAG_MAX_CHARS = 30


@register
class TagsType(JsonListFilters, _JsonStored):
    """Short labels: at most ``max`` (20) tags of at most ``max_length`` (30) characters,
    trimmed and de-duplicated (case-insensitively, first spelling kept).  Text input is
    split at commas (``,，、;``).  With ``options`` only those tags are allowed."""

    name = "tags"
    label = {"zh": "标签", "en": "Tags"}
    widget = "tags"
    filter_ops = LIST_OPS
    definition_keys = {"max": {"type": "integer", "minimum": 1, "maximum": 100},
                       "max_length": {"type": "integer", "minimum": 1, "maximum": 100}, "options": {"type": "array"}}

    def check_definition(self, spec):
        return check_lengths(spec, hard_max=100)

    def coerce(self, raw, spec):
        items = json_list_input(raw)
        if items is None:
            if isinstance(raw, str):
                items = split_list(nfkc(raw))
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                items = [raw]
            else:
                raise fail("invalid_tags", "标签应为文字列表，如 VIP,老客户", "Tags are a list of words, e.g. VIP, returning")
        limit = int(spec.get("max") or TAGS_MAX)
        width = int(spec.get("max_length") or TAG_MAX_CHARS)
        allowed = None
        if spec.get("options"):
            allowed = {}
            for o in spec["options"]:
                v = o.get("value") if isinstance(o, Mapping) else o
                allowed[str(v).lower()] = str(v)
        out, seen = [], set()
        for item in items:
            if item is None or (isinstance(item, str) and not item.strip()):
                continue
            if isinstance(item, (dict, list, bool)):
                raise fail("invalid_tags", "每个标签应为一段文字", "Each tag is a piece of text")
            tag = clean_text(item, multiline=False)
            if len(tag) > width:
                raise fail("too_long", f"标签“{tag[:10]}…”太长，每个标签最多 {width} 个字",
                           f"The tag '{tag[:10]}…' is too long; at most {width} characters per tag", max_length=width)
            key = tag.lower()
            if allowed is not None:
                if key not in allowed:
                    raise fail("invalid_option", f"标签“{tag}”不在可选范围内：{quote_list(allowed.values(), sep='、')}",
                               f"'{tag}' is not an allowed tag; choose from: {quote_list(allowed.values())}")
                tag = allowed[key]
            if key in seen:
                continue
            seen.add(key)
            out.append(tag)
        if not out:
            return None
        if len(out) > limit:
            raise fail("too_many", f"最多 {limit} 个标签（当前 {len(out)} 个）", f"At most {limit} tags (got {len(out)})", max=limit)
        return out

    def value_schema(self, spec):
        return {"type": "array", "items": {"type": "string", "maxLength": int(spec.get("max_length") or TAG_MAX_CHARS)},
                "maxItems": int(spec.get("max") or TAGS_MAX), "uniqueItems": True}

    def to_json(self, value, spec):
        return None if value is None else list(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if not value else ("、" if lang == "zh" else ", ").join(value)

    def filter_value(self, raw, spec, bound=None):
        return nfkc(str(raw)).strip()

    def filter_fragment(self, raw, spec):
        return nfkc(str(raw)).strip()


# -- json --------------------------------------------------------------------------------------------

JSON_MAX_BYTES = 64 * 1024


@register
class JsonType(_JsonStored):
    """Any JSON document up to 64 KB (``max_size`` may lower or raise it, up to 1 MB).

    A string is parsed as JSON text (so a JSON string value is sent as
    ``'"text"'``); NaN/Infinity are refused.
    """

    name = "json"
    label = {"zh": "JSON 数据", "en": "JSON"}
    widget = "json"
    filter_ops = EMPTY_OPS
    definition_keys = {"max_size": {"type": ["string", "integer"]}}

    def limit(self, spec) -> int:
        from .files import parse_size
        try:
            return min(parse_size(spec.get("max_size")) or JSON_MAX_BYTES, 1024 * 1024)
        except ValueError:
            return JSON_MAX_BYTES

    def check_definition(self, spec):
        from .files import parse_size
        if spec.get("max_size") is not None:
            try:
                parse_size(spec["max_size"])
            except ValueError as exc:
                return [(("max_size",), str(exc))]
        return []

    def coerce(self, raw, spec):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise fail("invalid_json", f"不是有效的 JSON：{exc}", f"Not valid JSON: {exc}") from None
        try:
            try:
                text = json.dumps(raw, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            except TypeError:     # dates, Decimals from an expression or an import
                text = json.dumps(jsonable(raw), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise fail("invalid_json", f"不是有效的 JSON（不支持 NaN/Infinity 等值）：{exc}",
                       f"Not valid JSON (NaN/Infinity are not allowed): {exc}") from None
        size = len(text.encode("utf-8"))
        limit = self.limit(spec)
        if size > limit:
            raise fail("too_large", f"JSON 数据太大（{size // 1024} KB），最大 {limit // 1024} KB",
                       f"The JSON is too large ({size // 1024} KB); at most {limit // 1024} KB", max_size=limit)
        value = json.loads(text)
        return None if is_empty(value) else value

    def value_schema(self, spec):
        return {}

    def format(self, value, spec, lang="zh", tz=None):
        if value is None:
            return ""
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 200 else text[:199] + "…"
