"""The HTML pages audit the personal data they show as the JSON API does (both databases).

* A page that shows unmasked personal data writes one ``pii.read`` audit row
  in the transaction that reads it (``ui.audited.audited_read``), not in a
  second transaction afterwards.
* Lookups that show a PII field of a linked record and child tables with PII
  fields are audited too.
* When the audit row can't be written the page is an error page without the
  personal data.
* A user for whom PII is masked -- lookups included -- writes nothing.
"""
from __future__ import annotations

from engine.installer import install
from engine.package import read_package
from tests.ui.test_api_transactions import HOUSEHOLD, _audit_fails, _mini, _pii_reads, _Transactions
from tests.ui.test_pages import _browser


def _customer(api, headers, name: str, phone: str) -> dict:
    r = api.http.post("/api/apps/mini/customer", json={"name": name, "phone": phone, "region": "east"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _ticket(api, headers, customer: dict) -> dict:
    r = api.http.post("/api/apps/mini/ticket", json={"subject": "刹车异响", "severity": "low", "customer": customer["id"]},
                      headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_page_showing_personal_data_is_audited_once_in_its_read_transaction(api, monkeypatch):
    h = _mini(api)
    ids = [_customer(api, h["admin"], f"客户{i}", f"1350000000{i}")["id"] for i in range(3)]
    web = _browser(api, "mona", ["manager"])
    tx = _Transactions(api.rt.db, monkeypatch)
    detail = web.get(f"/apps/mini/forms/customer/{ids[1]}")
    assert detail.status_code == 200 and "13500000001" in detail.text
    assert (tx.reads, tx.writes) == (1, 1)      # the session lookup, then the read and its audit row in one
    tx.reset()
    listed = web.get("/apps/mini/forms/customer?order=id")
    assert listed.status_code == 200 and all(f"1350000000{i}" in listed.text for i in range(3))
    assert (tx.reads, tx.writes) == (1, 1)
    rows = _pii_reads(api)
    assert [(r.actor, r.form, r.record_id) for r in rows] == [("mona", "customer", ids[1]), ("mona", "customer", None)]
    assert rows[0].details == {"fields": ["phone"], "ids": [ids[1]], "count": 1, "via": "page"}
    assert rows[1].details == {"fields": ["phone"], "ids": ids, "count": 3, "via": "page"}


def test_lookups_and_child_tables_showing_personal_data_are_audited(api, package_dir):
    h = _mini(api)
    ticket = _ticket(api, h["admin"], _customer(api, h["admin"], "李雷", "13700000000"))
    web = _browser(api, "mona", ["manager"])
    page = web.get(f"/apps/mini/forms/ticket/{ticket['id']}")      # the ticket has no PII field of its own
    assert page.status_code == 200 and "13700000000" in page.text
    install(api.rt, read_package(package_dir(HOUSEHOLD)))
    officer = api.user("olga", ["officer"])
    home = api.http.post("/api/apps/kin/household", json={"name": "张家", "members": [{"name": "张三", "phone": "13900000000"}]},
                         headers=officer).json()
    page = _browser(api, "olga", ["officer"]).get(f"/apps/kin/forms/household/{home['id']}")
    assert page.status_code == 200 and "13900000000" in page.text
    rows = _pii_reads(api)
    assert [(r.actor, r.form, r.record_id, r.details["fields"]) for r in rows] == [
        ("root", "ticket", ticket["id"], ["customer_phone"]),     # the API create's answer (set-up)
        ("mona", "ticket", ticket["id"], ["customer_phone"]), ("olga", "household", home["id"], ["members.phone"])]


def test_no_personal_data_is_shown_when_its_audit_row_cannot_be_written(api):
    h = _mini(api)
    rec = _customer(api, h["admin"], "韩梅梅", "13812345678")
    ticket = _ticket(api, h["admin"], rec)
    manager, agent = _browser(api, "mona", ["manager"]), _browser(api, "agnes", ["agent"], {"region": "east"})
    _audit_fails(api)
    for url in ("/apps/mini/forms/customer", f"/apps/mini/forms/customer/{rec['id']}",
                f"/apps/mini/forms/customer/{rec['id']}/edit", f"/apps/mini/forms/ticket/{ticket['id']}"):
        page = manager.get(url)
        assert page.status_code == 500, (url, page.text)
        assert "13812345678" not in page.text and "韩梅梅" not in page.text and "Traceback" not in page.text
    masked = agent.get(f"/apps/mini/forms/customer/{rec['id']}")          # nothing to audit: shown
    assert masked.status_code == 200 and "138****5678" in masked.text and "13812345678" not in masked.text
    assert [r.actor for r in _pii_reads(api)] == ["root"]      # only the set-up's API create, before the outage


def test_a_user_for_whom_personal_data_is_masked_writes_nothing(api, monkeypatch):
    h = _mini(api)
    rec = _customer(api, h["admin"], "王芳", "13600000001")
    ticket = _ticket(api, h["admin"], rec)
    agent = _browser(api, "agnes", ["agent"], {"region": "east"})
    tx = _Transactions(api.rt.db, monkeypatch)
    for url in (f"/apps/mini/forms/customer/{rec['id']}", "/apps/mini/forms/customer",
                f"/apps/mini/forms/ticket/{ticket['id']}"):        # the ticket shows the phone only by its lookup
        page = agent.get(url)
        assert page.status_code == 200 and "136****0001" in page.text and "13600000001" not in page.text, url
    assert (tx.reads, tx.writes) == (6, 0)      # per page: the session lookup and one read transaction
    assert [r.actor for r in _pii_reads(api)] == ["root"]      # only the set-up's API create
