"""A lookup field shows the value of a linked record's field as that field shows it: a customer's
tier on a complaint reads 金卡客户 (its option label), not the stored value ``gold`` (both databases)."""
from __future__ import annotations

from engine.installer import install
from engine.package import read_package
from tests.ui.test_pages import _browser

SHOP = {
    "app.yaml": "name: shop\nversion: 1.0.0\ntitle: Shop\nroles: {clerk: {}}\n",
    "forms/customer.yaml": (
        "name: customer\ntitle_field: name\nfields:\n"
        "  name: {type: text, required: true}\n"
        "  tier:\n    type: select\n    options:\n"
        "      - {value: gold, label: {zh: 金卡客户, en: Gold}}\n"
        "      - {value: regular, label: {zh: 普通客户, en: Regular}}\n"
        "  since: {type: date}\n"
        "access:\n  - {roles: [clerk], actions: all}\n"),
    "forms/ticket.yaml": (
        "name: ticket\ntitle_field: subject\nfields:\n"
        "  subject: {type: text, required: true}\n"
        "  customer: {type: link, form: customer}\n"
        "  customer_tier: {type: lookup, via: customer, field: tier, label: {zh: 客户等级, en: Customer tier}}\n"
        "  customer_since: {type: lookup, via: customer, field: since, label: {zh: 客户起始日, en: Customer since}}\n"
        "list:\n  columns: [subject, customer, customer_tier]\n"
        "access:\n  - {roles: [clerk], actions: all}\n"),
}


def test_a_lookup_of_a_select_shows_the_option_label_on_pages_and_in_exports(api, package_dir):
    install(api.rt, read_package(package_dir(SHOP)))
    h = api.user("root", ["clerk"])
    customer = api.http.post("/api/apps/shop/customer", json={"name": "王建国", "tier": "gold", "since": "2025-03-08"},
                             headers=h).json()
    ticket = api.http.post("/api/apps/shop/ticket", json={"subject": "保养预约", "customer": customer["id"]}, headers=h)
    assert ticket.status_code == 201, ticket.text
    ticket = ticket.json()
    assert ticket["customer_tier"] == "gold" and ticket["customer_since"] == "2025-03-08"   # the API keeps values

    web = _browser(api, "cathy", ["clerk"])
    detail = web.get(f"/apps/shop/forms/ticket/{ticket['id']}")
    assert detail.status_code == 200 and "金卡客户" in detail.text and ">gold<" not in detail.text
    listing = web.get("/apps/shop/forms/ticket")
    assert listing.status_code == 200 and "金卡客户" in listing.text
    csv = web.get("/api/apps/shop/ticket/_export?format=csv")      # the list page's 导出 CSV link
    assert csv.status_code == 200, csv.text
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0].split(",")[3] == "客户等级" and lines[1].split(",")[3] == "金卡客户"
    assert lines[1].split(",")[2] == "王建国"          # a linked record by its title, not #id

    english = web.get(f"/lang/en?next=/apps/shop/forms/ticket/{ticket['id']}", follow_redirects=True)
    assert english.status_code == 200 and ">Gold<" in english.text.replace("\n", "").replace(" ", "")
    lines = web.get("/api/apps/shop/ticket/_export?format=csv").content.decode("utf-8-sig").splitlines()
    assert lines[0].split(",")[3] == "Customer tier" and lines[1].split(",")[3] == "Gold"


def test_an_export_names_linked_records_and_masks_a_personal_title(api, package_dir):
    files = dict(SHOP)
    files["app.yaml"] = "name: shop\nversion: 1.0.0\ntitle: Shop\nroles: {clerk: {}, officer: {permissions: [view_pii]}}\n"
    files["forms/customer.yaml"] = SHOP["forms/customer.yaml"].replace(
        "  name: {type: text, required: true}", "  name: {type: text, required: true, pii: true}").replace(
        "roles: [clerk]", "roles: [clerk, officer]")
    files["forms/ticket.yaml"] = SHOP["forms/ticket.yaml"].replace("roles: [clerk]", "roles: [clerk, officer]")
    install(api.rt, read_package(package_dir(files)))
    h = api.user("root", ["officer"])
    customer = api.http.post("/api/apps/shop/customer", json={"name": "欧阳娜娜", "tier": "gold"}, headers=h).json()
    api.http.post("/api/apps/shop/ticket", json={"subject": "保养预约", "customer": customer["id"]}, headers=h)
    for who, roles in (("cathy", ["clerk"]), ("olga", ["officer"])):
        csv = _browser(api, who, roles).get("/api/apps/shop/ticket/_export?format=csv")
        assert csv.status_code == 200, csv.text
        row = csv.content.decode("utf-8-sig").splitlines()[1].split(",")
        # personal data is shown only where its read is audited record by record (the pages); an
        # export writes one audit row for the whole file, so a personal title stays masked
        assert row[2] != f"#{customer['id']}" and "欧阳娜娜" not in row[2] and "*" in row[2], (who, row)
