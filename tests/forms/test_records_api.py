"""Records through the JSON API: validation, permissions, PII, history (both databases)."""
from __future__ import annotations

from sqlalchemy import text

from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES


def setup_app(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    return {
        "admin": api.user("root", ["admin"]),
        "east": api.user("agent_e", ["agent"], {"region": "east"}),
        "south": api.user("agent_s", ["agent"], {"region": "south"}),
        "manager": api.user("boss", ["manager"]),
    }


def test_create_returns_record_with_defaults_and_system_columns(api):
    h = setup_app(api)
    r = api.http.post("/api/apps/mini/customer", json={"name": "王芳", "phone": "13912345678", "region": "east"}, headers=h["east"])
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["id"] > 0 and rec["name"] == "王芳" and rec["tier"] == "regular"
    assert rec["created_by"] == "agent_e" and rec["created_at"].endswith("Z") and rec["state"] is None
    assert rec["phone"] == "139****5678"      # agents lack view_pii
    full = api.http.get(f"/api/apps/mini/customer/{rec['id']}", headers=h["manager"]).json()
    assert full["phone"] == "13912345678"


def test_per_field_errors_all_at_once(api):
    h = setup_app(api)
    r = api.http.post("/api/apps/mini/customer", json={"phone": "abc123", "region": "west", "visits": -1, "colour": "red"},
                      headers=h["admin"])
    assert r.status_code == 422
    errors = {(e["field"], e["code"]) for e in r.json()["errors"]}
    assert ("name", "required") in errors
    assert ("colour", "unknown_field") in errors
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"phone", "region", "visits"} <= fields
    assert all(e["message"] for e in r.json()["errors"])


def test_a_refused_value_is_one_error_not_also_required(api):
    """A required field whose value is refused gets that reason only -- not also 'required', which
    would tell the user the field is empty when they did fill it in."""
    h = setup_app(api)
    r = api.http.post("/api/apps/mini/customer", json={"name": "名" * 21, "region": "east"}, headers=h["admin"])
    assert r.status_code == 422
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [("name", "too_long")]
    edit = api.http.post("/api/apps/mini/customer", json={"name": "王芳", "region": "east"}, headers=h["admin"]).json()
    r = api.http.patch(f"/api/apps/mini/customer/{edit['id']}", json={"name": "名" * 21}, headers=h["admin"])
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [("name", "too_long")]


def test_unique_pii_phone_and_exact_search(api):
    h = setup_app(api)
    body = {"name": "李雷", "phone": "13800000001", "region": "east"}
    assert api.http.post("/api/apps/mini/customer", json=body, headers=h["admin"]).status_code == 201
    dup = api.http.post("/api/apps/mini/customer", json={**body, "name": "李雷2"}, headers=h["admin"])
    assert dup.status_code == 422 and dup.json()["errors"][0]["code"] == "unique"
    found = api.http.get("/api/apps/mini/customer?phone=13800000001", headers=h["admin"]).json()
    assert found["total"] == 1 and found["items"][0]["name"] == "李雷"
    assert api.http.get("/api/apps/mini/customer?q=13800000001", headers=h["admin"]).json()["total"] == 1


def test_pii_is_encrypted_at_rest(api):
    h = setup_app(api)
    api.http.post("/api/apps/mini/customer", json={"name": "韩梅梅", "phone": "13711112222", "region": "east"}, headers=h["admin"])
    with api.rt.db.read() as conn:
        raw = conn.execute(text('SELECT phone FROM "mini__customer"')).scalar()
        history = conn.execute(text("SELECT changes FROM loom_history")).all()
    assert "13711112222" not in raw and raw.startswith("k1:")
    assert "13711112222" not in str(history)


def test_row_level_access_and_404(api):
    h = setup_app(api)
    e = api.http.post("/api/apps/mini/customer", json={"name": "东", "region": "east"}, headers=h["admin"]).json()
    s = api.http.post("/api/apps/mini/customer", json={"name": "南", "region": "south"}, headers=h["admin"]).json()
    names = [c["name"] for c in api.http.get("/api/apps/mini/customer", headers=h["east"]).json()["items"]]
    assert names == ["东"]
    assert api.http.get(f"/api/apps/mini/customer/{s['id']}", headers=h["east"]).status_code == 404
    assert api.http.patch(f"/api/apps/mini/customer/{s['id']}", json={"name": "x"}, headers=h["east"]).status_code == 404
    assert api.http.delete(f"/api/apps/mini/customer/{e['id']}", headers=h["east"]).status_code == 403
    assert api.http.get("/api/apps/mini/customer", headers=h["manager"]).json()["total"] == 2


def test_required_when_through_link_and_validation_message(api):
    h = setup_app(api)
    gold = api.http.post("/api/apps/mini/customer", json={"name": "金", "tier": "gold"}, headers=h["admin"]).json()
    r = api.http.post("/api/apps/mini/ticket", json={"subject": "刹车异响", "severity": "high", "customer": gold["id"]}, headers=h["admin"])
    assert r.status_code == 422 and r.json()["errors"] == [
        {"field": "resolution", "code": "required", "message": r.json()["errors"][0]["message"]}]
    ok = api.http.post("/api/apps/mini/ticket", json={"subject": "刹车异响", "severity": "low", "customer": gold["id"]}, headers=h["admin"])
    assert ok.status_code == 201 and ok.json()["opened_on"] == "2026-11-23"
    assert ok.json()["customer_tier"] == "gold" and ok.json()["age_days"] == 0
    listed = api.http.get("/api/apps/mini/ticket", headers=h["east"]).json()["items"]
    assert [t["customer_tier"] for t in listed] == ["gold"]     # tickets have no access block: open to the app's users
    row = api.http.get(f"/api/apps/mini/ticket/{ok.json()['id']}", headers=h["admin"]).json()
    assert row["customer_tier"] == "gold"
    short = api.http.post("/api/apps/mini/ticket?lang=en", json={"subject": "ab", "severity": "low"}, headers=h["admin"])
    assert short.json()["errors"] == [{"field": "subject", "code": "validation", "message": "Subject needs at least 3 characters"}]
    missing = api.http.post("/api/apps/mini/ticket", json={"subject": "abc", "severity": "low", "customer": 999}, headers=h["admin"])
    assert missing.status_code == 422 and missing.json()["errors"][0]["code"] == "not_found"


def test_update_history_and_delete(api):
    h = setup_app(api)
    rec = api.http.post("/api/apps/mini/customer", json={"name": "赵", "visits": 1}, headers=h["admin"]).json()
    r = api.http.patch(f"/api/apps/mini/customer/{rec['id']}", json={"visits": 2}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["visits"] == 2
    hist = api.http.get(f"/api/apps/mini/customer/{rec['id']}/history", headers=h["admin"]).json()["items"]
    assert [x["kind"] for x in hist] == ["create", "update"]
    assert hist[1]["changes"] == {"visits": [1, 2]} and hist[1]["actor"] == "root"
    assert api.http.delete(f"/api/apps/mini/customer/{rec['id']}", headers=h["admin"]).status_code == 204
    assert api.http.get(f"/api/apps/mini/customer/{rec['id']}", headers=h["admin"]).status_code == 404


def test_list_filters_order_and_paging(api):
    h = setup_app(api)
    for i in range(5):
        api.http.post("/api/apps/mini/customer", json={"name": f"客户{i}", "visits": i, "region": "east"}, headers=h["admin"])
    page = api.http.get("/api/apps/mini/customer?visits__gte=2&order=-visits&limit=2", headers=h["admin"]).json()
    assert page["total"] == 3 and [c["visits"] for c in page["items"]] == [4, 3]
    bad = api.http.get("/api/apps/mini/customer?colour=red", headers=h["admin"])
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "colour"


def test_check_endpoint_validates_without_saving(api):
    h = setup_app(api)
    api.http.post("/api/apps/mini/customer", json={"name": "甲", "phone": "13600000000"}, headers=h["admin"])
    r = api.http.post("/api/apps/mini/customer/_check", json={"name": "乙", "phone": "13600000000"}, headers=h["admin"]).json()
    assert r["ok"] is False and r["errors"][0]["code"] == "unique"
    assert api.http.get("/api/apps/mini/customer", headers=h["admin"]).json()["total"] == 1


def test_reads_of_unmasked_pii_are_audited(api):
    from sqlalchemy import select
    from engine import platform as P
    h = setup_app(api)
    rec = api.http.post("/api/apps/mini/customer", json={"name": "审计", "phone": "13500000000", "region": "east"}, headers=h["admin"]).json()
    api.http.get(f"/api/apps/mini/customer/{rec['id']}", headers=h["manager"])      # view_pii: audited
    api.http.get(f"/api/apps/mini/customer/{rec['id']}", headers=h["east"])         # masked: not a PII read
    api.http.get("/api/apps/mini/customer", headers=h["manager"])
    with api.rt.db.read() as conn:
        rows = conn.execute(select(P.audit.c.actor, P.audit.c.record_id, P.audit.c.details)
                            .where(P.audit.c.action == "pii.read").order_by(P.audit.c.id)).all()
    assert [(r.actor, r.record_id) for r in rows] == [("boss", rec["id"]), ("boss", rec["id"])]
    assert rows[1].details["fields"] == ["phone"] and rows[1].details["count"] == 1


def test_an_update_whose_answer_shows_personal_data_is_audited_with_it(api):
    """PATCH answers with the stored record: for a caller with view_pii that shows its personal data
    unmasked, as a read does -- audited in the update's own transaction; masked callers write none."""
    from sqlalchemy import select
    from engine import platform as P
    h = setup_app(api)
    rec = api.http.post("/api/apps/mini/customer", json={"name": "审计", "phone": "13500000000", "region": "east"},
                        headers=h["admin"]).json()
    masked = api.http.patch(f"/api/apps/mini/customer/{rec['id']}", json={"visits": 2}, headers=h["east"])
    assert masked.status_code == 200 and masked.json()["phone"] == "135****0000", masked.text
    shown = api.http.patch(f"/api/apps/mini/customer/{rec['id']}", json={"visits": 3}, headers=h["manager"])
    assert shown.status_code == 200 and shown.json()["phone"] == "13500000000", shown.text
    with api.rt.db.read() as conn:
        rows = conn.execute(select(P.audit.c.actor, P.audit.c.record_id, P.audit.c.details)
                            .where(P.audit.c.action == "pii.read").order_by(P.audit.c.id)).all()
    assert [(r.actor, r.record_id) for r in rows] == [("boss", rec["id"])]
    assert "phone" in rows[0].details["fields"] and rows[0].details["ids"] == [rec["id"]]


def test_a_create_whose_answer_shows_a_linked_records_personal_data_audits_it(api):
    """POST answers with the stored record.  A lookup showing the linked customer's phone is personal
    data the caller did not send: for a caller with view_pii it is audited in the create's own
    transaction (masked callers write none); the caller's own input is not audited."""
    from sqlalchemy import select
    from engine import platform as P
    h = setup_app(api)
    cust = api.http.post("/api/apps/mini/customer", json={"name": "客户", "phone": "13500000001", "region": "east"},
                         headers=h["manager"]).json()
    masked = api.http.post("/api/apps/mini/ticket", json={"subject": "aaa", "severity": "low", "customer": cust["id"]}, headers=h["east"])
    assert masked.status_code == 201 and masked.json()["customer_phone"] == "135****0001", masked.text
    shown = api.http.post("/api/apps/mini/ticket", json={"subject": "bbb", "severity": "low", "customer": cust["id"]}, headers=h["manager"])
    assert shown.status_code == 201 and shown.json()["customer_phone"] == "13500000001", shown.text
    with api.rt.db.read() as conn:
        rows = conn.execute(select(P.audit.c.actor, P.audit.c.form, P.audit.c.record_id, P.audit.c.details)
                            .where(P.audit.c.action == "pii.read").order_by(P.audit.c.id)).all()
    # the customer's own create (its phone was the caller's input) wrote none; the agent's was masked
    assert [(r.actor, r.form, r.record_id) for r in rows] == [("boss", "ticket", shown.json()["id"])]
    assert rows[0].details["fields"] == ["customer_phone"]


def test_a_nul_character_in_the_address_is_a_clear_400_not_a_database_error(api):
    """PostgreSQL refuses NUL in any string: a search for ``%00`` reached it and came back as a 500."""
    h = setup_app(api)
    assert api.http.post("/api/apps/mini/customer", json={"name": "王芳", "region": "east"}, headers=h["admin"]).status_code == 201
    for query in ("q=%00", "q=%E7%8E%8B%00", "name=a%00b", "region__in=east,%00"):
        r = api.http.get(f"/api/apps/mini/customer?{query}", headers=h["admin"])
        assert r.status_code == 400, (query, r.text)
        assert r.json()["errors"][0]["code"] == "bad_request" and "NUL" in r.json()["errors"][0]["message"]
        assert r.headers["x-content-type-options"] == "nosniff"
    page = api.http.get("/apps/mini/customer?q=%00", headers={**h["admin"], "Accept": "text/html"})
    assert page.status_code == 400 and "text/html" in page.headers["content-type"] and "%00" in page.text
    # an encoded percent sign is ordinary text, and the search still works
    assert api.http.get("/api/apps/mini/customer?q=%2500", headers=h["admin"]).json()["total"] == 0
    assert api.http.get("/api/apps/mini/customer?q=%E7%8E%8B", headers=h["admin"]).json()["total"] == 1


def test_filters_that_do_not_parse_are_a_422_naming_the_filter(api):
    """System columns filter by their type and empty range values are refused -- each of these was
    a database error (500) before."""
    h = setup_app(api)
    made = api.http.post("/api/apps/mini/customer", json={"name": "王芳", "region": "east", "visits": 3}, headers=h["admin"]).json()
    for query, field, code in (("visits__gte=", "visits", "missing_value"), ("created_at__gte=", "created_at", "missing_value"),
                               ("created_at__gte=abc", "created_at", "invalid_datetime"), ("id=abc", "id", "invalid_number"),
                               ("id__in=1,x", "id", "invalid_number"), ("created_at__between=x", "created_at", "invalid_range"),
                               ("owner__gte=a", "owner", "bad_operator")):
        r = api.http.get(f"/api/apps/mini/customer?{query}", headers=h["admin"])
        assert r.status_code == 422, (query, r.text)
        assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [(field, code)], query
        assert r.json()["errors"][0]["message"]
    ok = {"id": made["id"], "id__in": f"{made['id']},999", "created_by": "root", "created_at__between": "2026-11-23,2026-11-23",
          "visits__between": "1,5", "phone": ""}           # (an empty personal-data filter: no phone given)
    for key, value in ok.items():
        got = api.http.get(f"/api/apps/mini/customer?{key}={value}", headers=h["admin"]).json()
        assert [x["id"] for x in got["items"]] == [made["id"]], key


def test_a_time_in_a_filter_is_in_the_apps_timezone(api):
    """The record was made at 10:00 in Shanghai (02:00 UTC): 'from 09:00' finds it, 'from 11:00'
    does not -- as a user in the app's timezone means them (they were read as UTC before)."""
    h = setup_app(api)
    made = api.http.post("/api/apps/mini/customer", json={"name": "王芳", "region": "east"}, headers=h["admin"]).json()
    found = api.http.get("/api/apps/mini/customer?created_at__gte=2026-11-23T09:00", headers=h["admin"]).json()
    assert [x["id"] for x in found["items"]] == [made["id"]]
    assert api.http.get("/api/apps/mini/customer?created_at__gte=2026-11-23T11:00", headers=h["admin"]).json()["total"] == 0
    # a day alone is the whole local day
    assert api.http.get("/api/apps/mini/customer?created_at__lte=2026-11-22", headers=h["admin"]).json()["total"] == 0
    assert api.http.get("/api/apps/mini/customer?created_at__gte=2026-11-23", headers=h["admin"]).json()["total"] == 1
