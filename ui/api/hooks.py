"""Incoming webhooks: ``POST /api/apps/{app}/hooks/{rule}`` runs a rule with ``on: {webhook: ...}``.

Authentication, per the rule's ``auth``:

* ``hmac`` (default) -- headers ``X-Loom-Timestamp`` (Unix seconds, at most 5
  minutes off) and ``X-Loom-Signature: sha256=<hex>``, the HMAC-SHA256 of
  ``"<timestamp>.<raw body>"`` with the secret in the environment variable
  the rule names (``secret_env``).  Nothing in the package is secret.
* ``token`` -- ``Authorization: Bearer <Loom API token>`` of an active user
  (with one of the rule's ``roles``, if given); the rule then acts as that user.
* ``either`` -- whichever the caller sends.

The body is a JSON object (at most 1 MB), available to the rule as
``payload``; for ``on: {webhook: <form>}`` its ``id`` names the record the
rule runs on.  ``X-Loom-Delivery`` (optional) identifies a delivery: a
retried delivery with the same id does not queue its messages twice.

Answers: 200 ``{"rule", "outcome", "record"}``; 401 bad or missing
credentials; 404 no such app or webhook rule; 413 body too large; 422 the
rule's actions failed (nothing was written); 503 the secret is not configured.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from engine.auth import SYSTEM_USER, user_for_token
from engine.runtime import AppNotFound
from engine.uow import UnitOfWork

router = APIRouter(prefix="/api/apps", tags=["hooks"])
MAX_BODY = 1024 * 1024


def _rule(rt: Any, app_name: str, rule_name: str):
    try:
        app = rt.app(app_name)
    except AppNotFound:
        raise HTTPException(404, f"no app '{app_name}' is installed") from None
    rule = (app.section("rules") or {}).get(rule_name)
    if rule is None or rule.trigger.kind != "webhook" or not rule.enabled:
        raise HTTPException(404, f"app '{app_name}' has no webhook rule '{rule_name}'")
    return app, rule


def _authenticate(rt: Any, rule: Any, request: Request, body: bytes):
    """The acting user (SYSTEM for a valid signature); raise 401/503 otherwise."""
    from rules.webhooks import verify_signature
    trig = rule.trigger
    auth_header = request.headers.get("authorization", "")
    has_token = auth_header.lower().startswith("bearer ")
    if trig.auth in ("token", "either") and (has_token or trig.auth == "token"):
        if not has_token:
            raise HTTPException(401, "send 'Authorization: Bearer <API token>'", headers={"WWW-Authenticate": "Bearer"})
        with rt.db.read() as conn:
            user = user_for_token(conn, rt.clock.now(), auth_header[7:].strip())
        if user is None:
            raise HTTPException(401, "the token is invalid, expired or revoked", headers={"WWW-Authenticate": "Bearer"})
        if trig.roles and not (user.roles & set(trig.roles)) and "admin" not in user.roles:
            raise HTTPException(403, f"this webhook is for users with the role {' or '.join(trig.roles)}")
        return user
    secret = os.environ.get(trig.secret_env or "")
    if not secret:
        raise HTTPException(503, f"webhook '{rule.name}' is not configured: set the environment variable {trig.secret_env}")
    problem = verify_signature(secret, request.headers.get("x-loom-timestamp"), request.headers.get("x-loom-signature"), body)
    if problem:
        raise HTTPException(401, f"bad webhook signature: {problem}")
    return SYSTEM_USER


def _run(rt: Any, app_name: str, rule_name: str, user: Any, payload: Any, delivery: str) -> dict:
    app, rule = _rule(rt, app_name, rule_name)
    with rt.db.write() as conn:
        uow = UnitOfWork(rt, conn, app, user, rt.clock.now(), lang=app.default_language)
        return rt.services["rules"].run_webhook(uow, rule, payload, delivery)


@router.post("/{app}/hooks/{rule}", summary="Incoming webhook: run a rule with on: {webhook: ...}")
async def incoming_webhook(app: str, rule: str, request: Request) -> dict:
    rt = request.app.state.runtime
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise HTTPException(413, f"body too large (limit {MAX_BODY // 1024} KB)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"body too large (limit {MAX_BODY // 1024} KB)")
    _, rule_def = await run_in_threadpool(_rule, rt, app, rule)
    user = await run_in_threadpool(_authenticate, rt, rule_def, request, body)
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise HTTPException(400, "the body must be JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, "the body must be a JSON object")
    delivery = request.headers.get("x-loom-delivery") or hashlib.sha256(
        (request.headers.get("x-loom-timestamp") or "").encode() + b"." + body).hexdigest()[:32]
    return await run_in_threadpool(_run, rt, app, rule, user, payload, delivery[:64])
