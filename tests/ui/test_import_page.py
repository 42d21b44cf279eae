"""The import page: upload through htmx, a progress fragment that polls, then the per-row result (both databases)."""
from __future__ import annotations

import re
import time

from engine.installer import install
from engine.package import read_package
from tests.conftest import FIXTURES
from tests.ui.test_pages import _browser, _csrf

POLL_RE = re.compile(r'hx-get="([^"]+/import/jobs/[0-9a-f]+)"')


def _submit(client, body: bytes, lang: str = "zh", **fields):
    client.cookies.set("loom_lang", lang)
    token = _csrf(client, "/apps/mini/forms/customer/import")
    return client.post("/apps/mini/forms/customer/import", data={"mode": "all", **fields},
                       files={"file": ("c.csv", body, "text/csv")}, headers={"X-CSRF-Token": token, "HX-Request": "true"})


def _follow(client, html: str) -> str:
    deadline = time.monotonic() + 30
    while (m := POLL_RE.search(html)) and time.monotonic() < deadline:
        time.sleep(0.05)
        r = client.get(m.group(1), headers={"HX-Request": "true"})
        assert r.status_code == 200, r.text
        html = r.text
    return html


def test_import_page_progress_then_result(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    client = _browser(api, "boss", ["admin"])
    page = client.get("/apps/mini/forms/customer/import")
    assert page.status_code == 200 and 'hx-encoding="multipart/form-data"' in page.text
    assert 'href="/apps/mini/forms/customer/import"' in client.get("/apps/mini/forms/customer").text
    body = ("name,phone,region\n" + "".join(f"客户{i},139{i:08d},east\n" for i in range(1500))).encode()
    first = _submit(client, body)
    assert first.status_code == 200 and 'id="import-progress"' in first.text and "hx-trigger=\"load delay:500ms\"" in first.text
    done = _follow(client, first.text)
    assert 'id="import-result"' in done and 'data-status="done"' in done and "写入 1,500 行" in done
    # a bad row: nothing written, the problem shown with its row and the field's label, in English on request
    bad = "name,region\n甲,east\n乙,mars\n".encode()
    out = _follow(client, _submit(client, bad, lang="en").text)
    assert 'data-status="failed"' in out and "Import failed; nothing was written" in out
    assert re.search(r'<td class="num">2</td><td>region</td>', out), out
    other = _browser(api, "nosy", ["agent"], {"region": "east"})
    job_url = POLL_RE.search(first.text).group(1)
    assert other.get(job_url).status_code == 404


def test_import_page_without_a_file_or_permission(api):
    install(api.rt, read_package(FIXTURES / "mini_app"))
    client = _browser(api, "boss", ["admin"])
    token = _csrf(client, "/apps/mini/forms/customer/import")
    r = client.post("/apps/mini/forms/customer/import", data={"mode": "all"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and "请选择要导入的文件" in r.text
    nobody = _browser(api, "guest", ["viewer"])
    assert nobody.get("/apps/mini/forms/customer/import").status_code in (403, 404)
