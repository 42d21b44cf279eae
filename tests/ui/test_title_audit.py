"""Titles of linked records that are personal data are masked or audited like the data itself (both databases).

* A form titled by a PII field (a client known by name) shows that title on
  every page that links to its records: link cells, filter options, link
  pickers.  Without ``view_pii`` the title is masked and nothing is audited.
* With ``view_pii`` it is shown, and the page's read transaction writes one
  ``pii.read`` row for the linked form naming the records whose titles it showed.
* The edit form redrawn after a validation error (422) shows the stored values
  as the edit page does, and is audited as the edit page is.
"""
from __future__ import annotations

from engine.installer import install
from engine.package import read_package
from tests.ui.test_api_transactions import _pii_reads
from tests.ui.test_edit_pii import _Inputs
from tests.ui.test_pages import _browser

CRM = {
    "app.yaml": ("name: crm\nversion: 1.0.0\ntitle: CRM\n"
                 "roles: {clerk: {}, officer: {permissions: [view_pii]}}\n"),
    "forms/client.yaml": ("name: client\ntitle_field: name\nfields:\n  name: {type: text, pii: true, required: true}\n"
                          "  city: {type: text}\naccess:\n  - {roles: [officer, clerk], actions: all}\n"),
    "forms/order.yaml": ("name: order\ntitle_field: subject\nfields:\n  subject: {type: text, required: true, max_length: 20}\n"
                         "  client: {type: link, form: client}\n"
                         "list:\n  columns: [subject, client]\n  filters: [client]\n"
                         "access:\n  - {roles: [officer, clerk], actions: all}\n"),
}


def _crm(api, package_dir) -> dict:
    install(api.rt, read_package(package_dir(CRM)))
    h = api.user("root", ["officer"])
    client = api.http.post("/api/apps/crm/client", json={"name": "欧阳娜娜娜", "city": "杭州"}, headers=h).json()
    order = api.http.post("/api/apps/crm/order", json={"subject": "报价", "client": client["id"]}, headers=h).json()
    assert api.http.get("/api/apps/crm/client", headers=h).status_code == 200
    return {"client": client["id"], "order": order["id"]}


def test_a_linked_pii_title_is_masked_without_view_pii_and_nothing_is_audited(api, package_dir):
    ids = _crm(api, package_dir)
    before = _pii_reads(api)
    clerk = _browser(api, "carl", ["clerk"])
    for url in ("/apps/crm/forms/order", f"/apps/crm/forms/order/{ids['order']}",
                f"/apps/crm/forms/order/{ids['order']}/edit", "/apps/crm/forms/order/new",
                "/apps/crm/forms/order/_link/client?q="):
        page = clerk.get(url)
        assert page.status_code == 200, (url, page.text)
        assert "欧阳娜娜娜" not in page.text and "欧***娜" in page.text, url
    assert _pii_reads(api) == before


def test_a_linked_pii_title_shown_with_view_pii_is_audited_once_per_page(api, package_dir):
    ids = _crm(api, package_dir)
    before = len(_pii_reads(api))
    officer = _browser(api, "olga", ["officer"])
    urls = ("/apps/crm/forms/order", f"/apps/crm/forms/order/{ids['order']}",
            f"/apps/crm/forms/order/{ids['order']}/edit", "/apps/crm/forms/order/new",
            "/apps/crm/forms/order/_link/client?q=")
    for url in urls:
        page = officer.get(url)
        assert page.status_code == 200 and "欧阳娜娜娜" in page.text, (url, page.text)
    rows = _pii_reads(api)[before:]
    assert [(r.actor, r.form, r.record_id) for r in rows] == [("olga", "client", ids["client"])] * len(urls)
    assert all(r.details == {"fields": ["name"], "ids": [ids["client"]], "count": 1, "on": "order", "via": "page"}
               for r in rows)


def test_the_edit_form_redrawn_after_an_error_is_audited_like_the_edit_page(api, package_dir):
    ids = _crm(api, package_dir)
    officer = _browser(api, "olga", ["officer"])
    url = f"/apps/crm/forms/client/{ids['client']}/edit"
    form = _Inputs(officer.get(url).text).values
    before = len(_pii_reads(api))
    redrawn = officer.post(url, data={**form, "name": ""})           # required: the form comes back
    assert redrawn.status_code == 422 and "欧阳娜娜娜" in redrawn.text    # the stored name, as the title
    rows = _pii_reads(api)[before:]
    assert [(r.actor, r.form, r.record_id, r.details["fields"]) for r in rows] == [
        ("olga", "client", ids["client"], ["name"])]
