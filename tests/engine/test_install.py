"""`loom import`: atomic installs, upgrades that keep every row, export round trip."""
from __future__ import annotations

import shutil

import pytest
from sqlalchemy import inspect, select, text

from engine import platform as P
from engine.installer import InstallError, install
from engine.package import read_package
from engine.problems import DefinitionError
from engine.uow import UnitOfWork
from engine.auth import SYSTEM_USER
from tests.conftest import FIXTURES


def pkg(tmp_path, name="v1", edits: dict[str, str] | None = None, version: str | None = None):
    root = tmp_path / name
    shutil.copytree(FIXTURES / "mini_app", root)
    for rel, content in (edits or {}).items():
        (root / rel).write_text(content, encoding="utf-8")
    if version:
        app = (root / "app.yaml").read_text().replace("version: 1.0.0", f"version: {version}")
        (root / "app.yaml").write_text(app)
    return read_package(root)


def snapshot(rt) -> dict:
    """Every table's row count and column names: 'the database exactly as it was'."""
    with rt.db.read() as conn:
        insp = inspect(conn)
        out = {}
        for t in sorted(insp.get_table_names()):
            cols = tuple(c["name"] for c in insp.get_columns(t))
            idx = tuple(sorted(i["name"] for i in insp.get_indexes(t)))
            count = conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar()
            out[t] = (cols, idx, count)
        return out


def add_customers(rt, n=3):
    records = rt.services["records"]
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, rt.app("mini"), SYSTEM_USER, rt.clock.now())
        for i in range(n):
            records.create(uow, "customer", {"name": f"张{i}", "phone": f"1380013800{i}", "region": "east", "visits": i})


def read_customers(rt, form="customer"):
    records = rt.services["records"]
    with rt.db.read() as conn:
        uow = UnitOfWork(rt, conn, rt.app("mini"), SYSTEM_USER, rt.clock.now())
        rows, _ = records.list(uow, form, order="id", limit=100)
        return rows


def test_install_creates_tables_and_reimport_is_noop(rt, tmp_path):
    report = install(rt, pkg(tmp_path))
    assert report.status == "installed"
    assert any("table customer" in str(c) for c in report.changes)
    with rt.db.read() as conn:
        tables = set(inspect(conn).get_table_names())
    assert {"mini__customer", "mini__ticket"} <= tables
    again = install(rt, pkg(tmp_path, "again"))
    assert again.status == "unchanged"
    assert again.lines() == ["Unchanged mini 1.0.0: already installed, nothing to do"]


def test_failed_import_leaves_database_exactly_as_it_was(rt, tmp_path):
    install(rt, pkg(tmp_path))
    add_customers(rt)
    before = snapshot(rt)
    # v2 adds a column (applied first) and a unique index that the existing
    # rows violate (all three are 'east'), so the import fails part-way.
    bad = (FIXTURES / "mini_app" / "forms" / "customer.yaml").read_text()
    bad = bad.replace("  visits: {type: number, min: 0}", "  visits: {type: number, min: 0}\n  note: {type: text}")
    bad = bad.replace("region: {type: select, options: [east, south, north]}",
                      "region: {type: select, options: [east, south, north], unique: true}")
    with pytest.raises(Exception):
        install(rt, pkg(tmp_path, "bad", {"forms/customer.yaml": bad}, version="1.1.0"))
    assert snapshot(rt) == before
    with rt.db.read() as conn:
        assert conn.execute(select(P.apps.c.version)).scalar() == "1.0.0"


def test_definition_error_changes_nothing(rt, tmp_path):
    install(rt, pkg(tmp_path))
    before = snapshot(rt)
    with pytest.raises(DefinitionError):
        install(rt, pkg(tmp_path, "bad", {"forms/ticket.yaml": "fields:\n  x: {type: nope}\n"}, version="2.0.0"))
    assert snapshot(rt) == before


def test_upgrade_add_rename_retype_keeps_rows(rt, tmp_path):
    install(rt, pkg(tmp_path))
    add_customers(rt, 3)
    v2 = (FIXTURES / "mini_app" / "forms" / "customer.yaml").read_text()
    v2 = v2.replace("  name: {type: text,", "  full_name: {type: text, renamed_from: name,")
    v2 = v2.replace("title_field: name", "title_field: full_name").replace("columns: [name,", "columns: [full_name,")
    v2 = v2.replace("search: [name,", "search: [full_name,")
    v2 = v2.replace("  visits: {type: number, min: 0}", "  visits: {type: decimal, precision: 10, scale: 1}\n  note: {type: text}")
    plan = install(rt, pkg(tmp_path, "v2dry", {"forms/customer.yaml": v2}, version="1.1.0"), dry_run=True)
    assert plan.status == "planned"
    kinds = {c.kind for c in plan.changes}
    assert {"rename_column", "add_column", "alter_column"} <= kinds, plan.lines()
    with rt.db.read() as conn:  # dry run applied nothing
        assert "full_name" not in {c["name"] for c in inspect(conn).get_columns("mini__customer")}
    report = install(rt, pkg(tmp_path, "v2", {"forms/customer.yaml": v2}, version="1.1.0"))
    assert report.status == "upgraded" and report.previous == "1.0.0"
    rows = read_customers(rt)
    assert [r["full_name"] for r in rows] == ["张0", "张1", "张2"]
    assert [float(r["visits"]) for r in rows] == [0.0, 1.0, 2.0]
    assert [r["phone"] for r in rows] == ["13800138000", "13800138001", "13800138002"]
    assert all(r["note"] is None for r in rows)


def test_an_upgrade_gives_an_old_sqlite_table_autoincrement_keeping_its_rows(rt, tmp_path):
    """Tables made before AUTOINCREMENT let SQLite give a deleted last record's id to the next
    record (which then showed the deleted one's timeline).  The next upgrade rebuilds them."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    if rt.db.dialect != "sqlite":
        pytest.skip("PostgreSQL sequences never give an id twice")
    install(rt, pkg(tmp_path))
    add_customers(rt, 3)
    with rt.db.write() as conn:              # as a table made by an earlier Loom
        with Operations(MigrationContext.configure(conn)).batch_alter_table(
                "mini__customer", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
    sql = "SELECT sql FROM sqlite_master WHERE name = 'mini__customer'"
    with rt.db.read() as conn:
        assert "AUTOINCREMENT" not in conn.exec_driver_sql(sql).scalar()
    report = install(rt, pkg(tmp_path, "v2", version="1.1.0"))
    assert [c.kind for c in report.changes] == ["rebuild_table"], report.lines()
    assert "never takes a deleted record's id" in "\n".join(report.lines())
    with rt.db.read() as conn:
        assert "AUTOINCREMENT" in conn.exec_driver_sql(sql).scalar()
    rows = read_customers(rt)
    assert [r["phone"] for r in rows] == ["13800138000", "13800138001", "13800138002"]
    last = rows[-1]["id"]
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, rt.app("mini"), SYSTEM_USER, rt.clock.now())
        rt.services["records"].delete(uow, "customer", last, trusted=True)
        new = rt.services["records"].create(uow, "customer", {"name": "新", "phone": "13900139000", "region": "east"})
    assert new["id"] > last


def test_drop_needs_allow_drop(rt, tmp_path):
    install(rt, pkg(tmp_path))
    add_customers(rt, 2)
    v2 = (FIXTURES / "mini_app" / "forms" / "customer.yaml").read_text().replace("  visits: {type: number, min: 0}\n", "")
    with pytest.raises(InstallError, match="--allow-drop"):
        install(rt, pkg(tmp_path, "v2", {"forms/customer.yaml": v2}, version="1.1.0"))
    report = install(rt, pkg(tmp_path, "v2b", {"forms/customer.yaml": v2}, version="1.1.0"), allow_drop=True)
    assert any(c.kind == "drop_column" for c in report.changes)
    assert len(read_customers(rt)) == 2


def test_same_version_different_content_is_refused(rt, tmp_path):
    install(rt, pkg(tmp_path))
    v2 = (FIXTURES / "mini_app" / "forms" / "customer.yaml").read_text() + "\n# changed\n"
    with pytest.raises(InstallError, match="raise 'version'"):
        install(rt, pkg(tmp_path, "v2", {"forms/customer.yaml": v2}))


def test_export_round_trip(rt, tmp_path):
    from engine.definitions import validate_package
    install(rt, pkg(tmp_path))
    blob = rt.app("mini").package.to_zip()
    exported = read_package(blob)
    assert validate_package(exported) == []
    assert install(rt, exported).status == "unchanged"
    assert exported.files == pkg(tmp_path, "cmp").files
