"""Load test: several ``loom serve`` and ``loom worker`` processes on one PostgreSQL.

    python bench/load.py --duration 60 --clients 50 [--pg postgresql://postgres@127.0.0.1:5432/postgres]

What it does, end to end, with nothing but the command line and the JSON API:

1. creates a fresh PostgreSQL database on the server ``--pg`` (default
   ``$LOOM_TEST_PG_URL``), installs the CRM with ``loom import
   apps/automotive_crm`` and its users with ``loom user add`` (an admin, an
   HQ customer-relations agent who takes leads from the 400 hotline, and per
   dealer two sales consultants, a service manager and a service advisor);
2. starts ``--serves`` ``loom serve --no-scheduler`` processes on free ports
   and ``--workers`` ``loom worker`` processes (timers and the outbox run
   only in the workers);
3. the admin creates the dealers through the API; then ``--clients`` async
   clients sign in (``POST /api/auth/token``) and for ``--duration`` seconds
   create leads (as HQ, with a region: the rules assign them round robin to
   that region's consultants) and complaints (as a dealer's service advisor:
   the complaint flow assigns the dealer's service manager and starts two SLA
   clocks).  Every record carries a unique marker (lead ``source_detail``,
   complaint ``subject``), so each request can be found in the database;
4. waits until the workers have delivered the outbox, stops everything and
   checks the invariants with SQL (:func:`check`): every 201 is in the
   database exactly once, nothing else is; every lead is owned by a
   consultant of its region, spread round robin (per region the counts differ
   by at most one), with its three follow-up timers; every complaint is owned
   by its dealer's service manager with both SLA clocks and their five timers;
   one assignment message per record, no duplicate outbox idempotency key, and
   every message delivered once.

It prints a table (requests, errors, throughput, p50/p95/p99 latency per
endpoint) and the invariant results, and exits 1 if any invariant fails or any
request errored.  The fault tests (tests/load/test_faults.py) drive the same
pieces (:class:`Cluster`, :func:`drive`, :func:`check`) while killing
processes or restarting PostgreSQL.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = "automotive_crm"
PASSWORD = "load-test-pass-1"
SECRET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
DEALERS = [  # code, region, name, province_city, city -- from the CRM's seed pools
    ("D001", "east", "上海浦东智行4S店", ["上海市", "上海市", "浦东新区"], "上海市"),
    ("D002", "east", "杭州西湖星途4S店", ["浙江省", "杭州市", "西湖区"], "杭州市"),
    ("D003", "south", "广州天河星驰4S店", ["广东省", "广州市", "天河区"], "广州市"),
    ("D005", "north", "北京朝阳星耀4S店", ["北京市", "北京市", "朝阳区"], "北京市"),
]
# the follow-up rules at assigned_at + 3d / 7d / 15d are a chain: the +3d step's timer now, the others when
# it fires (docs/scheduler.md); the first-contact SLA breach
LEAD_TIMERS = {"rules.date": 1, "flow.sla": 1}
LEAD_CLOCKS = 1          # SLA first_contact
COMPLAINT_CLOCKS = 2     # SLAs response + resolution
COMPLAINT_TIMERS = {"flow.sla": 5}   # response warn + breach; resolution warn + breach + escalation level 2


# -- PostgreSQL databases ------------------------------------------------------

def _admin_engine(server_url: str):
    return create_engine(server_url.replace("postgresql://", "postgresql+psycopg2://", 1), isolation_level="AUTOCOMMIT")


def create_database(server_url: str, prefix: str = "loom_load") -> str:
    """A fresh database on ``server_url``'s server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    eng = _admin_engine(server_url)
    with eng.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return f"{server_url.rsplit('/', 1)[0]}/{name}"


def drop_database(db_url: str) -> None:
    server, name = db_url.rsplit("/", 1)
    eng = _admin_engine(f"{server}/postgres")
    with eng.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


# -- the processes -------------------------------------------------------------

def run_async(coro):
    """``asyncio.run`` on a thread of its own: the caller's thread may already run an event loop
    (under pytest, Playwright's sync API leaves one running in the worker), where asyncio.run refuses."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loom_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("LOOM_SECRET_KEY", SECRET_KEY)
    env.update(extra or {})
    return env


def loom(db_url: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``loom --db URL ARGS...`` (this checkout's code) and return the finished process."""
    res = subprocess.run([sys.executable, "-m", "ui.cli", "--db", db_url, *args], cwd=ROOT, env=env or loom_env(),
                         capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise RuntimeError(f"loom {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@dataclasses.dataclass
class Users:
    admin: str
    hq: str
    consultants: dict[str, list[str]]      # region -> consultant names
    dealer_of: dict[str, str]              # user -> dealer code
    service_manager: dict[str, str]        # dealer code -> user
    advisors: dict[str, str]               # dealer code -> user


def plan_users(dealers: int) -> Users:
    chosen = DEALERS[:dealers]
    consultants: dict[str, list[str]] = defaultdict(list)
    dealer_of, svm, sa = {}, {}, {}
    for code, region, *_ in chosen:
        p = code.lower()
        for n in (1, 2):
            consultants[region].append(f"{p}.sc{n}")
            dealer_of[f"{p}.sc{n}"] = code
        svm[code], sa[code] = f"{p}.svm", f"{p}.sa1"
        dealer_of[svm[code]] = dealer_of[sa[code]] = code
    return Users("admin", "hq.cr1", dict(consultants), dealer_of, svm, sa)


def install(db_url: str, users: Users, env: dict, cli_users: bool = True) -> None:
    """``loom import`` the CRM, then ``loom user add`` each user (a few at a time).

    ``cli_users=False`` writes the users in this process with the function
    ``loom user add`` calls (``engine.auth.upsert_user``): each ``loom`` run
    costs 2-3 s of start-up on a busy machine, too much for the short form in
    the test suite (the CLI itself has its own tests).
    """
    loom(db_url, "import", str(ROOT / "apps" / APP), env=env)
    region = {code: r for code, r, *_ in DEALERS}
    specs = [(users.admin, "admin", None), (users.hq, "hq_customer_relations", None)]
    for region_name, names in users.consultants.items():
        specs += [(n, "sales_consultant", users.dealer_of[n]) for n in names]
    specs += [(u, "service_manager", d) for d, u in users.service_manager.items()]
    specs += [(u, "service_advisor", d) for d, u in users.advisors.items()]

    def add(spec):
        name, role, dealer = spec
        args = ["user", "add", name, "--role", role, "--password", PASSWORD]
        if dealer:
            args += ["--attr", f"dealer={dealer}", "--attr", f"region={region[dealer]}"]
        loom(db_url, *args, env=env)
    if not cli_users:
        from engine.auth import upsert_user
        from engine.clock import Clock
        from engine.db import Database
        db, now = Database(db_url), Clock().now()
        try:
            with db.write() as conn:
                for name, role, dealer in specs:
                    attrs = {"dealer": dealer, "region": region[dealer]} if dealer else {}
                    upsert_user(conn, now, name, [role], attrs, password=PASSWORD)
        finally:
            db.dispose()
        return
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(add, specs))


class Cluster:
    """``serves`` × ``loom serve --no-scheduler`` and ``workers`` × ``loom worker`` on one database."""

    def __init__(self, db_url: str, workdir: Path, serves: int = 2, workers: int = 2, env: dict | None = None):
        self.db_url, self.dir = db_url, Path(workdir)
        self.env = env or loom_env()
        self.ports = [free_port() for _ in range(serves)]
        self.serves: list[subprocess.Popen | None] = [None] * serves
        self.workers: list[subprocess.Popen | None] = [None] * workers
        self.outbox_dir = self.dir / "delivered"

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def _spawn(self, args: list[str], log: str, env: dict) -> subprocess.Popen:
        fh = open(self.dir / log, "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", "ui.cli", "--db", self.db_url, *args], cwd=ROOT, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            fh.close()

    def start_serve(self, i: int, wait: bool = True) -> None:
        self.serves[i] = self._spawn(["serve", "--port", str(self.ports[i]), "--no-scheduler"], f"serve{i}.log", self.env)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.serves[i]
            if proc.poll() is not None:
                raise RuntimeError(f"serve {i} exited with {proc.returncode}:\n{self.log(f'serve{i}.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.urls[i]}/openapi.json", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"serve {i} did not answer within {timeout}s:\n{self.log(f'serve{i}.log')}")

    def start_worker(self, i: int) -> None:
        # each worker delivers through the file transport into its own file: a delivery is one JSON line
        env = dict(self.env, LOOM_TRANSPORT=f"file:{self.outbox_dir / f'worker{i}'}")
        self.workers[i] = self._spawn(["worker", "--interval", "0.5"], f"worker{i}.log", env)

    def start(self) -> None:
        for i in range(len(self.workers)):
            self.start_worker(i)
        for i in range(len(self.serves)):
            self.start_serve(i, wait=False)
        for i in range(len(self.serves)):
            self.wait_ready(i)

    def kill(self, proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)   # the process and any uvicorn child: their own session
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop(self) -> None:
        for proc in self.serves + self.workers:
            self.kill(proc, signal.SIGTERM)

    def log(self, name: str) -> str:
        p = self.dir / name
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def deliveries(self) -> Counter:
        """Outbox message id -> how many times a worker's transport delivered it."""
        seen: Counter = Counter()
        for f in self.outbox_dir.glob("*/*.jsonl"):
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    seen[json.loads(line)["id"]] += 1
        return seen


# -- the clients ---------------------------------------------------------------

@dataclasses.dataclass
class Result:
    endpoint: str            # token | lead | complaint | dealer
    status: int              # HTTP status, or 0 for a connection error / timeout
    seconds: float
    marker: str | None = None
    error: str | None = None


@dataclasses.dataclass
class Load:
    results: list[Result] = dataclasses.field(default_factory=list)
    seconds: float = 0.0          # the load phase (after sign-in)
    run: str = ""

    def markers(self, endpoint: str, ok: bool) -> list[str]:
        """Markers of requests answered 201 (ok) -- or of those whose outcome the client can't know (not ok)."""
        return [r.marker for r in self.results if r.endpoint == endpoint and r.marker
                and ((r.status == 201) if ok else (r.status == 0 or r.status >= 500))]

    def errors(self) -> list[Result]:
        return [r for r in self.results if r.status == 0 or r.status >= 400]


async def _sign_in(http: httpx.AsyncClient, base: str, user: str, load: Load) -> str:
    t = time.perf_counter()
    r = await http.post(f"{base}/api/auth/token", data={"username": user, "password": PASSWORD})
    load.results.append(Result("token", r.status_code, time.perf_counter() - t))
    r.raise_for_status()
    return r.json()["access_token"]


def _lead(marker: str, region: str, rnd: random.Random) -> dict:
    return {"name": f"Load {marker[-8:]}", "phone": f"1{rnd.choice('3456789')}{rnd.randrange(10**9):09d}", "source": "hotline_400",
            "region": region, "source_detail": marker, "model_interest": rnd.choice(["s7", "s5", "l9", "x3"]),
            "purchase_timeframe": rnd.choice(["within_1m", "1_3m", "3_6m", "unknown"])}


def _complaint(marker: str, dealer_id: int, rnd: random.Random) -> dict:
    return {"subject": marker, "contact_name": "Load client", "contact_phone": f"139{rnd.randrange(10**8):08d}",
            "dealer": dealer_id, "channel": "hotline_400", "category": rnd.choice(["waiting_time", "pricing", "service_attitude"]),
            "severity": rnd.choice(["low", "medium", "high", "critical"]),
            "description": "客户来电：保养等待时间过长，要求门店说明原因 (load test)"}


async def create_dealers(base: str, users: Users, dealers: int) -> dict[str, int]:
    """The admin creates the dealers through the API; returns code -> record id."""
    load = Load()
    ids = {}
    async with httpx.AsyncClient(timeout=30) as http:
        token = await _sign_in(http, base, users.admin, load)
        for code, region, name, province_city, city in DEALERS[:dealers]:
            r = await http.post(f"{base}/api/apps/{APP}/dealer", headers={"Authorization": f"Bearer {token}"},
                                json={"code": code, "name": name, "region": region, "province_city": province_city, "city": city,
                                      "phone": f"021-5888{code[1:]}0"})
            if r.status_code != 201:
                raise RuntimeError(f"creating dealer {code}: {r.status_code} {r.text}")
            ids[code] = r.json()["id"]
    return ids


async def drive(bases: list[str], users: Users, dealer_ids: dict[str, int], clients: int, duration: float,
                events: list[tuple[float, Callable[[], Any]]] = (), timeout: float = 60.0, seed: int = 1) -> Load:
    """``clients`` concurrent clients creating leads and complaints for ``duration`` seconds.

    Each user signs in once first (``POST /api/auth/token``; tokens are valid
    on every server) -- password hashing is deliberately slow, and 50 clients
    signing in at once would measure argon2, not the API.  Client ``i`` then
    talks to server ``i % len(bases)``; after a connection error
    it moves on to the next server (a load balancer would), and the record it
    was creating counts as *unknown*: it may or may not have been committed.
    ``events`` are ``(seconds after start, fn)`` run in a thread during the
    load (kill a process, restart PostgreSQL...).
    """
    load = Load(run=uuid.uuid4().hex[:8])
    regions = sorted(users.consultants)
    dealers = sorted(dealer_ids)
    async with httpx.AsyncClient(timeout=timeout) as http:       # one sign-in per user, before the clock starts
        tokens = {u: await _sign_in(http, bases[0], u, load) for u in [users.hq, *(users.advisors[d] for d in dealers)]}
    start = time.monotonic()
    stop_at = start + duration

    async def client(i: int) -> None:
        rnd = random.Random(seed * 1000 + i)
        server = i % len(bases)
        dealer = dealers[i % len(dealers)]
        async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=2)) as http:
            seq = 0
            while time.monotonic() < stop_at:
                seq += 1
                marker = f"load:{load.run}:{i}:{seq}"
                if rnd.random() < 0.5:
                    kind, who, body = "lead", users.hq, _lead(marker, rnd.choice(regions), rnd)
                else:
                    kind, who, body = "complaint", users.advisors[dealer], _complaint(marker, dealer_ids[dealer], rnd)
                t = time.perf_counter()
                try:
                    r = await http.post(f"{bases[server]}/api/apps/{APP}/{kind}", json=body,
                                        headers={"Authorization": f"Bearer {tokens[who]}"})
                    res = Result(kind, r.status_code, time.perf_counter() - t, marker,
                                 None if r.status_code == 201 else r.text[:300])
                except httpx.TransportError as exc:
                    res = Result(kind, 0, time.perf_counter() - t, marker, f"{type(exc).__name__}: {exc}"[:300])
                load.results.append(res)
                if res.status == 0 or res.status >= 500:
                    server = (server + 1) % len(bases)
                    await asyncio.sleep(0.1)

    async def fire(at: float, fn: Callable[[], Any]) -> None:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        await asyncio.to_thread(fn)

    await asyncio.gather(*(client(i) for i in range(clients)), *(fire(at, fn) for at, fn in events))
    load.seconds = time.monotonic() - start
    return load


# -- invariants ----------------------------------------------------------------

def wait_quiet(db_url: str, timeout: float = 60) -> bool:
    """Wait until the workers have delivered every queued message that is due."""
    eng = create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with eng.connect() as conn:
                left = conn.execute(text("SELECT count(*) FROM loom_outbox WHERE status = 'queued' AND due_at <= now() AT TIME ZONE 'utc'")).scalar()
            if left == 0:
                return True
            time.sleep(0.5)
        return False
    finally:
        eng.dispose()


def _table(form: str) -> str:
    """The physical table of a CRM form (forms.model.table_name: ``<app>__<form>``)."""
    from forms.model import table_name
    return table_name(APP, form)


def check(db_url: str, load: Load, users: Users, deliveries: Counter | None = None, spread: bool = True,
          redelivery_allowed: bool = False) -> dict[str, tuple[bool, str]]:
    """The invariants, as ``name -> (ok, detail)``.

    ``deliveries``: outbox id -> times a transport delivered it.  Delivery is
    exactly once unless a worker loses its database connection between handing
    a message to the transport and committing it as sent (a PostgreSQL
    restart): then it is delivered again -- at least once, which is why
    messages carry their idempotency key to the gateway -- ``redelivery_allowed``.
    """
    out: dict[str, tuple[bool, str]] = {}
    eng = create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    like = f"load:{load.run}:%"
    try:
        with eng.connect() as conn:
            lead_t, complaint_t, dealer_t = _table("lead"), _table("complaint"), _table("dealer")
            dealer_code = dict(conn.execute(text(f'SELECT id, code FROM "{dealer_t}"')).all())
            leads = conn.execute(text(f'SELECT id, source_detail AS marker, owner, region, dealer, assigned_at, in_pool '
                                      f'FROM "{lead_t}" WHERE source_detail LIKE :m'), {"m": like}).mappings().all()
            complaints = conn.execute(text(f'SELECT id, subject AS marker, owner, dealer, state, response_due_at, resolve_due_at '
                                           f'FROM "{complaint_t}" WHERE subject LIKE :m'), {"m": like}).mappings().all()
            timers = Counter((f, r, k) for f, r, k in conn.execute(text(
                "SELECT form, record_id, kind FROM loom_timers WHERE app = :a AND status = 'pending' AND form IN ('lead', 'complaint')"),
                {"a": APP}).all())
            clocks = Counter((f, r) for f, r in conn.execute(text(
                "SELECT form, record_id FROM loom_sla_clocks WHERE app = :a AND status = 'running'"), {"a": APP}).all())
            msgs = Counter((f, r, t) for f, r, t in conn.execute(text(
                "SELECT form, record_id, template FROM loom_outbox WHERE app = :a AND template IN ('lead_assigned', 'complaint_assigned')"),
                {"a": APP}).all())
            dup_keys = conn.execute(text("SELECT count(*) FROM (SELECT idempotency_key FROM loom_outbox "
                                         "GROUP BY idempotency_key HAVING count(*) > 1) d")).scalar()
            dup_timer_keys = conn.execute(text("SELECT count(*) FROM (SELECT key FROM loom_timers GROUP BY key HAVING count(*) > 1) d")).scalar()
            outbox = dict(conn.execute(text("SELECT status, count(*) FROM loom_outbox GROUP BY status")).all())
            outbox_ids = set(conn.execute(text("SELECT id FROM loom_outbox WHERE status = 'sent'")).scalars())
    finally:
        eng.dispose()

    for kind, rows in (("lead", leads), ("complaint", complaints)):
        per = Counter(r["marker"] for r in rows)
        ok201, unknown = set(load.markers(kind, True)), set(load.markers(kind, False))
        dups = [m for m, n in per.items() if n > 1]
        missing = ok201 - set(per)
        stray = set(per) - ok201 - unknown
        out[f"{kind}s: every 201 present exactly once"] = (not dups and not missing,
                                                           f"{len(ok201)} answered 201, {len(per)} in the database, "
                                                           f"{len(missing)} missing, {len(dups)} duplicated")
        out[f"{kind}s: nothing but what was sent"] = (not stray, f"{len(unknown)} with unknown outcome, "
                                                                 f"{len(set(per) & unknown)} of them committed; {len(stray)} stray")

    bad = [r["marker"] for r in leads if r["owner"] not in users.consultants.get(r["region"], ()) or r["assigned_at"] is None
           or r["in_pool"] or dealer_code.get(r["dealer"]) != users.dealer_of.get(r["owner"])]
    out["leads: each assigned once, to a consultant of its region (dealer follows)"] = (not bad, f"{len(leads)} leads, {len(bad)} wrong")
    if spread:
        per_owner = Counter(r["owner"] for r in leads)
        gaps = {reg: (min(per_owner[u] for u in names), max(per_owner[u] for u in names)) for reg, names in users.consultants.items()}
        out["leads: spread round robin (per region max - min <= 1)"] = (
            all(hi - lo <= 1 for lo, hi in gaps.values()), ", ".join(f"{reg} {lo}..{hi}" for reg, (lo, hi) in sorted(gaps.items())))
    bad = [r["marker"] for r in leads if any(timers[("lead", r["id"], k)] != n for k, n in LEAD_TIMERS.items())
           or clocks[("lead", r["id"])] != LEAD_CLOCKS or msgs[("lead", r["id"], "lead_assigned")] != 1]
    out["leads: 1 follow-up timer (first step of the chain), 1 SLA clock + timer, 1 assignment message each"] = (not bad, f"{len(bad)} wrong")
    bad = [r["marker"] for r in complaints if r["owner"] != users.service_manager.get(dealer_code.get(r["dealer"]))
           or r["state"] != "assigned" or r["response_due_at"] is None or r["resolve_due_at"] is None]
    out["complaints: assigned to their dealer's service manager, SLA due times set"] = (not bad, f"{len(complaints)} complaints, {len(bad)} wrong")
    bad = [r["marker"] for r in complaints if clocks[("complaint", r["id"])] != COMPLAINT_CLOCKS
           or any(timers[("complaint", r["id"], k)] != n for k, n in COMPLAINT_TIMERS.items())
           or msgs[("complaint", r["id"], "complaint_assigned")] != 1]
    out["complaints: 2 SLA clocks, 5 SLA timers, 1 assignment message each"] = (not bad, f"{len(bad)} wrong")
    out["outbox: idempotency keys unique; timer keys unique"] = (dup_keys == 0 and dup_timer_keys == 0,
                                                                   f"{dup_keys} duplicate outbox keys, {dup_timer_keys} duplicate timer keys")
    out["outbox: every message delivered (none queued or failed)"] = (set(outbox) <= {"sent"}, ", ".join(f"{k}={v}" for k, v in sorted(outbox.items())))
    if deliveries is not None:
        twice = [i for i, n in deliveries.items() if n > 1]
        unknown = set(deliveries) - outbox_ids
        how = "at least once" if redelivery_allowed else "exactly once"
        out[f"outbox: each sent message delivered {how} by the workers"] = (
            (redelivery_allowed or not twice) and set(deliveries) == outbox_ids,
            f"{sum(deliveries.values())} deliveries of {len(outbox_ids)} sent messages, {len(twice)} twice, "
            f"{len(outbox_ids - set(deliveries))} never, {len(unknown)} not marked sent")
    return out


# -- the report ----------------------------------------------------------------

def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def table(load: Load) -> str:
    lines = [f"{'endpoint':<40}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    groups = {"POST /api/auth/token": "token", f"POST /api/apps/{APP}/lead": "lead",
              f"POST /api/apps/{APP}/complaint": "complaint"}
    rows = [(label, [r for r in load.results if r.endpoint == ep]) for label, ep in groups.items()]
    rows.append(("all creates", [r for r in load.results if r.endpoint in ("lead", "complaint")]))
    for label, rs in rows:
        ms = sorted(r.seconds * 1000 for r in rs if r.status and r.status < 400)
        errs = sum(1 for r in rs if r.status == 0 or r.status >= 400)
        lines.append(f"{label:<40}{len(rs):>9}{errs:>8}{len(rs) / load.seconds:>8.1f}{_pct(ms, 50):>9.0f}{_pct(ms, 95):>9.0f}"
                     f"{_pct(ms, 99):>9.0f}{(ms[-1] if ms else float('nan')):>9.0f}")
    return "\n".join(lines)


def report(load: Load, checks: dict[str, tuple[bool, str]]) -> str:
    errs = Counter((r.endpoint, r.status, (r.error or "")[:120]) for r in load.errors())
    lines = [table(load), ""]
    lines += [f"  {n}x {ep} {st or 'connection error'}: {msg}" for (ep, st, msg), n in errs.most_common(8)]
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}: {detail}" for name, (ok, detail) in checks.items()]
    return "\n".join(lines)


@dataclasses.dataclass
class Run:
    load: Load
    checks: dict[str, tuple[bool, str]]
    db_url: str

    @property
    def ok(self) -> bool:
        return not self.load.errors() and all(ok for ok, _ in self.checks.values())


def run(server_url: str, *, duration: float, clients: int, serves: int = 2, workers: int = 2, dealers: int = 3,
        workdir: Path | None = None, keep: bool = False, cli_users: bool = True, say: Callable[[str], None] = lambda s: None) -> Run:
    """The whole load test on a fresh database of ``server_url``'s server; dropped afterwards unless ``keep``."""
    db_url = create_database(server_url)
    tmp = None if workdir else tempfile.TemporaryDirectory(prefix="loom-load-")
    work = Path(workdir or tmp.name)
    cluster = None
    try:
        users = plan_users(dealers)
        env = loom_env()
        t = time.monotonic()
        install(db_url, users, env, cli_users)
        say(f"installed the CRM and {len(users.dealer_of) + 2} users in {time.monotonic() - t:.1f}s")
        cluster = Cluster(db_url, work, serves=serves, workers=workers, env=env)
        t = time.monotonic()
        cluster.start()
        say(f"started {serves} serve + {workers} worker processes in {time.monotonic() - t:.1f}s: {', '.join(cluster.urls)}")
        dealer_ids = run_async(create_dealers(cluster.urls[0], users, dealers))
        say(f"{clients} clients for {duration:.0f}s...")
        load = run_async(drive(cluster.urls, users, dealer_ids, clients, duration))
        if not wait_quiet(db_url):
            say("warning: the outbox was not drained within 60s")
        cluster.stop()
        return Run(load, check(db_url, load, users, cluster.deliveries()), db_url)
    finally:
        if cluster is not None:
            cluster.stop()
        if not keep:
            drop_database(db_url)
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", default=os.environ.get("LOOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="PostgreSQL server URL (a fresh database is created on it and dropped afterwards)")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--serves", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dealers", type=int, default=3, choices=range(1, len(DEALERS) + 1))
    ap.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    ap.add_argument("--users-in-process", action="store_true",
                    help="write the users directly instead of one 'loom user add' each (faster set-up)")
    args = ap.parse_args(argv)
    say = lambda s: print(s, flush=True)  # noqa: E731
    result = run(args.pg, duration=args.duration, clients=args.clients, serves=args.serves, workers=args.workers,
                 dealers=args.dealers, keep=args.keep, cli_users=not args.users_in_process, say=say)
    try:
        load_avg = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load_avg = "?"
    say(f"\n{args.clients} clients, {args.duration:.0f}s, {args.serves} serve + {args.workers} worker processes, "
        f"{os.cpu_count()} CPUs, load average {load_avg}" + (f", database kept: {result.db_url}" if args.keep else ""))
    say(report(result.load, result.checks))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
