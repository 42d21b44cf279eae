"""Every /api route needs a signed-in caller; sign-in works and locks out."""
from __future__ import annotations

import re

import pytest

from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES


def test_every_api_route_requires_a_token(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    checked = 0
    for path, ops in api.http.app.openapi()["paths"].items():
        if not path.startswith("/api") or path == "/api/auth/token":
            continue
        url = re.sub(r"\{app\}", "mini", path)
        url = re.sub(r"\{form\}", "customer", url)
        url = re.sub(r"\{[^}]+\}", "1", url)
        for method in (m.upper() for m in ops):
            r = api.http.request(method, url)
            if "/hooks/" in path:  # incoming webhooks authenticate per rule (signature); unknown rule -> 404
                assert r.status_code in (401, 404), f"{method} {path} answered {r.status_code}"
            else:
                assert r.status_code == 401, f"{method} {path} answered {r.status_code} without a token"
            checked += 1
    assert checked >= 8


def test_sign_in_wrong_password_and_lockout(api):
    api.user("alice", ["admin"])
    bad = api.http.post("/api/auth/token", data={"username": "alice", "password": "nope-nope"})
    assert bad.status_code == 401 and "wrong user name or password" in bad.json()["detail"]
    unknown = api.http.post("/api/auth/token", data={"username": "nobody", "password": "whatever1"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]
    for _ in range(5):
        api.http.post("/api/auth/token", data={"username": "alice", "password": "nope-nope"})
    locked = api.http.post("/api/auth/token", data={"username": "alice", "password": "s3cret-pass"})
    assert locked.status_code == 401 and "locked" in locked.json()["detail"]


def test_token_revocation(api):
    headers = api.user("bob", ["admin"])
    assert api.http.get("/api/apps", headers=headers).status_code == 200
    assert api.http.post("/api/auth/revoke", headers=headers).status_code == 200
    assert api.http.get("/api/apps", headers=headers).status_code == 401


def test_token_expires(api, clock):
    import datetime as dt
    headers = api.user("carol", ["admin"])
    clock.advance(dt.timedelta(hours=13))
    r = api.http.get("/api/apps", headers=headers)
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_no_traceback_on_bad_json(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    headers = api.user("dave", ["admin"])
    r = api.http.post("/api/apps/mini/customer", content=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert "Traceback" not in r.text and r.json()["errors"]


def test_openapi_documents_each_forms_fields(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    doc = api.http.get("/openapi.json").json()
    schema = doc["components"]["schemas"]["mini.customer.input"]
    assert schema["required"] == ["name"]
    assert schema["properties"]["region"]["enum"] == ["east", "south", "north", None]
    assert "/api/apps/mini/ticket" in doc["paths"]
    assert doc["paths"]["/api/apps/mini/ticket"]["post"]["responses"]["422"]


def test_cookie_authenticated_api_writes_need_the_csrf_header(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    token = api.user("erin", ["admin"])["Authorization"].split()[1]
    api.http.cookies.set("loom_session", token)
    api.http.cookies.set("loom_csrf", "abc123")
    assert api.http.get("/api/apps").status_code == 200                      # reads: cookie is enough
    r = api.http.post("/api/apps/mini/customer", json={"name": "跨站"})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    ok = api.http.post("/api/apps/mini/customer", json={"name": "同站"}, headers={"X-CSRF-Token": "abc123"})
    assert ok.status_code == 201


def test_outbox_lists_messages_for_admins_only(api):
    from engine.outbox import enqueue
    install(api.rt, read_package(FIXTURES / "mini_app"))
    admin = api.user("root", ["admin"])
    agent = api.user("ann", ["agent"])
    now = api.rt.clock.now()
    with api.rt.db.write() as conn:
        enqueue(conn, app="mini", template="welcome", channel="sms", recipient="13800000000", rendered="欢迎",
                key="k1", due_at=now, now=now)
        enqueue(conn, app="mini", template="bye", channel="email", recipient="a@b.cn", rendered="再见",
                key="k2", due_at=now, now=now)
    items = api.http.get("/api/outbox?template=welcome", headers=admin).json()["items"]
    assert [(m["template"], m["channel"], m["recipient"], m["rendered"], m["status"]) for m in items] == [
        ("welcome", "sms", "13800000000", "欢迎", "queued")]
    assert items[0]["due_at"].endswith("Z") and items[0]["sent_at"] is None
    assert api.http.get("/api/outbox", headers=agent).status_code == 403
