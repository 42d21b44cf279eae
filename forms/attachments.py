"""Files on records: accepting an upload for a form field, and resolving file ids on save.

A file field's value is only ever *ids* as far as the client is concerned:
the name, size, type and hash a record keeps are copied from ``loom_files``
when the record is saved, never taken from the request.  A file may be put
on a record only if it was uploaded for that app, form and field and is
either still pending and uploaded by the caller, or already on this very
record -- so nobody can attach (and so read) another user's file by
guessing its id.

Resolving costs one query per save for all the ids in it, and nothing at
all for forms without file fields.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, update

from engine import platform as P
from engine.clock import to_db
from engine.errors import Forbidden, NotFound, RecordInvalid
from engine.files import file_url
from engine.sniff import classify
from engine.uow import UnitOfWork

from .access import grant
from .fieldtypes import FieldValueError
from .fieldtypes.base import fail
from .fieldtypes.files import _FileList, human_size
from .model import FieldDef, FormDef

KEPT = ("id", "name", "size", "content_type", "sha256")   # what a record keeps of each file
PENDING, ATTACHED = "pending", "attached"


def is_file_field(f: FieldDef) -> bool:
    return isinstance(f.ftype, _FileList)


def file_field_names(form: FormDef) -> tuple[str, ...]:
    return tuple(n for n, f in form.fields.items() if is_file_field(f))


def _msg(uow: UnitOfWork, exc: FieldValueError) -> str:
    return exc.text(uow.lang)


def _err(field: str, exc: FieldValueError, uow: UnitOfWork) -> dict:
    return {"field": field, "code": exc.code, "message": _msg(uow, exc)}


# -- uploads ----------------------------------------------------------------------------------

def upload_field(uow: UnitOfWork, form: FormDef, field_name: str | None) -> FieldDef:
    """The file field an upload is for, after checking the caller may fill it in.

    The caller must be allowed to create or update records of the form, and
    the field must be neither hidden from nor read-only for them.
    """
    f = form.fields.get(field_name or "")
    if f is None:
        raise RecordInvalid([{"field": "field", "code": "unknown_field", "message": fail(
            "unknown_field", f"表单“{form.name}”没有字段“{field_name or ''}”，请在 ?field= 中写文件字段名",
            f"form '{form.name}' has no field '{field_name or ''}'; name the file field in ?field=").text(uow.lang)}])
    if not is_file_field(f):
        raise RecordInvalid([{"field": "field", "code": "not_a_file_field", "message": fail(
            "not_a_file_field", f"字段“{f.name}”不是附件或图片字段，不能上传文件",
            f"'{f.name}' is a {f.type} field, not an attachment or image field; files can't be uploaded to it").text(uow.lang)}])
    allowed = False
    for action in ("create", "update"):
        g = grant(form, uow.user, action)
        if g.allowed and f.name not in g.hidden and f.name not in g.readonly and not f.readonly:
            allowed = True
            break
    if not allowed:
        raise Forbidden(fail("forbidden", f"你无权为“{form.name}”的“{f.name}”上传文件",
                             f"you may not upload files to {form.name}.{f.name}").text(uow.lang))
    return f


def upload_limit(f: FieldDef) -> int:
    return f.ftype.max_size(f.spec)


def too_large(lang: str, f: FieldDef, name: str) -> dict:
    """The 413 error of an upload past the field's ``max_size``."""
    limit = upload_limit(f)
    exc = fail("file_too_large", f"文件“{name}”超过上限 {human_size(limit)}，请压缩后再上传",
               f"'{name}' is larger than the limit of {human_size(limit)}; make it smaller and upload it again", max_size=limit)
    return {"field": f.name, "code": exc.code, "message": exc.text(lang), "max_size": limit}


def check_upload(uow: UnitOfWork, f: FieldDef, name: str, declared: str | None, head: bytes, size: int) -> str:
    """The content type to store for an upload, or ``RecordInvalid`` saying what's wrong with it."""
    accept = f.ftype.accept(f.spec)
    verdict = classify(head, declared, name, image=f.type == "image", accept=accept)
    if verdict.problem is not None:
        raise RecordInvalid([_err(f.name, _type_problem(verdict, name, f), uow)])
    if size == 0:
        raise RecordInvalid([_err(f.name, fail("empty_file", f"文件“{name}”是空的，请选择其他文件",
                                               f"'{name}' is empty; choose another file"), uow)])
    try:   # the field type's own checks (accept list, size), on what the server found
        f.ftype.parse([{"id": 0, "name": name, "size": size, "content_type": verdict.content_type}], dict(f.spec))
    except FieldValueError as exc:
        raise RecordInvalid([_err(f.name, exc, uow)]) from None
    return verdict.content_type


def _type_problem(verdict, name: str, f: FieldDef) -> FieldValueError:
    found = verdict.kind.canonical if verdict.kind is not None else None
    if verdict.problem == "mismatch":
        what = found or "未知格式 / an unknown format"
        return fail("file_type_mismatch", f"文件“{name}”的内容是 {what}，与声明的 {verdict.claimed} 不符，请上传真实的文件",
                    f"'{name}' claims to be {verdict.claimed} but its content is {found or 'something else'}; upload the real file")
    if verdict.problem == "dangerous":
        return fail("file_type_blocked", f"出于安全原因不接受文件“{name}”（{found}：网页、脚本或可执行程序）",
                    f"'{name}' is {found} (a web page, script or program), which is not accepted for safety reasons")
    accept = "、".join(f.ftype.accept(f.spec)) or "JPEG/PNG"
    return fail("not_an_image", f"文件“{name}”不是图片，请上传照片（{accept}）",
                f"'{name}' is not an image; upload a photo ({', '.join(f.ftype.accept(f.spec)) or 'JPEG/PNG'})")


def record_upload(uow: UnitOfWork, form: FormDef, f: FieldDef, *, name: str, content_type: str, size: int,
                  sha256: str, key: str) -> dict:
    """Insert the ``loom_files`` row of a stored upload (pending until a record save attaches it)."""
    new_id = uow.conn.execute(P.files.insert().values(
        app=uow.app.name, form=form.name, field=f.name, name=name, content_type=content_type, size=size, sha256=sha256,
        path=key, created_at=to_db(uow.now), created_by=uow.user.username, status=PENDING).returning(P.files.c.id)).scalar_one()
    return {"id": new_id, "name": name, "size": size, "content_type": content_type, "sha256": sha256, "url": file_url(new_id)}


# -- saving records -----------------------------------------------------------------------------

def resolve_files(uow: UnitOfWork, form: FormDef, values: dict[str, Any], names: Iterable[str], *,
                  record_id: int | None = None, reclaim: frozenset[int] = frozenset()) -> tuple[list[dict], list[int]]:
    """Replace the file lists in ``values`` by the stored metadata; ``(errors, ids to attach)``.

    ``names``: the form's file fields present in ``values``.  ``record_id``:
    the record being updated (its own files stay valid).  ``reclaim``: ids
    of records being replaced (child rows rewritten by their parent) whose
    files move to the new rows.
    """
    wanted: dict[str, list] = {n: values[n] for n in names if values.get(n)}
    if not wanted:
        return [], []
    errors: list[dict] = []
    ids: set[int] = set()
    for n, items in wanted.items():
        for item in items:
            fid = _as_id(item.get("id"))
            if fid is not None:
                ids.add(fid)
    rows = _fetch(uow, ids)
    attach: list[int] = []
    for n, items in wanted.items():
        f = form.fields[n]
        resolved, bad = [], []
        for item in items:
            fid = _as_id(item.get("id"))
            row = rows.get(fid) if fid is not None else None
            if row is None or not _may_use(uow, form, n, row, record_id, reclaim):
                bad.append(str(item.get("id")))
                continue
            resolved.append({k: getattr(row, k) for k in KEPT})
            if row.status != ATTACHED or row.record_id != record_id:
                attach.append(row.id)
        if bad:
            label = f.label.get(uow.lang) or f.label.get("zh") or n
            errors.append(_err(n, fail("file_not_found", f"“{label}”中的文件（编号 {', '.join(bad)}）不存在或不属于你，请重新上传",
                                       f"{f.label.get('en') or n}: file {', '.join(bad)} does not exist or is not yours to attach; upload it again"), uow))
            continue
        try:     # the field's limits, checked again on what was really stored
            values[n] = f.ftype.parse(resolved, dict(f.spec))
        except FieldValueError as exc:
            errors.append(_err(n, exc, uow))
    return errors, attach


_COLUMNS = ("id", "app", "form", "field", "name", "size", "content_type", "sha256", "status", "record_id", "created_by")


def _fetch(uow: UnitOfWork, ids: Iterable[int]) -> dict[int, Any]:
    """``loom_files`` rows by id: one query for all of them."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    cols = [P.files.c[c] for c in _COLUMNS]
    return {r.id: r for r in uow.conn.execute(select(*cols).where(P.files.c.id.in_(ids)))}


def describe_files(uow: UnitOfWork, form: FormDef, field: str, ids: Iterable[Any], record_id: int | None = None) -> list[dict]:
    """Metadata (with ``url``) of those ``ids`` the caller could put in ``field`` -- for redrawing a form."""
    wanted = [i for i in (_as_id(x) for x in ids) if i is not None]
    rows = _fetch(uow, wanted)
    out = []
    for fid in wanted:
        row = rows.get(fid)
        if row is not None and _may_use(uow, form, field, row, record_id, frozenset()):
            out.append({**{k: getattr(row, k) for k in KEPT}, "url": file_url(fid)})
    return out


def only_ids(raw: Any) -> Any:
    """A file field's input reduced to the file ids in it (everything else is looked up on save)."""
    if isinstance(raw, str) and raw.strip().startswith(("[", "{")):
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw          # the field type reports it
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, (list, tuple)):
        return raw
    return [{"id": i.get("id")} if isinstance(i, Mapping) and i.get("id") not in (None, "") else i for i in items]


def _as_id(raw: Any) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    return None


def _may_use(uow: UnitOfWork, form: FormDef, field: str, row, record_id: int | None, reclaim: frozenset[int]) -> bool:
    if (row.app, row.form, row.field) != (uow.app.name, form.name, field):
        return False
    if row.status == ATTACHED:
        return (record_id is not None and row.record_id == record_id) or row.record_id in reclaim
    return row.status == PENDING and (uow.user.is_system or row.created_by == uow.user.username)


def attach_files(uow: UnitOfWork, ids: list[int], record_id: int) -> None:
    """Mark files as held by ``record_id`` (same transaction as the record write)."""
    if ids:
        uow.conn.execute(update(P.files).where(P.files.c.id.in_(sorted(set(ids))))
                         .values(status=ATTACHED, record_id=record_id, attached_at=to_db(uow.now)))


# -- downloads ------------------------------------------------------------------------------------

def readable_file(uow: UnitOfWork, records: Any, row: Mapping) -> bool:
    """May the caller download this ``loom_files`` row?

    Pending: only its uploader.  Attached: whoever may read the record
    holding it (for a child row: its parent) and see the field, while the
    record still lists the file.
    """
    if row["status"] == PENDING:
        return uow.user.is_system or row["created_by"] == uow.user.username
    form = uow.app.forms.get(row["form"] or "")
    if form is None or row["record_id"] is None or row["field"] not in form.fields:
        return False
    try:
        if form.child:
            rec = records.load(uow, form.name, row["record_id"])
            parent = _parent_form(uow, form.name)
            if rec is None or parent is None or rec.get("parent_id") is None:
                return False
            records.get(uow, parent, rec["parent_id"])
        else:
            rec = records.get(uow, form.name, row["record_id"])
            if row["field"] in grant(form, uow.user, "read").hidden:
                return False
    except (NotFound, Forbidden):
        return False
    return any(_as_id(item.get("id")) == row["id"] for item in rec.get(row["field"]) or [] if isinstance(item, Mapping))


def _parent_form(uow: UnitOfWork, child: str) -> str | None:
    for name, fd in uow.app.forms.items():
        if any(f.type == "child_table" and f.target_form == child for f in fd.fields.values()):
            return name
    return None
