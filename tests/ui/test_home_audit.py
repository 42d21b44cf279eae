"""The home page and a report's drill-down mask or audit the personal data they show (both databases).

* The home page lists a user's latest records of a form by their titles; a PII
  title is masked without ``view_pii`` and nothing is audited, and with it the
  page's read writes one ``pii.read`` row naming the form and the records listed.
* A drill-down (the records behind a bar of a chart) shows the records' own
  fields and title like a list page: masked without ``view_pii``, else audited
  in its read transaction.
"""
from __future__ import annotations

from engine.installer import install
from engine.package import read_package
from tests.ui.test_api_transactions import _pii_reads, _Transactions
from tests.ui.test_pages import _browser

PIM = {
    "app.yaml": ("name: pim\nversion: 1.0.0\ntitle: PIM\n"
                 "roles: {clerk: {}, officer: {permissions: [view_pii]}}\n"
                 "home:\n  clerk: [{form: client}]\n  officer: [{form: client}]\n"),
    "forms/client.yaml": ("name: client\ntitle_field: name\nfields:\n  name: {type: text, pii: true, required: true}\n"
                          "  phone: {type: phone, pii: true}\n  city: {type: text}\n"
                          "list:\n  columns: [phone, city]\n"
                          "access:\n  - {roles: [officer, clerk], actions: all}\n"),
    "reports/clients.yaml": ("reports:\n  - name: by_city\n    source: client\n    dimensions: [city]\n"
                             "    measures:\n      clients: {count: true}\n    chart: {kind: bar, x: city, y: [clients]}\n"),
}
PEOPLE = [("欧阳娜娜娜", "13812345678"), ("司马相如如", "13987654321")]
MASKED = ["欧***娜", "138****5678", "司***如", "139****4321"]


def _pim(api, package_dir) -> list[int]:
    install(api.rt, read_package(package_dir(PIM)))
    h = api.user("root", ["admin"])
    ids = []
    for name, phone in PEOPLE:
        r = api.http.post("/api/apps/pim/client", json={"name": name, "phone": phone, "city": "杭州"}, headers=h)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _as_officer(api, package_dir, monkeypatch, url: str) -> tuple[list[int], str, list]:
    """(client ids, the page, its pii.read rows) for a user with ``view_pii``, checking that the page
    is one transaction besides the session lookup: the read and its audit row."""
    ids = _pim(api, package_dir)
    officer = _browser(api, "olga", ["officer"])
    tx = _Transactions(api.rt.db, monkeypatch)
    page = officer.get(url)
    assert page.status_code == 200, page.text
    assert (tx.reads, tx.writes) == (1, 1)
    rows = _pii_reads(api)
    assert [(r.actor, r.form, r.record_id) for r in rows] == [("olga", "client", None)]
    return ids, page.text, rows


def test_the_home_page_masks_pii_titles_without_view_pii_and_audits_nothing(api, package_dir):
    _pim(api, package_dir)
    page = _browser(api, "carl", ["clerk"]).get("/apps/pim")
    assert page.status_code == 200, page.text
    assert "欧***娜" in page.text and "司***如" in page.text
    assert not any(name in page.text for name, _ in PEOPLE)
    assert _pii_reads(api) == []


def test_the_home_page_showing_pii_titles_is_audited_once(api, package_dir, monkeypatch):
    ids, page, rows = _as_officer(api, package_dir, monkeypatch, "/apps/pim")
    assert all(name in page for name, _ in PEOPLE)
    assert rows[0].details == {"fields": ["name"], "ids": sorted(ids), "count": 2, "via": "page"}


def test_a_drill_down_masks_pii_without_view_pii_and_audits_nothing(api, package_dir):
    _pim(api, package_dir)
    page = _browser(api, "carl", ["clerk"]).get("/apps/pim/reports/by_city/drill?city=杭州")
    assert page.status_code == 200, page.text
    assert all(m in page.text for m in MASKED)
    assert not any(name in page.text or phone in page.text for name, phone in PEOPLE)
    assert _pii_reads(api) == []


def test_a_drill_down_showing_pii_is_audited_once_in_its_read(api, package_dir, monkeypatch):
    ids, page, rows = _as_officer(api, package_dir, monkeypatch, "/apps/pim/reports/by_city/drill?city=杭州")
    assert all(name in page and phone in page for name, phone in PEOPLE)
    assert rows[0].details == {"fields": ["name", "phone"], "ids": sorted(ids, reverse=True), "count": 2, "via": "page"}


def test_the_drill_down_api_audits_the_personal_data_it_returns(api, package_dir):
    """``GET /api/apps/{app}/reports/{r}/drill`` returns the records' fields like the record API:
    unmasked for a user with view_pii -- and audited in the same read -- masked for the others."""
    ids = _pim(api, package_dir)
    url = "/api/apps/pim/reports/by_city/drill?city=杭州"
    clerk = api.http.get(url, headers=api.user("carl", ["clerk"]))
    assert clerk.status_code == 200, clerk.text
    assert {i["phone"] for i in clerk.json()["items"]} == {"138****5678", "139****4321"}
    assert _pii_reads(api) == []
    officer = api.http.get(url, headers=api.user("olga", ["officer"]))
    assert officer.status_code == 200, officer.text
    assert {i["phone"] for i in officer.json()["items"]} == {phone for _, phone in PEOPLE}
    rows = _pii_reads(api)
    assert [(r.actor, r.form) for r in rows] == [("olga", "client")]
    assert sorted(rows[0].details["ids"]) == sorted(ids) and set(rows[0].details["fields"]) == {"name", "phone"}
