"""Report engine benchmark: engine-generated SQL vs hand-written SQL, same database, same run.

    python bench/bench_reports.py [--pg URL] [--leads 1000000] [--complaints 300000] [--reps 7]
                                  [--sqlite] [--sqlite-leads 200000] [--keep]

Creates a scratch database (PostgreSQL: a new database on the server at --pg, default
postgresql://postgres@127.0.0.1:5432/postgres; dropped afterwards unless --keep), installs a
CRM-like app (dealers, leads, complaints; the same row-level access rules as the CRM),
seeds it with INSERT ... SELECT generate_series (1M leads, 300k complaints over one year),
ANALYZEs, then runs each report through the engine (``ReportService.run``: building the
statement, executing it, converting rows) and the equivalent hand-written SQL
(``conn.execute(text(...)).all()``), alternating, ``--reps`` times each; prints the
medians and the ratio engine / hand-written (goal <= 1.2x) and checks both return the
same numbers.  ``--sqlite`` does the same on a SQLite file with fewer rows.

Reports:
  lead_funnel      funnel new -> contacted -> test_drive -> negotiating -> won by dealer region, last 90 days
  complaint_sla    complaints by region x month (Shanghai time): count, resolved, avg hours to
                   resolve, SLA breaches (resolved after the due time, or still open past it), breach rate
  leads_by_source  leads by source and level for one region (a parameter), this year
  dealer_scoped    lead funnel as a dealer user (row filter: dealer.code == current_user.dealer)
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)     # Monday 10:00 in Shanghai
REGIONS = ["north", "northeast", "east", "central", "south", "southwest", "northwest"]
SOURCES = ["website", "app", "live_stream", "auto_show", "hotline_400", "referral", "walk_in", "vertical_media"]
STATES = ["new", "contacted", "test_drive", "negotiating", "won", "lost"]

APP = """\
name: bench
version: 1.0.0
title: {zh: 报表基准, en: Report bench}
timezone: Asia/Shanghai
roles:
  admin: {label: Admin, permissions: [view_pii, manage_app, export]}
  dealer_manager: {label: Dealer manager}
user_attributes:
  dealer: {label: Dealer}
"""

DEALER = """\
name: dealer
title_field: name
fields:
  code: {type: text, required: true, unique: true}
  name: {type: text, required: true}
  region: {type: select, index: true, options: [%s]}
access:
  - roles: [dealer_manager]
    actions: [read]
    rows: "code == current_user.dealer"
""" % ", ".join(REGIONS)

LEAD = """\
name: lead
fields:
  name: {type: text}
  source: {type: select, index: true, options: [%s]}
  level: {type: select, options: [H, A, B, C]}
  dealer: {type: link, form: dealer}
  in_pool: {type: boolean}
  first_contact_at: {type: datetime}
indexes:
  - [created_at, dealer]
access:
  - roles: [dealer_manager]
    actions: [read]
    rows: "dealer.code == current_user.dealer"
""" % ", ".join(SOURCES)

COMPLAINT = """\
name: complaint
fields:
  subject: {type: text}
  dealer: {type: link, form: dealer}
  severity: {type: select, options: [low, medium, high, critical]}
  resolve_due_at: {type: datetime}
  resolved_at: {type: datetime}
indexes:
  - [created_at, dealer]
"""

FLOW = """\
name: lead_process
kind: workflow
form: lead
initial: new
states:
  new: {label: {zh: 新线索, en: New}}
  contacted: {label: {zh: 已联系, en: Contacted}}
  test_drive: {label: {zh: 已试驾, en: Test drive}}
  negotiating: {label: {zh: 洽谈中, en: Negotiating}}
  won: {label: {zh: 成交, en: Won}, final: true}
  lost: {label: {zh: 战败, en: Lost}, final: true}
transitions:
  contact: {from: [new], to: contacted}
  drive: {from: [contacted], to: test_drive}
  negotiate: {from: [contacted, test_drive], to: negotiating}
  win: {from: [negotiating], to: won}
  lose: {from: [new, contacted, test_drive, negotiating], to: lost}
"""

REPORTS = """\
reports:
  - name: lead_funnel
    kind: funnel
    source: lead
    filters:
      - {field: created_at, param: period, default: last_90_days}
    dimensions: [dealer.region]
  - name: complaint_sla
    source: complaint
    filters:
      - {field: created_at, param: period, default: last_90_days}
    dimensions: [dealer.region, {field: created_at, bucket: month}]
    measures:
      complaints: count
      resolved: {count: "resolved_at != None"}
      avg_hours: {duration: [created_at, resolved_at], unit: hours}
      breached: {count: "resolved_at > resolve_due_at or (resolved_at == None and resolve_due_at < now())"}
      breach_rate: {ratio: [breached, complaints]}
  - name: leads_by_source
    source: lead
    filters:
      - "in_pool == false"
      - {field: created_at, param: period, default: this_year}
      - {field: dealer.region, param: region}
    dimensions: [source, level]
    measures:
      leads: count
      won: {count: "state == 'won'"}
      conversion: {ratio: [won, leads]}
"""


def files() -> dict[str, str]:
    return {"app.yaml": APP, "forms/dealer.yaml": DEALER, "forms/lead.yaml": LEAD, "forms/complaint.yaml": COMPLAINT,
            "flows/lead_process.yaml": FLOW, "reports/bench.yaml": REPORTS}


# ---------------------------------------------------------------------------
# seeding

def seed_pg(conn, leads: int, complaints: int, dealers: int = 200) -> None:
    regions = "ARRAY[" + ",".join(f"'{r}'" for r in REGIONS) + "]"
    sources = "ARRAY[" + ",".join(f"'{s}'" for s in SOURCES) + "]"
    conn.execute(text("SELECT setseed(0.42)"))
    conn.execute(text(f"""
        INSERT INTO bench__dealer (created_at, updated_at, created_by, code, name, region)
        SELECT TIMESTAMP '2025-01-01', TIMESTAMP '2025-01-01', 'bench', 'D' || lpad(g::text, 4, '0'), 'Dealer ' || g,
               ({regions})[1 + (g % 7)]
        FROM generate_series(1, {dealers}) g"""))
    # created_at spread over the year before NOW; state distribution by a random draw
    conn.execute(text(f"""
        INSERT INTO bench__lead (created_at, updated_at, created_by, owner, state, name, source, level, dealer, in_pool,
                                 first_contact_at)
        SELECT c, c, 'bench', 'u' || (g % 500), s, 'lead ' || g, ({sources})[1 + (g % 8)],
               (ARRAY['H','A','B','C'])[1 + (g % 4)], 1 + (g % {dealers}), (g % 10) = 0,
               CASE WHEN s <> 'new' THEN c + (r * interval '48 hours') END
        FROM (SELECT g, TIMESTAMP '2026-11-23 02:00' - (random() * interval '365 days') AS c, random() AS r,
                     CASE WHEN random() < 0.30 THEN 'new' WHEN random() < 0.35 THEN 'contacted'
                          WHEN random() < 0.40 THEN 'test_drive' WHEN random() < 0.45 THEN 'negotiating'
                          WHEN random() < 0.50 THEN 'won' ELSE 'lost' END AS s
              FROM generate_series(1, {leads}) g) x"""))
    conn.execute(text(f"""
        INSERT INTO bench__complaint (created_at, updated_at, created_by, state, subject, dealer, severity,
                                      resolve_due_at, resolved_at)
        SELECT c, c, 'bench', CASE WHEN r < 0.85 THEN 'resolved' ELSE 'open' END, 'complaint ' || g, 1 + (g % {dealers}),
               (ARRAY['low','medium','high','critical'])[1 + (g % 4)], c + interval '72 hours',
               CASE WHEN r < 0.85 THEN c + (random() * interval '120 hours') END
        FROM (SELECT g, TIMESTAMP '2026-11-23 02:00' - (random() * interval '365 days') AS c, random() AS r
              FROM generate_series(1, {complaints}) g) x"""))
    for t in ("bench__dealer", "bench__lead", "bench__complaint"):
        conn.execute(text(f"ANALYZE {t}"))


def seed_sqlite(conn, leads: int, complaints: int, dealers: int = 200) -> None:
    def pick(values, expr):
        return "CASE " + " ".join(f"WHEN ({expr}) = {i} THEN '{v}'" for i, v in enumerate(values)) + " END"
    ts = "strftime('%Y-%m-%d %H:%M:%f000', {})"
    conn.execute(text(f"""
        WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {dealers})
        INSERT INTO bench__dealer (created_at, updated_at, created_by, code, name, region)
        SELECT '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000', 'bench', printf('D%04d', x), 'Dealer ' || x,
               {pick(REGIONS, 'x % 7')} FROM g"""))
    created = ts.format("'2026-11-23 02:00:00', '-' || (abs(random()) % 31536000) || ' seconds'")
    conn.execute(text(f"""
        WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {leads})
        INSERT INTO bench__lead (created_at, updated_at, created_by, owner, state, name, source, level, dealer, in_pool,
                                 first_contact_at)
        SELECT c, c, 'bench', 'u' || (x % 500), s, 'lead ' || x, {pick(SOURCES, 'x % 8')}, {pick('HABC', 'x % 4')},
               1 + (x % {dealers}), (x % 10) = 0,
               CASE WHEN s <> 'new' THEN {ts.format("c, '+' || (abs(random()) % 172800) || ' seconds'")} END
        FROM (SELECT x, {created} AS c, {pick(STATES, 'abs(random()) % 6')} AS s FROM g ORDER BY x LIMIT -1 OFFSET 0)"""))
    conn.execute(text(f"""
        WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {complaints})
        INSERT INTO bench__complaint (created_at, updated_at, created_by, state, subject, dealer, severity,
                                      resolve_due_at, resolved_at)
        SELECT c, c, 'bench', CASE WHEN r < 85 THEN 'resolved' ELSE 'open' END, 'complaint ' || x, 1 + (x % {dealers}),
               {pick(['low', 'medium', 'high', 'critical'], 'x % 4')}, {ts.format("c, '+72 hours'")},
               CASE WHEN r < 85 THEN {ts.format("c, '+' || (abs(random()) % 432000) || ' seconds'")} END
        FROM (SELECT x, {created} AS c, abs(random()) % 100 AS r FROM g ORDER BY x LIMIT -1 OFFSET 0)"""))
    conn.execute(text("ANALYZE"))


# ---------------------------------------------------------------------------
# the hand-written equivalents

def hand_sql(dialect: str) -> dict[str, tuple[str, dict]]:
    pg = dialect == "postgresql"
    # last 90 days in Shanghai: local 2026-08-26 .. 2026-11-24 = UTC 2026-08-25 16:00 .. 2026-11-23 16:00
    p90 = {"a": dt.datetime(2026, 8, 25, 16), "b": dt.datetime(2026, 11, 23, 16)}
    year = {"a": dt.datetime(2025, 12, 31, 16), "b": dt.datetime(2026, 12, 31, 16)}
    month = ("to_char(c.created_at + INTERVAL '480 minutes', 'YYYY-MM')" if pg
             else "strftime('%Y-%m', datetime(c.created_at, '+480 minutes'))")
    hours = ("avg(extract(epoch FROM c.resolved_at - c.created_at) / 3600)" if pg
             else "avg((julianday(c.resolved_at) - julianday(c.created_at)) * 24)")
    breach = "c.resolved_at > c.resolve_due_at OR (c.resolved_at IS NULL AND c.resolve_due_at < :now)"
    now = {"now": NOW.replace(tzinfo=None)}
    later = lambda i: ", ".join(f"'{s}'" for s in STATES[i:5])  # noqa: E731
    funnel = f"""
        SELECT d.region, count(*),
               count(*) FILTER (WHERE l.state IN ({later(1)})), count(*) FILTER (WHERE l.state IN ({later(2)})),
               count(*) FILTER (WHERE l.state IN ({later(3)})), count(*) FILTER (WHERE l.state IN ({later(4)}))
        FROM bench__lead l LEFT JOIN bench__dealer d ON d.id = l.dealer
        WHERE l.created_at >= :a AND l.created_at < :b
        GROUP BY d.region ORDER BY d.region"""
    return {
        "lead_funnel": (funnel, p90),
        "complaint_sla": (f"""
            SELECT d.region, {month} AS m, count(*), count(*) FILTER (WHERE c.resolved_at IS NOT NULL), {hours},
                   count(*) FILTER (WHERE {breach}),
                   CAST(count(*) FILTER (WHERE {breach}) AS FLOAT) / NULLIF(count(*), 0)
            FROM bench__complaint c LEFT JOIN bench__dealer d ON d.id = c.dealer
            WHERE c.created_at >= :a AND c.created_at < :b
            GROUP BY d.region, m ORDER BY d.region, m""", dict(p90, **now)),
        "leads_by_source": ("""
            SELECT l.source, l.level, count(*), count(*) FILTER (WHERE l.state = 'won'),
                   CAST(count(*) FILTER (WHERE l.state = 'won') AS FLOAT) / NULLIF(count(*), 0)
            FROM bench__lead l LEFT JOIN bench__dealer d ON d.id = l.dealer
            WHERE l.in_pool = false AND l.created_at >= :a AND l.created_at < :b AND d.region = :region
            GROUP BY l.source, l.level ORDER BY l.source, l.level""", dict(year, region="east")),
        "dealer_scoped": (funnel.replace("WHERE l.created_at", "WHERE l.dealer IN (SELECT id FROM bench__dealer WHERE code = :code) "
                                         "AND l.created_at"), dict(p90, code="D0007")),
    }


# ---------------------------------------------------------------------------

def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run_bench(url: str, leads: int, complaints: int, reps: int, label: str, reuse: bool = False) -> list[tuple]:
    from engine.auth import SYSTEM_USER, get_user, upsert_user
    from engine.clock import Clock
    from engine.installer import install
    from engine.package import read_package
    from engine.uow import UnitOfWork
    from tests.conftest import write_package
    from ui.wiring import build_runtime

    rt = build_runtime(url, Clock(fixed=NOW))
    tmp = Path(tempfile.mkdtemp())
    install(rt, read_package(write_package(tmp / "pkg", files())))
    if not reuse:
        t = time.perf_counter()
        with rt.db.write() as conn:
            (seed_pg if rt.db.dialect == "postgresql" else seed_sqlite)(conn, leads, complaints)
            upsert_user(conn, NOW, "dm7", ["dealer_manager"], {"dealer": "D0007"}, password="bench-pass-123")
        print(f"[{label}] seeded {leads:,} leads and {complaints:,} complaints in {time.perf_counter() - t:.1f}s")
    svc = rt.services["reports"]
    app = rt.app("bench")
    hand = hand_sql(rt.db.dialect)
    cases = [("lead_funnel", {}, None), ("complaint_sla", {}, None), ("leads_by_source", {"region": "east"}, None),
             ("dealer_scoped", {}, "dm7")]
    out = []
    with rt.db.read() as conn:
        for name, params, user in cases:
            report = "lead_funnel" if name == "dealer_scoped" else name
            u = get_user(conn, user) if user else SYSTEM_USER
            uow = UnitOfWork(rt, conn, app, u, NOW)
            sql, binds = hand[name]
            stmt = text(sql)
            # warm up both (plans, caches), then alternate
            svc.run(uow, report, params)
            conn.execute(stmt, binds).all()
            e_times, h_times = [], []
            res = rows = None
            for _ in range(reps):
                te, res = timed(lambda: svc.run(uow, report, params), 1)
                th, rows = timed(lambda: conn.execute(stmt, binds).all(), 1)
                e_times.append(te)
                h_times.append(th)
            e, h = statistics.median(e_times), statistics.median(h_times)
            same = _same(report, res, rows)
            out.append((label, name, e, h, e / h if h else float("nan"), same))
            print(f"[{label}] {name:<16} engine {e * 1000:9.1f} ms   hand-written {h * 1000:9.1f} ms   "
                  f"ratio {e / h:5.2f}x   results {'match' if same else 'DIFFER'}")
    rt.db.dispose()
    return out


def _same(report: str, res: dict, rows: list) -> bool:
    """Compare the engine's numbers with the hand-written query's (numbers to 1e-6 relative)."""
    import math

    def eq(x, y) -> bool:
        if x is None or y is None or isinstance(x, str) or isinstance(y, str):
            return x == y
        return math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6)

    def rows_eq(a, b) -> bool:
        a = sorted(a, key=lambda r: tuple(str(v) for v in r[:2]))
        b = sorted(b, key=lambda r: tuple(str(v) for v in r[:2]))
        return len(a) == len(b) and all(len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))
    if report == "lead_funnel":
        # engine: long rows [region, stage, count, rate, step]; hand: one row per region with 5 counts
        counts: dict = {}
        for r in res["rows"]:
            counts.setdefault(r[0], [r[0]]).append(r[2])
        return rows_eq(list(counts.values()), [list(r) for r in rows])
    return rows_eq(res["rows"], [list(r) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--leads", type=int, default=1_000_000)
    ap.add_argument("--complaints", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--sqlite", action="store_true", help="also run on SQLite (with --sqlite-leads rows)")
    ap.add_argument("--sqlite-leads", type=int, default=200_000)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch PostgreSQL database")
    ap.add_argument("--reuse", metavar="DBNAME", help="run on a database kept by an earlier --keep run (no seeding)")
    args = ap.parse_args()
    import os
    os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    results = []
    if not args.no_pg:
        server = args.pg.replace("postgresql://", "postgresql+psycopg2://", 1)
        name = args.reuse or f"loom_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        if not args.reuse:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            results += run_bench(f"{args.pg.rsplit('/', 1)[0]}/{name}", args.leads, args.complaints, args.reps, "postgresql",
                                 reuse=bool(args.reuse))
        finally:
            if not (args.keep or args.reuse):
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                print(f"kept database {name}")
    if args.sqlite:
        tmp = Path(tempfile.mkdtemp())
        results += run_bench(f"sqlite:///{tmp / 'bench.db'}", args.sqlite_leads, args.sqlite_leads * 3 // 10, args.reps, "sqlite")
    print()
    print(f"{'database':<11} {'report':<16} {'engine ms':>10} {'hand ms':>10} {'ratio':>6}  result")
    for label, name, e, h, ratio, same in results:
        print(f"{label:<11} {name:<16} {e * 1000:10.1f} {h * 1000:10.1f} {ratio:6.2f}  {'match' if same else 'DIFFER'}")
    worst = max((r[4] for r in results), default=0)
    print(f"\nworst ratio {worst:.2f}x (goal <= 1.20x)")


if __name__ == "__main__":
    main()
