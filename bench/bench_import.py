"""Benchmark: validating and importing app packages (issue #2).

Measures, on SQLite (and PostgreSQL when LOOM_BENCH_PG_URL is set):
  * `validate` of the bundled CRM (parse + schema + cross-references), first time
    and again with the per-file results cached (what an edit-validate loop sees);
  * `import` of the CRM into an empty database (tables, indexes, stored package);
  * the same for a synthetic package of 50 forms x 20 fields.
Goals: the CRM validates in < 0.3 s and imports in < 2 s on SQLite.

    python bench/bench_import.py
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.checkcache import checks  # noqa: E402
from engine.definitions import compile_package  # noqa: E402
from engine.installer import install  # noqa: E402
from engine.package import SourcePackage, read_package  # noqa: E402
from ui.wiring import build_runtime, load_engines  # noqa: E402

TYPES = ["text", "number", "decimal", "date", "datetime", "select", "boolean", "phone", "email", "textarea"]


def synthetic_package(forms: int = 50, fields: int = 20) -> SourcePackage:
    files = {"app.yaml": b"name: synth\nversion: 1.0.0\ntitle: {zh: \xe5\x90\x88\xe6\x88\x90, en: Synthetic}\n"
                         b"roles: {admin: {permissions: [manage_app]}, user: {}}\n"}
    for i in range(forms):
        lines = [f"label: {{zh: 表单{i}, en: Form {i}}}", "fields:"]
        for j in range(fields):
            t = TYPES[j % len(TYPES)]
            extra = ", options: [a, b, c]" if t == "select" else ""
            if j == 1 and i > 0:
                lines.append(f"  ref_{j}: {{type: link, form: form_{i - 1}}}")
                continue
            lines.append(f"  f_{j}: {{type: {t}, label: {{zh: 字段{j}, en: Field {j}}}{extra}"
                         + (", required_when: \"f_0 != None\"" if j == 5 else "") + "}")
        lines += ["access:", "  - roles: [user]", "    actions: [read]", "    rows: \"owner == current_user.name\""]
        files[f"forms/form_{i}.yaml"] = ("\n".join(lines) + "\n").encode()
    return SourcePackage(files, "<synthetic>")


def timed(fn, repeat: int = 11) -> tuple[float, float]:
    """(median, best) of ``repeat`` runs: the best run is what the code costs when the
    machine lets it run undisturbed (timeit's advice); the median shows the noise."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), min(runs)


def bench_db(label: str, url_factory, crm: SourcePackage, synth: SourcePackage) -> list[tuple]:
    rows = []
    for name, pkg in (("CRM", crm), ("50 forms", synth)):
        times = []
        for _ in range(3):
            url = url_factory()
            rt = build_runtime(url)
            t0 = time.perf_counter()
            install(rt, pkg)
            times.append(time.perf_counter() - t0)
            rt.db.dispose()
        rows.append((f"import {name} ({label})", (statistics.median(times), min(times))))
    return rows


def main() -> None:
    load_engines()
    os.environ.setdefault("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    crm = read_package(ROOT / "apps" / "automotive_crm")
    synth = synthetic_package()
    compile_package(crm)   # warm up imports and compiled schemas, as a long-running process would be

    def cold(pkg):
        checks.use_directory(None)
        checks._memory.clear()   # nothing remembered: every template parsed again
        compile_package(pkg)

    results = [("validate CRM (first time)", timed(lambda: cold(crm))),
               ("validate CRM (again, files cached)", timed(lambda: compile_package(crm))),
               ("validate 50 forms", timed(lambda: cold(synth)))]
    tmp = tempfile.mkdtemp()
    counter = iter(range(100))
    results += bench_db("SQLite", lambda: f"sqlite:///{tmp}/b{next(counter)}.db", crm, synth)
    pg = os.environ.get("LOOM_BENCH_PG_URL")
    if pg:
        from sqlalchemy import create_engine, text
        admin = create_engine(pg.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")

        def fresh():
            name = f"loom_bench_{next(counter)}_{os.getpid()}"
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                c.execute(text(f'CREATE DATABASE "{name}"'))
            return pg.rsplit("/", 1)[0] + "/" + name
        results += bench_db("PostgreSQL", fresh, crm, synth)
    print(f"{'workload':36} {'median s':>9} {'best s':>7}")
    for name, secs in results:
        print(f"{name:36} {secs[0]:9.3f} {secs[1]:7.3f}")


if __name__ == "__main__":
    main()
