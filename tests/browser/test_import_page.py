"""The import page in a real Chromium: a CSV of a few thousand rows, the progress bar, then the result;
a bad row shown by row and field; an export button that shows its spinner and saves the file."""
from __future__ import annotations

import pytest

from tests.browser.conftest import save_screenshot
from tests.browser.test_web_app import _no_js_errors, sign_in, site  # noqa: F401 - `site` is the server fixture

pytestmark = pytest.mark.browser

ROWS = 3000


def _csv(tmp_path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_import_csv_shows_progress_then_result(page, site, tmp_path):  # noqa: F811
    big = _csv(tmp_path, "customers.csv", ["姓名,手机号码,等级"] + [f"导入客户{i},137{i:08d},regular" for i in range(ROWS)])
    sign_in(page, site, "admin", "/apps/shop/forms/customer")
    page.click("#import-records")
    page.wait_for_selector("#import-form")
    page.set_input_files("#import-file", big)
    page.click("#import-start")
    page.wait_for_selector("#import-progress")               # the bar shows first (then polls every 0.5 s)
    assert page.locator("#import-job").get_attribute("data-status") in ("queued", "running", "done")
    save_screenshot(page, "import-progress")
    page.wait_for_selector("#import-result[data-status=done]", timeout=60_000)
    assert f"写入 {ROWS:,} 行" in page.inner_text("#import-result")
    assert page.locator("#import-progress").count() == 0
    save_screenshot(page, "import-result")

    # a bad row: nothing written, the problem listed with its row number and the field's label
    bad = _csv(tmp_path, "bad.csv", ["姓名,手机号码,等级", "甲,13600000001,regular", "乙,13600000002,platinum"])
    page.click("a:has-text('再导入一个文件')")
    page.wait_for_selector("#import-form")
    page.set_input_files("#import-file", bad)
    page.click("#import-start")
    page.wait_for_selector("#import-result[data-status=failed]", timeout=60_000)
    row = page.locator("#import-errors tbody tr").first.locator("td").all_inner_texts()
    assert row[0] == "2" and row[1] == "等级", row
    save_screenshot(page, "import-failed")

    # the list has the imported rows; export shows its busy state and the file arrives
    page.goto(f"{site.url}/apps/shop/forms/customer?q=导入客户2999")
    page.wait_for_selector("#list-results")
    assert "导入客户2999" in page.inner_text("#list-results")
    with page.expect_download() as dl:
        page.click("a[data-export]:has-text('导出 CSV')")
    assert dl.value.suggested_filename == "customer.csv"
    page.wait_for_selector("a[data-export]:not([aria-busy])")
    _no_js_errors(page)
