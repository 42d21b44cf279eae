"""Time per ``notify``: the CRM's ``lead_assigned`` message to a lead's owner, measured two ways.

    python bench/bench_notify.py [--n 500] [--repeat 5] [--db sqlite|postgresql://...] [--profile]

* ``in rules`` -- N leads are created one per transaction through the record service (as
  ``bench_rules.py`` does, CRM package with its rules); the time spent inside the ``notify`` action
  (``rules.notify.send``: recipients, template context, render, idempotency key, outbox INSERT) is
  summed per lead.
* ``direct`` -- ``send()`` called N times in one transaction on one lead, each with a new occurrence
  (so each call writes a row), then N times again with the same occurrences (each a duplicate).

Timings are per call in microseconds, best and median of ``--repeat`` rounds (the machine is
shared; the best round is the least disturbed), as wall clock and as this process's CPU time (which
other load disturbs less; on PostgreSQL it leaves out the server's side of the INSERT).  ``--profile`` prints a cProfile of one direct round.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_rules import T0, _database, _lead, _package  # noqa: E402


def _setup(kind: str, tmp: Path):
    import ui.wiring
    from engine.auth import SYSTEM_USER, upsert_user
    from engine.clock import Clock
    from engine.installer import install
    from engine.package import read_package
    from engine.uow import UnitOfWork
    url, drop = _database(kind, tmp)
    rt = ui.wiring.build_runtime(url, Clock(fixed=T0))
    install(rt, read_package(_package(tmp, "crm_with", True)))
    with rt.db.write() as conn:
        for u in ("c1", "c2", "c3", "c4"):
            upsert_user(conn, T0, u, ["sales_consultant"], {"region": "east", "dealer": "D001"})
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, rt.app("crm_with"), SYSTEM_USER, T0)
        rt.services["records"].create(uow, "dealer", {
            "code": "D001", "name": "上海浦东智行4S店", "region": "east", "province_city": "上海市/上海市/浦东新区",
            "city": "上海", "phone": "021-58880000"}, trusted=True)
    return rt, drop


def in_rules(rt, n: int, start: int) -> tuple[list[float], list[float]]:
    """Seconds inside the notify action per created lead: wall clock, and this process's CPU time."""
    from engine.auth import SYSTEM_USER
    from engine.uow import UnitOfWork
    from rules.actions import ACTIONS
    action = ACTIONS["notify"]
    spent = [0.0, 0.0]
    original = type(action).run

    def timed(self, rc, params):
        t, c = time.perf_counter(), time.process_time()
        try:
            return original(self, rc, params)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += time.process_time() - c
    type(action).run = timed
    out, cpu = [], []
    try:
        app = rt.app("crm_with")
        records = rt.services["records"]
        for i in range(start, start + n):
            spent[0] = spent[1] = 0.0
            with rt.db.write() as conn:
                uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now())
                rec = records.create(uow, "lead", _lead(i, False), trusted=True)
            assert rec["owner"], "the rules did not run"
            out.append(spent[0])
            cpu.append(spent[1])
    finally:
        type(action).run = original
    return out, cpu


def direct(rt, n: int, round_no: int, profile: bool = False) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per send() writing a row, and per send() finding a duplicate."""
    from engine.auth import SYSTEM_USER
    from engine.uow import UnitOfWork
    from rules.actions.base import RunContext
    from rules.notify import NotifyParams, RecipientSpec, send
    app = rt.app("crm_with")
    params = NotifyParams("lead_assigned", (RecipientSpec("owner"),))
    prof = cProfile.Profile() if profile else None
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now())
        rec = rt.services["records"].create(uow, "lead", _lead(900_000 + round_no, False), trusted=True)
        times = []
        for phase in ("new", "duplicate"):
            rcs = [RunContext(uow, "lead", rec, trigger="created", source="bench", occurrence=f"r{round_no}:{i}")
                   for i in range(n)]
            users: dict = {}
            for rc in rcs:
                rc._users = users             # one run's user cache, as the assign action leaves it
                rc.env()                      # built by the action's 'when' guard before notify runs
            rcs[0].user(rec["owner"])
            if prof and phase == "new":
                prof.enable()
            t, c = time.perf_counter(), time.process_time()
            for rc in rcs:
                res = send(rc, params)
            times.append(((time.perf_counter() - t) / n, (time.process_time() - c) / n))
            if prof and phase == "new":
                prof.disable()
            assert res["messages"][0]["status"] == ("queued" if phase == "new" else "duplicate"), res
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db", action="append")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    for kind in args.db or ["sqlite"]:
        with tempfile.TemporaryDirectory() as d:
            rt, drop = _setup(kind, Path(d))
            try:
                in_rules(rt, 50, 0)                          # warm-up: templates compiled, statements cached
                direct(rt, 50, 99)
                rounds_rules, rounds_new, rounds_dup = [], [], []
                for r in range(args.repeat):
                    wall, cpu = in_rules(rt, args.n, 1000 + r * args.n)
                    rounds_rules.append((statistics.mean(wall), statistics.mean(cpu)))
                    new, dup = direct(rt, args.n, r)
                    rounds_new.append(new)
                    rounds_dup.append(dup)
                if args.profile:
                    direct(rt, args.n, 50, profile=True)
            finally:
                rt.db.dispose()
                drop()
        name = "sqlite" if kind == "sqlite" else "postgresql"
        print(f"\n{name}: {args.n} calls per round, {args.repeat} rounds; microseconds per notify "
              f"(wall clock; CPU = this process only, less disturbed by other load)")
        print(f"  {'':<22}{'wall best':>10}{'median':>9}{'CPU best':>10}{'median':>9}")
        for label, rounds in (("in rules (per lead)", rounds_rules), ("direct, new row", rounds_new),
                              ("direct, duplicate", rounds_dup)):
            wall = [x[0] * 1e6 for x in rounds]
            cpu = [x[1] * 1e6 for x in rounds]
            print(f"  {label:<22}{min(wall):10.1f}{statistics.median(wall):9.1f}{min(cpu):10.1f}{statistics.median(cpu):9.1f}")


if __name__ == "__main__":
    main()
