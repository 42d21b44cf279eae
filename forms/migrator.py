"""Upgrading form tables with Alembic's operations, keeping every row.

The plan compares the new definitions with the live database (tables,
columns, indexes) and with the previous definitions (column types, declared
``renamed_from``).  Dropping a column or table is *destructive* and needs
``--allow-drop``; everything else (add, rename, retype, indexes) applies in
the import transaction.  On SQLite, column changes use Alembic's batch mode
(copy-and-move), which keeps the rows.
"""
from __future__ import annotations

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, inspect
from sqlalchemy.engine import Connection

from engine.definitions import AppDef
from engine.installer import Change, register_install_hook

from .tables import bi_column, build_tables, child_forms, column_specs, index_specs


def _type_sql(type_, dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect)).upper()
    except Exception:  # noqa: BLE001 - an uncompilable type compares as its class name
        return type(type_).__name__.upper()


def _autoincrement(conn: Connection, table: str) -> bool:
    """Whether a SQLite table was made with AUTOINCREMENT (ids of deleted rows never come back)."""
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    return "AUTOINCREMENT" in (sql or "").upper()


class FormTablesHook:
    """Install hook: plan and apply table migrations for an app's forms."""

    def plan(self, conn: Connection, old: AppDef | None, new: AppDef, allow_drop: bool) -> list[Change]:
        insp = inspect(conn)
        existing = set(insp.get_table_names())
        changes: list[Change] = []
        new_children = child_forms(new.forms)
        old_forms = dict(old.forms) if old else {}
        old_children = child_forms(old_forms) if old else set()
        prefix = f"{new.name}__"
        for name, form in new.forms.items():
            table = form.table
            is_child = name in new_children
            new_cols = column_specs(form, is_child)
            if table not in existing:
                changes.append(Change("create_table", table, f"table {name} ({len(new_cols)} columns)", data=name))
                continue
            if conn.dialect.name == "sqlite" and not _autoincrement(conn, table):
                changes.append(Change("rebuild_table", table, f"table {name}: a new record never takes a deleted "
                                      "record's id (AUTOINCREMENT; the rows are copied)", data=name))
            live_cols = {c["name"]: c["type"] for c in insp.get_columns(table)}
            old_form = old_forms.get(name)
            old_cols = column_specs(old_form, name in old_children) if old_form else dict(live_cols)
            renamed_sources = set()
            for fname, fdef in form.fields.items():
                src = fdef.renamed_from
                if src and src in live_cols and fname not in live_cols and fdef.stored:
                    changes.append(Change("rename_column", table, f"column {name}.{src} renamed to {fname}", data=(src, fname)))
                    renamed_sources.add(src)
                    if fdef.pii and bi_column(src) in live_cols:
                        changes.append(Change("rename_column", table, f"column {name}.{bi_column(src)} renamed to {bi_column(fname)}",
                                              data=(bi_column(src), bi_column(fname))))
                        renamed_sources.add(bi_column(src))
                    old_cols[fname] = old_cols.get(src, live_cols[src])
            renamed_targets = {c.data[1] for c in changes if c.kind == "rename_column" and c.table == table}
            for col, type_ in new_cols.items():
                if col in live_cols or col in renamed_targets:
                    if col in old_cols and _type_sql(old_cols[col], conn.dialect) != _type_sql(type_, conn.dialect):
                        changes.append(Change("alter_column", table,
                                              f"column {name}.{col} type {_type_sql(old_cols[col], conn.dialect)} -> {_type_sql(type_, conn.dialect)}",
                                              data=(col, name)))
                else:
                    changes.append(Change("add_column", table, f"column {name}.{col} ({_type_sql(type_, conn.dialect)})", data=(col, name)))
            for col in live_cols:
                if col not in new_cols and col not in renamed_sources:
                    changes.append(Change("drop_column", table, f"column {name}.{col} (its data will be deleted)"
                                          + ("" if allow_drop else " -- needs --allow-drop"), destructive=True, data=col))
            live_idx = {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(table)}
            want_idx = index_specs(form, is_child)
            for iname, spec in want_idx.items():
                if iname not in live_idx:
                    changes.append(Change("create_index", table, f"index {iname} on {name}({', '.join(spec[0])})"
                                          + (" unique" if spec[1] else ""), data=(iname, name)))
            for iname in live_idx:
                if iname not in want_idx and (iname.startswith(("ix_", "uq_"))):
                    changes.append(Change("drop_index", table, f"index {iname}", data=iname))
        wanted = {f.table for f in new.forms.values()}
        for table in sorted(existing):
            if table.startswith(prefix) and table not in wanted:
                changes.append(Change("drop_table", table, f"table {table[len(prefix):]} and all its rows"
                                      + ("" if allow_drop else " -- needs --allow-drop"), destructive=True))
        return changes

    def apply(self, conn: Connection, changes: list[Change], old: AppDef | None, new: AppDef) -> None:
        _, tables = build_tables(new.forms)
        op = Operations(MigrationContext.configure(conn))
        sqlite = conn.dialect.name == "sqlite"
        by_kind = lambda kind: [c for c in changes if c.kind == kind]  # noqa: E731
        for c in by_kind("drop_index"):
            op.drop_index(c.data, table_name=c.table)
        per_table: dict[str, list[Change]] = {}
        for c in changes:
            if c.kind in ("rename_column", "add_column", "alter_column", "drop_column", "rebuild_table"):
                per_table.setdefault(c.table, []).append(c)
        for table, items in per_table.items():
            form_name = table.split("__", 1)[1]
            target = tables[form_name]
            rebuild = any(c.kind in ("alter_column", "drop_column", "rebuild_table") for c in items)
            items = [c for c in items if c.kind != "rebuild_table"]      # the recreate itself is the rebuild
            if sqlite and rebuild:
                # the copy also gets AUTOINCREMENT if the table was made without it (build_table)
                with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
                    self._ops(batch, items, target, sqlite=True)
            else:
                self._ops(op, items, target, sqlite=sqlite, table=table)
        for c in by_kind("create_index"):
            iname, form_name = c.data
            idx = next(i for i in tables[form_name].indexes if i.name == iname)
            op.create_index(iname, c.table, [col.name for col in idx.columns], unique=idx.unique)
        for c in by_kind("drop_table"):
            op.drop_table(c.table)
        for c in by_kind("create_table"):
            tables[c.data].create(conn)

    @staticmethod
    def _ops(op, items: list[Change], target, sqlite: bool, table: str | None = None) -> None:
        kw = {} if table is None else {"table_name": table}
        order = {"rename_column": 0, "add_column": 1, "alter_column": 2, "drop_column": 3}
        for c in sorted(items, key=lambda c: order[c.kind]):
            if c.kind == "rename_column":
                src, dst = c.data
                op.alter_column(column_name=src, new_column_name=dst, **kw)
            elif c.kind == "add_column":
                col, _ = c.data
                column = Column(col, target.c[col].type, nullable=True)
                op.add_column(column, **kw) if table is None else op.add_column(table, column)
            elif c.kind == "alter_column":
                col, _ = c.data
                new_type = target.c[col].type
                extra = {}
                if not sqlite:
                    extra["postgresql_using"] = f'"{col}"::{new_type.compile(dialect=op.get_bind().dialect)}'
                op.alter_column(column_name=col, type_=new_type, **extra, **kw)
            elif c.kind == "drop_column":
                op.drop_column(column_name=c.data, **kw)


register_install_hook("forms", FormTablesHook(), order=10)
