"""Schemathesis against ``/openapi.json`` with the CRM installed, in-process.

For every documented operation, schemathesis generates requests from the
schema (valid and invalid bodies, odd query strings and path values) and the
app answers through its ASGI interface.  Checks, for an admin and for a
sales consultant:

* never a 5xx;
* every 4xx is JSON in the contract's A3 shape
  ``{"errors": [{"field": str|null, "code": str, "message": str}]}``;
* where a response schema is declared, the body conforms to it.

Bounded for CI: each operation gets a few deterministic examples (the whole
module takes well under 90 s); ``LOOM_FUZZ_EXAMPLES=N`` gives each operation
N examples and fresh randomness.  schemathesis 4.x installs beside FastAPI
0.165 / Starlette 1.x without conflicts and drives the app in-process.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from engine.auth import upsert_user
from engine.clock import Clock
from engine.installer import install
from engine.package import read_package
from tests.conftest import CRM, T0, pg_database

pytestmark = pytest.mark.fuzz

_LOCAL = os.environ.get("LOOM_FUZZ_EXAMPLES")
PER_OPERATION = int(_LOCAL) if _LOCAL else 4
# Operations a fuzzer must not call with our tokens: revoke signs the fuzzer out.
SKIP = {("POST", "/api/auth/revoke")}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crm_app(request, tmp_path_factory):
    """The CRM installed on a fresh database, two users, a dealer and a customer."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('fuzzapi') / 'loom.db'}"
        else:
            url = stack.enter_context(pg_database("loom_fz"))
        yield from _crm_app(url)


def _crm_app(url):
    from fastapi.testclient import TestClient

    from ui.app import create_app
    from ui.wiring import build_runtime

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOM_SECRET_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
        rt = build_runtime(url, Clock(fixed=T0))
        install(rt, read_package(CRM))
        with rt.db.write() as conn:
            upsert_user(conn, T0, "fz.admin", ["admin"], {}, password="s3cret-pass")
            upsert_user(conn, T0, "fz.sc", ["sales_consultant"], {"dealer": "D001", "region": "east"},
                        password="s3cret-pass")
        app = create_app(rt)
        http = TestClient(app, raise_server_exceptions=False)
        tokens = {}
        for name in ("fz.admin", "fz.sc"):
            r = http.post("/api/auth/token", data={"username": name, "password": "s3cret-pass"})
            assert r.status_code == 200, r.text
            tokens[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        admin = tokens["fz.admin"]
        dealer = http.post("/api/apps/automotive_crm/dealer", headers=admin, json={
            "code": "D001", "name": "浦东智行", "region": "east", "city": "上海"})
        http.post("/api/apps/automotive_crm/customer", headers=admin, json={
            "name": "张三", "mobile": "13800138000", "dealer": (dealer.json() or {}).get("id")})
        yield app, tokens
        rt.db.dispose()


def a3_error_body(ctx, response, case):
    """Contract A3: a 4xx is JSON with a list of {field, code, message}."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except Exception:  # noqa: BLE001
        raise AssertionError(f"{response.status_code} is not JSON: {response.text[:200]!r}") from None
    errors = body.get("errors") if isinstance(body, dict) else None
    assert isinstance(errors, list) and errors, f"{response.status_code} without an 'errors' list: {body!r}"[:400]
    for e in errors:
        assert isinstance(e, dict) and set(e) >= {"field", "code", "message"}, e
        assert e["field"] is None or isinstance(e["field"], str), e
        assert isinstance(e["code"], str) and e["code"], e
        assert isinstance(e["message"], str) and e["message"].strip(), e
    return None


CHECKS = [not_a_server_error, response_schema_conformance, a3_error_body]


def _operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith("/api") and (op.method.upper(), op.path) not in SKIP:
            ops.append(op)
    return ops


@pytest.mark.parametrize("who", ["fz.admin", "fz.sc"])
def test_openapi_operations_never_fail_the_contract(crm_app, who):
    app, tokens = crm_app
    ops = _operations(app)
    assert len(ops) > 40, [f"{o.method} {o.path}" for o in ops]
    failures = []
    for op in ops:
        @settings(max_examples=PER_OPERATION, derandomize=not _LOCAL, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call(headers=tokens[who])
            case.validate_response(response, checks=CHECKS, headers=tokens[who])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report all
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------------------
# regressions: what the fuzzer found, on both databases

def test_ids_and_offsets_past_bigint_are_not_found_not_500(api):
    # was: 500 -- SQLite "Python int too large to convert to SQLite INTEGER", PostgreSQL "bigint out of range"
    from tests.conftest import FIXTURES
    install(api.rt, read_package(FIXTURES / "mini_app"))
    admin = api.user("ada", ["admin"])
    huge = 10**30
    for method in ("GET", "PATCH", "DELETE"):
        r = api.http.request(method, f"/api/apps/mini/customer/{huge}", headers=admin,
                             json={"name": "x"} if method == "PATCH" else None)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "notfound", (method, r.text)
    r = api.http.get(f"/api/apps/mini/customer?offset={huge}", headers=admin)
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    r = api.http.get(f"/api/outbox?offset={2**63}", headers=admin)
    assert r.status_code in (200, 422) and r.status_code != 500, r.text
