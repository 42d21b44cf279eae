"""Shared fixtures: every storage test runs on SQLite *and* PostgreSQL.

PostgreSQL comes from ``LOOM_TEST_PG_URL`` (a server URL; each test gets a
fresh database created on it and dropped afterwards).  Without it the
PostgreSQL half is skipped -- unless ``LOOM_REQUIRE_PG=1`` (set by CI), in
which case a missing PostgreSQL is a failure, not a skip.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

os.environ.setdefault("LOOM_PASSWORD_HASH", "fast")   # cheap argon2 parameters in tests only
ROOT = Path(__file__).resolve().parent.parent
CRM = ROOT / "apps" / "automotive_crm"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)   # 10:00 in Shanghai, a Monday


def _pg_server_url() -> str | None:
    url = os.environ.get("LOOM_TEST_PG_URL")
    if not url:
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail("LOOM_REQUIRE_PG=1 but LOOM_TEST_PG_URL is not set")
        return None
    return url


def _pg_admin_url(url: str) -> str:
    url = url.replace("postgresql://", "postgresql+psycopg2://", 1) if url.startswith("postgresql://") else url
    return url


@contextlib.contextmanager
def pg_database(prefix: str = "loom_t"):
    """A fresh PostgreSQL database on the LOOM_TEST_PG_URL server (skip or fail as the env asks), dropped after."""
    server = _pg_server_url()
    if server is None:
        pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL (CI sets LOOM_REQUIRE_PG=1)")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_pg_admin_url(server), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    base = server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loom.db'}"
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'loom.db'}"


@pytest.fixture
def clock():
    from engine.clock import Clock
    return Clock(fixed=T0)


@pytest.fixture
def make_runtime(clock, monkeypatch, tmp_path):
    monkeypatch.setenv("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    made = []

    def make(url):
        from ui.wiring import build_runtime
        rt = build_runtime(url, clock)
        made.append(rt)
        return rt
    yield make
    for rt in made:
        rt.db.dispose()


@pytest.fixture
def rt(db_url, make_runtime):
    return make_runtime(db_url)


def write_package(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def package_dir(tmp_path):
    counter = iter(range(1000))

    def make(files: dict[str, str]) -> Path:
        return write_package(tmp_path / f"pkg{next(counter)}", files)
    return make


class ApiClient:
    """A TestClient that signs in as a given user."""

    def __init__(self, rt):
        from fastapi.testclient import TestClient
        from ui.app import create_app
        self.rt = rt
        self.http = TestClient(create_app(rt), raise_server_exceptions=False)

    def user(self, name: str, roles: list[str], attrs: dict | None = None, password: str = "s3cret-pass"):
        from engine.auth import upsert_user
        with self.rt.db.write() as conn:
            upsert_user(conn, self.rt.clock.now(), name, roles, attrs or {}, password=password)
        return self.login(name, password)

    def login(self, name: str, password: str = "s3cret-pass") -> dict:
        r = self.http.post("/api/auth/token", data={"username": name, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def api(rt):
    return ApiClient(rt)
