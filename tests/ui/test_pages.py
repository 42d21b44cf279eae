"""The HTML pages (ui.pages) through a TestClient, on SQLite and PostgreSQL.

Pages render for every form; every HTML POST needs the CSRF token; a record
the user may not read is a 404 page; the record service's per-field errors
are drawn under each field; admin upload and the studio report positioned
problems exactly like ``loom validate``.
"""
from __future__ import annotations

import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient

from engine.auth import upsert_user
from engine.definitions import validate_package
from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _browser(api, name: str, roles: list[str], attrs: dict | None = None, password: str = "s3cret-pass") -> TestClient:
    """A TestClient signed in through the HTML sign-in form (session cookie)."""
    with api.rt.db.write() as conn:
        upsert_user(conn, api.rt.clock.now(), name, roles, attrs or {}, password=password)
    client = TestClient(api.http.app, raise_server_exceptions=False)
    page = client.get("/login")
    assert page.status_code == 200
    token = CSRF_RE.search(page.text).group(1)
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    assert "loom_session" in r.cookies or client.cookies.get("loom_session")
    return client


def _csrf(client: TestClient, url: str) -> str:
    return CSRF_RE.search(client.get(url).text).group(1)


@pytest.fixture
def mini(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    return api


def _api_create(api, headers, form, data):
    r = api.http.post(f"/api/apps/mini/{form}", json=data, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_sign_in_required_and_session_cookie_flags(mini):
    anon = TestClient(mini.http.app, raise_server_exceptions=False)
    r = anon.get("/apps/mini/forms/customer", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Fapps%2Fmini%2Fforms%2Fcustomer")
    with mini.rt.db.write() as conn:
        upsert_user(conn, mini.rt.clock.now(), "ann", ["admin"], {}, password="s3cret-pass")
    token = CSRF_RE.search(anon.get("/login").text).group(1)
    bad = anon.post("/login", data={"username": "ann", "password": "wrong-one", "csrf_token": token})
    assert bad.status_code == 401 and "用户名或密码错误" in bad.text
    ok = anon.post("/login", data={"username": "ann", "password": "s3cret-pass", "csrf_token": token,
                                   "next": "https://evil.example/"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/"          # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "loom_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    # the session cookie also works for the JSON API (ui.deps.current_user)
    assert anon.get("/api/me").json()["username"] == "ann"
    # sign out revokes the session
    token = _csrf(anon, "/apps/mini")
    anon.post("/logout", data={"csrf_token": token})
    assert anon.get("/apps/mini", follow_redirects=False).status_code == 303


def test_pages_render_for_every_form(mini):
    admin = mini.user("root", ["admin"])
    cust = _api_create(mini, admin, "customer", {"name": "王先生", "phone": "13800138000", "region": "east", "tier": "gold"})
    _api_create(mini, admin, "ticket", {"subject": "刹车异响", "customer": cust["id"], "severity": "low"})
    web = _browser(mini, "alice", ["admin"])
    home = web.get("/apps/mini")
    assert home.status_code == 200 and "迷你应用" in home.text and 'href="/apps/mini/forms/customer"' in home.text
    for form in ("customer", "ticket"):
        lst = web.get(f"/apps/mini/forms/{form}")
        assert lst.status_code == 200 and "<table" in lst.text, lst.text[:500]
        assert web.get(f"/apps/mini/forms/{form}/new").status_code == 200
        assert web.get(f"/apps/mini/forms/{form}/1").status_code == 200
        assert web.get(f"/apps/mini/forms/{form}/1/edit").status_code == 200
    detail = web.get("/apps/mini/forms/ticket/1").text
    assert "刹车异响" in detail and 'href="/apps/mini/forms/customer/1"' in detail and "王先生" in detail   # link by title
    lst = web.get("/apps/mini/forms/customer?q=王").text
    assert "王先生" in lst and "138****8000" not in lst                                                 # admin sees PII
    assert "13800138000" in lst
    # sorting and filters go through Records.list
    assert web.get("/apps/mini/forms/customer?order=-name&tier=gold").status_code == 200
    # strings and labels follow the language cookie
    web.get("/lang/en?next=/apps/mini")
    en = web.get("/apps/mini/forms/customer/new").text
    assert "New" in en and "Name" in en and 'lang="en"' in en


def test_csrf_is_enforced_on_every_html_post(mini):
    web = _browser(mini, "bob", ["admin"])
    before = mini.http.get("/api/apps/mini/customer", headers=mini.user("x", ["admin"])).json()["total"]
    no_token = web.post("/apps/mini/forms/customer/new", data={"_fields": "name", "name": "张三"})
    assert no_token.status_code == 403 and "页面已过期" in no_token.text
    wrong = web.post("/apps/mini/forms/customer/new", data={"_fields": "name", "name": "张三", "csrf_token": "x" * 32})
    assert wrong.status_code == 403
    header_ok = web.post("/apps/mini/forms/customer/new", data={"_fields": "name", "name": "张三"},
                         headers={"X-CSRF-Token": web.cookies.get("loom_csrf")}, follow_redirects=False)
    assert header_ok.status_code == 303
    after = mini.http.get("/api/apps/mini/customer", headers=mini.user("y", ["admin"])).json()["total"]
    assert after == before + 1
    # sign-in itself needs the token (login CSRF)
    anon = TestClient(mini.http.app, raise_server_exceptions=False)
    assert anon.post("/login", data={"username": "bob", "password": "s3cret-pass"}).status_code == 403


def test_record_user_may_not_read_is_a_404_page(mini):
    admin = mini.user("root", ["admin"])
    east = _api_create(mini, admin, "customer", {"name": "East One", "region": "east"})
    south = _api_create(mini, admin, "customer", {"name": "South One", "region": "south"})
    agent = _browser(mini, "agnes", ["agent"], {"region": "east"})
    assert agent.get(f"/apps/mini/forms/customer/{east['id']}").status_code == 200
    r = agent.get(f"/apps/mini/forms/customer/{south['id']}")
    assert r.status_code == 404 and "页面不存在" in r.text and "Traceback" not in r.text
    assert agent.get(f"/apps/mini/forms/customer/{south['id']}/edit").status_code == 404
    lst = agent.get("/apps/mini/forms/customer").text
    assert "East One" in lst and "South One" not in lst
    # not a member of the app at all: 404 too; unknown pages: friendly 404
    outsider = _browser(mini, "olga", ["nobody"])
    assert outsider.get("/apps/mini/forms/customer").status_code == 404
    assert agent.get("/apps/mini/forms/nope").status_code == 404
    assert agent.get("/apps/mini/forms/customer/abc").status_code == 404


def test_form_errors_are_shown_under_each_field(mini):
    web = _browser(mini, "carl", ["admin"])
    token = _csrf(web, "/apps/mini/forms/ticket/new")
    r = web.post("/apps/mini/forms/ticket/new", data={
        "csrf_token": token, "_fields": "subject,customer,severity,resolution,opened_on",
        "subject": "ab", "severity": "", "opened_on": "not-a-date"})
    assert r.status_code == 422
    html = r.text
    # one error element per field, role=alert, right under the field, values kept
    subject_box = re.search(r'<div class="field[^"]*has-error[^"]*" id="fld-subject".*?</div>\s*(?=<div class="field|</div>)', html, re.S)
    assert subject_box and "主题至少3个字" in subject_box.group(0) and 'aria-invalid="true"' in subject_box.group(0)
    assert 'value="ab"' in subject_box.group(0)
    sev = re.search(r'id="f-severity-err" role="alert">([^<]+)<', html)
    assert sev and sev.group(1).strip()
    date_err = re.search(r'id="f-opened_on-err" role="alert">([^<]+)<', html)
    assert date_err and date_err.group(1).strip()
    assert "保存失败" in html
    # fixing the values saves through the same Records.create path
    ok = web.post("/apps/mini/forms/ticket/new", data={
        "csrf_token": token, "_fields": "subject,customer,severity,resolution,opened_on",
        "subject": "发动机故障", "severity": "low", "opened_on": "2026-11-20"}, follow_redirects=False)
    assert ok.status_code == 303 and re.match(r"/apps/mini/forms/ticket/\d+\?saved=1", ok.headers["location"])
    detail = web.get(ok.headers["location"]).text
    assert "发动机故障" in detail and "2026-11-20" in detail and "已保存" in detail


def test_edit_and_unique_error_in_place(mini):
    web = _browser(mini, "dora", ["admin"])
    token = _csrf(web, "/apps/mini/forms/customer/new")
    for name, phone in (("甲", "13900000001"), ("乙", "13900000002")):
        r = web.post("/apps/mini/forms/customer/new", data={"csrf_token": token, "_fields": "name,phone,region,tier,visits",
                                                             "name": name, "phone": phone, "tier": "regular"}, follow_redirects=False)
        assert r.status_code == 303
    r = web.post("/apps/mini/forms/customer/2/edit", data={"csrf_token": token, "_fields": "name,phone,region,tier,visits",
                                                          "name": "乙", "phone": "13900000001", "tier": "regular"})
    assert r.status_code == 422
    err = re.search(r'id="f-phone-err" role="alert">([^<]+)<', r.text)
    assert err and "已存在" in err.group(1)
    r = web.post("/apps/mini/forms/customer/2/edit", data={"csrf_token": token, "_fields": "name,phone,region,tier,visits",
                                                          "name": "乙二", "phone": "13900000002", "tier": "gold", "visits": "3"},
                 follow_redirects=False)
    assert r.status_code == 303
    detail = web.get("/apps/mini/forms/customer/2").text
    assert "乙二" in detail and "gold" in detail
    assert "乙" in detail and "乙二" in detail     # the timeline shows the change


def test_form_state_and_duplicates_endpoints(mini):
    admin = mini.user("root", ["admin"])
    _api_create(mini, admin, "customer", {"name": "金卡", "phone": "13700000000", "tier": "gold"})
    web = _browser(mini, "eve", ["admin"])
    token = web.cookies.get("loom_csrf") or _csrf(web, "/apps/mini")
    r = web.post("/apps/mini/forms/ticket/_form_state", data={"_fields": "subject,severity,customer",
                                                              "severity": "low", "customer": "1"},
                 headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    fields = r.json()["fields"]
    assert fields["subject"] == {"visible": True, "required": True, "readonly": False}
    assert fields["resolution"]["required"] is False
    high = web.post("/apps/mini/forms/ticket/_form_state", data={"_fields": "subject,severity,customer",
                                                                 "severity": "high", "customer": "1"},
                    headers={"X-CSRF-Token": token}).json()["fields"]
    # required_when follows the link (customer.tier) exactly as the record service does on save
    check = mini.http.post("/api/apps/mini/ticket/_check", json={"subject": "xyz", "severity": "high", "customer": 1},
                           headers=admin).json()
    service_requires = any(e["field"] == "resolution" and e["code"] == "required" for e in check["errors"])
    assert high["resolution"]["required"] is service_requires
    dup = web.post("/apps/mini/forms/customer/_duplicates", data={"phone": "13700000000"}, headers={"X-CSRF-Token": token})
    assert dup.status_code == 200
    no_dup = web.post("/apps/mini/forms/customer/_duplicates", data={"phone": "13700000009"}, headers={"X-CSRF-Token": token})
    assert no_dup.status_code == 200 and "alert" not in no_dup.text
    # link picker: records of the target form the user may read, by title
    opts = web.get("/apps/mini/forms/ticket/_link/customer?_q_customer=金").text
    assert 'value="1"' in opts and "金卡" in opts


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return buf.getvalue()


def test_admin_upload_shows_positioned_problems_and_plan(mini, tmp_path):
    web = _browser(mini, "root2", ["admin"])
    token = _csrf(web, "/admin/apps")
    files = {p.relative_to(FIXTURES / "mini_app").as_posix(): p.read_text("utf-8")
             for p in (FIXTURES / "mini_app").rglob("*") if p.is_file()}
    bad = dict(files)
    bad["forms/customer.yaml"] = bad["forms/customer.yaml"].replace("type: number", "type: numbr")
    r = web.post("/admin/apps/upload", data={"csrf_token": token},
                 files={"package": ("bad.zip", _zip(bad), "application/zip")})
    assert r.status_code == 422
    expected = [str(p).split(": ", 1)[0] for p in validate_package(read_package(_zip(bad)))]
    assert expected and all(f"{w}" in r.text for w in expected)           # same FILE:LINE:COL as loom validate
    good = dict(files)
    good["app.yaml"] = good["app.yaml"].replace("version: 1.0.0", "version: 1.0.1")
    good["forms/customer.yaml"] = good["forms/customer.yaml"].replace("  visits: {type: number, min: 0}",
                                                                      "  visits: {type: number, min: 0}\n  note: {type: textarea}")
    r = web.post("/admin/apps/upload", data={"csrf_token": token}, files={"package": ("ok.zip", _zip(good), "application/zip")})
    assert r.status_code == 200 and "Plan for mini 1.0.1" in r.text and "note" in r.text
    pkg = re.search(r'name="package" value="([^"]+)"', r.text).group(1)
    sha = re.search(r'name="sha" value="([^"]+)"', r.text).group(1)
    assert mini.rt.app("mini").version == "1.0.0"                         # nothing installed yet
    done = web.post("/admin/apps/install", data={"csrf_token": token, "package": pkg, "sha": sha})
    assert done.status_code == 200 and "Upgraded mini 1.0.1" in done.text
    mini.rt.forget_app("mini")
    assert mini.rt.app("mini").version == "1.0.1"
    # roll back to the previous version
    plan = web.post("/admin/apps/mini/rollback", data={"csrf_token": token})
    assert plan.status_code == 200 and "1.0.0" in plan.text
    export = web.get("/admin/apps/mini/export")
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    # non-admins may not see the apps page
    agent = _browser(mini, "agent7", ["agent"], {"region": "east"})
    assert agent.get("/admin/apps").status_code == 403


def test_studio_lint_preview_plan_publish(mini):
    web = _browser(mini, "ana", ["admin"])
    token = web.cookies.get("loom_csrf") or _csrf(web, "/apps/mini")
    page = web.get("/studio/mini?file=forms/customer.yaml")
    assert page.status_code == 200 and "LoomEditor" not in page.text and "studio-editor" in page.text
    text = read_package(FIXTURES / "mini_app").text("forms/customer.yaml")
    bad = text.replace("max_length: 20", "max_lenght: 20")
    h = {"X-CSRF-Token": token}
    res = web.post("/studio/mini/_lint", json={"file": "forms/customer.yaml", "text": bad}, headers=h).json()
    files = dict(read_package(FIXTURES / "mini_app").files)
    files["forms/customer.yaml"] = bad.encode()
    from engine.package import SourcePackage
    expected = [(p.line, p.col) for p in validate_package(SourcePackage(files, "x")) if p.file == "forms/customer.yaml"]
    assert expected and [(p["line"], p["col"]) for p in res["problems"]] == expected
    assert web.post("/studio/mini/_lint", json={"file": "forms/customer.yaml", "text": text}, headers=h).json()["problems"] == []
    # completion from the JSON Schema: field keys, and the field types as values
    keys = [c["label"] for c in web.post("/studio/mini/_complete", json={"file": "forms/customer.yaml", "path": ["fields", "name"],
                                                                        "before": "    "}, headers=h).json()]
    assert "visible_when" in keys and "required" in keys
    types = [c["label"] for c in web.post("/studio/mini/_complete", json={"file": "forms/customer.yaml", "path": ["fields", "name"],
                                                                         "before": "    type: "}, headers=h).json()]
    assert "cascade" in types and "text" in types
    # preview renders the edited form without saving
    edited = text.replace("  visits: {type: number, min: 0}", "  visits: {type: number, min: 0}\n  vip_note: {type: textarea, label: {zh: 贵宾备注, en: VIP note}}")
    prev = web.post("/studio/mini/_preview", json={"file": "forms/customer.yaml", "text": edited}, headers=h)
    assert prev.status_code == 200 and "贵宾备注" in prev.text and 'name="vip_note"' in prev.text
    plan = web.post("/studio/mini/_plan", json={"file": "forms/customer.yaml", "text": edited}, headers=h).json()
    assert plan["ok"] and any("vip_note" in line for line in plan["lines"]) and "1.0.1" in plan["lines"][0]
    pub = web.post("/studio/mini/_publish", json={"file": "forms/customer.yaml", "text": edited}, headers=h).json()
    assert pub["ok"] and pub["version"] == "1.0.1"
    mini.rt.forget_app("mini")
    app = mini.rt.app("mini")
    assert app.version == "1.0.1" and "vip_note" in app.forms["customer"].fields
    yaml_text = app.package.text("app.yaml")
    assert yaml_text.startswith("# yaml-language-server") and "version: 1.0.1" in yaml_text   # comments kept
    # the studio needs manage_app
    agent = _browser(mini, "agent8", ["agent"], {"region": "east"})
    assert agent.get("/studio/mini").status_code == 403
    assert agent.post("/studio/mini/_lint", json={"file": "app.yaml", "text": ""},
                      headers={"X-CSRF-Token": agent.cookies.get("loom_csrf") or ""}).status_code == 403


def test_admin_users_outbox_timers_audit(mini):
    web = _browser(mini, "boss", ["admin"])
    token = _csrf(web, "/admin/users")
    r = web.post("/admin/users", data={"csrf_token": token, "username": "newbie", "display_name": "新人",
                                       "password": "longenough1", "roles": ["agent"], "attrs": "region=east"},
                 follow_redirects=False)
    assert r.status_code == 303
    from engine.auth import get_user
    with mini.rt.db.read() as conn:
        u = get_user(conn, "newbie")
    assert u.roles == {"agent"} and u.attrs == {"region": "east"} and u.display_name == "新人"
    newbie = _browser(mini, "newbie2", ["agent"], {"region": "east"})
    web.post("/admin/users/newbie2/active", data={"csrf_token": token, "active": "0"})
    assert newbie.get("/apps/mini", follow_redirects=False).status_code == 303     # deactivated: signed out
    for url in ("/admin/users", "/admin/outbox", "/admin/timers", "/admin/audit?action=auth."):
        page = web.get(url)
        assert page.status_code == 200, url
    assert "auth.sign_in" in web.get("/admin/audit?action=auth.").text


def test_pages_showing_personal_data_are_audited(mini):
    from sqlalchemy import select

    from engine import platform as P
    admin = mini.user("root", ["admin"])
    east = _api_create(mini, admin, "customer", {"name": "East One", "phone": "13600000001", "region": "east"})

    def pii_reads(who):
        with mini.rt.db.read() as conn:
            return conn.execute(select(P.audit.c.details).where(P.audit.c.action == "pii.read",
                                                                P.audit.c.actor == who)).scalars().all()

    manager = _browser(mini, "mona", ["manager"])
    page = manager.get(f"/apps/mini/forms/customer/{east['id']}").text
    assert "13600000001" in page
    reads = pii_reads("mona")
    assert len(reads) == 1 and reads[0]["fields"] == ["phone"] and reads[0]["ids"] == [east["id"]]
    manager.get("/apps/mini/forms/customer")
    assert len(pii_reads("mona")) == 2
    agent = _browser(mini, "agnes", ["agent"], {"region": "east"})
    page = agent.get(f"/apps/mini/forms/customer/{east['id']}").text
    assert "13600000001" not in page and "136****0001" in page          # masked: nothing to audit
    assert pii_reads("agnes") == []


def test_a_task_id_beyond_64_bits_on_the_task_page_is_not_found(mini):
    """Task ids are BIGINT: a larger one posted to the tasks page is no task, not a driver error."""
    browser = _browser(mini, "ann", ["agent"], {"region": "east"})
    token = _csrf(browser, "/apps/mini/tasks")
    r = browser.post(f"/apps/mini/tasks/{2**63}/complete", data={"csrf_token": token},
                     headers={"HX-Request": "true", "Accept": "text/html"})
    assert r.status_code == 404, r.text[:300]
