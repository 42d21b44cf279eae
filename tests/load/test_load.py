"""The load test in short form: 2 serve + 2 worker processes on one PostgreSQL, 10 clients for 8 s.

Zero errors; every lead and complaint answered 201 is in the database
exactly once, assigned once (leads round robin within their region), with
its timers and SLA clocks once each; outbox idempotency keys unique and every
message delivered once.  ``python bench/load.py --duration 60 --clients 50``
is the full run (figures in docs/load-and-faults.md).
"""
from __future__ import annotations

import pytest

from bench import load as L

pytestmark = pytest.mark.load


def test_two_servers_two_workers_ten_clients_zero_errors_and_every_invariant(pg_server, tmp_path):
    run = L.run(pg_server, duration=8, clients=10, dealers=3, workdir=tmp_path, cli_users=False)
    print("\n" + L.report(run.load, run.checks))
    assert not run.load.errors(), L.report(run.load, run.checks)
    assert all(ok for ok, _ in run.checks.values()), L.report(run.load, run.checks)
    created = [r for r in run.load.results if r.status == 201]
    assert {r.endpoint for r in created} == {"lead", "complaint"} and len(created) >= 20
