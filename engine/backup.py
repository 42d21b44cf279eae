"""Backup and restore of a whole Loom database, portable between SQLite and PostgreSQL.

A backup is a zip:

* ``manifest.json`` -- format, Loom version, Alembic revision(s), and for every
  table its portable schema (generic column types, primary key, indexes,
  unique constraints, foreign keys), its row count and the sha256 of its data;
* ``tables/NNNN_<table>.jsonl`` -- one JSON array per row, columns in manifest
  order, written in batches while reading (never a whole table in memory);
* ``files/...`` -- the uploaded files under ``LOOM_FILES_DIR``, when there is one.

Why not the database's own dump: the same archive restores into SQLite or
PostgreSQL, and the schema comes from *reflection of the live database* (which
is what the platform migrations and each app's form tables actually created),
so no engine has to be asked how it builds its tables.  ``loom_alembic_version`` is
copied like any table: a restored database is at the backup's revision and the
next ``loom`` start upgrades it as usual.

Restore checks everything before writing: the manifest, every member's
sha256, and that the target is empty (unless ``force``).  It then creates the
schema and bulk-inserts in foreign-key order in ONE transaction, so a bad
archive leaves the target as it was.  PostgreSQL sequences are moved past the
restored ids.  Encrypted personal-data columns are copied as ciphertext: the
key (``LOOM_SECRET_KEY(S)`` or the ``<db>.key`` file) is not in the backup.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Date, DateTime, Float, ForeignKeyConstraint, Index,
                        Integer, LargeBinary, MetaData, Numeric, SmallInteger, String, Table, Text, Time,
                        UniqueConstraint, func, inspect, select, text, types)

from .db import Database, redact_url as _redact
from .errors import first_line as _first_line

FORMAT = 1
BATCH = 1000
MANIFEST = "manifest.json"
VERSION_TABLE = "loom_alembic_version"   # engine/migrations/env.py
PII_NOTE = ("Encrypted personal-data columns are stored as ciphertext; the key (LOOM_SECRET_KEY / "
            "LOOM_SECRET_KEYS, or the <database>.key file next to a SQLite database) is NOT in the backup. "
            "Keep it safe separately: without it those fields cannot be read after a restore.")


class BackupError(Exception):
    """A backup cannot be made or restored; the message says why and what to do."""


@dataclass
class Summary:
    tables: int = 0
    rows: int = 0
    files: int = 0
    lines: list[str] = field(default_factory=list)


def files_dir() -> Path | None:
    """The uploaded-files directory, when one is configured and exists."""
    raw = os.environ.get("LOOM_FILES_DIR")
    return Path(raw) if raw and Path(raw).is_dir() else None


# ---------------------------------------------------------------------------
# portable types: a reflected column type <-> a small JSON description

def _type_spec(type_: types.TypeEngine) -> dict:
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        generic = Text()
    for cls, name in ((BigInteger, "bigint"), (SmallInteger, "smallint"), (Integer, "integer"),
                      (Boolean, "boolean"), (DateTime, "datetime"), (Date, "date"), (Time, "time"),
                      (JSON, "json"), (LargeBinary, "binary"), (Float, "float"), (Numeric, "numeric"),
                      (Text, "text"), (String, "string")):
        if isinstance(generic, cls):
            spec = {"type": name}
            if name == "string" and getattr(generic, "length", None):
                spec["length"] = generic.length
            if name == "numeric":
                spec.update(precision=generic.precision, scale=generic.scale)
            if name == "datetime" and getattr(generic, "timezone", False):
                spec["timezone"] = True
            return spec
    return {"type": "text"}


def _sql_type(spec: dict, primary_key: bool = False) -> types.TypeEngine:
    name = spec["type"]
    if name in ("integer", "bigint") and primary_key:
        return BigInteger().with_variant(Integer, "sqlite")   # SQLite: a rowid alias, ids continue
    return {"bigint": lambda: BigInteger(), "smallint": lambda: SmallInteger(), "integer": lambda: Integer(),
            "boolean": lambda: Boolean(), "datetime": lambda: DateTime(timezone=spec.get("timezone", False)),
            "date": lambda: Date(), "time": lambda: Time(), "json": lambda: JSON(), "binary": lambda: LargeBinary(),
            "float": lambda: Float(), "numeric": lambda: Numeric(spec.get("precision"), spec.get("scale")),
            "string": lambda: String(spec.get("length")), "text": lambda: Text()}.get(name, Text)()


def _encode(value: Any, kind: str) -> Any:
    if value is None or kind == "json":
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _decode(value: Any, kind: str) -> Any:
    if value is None or kind == "json":
        return value
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "time":
        return dt.time.fromisoformat(value)
    if kind == "binary":
        return base64.b64decode(value)
    if kind == "numeric":
        return decimal.Decimal(value)
    if kind == "boolean":
        return bool(value)
    return value


# ---------------------------------------------------------------------------
# backup

def _describe(insp, name: str) -> dict:
    pk = insp.get_pk_constraint(name).get("constrained_columns") or []
    cols = [{"name": c["name"], **_type_spec(c["type"]), "nullable": bool(c.get("nullable", True))}
            for c in insp.get_columns(name)]
    indexes = [{"name": ix["name"], "columns": ix["column_names"], "unique": bool(ix.get("unique"))}
               for ix in insp.get_indexes(name) if ix.get("name") and all(ix.get("column_names") or [None])]
    uniques = [{"name": u.get("name"), "columns": u["column_names"]} for u in insp.get_unique_constraints(name)]
    fks = [{"name": f.get("name"), "columns": f["constrained_columns"], "table": f["referred_table"],
            "refcolumns": f["referred_columns"]} for f in insp.get_foreign_keys(name) if f.get("referred_table")]
    return {"name": name, "columns": cols, "primary_key": pk, "indexes": indexes, "uniques": uniques,
            "foreign_keys": fks}


def _table(md: MetaData, desc: dict) -> Table:
    pk = desc["primary_key"]
    cols = [Column(c["name"], _sql_type(c, primary_key=c["name"] in pk and len(pk) == 1),
                   primary_key=c["name"] in pk, nullable=c["nullable"] or c["name"] in pk,
                   autoincrement=(len(pk) == 1 and c["name"] in pk and c["type"] in ("integer", "bigint")))
            for c in desc["columns"]]
    extra: list = [UniqueConstraint(*u["columns"], name=u["name"]) for u in desc["uniques"]]
    extra += [ForeignKeyConstraint(f["columns"], [f"{f['table']}.{c}" for c in f["refcolumns"]], name=f["name"])
              for f in desc["foreign_keys"]]
    table = Table(desc["name"], md, *cols, *extra)
    unique_sets = {tuple(u["columns"]) for u in desc["uniques"]}
    for ix in desc["indexes"]:
        if not (ix["unique"] and tuple(ix["columns"]) in unique_sets):   # SQLite lists unique constraints as indexes too
            Index(ix["name"], *[table.c[c] for c in ix["columns"]], unique=ix["unique"])
    return table


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("loom")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0.1.0"


def backup(url: str, out: str | os.PathLike, files: Path | None = None) -> Summary:
    """Write the database at ``url`` (and ``files``) to the zip ``out``; one consistent snapshot."""
    db = Database(url)
    if db.is_sqlite and ":memory:" not in db.url and not Path(db.url.split("///", 1)[-1]).is_file():
        raise BackupError(f"no database file at {db.url.split('///', 1)[-1]}; check --db")
    summary = Summary()
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    try:
        with db.engine.connect() as conn:
            if db.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")   # one snapshot for all tables
            with conn.begin(), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                insp = inspect(conn)
                names = insp.get_table_names()
                if not names:
                    raise BackupError(f"the database {_redact(url)} has no tables: nothing to back up")
                md = MetaData()
                described = {n: _describe(insp, n) for n in names}
                ordered = [t.name for t in _metadata(md, described.values()).sorted_tables]
                heads = [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))] \
                    if VERSION_TABLE in names else []
                manifest = {"format": FORMAT, "loom_version": _version(), "dialect": db.dialect,
                            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "alembic_heads": heads,
                            "note": PII_NOTE, "tables": [], "files": []}
                for i, name in enumerate(ordered):
                    desc = described[name]
                    member = f"tables/{i:04d}_{name}.jsonl"
                    count, digest = _dump_table(conn, md.tables[name], desc, zf, member)
                    manifest["tables"].append({**desc, "file": member, "rows": count, "sha256": digest})
                    summary.tables += 1
                    summary.rows += count
                if files is not None:
                    manifest["files"] = _dump_files(files, zf)
                    summary.files = len(manifest["files"])
                zf.writestr(MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
        tmp.replace(out)
    except BackupError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"backup failed, no file written: {_first_line(exc)}") from None
    finally:
        db.dispose()
    summary.lines = [f"Backed up {summary.tables} tables, {summary.rows} rows"
                     + (f", {summary.files} files" if summary.files else "") + f" to {out}", PII_NOTE]
    return summary


def _metadata(md: MetaData, descs) -> MetaData:
    for desc in descs:
        _table(md, desc)
    return md


def _dump_table(conn, table: Table, desc: dict, zf: zipfile.ZipFile, member: str) -> tuple[int, str]:
    kinds = [c["type"] for c in desc["columns"]]
    order = [table.c[c] for c in desc["primary_key"]] or list(table.c)
    result = conn.execution_options(yield_per=BATCH).execute(select(table).order_by(*order))
    digest, count = hashlib.sha256(), 0
    with zf.open(member, "w", force_zip64=True) as fh:
        for rows in result.partitions():
            chunk = "".join(json.dumps([_encode(v, k) for v, k in zip(row, kinds)], ensure_ascii=False,
                                       separators=(",", ":")) + "\n" for row in rows).encode("utf-8")
            digest.update(chunk)
            fh.write(chunk)
            count += len(rows)
    return count, digest.hexdigest()


def _dump_files(root: Path, zf: zipfile.ZipFile) -> list[dict]:
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        digest = hashlib.sha256()
        with path.open("rb") as src, zf.open(f"files/{rel}", "w", force_zip64=True) as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
        entries.append({"path": rel, "size": path.stat().st_size, "sha256": digest.hexdigest()})
    return entries


# ---------------------------------------------------------------------------
# restore

def read_manifest(zf: zipfile.ZipFile, origin: str) -> dict:
    """The manifest, checked for shape, with every member's sha256 verified."""
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise BackupError(f"{origin}: not a Loom backup (no {MANIFEST} inside)") from None
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise BackupError(f"{origin}: the manifest is unreadable ({_first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("tables"), list):
        raise BackupError(f"{origin}: unsupported backup format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                          f" (this Loom reads format {FORMAT})")
    for t in manifest["tables"]:
        if not isinstance(t, dict) or not {"name", "file", "rows", "sha256", "columns", "primary_key"} <= set(t):
            raise BackupError(f"{origin}: the manifest lists a table without name/file/rows/sha256/columns")
        _verify(zf, t["file"], t["sha256"], origin)
    for f in manifest.get("files") or []:
        _safe(f["path"], origin)
        _verify(zf, f"files/{f['path']}", f["sha256"], origin)
    return manifest


def _verify(zf: zipfile.ZipFile, member: str, expected: str, origin: str) -> None:
    digest = hashlib.sha256()
    try:
        with zf.open(member) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except KeyError:
        raise BackupError(f"{origin}: '{member}' is listed in the manifest but missing; the backup is incomplete") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise BackupError(f"{origin}: '{member}' is damaged ({_first_line(exc)}); use another backup") from None
    if digest.hexdigest() != expected:
        raise BackupError(f"{origin}: '{member}' does not match its checksum; the backup is damaged or was "
                          "edited -- use another backup")


def _safe(rel: str, origin: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BackupError(f"{origin}: unsafe file path '{rel}' in the backup")
    return rel


def _rows(zf: zipfile.ZipFile, member: str, kinds: list[str]) -> Iterator[list]:
    with zf.open(member) as fh:
        batch = []
        for line in fh:
            batch.append([_decode(v, k) for v, k in zip(json.loads(line), kinds)])
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def restore(url: str, archive: str | os.PathLike, force: bool = False, files: Path | None = None) -> Summary:
    """Restore ``archive`` into the database at ``url`` in one transaction."""
    archive = Path(archive)
    origin = str(archive)
    if not archive.is_file():
        raise BackupError(f"{origin}: no such file")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BackupError(f"{origin}: not a Loom backup ({_first_line(exc)})") from None
    summary = Summary()
    with zf:
        manifest = read_manifest(zf, origin)
        if manifest.get("files") and files is None:
            summary.lines.append(f"The backup holds {len(manifest['files'])} uploaded files; set LOOM_FILES_DIR "
                                 "to an existing directory to restore them.")
        if files is not None and manifest.get("files") and any(files.iterdir()) and not force:
            raise BackupError(f"the files directory {files} is not empty; empty it or use --force")
        db = Database(url)
        try:
            with db.write() as conn:
                _prepare_target(conn, url, force)
                md = MetaData()
                for desc in manifest["tables"]:
                    _table(md, desc)
                md.create_all(conn)
                for desc in manifest["tables"]:
                    table = md.tables[desc["name"]]
                    kinds = [c["type"] for c in desc["columns"]]
                    names = [c["name"] for c in desc["columns"]]
                    count = 0
                    for batch in _rows(zf, desc["file"], kinds):
                        conn.execute(table.insert(), [dict(zip(names, row)) for row in batch])
                        count += len(batch)
                    if count != desc["rows"]:
                        raise BackupError(f"{origin}: {desc['name']} has {count} rows, the manifest says {desc['rows']}")
                    summary.tables += 1
                    summary.rows += count
                if conn.dialect.name == "postgresql":
                    _advance_sequences(conn, md)
        except BackupError:
            raise
        except Exception as exc:
            raise BackupError(f"restore failed, nothing was changed: {_first_line(exc)}") from None
        finally:
            db.dispose()
        if files is not None:
            for f in manifest.get("files") or []:
                target = files / _safe(f["path"], origin)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(f"files/{f['path']}") as src, target.open("wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                summary.files += 1
    summary.lines = [f"Restored {summary.tables} tables, {summary.rows} rows"
                     + (f", {summary.files} files" if summary.files else "")
                     + f" from {origin} (made {manifest.get('created_at', '?')} on {manifest.get('dialect', '?')})",
                     *summary.lines, PII_NOTE]
    return summary


def _prepare_target(conn, url: str, force: bool) -> None:
    """Refuse a database holding data (unless ``force``); drop what is there, inside the transaction."""
    insp = inspect(conn)
    names = insp.get_table_names()
    md = MetaData()
    md.reflect(bind=conn, only=names)
    if not force:
        filled = [n for n in names if n != VERSION_TABLE   # a migrated but unused database is empty
                  and conn.execute(select(func.count()).select_from(md.tables[n])).scalar()]
        if filled:
            raise BackupError(f"the database {_redact(url)} is not empty ({', '.join(sorted(filled)[:5])}"
                              f"{', ...' if len(filled) > 5 else ''} hold data); restore into an empty database, "
                              "or add --force to replace everything in it")
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
    md.drop_all(conn)


def _advance_sequences(conn, md: MetaData) -> None:
    """PostgreSQL: make the next generated id follow the restored ones."""
    for table in md.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not pk[0].autoincrement or not isinstance(pk[0].type, (Integer, BigInteger)):
            continue
        seq = conn.execute(select(func.pg_get_serial_sequence(conn.dialect.identifier_preparer.format_table(table),
                                                              pk[0].name))).scalar()
        if seq:
            top = conn.execute(select(func.max(pk[0]))).scalar()
            conn.execute(select(func.setval(seq, top or 1, top is not None)))
