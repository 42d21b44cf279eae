"""Uploading and downloading files of attachment/image fields (contract A3).

* ``POST /api/apps/{app}/{form}/_files?field=NAME`` -- multipart part ``file``
  -> 201 ``{id, name, size, content_type, sha256, url}``.  The file is
  *pending*: only its uploader can see it or put it on a record (by sending
  its id in the field when creating/updating the record).
* ``GET /api/files/{id}`` -- the bytes, for whoever may read the record that
  holds the file (or its uploader while pending); 404 for everyone else.

The request body is parsed as a stream: bytes go straight to a temporary
file in the store, counted and hashed on the way, and the upload stops with
413 as soon as it passes the field's ``max_size`` -- a 2 GB upload is never
held in memory or even written out in full.  What the file *is* comes from
its first bytes (``engine.sniff``), not from the client's content type or
file name.
"""
from __future__ import annotations

import logging
import re
import unicodedata
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select

from engine import platform as P
from engine.auth import User
from engine.errors import NotFound
from engine.files import FileTooLarge
from engine.sniff import inline_safe
from forms.attachments import check_upload, readable_file, record_upload, too_large, upload_field, upload_limit

from ..deps import current_user, language, runtime, unit_of_work

log = logging.getLogger("loom.files")
router = APIRouter(tags=["files"])

FILE_PART = "file"
MULTIPART_SLACK = 64 * 1024        # boundaries and part headers on top of the file itself

_UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FILE_PART],
    "properties": {FILE_PART: {"type": "string", "format": "binary"}}}}}}}


def _errors(status: int, errors: list[dict]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status)


def _bilingual(lang: str, zh: str, en: str) -> str:
    return zh if lang == "zh" else en


@router.post("/api/apps/{app}/{form}/_files", status_code=201, summary="Upload a file for an attachment/image field",
             openapi_extra=_UPLOAD_DOC)
async def upload_file(app: str, form: str, request: Request, field: str | None = None,
                      user: User = Depends(current_user)):
    rt = runtime(request)
    lang = language(request, user)
    target = await run_in_threadpool(_target, rt, app, form, field, user, lang)
    limit = upload_limit(target)
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        return _errors(422, [{"field": FILE_PART, "code": "not_multipart", "message": _bilingual(
            lang, "请以 multipart/form-data 上传，文件放在名为 file 的部分中",
            "send multipart/form-data with the file in a part named 'file'")}])
    declared_length = request.headers.get("content-length", "")
    if declared_length.isdigit() and int(declared_length) > limit + MULTIPART_SLACK:
        return _errors(413, [too_large(lang, target, _bilingual(lang, "该文件", "this file"))])
    part = _FilePart(rt.files, limit)
    try:
        parser = MultipartParser(boundary, part.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            if part.done:
                break              # the file part is complete: ignore whatever follows
        if not part.done:
            parser.finalize()
    except FileTooLarge:
        part.abort()
        return _errors(413, [too_large(lang, target, part.filename or _bilingual(lang, "该文件", "this file"))])
    except Exception as exc:  # noqa: BLE001 - a malformed body is the client's problem, said clearly
        part.abort()
        log.info("bad multipart upload: %r", exc, exc_info=True)
        return _errors(422, [{"field": FILE_PART, "code": "bad_upload", "message": _bilingual(
            lang, "上传的数据不完整或格式不正确，请重新上传", "the upload was incomplete or malformed; please upload again")}])
    if part.upload is None:
        part.abort()
        return _errors(422, [{"field": FILE_PART, "code": "missing_file", "message": _bilingual(
            lang, "没有收到文件：请把文件放在名为 file 的部分中", "no file received: put the file in a multipart part named 'file'")}])
    try:
        meta = await run_in_threadpool(_store, rt, app, form, target, user, lang, part)
    except BaseException:
        part.abort()
        raise
    return JSONResponse(meta, status_code=201)


def _target(rt, app: str, form: str, field: str | None, user: User, lang: str):
    with unit_of_work(rt, app, user, lang) as uow:
        fd = rt.services["records"].form(uow.app, form)
        return upload_field(uow, fd, field)


def _store(rt, app: str, form: str, target, user: User, lang: str, part: "_FilePart") -> dict:
    """Check the received bytes, move them into place and record them -- or leave nothing behind."""
    upload = part.upload
    key = None
    try:
        with unit_of_work(rt, app, user, lang, write=True) as uow:
            fd = rt.services["records"].form(uow.app, form)
            field = upload_field(uow, fd, target.name)
            content_type = check_upload(uow, field, part.filename, part.content_type, upload.head, upload.size)
            key = upload.commit()
            meta = record_upload(uow, fd, field, name=part.filename, content_type=content_type, size=upload.size,
                                 sha256=upload.sha256(), key=key)
        return meta         # committed: the row and the bytes exist together
    except BaseException:
        if key is not None:
            rt.files.delete(key)
        raise


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def clean_filename(raw: str) -> str:
    """The user's file name, made safe to store and show: no path, no control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("", name).strip().strip(".") or "file"
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:250 - len(ext)] + dot + ext) if dot and len(ext) <= 16 else name[:255]
    return name


class _FilePart:
    """Multipart callbacks: the part named ``file`` streams into the store; other parts are ignored."""

    def __init__(self, store, limit: int):
        self.store, self.limit = store, limit
        self.upload = None
        self.filename = ""
        self.content_type: str | None = None
        self.done = False
        self._headers: dict[str, bytes] = {}
        self._field = self._value = b""
        self._current = False

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self) -> None:
        self._headers, self._current = {}, False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition", b"")      # raw bytes: browsers send UTF-8 names
        _, params = parse_options_header(disposition)
        if params.get(b"name", b"").decode("utf-8", "replace") != FILE_PART or self.upload is not None or self.done:
            return
        star = _FILENAME_STAR.search(disposition.decode("latin-1"))
        raw = urllib.parse.unquote(star.group(1).strip().strip('"')) if star else \
            params.get(b"filename", b"").decode("utf-8", "replace")
        self.filename = clean_filename(raw)
        self.content_type = self._headers.get("content-type", b"").decode("latin-1") or None
        self.upload = self.store.begin(self.limit)
        self._current = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._current:
            self.upload.write(data[start:end])

    def _end(self) -> None:
        if self._current:
            self._current = False
            self.done = True

    def abort(self) -> None:
        if self.upload is not None:
            self.upload.abort()


# -- downloads ------------------------------------------------------------------------------------

@router.get("/api/files/{file_id}", summary="Download a file", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "no such file, or not yours to read"}})
def download_file(file_id: int, request: Request, download: bool = False, user: User = Depends(current_user)):
    """Inline only for raster images a browser decodes itself; everything else as an attachment."""
    rt = runtime(request)
    lang = language(request, user)
    with rt.db.read() as conn:
        row = conn.execute(select(P.files).where(P.files.c.id == file_id)).mappings().first()
    missing = NotFound(_bilingual(lang, f"文件 {file_id} 不存在，或你无权查看", f"file {file_id} does not exist or you may not read it"))
    if row is None:
        raise missing
    with unit_of_work(rt, row["app"], user, lang) as uow:
        if not readable_file(uow, rt.services["records"], row):
            raise missing
    path = rt.files.local_path(row["path"])
    if path is None:
        log.warning("file %s (%s) is in loom_files but not in the store", file_id, row["path"])
        raise missing
    inline = inline_safe(row["content_type"]) and not download
    return FileResponse(path, media_type=row["content_type"], headers={
        "Content-Disposition": _disposition("inline" if inline else "attachment", row["name"]),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    })


def _disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "ignore").decode().replace('"', "").replace("\\", "") or "file"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
