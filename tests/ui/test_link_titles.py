"""A form whose title is a link (a survey known by its customer) is shown by the linked record's
title -- its heading, and links to it from other forms -- not by ``#id`` (both databases)."""
from __future__ import annotations

from engine.crypto import mask
from engine.installer import install
from engine.package import read_package
from tests.ui.test_api_transactions import _pii_reads
from tests.ui.test_pages import _browser

FILES = {
    "app.yaml": "name: cx\nversion: 1.0.0\ntitle: CX\nroles: {clerk: {}, officer: {permissions: [view_pii]}}\n",
    "forms/customer.yaml": ("name: customer\ntitle_field: name\nfields:\n"
                            "  name: {type: text, required: true, pii: true}\n"
                            "access:\n  - {roles: [clerk, officer], actions: all}\n"),
    "forms/survey.yaml": ("name: survey\ntitle_field: customer\nfields:\n"
                          "  customer: {type: link, form: customer, required: true}\n"
                          "  score: {type: number}\n"
                          "access:\n  - {roles: [clerk, officer], actions: all}\n"),
    "forms/note.yaml": ("name: note\ntitle_field: text\nfields:\n  text: {type: text, required: true}\n"
                        "  survey: {type: link, form: survey}\n"
                        "list:\n  columns: [text, survey]\n"
                        "access:\n  - {roles: [clerk, officer], actions: all}\n"),
}


def _data(api, package_dir) -> dict:
    install(api.rt, read_package(package_dir(FILES)))
    h = api.user("root", ["officer"])
    customer = api.http.post("/api/apps/cx/customer", json={"name": "欧阳娜娜"}, headers=h).json()
    survey = api.http.post("/api/apps/cx/survey", json={"customer": customer["id"], "score": 9}, headers=h).json()
    api.http.post("/api/apps/cx/note", json={"text": "回访已完成", "survey": survey["id"]}, headers=h)
    return {"customer": customer["id"], "survey": survey["id"]}


def test_a_record_titled_by_a_link_is_shown_by_the_linked_title_and_audited(api, package_dir):
    ids = _data(api, package_dir)
    before = len(_pii_reads(api))
    officer = _browser(api, "olga", ["officer"])
    detail = officer.get(f"/apps/cx/forms/survey/{ids['survey']}")
    assert detail.status_code == 200 and "<h1" in detail.text
    heading = detail.text[detail.text.index("<h1"):detail.text.index("</h1>")]
    assert "欧阳娜娜" in heading and f"#{ids['survey']}" not in heading and f"#{ids['customer']}" not in heading
    notes = officer.get("/apps/cx/forms/note")
    assert notes.status_code == 200 and "欧阳娜娜" in notes.text       # the link cell names the survey by its customer
    # the customer's name is personal data: each page that showed it wrote its pii.read row
    assert [(r.actor, r.form) for r in _pii_reads(api)[before:]] == [("olga", "customer"), ("olga", "customer")]


def test_without_view_pii_the_linked_title_is_masked(api, package_dir):
    ids = _data(api, package_dir)
    clerk = _browser(api, "carl", ["clerk"])
    for url in (f"/apps/cx/forms/survey/{ids['survey']}", "/apps/cx/forms/note"):
        page = clerk.get(url)
        assert page.status_code == 200 and "欧阳娜娜" not in page.text and mask("欧阳娜娜") in page.text, url
