"""Assignment strategies, fallbacks, the public pool -- and round robin under real concurrency on PostgreSQL."""
from __future__ import annotations

import collections
import datetime as dt
import threading

import pytest
from sqlalchemy import update

from engine import platform as P
from engine.errors import Conflict, Forbidden
from tests.conftest import T0
from tests.rules.pkg import Session, add_user, rule_log, setup_app


def assign_rules(spec: str, when: str = "owner == None") -> str:
    return f"""
    rules:
      - name: assign_it
        on: {{created: lead}}
        when: "{when}"
        actions:
          - assign: {spec}
    """


def owners(s, rt, n, **data):
    return [s.create("lead", {"name": f"l{i}", **data})["owner"] for i in range(n)]


def test_round_robin_matches_attribute_and_cycles(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{strategy: round_robin, role: sales, match: {region: region}}"))
    for name, region in (("ann", "east"), ("bob", "east"), ("cat", "east"), ("dan", "south")):
        add_user(rt, name, ["sales"], region=region)
    add_user(rt, "eve", ["sales"], region="east")
    with Session(rt).rt.db.write() as conn:           # eve is inactive, fay is away
        conn.execute(update(P.users).where(P.users.c.username == "eve").values(active=False))
    add_user(rt, "fay", ["sales"], region="east")
    with rt.db.write() as conn:
        conn.execute(update(P.users).where(P.users.c.username == "fay").values(away_until=T0 + dt.timedelta(days=1)))
    s = Session(rt)
    assert owners(s, rt, 7, region="east") == ["ann", "bob", "cat", "ann", "bob", "cat", "ann"]
    assert owners(s, rt, 2, region="south") == ["dan", "dan"]
    # someone new joins: served next, then the cycle continues
    add_user(rt, "gus", ["sales"], region="east")
    assert owners(s, rt, 4, region="east") == ["gus", "bob", "cat", "ann"]


def test_round_robin_takes_turns_within_one_transaction(rt, package_dir):
    # an import or a create-record action makes several leads in one transaction: each assignment
    # must read the cursor the one before it saved (that save is held until the next statement)
    setup_app(rt, package_dir, assign_rules("{strategy: round_robin, role: sales}"))
    for name in ("ann", "bob", "cat"):
        add_user(rt, name, ["sales"])
    s = Session(rt)
    with rt.db.write() as conn:
        uow = s.uow(conn)
        got = [rt.services["records"].create(uow, "lead", {"name": f"l{i}"}, trusted=True)["owner"] for i in range(4)]
    assert got == ["ann", "bob", "cat", "ann"]
    assert owners(s, rt, 2) == ["bob", "cat"]           # and the saved cursor goes on from there


def test_round_robin_ties_go_to_fewest_open(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{strategy: round_robin, role: sales}"))
    add_user(rt, "ann", ["sales"])
    add_user(rt, "bob", ["sales"])
    s = Session(rt)
    s.create("lead", {"name": "pre"}, owner="ann")          # ann already has an open lead (rule skips: owner set)
    assert owners(s, rt, 3) == ["bob", "ann", "bob"]


def test_least_open_counts_only_open_records(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{strategy: least_open, role: sales, open_when: \"level != 'C' or level == None\"}"))
    add_user(rt, "ann", ["sales"])
    add_user(rt, "bob", ["sales"])
    s = Session(rt)
    for i in range(3):
        s.create("lead", {"name": f"a{i}", "level": "C"}, owner="ann")      # closed: don't count
    s.create("lead", {"name": "b", "level": "H"}, owner="bob")
    assert owners(s, rt, 3) == ["ann", "bob", "ann"]      # 0 v 1 open; 1 v 1: round robin; 1 v 2
    assert rule_log(rt)[0]["actions"][0]["how"] == "least_open (0 open)"


def test_weighted_is_smooth_and_proportional(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{strategy: weighted, role: sales, weights: {ann: 3, bob: 2}, weight_attribute: capacity}"))
    add_user(rt, "ann", ["sales"])
    add_user(rt, "bob", ["sales"])
    add_user(rt, "cat", ["sales"], capacity=1)
    add_user(rt, "dan", ["sales"], capacity=0)               # weight 0: never
    got = owners(Session(rt), rt, 12)
    assert collections.Counter(got) == {"ann": 6, "bob": 4, "cat": 2}
    assert got[:6] == ["ann", "bob", "ann", "cat", "bob", "ann"]    # interleaved, not ann-ann-ann


def test_match_with_where_and_fallbacks(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("""
        strategy: match
        role: sales
        match: {region: region}
        where: "dealer == record.note"
        fallback: {role: manager, match: {region: region}, fallback: {user: "'boss'"}}
    """.replace("\n", "\n          ")))
    add_user(rt, "ann", ["sales"], region="east", dealer="D1")
    add_user(rt, "bob", ["sales"], region="east", dealer="D2")
    add_user(rt, "meg", ["manager"], region="south")
    add_user(rt, "boss", ["admin"])
    s = Session(rt)
    assert owners(s, rt, 2, region="east", note="D2") == ["bob", "bob"]
    assert owners(s, rt, 1, region="south", note="D9") == ["meg"]
    assert owners(s, rt, 1, region="north", note="D9") == ["boss"]


def test_working_hours_uses_calendars_in_app_timezone(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{strategy: working_hours, role: sales, fallback: {role: manager}}"))
    add_user(rt, "day", ["sales"])                          # default calendar: Mon-Fri 09-18
    add_user(rt, "eve", ["sales"], calendar="late")          # every day 14-23
    add_user(rt, "mgr", ["manager"])
    s = Session(rt)
    assert owners(s, rt, 2) == ["day", "day"]                 # Monday 10:00 Shanghai
    rt.clock.set(T0 + dt.timedelta(hours=6))                  # 16:00: both on duty
    assert sorted(owners(s, rt, 2)) == ["day", "eve"]
    rt.clock.set(T0 + dt.timedelta(hours=11))                 # 21:00: only eve
    assert owners(s, rt, 2) == ["eve", "eve"]
    rt.clock.set(T0 + dt.timedelta(hours=14))                 # 00:00: nobody -> manager
    assert owners(s, rt, 1) == ["mgr"]


def test_no_candidate_goes_to_pool(rt, package_dir):
    setup_app(rt, package_dir, assign_rules("{role: sales, match: {region: region}, pool: true}"))
    s = Session(rt)
    lead = s.create("lead", {"name": "x", "region": "north"})
    assert lead["owner"] is None and lead["in_pool"] is True and lead["pool_entered_at"] == T0
    assert rule_log(rt)[0]["actions"][0]["reason"] == "no candidate (sales)"


POOL_RULES = """
rules:
  - name: back_to_pool
    on: {changed: lead, fields: [level]}
    when: "level == 'C'"
    actions: [return_to_pool]
"""


def test_pool_return_and_claim_with_cap(rt, package_dir):
    from rules.actions import compile_actions  # noqa: F401  (API presence)
    setup_app(rt, package_dir, POOL_RULES)
    add_user(rt, "ann", ["sales"])
    add_user(rt, "bob", ["sales"])
    s = Session(rt)
    leads = [s.create("lead", {"name": f"l{i}"}, owner="bob") for i in range(4)]
    for lead in leads:
        s.update("lead", lead["id"], {"level": "C"})
    got = s.load("lead", leads[0]["id"])
    assert got["owner"] is None and got["in_pool"] is True and got["pool_entered_at"] == T0
    claim = _claim_action(rt, cap=2)
    ann = Session(rt, user=_user(rt, "ann"))
    assert _run(rt, ann, leads[0], claim)[0]["claimed_by"] == "ann"
    assert s.load("lead", leads[0]["id"])["owner"] == "ann"
    with pytest.raises(Conflict):                           # already taken
        _run(rt, Session(rt, user=_user(rt, "bob")), leads[0], claim)
    _run(rt, ann, leads[1], claim)
    with pytest.raises(Forbidden) as exc:                   # cap 2 reached
        _run(rt, ann, leads[2], claim)
    assert "limit is 2" in str(exc.value)
    # a claimed lead going back to the pool frees a slot
    s.update("lead", leads[1]["id"], {"level": "B"})
    s.update("lead", leads[1]["id"], {"level": "C"})
    assert _run(rt, ann, leads[2], claim)[0]["open_claims"] == 2


def _user(rt, name):
    from engine.auth import get_user
    with rt.db.read() as conn:
        return get_user(conn, name)


def _claim_action(rt, cap):
    """Compile `claim_from_pool` the way the flows engine does for its `claim` transition."""
    from engine.definitions import CompileContext, SourceFile
    from engine.yamlpos import load_yaml
    from rules.actions import compile_actions
    app = rt.app("shop")
    ctx = CompileContext(app.package)
    for p in app.package.yaml_files("forms"):
        ctx.files[p] = SourceFile(p, load_yaml(app.package.text(p)))
    ctx.app_data = load_yaml(app.package.text("app.yaml")).data
    src = f"actions: [{{claim_from_pool: {{cap: {cap}}}}}]"
    ctx.files["flows/lead.yaml"] = SourceFile("flows/lead.yaml", load_yaml(src))
    actions = compile_actions(ctx, "flows/lead.yaml", ("actions",), ctx.files["flows/lead.yaml"].data["actions"], "lead")
    assert not ctx.problems.items
    return actions


def _run(rt, session, lead, actions):
    from rules.actions import run_actions
    with rt.db.write() as conn:
        uow = session.uow(conn)
        rec = rt.services["records"].load(uow, "lead", lead["id"])
        return run_actions(uow, "lead", rec, actions, "transition:claim")


@pytest.mark.slow
def test_round_robin_is_exact_under_concurrency(db_url, make_runtime, package_dir):
    """200 leads created in parallel transactions among 4 consultants: exactly 50 each."""
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrency is PostgreSQL's job (SQLite serialises writers)")
    rt = make_runtime(db_url)
    setup_app(rt, package_dir, assign_rules("{strategy: round_robin, role: sales, match: {region: region}}")
              .replace("- assign:", "- set: {assigned_at: \"now()\"}\n          - assign:"))
    for name in ("c1", "c2", "c3", "c4"):
        add_user(rt, name, ["sales"], region="east")
    add_user(rt, "c5", ["sales"], region="south")
    errors: list = []
    barrier = threading.Barrier(16)

    def worker(k: int) -> None:
        s = Session(rt)
        try:
            barrier.wait()
            for i in range(k, 200, 16):
                s.create("lead", {"name": f"lead {i}", "region": "east"})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = Session(rt).rows(rt.services["records"].table(rt.app("shop"), "lead"))
    assert len(rows) == 200
    assert collections.Counter(r["owner"] for r in rows) == {"c1": 50, "c2": 50, "c3": 50, "c4": 50}
    fired = rule_log(rt, rule="assign_it")
    assert len(fired) == 200 and len({r["record_id"] for r in fired}) == 200     # none twice
