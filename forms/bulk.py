"""Bulk writes: imports and demo data, validated per row, inserted in batches.

Each row goes through the same field parsing and checks as the record
service (types, required, options, PII encryption), but rows are inserted
with one multi-row statement per batch (``executemany``; on PostgreSQL a
``COPY`` when the rows are plain), and rules are not run -- imported history
is history, not new events.  ``mode='all'`` rejects the whole import on the
first bad row (nothing written), ``mode='skip'`` writes the good rows and
reports the bad ones.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from engine.clock import to_db
from engine.errors import RecordInvalid
from engine.uow import UnitOfWork

from .attachments import file_field_names
from .fieldtypes import FieldType, FieldValueError
from .fieldtypes.base import fail
from .sequences import allocate
from .model import FormDef
from .tables import bi_column

BATCH = 2000
_SYSTEM = frozenset(("state", "owner", "created_at", "updated_at", "created_by"))
_STAMPS = frozenset(("created_at", "updated_at"))


@dataclass
class BulkReport:
    total: int = 0
    inserted: int = 0
    errors: list[dict] = field(default_factory=list)   # {"row": n, "field": f, "code": c, "message": m}

    def as_dict(self) -> dict:
        return {"total": self.total, "inserted": self.inserted, "errors": self.errors[:1000],
                "error_count": len(self.errors)}


class BulkWriter:
    """Prepares rows for one form once (field lookups, encoders), then converts fast."""

    def __init__(self, uow: UnitOfWork, form: FormDef, table):
        self.uow, self.form, self.table = uow, form, table
        self.rt = uow.runtime
        self.fields = {n: f for n, f in form.fields.items() if f.stored and f.type not in ("formula", "lookup", "auto_number")}
        self.formulas = [f for f in form.fields.values() if f.type == "formula" and f.stored and f.formula is not None]
        self.numbers = [f for f in form.fields.values() if f.type == "auto_number"]
        self.required = [n for n, f in self.fields.items() if f.required]
        self.specs = {}
        for n, f in self.fields.items():
            spec = dict(f.spec)
            spec["_tz"] = uow.app.tz
            self.specs[n] = spec
        # one compiled parser per field (spec worked out once), and per column what to do with the value:
        # (name, parser, pii, to_db or None when it is the identity, the field's spec for to_db)
        self.parsers = {n: f.ftype.compile_parser(self.specs[n]) for n, f in self.fields.items()}
        for n in file_field_names(form):
            if n in self.parsers:
                self.parsers[n] = _no_files(self.parsers[n])
        self.columns = {}
        for n, f in self.fields.items():
            if n in _SYSTEM:            # system columns win over a field of the same name, as before
                continue
            to_db = None if type(f.ftype).to_db is FieldType.to_db else f.ftype.to_db
            self.columns[n] = (n, self.parsers[n], bool(f.pii), to_db, f.spec)
        self.skipped = frozenset(n for n in form.fields if n not in self.fields)   # formulas, lookups, numbers
        self._now_src: Any = None       # uow.now and its db form, worked out again only when uow.now changes
        self._now_db: Any = None

    def convert(self, raw: Mapping[str, Any], row_no: int, errors: list[dict], lang: str = "zh") -> dict | None:
        out: dict[str, Any] = {}
        parsed: dict[str, Any] = {}
        bad = False
        columns_get = self.columns.get
        for key, value in raw.items():
            col = columns_get(key)
            if col is None:
                if key in _SYSTEM:
                    if key in _STAMPS and value is not None:
                        value = to_db(value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value)))
                    out[key] = value
                    continue
                if key in self.skipped:
                    continue
                errors.append({"row": row_no, "field": key, "code": "unknown_field", "message": f"unknown field '{key}'"})
                bad = True
                continue
            name, parser, pii, to_db_, spec = col
            try:
                value = parser(value)
            except FieldValueError as exc:
                errors.append({"row": row_no, "field": key, "code": exc.code,
                               "message": exc.message.get(lang) or exc.message.get("en")})
                bad = True
                continue
            parsed[name] = value
            if value is None:
                out[name] = None
            elif pii:
                keyring = self.rt.keyring
                out[name] = keyring.encrypt(str(value))
                out[bi_column(name)] = keyring.blind_index(str(value))
            elif to_db_ is None:
                out[name] = value
            else:
                out[name] = to_db_(value, spec)
        if self.formulas:
            env = dict(parsed)
            for f in self.formulas:
                try:
                    out[f.name] = f.ftype.to_db(f.formula.evaluate(env, self.uow.eval_context()), f.spec)
                except Exception:  # noqa: BLE001 - a formula that can't be computed stays empty
                    out[f.name] = None
        for name in self.required:
            if out.get(name) is None:
                errors.append({"row": row_no, "field": name, "code": "required", "message": f"{name} is required"})
                bad = True
        if bad:
            return None
        now = self.uow.now
        if now is not self._now_src:
            self._now_src, self._now_db = now, to_db(now)
        out.setdefault("created_at", self._now_db)
        out.setdefault("owner", None)
        out.setdefault("state", None)
        out.setdefault("updated_at", out["created_at"])
        out.setdefault("created_by", self.uow.user.username)
        return out

    def number(self, rows: list[dict]) -> None:
        """Fill auto_number fields for a batch from one block of the gap-free counter."""
        _number_rows(self, rows)


def _no_files(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Attachment/image columns of an import must be empty: a file gets onto a record
    only through an upload and a record save (which checks who uploaded it)."""
    def parser(raw: Any) -> Any:
        if parse(raw) is None:
            return None
        raise fail("files_not_importable", "附件和图片不能通过导入添加：请清空此列，保存后在记录页面上传文件",
                   "Attachments and images can't be imported: leave this column empty and upload the files on the record's page")
    return parser


def _number_rows(writer: "BulkWriter", rows: list[dict]) -> None:
    uow = writer.uow
    local = uow.now.astimezone(uow.app.tz)
    for f in writer.numbers:
        pattern = f.spec.get("pattern") or "{######}"
        key = f"{writer.form.name}.{f.name}:{f.ftype.sequence_key(pattern, local)}"
        first = allocate(uow.conn, uow.app.name, key, len(rows))
        for i, row in enumerate(rows):
            row[f.name] = f.ftype.render_pattern(pattern, local, first + i)


def bulk_insert(uow: UnitOfWork, form: FormDef, table, rows: Iterable[Mapping[str, Any]], *, mode: str = "all",
                progress: Callable[[int], None] | None = None, batch: int = BATCH, dry_run: bool = False) -> BulkReport:
    """Validate and insert ``rows``; see the module docstring for modes."""
    writer = BulkWriter(uow, form, table)
    report = BulkReport()
    pending: list[dict] = []
    columns = [c.name for c in table.columns if c.name != "id"]

    def flush():
        if pending and writer.numbers and not dry_run:
            writer.number(pending)
        if pending and not dry_run:
            _insert(uow.conn, table, columns, pending)
            report.inserted += len(pending)
        elif pending:
            report.inserted += len(pending)
        pending.clear()
        if progress:
            progress(report.total)

    for i, raw in enumerate(rows, start=1):
        report.total += 1
        row = writer.convert(raw, i, report.errors, uow.lang)
        if row is None:
            if mode == "all" and len(report.errors) >= 100:
                break
            continue
        pending.append(row)
        if len(pending) >= batch:
            if mode == "all" and report.errors:
                pending.clear()
                continue
            flush()
    if mode == "all" and report.errors:
        raise RecordInvalid([{"field": e["field"], "code": e["code"], "message": f"row {e['row']}: {e['message']}"}
                             for e in report.errors[:100]])
    flush()
    return report


def _insert(conn, table, columns: list[str], rows: list[dict]) -> None:
    if conn.dialect.name == "postgresql":
        _copy(conn, table, columns, rows)
    else:
        _executemany(conn, table, columns, rows)


def _executemany(conn, table, columns: list[str], rows: list[dict]) -> None:
    """SQLite: one prepared INSERT, tuples straight to the driver's executemany.

    Each column's SQLAlchemy bind processor (JSON, Numeric, DateTime...) is
    applied, so stored values are exactly what ``table.insert()`` would store,
    without its per-row parameter bookkeeping.
    """
    dialect = conn.dialect
    procs = [table.c[c].type.bind_processor(dialect) for c in columns]
    names = ", ".join('"' + c + '"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'
    params = []
    for r in rows:
        params.append(tuple(p(r.get(c)) if p is not None else r.get(c) for c, p in zip(columns, procs)))
    conn.exec_driver_sql(sql, params)


def _copy(conn, table, columns: list[str], rows: list[dict]) -> None:
    """PostgreSQL COPY FROM STDIN: the fastest bulk path, inside our transaction."""
    import json

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    json_cols = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
    for r in rows:
        out = []
        for c in columns:
            v = r.get(c)
            if v is None:
                out.append("\\N")
            elif c in json_cols:
                out.append(json.dumps(v, ensure_ascii=False, default=str))
            elif isinstance(v, bool):
                out.append("t" if v else "f")
            else:
                out.append(str(v))
        w.writerow(out)
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        cur.copy_expert(f'COPY "{table.name}" ({cols}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')', buf)
