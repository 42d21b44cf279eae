"""Server time of the HTML pages people use all day: list, detail and form pages.

    python bench/bench_pages.py [--rows 5000] [--runs 200] [--db sqlite|URL]

Uses the bundled CRM with ``loom demo`` data when its definitions validate,
otherwise the store-leads app of the browser tests with ``--rows`` generated
leads.  Requests go through the full ASGI app in-process (routing, session
check, record service, templates); the figure is the time to the complete
response.  Goal: p95 < 50 ms for the list and form pages.

Baseline for comparison: a hand-written FastAPI endpoint rendering the same
number of rows with one SQLAlchemy query and one jinja2 template
(``--baseline``) -- what the page costs over "just the query + a template".
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
PASSWORD = "bench-pass-123"


def _setup(db_url: str, rows: int):
    from engine.auth import SYSTEM_USER, upsert_user
    from engine.definitions import validate_package
    from engine.installer import install
    from engine.package import read_package
    from ui.wiring import build_runtime

    rt = build_runtime(db_url)
    crm = ROOT / "apps" / "automotive_crm"
    app_name, form = None, None
    if not validate_package(read_package(crm)):
        from ui.cli import install_demo
        os.environ["LOOM_DEMO_PASSWORD"] = PASSWORD
        install_demo(rt, create_users=False)
        app_name, form = "automotive_crm", "lead"
    else:
        from tests.browser.test_web_app import SHOP, write_package
        pkg = write_package(Path(tempfile.mkdtemp()) / "shop", SHOP)
        install(rt, read_package(pkg))
        app_name, form = "shop", "lead"
        from ui.deps import unit_of_work
        sources = ["website", "referral", "walk_in"]
        with unit_of_work(rt, app_name, SYSTEM_USER, "zh", write=True) as uow:
            recs = rt.services["records"]
            cust = recs.create(uow, "customer", {"name": "王建国", "phone": "13800000001"})["id"]
            for i in range(rows):
                src = sources[i % 3]
                data = {"name": f"客户{i:05d}", "phone": f"139{i:08d}", "source": src, "budget": 100000 + i,
                        "city": ["广东省", "深圳市", "南山区"]}
                if src == "referral":
                    data["referrer"] = cust
                recs.create(uow, form, data, owner="admin")
    with rt.db.write() as conn:
        upsert_user(conn, rt.clock.now(), "bench_admin", ["admin"], {}, password=PASSWORD)
    return rt, app_name, form


class _Client:
    """httpx.AsyncClient on the ASGI app, driven from one event loop (no server, no test portal threads)."""

    def __init__(self, app):
        import asyncio

        import httpx
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def get(self, url, **kw):
        return self.loop.run_until_complete(self.http.get(url, **kw))

    def post(self, url, **kw):
        return self.loop.run_until_complete(self.http.post(url, **kw))


def _client(rt):
    from ui.app import create_app
    c = _Client(create_app(rt))
    tok = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"username": "bench_admin", "password": PASSWORD, "csrf_token": tok})
    assert r.status_code == 303, r.text
    return c


def _measure(c, url: str, runs: int) -> dict:
    for _ in range(5):
        r = c.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        r = c.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        assert r.status_code == 200
    times.sort()
    cpu.sort()
    return {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1], "max": times[-1],
            "cpu50": statistics.median(cpu), "cpu95": cpu[int(len(cpu) * 0.95) - 1]}


def _baseline(rt, app_name: str, form: str, runs: int) -> dict:
    """Hand-written: one SELECT of 20 rows + one small jinja2 template, through FastAPI."""
    import jinja2
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from sqlalchemy import select
    table = rt.services["records"].table(rt.app(app_name), form)
    tpl = jinja2.Environment(autoescape=True).from_string(
        "<table>{% for r in rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>")
    app = FastAPI()

    @app.get("/list")
    def lst():
        with rt.db.read() as conn:
            rows = conn.execute(select(table).order_by(table.c.created_at.desc()).limit(20)).all()
        return HTMLResponse(tpl.render(rows=rows))

    return _measure(_Client(app), "/list", runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--baseline", action="store_true", help="also time the hand-written baseline")
    args = ap.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp()}/bench.db" if args.db == "sqlite" else args.db
    t0 = time.perf_counter()
    rt, app_name, form = _setup(url, args.rows)
    print(f"setup: app {app_name}, db {rt.db.url.split(':')[0]}, {time.perf_counter() - t0:.1f}s")
    c = _client(rt)
    with rt.db.read() as conn:
        from sqlalchemy import func, select
        table = rt.services["records"].table(rt.app(app_name), form)
        count = conn.execute(select(func.count()).select_from(table)).scalar()
        some_id = conn.execute(select(table.c.id).order_by(table.c.id.desc()).limit(1)).scalar()
    base = f"/apps/{app_name}/forms/{form}"
    pages = [
        ("list", base),
        ("list ?q=&order=&filter", f"{base}?q=1&order=-created_at&source=website"),
        ("list page 5", f"{base}?page=5"),
        ("detail", f"{base}/{some_id}"),
        ("new form", f"{base}/new"),
        ("edit form", f"{base}/{some_id}/edit"),
    ]
    print(f"{form}: {count} records; {args.runs} requests per page (ms, full response, in-process ASGI)")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"machine load average {load:.1f} on {os.cpu_count()} cores (wall times inflate with it; CPU times much less)")
    print(f"{'page':28} {'p50':>8} {'p95':>8} {'max':>8} {'cpu p50':>8} {'cpu p95':>8}  goal p95 < 50")
    worst = 0.0
    for name, u in pages:
        m = _measure(c, u, args.runs)
        worst = max(worst, m["p95"]) if name.startswith(("list", "new", "edit")) else worst
        print(f"{name:28} {m['p50']:8.1f} {m['p95']:8.1f} {m['max']:8.1f} {m['cpu50']:8.1f} {m['cpu95']:8.1f}  "
              f"{'ok' if m['p95'] < 50 else 'SLOW'}")
    if args.baseline:
        m = _baseline(rt, app_name, form, args.runs)
        print(f"{'baseline: query+template':28} {m['p50']:8.1f} {m['p95']:8.1f} {m['max']:8.1f} {m['cpu50']:8.1f} {m['cpu95']:8.1f}")
    print(f"worst list/form p95: {worst:.1f} ms ({'meets' if worst < 50 else 'misses'} the 50 ms goal)")


if __name__ == "__main__":
    main()
