"""The front-end foundation in a real browser: ui/static/styleguide.html served by a
tiny http.server, checked with Playwright + Debian Chromium.

Covers the vendored assets (ECharts + China map, CodeMirror bundle, htmx) and
loom.js hooks (charts + drill-down, lint markers, error toasts, confirm, refresh),
plus the phone layout. Screenshots land in test-artifacts/screenshots/.
"""
from __future__ import annotations

import itertools
import json
import urllib.parse

import pytest

from tests.browser.conftest import ROOT, save_screenshot, serve_directory

pytestmark = pytest.mark.browser

STATIC = ROOT / "ui" / "static"

_TRACEBACK_PAGE = """<!doctype html><html><head><title>500 Internal Server Error</title></head><body>
<h1>Internal Server Error</h1>
<pre>Traceback (most recent call last):
  File "/srv/loom/engine/records.py", line 120, in save
    raise ValueError("secret internals")
ValueError: secret internals</pre></body></html>"""


def _routes():
    counter = itertools.count(1)

    def clock(_handler):
        n = next(counter)
        return 200, "text/html; charset=utf-8", (
            f'<div id="clock" data-refresh-seconds="1" hx-get="/api/clock" data-count="{n}">{n}</div>')

    return {
        "/api/fail-json": (422, "application/json", json.dumps(
            {"detail": [{"loc": ["body", "amount"], "msg": "必须大于 0", "type": "value_error"}]}, ensure_ascii=False)),
        "/api/fail-trace": (500, "text/html; charset=utf-8", _TRACEBACK_PAGE),
        "/api/clock": clock,
    }


@pytest.fixture(scope="module")
def site():
    with serve_directory(STATIC, _routes()) as base:
        yield base


def _open(page, site):
    page.goto(f"{site}/styleguide.html")
    page.wait_for_function("document.querySelectorAll('[data-echarts-ready]').length >= 4")
    return page


def _no_js_errors(page):
    assert page.js_errors == [], page.js_errors


def test_vendored_files_present():
    vendor = STATIC / "vendor"
    for name in ("htmx.min.js", "echarts.min.js", "china.js", "codemirror-yaml.js"):
        assert (vendor / name).stat().st_size > 1000, name
    for lic in ("htmx.LICENSE.txt", "echarts.LICENSE.txt", "china.LICENSE.txt", "codemirror-yaml.LICENSE.txt"):
        assert (vendor / lic).is_file(), lic


def test_charts_render(page, site):
    _open(page, site)
    for chart_id in ("chart-bar", "chart-pie", "chart-map"):
        canvas = page.locator(f"#{chart_id} canvas")
        assert canvas.count() >= 1, chart_id
        box = canvas.first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, (chart_id, box)
    info = page.evaluate("""() => {
        const m = echarts.getMap('china');
        const chart = echarts.getInstanceByDom(document.getElementById('chart-map'));
        const data = chart.getOption().series[0].data;
        const cv = document.querySelector('#chart-map canvas');
        const ctx = cv.getContext('2d');
        const px = ctx.getImageData(0, 0, cv.width, cv.height).data;
        let inked = 0;
        for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && (px[i] < 235 || px[i + 2] < 235)) inked++;
        return {features: m.geoJSON.features.length, names: data.map(d => d.name), raw: data.map(d => d.loomRaw),
                inked: inked / (px.length / 4)};
    }""")
    assert info["features"] >= 34                      # 34 provinces registered as 'china'
    assert "广东" in info["names"] and "广东省" in info["raw"]   # '广东省' data matched to the map's '广东'
    assert "新疆" in info["names"] and "北京" in info["names"]
    assert info["inked"] > 0.05, info["inked"]          # the map was actually drawn
    _no_js_errors(page)
    save_screenshot(page, "styleguide-desktop")
    save_screenshot(page, "styleguide-desktop-full", full_page=True)


def test_map_click_drills_down_with_encoded_placeholders(page, site):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    _open(page, site)
    el = page.locator("#chart-map")
    for attempt in range(3):
        el.scroll_into_view_if_needed()
        # Wait for the map's own "finished" after a resize: on a loaded machine the layout (and so
        # the pixel of Guangzhou) could still move between measuring it and clicking it -- and if
        # the page moved anyway (other charts still drawing), the click missed: measure again.
        x, y = page.evaluate("""() => new Promise(resolve => {
            const chart = echarts.getInstanceByDom(document.getElementById('chart-map'));
            chart.on('finished', function done() {
                chart.off('finished', done);
                resolve(chart.convertToPixel({seriesIndex: 0}, [113.3, 23.4]));   // Guangzhou, in 广东
            });
            chart.resize({animation: {duration: 0}});
        })""")
        box = el.bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        try:
            page.wait_for_function("location.hash.startsWith('#drill')", timeout=5000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    query = urllib.parse.parse_qs(page.evaluate("location.hash").split("?", 1)[1])
    assert query == {"province": ["广东省"], "series": ["销售额"]}   # the data's own name, URL-encoded
    assert "%E5%B9%BF%E4%B8%9C%E7%9C%81" in page.evaluate("location.hash")


def test_editor_mounts_and_shows_lint_marker_on_line_2(page, site):
    _open(page, site)
    # the styleguide's own editor: mounted, YAML-highlighted, demo linter flagged 'moneyy'
    page.wait_for_selector("#studio-editor .cm-editor .cm-content")
    page.wait_for_selector("#studio-editor .cm-lint-marker-error")
    assert "moneyy" in page.inner_text("#studio-diags")
    # a fresh editor with a lint function that flags line 2
    page.evaluate("""() => {
        const host = document.createElement('div');
        host.id = 'probe-editor'; host.className = 'code-editor'; host.style.height = '200px';
        document.querySelector('#studio').appendChild(host);
        window.probeChanges = [];
        window.probe = LoomEditor.create(host, {
            doc: 'form: demo\\nlabel: 演示\\nfields: []\\n',
            lint: async (text) => [{line: 2, col: 1, message: 'line two is wrong', severity: 'error'}],
            completions: (ctx) => ctx.word.startsWith('al') ? ['alpha', {label: 'alps', detail: '山'}] : null,
            onChange: (text) => window.probeChanges.push(text),
        });
    }""")
    marker = page.locator("#probe-editor .cm-gutter-lint .cm-lint-marker-error")
    marker.wait_for()
    line2 = page.locator("#probe-editor .cm-line").nth(1).bounding_box()
    mbox = marker.bounding_box()
    assert abs((mbox["y"] + mbox["height"] / 2) - (line2["y"] + line2["height"] / 2)) < line2["height"]
    assert page.locator("#probe-editor .cm-lintRange-error").count() == 1
    # API: getValue / setValue (no onChange) / typing (onChange) / completions / setDiagnostics
    assert page.evaluate("probe.getValue()").startswith("form: demo\nlabel:")
    page.evaluate("probe.setValue('a: 1\\n')")
    assert page.evaluate("probeChanges.length") == 0
    page.click("#probe-editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("al")
    page.wait_for_selector(".cm-tooltip-autocomplete")
    assert "alpha" in page.inner_text(".cm-tooltip-autocomplete")
    # CodeMirror ignores Enter for 75 ms after a completion list opens (interactionDelay: a key
    # pressed as the list appears is not taken as picking from it); a user is never that fast
    page.wait_for_timeout(200)
    page.keyboard.press("Enter")
    assert page.evaluate("probe.getValue()") == "a: 1\nalpha"
    assert page.evaluate("probeChanges[probeChanges.length - 1]") == "a: 1\nalpha"
    page.evaluate("probe.setDiagnostics([{line: 1, message: 'server says no', severity: 'warning'}])")
    page.wait_for_selector("#probe-editor .cm-lint-marker-warning")
    page.locator("#studio").scroll_into_view_if_needed()
    save_screenshot(page, "studio-editor")
    _no_js_errors(page)


def test_htmx_errors_become_readable_toasts(page, site):
    _open(page, site)
    page.click("#demo-error-json")
    toast = page.locator(".toast-danger").last
    toast.wait_for()
    assert "amount: 必须大于 0" in toast.inner_text()
    page.click("#demo-error-trace")
    page.wait_for_function("document.querySelectorAll('.toast-danger').length >= 2")
    text = page.locator(".toast-danger").last.inner_text()
    assert "Traceback" not in text and "secret internals" not in text and "records.py" not in text
    assert "服务器出错了" in text and "Internal Server Error" in text
    page.wait_for_timeout(250)   # let the toast's entry animation finish
    save_screenshot(page, "toasts")


def test_error_descriptions_never_leak_internals(page, site):
    _open(page, site)
    out = page.evaluate("""() => [
        Loom.describeError(404, 'application/json', JSON.stringify({detail: '记录不存在'})),
        Loom.describeError(400, 'application/json', JSON.stringify({detail: {message: '校验失败', errors: [{field: 'qty', message: '必须为整数'}]}})),
        Loom.describeError(500, 'text/plain', 'Traceback (most recent call last):\\n  File "x.py", line 1\\nKeyError: password'),
        Loom.describeError(502, 'text/html', ''),
    ]""")
    assert out[0]["message"] == "记录不存在" and out[0]["title"] == "请求的内容不存在"
    assert out[1]["message"] == "校验失败" and out[1]["items"] == ["qty: 必须为整数"]
    assert "password" not in json.dumps(out[2], ensure_ascii=False) and out[2]["title"].startswith("服务器出错了")
    assert out[3]["message"] == "HTTP 状态 502"


def test_confirm_dialog_guards_links_and_buttons(page, site):
    _open(page, site)
    page.click("button.btn-danger[data-confirm]")
    dialog = page.locator("dialog.loom-confirm")
    dialog.wait_for()
    assert "删除后无法恢复" in dialog.inner_text()
    page.locator("dialog.loom-confirm").get_by_role("button", name="取消").click()
    assert dialog.count() == 0
    page.click("a[href='#deleted'][data-confirm]")
    assert page.evaluate("location.hash") == ""          # not followed before confirming
    page.locator("dialog.loom-confirm").get_by_role("button", name="确定").click()
    page.wait_for_function("location.hash === '#deleted'")
    # an htmx request waits for the dialog too (htmx:confirm), then runs
    page.evaluate("""() => {
        const b = document.createElement('button');
        b.id = 'hx-confirm-probe'; b.className = 'btn btn-danger'; b.textContent = '删除';
        b.setAttribute('hx-post', 'api/fail-json'); b.setAttribute('hx-swap', 'none');
        b.setAttribute('data-confirm', '真的删除？');
        document.querySelector('#buttons .card-body').appendChild(b);
        htmx.process(b);
    }""")
    page.click("#hx-confirm-probe")
    page.locator("dialog.loom-confirm").wait_for()
    assert page.locator(".toast-danger").count() == 0    # no request yet
    page.locator("dialog.loom-confirm").get_by_role("button", name="确定").click()
    page.locator(".toast-danger").first.wait_for()        # the request ran (and its 422 became a toast)


def test_tabs_switch_panels(page, site):
    _open(page, site)
    page.click("#tab-lines")
    assert page.is_visible("#panel-lines") and not page.is_visible("#panel-basic")
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#panel-files") and page.get_attribute("#tab-files", "aria-selected") == "true"


def test_auto_refresh_reloads_element(page, site):
    _open(page, site)
    page.evaluate("""() => {
        const d = document.createElement('div');
        d.id = 'clock'; d.setAttribute('data-refresh-seconds', '1'); d.setAttribute('hx-get', '/api/clock');
        d.textContent = '0';
        document.querySelector('main').appendChild(d);
        d.dispatchEvent(new CustomEvent('htmx:load', {bubbles: true}));
    }""")
    page.wait_for_function("Number(document.getElementById('clock').dataset.count || 0) >= 2", timeout=8000)


def test_phone_layout(phone_page, site):
    page = phone_page
    _open(page, site)
    assert page.is_visible(".nav-toggle")
    assert not page.is_visible("#sidenav")                       # collapsed behind the hamburger
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth]")
    assert widths[0] <= widths[1] and widths[2] <= widths[1], widths   # no horizontal page overflow
    # forms collapse to one column, dashboard widgets go full width
    a = page.locator("#f-customer").bounding_box()
    b = page.locator("#f-date").bounding_box()
    assert abs(a["x"] - b["x"]) < 2 and b["y"] > a["y"]
    w = page.locator("#chart-bar").bounding_box()["width"]
    assert w > 300
    # wide tables scroll inside their wrapper, not the page
    wrap = page.evaluate("(() => { const w = document.querySelector('#table .table-wrap'); return [w.scrollWidth, w.clientWidth]; })()")
    assert wrap[0] > wrap[1]
    save_screenshot(page, "styleguide-phone")
    page.click(".nav-toggle")
    page.wait_for_function("getComputedStyle(document.getElementById('sidenav')).transform === 'none'")
    assert page.is_visible("#sidenav") and page.get_attribute(".nav-toggle", "aria-expanded") == "true"
    save_screenshot(page, "styleguide-phone-nav-open")
    page.keyboard.press("Escape")
    page.wait_for_function("!document.body.classList.contains('nav-open')")
    page.evaluate("document.getElementById('form').scrollIntoView()")
    page.wait_for_timeout(300)   # the drawer's slide-out transition
    save_screenshot(page, "styleguide-phone-form")
    _no_js_errors(page)
