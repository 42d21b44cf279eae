"""A user's own account: sign-in lockout on the page, changing one's password (page and API), and
what a password change does to the sessions and tokens already handed out."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from engine.auth import MAX_FAILED_LOGINS, upsert_user
from tests.ui.test_pages import CSRF_RE, _browser, _csrf


def _page_sign_in(client: TestClient, name: str, password: str):
    token = CSRF_RE.search(client.get("/login").text).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"},
                       follow_redirects=False)


def test_the_sign_in_page_locks_an_account_after_repeated_wrong_passwords(api):
    # the failure counter must be committed although the sign-in fails (it was rolled back with it)
    with api.rt.db.write() as conn:
        upsert_user(conn, api.rt.clock.now(), "bob", ["agent"], {}, password="right-pass-1")
    client = TestClient(api.http.app, raise_server_exceptions=False)
    for _ in range(MAX_FAILED_LOGINS):
        assert _page_sign_in(client, "bob", "wrong-pass-1").status_code == 401
    locked = _page_sign_in(client, "bob", "right-pass-1")
    assert locked.status_code == 401 and ("locked" in locked.text or "锁定" in locked.text)
    r = api.http.post("/api/auth/token", data={"username": "bob", "password": "right-pass-1"})
    assert r.status_code == 401 and "locked" in r.json()["detail"]


def _change(client: TestClient, current: str, new: str, confirm: str | None = None):
    token = _csrf(client, "/account")
    return client.post("/account/password", data={"csrf_token": token, "current_password": current,
                                                  "new_password": new, "confirm_password": confirm or new},
                       follow_redirects=False)


def test_changing_ones_password_on_the_account_page_signs_out_other_sessions(api):
    web = _browser(api, "cara", ["agent"], password="first-pass-1")
    other_browser = _browser(api, "cara", ["agent"], password="first-pass-1")
    api_token = api.login("cara", "first-pass-1")
    page = web.get("/account")
    assert page.status_code == 200 and "cara" in page.text and 'name="current_password"' in page.text
    # each mistake says what is wrong and changes nothing
    wrong = _change(web, "not-my-pass", "second-pass-2")
    assert wrong.status_code == 422 and 'id="a-current_password-err"' in wrong.text and "当前密码不正确" in wrong.text
    short = _change(web, "first-pass-1", "short")
    assert short.status_code == 422 and 'id="a-new_password-err"' in short.text and "密码太短" in short.text
    mismatch = _change(web, "first-pass-1", "second-pass-2", "second-pass-3")
    assert mismatch.status_code == 422 and 'id="a-confirm_password-err"' in mismatch.text and "不一致" in mismatch.text
    same = _change(web, "first-pass-1", "first-pass-1")
    assert same.status_code == 422 and "新密码不能与当前密码相同" in same.text
    assert api.http.get("/api/me", headers=api_token).status_code == 200
    # the change: this session stays signed in, every other session and API token is revoked
    done = _change(web, "first-pass-1", "second-pass-2")
    assert done.status_code == 303 and done.headers["location"].startswith("/account")
    assert web.get("/account").status_code == 200
    assert other_browser.get("/account", follow_redirects=False).status_code == 303      # to the sign-in page
    assert api.http.get("/api/me", headers=api_token).status_code == 401
    assert api.http.post("/api/auth/token", data={"username": "cara", "password": "first-pass-1"}).status_code == 401
    assert api.login("cara", "second-pass-2")
    with api.rt.db.read() as conn:
        from sqlalchemy import select

        from engine import platform as P
        actions = [r.action for r in conn.execute(select(P.audit.c.action).where(P.audit.c.actor == "cara"))]
    assert "user.password_changed" in actions


def test_a_wrong_current_password_counts_toward_the_lock(api):
    web = _browser(api, "dan", ["agent"], password="first-pass-1")
    for _ in range(MAX_FAILED_LOGINS):
        assert _change(web, "guess-pass-0", "second-pass-2").status_code == 422
    # locked: even the right current password is refused until the lock ends
    r = _change(web, "first-pass-1", "second-pass-2")
    assert r.status_code == 422 and 'id="a-current_password-err"' in r.text and "账号已临时锁定" in r.text


def test_profile_name_and_language(api):
    web = _browser(api, "erin", ["agent"])
    assert 'href="/account"' in web.get("/").text              # in the user menu
    token = _csrf(web, "/account")
    r = web.post("/account", data={"csrf_token": token, "display_name": "王小二", "language": "en"},
                 follow_redirects=False)
    assert r.status_code == 303
    assert web.cookies.get("loom_lang") == "en"
    me = web.get("/api/me").json()
    assert me["display_name"] == "王小二" and me["language"] == "en"
    bad = web.post("/account", data={"csrf_token": token, "display_name": "x" * 200, "language": "fr"})
    assert bad.status_code == 422
    assert "at most 100 characters" in bad.text and "Choose 中文 or English" in bad.text    # in English now
    assert web.get("/api/me").json()["language"] == "en"


def test_api_password_change(api):
    headers = api.user("fay", ["agent"], password="first-pass-1")
    kept = api.login("fay", "first-pass-1")
    r = api.http.post("/api/me/password", json={"current_password": "nope-nope", "new_password": "second-pass-2"},
                      headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "current_password"
    r = api.http.post("/api/me/password", json={"current_password": "first-pass-1", "new_password": "tiny"},
                      headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "new_password"
    r = api.http.post("/api/me/password", json={"current_password": "first-pass-1", "new_password": "second-pass-2"},
                      headers=headers)
    assert r.status_code == 200 and r.json()["other_sessions_signed_out"] >= 1
    assert api.http.get("/api/me", headers=headers).status_code == 200      # the token used stays valid
    assert api.http.get("/api/me", headers=kept).status_code == 401         # the others are revoked


def test_an_admin_reset_signs_the_user_out_everywhere(api):
    victim_web = _browser(api, "gus", ["agent"], password="first-pass-1")
    victim_api = api.login("gus", "first-pass-1")
    admin = _browser(api, "root", ["admin"])
    token = _csrf(admin, "/admin/users")
    r = admin.post("/admin/users", data={"csrf_token": token, "username": "gus", "display_name": "", "roles": ["agent"],
                                         "attrs": "", "password": "reset-pass-9"}, follow_redirects=False)
    assert r.status_code == 303
    assert victim_web.get("/account", follow_redirects=False).status_code == 303
    assert api.http.get("/api/me", headers=victim_api).status_code == 401
    # saving the account without a new password keeps the sessions
    again = _browser(api, "gus", ["agent"], password="reset-pass-9")
    admin.post("/admin/users", data={"csrf_token": token, "username": "gus", "display_name": "Gus", "roles": ["agent"],
                                     "attrs": ""}, follow_redirects=False)
    assert again.get("/account").status_code == 200


def test_weak_passwords_are_refused_with_the_reason(api):
    """Length, variety, the most used passwords and the user name -- for an admin setting one, the
    command line and the user's own change alike."""
    from engine.auth import AuthError, password_problem
    assert password_problem("88888888", "hua")[0] == "too_simple"
    assert password_problem("WoAiNi1314", "hua")[0] == "too_common"           # case does not matter
    assert password_problem("zhanghua-2026", "zhanghua")[0] == "has_username"
    assert password_problem("Zh4ngHua!2026", "zhanghua") is None
    with api.rt.db.write() as conn, pytest.raises(AuthError, match="most used"):
        upsert_user(conn, api.rt.clock.now(), "hua", ["agent"], {}, password="qwertyuiop")
    web = _browser(api, "hana", ["agent"], password="first-pass-1")
    r = _change(web, "first-pass-1", "password123")
    assert r.status_code == 422 and "最常用的密码" in r.text
    r = _change(web, "first-pass-1", "hana-2026-spring")
    assert r.status_code == 422 and "不能包含用户名" in r.text
    admin = _browser(api, "root", ["admin"])
    token = _csrf(admin, "/admin/users")
    r = admin.post("/admin/users", data={"csrf_token": token, "username": "ivy", "display_name": "", "roles": ["agent"],
                                         "attrs": "", "password": "12345678"})
    assert r.status_code == 422 and "最常用的密码" in r.text
    assert api.http.post("/api/me/password", json={"current_password": "first-pass-1", "new_password": "11111111"},
                         headers=api.login("hana", "first-pass-1")).json()["errors"][0]["code"] == "too_simple"
