"""The web app in a real Chromium: a real uvicorn server on a free port, a fresh
SQLite database with a small store-leads app (written below) and demo data.

Covers sign-in and the language switch; creating a record with a validation
error fixed in place, a conditional field appearing, a cascade select, a link
picker and a duplicate warning; approving a task in the inbox; a dashboard
chart whose bar click opens the matching records; uploading a bad package and
seeing its positioned problems; the studio edit -> inline error -> preview ->
publish cycle; the phone layout.  Screenshots go to test-artifacts/screenshots/.

(The bundled CRM is exercised too, by ``test_crm_demo_pages``, once it validates.)
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import threading
import time
import types
import zipfile
from pathlib import Path

import pytest

from tests.browser.conftest import save_screenshot

pytestmark = pytest.mark.browser

PASSWORD = "demo-pass-123"

SHOP = {
    "app.yaml": """\
# yaml-language-server: $schema=../../engine/schemas/app.schema.json
# Browser-test app: leads with a conditional field, a cascade, a workflow with approval, a dashboard.
name: shop
version: 1.0.0
title: {zh: 门店线索, en: Store leads}
timezone: Asia/Shanghai
default_language: zh
roles:
  admin: {label: {zh: 管理员, en: Admin}, permissions: [view_pii, manage_app, manage_users, view_audit, export]}
  sales: {label: {zh: 销售顾问, en: Sales}}
  manager: {label: {zh: 销售经理, en: Sales manager}, permissions: [view_pii, export]}
home:
  sales: [tasks, {form: lead}]
  manager: [tasks, {dashboard: sales_board}]
  admin: [tasks, {dashboard: sales_board}]
menus:
  - {label: {zh: 工作台, en: Home}, page: home}
  - {label: {zh: 我的任务, en: My tasks}, page: tasks}
  - {label: {zh: 线索, en: Leads}, form: lead}
  - {label: {zh: 客户, en: Customers}, form: customer}
  - {label: {zh: 销售看板, en: Sales dashboard}, dashboard: sales_board, roles: [manager, admin]}
""",
    "data/regions.yaml": """\
- value: 广东省
  label: {zh: 广东省, en: Guangdong}
  children:
    - value: 广州市
      label: {zh: 广州市, en: Guangzhou}
      children:
        - {value: 天河区, label: {zh: 天河区, en: Tianhe}}
        - {value: 越秀区, label: {zh: 越秀区, en: Yuexiu}}
    - value: 深圳市
      label: {zh: 深圳市, en: Shenzhen}
      children:
        - {value: 南山区, label: {zh: 南山区, en: Nanshan}}
        - {value: 福田区, label: {zh: 福田区, en: Futian}}
- value: 浙江省
  label: {zh: 浙江省, en: Zhejiang}
  children:
    - value: 杭州市
      label: {zh: 杭州市, en: Hangzhou}
      children:
        - {value: 西湖区, label: {zh: 西湖区, en: Xihu}}
""",
    "forms/customer.yaml": """\
name: customer
label: {zh: 客户, en: Customer}
title_field: name
fields:
  name: {type: text, label: {zh: 姓名, en: Name}, required: true, max_length: 30}
  phone: {type: phone, label: {zh: 手机号码, en: Mobile}, pii: true, unique: true}
  tier: {type: select, label: {zh: 等级, en: Tier}, options: [{value: gold, label: {zh: 金卡, en: Gold}}, {value: regular, label: {zh: 普通, en: Regular}}]}
list:
  columns: [name, phone, tier]
  search: [name, phone]
""",
    "forms/lead.yaml": """\
name: lead
label: {zh: 线索, en: Lead}
title_field: name
fields:
  name: {type: text, label: {zh: 姓名, en: Name}, required: true, max_length: 30, placeholder: {zh: 如：王先生, en: e.g. Mr Wang}}
  phone: {type: phone, label: {zh: 手机号码, en: Mobile}, required: true, pii: true}
  source:
    type: select
    label: {zh: 线索来源, en: Source}
    required: true
    options:
      - {value: website, label: {zh: 官网, en: Website}}
      - {value: referral, label: {zh: 老客户转介绍, en: Referral}}
      - {value: walk_in, label: {zh: 自然到店, en: Walk-in}}
  referrer:
    type: link
    form: customer
    label: {zh: 推荐人, en: Referred by}
    visible_when: "source == 'referral'"
    required_when: "source == 'referral'"
  city:
    type: cascade
    label: {zh: 所在城市, en: City}
    options_file: data/regions.yaml
    levels: [{zh: 省份, en: Province}, {zh: 城市, en: City}, {zh: 区县, en: District}]
  budget: {type: currency, currency: CNY, label: {zh: 购车预算, en: Budget}, min: 0}
  test_drive: {type: boolean, label: {zh: 已预约试驾, en: Test drive booked}, default: false}
  rating: {type: rating, label: {zh: 意向度, en: Interest}, max: 5}
  notes: {type: textarea, label: {zh: 需求备注, en: Notes}, max_length: 500}
layout:
  - section: {zh: 客户信息, en: Contact}
    columns: 2
    fields: [name, phone, city]
  - section: {zh: 来源与意向, en: Source and intent}
    columns: 2
    fields: [source, referrer, budget, test_drive, rating, notes]
list:
  columns: [name, phone, source, budget, state, owner]
  search: [name, phone]
  filters: [state, source, budget]
duplicate_check: [phone]
validations:
  - rule: "budget == None or budget <= 5000000"
    field: budget
    message: {zh: 预算金额异常，请核对, en: The budget looks wrong}
""",
    "flows/lead_flow.yaml": """\
name: lead_flow
kind: workflow
form: lead
label: {zh: 线索流程, en: Lead process}
initial: new
states:
  new: {label: {zh: 新线索, en: New}}
  qualified: {label: {zh: 已确认, en: Qualified}}
  won: {label: {zh: 已成交, en: Won}, final: true}
  lost: {label: {zh: 已战败, en: Lost}, final: true}
transitions:
  qualify:
    label: {zh: 确认有效, en: Qualify}
    from: [new]
    to: qualified
    roles: [sales, manager, admin]
  win:
    label: {zh: 申请成交, en: Request win}
    from: [qualified]
    to: won
    roles: [sales, manager, admin]
    approval:
      mode: any
      approvers:
        - role: manager
  lose:
    label: {zh: 战败, en: Lost}
    from: [new, qualified]
    to: lost
    comment: required
    requires: [notes]
    fields: [notes, budget]
    roles: [sales, manager, admin]
""",
    "reports/sales.yaml": """\
reports:
  - name: leads_by_source
    label: {zh: 各来源线索数, en: Leads by source}
    source: lead
    dimensions: [source]
    measures:
      leads: {count: "id != None", label: {zh: 线索数, en: Leads}}
    chart: {kind: bar, x: source, y: leads}
dashboards:
  - name: sales_board
    label: {zh: 销售看板, en: Sales dashboard}
    refresh: 5m
    widgets:
      - {report: leads_by_source, width: 12}
""",
}

CUSTOMERS = [("王建国", "13800000001", "gold"), ("王丽", "13800000002", "regular"), ("李强", "13800000003", "regular")]
LEADS = [("张伟", "13900000001", "website"), ("刘洋", "13900000002", "website"), ("陈静", "13900000003", "website"),
         ("杨帆", "13900000004", "walk_in"), ("赵敏", "13900000005", "referral"), ("孙悦", "13900000006", "walk_in")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def _seed(rt) -> dict:
    """Users, customers, leads; one lead waiting for the manager's approval."""
    from engine.auth import get_user, upsert_user
    from engine.auth import SYSTEM_USER
    from ui.deps import unit_of_work
    now = rt.clock.now()
    with rt.db.write() as conn:
        upsert_user(conn, now, "admin", ["admin"], {}, password=PASSWORD, display_name="系统管理员")
        upsert_user(conn, now, "sam", ["sales"], {}, password=PASSWORD, display_name="孙销售")
        upsert_user(conn, now, "mia", ["manager"], {}, password=PASSWORD, display_name="马经理")
    ids: dict = {"customers": [], "leads": []}
    with unit_of_work(rt, "shop", SYSTEM_USER, "zh", write=True) as uow:
        recs = rt.services["records"]
        for name, phone, tier in CUSTOMERS:
            ids["customers"].append(recs.create(uow, "customer", {"name": name, "phone": phone, "tier": tier})["id"])
        for i, (name, phone, source) in enumerate(LEADS):
            data = {"name": name, "phone": phone, "source": source, "budget": 150000 + 10000 * i}
            if source == "referral":
                data["referrer"] = ids["customers"][0]
            ids["leads"].append(recs.create(uow, "lead", data, owner="sam")["id"])
    with rt.db.read() as conn:
        sam = get_user(conn, "sam")
    target = ids["leads"][0]
    with unit_of_work(rt, "shop", sam, "zh", write=True) as uow:
        flows = rt.services["flows"]
        flows.transition(uow, "lead", target, "qualify")
        flows.transition(uow, "lead", target, "win", comment="客户已付定金")
    ids["approval_lead"] = target
    return ids


@contextlib.contextmanager
def _env(**values):
    """Set environment variables for the duration (module fixtures can't use monkeypatch)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with _env(LOOM_SECRET_KEY=os.environ.get("LOOM_SECRET_KEY") or "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="):
        yield from _site(tmp_path_factory)


def _site(tmp_path_factory):
    import uvicorn

    from engine.installer import install
    from engine.package import read_package
    from ui.app import create_app
    from ui.wiring import build_runtime

    root = tmp_path_factory.mktemp("web")
    pkg = write_package(root / "shop", SHOP)
    rt = build_runtime(f"sqlite:///{root / 'loom.db'}")
    install(rt, read_package(pkg), actor="test")
    ids = _seed(rt)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="loom-web")
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}", rt=rt, ids=ids, package=pkg)
    server.should_exit = True
    thread.join(10)
    rt.db.dispose()


def sign_in(page, site, username: str, next_path: str = "/"):
    page.goto(f"{site.url}{next_path}")
    page.wait_for_selector("#login-form")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#main:not(.auth-card)")


def _no_js_errors(page):
    # 401 (wrong password) and 422 (a form with errors) are answers the tests ask for
    errors = [e for e in page.js_errors if "favicon" not in e
              and not re.search(r"status of (401|422) ", e)]
    assert errors == [], errors


# ---------------------------------------------------------------------------

def test_sign_in_home_and_language(page, site):
    page.goto(f"{site.url}/")
    assert "/login" in page.url
    page.fill("#username", "sam")
    page.fill("#password", "wrong-password")
    page.click("#login-form button[type=submit]")
    assert "用户名或密码错误" in page.inner_text(".alert-danger")
    save_screenshot(page, "sign-in")
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/apps/shop$"))
    assert page.inner_text("h1") == "工作台"
    assert page.locator(".sidenav a", has_text="线索").count() >= 1
    assert page.locator(".sidenav a", has_text="销售看板").count() == 0          # menu filtered by role
    save_screenshot(page, "home-sales")
    page.click(".lang-switch a[lang=en]")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    assert page.inner_text("h1") == "Home" and page.locator(".sidenav a", has_text="Leads").count() >= 1
    page.click(".lang-switch a[lang=zh-CN]")
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    page.click("summary .user-name")
    page.click("#sign-out")
    page.locator("dialog.loom-confirm").get_by_role("button", name="确定").click()
    page.wait_for_url(re.compile(r"/login"))
    _no_js_errors(page)


def test_create_lead_error_fixed_in_place_conditional_cascade(page, site):
    sign_in(page, site, "sam", "/apps/shop/forms/lead/new")
    form = page.locator("#record-form")
    form.wait_for()
    referrer = page.locator("#fld-referrer")
    assert referrer.is_hidden()                                              # visible_when source == 'referral'
    page.select_option("#f-source", "referral")
    referrer.wait_for(state="visible")
    assert "required" in (referrer.get_attribute("class") or "")             # required_when, from the server
    # cascade: province -> city -> district, options loaded from the package's options_file
    page.select_option("#f-city-0", "广东省")
    page.wait_for_function("() => document.querySelectorAll('#f-city-1 option').length > 1")
    assert "广州市" in page.inner_text("#f-city-1")
    page.select_option("#f-city-1", "深圳市")
    page.wait_for_function("() => Array.from(document.querySelectorAll('#f-city-2 option')).some(o => o.value === '南山区')")
    page.select_option("#f-city-2", "南山区")
    # duplicate warning before saving (same phone as an existing lead)
    page.fill("#f-phone", LEADS[1][1])
    page.locator("#f-phone").dispatch_event("change")
    page.wait_for_selector("#dup-alert")
    assert "刘洋" in page.inner_text("#dup-alert")
    page.fill("#f-phone", "1390000")                                          # a bad phone number
    page.fill("#f-name", "周杰")
    page.fill("#f-budget", "200000")
    page.click("#save")
    page.wait_for_selector("#form-errors")
    assert page.locator("#fld-referrer .field-error").inner_text().strip()   # required referrer, in place
    phone_err = page.locator("#f-phone-err")
    assert phone_err.get_attribute("role") == "alert" and phone_err.inner_text().strip()
    assert page.input_value("#f-name") == "周杰"                              # values kept
    assert page.locator("#fld-referrer").is_visible()
    assert page.input_value("#f-city-2") == "南山区"
    save_screenshot(page, "lead-form-errors", full_page=True)
    # fix the errors in place
    page.fill("#f-phone", "13912345678")
    page.fill("#f-referrer-q", "王")
    page.wait_for_function("() => !Array.from(document.querySelectorAll('#f-referrer option')).some(o => o.textContent.includes('李强'))")
    assert "王建国" in page.inner_text("#f-referrer")                          # the link picker searched
    page.select_option("#f-referrer", label="王建国")
    page.click("#fld-rating label[for='f-rating-4']")
    page.click("#save")
    page.wait_for_selector("#saved-flash")
    text = page.inner_text("main")
    assert "周杰" in text and "王建国" in text and "南山区" in text and "新线索" in text
    save_screenshot(page, "lead-detail", full_page=True)
    # the timeline shows the creation
    assert page.locator("#timeline li").count() >= 1
    # workflow buttons: 'lose' opens a dialog with its fields; without a comment it is refused (a toast) ...
    page.click("[data-transition=lose]")
    dialog = page.locator("#dlg-lose")
    dialog.wait_for(state="visible")
    assert dialog.locator("#t-lose-notes").is_visible() and dialog.locator("#t-lose-budget").is_visible()
    dialog.locator("#t-lose-notes").fill("客户已购竞品")
    dialog.locator("[data-transition-submit=lose]").click()
    page.wait_for_selector(".toast-danger")
    dialog.locator("[data-modal-close]").first.click()
    assert "新线索" in page.inner_text("h1")
    # ... 'qualify' moves the record on
    page.fill("#transition-comment", "客户确认下周到店")
    page.click("[data-transition=qualify]")
    page.wait_for_function("() => document.querySelector('h1').textContent.includes('已确认')")
    assert "客户确认下周到店" in page.inner_text("#timeline")
    # ... and 'lose' with its dialog filled in sets the fields and moves the record in one step
    page.click("[data-transition=lose]")
    dialog = page.locator("#dlg-lose")
    dialog.wait_for(state="visible")
    dialog.locator("#t-lose-notes").fill("客户已购竞品")
    dialog.locator("textarea[name=comment]").fill("价格原因")
    page.wait_for_timeout(400)                      # the dialog's opening animation
    save_screenshot(page, "transition-dialog")
    dialog.locator("[data-transition-submit=lose]").click()
    page.wait_for_function("() => document.querySelector('h1').textContent.includes('已战败')")
    assert "客户已购竞品" in page.inner_text("[data-field=notes]")
    page.js_errors[:] = [e for e in page.js_errors if "/transition/lose" not in e]     # the refused transition
    _no_js_errors(page)


def test_list_search_sort_and_filters(page, site):
    sign_in(page, site, "sam", "/apps/shop/forms/lead")
    page.wait_for_selector("#list-results table")
    assert page.locator("#list-results tbody tr").count() >= 6
    page.fill("input.list-search", "刘")
    page.press("input.list-search", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#list-results tbody tr').length === 1")
    assert "刘洋" in page.inner_text("#list-results")
    page.click("a.btn-ghost:has-text('重置')")
    page.select_option("select[name=source]", "walk_in")
    page.wait_for_function("() => document.querySelectorAll('#list-results tbody tr').length === 2")
    page.click("#list-results th a.sort:has-text('姓名')")
    page.wait_for_selector("#list-results th[aria-sort=ascending]")
    save_screenshot(page, "lead-list")
    _no_js_errors(page)


def test_approve_task_in_inbox(page, site):
    sign_in(page, site, "mia", "/apps/shop/tasks")
    task = page.locator(".task-list li.task").first
    task.wait_for()
    assert "张伟" in page.inner_text("#task-list")
    before = int(page.inner_text("#count-open"))
    assert before >= 1
    save_screenshot(page, "tasks-inbox")
    li = page.locator(".task-list li.task", has_text="张伟").first
    li.locator("input[name=comment]").fill("同意，尽快交车")
    li.locator("[data-task-action=approve]").click()
    page.wait_for_selector(".toast-success")
    page.wait_for_function("() => !Array.from(document.querySelectorAll('#task-list li')).some(li => li.textContent.includes('张伟'))")
    page.goto(f"{site.url}/apps/shop/forms/lead/{site.ids['approval_lead']}")
    assert "已成交" in page.inner_text("h1")
    assert "同意，尽快交车" in page.inner_text("#timeline") or "approve" in page.inner_text("#timeline").lower() or page.locator("#timeline li").count() >= 3
    _no_js_errors(page)


def test_dashboard_chart_drills_down_to_records(page, site):
    sign_in(page, site, "mia", "/apps/shop/dashboards/sales_board")
    page.wait_for_selector("[data-echarts][data-echarts-ready]")
    chart = page.locator("[data-echarts]").first
    assert chart.get_attribute("data-drill")
    save_screenshot(page, "dashboard")
    # click the bar of the first category
    point = page.evaluate("""() => {
        const el = document.querySelector('[data-echarts]');
        const c = echarts.getInstanceByDom(el);
        const opt = c.getOption();
        const cats = (opt.xAxis && opt.xAxis[0] && opt.xAxis[0].data) || [];
        const data = opt.series[0].data;
        let best = 0;
        data.forEach((d, i) => { const v = (d && d.value !== undefined) ? d.value : d; if (v > ((data[best] && data[best].value !== undefined) ? data[best].value : data[best])) best = i; });
        const cat = cats[best];
        const px = c.convertToPixel({seriesIndex: 0}, [typeof cat === 'object' ? cat.value : cat, 0]);
        const top = c.convertToPixel({seriesIndex: 0}, [typeof cat === 'object' ? cat.value : cat, ((data[best] && data[best].value !== undefined) ? data[best].value : data[best]) / 2]);
        return {x: px[0], y: top[1], label: typeof cat === 'object' ? cat.value : cat};
    }""")
    box = chart.bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_url(re.compile(r"/apps/shop/reports/leads_by_source/drill\?"))
    page.wait_for_selector("#drill-results")
    rows = page.locator("#drill-results tbody tr")
    assert rows.count() >= 3
    assert all("官网" in rows.nth(i).inner_text() for i in range(rows.count()))   # the website leads only
    save_screenshot(page, "dashboard-drill")
    # the report page: chart + table; the dashboard's auto-refresh fragment
    page.goto(f"{site.url}/apps/shop/reports/leads_by_source")
    page.wait_for_selector("[data-echarts][data-echarts-ready]")
    assert "官网" in page.inner_text(".report-table")
    page.goto(f"{site.url}/apps/shop/dashboards/sales_board")
    refresh = page.get_attribute("#dashboard-widgets", "data-refresh-url")
    assert page.get_attribute("#dashboard-widgets", "data-refresh-seconds") == "300"
    fragment = page.evaluate("(u) => fetch(u, {credentials: 'same-origin'}).then(r => r.text())", refresh)
    assert 'id="dashboard-widgets"' in fragment and "data-echarts" in fragment and "<html" not in fragment
    _no_js_errors(page)


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return buf.getvalue()


def test_account_page_changes_the_password(page, site):
    from engine.auth import upsert_user
    with site.rt.db.write() as conn:
        upsert_user(conn, site.rt.clock.now(), "zoe", ["sales"], {}, password=PASSWORD, display_name="赵顾问")
    sign_in(page, site, "zoe")
    page.click("summary .user-name")
    page.click(".user-menu a[href='/account']")
    page.wait_for_selector("#password-title")
    page.fill("#a-current_password", PASSWORD)
    page.fill("#a-new_password", "Spring-2027-zoe")
    page.fill("#a-confirm_password", "Spring-2027-zo")
    page.click("form[action='/account/password'] button[type=submit]")
    assert "两次输入的新密码不一致" in page.inner_text("#a-confirm_password-err")
    page.fill("#a-current_password", PASSWORD)
    page.fill("#a-new_password", "Spring-2027-lake")
    page.fill("#a-confirm_password", "Spring-2027-lake")
    page.click("form[action='/account/password'] button[type=submit]")
    page.wait_for_selector(".alert-success")
    assert "密码已修改" in page.inner_text(".alert-success")
    save_screenshot(page, "account", full_page=True)
    page.click("summary .user-name")
    page.click("#sign-out")
    page.locator("dialog.loom-confirm").get_by_role("button", name="确定").click()
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#username", "zoe")
    page.fill("#password", "Spring-2027-lake")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#main:not(.auth-card)")
    _no_js_errors(page)


def test_upload_bad_package_shows_positions(page, site, tmp_path):
    bad = dict(SHOP)
    bad["forms/lead.yaml"] = bad["forms/lead.yaml"].replace("type: currency", "type: currensy").replace(
        "visible_when: \"source == 'referral'\"", "visible_when: \"sourse == 'referral'\"")
    path = tmp_path / "shop-bad.zip"
    path.write_bytes(_zip(bad))
    from engine.definitions import validate_package
    from engine.package import read_package
    expected = [f"{p.file}:{p.line}:{p.col}" for p in validate_package(read_package(path))]
    assert len(expected) >= 2
    sign_in(page, site, "admin", "/admin/apps")
    page.set_input_files("#package-file", str(path))
    page.click("#check-package")
    page.wait_for_selector("#package-problems")
    shown = page.locator(".problem-where").all_inner_texts()
    assert shown == expected
    assert "sourse" in page.inner_text("#package-problems")
    save_screenshot(page, "admin-upload-problems", full_page=True)
    _no_js_errors(page)


def test_studio_edit_error_preview_publish(page, site):
    sign_in(page, site, "admin", "/studio/shop?file=forms/customer.yaml")
    page.wait_for_selector("#studio-editor .cm-content")
    page.wait_for_function("() => document.getElementById('studio-editor').getAttribute('data-lint-count') === '0'")
    # type a new field with a typo in its type: an inline error appears at its position
    page.click("#studio-editor .cm-content")
    page.keyboard.press("Control+End")
    original = page.evaluate("studioEditor.getValue()")
    page.evaluate("""(t) => studioEditor.setValue(t.replace('list:\\n', 'list:\\n').replace('\\nlist:', '\\n  vip: {type: booleen, label: {zh: 贵宾, en: VIP}}\\nlist:'))""", original)
    page.click("#studio-editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type(" ")
    page.wait_for_selector("#studio-editor .cm-lint-marker-error")
    line = original.split("\nlist:")[0].count("\n") + 2
    diag = page.inner_text("#studio-diags")
    assert f"forms/customer.yaml:{line}:" in diag, diag
    save_screenshot(page, "studio-error")
    # fix it, the marker goes away
    fixed = page.evaluate("studioEditor.getValue()").replace("booleen", "boolean")
    page.evaluate("(t) => studioEditor.setValue(t)", fixed)
    page.keyboard.type(" ")
    page.wait_for_function("() => document.getElementById('studio-editor').getAttribute('data-lint-count') === '0'")
    # completion from the JSON Schema: under 'list:' the keys of a form's list block
    page.evaluate("(t) => studioEditor.setValue(t.trimEnd() + '\\n')", fixed)
    page.click("#studio-editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("  pa")
    page.wait_for_selector(".cm-tooltip-autocomplete")
    assert "page_size" in page.inner_text(".cm-tooltip-autocomplete")
    page.keyboard.press("Escape")
    page.evaluate("(t) => studioEditor.setValue(t)", fixed)
    page.keyboard.type(" ")
    page.wait_for_function("() => document.getElementById('studio-editor').getAttribute('data-lint-count') === '0'")
    # preview the form from the edited definition (nothing saved)
    page.click("#studio-preview-btn")
    page.wait_for_selector("#studio-preview #fld-vip")
    assert "贵宾" in page.inner_text("#studio-preview")
    page.click("#studio-plan-btn")
    page.wait_for_selector("#studio-plan:not([hidden])")
    assert "vip" in page.inner_text("#studio-plan") and "1.0.1" in page.inner_text("#studio-plan")
    save_screenshot(page, "studio-preview", full_page=True)
    page.click("#studio-publish-btn")
    page.locator("dialog.loom-confirm").get_by_role("button", name="确定").click()
    page.wait_for_function("() => document.getElementById('studio-version').textContent.trim() === '1.0.1'")
    site.rt.forget_app("shop")
    assert "vip" in site.rt.app("shop").forms["customer"].fields
    page.goto(f"{site.url}/apps/shop/forms/customer/new")
    assert page.locator("#fld-vip").count() == 1
    _no_js_errors(page)


def test_phone_layout(phone_page, site):
    page = phone_page
    sign_in(page, site, "sam", "/apps/shop/forms/lead/new")
    page.wait_for_selector("#record-form")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    a = page.locator("#fld-name").bounding_box()
    b = page.locator("#fld-phone").bounding_box()
    assert abs(a["x"] - b["x"]) < 2 and b["y"] > a["y"]                     # one column
    save_screenshot(page, "phone-lead-form", full_page=True)
    page.goto(f"{site.url}/apps/shop/forms/lead")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    save_screenshot(page, "phone-lead-list")
    for path, shot in ((f"/apps/shop/forms/lead/{site.ids['leads'][1]}", "phone-lead-detail"), ("/apps/shop/tasks", None),
                       ("/apps/shop", None)):
        page.goto(f"{site.url}{path}")
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], (path, widths)
        if shot:
            save_screenshot(page, shot, full_page=True)
    page.click(".nav-toggle")
    page.wait_for_function("() => getComputedStyle(document.getElementById('sidenav')).transform === 'none'")
    _no_js_errors(page)


def test_not_found_page_is_friendly(page, site):
    sign_in(page, site, "sam", "/apps/shop/forms/lead/999999")
    assert "页面不存在" in page.inner_text("h1")
    assert "Traceback" not in page.content()


def test_crm_demo_pages(browser, tmp_path_factory):
    """The bundled CRM with ``loom demo`` data -- once its definitions validate."""
    from engine.definitions import validate_package
    from engine.package import read_package
    from tests.conftest import CRM
    problems = validate_package(read_package(CRM))
    if problems:
        pytest.skip(f"the CRM does not validate yet ({len(problems)} problems, e.g. {problems[0]})")
    import uvicorn

    from ui.app import create_app
    from ui.cli import install_demo
    from ui.wiring import build_runtime
    root = tmp_path_factory.mktemp("crm")
    with _env(LOOM_DEMO_PASSWORD=PASSWORD,
              LOOM_SECRET_KEY=os.environ.get("LOOM_SECRET_KEY") or "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="):
        rt = build_runtime(f"sqlite:///{root / 'crm.db'}")
        install_demo(rt)
    from engine.auth import list_users
    with rt.db.read() as conn:
        users = list_users(conn)
    admin = next(u for u in users if "admin" in u.roles)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        site = types.SimpleNamespace(url=f"http://127.0.0.1:{port}")
        sign_in(page, site, admin.username, "/apps/automotive_crm")
        save_screenshot(page, "crm-home", full_page=True)
        save_screenshot(page, "crm-home-top")
        for form in ("lead", "customer", "complaint"):
            page.goto(f"{site.url}/apps/automotive_crm/forms/{form}")
            page.wait_for_selector("#list-results")
            save_screenshot(page, f"crm-{form}-list")
        page.goto(f"{site.url}/apps/automotive_crm/forms/lead/new")
        page.wait_for_selector("#record-form")
        save_screenshot(page, "crm-lead-form", full_page=True)
        # child table rows added in the browser, saved with the service order
        page.goto(f"{site.url}/apps/automotive_crm/forms/service_order")
        page.locator("#list-results a.row-link").first.click()
        page.click("#edit-record")
        page.click("[data-add-row=items]")
        row = page.locator("[data-child-editor=items] tbody tr").last
        row.locator("select[name$='.item_type']").select_option("part")
        row.locator("input[name$='.part']").fill("空调滤芯")
        row.locator("input[name$='.qty']").fill("2")
        row.locator("input[name$='.price']").fill("65")
        save_screenshot(page, "crm-service-order-edit", full_page=True)
        page.click("#save")
        page.wait_for_selector("#saved-flash")
        assert "空调滤芯" in page.inner_text("main")
        for board in ("sales_dashboard", "hq_dashboard"):
            page.goto(f"{site.url}/apps/automotive_crm/dashboards/{board}")
            with contextlib.suppress(Exception):
                page.wait_for_selector("[data-echarts-ready]", timeout=8000)
            save_screenshot(page, f"crm-{board}", full_page=True)
        _claim_from_the_pool(browser, site)
    finally:
        ctx.close()
        server.should_exit = True
        thread.join(10)


def _claim_from_the_pool(browser, site) -> None:
    """A consultant finds leads in the dealer's public pool (公海池, from the demo data), claims one,
    and it is theirs; on a lead that is not in the pool the claim button is disabled, saying why."""
    ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        sign_in(page, site, "d001.sc1", "/apps/automotive_crm")
        page.click("nav a:has-text('公海池')")
        page.wait_for_selector("#list-results a.row-link")
        assert page.locator("#list-results a.row-link").count() > 0
        save_screenshot(page, "crm-lead-pool")
        page.locator("#list-results a.row-link").first.click()
        page.wait_for_selector("[data-transition=claim]")
        lead_url = page.url
        assert page.is_enabled("[data-transition=claim]")
        assert "浦东智行销售顾问一" not in page.inner_text("main")      # nobody's lead yet
        page.click("[data-transition=claim]")
        page.wait_for_load_state("networkidle")
        page.goto(lead_url)
        main = page.inner_text("main")
        assert "浦东智行销售顾问一" in main                        # the owner now
        assert page.is_disabled("[data-transition=claim]")           # no longer in the pool
        assert "该线索已不在公海池中" in main
    finally:
        ctx.close()
