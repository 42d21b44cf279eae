"""The edit page does not hand personal data to a user for whom it is masked (both databases).

* Without ``view_pii`` a PII input -- of the record or of a child table row --
  is drawn empty with the masked value as placeholder and a "leave empty to
  keep" hint; the raw value is nowhere in the HTML.
* Posting the form back as drawn keeps the stored value (a required PII field
  left empty is not "missing"); typing a new value replaces it.
* With ``view_pii`` the input holds the raw value, as before.
"""
from __future__ import annotations

from html.parser import HTMLParser

from engine.installer import install
from engine.package import read_package
from tests.ui.test_api_transactions import _mini
from tests.ui.test_pages import _browser

KIN = {
    "app.yaml": ("name: kin\nversion: 1.0.0\ntitle: Kin\n"
                 "roles: {clerk: {}, officer: {permissions: [view_pii]}}\n"),
    "forms/household.yaml": ("name: household\nfields:\n  name: {type: text, required: true}\n"
                             "  id_no: {type: text, pii: true, required: true}\n"
                             "  members: {type: child_table, form: member}\n"
                             "access:\n  - {roles: [officer, clerk], actions: all}\n"),
    "forms/member.yaml": ("name: member\nchild: true\nfields:\n  name: {type: text, required: true}\n"
                          "  phone: {type: phone, pii: true}\n"),
}


class _Inputs(HTMLParser):
    """What a browser would post back: the edit form's inputs and textareas, with their placeholders."""

    def __init__(self, html: str):
        super().__init__()
        self.values: dict[str, str] = {}
        self.placeholders: dict[str, str] = {}
        self._textarea: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if not name or tag not in ("input", "textarea") or a.get("type") in ("checkbox", "radio", "search", "file"):
            return
        self.values[name] = a.get("value") or ""
        if a.get("placeholder"):
            self.placeholders[name] = a["placeholder"]
        self._textarea = name if tag == "textarea" else None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None


def _customer(api, headers, phone: str) -> int:
    r = api.http.post("/api/apps/mini/customer", json={"name": "韩梅梅", "phone": phone, "region": "east"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _stored(api, headers, app: str, form: str, rid: int) -> dict:
    r = api.http.get(f"/api/apps/{app}/{form}/{rid}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_edit_page_masks_the_phone_for_an_agent_and_shows_it_to_a_manager(api):
    h = _mini(api)
    rid = _customer(api, h["admin"], "13812345678")
    url = f"/apps/mini/forms/customer/{rid}/edit"
    page = _browser(api, "agnes", ["agent"], {"region": "east"}).get(url)
    assert page.status_code == 200
    assert "13812345678" not in page.text
    form = _Inputs(page.text)
    assert form.values["phone"] == "" and form.placeholders["phone"] == "138****5678"
    assert "留空则保留原值" in page.text
    page = _browser(api, "mona", ["manager"]).get(url)       # view_pii: the raw value, as before
    assert page.status_code == 200
    form = _Inputs(page.text)
    assert form.values["phone"] == "13812345678" and "phone" not in form.placeholders
    assert "留空则保留原值" not in page.text


def test_saving_the_form_as_drawn_keeps_the_phone_and_a_typed_one_replaces_it(api):
    h = _mini(api)
    rid = _customer(api, h["admin"], "13812345678")
    agent = _browser(api, "agnes", ["agent"], {"region": "east"})
    url = f"/apps/mini/forms/customer/{rid}/edit"
    form = _Inputs(agent.get(url).text).values
    form["phone"] = ""          # as the agent's browser sends it, whatever the page drew
    r = agent.post(url, data={**form, "region": "east", "tier": "gold"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    rec = _stored(api, h["admin"], "mini", "customer", rid)
    assert (rec["phone"], rec["tier"]) == ("13812345678", "gold")
    redrawn = agent.post(url, data={**form, "name": "名" * 21})            # too long: the form comes back
    assert redrawn.status_code == 422 and "13812345678" not in redrawn.text
    assert _Inputs(redrawn.text).placeholders["phone"] == "138****5678"
    r = agent.post(url, data={**form, "region": "east", "phone": "13900000009"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert _stored(api, h["admin"], "mini", "customer", rid)["phone"] == "13900000009"


def test_required_pii_and_child_table_cells_left_empty_are_kept(api, package_dir):
    install(api.rt, read_package(package_dir(KIN)))
    officer = api.user("olga", ["officer"])
    r = api.http.post("/api/apps/kin/household", json={
        "name": "张家", "id_no": "110101199003077777",
        "members": [{"name": "张三", "phone": "13900000001"}, {"name": "李四", "phone": "13900000002"}]}, headers=officer)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    clerk = _browser(api, "carl", ["clerk"])
    url = f"/apps/kin/forms/household/{rid}/edit"
    page = clerk.get(url)
    assert page.status_code == 200
    assert not any(raw in page.text for raw in ("110101199003077777", "13900000001", "13900000002"))
    form = _Inputs(page.text)
    assert form.values["id_no"] == "" and form.placeholders["id_no"].startswith("110")
    assert [form.placeholders[f"members.{i}.phone"] for i in (0, 1)] == ["139****0001", "139****0002"]
    r = clerk.post(url, data={**form.values, "members.1.phone": "13700000003"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    rec = _stored(api, officer, "kin", "household", rid)
    assert rec["id_no"] == "110101199003077777"
    assert [(m["name"], m["phone"]) for m in rec["members"]] == [("张三", "13900000001"), ("李四", "13700000003")]
    own = _Inputs(_browser(api, "otto", ["officer"]).get(url).text).values
    assert (own["id_no"], own["members.0.phone"]) == ("110101199003077777", "13900000001")
