"""Webhooks: outgoing (an action) and incoming (a trigger), both HMAC-SHA256 signed.

Outgoing::

    - webhook:
        url: https://dms.example.com/hooks/lead     # http(s) only
        body: {lead: id, name: name, level: level}  # expressions; default: the record without PII fields
        secret_env: DMS_WEBHOOK_SECRET              # environment variable holding the shared secret

The action only writes a durable timer (kind ``rules.webhook``) in the rule's
transaction; the scheduler POSTs it after commit, and a failure (network
error, non-2xx answer) is retried with exponential backoff by the scheduler
(``MAX_ATTEMPTS``), then marked failed with the error.  Each request carries

* ``X-Loom-Timestamp``: Unix seconds at sending,
* ``X-Loom-Signature: sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>.<body>"``
  with the secret, so the receiver can check origin and freshness,
* ``Idempotency-Key``: the same on every retry.

Secrets never live in the package: only the variable's name does.

Incoming: see ``ui/api/hooks.py`` and :func:`verify_signature`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from engine.scheduler import schedule

from .actions.base import ActionCompiler, ActionError, Literal, RunContext, jsonable
from .model import secret_env_problem

TIMER_KIND = "rules.webhook"
MAX_AGE_SECONDS = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None = None) -> str | None:
    """None if valid, else why not (for a 401 message)."""
    if not timestamp or not signature:
        return "missing X-Loom-Timestamp or X-Loom-Signature header"
    try:
        ts = int(timestamp)
    except ValueError:
        return "X-Loom-Timestamp must be Unix seconds"
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_AGE_SECONDS:
        return f"request too old or from the future (more than {MAX_AGE_SECONDS}s off); check the sender's clock"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip()):
        return "signature does not match"
    return None


def compile_webhook(c: ActionCompiler, spec: Any) -> dict | None:
    if not isinstance(spec, dict):
        c.error((), "'webhook' takes {url: https://..., body: {...}, secret_env: NAME}")
        return None
    for k in spec:
        if k not in ("url", "body", "secret_env", "headers"):
            c.error((k,), f"unknown key '{k}' for webhook; expected url, body, secret_env, headers", at_key=True)
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        c.error(("url",), "'url' must be an http:// or https:// address")
        return None
    secret_env = spec.get("secret_env")
    problem = secret_env_problem(secret_env)
    if problem:
        c.error(("secret_env",) if "secret_env" in spec else (), problem, at_key="secret_env" not in spec)
        return None
    body = None
    if spec.get("body") is not None:
        if not isinstance(spec["body"], dict):
            c.error(("body",), "'body' is a mapping of key: expression")
            return None
        body = []
        for k, v in spec["body"].items():
            e = c.value_expr(("body", k), v)
            if e is not None:
                body.append((str(k), e))
        body = tuple(body)
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        c.error(("headers",), "'headers' maps header names to fixed text")
        headers = {}
    return {"url": url, "body": body, "secret_env": secret_env, "headers": dict(headers)}


def _default_body(rc: RunContext) -> dict:
    fd = rc.formdef
    rec = {}
    if fd is not None:
        for k in ("id", "created_at", "updated_at", "owner", "state"):
            rec[k] = jsonable(rc.record.get(k))
        for name, f in fd.fields.items():
            if not f.pii and name in rc.record:
                rec[name] = jsonable(rc.record.get(name))
    return rec


def queue_webhook(rc: RunContext, params: dict) -> dict | None:
    env = rc.env()
    if params["body"] is None:
        data = _default_body(rc)
    else:
        data = {k: jsonable(rc.evaluate(e, env)) for k, e in params["body"]}
    envelope = {"app": rc.app.name, "rule": rc.source, "form": rc.form, "id": rc.record_id,
                "at": rc.uow.now.isoformat(), "data": data}
    raw = "|".join(map(str, (rc.app.name, rc.source, rc.form, rc.record_id, params["url"], rc.occurrence)))
    key = f"wh:{rc.app.name}:{hashlib.sha256(raw.encode()).hexdigest()[:40]}"
    added = schedule(rc.uow.conn, app=rc.app.name, kind=TIMER_KIND, key=key, due_at=rc.uow.now,
                     payload={"url": params["url"], "body": envelope, "secret_env": params["secret_env"],
                              "headers": params["headers"], "key": key},
                     form=rc.form, record_id=rc.record_id)
    return {"url": params["url"], "queued": added}


def deliver(uow: Any, timer: dict) -> None:
    """Timer handler: POST the payload; raise to have the scheduler retry."""
    p = timer.get("payload") or {}
    secret = os.environ.get(p.get("secret_env") or "")
    if not secret:
        raise RuntimeError(f"environment variable {p.get('secret_env')} (the webhook's signing secret) is not set")
    body = json.dumps(p.get("body"), ensure_ascii=False, separators=(",", ":"), default=str).encode()
    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "Loom-Webhook/1",
               "X-Loom-Timestamp": ts, "X-Loom-Signature": sign(secret, ts, body),
               "Idempotency-Key": p.get("key") or str(timer.get("key"))}
    headers.update(p.get("headers") or {})
    req = urllib.request.Request(p["url"], data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the analyst configured http(s) URLs only
            if resp.status >= 300:
                raise RuntimeError(f"{p['url']} answered {resp.status}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{p['url']} answered {exc.code}") from None
    except urllib.error.URLError as exc:
        raise RuntimeError(f"{p['url']} unreachable: {exc.reason}") from None


__all__ = ["sign", "verify_signature", "compile_webhook", "queue_webhook", "deliver", "Literal", "ActionError"]
