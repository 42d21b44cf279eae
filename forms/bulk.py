"""Bulk writes: imports and demo data, validated per row, inserted in batches.

Each row goes through the same field parsing and checks as the record
service (types, required, options, unique, PII encryption), but rows are
inserted with one multi-row statement per batch (``executemany`` on SQLite,
``COPY`` on PostgreSQL), and rules are not run -- imported history is
history, not new events.  ``mode='all'`` rejects the whole import on the
first bad row (nothing written), ``mode='skip'`` writes the good rows and
reports the bad ones.

Why rows are lists, not dicts: a row is converted straight into the table's
column order (a list per row, constants such as ``created_at`` filled in
once per import), so a 100k-row CSV costs one parser call per cell plus one
list copy per row -- no per-row dict building, no per-row column lookups.
On SQLite the column's dialect bind processor (DateTime -> the same text
SQLAlchemy writes) is applied during conversion, so ``executemany`` gets
values it can bind as they are.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence


from sqlalchemy import select

from engine import later
from engine.clock import to_db
from engine.errors import RecordInvalid
from engine.uow import UnitOfWork

from .attachments import file_field_names
from .fieldtypes import FieldType, FieldValueError
from .fieldtypes.base import fail
from .model import FormDef
from .sequences import allocate
from .tables import bi_column

BATCH = 5000
PROGRESS_EVERY = 1000         # rows between progress callbacks (a job's live counter; no database write per row)
MAX_ERRORS_ALL = 100          # mode='all' stops reading after this many problems
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


def _say(lang: str, zh: str, en: str) -> str:
    return zh if lang == "zh" else en


def _label(f, lang: str) -> str:
    return (f.label.get(lang) or f.label.get("en") or f.label.get("zh") or f.name) if f.label else f.name


class BulkWriter:
    """Prepares rows for one form once (field lookups, encoders), then converts fast."""

    def __init__(self, uow: UnitOfWork, form: FormDef, table):
        self.uow, self.form, self.table = uow, form, table
        self.rt = uow.runtime
        self.lang = uow.lang
        self.fields = {n: f for n, f in form.fields.items() if f.stored and f.type not in ("formula", "lookup", "auto_number")}
        self.formulas = [f for f in form.fields.values() if f.type == "formula" and f.stored and f.formula is not None]
        self.numbers = [f for f in form.fields.values() if f.type == "auto_number"]
        self.required = [n for n, f in self.fields.items() if f.required]
        self.specs = {}
        for n, f in self.fields.items():
            spec = dict(f.spec)
            spec["_tz"] = uow.app.tz
            self.specs[n] = spec
        # one compiled parser per field (spec worked out once)
        self.parsers = {n: f.ftype.compile_parser(self.specs[n]) for n, f in self.fields.items()}
        for n in file_field_names(form):     # a file gets onto a record only through an upload
            if n in self.parsers:
                self.parsers[n] = _no_files(self.parsers[n])
        self.skipped = frozenset(n for n in form.fields if n not in self.fields)   # formulas, lookups, numbers
        # the insert: every column but id, in table order; on SQLite each column's dialect bind processor
        self.dialect = uow.conn.dialect
        self.sqlite = self.dialect.name == "sqlite"
        self.columns = [c.name for c in table.columns if c.name != "id"]
        self.pos = {c: i for i, c in enumerate(self.columns)}
        self.procs = [table.c[c].type.dialect_impl(self.dialect).bind_processor(self.dialect) if self.sqlite else None
                      for c in self.columns]
        self.uniques = [(n, f) for n, f in form.fields.items() if f.unique and n in self.fields]
        self._seen: dict[str, set] = {n: set() for n, _ in self.uniques}

    # -- building blocks --------------------------------------------------------------------
    def _db(self, col: str, value: Any) -> Any:
        """A db-form value as the driver gets it (SQLite: through the column's bind processor)."""
        if value is None:
            return None
        proc = self.procs[self.pos[col]] if col in self.pos else None
        return proc(value) if proc is not None else value

    def template(self) -> list:
        """The values every inserted row starts with: stamps, creator, empty owner/state."""
        now = to_db(self.uow.now)
        row: list[Any] = [None] * len(self.columns)
        for col, value in (("created_at", now), ("updated_at", now), ("created_by", self.uow.user.username)):
            if col in self.pos:
                row[self.pos[col]] = self._db(col, value)
        return row

    def _error(self, errors: list, row_no: int, field_: str | None, code: str, message: str) -> None:
        errors.append({"row": row_no, "field": field_, "code": code, "message": message})

    def _required_error(self, errors: list, row_no: int, name: str) -> None:
        f = self.form.fields[name]
        self._error(errors, row_no, name, "required", _say(self.lang, f"请填写“{_label(f, 'zh')}”", f"{_label(f, 'en')} is required"))

    def _system_value(self, key: str, value: Any) -> Any:
        if key in _STAMPS and value is not None and not isinstance(value, dt.datetime):
            value = dt.datetime.fromisoformat(str(value).strip())
        if key in _STAMPS and value is not None:
            value = to_db(value)
        return self._db(key, value)

    # -- converters: raw row -> list in column order, or None (problems appended to errors) ---
    def row_converter(self, names: Sequence[str | None]) -> Callable[[Sequence[Any], int, list], list | None]:
        """A converter for positional rows whose columns are ``names`` (None: ignored column)."""
        base = self.template()
        pos, procs = self.pos, self.procs
        plan = []          # (index, name, parser, pii, dst, dst_bi, to_db or None, spec, proc, required)
        system = []        # (index, system column)
        mapped = set()
        for i, name in enumerate(names):
            if name is None or name in mapped:
                continue
            if name in _SYSTEM:
                if name in pos:
                    system.append((i, name))
                    mapped.add(name)
                continue
            f = self.fields.get(name)
            if f is None:                       # formulas, lookups, numbers: computed here, the column is ignored
                continue
            mapped.add(name)
            to_db_ = None if type(f.ftype).to_db is FieldType.to_db else f.ftype.to_db
            if f.pii:
                dst, dst_bi, proc = pos[name], pos[bi_column(name)], None
            else:
                dst, dst_bi, proc = pos[name], None, procs[pos[name]]
            plan.append((i, name, self.parsers[name], bool(f.pii), dst, dst_bi, to_db_, f.spec, proc, f.required))
        missing = [n for n in self.required if n not in mapped]
        return self._generate(plan, system, missing, base, len(names))

    def _generate(self, plan: list, system: list, missing: list, base: list, width: int):
        """Write the converter for one header as straight-line Python and compile it.

        Why generated: a loop over a per-column plan pays tuple unpacking and
        branch tests per cell; the unrolled function does only the work each
        column needs (parse, encrypt, to_db, bind), which is what makes the
        import competitive with a hand-written insert loop.  Only indices and
        namespace names go into the source -- never text from the definition.
        """
        lang = self.lang
        ns: dict[str, Any] = {"base": base, "FieldValueError": FieldValueError, "keyring": self.rt.keyring,
                              "req": self._required_error, "err": self._error, "lang": lang, "width": width,
                              "system": self._system_row, "formulas": self._formulas}
        lines = ["def convert(values, row_no, errors):",
                 "    out = base.copy()",
                 "    bad = False",
                 "    if len(values) < width:",
                 "        values = list(values) + [None] * (width - len(values))"]
        if self.formulas:
            lines.append("    parsed = {}")
        for k, (i, name, parser, pii, dst, dst_bi, to_db_, spec, proc, required) in enumerate(plan):
            ns[f"N{k}"], ns[f"P{k}"], ns[f"T{k}"], ns[f"S{k}"], ns[f"B{k}"] = name, parser, to_db_, spec, proc
            store = []
            if self.formulas:
                store.append(f"parsed[N{k}] = v")
            if pii:
                store += ["s = str(v)", f"out[{dst}] = keyring.encrypt(s)", f"out[{dst_bi}] = keyring.blind_index(s)"]
            else:
                expr = "v"
                if to_db_ is not None:
                    expr = f"T{k}({expr}, S{k})"
                if proc is not None:
                    expr = f"B{k}({expr})"
                store.append(f"out[{dst}] = {expr}")
            lines += [f"    v = values[{i}]",
                      "    if v is not None and v != '':",
                      "        try:",
                      f"            v = P{k}(v)",
                      "        except FieldValueError as exc:",
                      f"            err(errors, row_no, N{k}, exc.code, exc.message.get(lang) or exc.message.get('en'))",
                      "            bad = True",
                      "        else:",
                      "            if v is not None:"]
            lines += ["                " + line for line in store]
            if required:
                lines += ["            else:", f"                req(errors, row_no, N{k})", "                bad = True",
                          "    else:", f"        req(errors, row_no, N{k})", "        bad = True"]
        for k, name in enumerate(missing):
            ns[f"M{k}"] = name
            lines += [f"    req(errors, row_no, M{k})", "    bad = True"]
        lines += ["    if bad:", "        return None"]
        if system:
            ns["SYS"] = system
            lines += ["    if not system(out, values, SYS, row_no, errors):", "        return None"]
        if self.formulas:
            lines.append("    formulas(out, parsed)")
        lines.append("    return out")
        code = compile("\n".join(lines) + "\n", f"<import converter {self.form.name}>", "exec")
        exec(code, ns)  # noqa: S102 - source built above from indices and fixed text only
        return ns["convert"]

    def _system_row(self, out: list, values: Sequence[Any], system: list, row_no: int, errors: list) -> bool:
        """Copy owner/state/created_at columns of the file into the row; False (and an error) when bad."""
        for i, key in system:
            v = values[i]
            if v is None or v == "":
                continue
            try:
                out[self.pos[key]] = self._system_value(key, v)
            except (ValueError, TypeError):
                self._error(errors, row_no, key, "invalid", _say(
                    self.lang, f"“{key}”不是有效的日期时间（例：2024-05-01 09:30）",
                    f"{key} is not a valid date and time (e.g. 2024-05-01 09:30)"))
                return False
        return True

    def _formulas(self, out: list, parsed: dict) -> None:
        ctx = self.uow.eval_context()
        for f in self.formulas:
            try:
                out[self.pos[f.name]] = self._db(f.name, f.ftype.to_db(f.formula.evaluate(dict(parsed), ctx), f.spec))
            except Exception:  # noqa: BLE001 - a formula that can't be computed stays empty
                out[self.pos[f.name]] = None

    # -- per batch ----------------------------------------------------------------------------
    def check_unique(self, rows: list[tuple[int, list]], errors: list) -> list[tuple[int, list]]:
        """Drop rows whose unique value repeats an earlier row of the file or an existing record."""
        if not self.uniques:
            return rows
        bad: set[int] = set()
        for name, f in self.uniques:
            scope = [s for s in (f.unique if isinstance(f.unique, tuple) else ()) if s in self.pos]
            col = bi_column(name) if f.pii else name
            ci = self.pos[col]
            sidx = [self.pos[s] for s in scope]
            keys = {}
            seen = self._seen[name]
            for row_no, row in rows:
                if row[ci] is None:
                    continue
                key = tuple(row[i] for i in sidx) + (row[ci],)
                if key in seen or key in keys:
                    bad.add(row_no)
                    self._unique_error(errors, row_no, f)
                else:
                    keys[key] = row_no
            existing = self._existing(col, scope, list(keys))
            for key in existing:
                bad.add(keys[key])
                self._unique_error(errors, keys[key], f)
            seen.update(k for k in keys if k not in existing)
        return [r for r in rows if r[0] not in bad] if bad else rows

    def _existing(self, col: str, scope: list[str], keys: list[tuple]) -> set[tuple]:
        t = self.table
        found: set[tuple] = set()
        wanted = set(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            values = list({k[-1] for k in chunk})
            cols = [t.c[s] for s in scope] + [t.c[col]]
            for r in self.uow.conn.execute(select(*cols).where(t.c[col].in_(values))):
                key = tuple(self._db(c.name, v) for c, v in zip(cols, r))
                if key in wanted:
                    found.add(key)
        return found

    def _unique_error(self, errors: list, row_no: int, f) -> None:
        self._error(errors, row_no, f.name, "unique", _say(
            self.lang, f"“{_label(f, 'zh')}”已存在（与已有记录或文件中前面的行重复）",
            f"another record (or an earlier row of the file) already has this {_label(f, 'en')}"))

    def number(self, rows: list[list]) -> None:
        """Fill auto_number fields for a batch from one block of the gap-free counter."""
        uow = self.uow
        local = uow.now.astimezone(uow.app.tz)
        for f in self.numbers:
            pattern = f.spec.get("pattern") or "{######}"
            key = f"{self.form.name}.{f.name}:{f.ftype.sequence_key(pattern, local)}"
            first = allocate(uow.conn, uow.app.name, key, len(rows))
            i_col = self.pos[f.name]
            for i, row in enumerate(rows):
                row[i_col] = f.ftype.render_pattern(pattern, local, first + i)

    def insert(self, rows: list[list]) -> None:
        if self.sqlite:
            _executemany(self.uow.conn, self.table, self.columns, rows)
        else:
            _copy(self.uow.conn, self.table, self.columns, rows)


def _no_files(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Attachment/image columns of an import must be empty: a file gets onto a record
    only through an upload and a record save (which checks who uploaded it)."""
    def parser(raw: Any) -> Any:
        if parse(raw) is None:
            return None
        raise fail("files_not_importable", "附件和图片不能通过导入添加：请清空此列，保存后在记录页面上传文件",
                   "Attachments and images can't be imported: leave this column empty and upload the files on the record's page")
    return parser


def bulk_insert(uow: UnitOfWork, form: FormDef, table, rows: Iterable[Mapping[str, Any]], *, mode: str = "all",
                progress: Callable[[int], None] | None = None, batch: int = BATCH, dry_run: bool = False) -> BulkReport:
    """Validate and insert mapping ``rows``; see the module docstring for modes."""
    writer = BulkWriter(uow, form, table)
    converters: dict[tuple, Callable] = {}

    def lists():
        for i, raw in enumerate(rows, start=1):
            keys = tuple(raw.keys())
            conv = converters.get(keys)
            if conv is None:
                unknown = [k for k in keys if k not in writer.fields and k not in _SYSTEM and k not in writer.skipped]
                conv = converters[keys] = (_unknown(writer, unknown) if unknown else writer.row_converter(keys))
            yield i, conv, tuple(raw.values())

    return run(writer, lists(), mode=mode, progress=progress, batch=batch, dry_run=dry_run)


def _unknown(writer: BulkWriter, unknown: list[str]):
    def convert(_values, row_no, errors):
        for key in unknown:
            writer._error(errors, row_no, key, "unknown_field", _say(writer.lang, f"没有字段“{key}”", f"unknown field '{key}'"))
        return None
    return convert


def run(writer: BulkWriter, rows: Iterable[tuple[int, Callable, Sequence[Any]]], *, mode: str = "all",
        progress: Callable[[int], None] | None = None, batch: int = BATCH, dry_run: bool = False) -> BulkReport:
    """The import loop: ``rows`` yields (row number, converter, values); converted rows go in batches."""
    report = BulkReport()
    errors = report.errors
    pending: list[tuple[int, list]] = []
    stop_all = mode == "all"

    def flush():
        good = writer.check_unique(pending, errors)
        if good and not (stop_all and errors):
            values = [r for _, r in good]
            if not dry_run:
                if writer.numbers:
                    writer.number(values)
                writer.insert(values)
            report.inserted += len(values)
        pending.clear()

    for row_no, convert, values in rows:
        report.total += 1
        if progress is not None and report.total % PROGRESS_EVERY == 0:
            progress(report.total)
        row = convert(values, row_no, errors)
        if row is None:
            if stop_all and len(errors) >= MAX_ERRORS_ALL:
                break
            continue
        pending.append((row_no, row))
        if len(pending) >= batch:
            flush()
            if stop_all and len(errors) >= MAX_ERRORS_ALL:
                break
    if not (stop_all and errors):
        flush()
    if progress is not None:
        progress(report.total)
    errors.sort(key=lambda e: e["row"] if isinstance(e.get("row"), int) else 0)
    if stop_all and errors:
        raise RecordInvalid([{"field": e["field"], "code": e["code"], "message": row_prefix(writer.lang, e["row"]) + e["message"],
                              "row": e["row"]} for e in errors[:MAX_ERRORS_ALL]])
    return report


def row_prefix(lang: str, row: int) -> str:
    return _say(lang, f"第 {row} 行：", f"row {row}: ")


def _executemany(conn, table, columns: list[str], rows: list[list]) -> None:
    """SQLite: one prepared INSERT, rows (already through the bind processors) straight to the driver.

    The raw DBAPI cursor belongs to the same connection, so the insert is part
    of the caller's transaction.
    """
    names = ", ".join('"' + c + '"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    later.flush(conn)                  # writes held for the next statement go first (engine.later)
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
    finally:
        cur.close()


def _copy(conn, table, columns: list[str], rows: list[list]) -> None:
    """PostgreSQL COPY FROM STDIN: the fastest bulk path, inside our transaction."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    json_idx = {i for i, c in enumerate(columns) if table.c[c].type.__class__.__name__ == "JSON"}
    for r in rows:
        out = []
        for i, v in enumerate(r):
            if v is None:
                out.append("\\N")
            elif i in json_idx:
                out.append(json.dumps(v, ensure_ascii=False, default=str))
            elif isinstance(v, bool):
                out.append("t" if v else "f")
            else:
                out.append(str(v))
        w.writerow(out)
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    later.flush(conn)                  # writes held for the next statement go first (engine.later)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        cur.copy_expert(f'COPY "{table.name}" ({cols}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')', buf)
