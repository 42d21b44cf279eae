"""`loom backup` / `loom restore`: an app with its data round-trips on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import zipfile

import pytest
from click.testing import CliRunner
from sqlalchemy import MetaData, create_engine, insert, select, text

from engine import platform as P
from engine.backup import BackupError, backup, restore
from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES, T0, ApiClient, pg_database, write_package

TICKET_NO = "  number: {type: auto_number, pattern: 'T{####}'}\n"


@pytest.fixture
def target_url(db_url, tmp_path):
    """A second empty database on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    with pg_database() as url:
        yield url


def _package(tmp_path):
    """The mini app with an auto-numbered ticket, to see sequences continue after a restore."""
    root = tmp_path / "mini"
    files = {p: (FIXTURES / "mini_app" / p).read_text("utf-8")
             for p in ("app.yaml", "forms/customer.yaml", "forms/ticket.yaml")}
    files["forms/ticket.yaml"] = files["forms/ticket.yaml"].replace("fields:\n", "fields:\n" + TICKET_NO, 1)
    return read_package(write_package(root, files))


def _fill(rt, tmp_path) -> tuple[ApiClient, dict]:
    install(rt, _package(tmp_path))
    api = ApiClient(rt)
    admin = api.user("ada", ["admin"])
    api.user("sam", ["agent"], {"region": "east"})
    for k in range(3):
        r = api.http.post("/api/apps/mini/customer", headers=admin,
                          json={"name": f"客户{k}", "phone": f"1380013800{k}", "region": "east"})
        assert r.status_code == 201, r.text
    r = api.http.post("/api/apps/mini/ticket", headers=admin, json={"subject": "brakes squeal", "severity": "low",
                                                                    "customer": 1})
    assert r.status_code == 201 and r.json()["number"] == "T0001", r.text
    with rt.db.write() as conn:
        conn.execute(insert(P.timers).values(app="mini", kind="reminder", key="t-1", due_at=T0, payload={"a": [1, "x"]},
                                             status="pending", attempts=0))
        conn.execute(insert(P.audit), [{"at": T0, "actor": "bulk", "action": "test.bulk", "details": {"n": k}}
                                       for k in range(2500)])   # several batches of 1000 each way
    return api, admin


def _dump(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, in primary-key order."""
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    md = MetaData()
    md.reflect(eng)
    out = {}
    with eng.connect() as conn:
        for t in md.sorted_tables:
            order = list(t.primary_key.columns) or list(t.c)
            out[t.name] = [tuple(r) for r in conn.execute(select(t).order_by(*order))]
    eng.dispose()
    return out


def test_round_trip_keeps_every_row_and_the_app_keeps_working(db_url, target_url, make_runtime, tmp_path):
    rt = make_runtime(db_url)
    _fill(rt, tmp_path)
    archive = tmp_path / "b.zip"
    summary = backup(db_url, archive)
    assert summary.rows > 0 and any("NOT in the backup" in line for line in summary.lines)
    before = _dump(db_url)

    restore(target_url, archive)
    after = _dump(target_url)
    assert set(after) == set(before)
    for name in before:
        assert after[name] == before[name], name
    assert len(after["mini__customer"]) == 3 and len(after["loom_timers"]) == 1

    rt2 = make_runtime(target_url)            # starts like `loom serve`: migrations find nothing to do
    api = ApiClient(rt2)
    admin = api.login("ada")                  # the password hash came along
    rec = api.http.get("/api/apps/mini/customer/2", headers=admin).json()
    assert rec["name"] == "客户1" and rec["phone"] == "13800138001"   # PII ciphertext decrypts with the same key
    r = api.http.post("/api/apps/mini/customer", headers=admin, json={"name": "新客户", "phone": "13900000000"})
    assert r.status_code == 201 and r.json()["id"] == 4                # ids continue, no collision
    t = api.http.post("/api/apps/mini/ticket", headers=admin, json={"subject": "wipers", "severity": "low"})
    assert t.status_code == 201 and t.json()["number"] == "T0002" and t.json()["id"] == 2, t.text
    api.user("newbie", ["agent"])             # user ids continue too


def test_non_empty_target_is_refused_unless_forced(db_url, target_url, make_runtime, tmp_path):
    _fill(make_runtime(db_url), tmp_path)
    archive = tmp_path / "b.zip"
    backup(db_url, archive)
    restore(target_url, archive)
    with pytest.raises(BackupError, match="is not empty .*--force"):
        restore(target_url, archive)
    restore(target_url, archive, force=True)
    assert _dump(target_url) == _dump(db_url)


def _rewrite(archive, out, edit):
    """Copy ``archive`` to ``out`` with ``edit(name, data) -> data`` applied to each member."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info.filename)))


def test_corrupt_archives_leave_the_target_untouched(db_url, target_url, make_runtime, tmp_path):
    _fill(make_runtime(db_url), tmp_path)
    archive = tmp_path / "b.zip"
    backup(db_url, archive)
    restore(target_url, archive)
    # the target now holds data; each bad archive below is refused even with --force, and nothing changes
    with create_engine(target_url.replace("postgresql://", "postgresql+psycopg2://", 1)).begin() as conn:
        conn.execute(text("UPDATE mini__customer SET name = 'kept' WHERE id = 1"))
    expected = _dump(target_url)

    flipped = tmp_path / "flipped.zip"
    _rewrite(archive, flipped, lambda n, d: d.replace(b"brakes", b"BRAKES") if "ticket" in n else d)
    with pytest.raises(BackupError, match="does not match its checksum"):
        restore(target_url, flipped, force=True)

    miscounted = tmp_path / "miscounted.zip"       # checksums fine, but the data disagrees with the manifest:
    def lie(name, data):                           # found mid-restore, after tables were dropped and created
        if name != "manifest.json":
            return data
        m = json.loads(data)
        next(t for t in m["tables"] if t["name"] == "mini__ticket")["rows"] = 7
        return json.dumps(m).encode()
    _rewrite(archive, miscounted, lie)
    with pytest.raises(BackupError, match="mini__ticket has 1 rows, the manifest says 7"):
        restore(target_url, miscounted, force=True)

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match="not a Loom backup"):
        restore(target_url, truncated, force=True)
    no_manifest = tmp_path / "other.zip"
    no_manifest.write_bytes(read_package(FIXTURES / "mini_app").to_zip())
    with pytest.raises(BackupError, match="no manifest.json"):
        restore(target_url, no_manifest, force=True)

    assert _dump(target_url) == expected


def test_cli_backup_and_restore(db_url, target_url, make_runtime, tmp_path, monkeypatch):
    from ui.cli import main

    _fill(make_runtime(db_url), tmp_path)
    files = tmp_path / "files"
    (files / "mini" / "2026").mkdir(parents=True)
    (files / "mini" / "2026" / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    monkeypatch.setenv("LOOM_FILES_DIR", str(files))
    archive = tmp_path / "cli.zip"
    runner = CliRunner()
    out = runner.invoke(main, ["backup", "--db", db_url, "-o", str(archive)])
    assert out.exit_code == 0, out.output
    assert "1 files" in out.output and "NOT in the backup" in out.output

    restored_files = tmp_path / "files2"
    monkeypatch.setenv("LOOM_FILES_DIR", str(restored_files))
    out = runner.invoke(main, ["restore", "--db", target_url, str(archive)])
    assert out.exit_code == 0, out.output
    assert (restored_files / "mini" / "2026" / "photo.jpg").read_bytes() == b"\xff\xd8 not really a jpeg"
    again = runner.invoke(main, ["restore", "--db", target_url, str(archive)])
    assert again.exit_code == 1 and "not empty" in again.output and "Traceback" not in again.output
    missing = runner.invoke(main, ["restore", "--db", target_url, str(tmp_path / "nope.zip")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    typo = runner.invoke(main, ["backup", "--db", f"sqlite:///{tmp_path / 'typo.db'}", "-o", str(tmp_path / "t.zip")])
    assert typo.exit_code == 1 and "no database file" in typo.output
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "t.zip").exists()


def test_sqlite_backup_restores_into_postgresql(make_runtime, tmp_path):
    """Cross-database: the archive is portable (generic types, JSON values)."""
    with pg_database() as target:
        source = f"sqlite:///{tmp_path / 'src.db'}"
        _fill(make_runtime(source), tmp_path)
        archive = tmp_path / "x.zip"
        backup(source, archive)
        restore(target, archive)
        api = ApiClient(make_runtime(target))
        admin = api.login("ada")
        assert api.http.get("/api/apps/mini/customer/3", headers=admin).json()["phone"] == "13800138002"
        r = api.http.post("/api/apps/mini/customer", headers=admin, json={"name": "跨库", "phone": "13900000001"})
        assert r.status_code == 201 and r.json()["id"] == 4
