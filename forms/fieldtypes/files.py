"""Files: attachment, image (uploaded files' metadata) and signature (a PNG data URL).

The upload endpoint stores the bytes and hands back metadata; a field holds
that metadata as a JSON list (always a list, ``multiple: false`` allows one
item): ``[{id, name, size, content_type, path}]`` plus optional scalar extras
(``url``, ``sha256``, ``width``...).  ``max_size`` (``'5MB'``, bytes as an
integer; 1 MB = 1024 KB) and ``accept`` (MIME types, ``image/*``, or
extensions like ``.pdf``) are checked here against the metadata.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.files import file_url

from .base import EMPTY_OPS, FieldType, fail, json_column, register

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|K|KB|KIB|M|MB|MIB|G|GB|GIB)?\s*", re.I)
_UNIT = {"B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
         "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def parse_size(value: Any) -> int | None:
    """``'5MB'`` -> 5242880; integers are bytes; ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a size; write e.g. 5MB, 500KB or a number of bytes")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("a size must be larger than 0")
        return int(value)
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise ValueError(f"'{value}' is not a size; write e.g. 5MB, 500KB or a number of bytes")
    n = int(float(m.group(1)) * _UNIT[(m.group(2) or "B").upper()])
    if n <= 0:
        raise ValueError("a size must be larger than 0")
    return n


def human_size(n: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return f"{n}B"


def accepts(accept: list[str] | None, content_type: str, filename: str) -> bool:
    if not accept:
        return True
    ct = content_type.lower().split(";")[0].strip()
    name = filename.lower()
    for a in accept:
        a = str(a).lower().strip()
        if a.startswith("."):
            if name.endswith(a):
                return True
        elif a.endswith("/*"):
            if ct.startswith(a[:-1]):
                return True
        elif ct == a:
            return True
    return False


_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_REQUIRED = ("id", "name", "size", "content_type")
_DERIVED = ("path", "url")      # never taken from input: ``url`` is added on the way out
MAX_FILES = 20


def _bad_file(detail_zh: str, detail_en: str) -> Exception:
    return fail("invalid_file", f"文件信息不完整或不正确：{detail_zh}，请重新上传", f"Invalid file data: {detail_en}; please upload again")


class _FileList(FieldType):
    default_max_size = 20 * 1024**2
    default_accept: tuple[str, ...] = ()
    filter_ops = EMPTY_OPS
    sortable = False
    definition_keys = {"max_size": {"type": ["string", "integer"]}, "accept": {"type": "array", "items": {"type": "string"}},
                       "multiple": {"type": "boolean"}, "max": {"type": "integer", "minimum": 1, "maximum": 100}}

    def max_size(self, spec) -> int:
        try:
            return parse_size(spec.get("max_size")) or self.default_max_size
        except ValueError:
            return self.default_max_size

    def accept(self, spec) -> list[str]:
        return list(spec.get("accept") or self.default_accept)

    def max_files(self, spec) -> int:
        if not spec.get("multiple"):
            return 1
        return int(spec.get("max") or MAX_FILES)

    def check_definition(self, spec):
        problems = []
        if spec.get("max_size") is not None:
            try:
                parse_size(spec["max_size"])
            except ValueError as exc:
                problems.append((("max_size",), str(exc)))
        for i, a in enumerate(spec.get("accept") or []):
            a = str(a)
            if not (a.startswith(".") and len(a) > 1) and not re.fullmatch(r"[a-z0-9.+-]+/(\*|[a-z0-9.+-]+)", a.lower()):
                problems.append((("accept", i), f"'{a}' is neither a MIME type (image/png, image/*) nor an extension (.pdf)"))
        return problems

    def column_type(self, spec):
        return json_column()

    def _one(self, item: Any, spec: Mapping) -> dict:
        if (isinstance(item, int) and not isinstance(item, bool)) or (isinstance(item, str) and item.strip().isdigit()):
            item = {"id": item}         # a bare file id, as the upload endpoint returned it
        if not isinstance(item, Mapping):
            raise _bad_file("应为文件对象", "expected a file object")
        fid = item.get("id")
        if isinstance(fid, bool) or not isinstance(fid, (str, int)) or fid == "" or len(str(fid)) > 128:
            raise _bad_file("缺少 id 或 id 不正确" if fid in (None, "") else "id 不正确", "missing id" if fid in (None, "") else "bad id")
        if all(item.get(k) in (None, "") for k in _REQUIRED[1:]):
            return {"id": int(fid) if isinstance(fid, str) and fid.isdigit() else fid}   # a reference: the record service fills in the rest
        missing = [k for k in _REQUIRED if item.get(k) in (None, "")]
        if missing:
            raise _bad_file(f"缺少 {', '.join(missing)}", f"missing {', '.join(missing)}")
        out: dict[str, Any] = {"id": fid}
        name = item["name"]
        if not isinstance(name, str) or len(name) > 255 or re.search(r"[\x00-\x1f/\\]", name):
            raise _bad_file("文件名不正确", "bad file name")
        out["name"] = name.strip()
        size = item["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            if isinstance(size, str) and size.isdigit():
                size = int(size)
            else:
                raise _bad_file("文件大小不正确", "bad size")
        out["size"] = size
        ct = str(item["content_type"]).lower().split(";")[0].strip()
        if not _MIME.fullmatch(ct):
            raise _bad_file("文件类型不正确", "bad content_type")
        out["content_type"] = ct
        path = item.get("path")
        if path is not None:
            if not isinstance(path, str) or path.startswith(("/", "\\")) or "\\" in path or ":" in path \
                    or any(seg in ("..", ".") for seg in path.split("/")) or re.search(r"[\x00-\x1f]", path):
                raise _bad_file("存储路径不安全", "unsafe storage path")
            out["path"] = path
        for k, v in item.items():
            if k in out or k in _REQUIRED or k in _DERIVED:
                continue
            if not isinstance(k, str) or len(k) > 40 or not (v is None or isinstance(v, (str, int, float, bool))) \
                    or (isinstance(v, str) and len(v) > 2048):
                raise _bad_file(f"多余的信息 {k}", f"unexpected data '{k}'")
            out[k] = v
        limit = self.max_size(spec)
        if size > limit:
            raise fail("file_too_large", f"文件“{out['name']}”大小 {human_size(size)}，超过上限 {human_size(limit)}",
                       f"'{out['name']}' is {human_size(size)}; the limit is {human_size(limit)}", max_size=limit)
        accept = self.accept(spec)
        if not accepts(accept, ct, out["name"]):
            raise fail("file_type", f"不支持文件“{out['name']}”的类型（{ct}），可上传：{'、'.join(accept)}",
                       f"'{out['name']}' has type {ct}, which is not accepted here; allowed: {', '.join(accept)}")
        return out

    def coerce(self, raw, spec):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise _bad_file("应为文件对象", "expected file metadata (JSON)") from None
        items = [raw] if isinstance(raw, Mapping) else raw
        if not isinstance(items, (list, tuple)):
            raise _bad_file("应为文件列表", "expected a list of files")
        files = [self._one(i, spec) for i in items if i not in (None, {})]
        if not files:
            return None
        ids = [str(f["id"]) for f in files]
        if len(set(ids)) != len(ids):
            files = [f for i, f in enumerate(files) if str(f["id"]) not in ids[:i]]
        limit = self.max_files(spec)
        if len(files) > limit:
            raise fail("too_many_files", "只能上传 1 个文件" if limit == 1 else f"最多上传 {limit} 个文件",
                       "Only one file is allowed" if limit == 1 else f"At most {limit} files", max=limit)
        return files

    def value_schema(self, spec):
        return {"type": "array", "maxItems": self.max_files(spec), "description":
                "Files uploaded with POST /api/apps/{app}/{form}/_files?field=...: send their ids "
                "([12] or [{\"id\": 12}]); name, size, content_type and sha256 come from the stored file.",
                "items": {"anyOf": [{"type": "integer"}, {
                    "type": "object", "required": ["id"],
                    "properties": {"id": {"type": ["string", "integer"]}, "name": {"type": "string"},
                                   "size": {"type": "integer", "minimum": 0}, "content_type": {"type": "string"},
                                   "sha256": {"type": "string"}, "url": {"type": "string", "readOnly": True}}}]}}

    def to_json(self, value, spec):
        if not value:
            return value
        return [{**f, "url": file_url(f["id"])} if isinstance(f, Mapping) and "id" in f else f for f in value]

    def from_db(self, value, spec):
        if isinstance(value, str):
            value = json.loads(value)
        return value

    def format(self, value, spec, lang="zh", tz=None):
        return "" if not value else ", ".join(f["name"] for f in value)


@register
class AttachmentType(_FileList):
    """Files (default up to 20 MB each, any type; ``multiple: true`` for more than one)."""

    name = "attachment"
    label = {"zh": "附件", "en": "Attachment"}
    widget = "file"


@register
class ImageType(_FileList):
    """Images (default up to 10 MB, JPEG/PNG/GIF/WebP/HEIC; SVG is not accepted by default)."""

    name = "image"
    label = {"zh": "图片", "en": "Image"}
    widget = "image"
    default_max_size = 10 * 1024**2
    default_accept = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif", "image/bmp")

    def check_definition(self, spec):
        problems = super().check_definition(spec)
        for i, a in enumerate(spec.get("accept") or []):
            a = str(a).lower()
            if not a.startswith(("image/", ".")):
                problems.append((("accept", i), f"'{a}' is not an image type; use attachment for other files"))
        return problems


SIGNATURE_MAX = 200 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DATA_URL = re.compile(r"data:image/png(?:;[\w=.-]+)*;base64,([A-Za-z0-9+/=\s]+)", re.I)


@register
class SignatureType(FieldType):
    """A hand-written signature: a ``data:image/png;base64,...`` URL of at most 200 KB (decoded)."""

    name = "signature"
    label = {"zh": "手写签名", "en": "Signature"}
    widget = "signature"
    filter_ops = EMPTY_OPS
    sortable = False
    definition_keys = {"max_size": {"type": ["string", "integer"]}}

    def column_type(self, spec):
        return sa.Text()

    def limit(self, spec) -> int:
        try:
            return min(parse_size(spec.get("max_size")) or SIGNATURE_MAX, SIGNATURE_MAX)
        except ValueError:
            return SIGNATURE_MAX

    def coerce(self, raw, spec):
        bad = fail("invalid_signature", "签名数据无效，请重新签名", "The signature is not a valid PNG image; please sign again")
        if not isinstance(raw, str):
            raise bad
        m = _DATA_URL.fullmatch(raw.strip())
        if not m:
            raise bad
        b64 = re.sub(r"\s", "", m.group(1))
        if len(b64) > (self.limit(spec) * 4) // 3 + 8:
            raise fail("too_large", f"签名图片太大，最大 {human_size(self.limit(spec))}",
                       f"The signature image is too large; at most {human_size(self.limit(spec))}")
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise bad from None
        if not data.startswith(_PNG_MAGIC):
            raise bad
        if len(data) > self.limit(spec):
            raise fail("too_large", f"签名图片太大，最大 {human_size(self.limit(spec))}",
                       f"The signature image is too large; at most {human_size(self.limit(spec))}")
        return "data:image/png;base64," + b64

    def value_schema(self, spec):
        return {"type": "string", "pattern": "^data:image/png;base64,", "contentMediaType": "image/png"}

    def format(self, value, spec, lang="zh", tz=None):
        if not value:
            return ""
        return "已签名" if lang == "zh" else "Signed"
