"""Spreadsheet import and export of records (CSV and Excel .xlsx).

Import: the first row names the columns -- a field name (``phone``) or its
label in either language (``手机`` / ``Mobile``).  Each row is validated like
a record created through the API (field types, required, options, PII
encryption) and inserted in batches (COPY on PostgreSQL).  ``mode='all'``
writes nothing if any row is bad; ``mode='skip'`` writes the good rows.  A
dry run reports the problems per row and field and writes nothing.

Export: the rows of a list view (same filters and permissions), formatted for
people (option labels, local times), PII masked for users without
``view_pii``.  Rows are read in pages of 2,000 inside one read transaction;
the file is assembled in memory before the response (openpyxl write-only
mode for Excel) -- fine for list views, not meant for whole-database dumps.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Callable, Iterable, Iterator

from engine.errors import Forbidden, RecordInvalid
from engine.uow import UnitOfWork

from .access import grant
from .bulk import BulkReport, BulkWriter, run
from .model import FormDef

MAX_IMPORT_BYTES = 200 * 1024 * 1024


def _column_map(form: FormDef, headers: list[str], lang: str = "zh") -> tuple[list[str | None], list[dict]]:
    """Header cell -> field name; unknown headers are problems of row 1 (the header row)."""
    by_label: dict[str, str] = {}
    for name, f in form.fields.items():
        by_label[name.lower()] = name
        for text in f.label.values():
            if text:
                by_label[text.strip().lower()] = name
    for sys_col in ("owner", "state", "created_at"):
        by_label[sys_col] = sys_col
    names: list[str | None] = []
    problems: list[dict] = []
    for i, h in enumerate(headers):
        key = (str(h) if h is not None else "").strip().lower()
        if not key:
            names.append(None)
            continue
        name = by_label.get(key)
        if name is None:
            problems.append({"row": 1, "field": h, "code": "unknown_column", "message": (
                f"第 {i + 1} 列“{h}”不是{form.label.get('zh') or form.name}的字段" if lang == "zh"
                else f"column {i + 1} '{h}' is not a field of {form.name}")})
        names.append(name)
    return names, problems


def read_rows(filename: str, blob: bytes) -> tuple[list[str], Iterator[list[Any]]]:
    """Header + data rows from a .csv (UTF-8, with or without BOM, or GB18030) or .xlsx file."""
    check_size(blob)
    lower = filename.lower()
    if lower.endswith(".xlsx") or blob[:2] == b"PK":
        from openpyxl import load_workbook
        try:
            wb = load_workbook(io.BytesIO(blob), read_only=True, data_only=True)
        except Exception:  # noqa: BLE001 - any unreadable workbook
            raise RecordInvalid([{"field": None, "code": "bad_file",
                                  "message": "无法读取该 .xlsx 工作簿 / not a readable .xlsx workbook"}]) from None
        rows = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(c) if c is not None else "" for c in next(rows, [])]
        return header, (list(r) for r in rows)
    # UTF-8 first (strict: any invalid byte fails fast in C), then GB18030 -- which decodes any byte string
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = blob.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise RecordInvalid([{"field": None, "code": "bad_file",
                              "message": "CSV 文件既不是 UTF-8 也不是 GB18030 编码 / the CSV is neither UTF-8 nor GB18030 text"}])
    if "\x00" in text[:4096]:
        raise RecordInvalid([{"field": None, "code": "bad_file",
                              "message": "这不是 CSV 文本文件 / this is not a CSV text file"}])
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise RecordInvalid([{"field": None, "code": "bad_file", "message": f"CSV 格式错误 / malformed CSV: {exc}"}]) from None
    return header, _csv_rows(reader)


def _csv_rows(reader) -> Iterator[list[Any]]:
    """Rows of ``reader``; a malformed line becomes a clear error, not a traceback."""
    try:
        yield from reader
    except csv.Error as exc:
        raise RecordInvalid([{"field": None, "code": "bad_file",
                              "message": f"CSV 第 {reader.line_num} 行格式错误 / malformed CSV at line {reader.line_num}: {exc}"}]) from None


def count_rows(filename: str, blob: bytes) -> int | None:
    """A cheap estimate of the data rows (for progress): newlines in a CSV; None for a workbook."""
    if filename.lower().endswith(".xlsx") or blob[:2] == b"PK":
        return None
    n = blob.count(b"\n")
    return max(n - 1 + (0 if blob.endswith(b"\n") else 1), 0)


def import_form(uow: UnitOfWork, form_name: str) -> FormDef:
    """The form, if the user may import into it (``import`` or ``create`` permission); else Forbidden."""
    form = uow.service("records").form(uow.app, form_name)
    if not grant(form, uow.user, "import").allowed and not grant(form, uow.user, "create").allowed:
        raise Forbidden(f"you may not import {form.name} records")
    return form


def check_size(blob: bytes) -> None:
    if len(blob) > MAX_IMPORT_BYTES:
        raise RecordInvalid([{"field": None, "code": "too_large", "message": "文件太大（最大 200 MB） / file too large (max 200 MB)"}])


def import_records(uow: UnitOfWork, form_name: str, filename: str, blob: bytes, *, mode: str = "all",
                   dry_run: bool = False, progress: Callable[[int], None] | None = None) -> BulkReport:
    """Validate and insert the rows of a file; see the module docstring.

    Row numbers count data rows (the first row after the header is row 1,
    blank rows included, so they match the spreadsheet minus its header);
    header problems are row 1 of the ``unknown_column`` kind.
    """
    records = uow.service("records")
    form = import_form(uow, form_name)
    header, rows = read_rows(filename, blob)
    names, problems = _column_map(form, header, uow.lang)
    if problems and mode == "all" and not dry_run:
        _raise(problems)
    table = records.table(uow.app, form.name)
    writer = BulkWriter(uow, form, table)
    convert = writer.row_converter(names)

    def numbered() -> Iterator[tuple[int, Any, list]]:
        for i, raw in enumerate(rows, start=1):
            if not raw or (raw[0] in ("", None) and not any(c not in (None, "") for c in raw)):
                continue                        # blank line
            yield i, convert, raw

    report = run(writer, numbered(), mode="skip" if dry_run else mode, progress=progress, dry_run=dry_run)
    report.errors = problems + report.errors
    return report


def _raise(problems: list[dict]):
    raise RecordInvalid([{**p, "message": p["message"]} for p in problems])


def export_rows(uow: UnitOfWork, form_name: str, filters: dict, q: str | None, order: str | None,
                batch: int = 2000, titles: Callable[[str, set], dict] | None = None) -> tuple[list[str], Iterator[list[Any]]]:
    """Header (labels in the user's language) and formatted rows, streamed in batches.

    ``titles(form, ids)`` -> ``{id: title}``: how the caller shows linked records (the pages'
    titles, with their permission and personal-data rules), asked once per linked form and batch;
    a link it does not name, or without ``titles``, is written as ``#id``."""
    records = uow.service("records")
    form = records.form(uow.app, form_name)
    g = grant(form, uow.user, "export")
    if not g.allowed and not grant(form, uow.user, "read").allowed:
        raise Forbidden(f"you may not export {form.name} records")
    lang = uow.lang
    columns = ["id"] + [n for n in form.fields if n not in g.hidden and form.fields[n].type not in ("child_table", "signature")] + [
        "state", "owner", "created_at"]
    header = [form.fields[c].label.get(lang, c) if c in form.fields else c for c in columns]
    tz = uow.app.tz

    def rows() -> Iterator[list[Any]]:
        offset = 0
        while True:
            page, _ = records.list(uow, form_name, filters=filters, q=q, order=order or "id", limit=batch,
                                   offset=offset, count=False)
            named = _link_titles(form, columns, page, titles)
            for rec in page:
                shown = records.to_json(uow, form, rec, g)
                out = []
                for c in columns:
                    f = form.fields.get(c)
                    v = shown.get(c)
                    if f is not None and f.type == "link" and isinstance(v, int):
                        out.append(named.get((f.target_form, v)) or f"#{v}")
                        continue
                    if f is not None and v is not None and not (f.pii and not records.can_view_pii(uow)):
                        try:
                            v = f.ftype.format(rec.get(c), dict(f.spec), lang, tz)
                        except Exception:  # noqa: BLE001 - fall back to the JSON value
                            pass
                    out.append(v)
                yield out
            if len(page) < batch:
                return
            offset += batch
    return header, rows()


def _link_titles(form: FormDef, columns: list[str], page: list[dict],
                 titles: Callable[[str, set], dict] | None) -> dict[tuple[str, int], str]:
    """``{(form, id): title}`` for the records the page's link columns point at: one call per linked form."""
    if titles is None:
        return {}
    wanted: dict[str, set] = {}
    for c in columns:
        f = form.fields.get(c)
        if f is not None and f.type == "link":
            ids = {rec[c] for rec in page if isinstance(rec.get(c), int)}
            if ids:
                wanted.setdefault(f.target_form, set()).update(ids)
    return {(target, i): t for target, ids in wanted.items() for i, t in titles(target, ids).items()}


def to_csv(header: list[str], rows: Iterable[list[Any]]) -> Iterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf)
    yield "\ufeff".encode()   # BOM: Excel opens UTF-8 Chinese text correctly
    w.writerow(header)
    for i, row in enumerate(rows):
        w.writerow(["" if v is None else v for v in row])
        if i % 500 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def to_xlsx(header: list[str], rows: Iterable[list[Any]], title: str) -> bytes:
    from openpyxl import Workbook
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=title[:31] or "export")
    ws.append(header)
    for row in rows:
        ws.append([v if isinstance(v, (int, float)) or v is None else str(v) for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
