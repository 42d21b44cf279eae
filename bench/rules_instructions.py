"""Rules overhead per CRM lead in machine instructions (valgrind/callgrind) -- a figure that does
not move with the machine's load, unlike the milliseconds of ``bench_rules.py``.

    python bench/rules_instructions.py [--n 100] [--db sqlite|postgresql://postgres@127.0.0.1:5432/postgres]

The same set-up as ``bench_rules.py`` (the CRM package with and without ``rules/``, four
consultants, one dealer).  For each variant a child process is run under callgrind with
instrumentation off; after 50 warm-up creates it switches instrumentation on
(``callgrind_control -i on``), creates N leads, one transaction each, and exits.  The
instructions counted, divided by N, are the cost of one create in this process: Python, SQLAlchemy,
the drivers and, on SQLite, the database's own work (in-process).  PostgreSQL's server work is not
in it (another process).  Runs with PYTHONHASHSEED=0: two runs of the same code agree within 0.5%.

Needs valgrind (Debian: ``apt install valgrind``); callgrind runs the code ~50x slower, so N is small.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
WARM = 50


def child(kind: str, n: int, with_rules: bool) -> None:
    """Runs under callgrind: set up, warm up, count N creates."""
    import bench_rules as br
    import ui.wiring
    from engine.auth import SYSTEM_USER, upsert_user
    from engine.clock import Clock
    from engine.installer import install
    from engine.package import read_package
    from engine.uow import UnitOfWork
    tmp = Path(tempfile.mkdtemp())
    url, drop = br._database(kind, tmp)
    try:
        rt = ui.wiring.build_runtime(url, Clock(fixed=br.T0))
        name = "crm_with" if with_rules else "crm_without"
        install(rt, read_package(br._package(tmp, name, with_rules)))
        with rt.db.write() as conn:
            for u in ("c1", "c2", "c3", "c4"):
                upsert_user(conn, br.T0, u, ["sales_consultant"], {"region": "east", "dealer": "D001"})
            uow = UnitOfWork(rt, conn, rt.app(name), SYSTEM_USER, br.T0)
            rt.services["records"].create(uow, "dealer", {"code": "D001", "name": "上海浦东智行4S店", "region": "east",
                                                          "province_city": "上海市/上海市/浦东新区", "city": "上海",
                                                          "phone": "021-58880000"}, trusted=True)
        app, records = rt.app(name), rt.services["records"]

        def create(i: int) -> None:
            with rt.db.write() as conn:
                uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now())
                records.create(uow, "lead", br._lead(i, False), trusted=True)
        for i in range(WARM):
            create(i)
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=True)
        for i in range(WARM, WARM + n):
            create(i)
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True, check=True)
        rt.db.dispose()
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


def count(kind: str, n: int, with_rules: bool) -> int:
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={d}/out",
               sys.executable, __file__, "--child", "with" if with_rules else "without", "--n", str(n), "--db", kind]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        m = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or m is None:
            raise SystemExit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--db", action="append", help="sqlite or a PostgreSQL server URL (repeatable)")
    ap.add_argument("--child", choices=("with", "without"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    dbs = args.db or ["sqlite"] + ([os.environ["LOOM_TEST_PG_URL"]] if os.environ.get("LOOM_TEST_PG_URL") else [])
    if args.child:
        child(dbs[0], args.n, args.child == "with")
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt install valgrind (this benchmark counts instructions with callgrind)")
    for kind in dbs:
        with_rules, without = count(kind, args.n, True) / args.n, count(kind, args.n, False) / args.n
        label = "sqlite" if kind == "sqlite" else "postgresql (this process only; the server's work is not counted)"
        print(f"{label}: {args.n} leads per variant")
        print(f"  instructions per create: without rules {without / 1e6:.2f}M, with rules {with_rules / 1e6:.2f}M; "
              f"rules overhead {(with_rules - without) / 1e6:.2f}M")


if __name__ == "__main__":
    main()
