"""Comments and @mentions on a record's timeline (issue #8), and the HTML error
pages for browsers -- on SQLite and PostgreSQL.

The mini app's customers have row filters: an ``agent`` reads the customers of
their own region only, so ``bob`` (south) can't see an east customer.
"""
from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from engine import platform as P
from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES
from tests.ui.test_pages import CSRF_RE, _browser


@pytest.fixture
def mini(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    return api


@pytest.fixture
def people(mini):
    """root (admin), ann and carl (agents, east), bob (agent, south), and one east customer."""
    h = {"root": mini.user("root", ["admin"]), "ann": mini.user("ann", ["agent"], {"region": "east"}),
         "carl": mini.user("carl", ["agent"], {"region": "east"}), "bob": mini.user("bob", ["agent"], {"region": "south"})}
    rec = mini.http.post("/api/apps/mini/customer", json={"name": "王芳", "region": "east"}, headers=h["root"]).json()
    h["url"] = f"/api/apps/mini/customer/{rec['id']}"
    h["page"] = f"/apps/mini/forms/customer/{rec['id']}"
    h["id"] = rec["id"]
    return h


def _post(api, h, who, body):
    return api.http.post(f"{h['url']}/comments", json={"body": body}, headers=h[who])


def _mentions(api, who_headers):
    return [t for t in api.http.get("/api/tasks", headers=who_headers).json()["items"] if t["kind"] == "mention"]


def _audit(api, action):
    with api.rt.db.read() as conn:
        return [dict(r) for r in conn.execute(select(P.audit).where(P.audit.c.action == action)).mappings()]


def test_comment_shows_in_the_timeline_escaped_with_newlines(mini, people):
    h = people
    r = _post(mini, h, "ann", "客户要求周六试驾\n<script>alert('x')</script> & 联系 @carl")
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["author"] == "ann" and c["mentions"] == ["carl"] and c["can_delete"] is True
    assert c["body"].startswith("客户要求周六试驾\n<script>")            # stored as typed: plain text
    listed = mini.http.get(f"{h['url']}/comments", headers=h["carl"]).json()
    assert [x["id"] for x in listed["items"]] == [c["id"]] and listed["more"] is False
    assert listed["items"][0]["can_delete"] is False                      # carl didn't write it
    hist = mini.http.get(f"{h['url']}/history", headers=h["carl"]).json()
    assert [x["kind"] for x in hist["items"]] == ["create", "comment"]
    assert hist["items"][1]["comment_id"] == c["id"] and hist["items"][1]["actor"] == "ann"
    # the detail page: escaped, newline kept (pre-line), the mention highlighted with the user's name
    page = _browser(mini, "ann", ["agent"], {"region": "east"}).get(h["page"])
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; 联系" in page.text
    assert "客户要求周六试驾\n&lt;script&gt;" in page.text
    assert '<span class="mention" data-user="carl"' in page.text
    assert 'id="comment-form"' in page.text and 'name="csrf_token"' in page.text and 'for="comment-body"' in page.text


def test_timeline_is_bounded(mini, people):
    h = people
    for i in range(4):
        assert _post(mini, h, "ann", f"第{i}条").status_code == 201
    tl = mini.http.get(f"{h['url']}/history?limit=3", headers=h["ann"]).json()
    assert [x["comment"] for x in tl["items"]] == ["第1条", "第2条", "第3条"] and tl["more"] is True
    page = mini.http.get(f"{h['url']}/comments?limit=2", headers=h["ann"]).json()
    assert [x["body"] for x in page["items"]] == ["第2条", "第3条"] and page["more"] is True
    assert mini.http.get(f"{h['url']}/comments?limit=100000", headers=h["ann"]).status_code == 422


def test_a_user_who_cannot_read_the_record_gets_404_everywhere(mini, people):
    h = people
    c = _post(mini, h, "ann", "内部备注").json()
    assert mini.http.get(f"{h['url']}/comments", headers=h["bob"]).status_code == 404
    assert _post(mini, h, "bob", "我也来说两句").status_code == 404
    assert mini.http.delete(f"{h['url']}/comments/{c['id']}", headers=h["bob"]).status_code == 404
    assert mini.http.get(f"{h['url']}/history", headers=h["bob"]).status_code == 404
    assert [x["body"] for x in mini.http.get(f"{h['url']}/comments", headers=h["root"]).json()["items"]] == ["内部备注"]
    # the pages: the same 404, also for the @ picker
    bob = _browser(mini, "bob", ["agent"], {"region": "south"})
    token = CSRF_RE.search(bob.get("/apps/mini/forms/customer").text).group(1)
    r = bob.post(f"{h['page']}/comments", data={"body": "hi", "csrf_token": token}, headers={"HX-Request": "true"})
    assert r.status_code == 404 and "页面不存在" in r.text
    assert bob.get(f"{h['page']}/comments/_mentions?q=a").status_code == 404
    assert len(_audit(mini, "comment.create")) == 1


def test_mention_notifies_each_readable_user_once(mini, people):
    h = people
    r = _post(mini, h, "root", "@ann 请跟进；@ann 周六前回复。抄送 @carl，我自己 @root")
    assert r.status_code == 201 and r.json()["mentions"] == ["ann", "carl", "root"]
    ann = _mentions(mini, h["ann"])
    assert len(ann) == 1 and ann[0]["record_id"] == h["id"] and ann[0]["actions"] == ["complete"]
    assert ann[0]["title"] == {"zh": "root 在评论中提到了你", "en": "root mentioned you in a comment"}
    assert len(_mentions(mini, h["carl"])) == 1
    assert _mentions(mini, h["root"]) == []                               # never about yourself
    # ann sees it in her task inbox, and dismisses it; dismissing is not a record event
    browser = _browser(mini, "ann", ["agent"], {"region": "east"})
    inbox = browser.get("/apps/mini/tasks")
    assert "root 在评论中提到了你" in inbox.text and 'data-task-action="dismiss"' in inbox.text
    assert mini.http.post(f"/api/tasks/{ann[0]['id']}/transfer", json={"to": "carl"}, headers=h["ann"]).status_code == 409
    assert mini.http.post(f"/api/tasks/{ann[0]['id']}/complete", headers=h["ann"]).status_code == 200
    assert _mentions(mini, h["ann"]) == []
    kinds = [x["kind"] for x in mini.http.get(f"{h['url']}/history", headers=h["ann"]).json()["items"]]
    assert kinds == ["create", "comment"]
    # no channel set up in the mini app: no outbox message
    with mini.rt.db.read() as conn:
        assert conn.execute(select(P.outbox).where(P.outbox.c.template == "comment_mention")).first() is None


def test_mention_of_someone_who_may_not_read_is_refused_and_nothing_saved(mini, people):
    h = people
    for body, who in (("请 @bob 看一下", "@bob"), ("@nobody 你好", "@nobody")):
        r = _post(mini, h, "ann", body)
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["field"] == "body" and err["code"] == "mention" and who in err["message"]
        assert "无权查看" in err["message"]
    en = mini.http.post(f"{h['url']}/comments", json={"body": "@bob"}, headers={**h["ann"], "Accept-Language": "en"})
    assert "may not see this record" in en.json()["errors"][0]["message"]
    assert mini.http.get(f"{h['url']}/comments", headers=h["ann"]).json()["items"] == []
    assert _mentions(mini, h["bob"]) == []
    # an e-mail address is not a mention
    assert _post(mini, h, "ann", "客户邮箱 wang@example.cn").json()["mentions"] == []


@pytest.mark.parametrize("body, code", [("   \n ", "required"), ("长" * 4001, "max_length")])
def test_bad_bodies_are_clear_field_errors(mini, people, body, code):
    r = _post(mini, people, "ann", body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body" and r.json()["errors"][0]["code"] == code
    assert "Traceback" not in r.text
    assert mini.http.post(f"{people['url']}/comments", json={"body": 5}, headers=people["ann"]).status_code == 422


def test_delete_own_comment_others_403_admin_any_and_audit(mini, people):
    h = people
    mine = _post(mini, h, "ann", "提醒 @carl 回电").json()
    carls = _post(mini, h, "carl", "已回电").json()
    assert len(_mentions(mini, h["carl"])) == 1
    r = mini.http.delete(f"{h['url']}/comments/{mine['id']}", headers=h["carl"])
    assert r.status_code == 403 and "只能删除自己的评论" in r.json()["detail"]
    assert mini.http.delete(f"{h['url']}/comments/{mine['id']}", headers=h["ann"]).status_code == 204
    assert _mentions(mini, h["carl"]) == []                                # its mention is withdrawn
    assert mini.http.delete(f"{h['url']}/comments/{mine['id']}", headers=h["ann"]).status_code == 404
    assert mini.http.delete(f"{h['url']}/comments/{carls['id']}", headers=h["root"]).status_code == 204
    assert mini.http.get(f"{h['url']}/comments", headers=h["root"]).json()["items"] == []
    created = _audit(mini, "comment.create")
    deleted = _audit(mini, "comment.delete")
    assert [(a["actor"], a["record_id"], a["details"]["comment"]) for a in created] == [
        ("ann", h["id"], mine["id"]), ("carl", h["id"], carls["id"])]
    assert created[0]["details"]["mentions"] == ["carl"] and created[0]["details"]["notified"] == 1
    assert [(a["actor"], a["details"]["author"]) for a in deleted] == [("ann", "ann"), ("root", "carl")]


def test_outbox_message_when_the_app_sets_a_mention_channel(api, tmp_path):
    pkg = tmp_path / "mini"
    shutil.copytree(FIXTURES / "mini_app", pkg)
    app_yaml = pkg / "app.yaml"
    app_yaml.write_text(app_yaml.read_text("utf-8") + "settings:\n  mention_channel: email\n", "utf-8")
    install(api.rt, read_package(pkg))
    root = api.user("root", ["admin"])
    api.user("ann", ["agent"], {"region": "east", "email": "ann@example.cn"})
    api.user("carl", ["agent"], {"region": "east"})                        # no e-mail address: inbox only
    rec = api.http.post("/api/apps/mini/customer", json={"name": "李雷", "region": "east"}, headers=root).json()
    r = api.http.post(f"/api/apps/mini/customer/{rec['id']}/comments", json={"body": "@ann @carl 请跟进"}, headers=root)
    assert r.status_code == 201
    with api.rt.db.read() as conn:
        rows = [dict(x) for x in conn.execute(select(P.outbox).where(P.outbox.c.template == "comment_mention")).mappings()]
    assert [(m["channel"], m["recipient"], m["record_id"]) for m in rows] == [("email", "ann@example.cn", rec["id"])]
    assert rows[0]["rendered"] == "root 在「客户 #%d」的评论中提到了你：@ann @carl 请跟进" % rec["id"]


def test_comment_box_posts_with_htmx_csrf_and_mention_picker(mini, people):
    h = people
    ann = _browser(mini, "ann", ["agent"], {"region": "east"})
    page = ann.get(h["page"])
    token = CSRF_RE.search(page.text).group(1)
    assert ann.post(f"{h['page']}/comments", data={"body": "无令牌"}).status_code == 403        # CSRF
    ok = ann.post(f"{h['page']}/comments", data={"body": "第一行\n<b>第二行</b> @carl", "csrf_token": token},
                  headers={"HX-Request": "true"})
    assert ok.status_code == 200 and ok.text.lstrip().startswith('<section class="card"')
    assert "&lt;b&gt;第二行&lt;/b&gt;" in ok.text and 'data-user="carl"' in ok.text
    assert json.loads(ok.headers["HX-Trigger"])["loom:toast"]["message"] == "评论已发表"
    bad = ann.post(f"{h['page']}/comments", data={"body": "@bob 看看", "csrf_token": token}, headers={"HX-Request": "true"})
    assert bad.status_code == 200 and 'aria-invalid="true"' in bad.text and "无法提及 @bob" in bad.text
    assert "@bob 看看</textarea>" in bad.text                                  # what was typed is kept
    # the @ picker: only colleagues who can read this record
    names = [x["username"] for x in ann.get(f"{h['page']}/comments/_mentions?q=").json()["items"]]
    assert "carl" in names and "root" in names and "bob" not in names and "ann" not in names
    assert [x["username"] for x in ann.get(f"{h['page']}/comments/_mentions?q=CAR").json()["items"]] == ["carl"]
    assert ann.get(f"{h['page']}/comments/_mentions?q=%25").json()["items"] == []         # % is not a wildcard
    # delete from the page (own comment), without JavaScript: redirect back
    cid = mini.http.get(f"{h['url']}/comments", headers=h["ann"]).json()["items"][0]["id"]
    gone = ann.post(f"{h['page']}/comments/{cid}/delete", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith(h["page"])
    carl = _browser(mini, "carl", ["agent"], {"region": "east"})
    assert "在评论中提到了你" not in carl.get("/apps/mini/tasks").text            # the deleted comment's notice is gone


def test_unmatched_urls_get_an_html_page_in_browsers_and_json_under_api(mini, people):
    browser = _browser(mini, "ann", ["agent"], {"region": "east"})
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    r = browser.get("/no/such/page", headers=html)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "页面不存在" in r.text and "返回工作台</a>" in r.text and "Traceback" not in r.text
    browser.cookies.set("loom_lang", "en")
    assert "Page not found" in browser.get("/no/such/page", headers=html).text
    browser.cookies.delete("loom_lang")
    anon = mini.http.get("/nowhere", headers=html)                         # signed out: the standalone page
    assert anon.status_code == 404 and "<!doctype html>" in anon.text.lower() and 'href="/"' in anon.text
    wrong = browser.delete("/apps/mini", headers=html)
    assert wrong.status_code == 405 and "不支持此操作" in wrong.text and "GET" in wrong.headers.get("allow", "")
    api = mini.http.get("/api/no/such", headers={**html, **people["ann"]})
    assert api.status_code == 404 and api.headers["content-type"].startswith("application/json") and api.json()["errors"]
    assert mini.http.get("/no/such/page").headers["content-type"].startswith("application/json")   # scripts: JSON
