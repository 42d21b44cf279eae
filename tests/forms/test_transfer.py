"""CSV/XLSX import (dry run, all-or-nothing, skip bad rows) and export (both databases)."""
from __future__ import annotations

import io

from openpyxl import Workbook, load_workbook

from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES

CSV_OK = "姓名,手机,region,visits\n张三,13800000001,east,3\n李四,13800000002,south,\n"
CSV_BAD = "name,phone,region,visits\n张三,13800000011,east,3\n,13800000012,north,x\n王五,13800000013,mars,1\n"


def setup(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    return api.user("root", ["admin"]), api.user("agent", ["agent"], {"region": "east"})


def upload(api, h, name, body, **params):
    return api.http.post("/api/apps/mini/customer/_import", params=params, headers=h,
                         files={"file": (name, body, "application/octet-stream")})


def total(api, h):
    return api.http.get("/api/apps/mini/customer", headers=h).json()["total"]


def test_csv_import_with_labels_as_headers(api):
    h, _ = setup(api)
    r = upload(api, h, "c.csv", CSV_OK.encode("utf-8-sig"))
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 2 and r.json()["errors"] == []
    names = {c["name"]: c for c in api.http.get("/api/apps/mini/customer", headers=h).json()["items"]}
    assert names["张三"]["visits"] == 3 and names["李四"]["phone"] == "13800000002"


def test_dry_run_reports_row_and_field_and_writes_nothing(api):
    h, _ = setup(api)
    r = upload(api, h, "bad.csv", CSV_BAD.encode(), dry_run="true").json()
    assert r["dry_run"] is True and r["total"] == 3
    where = {(e["row"], e["field"]) for e in r["errors"]}
    assert {(2, "name"), (2, "visits"), (3, "region")} <= where, r["errors"]
    assert all(e["message"] for e in r["errors"])
    assert total(api, h) == 0


def test_all_or_nothing_and_skip_modes(api):
    h, _ = setup(api)
    r = upload(api, h, "bad.csv", CSV_BAD.encode())
    assert r.status_code == 422 and any(e.get("row") == 2 and "第 2 行" in e["message"] for e in r.json()["errors"])
    assert total(api, h) == 0
    r = upload(api, h, "bad.csv", CSV_BAD.encode(), mode="skip").json()
    assert r["inserted"] == 1 and r["error_count"] >= 2
    assert total(api, h) == 1


def test_xlsx_import_and_gb18030_csv(api):
    h, _ = setup(api)
    wb = Workbook()
    ws = wb.active
    ws.append(["name", "phone", "region", "visits"])
    ws.append(["赵六", "13900000001", "east", 7])
    buf = io.BytesIO()
    wb.save(buf)
    assert upload(api, h, "c.xlsx", buf.getvalue()).json()["inserted"] == 1
    assert upload(api, h, "c.csv", "name,region\n钱七,north\n".encode("gb18030")).json()["inserted"] == 1
    assert total(api, h) == 2


def test_unknown_column_is_reported(api):
    h, _ = setup(api)
    r = upload(api, h, "c.csv", b"name,colour\nA,red\n")
    assert r.status_code == 422 and "colour" in r.json()["errors"][0]["message"]


def test_export_respects_permissions_and_masks_pii(api):
    h, agent = setup(api)
    upload(api, h, "c.csv", CSV_OK.encode())
    r = api.http.get("/api/apps/mini/customer/_export?format=csv", headers=agent)
    assert r.status_code == 200
    text = r.content.decode("utf-8-sig").splitlines()
    assert len(text) == 2 and "张三" in text[1] and "138****0001" in text[1] and "李四" not in r.text
    x = api.http.get("/api/apps/mini/customer/_export?format=xlsx&lang=en", headers=h)
    ws = load_workbook(io.BytesIO(x.content)).active
    rows = list(ws.values)
    assert rows[0][1] == "name" or rows[0][1] == "Name"
    assert len(rows) == 3 and "13800000001" in [str(c) for c in rows[1] + rows[2]]
