"""Benchmark: create a record over HTTP -- Loom vs a hand-written FastAPI endpoint.

Both servers run as one uvicorn worker on their own fresh SQLite (or
PostgreSQL with --pg URL) database, same machine, same run, same load:
C concurrent keep-alive clients POSTing for D seconds.

* baseline: FastAPI + SQLAlchemy ORM model + pydantic body for the same table
  (what a developer would write by hand; no permissions, no history, no rules);
* Loom: `POST /api/apps/bench/ticket` with full validation, permissions,
  record history and the event bus.

Part C target: Loom >= 0.7x the baseline's req/s; on SQLite its p99 below the
baseline's (which queues on the database write lock).

    python bench/bench_create.py [--seconds 15] [--clients 16] [--pg postgresql://...]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

BASELINE = textwrap.dedent('''
    import os, datetime as dt
    from fastapi import FastAPI
    from pydantic import BaseModel, Field
    from sqlalchemy import create_engine, String, Integer, Text, DateTime
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, Session

    url = os.environ["BENCH_DB"]
    kw = {"connect_args": {"check_same_thread": False, "timeout": 60}} if url.startswith("sqlite") else {"pool_size": 10}
    engine = create_engine(url, **kw)

    class Base(DeclarativeBase):
        pass

    class Ticket(Base):
        __tablename__ = "ticket"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        subject: Mapped[str] = mapped_column(String(100))
        phone: Mapped[str] = mapped_column(String(20), nullable=True)
        severity: Mapped[str] = mapped_column(String(20))
        score: Mapped[int] = mapped_column(Integer, nullable=True)
        notes: Mapped[str] = mapped_column(Text, nullable=True)
        created_at: Mapped[dt.datetime] = mapped_column(DateTime)

    Base.metadata.create_all(engine)
    if url.startswith("sqlite"):
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA journal_mode=WAL")

    class TicketIn(BaseModel):
        subject: str = Field(min_length=1, max_length=100)
        phone: str | None = Field(default=None, pattern=r"^1[3-9]\\d{9}$")
        severity: str = Field(pattern="^(low|medium|high|critical)$")
        score: int | None = Field(default=None, ge=0, le=100)
        notes: str | None = None

    app = FastAPI()

    @app.post("/tickets", status_code=201)
    def create(body: TicketIn):
        with Session(engine) as s:
            t = Ticket(**body.model_dump(), created_at=dt.datetime.utcnow())
            s.add(t)
            s.commit()
            return {"id": t.id, **body.model_dump()}
''')

PACKAGE = {
    "app.yaml": "name: bench\nversion: 1.0.0\ntitle: Bench\nroles: {admin: {permissions: [manage_app]}, agent: {}}\n",
    "forms/ticket.yaml": textwrap.dedent("""\
        fields:
          subject: {type: text, required: true, max_length: 100}
          phone: {type: phone, kinds: [mobile]}
          severity: {type: select, options: [low, medium, high, critical], required: true}
          score: {type: number, min: 0, max: 100}
          notes: {type: textarea}
        """),
}

BODY = {"subject": "刹车异响", "phone": "13800138000", "severity": "high", "score": 80, "notes": "客户反映低速刹车有异响"}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def load(url: str, headers: dict, seconds: float, clients: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def run():
        mine = []
        with httpx.Client(headers=headers, timeout=60) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.post(url, json=BODY)
                mine.append(time.perf_counter() - t0)
                if r.status_code != 201:
                    with lock:
                        errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    return {"req_s": len(latencies) / elapsed, "p50": q(0.50), "p99": q(0.99), "n": len(latencies), "errors": errors[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--pg", default=None, help="PostgreSQL server URL; two fresh databases are created on it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "LOOM_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
    if args.pg:
        from sqlalchemy import create_engine, text
        admin = create_engine(args.pg.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")
        urls = []
        for name in ("loom_bench_base", "loom_bench_loom"):
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                c.execute(text(f'CREATE DATABASE "{name}"'))
            urls.append(args.pg.rsplit("/", 1)[0] + "/" + name)
        base_url = urls[0].replace("postgresql://", "postgresql+psycopg2://")
        loom_url = urls[1]
    else:
        base_url, loom_url = f"sqlite:///{tmp}/base.db", f"sqlite:///{tmp}/loom.db"

    pkg = tmp / "pkg"
    for rel, text_ in PACKAGE.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text_, encoding="utf-8")
    loom = [sys.executable, "-m", "ui.cli", "--db", loom_url]
    subprocess.run(loom + ["import", str(pkg)], check=True, env=env, cwd=ROOT, capture_output=True)
    subprocess.run(loom + ["user", "add", "bench", "--role", "agent", "--password", "bench-pass-1"], check=True, env=env,
                   cwd=ROOT, capture_output=True)

    results = {}
    (tmp / "baseline_app.py").write_text(BASELINE)
    for name in ("baseline", "loom"):
        port = free_port()
        if name == "baseline":
            cmd = [sys.executable, "-m", "uvicorn", "baseline_app:app", "--port", str(port), "--log-level", "warning"]
            proc = subprocess.Popen(cmd, cwd=tmp, env={**env, "BENCH_DB": base_url}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            url, headers = f"http://127.0.0.1:{port}/tickets", {}
            wait_up(f"http://127.0.0.1:{port}/docs", proc)
        else:
            cmd = loom + ["serve", "--port", str(port), "--no-scheduler"]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wait_up(f"http://127.0.0.1:{port}/openapi.json", proc)
            tok = httpx.post(f"http://127.0.0.1:{port}/api/auth/token", data={"username": "bench", "password": "bench-pass-1"}).json()
            url, headers = f"http://127.0.0.1:{port}/api/apps/bench/ticket", {"Authorization": f"Bearer {tok['access_token']}"}
        try:
            load(url, headers, 2, args.clients)               # warm-up
            results[name] = load(url, headers, args.seconds, args.clients)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
    b, l_ = results["baseline"], results["loom"]
    db = "PostgreSQL" if args.pg else "SQLite"
    print(f"create over HTTP on {db}, {args.clients} clients, {args.seconds:.0f} s, 1 uvicorn worker each")
    print(f"{'':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(f"{name:10} {r['req_s']:8.0f} {r['p50']:8.1f} {r['p99']:8.1f} {r['errors']:7d}")
    print(f"ratio loom/baseline req/s: {l_['req_s'] / b['req_s']:.2f}x  (target >= 0.7x); "
          f"p99 {l_['p99']:.0f} ms vs {b['p99']:.0f} ms")


if __name__ == "__main__":
    main()
