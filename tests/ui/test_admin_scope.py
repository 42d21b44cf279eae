"""Platform admin pages and routes act only in the apps where the user holds the permission.

The outbox holds customers' addresses and texts about them: admins see the apps they manage, with
customers' personal data masked without view_pii and audited with it -- on the page and the API.
Packages, timers, the audit log and user accounts are scoped the same way."""
from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from engine import platform as P
from engine.installer import install, installed_package
from engine.outbox import enqueue
from engine.package import read_package
from tests.conftest import FIXTURES
from tests.ui.test_pages import _browser, _csrf

PHONE, OTHER_PHONE = "13800001111", "13900002222"
SECRET_TEXT = "王先生您好，您的爱车沪A12345已到保养时间"


@pytest.fixture
def apps(api, tmp_path):
    """``mini`` and ``ops`` (a copy with an ``analyst`` role: manage_app without view_pii, an ``auditor``:
    view_audit, and a ``useradmin``: manage_users), with messages."""
    install(api.rt, read_package(FIXTURES / "mini_app"))
    pkg = tmp_path / "ops"
    shutil.copytree(FIXTURES / "mini_app", pkg)
    app_yaml = pkg / "app.yaml"
    text = app_yaml.read_text(encoding="utf-8").replace("name: mini", "name: ops", 1)
    text = text.replace("roles:\n", "roles:\n  analyst: {label: {zh: 分析师, en: Analyst}, permissions: [manage_app]}\n"
                                    "  auditor: {label: {zh: 审计员, en: Auditor}, permissions: [view_audit]}\n"
                                    "  useradmin: {label: {zh: 用户管理员, en: User admin}, permissions: [manage_users]}\n", 1)
    app_yaml.write_text(text + "home:\n  agent: [inbox]\n", encoding="utf-8")
    install(api.rt, read_package(pkg))
    now = api.rt.clock.now()
    ids = {}
    with api.rt.db.write() as conn:
        for key, app, recipient, kind, rendered, status, error in (
                ("care", "ops", PHONE, "customer", SECRET_TEXT, "queued", None),
                ("failed", "ops", PHONE, "customer", SECRET_TEXT, "failed", f"gateway refused {PHONE}"),
                ("staff", "ops", "ann", "user", "新线索已分配给您", "queued", None),
                ("mini", "mini", OTHER_PHONE, "customer", "迷你应用的客户消息", "failed", "timeout")):
            enqueue(conn, app=app, template=f"t_{key}", channel="inapp" if kind == "user" else "sms", recipient=recipient,
                    rendered=rendered, key=key, due_at=now, now=now, recipient_kind=kind, status=status, last_error=error)
            ids[key] = conn.execute(select(P.outbox.c.id).where(P.outbox.c.idempotency_key == key)).scalar()
    api.ids = ids
    return api


def _pii_reads(api, who):
    with api.rt.db.read() as conn:
        return [dict(r) for r in conn.execute(select(P.audit.c.app, P.audit.c.form, P.audit.c.details)
                                              .where(P.audit.c.action == "pii.read", P.audit.c.actor == who)
                                              .order_by(P.audit.c.id)).mappings()]


def test_api_masks_customers_for_a_manager_without_view_pii_and_shows_only_their_app(apps):
    analyst = apps.user("ana", ["analyst"])
    items = {m["template"]: m for m in apps.http.get("/api/outbox", headers=analyst).json()["items"]}
    assert set(items) == {"t_care", "t_failed", "t_staff"}                  # not mini's message
    care = items["t_care"]
    assert care["recipient"] == "138****1111" and care["rendered"] is None and care["hidden"] is True
    assert items["t_failed"]["last_error"] == "gateway refused 138****1111"
    staff = items["t_staff"]
    assert staff["recipient"] == "ann" and staff["rendered"] == "新线索已分配给您" and staff["hidden"] is False
    assert _pii_reads(apps, "ana") == []                                     # nothing shown: nothing audited


def test_api_shows_and_audits_customers_for_view_pii(apps):
    admin = apps.user("boss", ["admin"])
    items = {m["template"]: m for m in apps.http.get("/api/outbox", headers=admin).json()["items"]}
    assert set(items) == {"t_care", "t_failed", "t_staff", "t_mini"}       # the platform admin: every app
    assert items["t_care"]["recipient"] == PHONE and items["t_care"]["rendered"] == SECRET_TEXT
    assert items["t_failed"]["last_error"] == f"gateway refused {PHONE}"
    reads = _pii_reads(apps, "boss")
    assert [(r["app"], r["form"], sorted(r["details"]["ids"]), r["details"]["via"]) for r in reads] == [
        ("mini", "loom_outbox", [apps.ids["mini"]], "api"),
        ("ops", "loom_outbox", sorted([apps.ids["care"], apps.ids["failed"]]), "api")]   # not the staff message


def test_admin_page_masks_and_scopes_like_the_api(apps):
    web = _browser(apps, "ana2", ["analyst"])
    page = web.get("/admin/outbox")
    assert page.status_code == 200
    assert "138****1111" in page.text and PHONE not in page.text and "沪A12345" not in page.text
    assert "需“查看个人信息”权限" in page.text                               # says why the text is missing
    assert "新线索已分配给您" in page.text                                   # a message to staff is shown
    assert "t_mini" not in page.text and "139****2222" not in page.text    # another app's messages are not
    assert "failed (1)" in page.text                                       # counts are of ops only
    assert _pii_reads(apps, "ana2") == []
    boss = _browser(apps, "boss2", ["admin"])
    assert PHONE in boss.get("/admin/outbox").text
    assert [r["details"]["via"] for r in _pii_reads(apps, "boss2")] == ["page", "page"]


def test_retry_only_in_a_managed_app(apps):
    web = _browser(apps, "ana3", ["analyst"])
    token = _csrf(web, "/admin/outbox")
    other = web.post(f"/admin/outbox/{apps.ids['mini']}/retry", data={"csrf_token": token}, follow_redirects=False)
    own = web.post(f"/admin/outbox/{apps.ids['failed']}/retry", data={"csrf_token": token}, follow_redirects=False)
    assert other.status_code == 409 and own.status_code == 303
    with apps.rt.db.read() as conn:
        status = dict(conn.execute(select(P.outbox.c.idempotency_key, P.outbox.c.status)).all())
    assert status["mini"] == "failed" and status["failed"] == "queued"
    with apps.rt.db.read() as conn:
        retries = conn.execute(select(P.audit.c.app, P.audit.c.details).where(P.audit.c.action == "outbox.retry")).all()
    assert [(a, d["message"]) for a, d in retries] == [("ops", apps.ids["failed"])]     # the app it was in, once


def test_inbox_shows_messages_to_the_user_not_to_a_customer_with_the_same_name(apps):
    """A username may be a mobile number: a customer's SMS to that number is not that user's message."""
    now = apps.rt.clock.now()
    with apps.rt.db.write() as conn:
        enqueue(conn, app="ops", template="t_mine", channel="inapp", recipient=PHONE, rendered="请处理新线索",
                key="mine", due_at=now, now=now, recipient_kind="user")
    web = _browser(apps, PHONE, ["agent"])
    for url in ("/apps/ops/inbox", "/apps/ops"):
        page = web.get(url)
        assert page.status_code == 200, url
        assert "请处理新线索" in page.text and "沪A12345" not in page.text, url


def test_timers_and_audit_pages_show_only_the_users_apps(apps):
    from engine.audit import audit
    from engine.scheduler import schedule
    now = apps.rt.clock.now()
    with apps.rt.db.write() as conn:
        schedule(conn, app="mini", kind="test.kind", key="mini-timer-key", due_at=now)
        schedule(conn, app="ops", kind="test.kind", key="ops-timer-key", due_at=now)
        audit(conn, now, "someone", "pii.read", app="mini", form="customer", details={"ids": [424242]})
        audit(conn, now, "someone", "pii.read", app="ops", form="customer", details={"ids": [515151]})
    analyst = _browser(apps, "ana4", ["analyst"])
    timers = analyst.get("/admin/timers").text
    assert "ops-timer-key" in timers and "mini-timer-key" not in timers
    auditor = _browser(apps, "aud4", ["auditor"])
    audit_log = auditor.get("/admin/audit").text
    assert "515151" in audit_log and "424242" not in audit_log
    assert "auth.sign_in" in audit_log                        # the platform's own rows (no app) stay visible
    boss = _browser(apps, "boss4", ["admin"])
    both = boss.get("/admin/audit?action=pii.").text
    assert "424242" in both and "515151" in both
    assert "mini-timer-key" in boss.get("/admin/timers").text


def _package(root, **changes) -> bytes:
    """The package at ``root`` as a zip, with app.yaml's text replaced per ``changes`` (old=new)."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in root.rglob("*"):
            if p.is_file():
                text = p.read_text("utf-8")
                if p.name == "app.yaml":
                    for old, new in changes.values():
                        text = text.replace(old, new, 1)
                zf.writestr(p.relative_to(root).as_posix(), text)
    return buf.getvalue()


def test_manage_app_in_one_app_upgrades_only_that_app(apps, tmp_path, make_runtime, db_url):
    """An app's analyst may upgrade their app -- without granting permissions they don't hold --, not
    another app (which would let them grant themselves its personal data), and may not add a new
    app: that is the platform administrator's."""
    ops_pkg = tmp_path / "ops"
    analyst = apps.user("ana5", ["analyst"])

    def upload(blob, dry_run=False):
        return apps.http.post(f"/api/apps?dry_run={'true' if dry_run else 'false'}", headers=analyst,
                              files={"file": ("p.zip", blob, "application/zip")})
    # the mini app re-labelled as a new version that gives 'analyst' view_pii: refused, nothing changed
    takeover = _package(FIXTURES / "mini_app", v=("version: 1.0.0", "version: 1.0.9"),
                        r=("roles:\n", "roles:\n  analyst: {label: {zh: 分析师, en: Analyst}, permissions: [view_pii, manage_app]}\n"))
    for dry in (True, False):
        r = upload(takeover, dry)
        assert r.status_code == 403 and "manage_app permission in 'mini'" in r.json()["detail"]
    apps.rt.forget_app("mini")
    assert apps.rt.app("mini").version == "1.0.0" and "analyst" not in apps.rt.app("mini").roles
    new_app = _package(ops_pkg, n=("name: ops", "name: brand_new"))
    r = upload(new_app)
    assert r.status_code == 403 and "only the platform administrator" in r.json()["detail"]
    assert "brand_new" not in apps.rt.app_names()
    # their own app, granting themselves its personal data: refused, nothing changed
    escalate = upload(_package(ops_pkg, v=("version: 1.0.0", "version: 1.0.1"),
                               r=("permissions: [manage_app]}", "permissions: [manage_app, view_pii]}")))
    assert escalate.status_code == 403 and "gives role 'analyst' view_pii" in escalate.json()["detail"]
    apps.rt.forget_app("ops")
    assert apps.rt.app("ops").version == "1.0.0" and "view_pii" not in apps.rt.app("ops").roles["analyst"].permissions
    # a permission they hold may be granted: the agents get manage_app
    own = upload(_package(ops_pkg, v=("version: 1.0.0", "version: 1.0.1"),
                          a=("agent: {label: {zh: 坐席, en: Agent}}", "agent: {label: {zh: 坐席, en: Agent}, permissions: [manage_app]}")))
    assert own.status_code == 200, own.text
    apps.rt.forget_app("ops")
    assert apps.rt.app("ops").version == "1.0.1" and apps.rt.app("ops").roles["agent"].permissions == {"manage_app"}
    # another worker (a second runtime on the same database) takes manage_app from the analysts; this
    # worker's cached copy still has it for a few seconds, but the install judges the version it replaces
    other = make_runtime(db_url)
    install(other, read_package(_package(
        ops_pkg, v=("version: 1.0.0", "version: 1.0.2"), r=("permissions: [manage_app]}", "permissions: []}"),
        a=("agent: {label: {zh: 坐席, en: Agent}}", "agent: {label: {zh: 坐席, en: Agent}, permissions: [manage_app]}"))))
    assert "manage_app" in apps.rt.app("ops").roles["analyst"].permissions        # (the stale copy)
    late = upload(_package(ops_pkg, v=("version: 1.0.0", "version: 1.0.3")))
    assert late.status_code == 403 and "manage_app permission in 'ops'" in late.json()["detail"]
    with other.db.read() as conn:
        assert installed_package(conn, "ops")[0] == "1.0.2"
    # the pages: export and roll back only their own app
    web = _browser(apps, "ana6", ["analyst"])
    token = _csrf(web, "/admin/apps")
    assert web.get("/admin/apps/mini/export").status_code == 403
    assert web.post("/admin/apps/mini/rollback", data={"csrf_token": token}).status_code == 403
    assert web.get("/admin/apps/ops/export").status_code == 200
    page = web.post("/admin/apps/upload", data={"csrf_token": token},
                    files={"package": ("t.zip", takeover, "application/zip")})
    assert page.status_code == 403 and "manage_app permission in" in page.text
    # the studio of ops can't publish a package renamed to another app
    r = web.post("/studio/ops/_publish", json={"file": "app.yaml", "text": (ops_pkg / "app.yaml").read_text("utf-8")
                                                .replace("name: ops", "name: mini", 1)},
                 headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and "keep 'name: ops'" in r.json()["problems"][0]
    apps.rt.forget_app("mini")
    assert apps.rt.app("mini").version == "1.0.0"


def test_manage_users_in_one_app_reaches_only_that_apps_roles(apps):
    """A user admin of ops gives and takes ops' roles only -- never the platform admin role, nor a role of
    another app -- and can't change (say, set the password of) an account that holds more than that."""
    from engine.auth import get_user, upsert_user
    now = apps.rt.clock.now()
    with apps.rt.db.write() as conn:
        upsert_user(conn, now, "root9", ["admin"], {}, password="s3cret-pass")
        upsert_user(conn, now, "minimgr", ["manager"], {}, password="s3cret-pass")   # mini's role: view_pii
    web = _browser(apps, "ua", ["useradmin"])
    token = _csrf(web, "/admin/users")

    def save(username, roles, password=None):
        data = {"csrf_token": token, "username": username, "display_name": "", "roles": roles, "attrs": ""}
        if password:
            data["password"] = password
        return web.post("/admin/users", data=data, follow_redirects=False)
    assert save("newagent", ["analyst", "auditor"], "longenough1").status_code == 303    # roles only ops defines
    r = save("sneaky", ["agent", "admin"], "longenough1")
    assert r.status_code == 403 and "admin" in r.text
    # role names are shared: mini defines 'manager' (view_pii) and 'agent' too, so ops' user admin can't give them
    assert save("ua", ["useradmin", "manager"]).status_code == 403
    assert save("newagent", ["analyst", "auditor", "agent"]).status_code == 403
    r = save("root9", ["admin"], "taken-over-1")                                        # the platform admin's password
    assert r.status_code == 403 and "only the platform administrator" in r.text
    form = r.text.split('id="user-form"')[1].split("</form>")[0]
    assert 'type="submit" class="btn btn-primary" disabled' in form                   # still read-only after the refusal
    assert web.post("/admin/users/minimgr/active", data={"csrf_token": token, "active": "0"},
                    follow_redirects=False).status_code == 403
    with apps.rt.db.read() as conn:
        assert get_user(conn, "sneaky") is None and get_user(conn, "newagent").roles == {"analyst", "auditor"}
        assert get_user(conn, "ua").roles == {"useradmin"} and get_user(conn, "minimgr").active
    assert apps.login("root9", "s3cret-pass")                                            # password unchanged
    # the page offers only what the user admin may do: other apps' roles greyed, locked accounts without actions
    page = web.get("/admin/users").text
    for role in ("admin", "manager", "agent"):
        assert f'value="{role}" disabled' in page
    assert 'value="analyst" disabled' not in page and 'value="useradmin" disabled' not in page
    assert 'action="/admin/users/newagent/active"' in page
    assert 'action="/admin/users/root9/active"' not in page and 'action="/admin/users/minimgr/active"' not in page
    edit = web.get("/admin/users?edit=root9").text
    assert "only the platform administrator may change it" in edit or "仅平台管理员可修改" in edit
    # the platform admin sees every role and every action
    page = _browser(apps, "root2", ["admin"]).get("/admin/users").text
    assert " disabled" not in page.split('id="user-form"')[1].split("</form>")[0]
    assert 'action="/admin/users/minimgr/active"' in page
