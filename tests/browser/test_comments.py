"""Comments in a real Chromium (issue #8): on a phone-sized screen a sales
consultant picks a colleague from the @ picker, posts without a reload, sees
the mention highlighted; the manager finds the mention in her task inbox,
opens the record and dismisses the notice.

Uses the store-leads site of ``test_web_app`` (its own server and database).
"""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import save_screenshot
from tests.browser.test_web_app import _no_js_errors, sign_in, site  # noqa: F401  (site is a fixture)

pytestmark = pytest.mark.browser


def test_comment_with_mention_reaches_the_inbox(phone_page, page, site):  # noqa: F811
    lead = site.ids["leads"][1]
    p = phone_page
    sign_in(p, site, "sam", f"/apps/shop/forms/lead/{lead}")
    box = p.locator("#comment-body")
    box.scroll_into_view_if_needed()
    url_before = p.url
    box.click()
    box.type("客户想周六试驾，@马")
    option = p.locator("#comment-mentions [role=option]", has_text="mia")
    option.wait_for()
    assert p.get_attribute("#comment-body", "aria-activedescendant")
    save_screenshot(p, "comment-mention-picker-phone")
    p.keyboard.press("Enter")                       # picks the highlighted colleague
    assert box.input_value() == "客户想周六试驾，@mia "
    box.type("请确认展车 <b>颜色</b>")
    p.click("#comment-submit")
    mention = p.locator("#timeline .tl-note .mention[data-user=mia]")
    mention.wait_for()
    assert mention.inner_text() == "@马经理"
    assert "请确认展车 <b>颜色</b>" in p.inner_text("#timeline .tl-note")      # shown as typed, not as HTML
    assert p.url == url_before and box.input_value() == ""                      # no reload; box cleared
    p.wait_for_selector(".toast-success")
    assert p.evaluate("document.documentElement.scrollWidth") <= 375          # fits the phone
    save_screenshot(p, "comment-posted-phone")
    _no_js_errors(p)

    sign_in(page, site, "mia", "/apps/shop/tasks")
    notice = page.locator("#task-list li.task.is-mention", has_text="孙销售 在评论中提到了你")
    notice.wait_for()
    assert "请确认展车" in notice.inner_text()
    save_screenshot(page, "mention-in-inbox")
    notice.locator("a", has_text="查看").click()
    page.wait_for_url(re.compile(rf"/apps/shop/forms/lead/{lead}"))
    assert page.locator("#timeline .mention[data-user=mia]").count() == 1
    page.go_back()
    page.locator("#task-list li.task.is-mention [data-task-action=dismiss]").first.click()
    page.wait_for_function("() => !document.querySelector('#task-list li.task.is-mention')")
    _no_js_errors(page)
