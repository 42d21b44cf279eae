"""End to end on the automotive CRM package: scenario 1 (lead assignment and follow-up discipline)
and scenario 3 (a low survey score opens a complaint), through the HTTP API and the scheduler."""
from __future__ import annotations

import datetime as dt

from engine import platform as P
from tests.conftest import T0
from tests.rules.crm_helpers import APP, crm  # noqa: F401  (fixture)
from tests.rules.pkg import history, rule_log, tick

MIN = dt.timedelta(minutes=1)


def _rows(rt, table, *where):
    from sqlalchemy import select
    with rt.db.read() as conn:
        q = select(table)
        for w in where:
            q = q.where(w)
        return [dict(r) for r in conn.execute(q.order_by(table.c.id)).mappings()]


def _messages(rt, template):
    return _rows(rt, P.outbox, P.outbox.c.template == template)


def test_scenario_1_lead_assignment_and_follow_up_discipline(api, crm):
    rt, h = api.rt, crm["h"]
    url = f"/api/apps/{APP}/lead"
    leads = []
    for i, extra in enumerate([{"source": "walk_in", "test_drive_booked": True, "model_interest": "s7"},
                               {"source": "website", "purchase_timeframe": "1_3m"},
                               {"source": "auto_show", "test_drive_booked": True}]):
        r = api.http.post(url, headers=h["hq.cr1"], json={"name": f"客户{i}", "phone": f"1380013800{i}", "region": "east", **extra})
        assert r.status_code == 201, r.text
        leads.append(r.json())
    # assigned in the same request, round robin among the east consultants; dealer from the owner
    assert [x["owner"] for x in leads] == ["d001.sc1", "d001.sc2", "d001.sc1"]
    assert all(x["dealer"] == crm["dealer"] for x in leads)
    assert all(x["assigned_at"] == "2026-11-23T02:00:00Z" for x in leads)
    assert [(x["score"], x["level"]) for x in leads] == [(95, "H"), (60, "B"), (75, "A")]
    assigned = _messages(rt, "lead_assigned")
    assert [(m["recipient"], m["channel"], m["status"]) for m in assigned] == [
        ("d001.sc1", "inapp", "queued"), ("d001.sc2", "inapp", "queued"), ("d001.sc1", "inapp", "queued")]
    assert "客户0" in assigned[0]["rendered"] and "H级" in assigned[0]["rendered"]
    kinds = [x["kind"] for x in history(rt, "lead", leads[0]["id"])]
    assert kinds.count("rule") == 2                              # scored, assigned
    # a lead of another region goes to that region
    r = api.http.post(url, headers=h["hq.cr1"], json={"name": "南方客户", "phone": "13900000000", "region": "south", "source": "app"})
    south = r.json()
    assert south["owner"] == "d003.sc1" and south["dealer"] == crm["south"] and south["level"] == "C"

    # day 1: the consultant follows lead 1 (B lead) up
    rt.clock.set(T0 + dt.timedelta(days=1))
    h = {n: api.login(n) for n in h}                              # tokens last 12 hours
    r = api.http.post(f"/api/apps/{APP}/follow_up", headers=h["d001.sc2"], json={
        "lead": leads[1]["id"], "outcome": "interested", "notes": "客户对S5很感兴趣，周末到店", "next_action": "call",
        "next_action_at": (T0 + dt.timedelta(days=3)).isoformat(), "level_after": "A"})
    if r.status_code == 422 and "next_action" in r.text:
        r = api.http.post(f"/api/apps/{APP}/follow_up", headers=h["d001.sc2"], json={
            "lead": leads[1]["id"], "outcome": "no_answer", "notes": "电话未接通，稍后再打", "level_after": "A"})
    assert r.status_code == 201, r.text
    lead1 = api.http.get(f"{url}/{leads[1]['id']}", headers=h["root"]).json()
    assert lead1["last_follow_up_at"] == "2026-11-24T02:00:00Z" and lead1["follow_up_count"] == 1 and lead1["level"] == "A"

    # +3 days: reminders for the two leads nobody followed up
    tick(rt, T0 + dt.timedelta(days=3) + MIN)
    rem = _messages(rt, "lead_follow_up_reminder")
    assert sorted((m["recipient"], m["record_id"]) for m in rem) == [
        ("d001.sc1", leads[0]["id"]), ("d001.sc1", leads[2]["id"]), ("d003.sc1", south["id"])]

    # +7 days: H/A leads still without follow-up -> the dealer's sales manager
    tick(rt, T0 + dt.timedelta(days=7) + MIN)
    # (the lead workflow's first-contact SLA sends lead_escalation too: look at what this rule sent)
    esc = rule_log(rt, APP, rule="lead_escalation_7d")
    assert [(x["record_id"], [m["to"] for m in x["actions"][0]["messages"]]) for x in esc] == [
        (leads[0]["id"], ["d001.sm"]), (leads[2]["id"], ["d001.sm"])]
    assert {m["record_id"] for m in _messages(rt, "lead_escalation") if m["recipient"] == "d001.sm"} >= {leads[0]["id"], leads[2]["id"]}

    # +15 days: back to the public pool, the former owner is told
    tick(rt, T0 + dt.timedelta(days=15) + MIN)
    h = {n: api.login(n) for n in h}
    for lead in (leads[0], leads[2]):
        got = api.http.get(f"{url}/{lead['id']}", headers=h["root"]).json()
        assert got["owner"] is None and got["in_pool"] is True and got["pool_reason"] == "no_follow_up"
        assert got["pool_entered_at"] == "2026-12-08T02:00:00Z" and got["pool_return_count"] == 1
    kept = api.http.get(f"{url}/{leads[1]['id']}", headers=h["root"]).json()
    assert kept["owner"] == "d001.sc2" and kept["in_pool"] is False
    back = _messages(rt, "lead_returned_to_pool")
    assert sorted((m["recipient"], m["record_id"]) for m in back) == [
        ("d001.sc1", leads[0]["id"]), ("d001.sc1", leads[2]["id"]), ("d003.sc1", south["id"])]
    log = rule_log(rt, APP, record_id=leads[0]["id"], form="lead")
    assert [x["rule"] for x in log] == ["score_new_lead", "assign_new_lead", "lead_follow_up_reminder_3d",
                                        "lead_escalation_7d", "lead_back_to_pool_15d"]

    # another consultant claims it (the lead workflow's `claim` -> claim_from_pool): the clock restarts
    r = api.http.post(f"{url}/{leads[0]['id']}/transitions/claim", headers=h["d001.sc2"], json={})
    assert r.status_code == 200, r.text
    got = api.http.get(f"{url}/{leads[0]['id']}", headers=h["root"]).json()
    assert got["owner"] == "d001.sc2" and got["in_pool"] is False and got["claimed_by_pool"] is True
    assert got["assigned_at"] == "2026-12-08T02:01:00Z"
    again = api.http.post(f"{url}/{leads[0]['id']}/transitions/claim", headers=h["d001.sc1"], json={})
    assert again.status_code in (403, 404, 409), again.text                # no longer in the pool (nor visible)
    tick(rt, T0 + dt.timedelta(days=18, minutes=2))
    assert ("d001.sc2", leads[0]["id"]) in {(m["recipient"], m["record_id"]) for m in _messages(rt, "lead_follow_up_reminder")}


def test_scenario_3_low_survey_opens_a_complaint(api, crm):
    rt, h = api.rt, crm["h"]
    r = api.http.post(f"/api/apps/{APP}/customer", headers=h["d001.cr1"], json={
        "name": "王伟", "phone": "13812345678", "region": "east", "dealer": crm["dealer"], "customer_type": "individual"})
    assert r.status_code == 201, r.text
    customer = r.json()
    good = api.http.post(f"/api/apps/{APP}/survey", headers=h["d001.cr1"], json={
        "customer": customer["id"], "dealer": crm["dealer"], "subject_kind": "sales", "channel": "sms", "score": 4})
    assert good.status_code == 201, good.text
    assert _rows(rt, rt.services["records"].table(rt.app(APP), "complaint")) == []
    bad = api.http.post(f"/api/apps/{APP}/survey", headers=h["d001.cr1"], json={
        "customer": customer["id"], "dealer": crm["dealer"], "subject_kind": "sales", "channel": "sms", "score": 2,
        "comment": "销售顾问态度敷衍，交车一拖再拖"})
    assert bad.status_code == 201, bad.text
    complaints = api.http.get(f"/api/apps/{APP}/complaint", headers=h["root"]).json()["items"]
    assert len(complaints) == 1
    c = complaints[0]
    assert (c["severity"], c["channel"], c["customer"], c["dealer"], c["survey"]) == (
        "high", "survey", customer["id"], crm["dealer"], bad.json()["id"])
    assert c["region"] == "east" and c["category"] == "service_attitude"
    assert "交车一拖再拖" in c["description"] and c["number"]
    alerts = _messages(rt, "complaint_from_survey")
    assert [(m["recipient"], m["recipient_kind"], m["status"]) for m in alerts] == [("rm.east", "user", "queued")]
    assert "王伟" in alerts[0]["rendered"] and "2分" in alerts[0]["rendered"]
    line = [x for x in history(rt, "survey", bad.json()["id"]) if x["kind"] == "rule"][0]
    assert line["changes"]["rule"] == "low_survey_complaint"
    assert line["changes"]["actions"][0] == {"action": "create", "form": "complaint", "id": c["id"]}


def test_a_validation_sees_the_dealer_the_rules_looked_up_before_the_insert(api, crm):
    """The CRM's lead validation reads ``dealer`` (a consultant may only register leads of their own
    dealer); the assignment rule's dealer look-up is left to the INSERT, but a check that reads it
    runs it first.  A D003 sales manager entering an east lead (assigned to a D001 consultant) is
    refused, and nothing is written."""
    rt, h = api.rt, crm["h"]
    url = f"/api/apps/{APP}/lead"
    count = len(_rows(rt, P.outbox))
    r = api.http.post(url, headers=h["d003.sm"], json={"name": "跨店客户", "phone": "13800138999", "region": "east", "source": "walk_in"})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "dealer" and "只能选择您所在的经销商" in err["message"]
    records = rt.services["records"]
    assert _rows(rt, records.table(rt.app(APP), "lead")) == [] and len(_rows(rt, P.outbox)) == count
    ok = api.http.post(url, headers=h["d003.sm"], json={"name": "本店客户", "phone": "13800138998", "region": "south", "source": "walk_in"})
    assert ok.status_code == 201 and ok.json()["dealer"] == crm["south"], ok.text
