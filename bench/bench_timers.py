"""Timer throughput on PostgreSQL: the Loom scheduler vs a bare SKIP LOCKED loop.

    python bench/bench_timers.py --db postgresql://postgres@127.0.0.1:5432/postgres \
        [--timers 100000] [--workers 1,2,4] [--repeat 3] [--batch N]

Creates a scratch database on the server (dropped afterwards), installs a
tiny app with one message template, schedules N due timers and measures:

* ``loom``: worker processes calling ``Scheduler._fire_batch`` (what
  ``tick`` loops over) -- each timer runs a handler that renders the
  template (jinja2, sandboxed) with the timer's payload and queues the
  message in the outbox (``engine.outbox.enqueue_batched``, idempotency key
  = timer key), and is marked done, in the claiming transaction (fast path:
  one claim, one multi-row outbox INSERT, one completion UPDATE per batch;
  a failing handler sends the batch down the careful path with a savepoint
  per timer);
* ``bare``: the same number of processes on raw psycopg2, each batch one
  ``UPDATE loom_timers SET status='done' ... WHERE id IN (SELECT ... FOR
  UPDATE SKIP LOCKED LIMIT n) RETURNING ...``, the same template rendering
  and one multi-row INSERT of the outbox rows (``execute_values``), one
  commit: the floor of what any SKIP LOCKED queue costs on this database.

Each (mode, workers) pair runs ``--repeat`` times, loom and bare back to
back; the medians are reported with the ratio loom/bare, SQL statements per
1,000 timers (counted by the worker; stable whatever the machine load) and
worker CPU per timer.  Rates are measured from the moment every worker is
connected and ready until the last timer is done.  The database server
shares the machine's cores with the workers.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = "{{ name }}您好，您的爱车{{ plate }}将于{{ due }}到期保养，请致电{{ hotline }}预约。（编号{{ n }}）"
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)
KIND = "bench.render"
os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")


def _package(tmp: Path) -> Path:
    root = tmp / "bench_app"
    (root / "forms").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "app.yaml").write_text("name: bench\nversion: 1.0.0\ntitle: {zh: 基准, en: Bench}\ntimezone: Asia/Shanghai\n"
                                   "roles:\n  admin: {label: Admin}\n", encoding="utf-8")
    (root / "forms" / "item.yaml").write_text("name: item\nfields:\n  name: {type: text}\n", encoding="utf-8")
    (root / "templates" / "maintenance_due.zh.j2").write_text(TEMPLATE, encoding="utf-8")
    return root


_TEMPLATES: dict = {}


def render(app, name: str, context: dict) -> str:
    """Render ``templates/<name>.zh.j2`` of the app (compiled once per app digest)."""
    key = (app.digest, name)
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        from jinja2.sandbox import SandboxedEnvironment
        env = SandboxedEnvironment(autoescape=False)
        tpl = _TEMPLATES[key] = env.from_string(app.package.text(f"templates/{name}.zh.j2"))
    return tpl.render(**context)


def handler(uow, timer: dict) -> None:
    from engine import outbox
    p = timer["payload"] or {}
    text = render(uow.app, "maintenance_due", {**p, "hotline": "400-000-8888"})
    outbox.enqueue_batched(uow.conn, app=uow.app.name, template="maintenance_due", channel="sms", recipient=p["phone"],
                           rendered=text, key=timer["key"], due_at=uow.now, now=uow.now, lang="zh", recipient_kind="customer")


def _register() -> None:
    from engine.scheduler import register_timer_handler
    register_timer_handler(KIND, handler)


# -- worker processes ----------------------------------------------------------------

def worker_loom(url: str, name: str, go: Path, batch: int) -> None:
    _register()
    from sqlalchemy import event
    from engine.scheduler import Scheduler
    from ui.wiring import build_runtime
    rt = build_runtime(url, start=False)
    rt.app("bench")                        # compile once before the clock starts
    s = Scheduler(rt, worker_id=name, batch=batch)
    statements = [0]

    @event.listens_for(rt.db.engine, "before_cursor_execute")
    def _count(*_args):                    # every SQL statement the worker sends (COMMIT not included)
        statements[0] += 1
    _ready_and_wait(go)
    statements[0] = 0
    fired = 0
    idle = 0
    last = time.time()
    cpu = time.process_time()
    while idle < 20:
        f, failed = s._fire_batch(NOW)     # timers only (no outbox delivery): what we measure
        if f + failed:
            fired += f
            idle = 0
            last = time.time()
        else:
            idle += 1
            time.sleep(0.01)
    print(json.dumps({"fired": fired, "end": last, "cpu": time.process_time() - cpu, "statements": statements[0]}))


def worker_bare(url: str, name: str, go: Path, batch: int) -> None:
    """The floor: raw psycopg2, one ``UPDATE ... RETURNING`` claims and completes a batch, one
    multi-row INSERT (``execute_values``) writes its outbox rows, one commit."""
    import psycopg2
    from psycopg2.extras import execute_values
    from engine.clock import to_db

    class _App:
        digest = "bare"
        package = type("Pkg", (), {"text": staticmethod(lambda p: TEMPLATE)})()
    app = _App()
    claim = """
        UPDATE loom_timers SET status = 'done', fired_at = %(now)s, locked_by = %(w)s, attempts = attempts + 1
        WHERE id IN (SELECT id FROM loom_timers WHERE status = 'pending' AND due_at <= %(now)s
                     ORDER BY due_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED)
        RETURNING id, app, key, payload"""
    insert = """
        INSERT INTO loom_outbox (app, template, channel, recipient, recipient_kind, lang, rendered, kind, status,
                                 due_at, attempts, idempotency_key, created_at)
        VALUES %s ON CONFLICT (idempotency_key) DO NOTHING"""
    now = to_db(NOW)
    conn = psycopg2.connect(url)
    _ready_and_wait(go)
    fired = statements = 0
    idle = 0
    last = time.time()
    cpu = time.process_time()
    with conn.cursor() as cur:
        while idle < 20:
            cur.execute(claim, {"now": now, "w": name, "n": batch})
            rows = cur.fetchall()
            statements += 1
            if rows:
                execute_values(cur, insert, [
                    (a, "maintenance_due", "sms", p["phone"], "customer", "zh",
                     render(app, "maintenance_due", {**p, "hotline": "400-000-8888"}), "service", "queued",
                     now, 0, key, now) for _id, a, key, p in rows], page_size=1000)
                statements += -(-len(rows) // 1000)
            conn.commit()
            if rows:
                fired += len(rows)
                idle = 0
                last = time.time()
            else:
                idle += 1
                time.sleep(0.01)
    conn.close()
    print(json.dumps({"fired": fired, "end": last, "cpu": time.process_time() - cpu, "statements": statements}))


def _ready_and_wait(go: Path) -> None:
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)


# -- the driver ---------------------------------------------------------------------

def _scratch_db(server: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from engine.db import normalise_url
    name = f"loom_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name, drop


def _reset(rt, n: int) -> None:
    """n pending timers due in the past, an empty outbox."""
    from sqlalchemy import delete, insert, text
    from engine import platform as P
    from engine.clock import to_db
    with rt.db.write() as conn:
        conn.execute(delete(P.outbox))
        conn.execute(delete(P.timers))
        due = NOW - dt.timedelta(hours=1)
        rows = [{"app": "bench", "kind": KIND, "key": f"bench:{i}", "due_at": to_db(due + dt.timedelta(milliseconds=i % 1000)),
                 "payload": {"n": i, "name": f"客户{i}", "plate": f"沪A{i:05d}", "due": "2026-12-01", "phone": f"138{i:08d}"},
                 "status": "pending", "attempts": 0, "form": "item", "record_id": i}
                for i in range(n)]
        for i in range(0, n, 5000):
            conn.execute(insert(P.timers), rows[i:i + 5000])
    with rt.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE loom_timers"))
        c.execute(text("VACUUM ANALYZE loom_outbox"))


def _run(url: str, mode: str, workers: int, batch: int, tmp: Path) -> dict:
    go = tmp / f"go_{mode}_{workers}_{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, "--db", url, "--name", f"{mode}{i}",
                               "--go", str(go), "--batch", str(batch)], stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
             for i in range(workers)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"worker failed to start: {line}{p.stdout.read()}")
    start = time.time()
    go.write_text("go")
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"worker failed:\n{out}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    fired = sum(r["fired"] for r in results)
    seconds = max(r["end"] for r in results) - start
    return {"mode": mode, "workers": workers, "fired": fired, "seconds": seconds, "rate": fired / seconds,
            "per_worker": [r["fired"] for r in results],
            "cpu_us": 1e6 * sum(r["cpu"] for r in results) / max(fired, 1),          # worker CPU per timer
            "per_1000": 1000 * sum(r["statements"] for r in results) / max(fired, 1)}  # SQL statements per 1,000 timers


def _check(rt, n: int) -> None:
    from sqlalchemy import func, select
    from engine import platform as P
    with rt.db.read() as conn:
        done = conn.execute(select(func.count()).select_from(P.timers).where(P.timers.c.status == "done")).scalar()
        msgs = conn.execute(select(func.count()).select_from(P.outbox)).scalar()
    if done != n or msgs != n:
        raise SystemExit(f"integrity check failed: {done} timers done, {msgs} outbox rows, expected {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=os.environ.get("LOOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="a PostgreSQL server URL (a scratch database is created on it)")
    ap.add_argument("--timers", type=int, default=100_000)
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per (mode, workers); the median is reported")
    ap.add_argument("--batch", type=int, default=0, help="timers per claim (default: the scheduler's BATCH)")
    ap.add_argument("--worker", choices=["loom", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--go", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from engine.scheduler import BATCH
    batch = args.batch or BATCH
    if args.worker:
        (worker_loom if args.worker == "loom" else worker_bare)(args.db, args.name, Path(args.go), batch)
        return
    if not args.db.startswith(("postgresql", "postgres")):
        raise SystemExit("this benchmark needs PostgreSQL (--db postgresql://...)")
    from engine.clock import Clock
    from engine.installer import install
    from engine.package import read_package
    from ui.wiring import build_runtime
    url, drop = _scratch_db(args.db)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    print(f"{args.timers} timers per run, batch {batch}, {args.repeat} run(s) each, on {os.cpu_count()} CPU(s) "
          f"(shared with the PostgreSQL server); scratch database")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            rt = build_runtime(url, Clock(fixed=NOW))
            install(rt, read_package(_package(tmp)))
            runs: dict = {}
            for rep in range(args.repeat):
                for workers in counts:
                    for mode in ("loom", "bare"):     # back to back, so both see the same machine load
                        _reset(rt, args.timers)
                        r = _run(url, mode, workers, batch, tmp)
                        _check(rt, args.timers)
                        runs.setdefault((mode, workers), []).append(r)
                        print(f"  run {rep + 1} {mode:4s} x{workers}: {r['rate']:7.0f} timers/s  ({r['fired']} in "
                              f"{r['seconds']:.2f}s; per worker {r['per_worker']}; {r['per_1000']:.1f} statements per 1,000 timers; "
                              f"{r['cpu_us']:.0f} us worker CPU per timer)", flush=True)
            med = {k: statistics.median(r["rate"] for r in v) for k, v in runs.items()}
            print("medians:")
            print(f"  {'workers':>7s} {'loom/s':>8s} {'bare/s':>8s} {'ratio':>6s} {'paired':>6s} {'stmts/1k':>9s} "
                  f"{'bare stmts/1k':>13s} {'cpu us/timer':>12s} {'vs 1 worker':>11s}")
            print("  (ratio = of the medians; paired = median of each run's loom/bare, the two measured back to back)")
            for workers in counts:
                lo, ba = med[("loom", workers)], med[("bare", workers)]
                st = statistics.median(r["per_1000"] for r in runs[("loom", workers)])
                bst = statistics.median(r["per_1000"] for r in runs[("bare", workers)])
                cpu = statistics.median(r["cpu_us"] for r in runs[("loom", workers)])
                scale = f"{lo / med[('loom', counts[0])]:.2f}x" if counts[0] == 1 else ""
                paired = statistics.median(a["rate"] / b["rate"] for a, b in zip(runs[("loom", workers)], runs[("bare", workers)]))
                print(f"  {workers:7d} {lo:8.0f} {ba:8.0f} {lo / ba:6.2f} {paired:6.2f} {st:9.1f} {bst:13.1f} {cpu:12.0f} "
                      f"{scale:>11s}")
            if ("loom", 1) in med and ("loom", 2) in med:
                print(f"per-core efficiency 1 -> 2 workers: {med[('loom', 2)] / (2 * med[('loom', 1)]):.0%} "
                      f"(bare: {med[('bare', 2)] / (2 * med[('bare', 1)]):.0%})")
            if ("loom", 1) in med:
                one = med[("loom", 1)]
                print(f"goal: >= 2000 timers/s with one worker: {'met' if one >= 2000 else 'NOT met'} ({one:.0f}/s median)")
            rt.db.dispose()
    finally:
        drop()


if __name__ == "__main__":
    main()
