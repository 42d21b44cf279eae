"""A database that can't be reached is a 503 with Retry-After and a JSON error, not a 500 -- and the
app serves again as soon as the database is back (tests/load/test_faults.py restarts a real PostgreSQL)."""
from __future__ import annotations

from sqlalchemy import create_engine

from tests.conftest import ApiClient


def test_an_unreachable_database_is_a_503_and_the_app_recovers(make_runtime, sqlite_url):
    rt = make_runtime(sqlite_url)
    api = ApiClient(rt)
    headers = api.user("alice", ["admin"])
    assert api.http.get("/api/apps", headers=headers).status_code == 200
    real = rt.db.engine
    rt.db.engine = create_engine("postgresql+psycopg2://loom@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2})
    try:
        for method, url, kw in (("GET", "/api/apps", {}), ("POST", "/api/auth/token", {"data": {"username": "alice", "password": "x" * 9}})):
            r = api.http.request(method, url, headers=headers, **kw)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "2"
            err = r.json()["errors"][0]
            assert err["code"] == "database_unavailable" and "try again" in err["message"]
            assert "Traceback" not in r.text and "psycopg2" not in r.text
    finally:
        rt.db.engine.dispose()
        rt.db.engine = real
    assert api.http.get("/api/apps", headers=headers).status_code == 200
