"""Rules overhead per record: creating leads in the automotive CRM with and without its rule set.

    python bench/bench_rules.py [--n 500] [--db sqlite|postgresql://postgres@127.0.0.1:5432/postgres]

For each database, two scratch apps are installed from the CRM package (reports and seed data left
out): ``with`` has ``rules/`` as shipped, ``without`` the same package without ``rules/`` (forms,
flows and templates identical).  Four east-region consultants exist.  N leads are then created one
per transaction through the record service, like N API requests (HTTP/JSON overhead excluded), and
the mean time per create is compared.  On every create the CRM's rules score the lead (decision
table), assign it by round robin (locked cursor row), set its dealer from the consultant and notify
the consultant (template render + outbox row), and log both firings (rule log + timeline) -- so
the difference is the full cost of the rules, not of an idle dispatcher.  Scoring, assignment and the
dealer run in the rules' pre-save phase (``record.saving``), so the lead is inserted once with them;
the notification, the log rows and the follow-up timers (assigned_at + 3/7/15 days) come after the INSERT.

Also measured: ``idle`` -- the rule set installed but no rule matching (leads created with an owner
and a score), i.e. the dispatcher's own cost per event; and (PostgreSQL) ``locked read`` -- the
rules as shipped, but with the assignment reading its round-robin cursor under a lock on every
lead instead of choosing from the copy this process remembers (``engine.optimistic`` off), i.e.
what that saves, measured in the same run.  ``CPU ms`` is this thread's CPU time per
create (median): on a busy machine it moves much less than wall time, and on SQLite it includes the
database's own work (in-process); on PostgreSQL the server's share is not in it.

PostgreSQL, after the runs: the statements of one create with rules and of one without (their exact
SQL text, captured from creates that are rolled back) are replayed on a raw psycopg2 connection,
interleaved, each in a transaction that is rolled back -- so keys stay free and the cursor keeps the
value its checked write expects.  The difference of the medians is the database's work (plus the
network and the driver) on the SQL the rules add; the rest of the overhead is this process's Python.
The create with rules is also replayed with each part the rules add left out, one at a time (the
cursor's checked write, the dealer subquery, the message row, the timer row, the timeline lines):
the full replay minus that one is the part's cost.  See docs/rules-speed.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)


def _package(tmp: Path, name: str, with_rules: bool) -> Path:
    import io
    from ruamel.yaml import YAML
    root = tmp / name
    shutil.copytree(ROOT / "apps" / "automotive_crm", root, ignore=shutil.ignore_patterns("reports", "seed"))
    if not with_rules:
        shutil.rmtree(root / "rules", ignore_errors=True)
    y = YAML()
    data = y.load((root / "app.yaml").read_text(encoding="utf-8"))
    data["name"] = name
    for role, items in list((data.get("home") or {}).items()):
        data["home"][role] = [i for i in items if not (isinstance(i, dict) and "dashboard" in i)] or ["tasks"]
    data["menus"] = [m for m in data.get("menus") or [] if "dashboard" not in m]
    buf = io.StringIO()
    y.dump(data, buf)
    (root / "app.yaml").write_text(buf.getvalue(), encoding="utf-8")
    return root


def _database(kind: str, tmp: Path) -> tuple[str, callable]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    from sqlalchemy import create_engine, text
    server = kind.replace("postgresql://", "postgresql+psycopg2://", 1)
    name = f"loom_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return f"{server.rsplit('/', 1)[0]}/{name}", drop


def _lead(i: int, idle: bool) -> dict:
    data = {"name": f"客户{i}", "phone": f"139{i:08d}", "region": "east", "source": "website",
            "model_interest": "s7", "purchase_timeframe": "1_3m"}
    if idle:
        data["score"] = 50
    return data


class _Meter:
    """Counts SQL statements and the time spent inside the rule engine's event handlers."""

    def __init__(self, rt):
        from sqlalchemy import event
        self.statements = 0
        self.in_rules = 0.0
        event.listen(rt.db.engine, "before_cursor_execute", self._count)
        engine = rt.services["rules"]
        for name in ("on_saving", "on_created", "on_updated"):
            setattr(engine, name, self._timed(getattr(engine, name)))
        # re-subscribe the timed handlers (the bus holds the bound methods)
        for kind, handlers in rt.bus._handlers.items():
            rt.bus._handlers[kind] = [(o, getattr(engine, h.__name__) if getattr(h, "__self__", None) is engine else h)
                                      for o, h in handlers]
        self.depth = 0

    def _count(self, *a):
        self.statements += 1

    def _timed(self, fn):
        def wrapper(event, uow):
            if self.depth:
                return fn(event, uow)
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(event, uow)
            finally:
                self.in_rules += time.perf_counter() - t
                self.depth -= 1
        wrapper.__name__ = fn.__name__
        wrapper.__self__ = fn.__self__
        return wrapper


def _optimistic_default() -> int:
    from engine import optimistic
    return optimistic.MAX_PER_TRANSACTION


_OPTIMISTIC = _optimistic_default()      # the engine's own setting, restored after each locked-read create


def _create_one(rt, app, i: int, idle: bool, meter: _Meter, locked: bool = False) -> tuple[float, int, float, float]:
    from engine import optimistic
    from engine.auth import SYSTEM_USER
    from engine.uow import UnitOfWork
    records = rt.services["records"]
    optimistic.MAX_PER_TRANSACTION = 0 if locked else _OPTIMISTIC
    s0, r0 = meter.statements, meter.in_rules
    c = time.thread_time()
    t = time.perf_counter()
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now())
        rec = records.create(uow, "lead", _lead(i, idle), trusted=True, owner="c1" if idle else None)
    elapsed = time.perf_counter() - t
    cpu = time.thread_time() - c
    if app.name == "crm_with" and not idle:
        assert rec["owner"] and rec["score"], "the rules did not run"
    return elapsed, meter.statements - s0, meter.in_rules - r0, cpu


class _Rollback(Exception):
    pass


def _statements_of(rt, app, i: int) -> list[str]:
    """The SQL text one lead create sends (held writes included, as they go), from a create that is
    rolled back -- so the round-robin cursor keeps the value its checked write expects."""
    from sqlalchemy import event
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement if not parameters else cursor.mogrify(statement, parameters).decode())
    event.listen(rt.db.engine, "after_cursor_execute", seen)
    try:
        from engine.auth import SYSTEM_USER
        from engine.uow import UnitOfWork
        with rt.db.write() as conn:
            uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now())
            rt.services["records"].create(uow, "lead", _lead(i, False), trusted=True)
            from engine import later
            later.flush(conn)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        event.remove(rt.db.engine, "after_cursor_execute", seen)
    return sent


# the parts of the SQL the CRM's rules add, each as a pattern to take it out of one create's statements
_PARTS = (
    ("the cursor's checked write", r"SAVEPOINT \w+;\nSELECT loom_cursor_advance\(.*?\) AS \w+;\n", ""),
    ("the dealer subquery", r"\(SELECT (\w+)\.id \s*FROM \1 \s*WHERE [^()]*\)", "1"),
    ("the message row", r"INSERT INTO loom_outbox .*? ON CONFLICT \(idempotency_key\) DO NOTHING;\n", ""),
    ("the follow-up timer row", r", \('[^']*', 'rules\.date', '[^']*', [^()]*?, 'pending', 0\)", ""),
    ("the two timeline lines", r", \('[^']*', '[^']*', \d+, '[^']*'::timestamp, '[^']*', 'rule', '(?:[^']|'')*'::JSON, NULL\)", ""),
)


def _server_share(rt, apps: dict, n: int) -> dict:
    """The database's share of the overhead: one create's statements with and without rules, replayed
    on a raw psycopg2 connection (each in a transaction rolled back, so keys and the cursor's expected
    value stay valid), interleaved; the median difference is what running the rules' SQL costs the
    server, the network and the driver -- the rest of the overhead is this process's Python.  Each
    part the rules add (``_PARTS``) is also replayed left out, one at a time: the full replay minus
    that one is the part's cost."""
    import re
    import psycopg2
    from engine import optimistic
    optimistic.MAX_PER_TRANSACTION = _OPTIMISTIC      # as in the "with rules" creates (the last create was a locked read)
    with_sql = _statements_of(rt, apps["crm_with"], 10**6)
    assert any("loom_cursor_advance" in sql for sql in with_sql), "the captured create did not choose optimistically"
    replays = {"with": with_sql, "without": _statements_of(rt, apps["crm_without"], 10**6 + 1)}
    for label, pattern, replacement in _PARTS:
        variant = [re.sub(pattern, replacement, sql, flags=re.S) for sql in with_sql]
        if variant != with_sql:          # (a part the rule set no longer has is left out of the report)
            replays[label] = variant
    url = rt.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(url)
    cur = conn.cursor()
    times: dict[str, list[float]] = {label: [] for label in replays}
    try:
        for i in range(max(200, n)):
            for label, sqls in replays.items():
                t = time.perf_counter()
                for sql in sqls:
                    cur.execute(sql)
                conn.rollback()
                if i >= 20:
                    times[label].append(time.perf_counter() - t)
    finally:
        conn.close()
    full = statistics.median(times["with"])
    return {"total": full - statistics.median(times["without"]),
            "parts": {label: full - statistics.median(times[label]) for label in replays if label not in ("with", "without")}}


def run(kind: str, n: int) -> dict:
    import ui.wiring
    from engine.auth import upsert_user
    from engine.clock import Clock
    from engine.installer import install
    from engine.package import read_package
    out = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        url, drop = _database(kind, tmp)
        try:
            rt = ui.wiring.build_runtime(url, Clock(fixed=T0))
            install(rt, read_package(_package(tmp, "crm_with", True)))
            install(rt, read_package(_package(tmp, "crm_without", False)))
            with rt.db.write() as conn:
                for u in ("c1", "c2", "c3", "c4"):
                    upsert_user(conn, T0, u, ["sales_consultant"], {"region": "east", "dealer": "D001"})
            from engine.uow import UnitOfWork
            from engine.auth import SYSTEM_USER
            for app_name in ("crm_with", "crm_without"):
                with rt.db.write() as conn:
                    uow = UnitOfWork(rt, conn, rt.app(app_name), SYSTEM_USER, T0)
                    rt.services["records"].create(uow, "dealer", {
                        "code": "D001", "name": "上海浦东智行4S店", "region": "east", "province_city": "上海市/上海市/浦东新区",
                        "city": "上海", "phone": "021-58880000"}, trusted=True)
            meter = _Meter(rt)
            variants = (("without rules", "crm_without", False), ("with rules", "crm_with", False),
                        ("idle rules", "crm_with", True))
            if kind != "sqlite":
                variants += (("locked read", "crm_with", False),)
            apps = {name: rt.app(name) for name in ("crm_with", "crm_without")}
            out = {label: [] for label, _, _ in variants}
            warm = max(20, n // 10)
            for i in range(warm + n):                 # interleaved, so machine load hits every variant alike
                for label, app_name, idle in variants:
                    got = _create_one(rt, apps[app_name], i * len(variants) + [v[0] for v in variants].index(label), idle,
                                      meter, locked=label == "locked read")
                    if i >= warm:
                        out[label].append(got)
            if kind != "sqlite":
                out["_server"] = _server_share(rt, apps, n)
            rt.db.dispose()
        finally:
            drop()
    return out


def report(kind: str, results: dict, n: int) -> None:
    print(f"\n{kind}: {n} leads per variant, one transaction each, interleaved")
    print(f"  {'':<15}{'mean ms':>9}{'median':>8}{'p95':>8}{'SQL/create':>12}{'in rules ms':>13}{'CPU ms':>8}")
    stats = {}
    server = results.pop("_server", None)
    for label, rows in results.items():
        ms = sorted(r[0] * 1000 for r in rows)
        sql = statistics.mean(r[1] for r in rows)
        inside = statistics.mean(r[2] for r in rows) * 1000
        cpu = statistics.median(r[3] for r in rows) * 1000
        stats[label] = (statistics.mean(ms), statistics.median(ms), sql, inside, cpu)
        print(f"  {label:<15}{statistics.mean(ms):9.2f}{statistics.median(ms):8.2f}{ms[int(len(ms) * 0.95) - 1]:8.2f}"
              f"{sql:12.1f}{inside:13.2f}{cpu:8.2f}")
    w, wo, idle = stats["with rules"], stats["without rules"], stats["idle rules"]
    # the ratio to the plain create moves less with the host's load than the milliseconds (both scale with it)
    print(f"  rules overhead per lead: {w[1] - wo[1]:.2f} ms (median; {(w[1] - wo[1]) / wo[1]:.2f}x the create without "
          f"rules), {w[2] - wo[2]:.1f} more SQL statements; "
          f"time inside the rule handlers {w[3]:.2f} ms (pre-save phase before the INSERT + the rest after it, incl. "
          f"what other engines do in reaction); no rule matching: {idle[3]:.2f} ms; "
          f"in this process's CPU time (median; on SQLite this includes the database's work): {w[4] - wo[4]:.2f} ms")
    if server is not None:
        total = server["total"] * 1000
        print(f"  of which the database's work on the rules' SQL: {total:.2f} ms (the same statements replayed on "
              f"raw psycopg2, rolled back, median difference); the rest, {w[1] - wo[1] - total:.2f} ms, is this process")
        print("    by part (the replay without it, one at a time): " +
              ", ".join(f"{label} {ms * 1000:.2f} ms" for label, ms in server["parts"].items()))
    if "locked read" in stats:
        from engine import optimistic
        lk = stats["locked read"]
        print(f"  with the cursor read under a lock on every lead instead: {lk[1] - wo[1]:.2f} ms overhead (median), "
              f"{lk[2] - wo[2]:.1f} more SQL statements; creates run again after a stale read: {optimistic.retries}")


def machine(kind: str) -> str:
    """How fast this machine is, for comparing absolute figures across machines: a pure-Python
    reference loop, and (PostgreSQL) the median round trip of ``SELECT 1``."""
    t = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    line = f"machine: Python reference loop (2M additions) {1000 * (time.perf_counter() - t):.0f} ms"
    if kind != "sqlite":
        from sqlalchemy import create_engine
        eng = create_engine(kind.replace("postgresql://", "postgresql+psycopg2://", 1))
        with eng.connect() as conn:
            raw = conn.connection.dbapi_connection.cursor()
            trips = []
            for _ in range(300):
                a = time.perf_counter()
                raw.execute("SELECT 1")
                raw.fetchone()
                trips.append(time.perf_counter() - a)
        eng.dispose()
        line += f"; PostgreSQL round trip (SELECT 1) {1000 * statistics.median(trips):.3f} ms"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--db", action="append", help="sqlite or a PostgreSQL server URL (repeatable)")
    args = ap.parse_args()
    dbs = args.db or ["sqlite"] + ([os.environ["LOOM_TEST_PG_URL"]] if os.environ.get("LOOM_TEST_PG_URL") else [])
    for kind in dbs:
        report("sqlite" if kind == "sqlite" else "postgresql", run(kind, args.n), args.n)
        print("  " + machine(kind))


if __name__ == "__main__":
    main()
