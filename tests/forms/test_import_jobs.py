"""Background imports (``_import?async=1`` + ``GET /api/jobs/{id}``) and the import's unique checks, both databases."""
from __future__ import annotations

import time

from sqlalchemy import text

from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES


def setup(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    return api.user("root", ["admin"]), api.user("agent", ["agent"], {"region": "east"})


def csv_rows(n: int, bad_row: int | None = None) -> bytes:
    lines = ["name,phone,region,visits"]
    for i in range(1, n + 1):
        lines.append(f"客户{i},139{i:08d},{'mars' if i == bad_row else 'east'},{i % 50}")
    return ("\n".join(lines) + "\n").encode()


def upload(api, h, body: bytes, name="c.csv", **params):
    return api.http.post("/api/apps/mini/customer/_import", params=params, headers=h,
                         files={"file": (name, body, "text/csv")})


def wait(api, h, job_id: str, seen: list | None = None) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = api.http.get(f"/api/jobs/{job_id}", headers=h)
        assert r.status_code == 200, r.text
        job = r.json()
        if seen is not None:
            seen.append((job["status"], job["processed"]))
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def total(api, h) -> int:
    return api.http.get("/api/apps/mini/customer", headers=h).json()["total"]


def test_async_import_reports_progress_and_the_sync_result(api):
    h, _ = setup(api)
    blob = csv_rows(2500)
    r = upload(api, h, blob, **{"async": "1"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["status"] in ("queued", "running", "done") and job["total"] == 2500
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    seen: list = []
    done = wait(api, h, job["id"], seen)
    assert done["status"] == "done" and done["processed"] == done["total"] == 2500, done
    counts = [p for _, p in seen]
    assert counts == sorted(counts)                          # progress only moves forward
    assert done["result"] == {"total": 2500, "inserted": 2500, "errors": [], "error_count": 0,
                              "dry_run": False, "mode": "all"}
    assert total(api, h) == 2500
    # the same file again, synchronously, into a fresh form state: same body shape (here: every phone now repeats)
    sync = upload(api, h, blob, mode="skip", dry_run="true").json()
    assert set(sync) == set(done["result"]) and sync["error_count"] == 2500
    assert {e["code"] for e in sync["errors"]} == {"unique"}


def test_progress_callback_every_thousand_rows(api):
    from engine.uow import UnitOfWork
    from engine.auth import SYSTEM_USER
    from forms.transfer import import_records
    setup(api)
    seen: list[int] = []
    with api.rt.db.write() as conn:
        uow = UnitOfWork(api.rt, conn, api.rt.app("mini"), SYSTEM_USER, api.rt.clock.now())
        report = import_records(uow, "customer", "c.csv", csv_rows(2500), progress=seen.append)
    assert report.inserted == 2500 and seen == [1000, 2000, 2500]


def test_failing_row_fails_the_job_and_writes_nothing(api):
    h, _ = setup(api)
    r = upload(api, h, csv_rows(2500, bad_row=1800), **{"async": "1"})
    job = wait(api, h, r.json()["job"]["id"])
    assert job["status"] == "failed"
    assert [(e["row"], e["field"]) for e in job["errors"]] == [(1800, "region")], job["errors"]
    assert job["result"] == {"errors": job["errors"]}
    assert "第 1800 行" in job["errors"][0]["message"]
    assert total(api, h) == 0
    # the synchronous call says the same with a 422
    sync = upload(api, h, csv_rows(2500, bad_row=1800))
    assert sync.status_code == 422 and sync.json()["errors"] == job["errors"]


def test_another_user_cannot_read_the_job_but_an_admin_can(api):
    h, agent = setup(api)
    job = upload(api, agent, csv_rows(3), **{"async": "1"}).json()["job"]
    wait(api, agent, job["id"])
    other = api.user("agent2", ["agent"], {"region": "east"})
    assert api.http.get(f"/api/jobs/{job['id']}", headers=other).status_code == 404
    assert api.http.get(f"/api/jobs/{job['id']}", headers=h).json()["status"] == "done"
    assert api.http.get("/api/jobs/nope", headers=h).status_code == 404
    assert api.http.get(f"/api/jobs/{job['id']}").status_code == 401


def test_job_state_is_in_the_table_for_other_processes(api):
    from engine.jobs import JobRunner
    h, _ = setup(api)
    job = upload(api, h, csv_rows(10), **{"async": "1"}).json()["job"]
    wait(api, h, job["id"])
    fresh = JobRunner(api.rt)                       # a second process: nothing in memory
    seen = fresh.get(job["id"])
    assert seen["status"] == "done" and seen["result"]["inserted"] == 10 and seen["processed"] == 10


def test_async_errors_known_up_front_answer_at_once(api):
    h, agent = setup(api)
    r = api.http.post("/api/apps/mini/nosuchform/_import", params={"async": "1"}, headers=h,
                      files={"file": ("c.csv", b"name\nA\n", "text/csv")})
    assert r.status_code == 404
    r = upload(api, h, b"name\nA\n", mode="nope", **{"async": "1"})
    assert r.status_code == 422


def test_unique_values_repeated_in_the_file_or_the_table(api):
    h, _ = setup(api)
    body = "name,phone\n甲,13800000001\n乙,13800000001\n".encode()
    r = upload(api, h, body)
    assert r.status_code == 422 and r.json()["errors"][0]["row"] == 2 and r.json()["errors"][0]["code"] == "unique"
    assert upload(api, h, "name,phone\n甲,13800000001\n".encode()).status_code == 200
    r = upload(api, h, "name,phone\n丙,13800000002\n丁,13800000001\n".encode(), mode="skip").json()
    assert r["inserted"] == 1 and [(e["row"], e["field"]) for e in r["errors"]] == [(2, "phone")]
    assert total(api, h) == 2


def test_imported_timestamps_are_stored_like_api_created_ones(api):
    h, _ = setup(api)
    upload(api, h, "name\n甲\n".encode())
    api.http.post("/api/apps/mini/customer", headers=h, json={"name": "乙"})
    with api.rt.db.read() as conn:
        got = [r[0] for r in conn.execute(text('SELECT CAST(created_at AS TEXT) FROM "mini__customer" ORDER BY id'))]
    # same text on SQLite (sqlite3's own adapter dropped '.000000' from whole seconds, so imported rows
    # compared unequal to the same instant written by SQLAlchemy)
    assert len(got) == 2 and len(got[0]) == len(got[1]) and got[0] == got[1], got
