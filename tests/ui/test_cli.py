"""The `loom` command line: exit codes, messages, round trips (real processes)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import CRM, FIXTURES

LOOM = [sys.executable, "-m", "ui.cli"]


def loom(*args, db=None, env=None, input=None):
    e = {**os.environ, "LOOM_SECRET_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", **(env or {})}
    cmd = LOOM + (["--db", db] if db else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=e, input=input, timeout=300)


def test_validate_ok_and_problems(tmp_path):
    r = loom("validate", str(FIXTURES / "mini_app"))
    assert r.returncode == 0 and r.stdout.strip() == "OK mini 1.0.0"
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "mini_app", bad)
    (bad / "forms" / "ticket.yaml").write_text("fields:\n  a: {type: usr}\n  b: {type: link, form: nope}\n")
    r = loom("validate", str(bad))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("forms/ticket.yaml:2:13: field 'a': unknown type 'usr'")
    assert lines[1].startswith("forms/ticket.yaml:3:25: field 'b': unknown form 'nope'")
    assert "Traceback" not in r.stderr


def test_validate_missing_path_is_a_user_error(tmp_path):
    r = loom("validate", str(tmp_path / "nope"))
    assert r.returncode == 1 and "no such folder or file" in r.stderr and "Traceback" not in r.stderr


def test_bad_usage_exits_2():
    assert loom("import").returncode == 2


def test_import_export_round_trip_and_user_add(tmp_path, db_url):
    r = loom("import", str(FIXTURES / "mini_app"), db=db_url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Installed mini 1.0.0") and "+ table customer" in r.stdout
    out = tmp_path / "mini.zip"
    r = loom("export", "mini", "-o", str(out), db=db_url)
    assert r.returncode == 0 and zipfile.is_zipfile(out)
    assert loom("validate", str(out)).stdout.strip() == "OK mini 1.0.0"
    r = loom("import", str(out), db=db_url)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = loom("user", "add", "wang", "--role", "agent", "--attr", "region=east", "--password", "pw-123456", db=db_url)
    assert r.returncode == 0 and r.stdout.strip() == "Created user wang roles=agent region=east"
    r = loom("user", "add", "wang", "--role", "manager", db=db_url)
    assert r.returncode == 0 and r.stdout.startswith("Updated user wang roles=manager")
    # a new password for an existing user signs out the sessions and tokens given for the old one
    import datetime as dt

    from engine.auth import issue_token, user_for_token
    from engine.db import Database
    db, now = Database(db_url), dt.datetime.now(dt.timezone.utc)
    with db.write() as conn:
        token = issue_token(conn, now, "wang")
    r = loom("user", "add", "wang", "--role", "manager", "--password", "pw-654321", db=db_url)
    assert r.returncode == 0 and r.stdout.strip().endswith("new password: 1 session(s)/token(s) signed out")
    with db.read() as conn:
        assert user_for_token(conn, now, token) is None
    db.dispose()
    r = loom("export", "nope", "-o", str(out), db=db_url)
    assert r.returncode == 1 and "no app 'nope' is installed" in r.stderr


def test_tick_accepts_now(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    r = loom("tick", "--now", "2026-12-01T09:00:00+08:00", db=db)
    assert r.returncode == 0 and "now=2026-12-01T01:00:00+00:00" in r.stdout
    r = loom("tick", "--now", "yesterday", db=db)
    assert r.returncode == 1 and "not an ISO 8601 time" in r.stderr


def test_unreachable_database_is_a_clear_error():
    r = loom("tick", db="postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 1 and "cannot open the database" in r.stderr and "Traceback" not in r.stderr


def test_a_weak_demo_password_is_refused_before_anything_is_installed(tmp_path):
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    r = loom("demo", db=db, env={"LOOM_DEMO_PASSWORD": "88888888"})
    assert r.returncode == 1 and "LOOM_DEMO_PASSWORD is too simple" in r.stderr and "Traceback" not in r.stderr
    r = loom("export", "automotive_crm", "-o", str(tmp_path / "x.zip"), db=db)
    assert r.returncode == 1 and "no app 'automotive_crm' is installed" in r.stderr
