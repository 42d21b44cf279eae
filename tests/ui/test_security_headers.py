"""Every response carries the security headers; a response's own headers win."""
from __future__ import annotations

from ui.app import SecurityHeaders


def test_api_pages_and_errors_carry_the_security_headers(api):
    for path, status in (("/api/apps", 401), ("/login", 200), ("/no/such/page", 404)):
        r = api.http.get(path, headers={"Accept": "text/html"} if not path.startswith("/api") else {})
        assert r.status_code == status, path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path


def test_the_api_docs_keep_their_own_scripts():
    """/docs loads Swagger UI's inline script, which the default CSP would block."""
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html"), (b"x-frame-options", b"SAMEORIGIN")]})

    async def send(message):
        sent.append(message)

    import asyncio
    import concurrent.futures
    for path in ("/docs", "/records"):
        sent.clear()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:   # own thread: a browser test may run a loop here
            pool.submit(asyncio.run, SecurityHeaders(app)({"type": "http", "path": path}, None, send)).result()
        headers = dict(sent[0]["headers"])
        assert headers[b"x-frame-options"] == b"SAMEORIGIN", "a header the response set is kept"
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert (b"content-security-policy" in headers) == (path != "/docs")
