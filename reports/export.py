"""CSV and XLSX exports of report results, written as a stream of byte chunks.

* CSV: UTF-8 with a BOM (Excel on Chinese Windows opens it correctly),
  labels for dimension values, numbers unformatted (ratios as fractions).
* XLSX: openpyxl in write-only mode (rows are streamed to the file, memory
  stays flat), real numbers with Excel number formats (``0.0%`` for ratios),
  a bold header row and frozen panes.

Cells that start with ``= + - @`` are prefixed with ``'`` so a value typed by
a user can never become a formula in the recipient's spreadsheet.
"""
from __future__ import annotations

import csv
import io
import tempfile
from typing import Any, Iterator

from .charts import Result

CHUNK = 64 * 1024
NUMBER_FORMATS = {"percent": "0.0%", "integer": "#,##0", "currency": "¥#,##0.00", "hours": "#,##0.0",
                  "days": "#,##0.0", "number": "#,##0.##"}


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _cells(res: Result, lang: str) -> tuple[list[str], Iterator[list]]:
    header = [c.label for c in res.columns]
    kinds = [c.kind for c in res.columns]
    names = [c.name for c in res.columns]

    def rows():
        for r in res.rows:
            out = []
            for kind, name, v in zip(kinds, names, r):
                out.append(_safe(res.label(name, v, lang)) if kind == "dimension" else v)
            yield out
    return header, rows()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def csv_chunks(res: Result, lang: str) -> Iterator[bytes]:
    header, rows = _cells(res, lang)
    buf = io.StringIO()
    w = csv.writer(buf)
    buf.write("\ufeff")
    w.writerow(header)
    for row in rows:
        w.writerow([_csv_value(v) for v in row])
        if buf.tell() >= CHUNK:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8")


def xlsx_chunks(res: Result, lang: str, title: str) -> Iterator[bytes]:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=_sheet_title(title))
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    header, rows = _cells(res, lang)
    head = []
    for h in header:
        cell = WriteOnlyCell(ws, value=h)
        cell.font = bold
        head.append(cell)
    ws.append(head)
    formats = [NUMBER_FORMATS.get(c.format, "General") if c.kind == "measure" else None for c in res.columns]
    for row in rows:
        out = []
        for fmt, v in zip(formats, row):
            if fmt and isinstance(v, (int, float)):
                cell = WriteOnlyCell(ws, value=v)
                cell.number_format = fmt
                out.append(cell)
            else:
                out.append(v)
        ws.append(out)
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as f:
        wb.save(f)
        f.seek(0)
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            yield chunk


def _sheet_title(title: str) -> str:
    bad = '[]:*?/\\'
    t = "".join("_" if ch in bad else ch for ch in title).strip() or "report"
    return t[:31]
