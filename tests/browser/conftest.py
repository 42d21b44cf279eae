"""Real-browser test harness: pytest + Playwright (sync API) driving Debian's Chromium.

Playwright's own browser download cannot run here (no network but the package
registries), so we launch the distro browser at ``/usr/bin/chromium``
(``.ci/install-browser.sh`` installs it; ``LOOM_CHROMIUM`` overrides the path).

Without a browser these tests are *skipped* with a clear reason -- unless
``LOOM_REQUIRE_BROWSER=1`` (CI sets it), then a missing browser is a failure.

Fixtures
  browser     session-scoped headless Chromium
  page        fresh context per test, 1280x800, locale zh-CN, tz Asia/Shanghai
  phone_page  fresh context per test, 375x740 touch/mobile, locale zh-CN
Both pages collect uncaught JS errors and console errors in ``page.js_errors``.

Helper
  save_screenshot(page, name, full_page=False) -> Path
      writes test-artifacts/screenshots/<name>.png under the repo root.
  serve_directory(path, routes=None) -> context manager yielding the base URL of a
      tiny threaded http.server on 127.0.0.1 (free port), with optional extra routes
      {"/api/x": (status, content_type, body)} for error-path tests.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import socketserver
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
_HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: real Chromium tests (Playwright)")


def pytest_collection_modifyitems(config, items):
    # every test under tests/browser/ is a browser test, marked or not
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


def _require() -> bool:
    return os.environ.get("LOOM_REQUIRE_BROWSER") == "1"


def _unavailable(reason: str):
    if _require():
        pytest.fail(f"LOOM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - depends on the environment
        _unavailable(f"the python 'playwright' package is not installed ({exc}); pip install -e '.[test]'")
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="session")
def browser(_playwright):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (run .ci/install-browser.sh, or set LOOM_CHROMIUM)")
    try:
        b = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"Chromium at {CHROMIUM} failed to start: {exc}")
    yield b
    b.close()


def _watch(page):
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and page.js_errors.append(
        f"console: {msg.text} ({msg.location.get('url', '')})"))
    return page


@contextlib.contextmanager
def _context(browser, **kw):
    ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", **kw)
    ctx.set_default_timeout(15_000)
    try:
        yield _watch(ctx.new_page())
    finally:
        ctx.close()


@pytest.fixture
def page(browser):
    with _context(browser, viewport={"width": 1280, "height": 800}) as p:
        yield p


@pytest.fixture
def phone_page(browser):
    with _context(browser, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True,
                  device_scale_factor=2) as p:
        yield p


def save_screenshot(page, name: str, full_page: bool = False) -> Path:
    """Save a PNG to test-artifacts/screenshots/<name>.png (repo root relative)."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("_") or "screenshot"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    routes: dict = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _route(self):
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            return False
        status, ctype, body = route(self) if callable(route) else route
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
        return True

    def do_GET(self):
        if not self._route():
            super().do_GET()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if not self._route():
            self.send_error(405)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def serve_directory(path, routes=None):
    """Serve ``path`` on 127.0.0.1:<free port>; yields the base URL (no trailing slash)."""
    handler = type("Handler", (_Handler,), {"routes": dict(routes or {})})
    server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(path)))
    thread = threading.Thread(target=server.serve_forever, name="loom-static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
