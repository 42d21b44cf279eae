"""Benchmark: importing 100k CSV rows -- Loom vs a plain bulk insert.

Same CSV, same table shape, same run:
* baseline: csv.reader + SQLAlchemy Core ``executemany`` in batches of 2,000
  (no validation), and on PostgreSQL also ``COPY FROM STDIN``;
* Loom: ``forms.transfer.import_records`` -- every row parsed and validated
  per field (phone format, options, ranges, required), then inserted in
  batches (``executemany`` on SQLite, ``COPY`` on PostgreSQL).

The bench form has no PII field (nothing is encrypted on either side), so
the baseline does the same storage work minus validation.

The machine may be shared: each side runs ``--repeat`` times (default 3),
alternating baseline and Loom on fresh tables, and the medians are printed,
wall clock and CPU time (``time.process_time``, less sensitive to other
processes than wall time).

Part C targets: >= 0.5x executemany on SQLite; >= 1.0x executemany on PostgreSQL.

    python bench/bench_csv_import.py [--rows 100000] [--repeat 3] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, text  # noqa: E402

from bench.bench_create import PACKAGE  # noqa: E402


def make_csv(n: int) -> bytes:
    rng = random.Random(7)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["subject", "phone", "severity", "score", "notes"])
    for i in range(n):
        w.writerow([f"工单{i}", f"13{rng.randint(0, 999999999):09d}", rng.choice(["low", "medium", "high", "critical"]),
                    rng.randint(0, 100), "客户反映低速刹车有异响"])
    return buf.getvalue().encode()


def baseline(url: str, blob: bytes, copy: bool = False) -> tuple[float, float]:
    eng = create_engine(url)
    md = MetaData()
    t = Table("ticket_base", md, Column("id", Integer, primary_key=True), Column("subject", String(100)),
              Column("phone", String(20)), Column("severity", String(20)), Column("score", Integer),
              Column("notes", Text), Column("created_at", DateTime))
    md.drop_all(eng)
    md.create_all(eng)
    t0, c0 = time.perf_counter(), time.process_time()
    reader = csv.reader(io.StringIO(blob.decode()))
    next(reader)
    now = dt.datetime.utcnow()
    with eng.begin() as conn:
        if copy:
            buf = io.StringIO()
            out = csv.writer(buf)
            for r in reader:
                out.writerow(r + [now.isoformat()])
            buf.seek(0)
            with conn.connection.dbapi_connection.cursor() as cur:
                cur.copy_expert("COPY ticket_base (subject, phone, severity, score, notes, created_at) FROM STDIN WITH (FORMAT csv)", buf)
        else:
            batch = []
            for r in reader:
                batch.append({"subject": r[0], "phone": r[1], "severity": r[2], "score": int(r[3]), "notes": r[4], "created_at": now})
                if len(batch) == 2000:
                    conn.execute(t.insert(), batch)
                    batch = []
            if batch:
                conn.execute(t.insert(), batch)
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    eng.dispose()
    return elapsed


def loom(url: str, blob: bytes) -> tuple[float, float]:
    from engine.auth import SYSTEM_USER
    from engine.installer import install
    from engine.package import read_package
    from engine.uow import UnitOfWork
    from forms.transfer import import_records
    from ui.wiring import build_runtime

    tmp = Path(tempfile.mkdtemp())
    for rel, body in PACKAGE.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(body, encoding="utf-8")
    rt = build_runtime(url)
    install(rt, read_package(tmp))
    t0, c0 = time.perf_counter(), time.process_time()
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, rt.app("bench"), SYSTEM_USER, rt.clock.now())
        report = import_records(uow, "ticket", "t.csv", blob, mode="all")
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    assert report.inserted == blob.count(b"\n") - 1, report.as_dict()
    rt.db.dispose()
    return elapsed


def fresh_pg(server: str, name: str) -> str:
    admin = create_engine(server.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default=None)
    args = ap.parse_args()
    os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    blob = make_csv(args.rows)
    tmp = tempfile.mkdtemp()
    lines = []
    base_runs, loom_runs = [], []
    for i in range(args.repeat):
        base_runs.append(baseline(f"sqlite:///{tmp}/base{i}.db", blob))
        loom_runs.append(loom(f"sqlite:///{tmp}/loom{i}.db", blob))
    lines.append(("SQLite", "executemany", median_pair(base_runs), median_pair(loom_runs)))
    if args.pg:
        base_runs, copy_runs, loom_runs = [], [], []
        for _ in range(args.repeat):
            base_runs.append(baseline(fresh_pg(args.pg, "loom_bench_csv_base").replace("postgresql://", "postgresql+psycopg2://"), blob))
            copy_runs.append(baseline(fresh_pg(args.pg, "loom_bench_csv_copy").replace("postgresql://", "postgresql+psycopg2://"),
                                      blob, copy=True))
            loom_runs.append(loom(fresh_pg(args.pg, "loom_bench_csv_loom"), blob))
        lines.append(("PostgreSQL", "executemany", median_pair(base_runs), median_pair(loom_runs)))
        lines.append(("PostgreSQL", "COPY", median_pair(copy_runs), median_pair(loom_runs)))
    print(f"import {args.rows:,} CSV rows, median of {args.repeat} runs (Loom validates every field; baselines do not)")
    print(f"{'database':11} {'baseline':12} {'base rows/s':>12} {'loom rows/s':>12} {'ratio':>6} {'cpu ratio':>9}")
    for db, kind, (bt, bc), (lt, lc) in lines:
        print(f"{db:11} {kind:12} {args.rows / bt:12,.0f} {args.rows / lt:12,.0f} {bt / lt:6.2f}x {bc / lc:8.2f}x")


if __name__ == "__main__":
    main()
