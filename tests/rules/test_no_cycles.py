"""A request's objects go when the request ends.

Python frees an object as soon as nothing refers to it -- unless it sits in a reference cycle,
which only the cyclic garbage collector reclaims, in pauses that grow with what the cycle holds
(a unit of work holds the connection, the records, the rules' run contexts...).  Before this test,
every CRM lead left ~70 such objects behind (the expressions' ``exists()`` held its unit of work,
``owner_user`` and linked records held their run context): 0.13 collections per lead, and the
rules' overhead paid for them.  Here the CRM's everyday writes run with the collector off, and
nothing of Loom's may be left for it -- nor, from the requests, a SQLAlchemy query construct: a
consultant's read once built its row filter's join alias per request, copying the dealer table's
columns into a cycle.
"""
from __future__ import annotations

import datetime as dt
import gc

from tests.conftest import T0
from tests.rules.crm_helpers import APP, crm  # noqa: F401  (fixture)
from tests.rules.pkg import tick

LOOM = ("engine.", "forms.", "flows.", "rules.", "reports.", "ui.")
QUERIES = ("sqlalchemy.sql.",)      # a request's queries are built once, not per request


def _left_for_the_collector(work, modules: tuple = LOOM) -> list[str]:
    """Run ``work`` with the collector off; the types of objects of ``modules`` only a collection would free."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        work()
        gc.collect()
        return sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                       if (type(o).__module__ or "").startswith(modules)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_the_crm_everyday_writes_leave_no_reference_cycles(api, crm):
    h = crm["h"]
    url = f"/api/apps/{APP}/lead"
    first = api.http.post(url, headers=h["hq.cr1"], json={"name": "客户0", "phone": "13800138000", "region": "east",
                                                           "source": "website"})
    assert first.status_code == 201, first.text       # (the first request fills caches: not counted)
    made: dict = {}

    def work():
        for i in range(1, 4):            # scored, assigned round robin, dealer looked up, consultant told
            r = api.http.post(url, headers=h["hq.cr1"], json={
                "name": f"客户{i}", "phone": f"1380013800{i}", "region": "east", "source": "walk_in",
                "test_drive_booked": True, "model_interest": "s7"})
            assert r.status_code == 201, r.text
            made.setdefault("leads", []).append(r.json())
        lead = made["leads"][0]
        owner = h[lead["owner"]]
        r = api.http.patch(f"{url}/{lead['id']}", headers=owner, json={"budget": 200000})
        assert r.status_code == 200, r.text
        r = api.http.post(f"/api/apps/{APP}/follow_up", headers=owner, json={     # updates its lead
            "lead": lead["id"], "outcome": "interested", "notes": "客户说周末到店看车", "next_action": "call",
            "next_action_at": (T0 + dt.timedelta(days=2)).isoformat(), "level_after": "A"})
        assert r.status_code == 201, r.text
        r = api.http.post(f"/api/apps/{APP}/customer", headers=h["d001.cr1"], json={
            "name": "王伟", "phone": "13812345678", "region": "east", "dealer": crm["dealer"],
            "customer_type": "individual"})
        assert r.status_code == 201, r.text
        r = api.http.post(f"/api/apps/{APP}/survey", headers=h["d001.cr1"], json={    # opens a complaint
            "customer": r.json()["id"], "dealer": crm["dealer"], "subject_kind": "sales", "channel": "sms",
            "score": 2, "comment": "交车一拖再拖"})
        assert r.status_code == 201, r.text
        others = [n for n in ("d001.sc1", "d001.sc2") if n != lead["owner"]]
        r = api.http.get(f"{url}/{lead['id']}", headers=h[others[0]])      # row access joins the dealer
        assert r.status_code == 404, r.text
        assert api.http.get(url, headers=h[others[0]]).status_code == 200

    def timers():
        tick(api.rt, T0 + dt.timedelta(days=3, minutes=1))      # follow-up reminders fire

    assert _left_for_the_collector(work, LOOM + QUERIES) == []
    # (the timers' run includes the daily cron rules, whose `for_each` filters are made into SQL
    # when they fire -- once a day, not per request)
    assert _left_for_the_collector(timers) == []
    lead = api.http.get(f"{url}/{made['leads'][0]['id']}", headers=api.login("root")).json()
    assert lead["follow_up_count"] == 1 and float(lead["budget"]) == 200000      # (the work was done)
