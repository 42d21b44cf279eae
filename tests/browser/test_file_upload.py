"""Attachment and image fields in a real Chromium: choose a file, it uploads at once,
a wrong one is refused in place, save, and the detail page shows the thumbnail and link.
Also at phone width (375px)."""
from __future__ import annotations

import os
import struct
import threading
import time
import types
import zlib

import pytest

from tests.browser.conftest import save_screenshot
from tests.browser.test_web_app import _env, _free_port, _no_js_errors, write_package

pytestmark = pytest.mark.browser
PASSWORD = "demo-pass-123"

APP = {
    "app.yaml": """\
name: garage
version: 1.0.0
title: {zh: 车间, en: Garage}
timezone: Asia/Shanghai
default_language: zh
roles:
  tech: {label: {zh: 技师, en: Technician}}
menus:
  - {label: {zh: 检查单, en: Inspections}, form: inspection}
""",
    "forms/inspection.yaml": """\
name: inspection
label: {zh: 车辆检查, en: Inspection}
title_field: plate
fields:
  plate: {type: text, label: {zh: 车牌, en: Plate}, required: true}
  photos: {type: image, label: {zh: 车辆照片, en: Photos}, multiple: true, max: 4, max_size: 1MB}
  report: {type: attachment, label: {zh: 检测报告, en: Report}, accept: [application/pdf]}
""",
}

def _png(width: int = 2, height: int = 2) -> bytes:
    """A real (red) PNG the browser can decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\xff\0\0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = _png()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("files-web")
    with _env(LOOM_SECRET_KEY=os.environ.get("LOOM_SECRET_KEY") or "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
              LOOM_FILES_DIR=str(root / "store")):
        import uvicorn

        from engine.auth import upsert_user
        from engine.installer import install
        from engine.package import read_package
        from ui.app import create_app
        from ui.wiring import build_runtime

        rt = build_runtime(f"sqlite:///{root / 'loom.db'}")
        install(rt, read_package(write_package(root / "garage", APP)), actor="test")
        with rt.db.write() as conn:
            upsert_user(conn, rt.clock.now(), "tom", ["tech"], {}, password=PASSWORD, display_name="唐技师")
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True, name="loom-files-web")
        thread.start()
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}", rt=rt, root=root)
        server.should_exit = True
        thread.join(10)
        rt.db.dispose()


def _sign_in(page, site, next_path):
    page.goto(f"{site.url}{next_path}")
    page.fill("#username", "tom")
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#record-form")
    # the form can be there before the deferred pages.js has run and hooked the file inputs: a file
    # chosen in between is never uploaded (this test timed out now and then in CI runs)
    page.wait_for_load_state("load")


def _upload_and_save(page, site, plate: str, shot: str) -> None:
    page.fill("#f-plate", plate)
    # a wrong file first: refused in place, with the server's bilingual message, nothing listed
    page.set_input_files("#f-report", files=[{"name": "报告.pdf", "mimeType": "application/pdf", "buffer": b"<html>not a pdf</html>"}])
    page.wait_for_function("() => document.querySelector('#fld-report .field-error').textContent.includes('报告.pdf')")
    assert page.locator("#fld-report .file-item").count() == 0
    assert page.get_attribute("#f-report", "aria-invalid") == "true"
    # a real photo: uploaded on choose, listed with its thumbnail and a remove button
    page.set_input_files("#f-photos", files=[{"name": "前脸.png", "mimeType": "image/png", "buffer": PNG}])
    page.wait_for_selector("#fld-photos .file-item img.file-thumb:not([hidden])")
    assert "前脸.png" in page.inner_text("#fld-photos .file-list")
    assert page.get_attribute("#fld-photos .file-item [data-file-remove]", "aria-label").endswith("前脸.png")
    # a second one, removed again with the keyboard
    page.set_input_files("#f-photos", files=[{"name": "侧面.png", "mimeType": "image/png", "buffer": PNG}])
    page.wait_for_function("() => document.querySelectorAll('#fld-photos .file-item').length === 2")
    page.focus("#fld-photos .file-item:nth-child(2) [data-file-remove]")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#fld-photos .file-item').length === 1")
    save_screenshot(page, shot, full_page=True)
    page.click("#save")
    page.wait_for_selector("#saved-flash")


def test_upload_image_save_and_see_thumbnail(page, site):
    _sign_in(page, site, "/apps/garage/forms/inspection/new")
    _upload_and_save(page, site, "粤B12345", "file-upload-form")
    box = page.locator('[data-field="photos"]')
    thumb = box.locator("img.file-thumb")
    assert thumb.get_attribute("alt") == "前脸.png"
    page.wait_for_function("() => { const i = document.querySelector('[data-field=photos] img.file-thumb'); return i.complete && i.naturalWidth === 2; }")
    link = box.locator("a.file-name")
    assert link.inner_text() == "前脸.png"
    response = page.request.get(site.url + link.get_attribute("href"))
    assert response.status == 200 and response.body() == PNG
    assert response.headers["content-disposition"].startswith("attachment;")
    assert "侧面" not in page.inner_text(".detail-main")
    save_screenshot(page, "file-upload-detail", full_page=True)
    # the edit page keeps the file; saving again doesn't lose it
    page.click("#edit-record")
    page.wait_for_selector("#fld-photos .file-item")
    page.click("#save")
    page.wait_for_selector("#saved-flash")
    assert page.locator('[data-field="photos"] img.file-thumb').count() == 1
    _no_js_errors(page)


def test_upload_on_a_phone(phone_page, site):
    page = phone_page
    _sign_in(page, site, "/apps/garage/forms/inspection/new")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    _upload_and_save(page, site, "粤B54321", "phone-file-upload-form")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    assert page.locator('[data-field="photos"] img.file-thumb').is_visible()
    save_screenshot(page, "phone-file-upload-detail", full_page=True)
    _no_js_errors(page)
