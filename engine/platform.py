"""Platform tables shared by every app: apps, users, audit, timers, outbox...

These ``Table`` objects are what the code queries; the schema itself is
created and upgraded by the Alembic migrations in ``engine/migrations`` (run
on every ``loom`` start).  Keep the two in step: a column added here needs a
migration there.
"""
from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Index, Integer, LargeBinary, MetaData,
                        String, Table, Text, UniqueConstraint, text)

metadata = MetaData()

ID = BigInteger().with_variant(Integer, "sqlite")

apps = Table(
    "loom_apps", metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(40), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("title", JSON),
    Column("installed_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

app_versions = Table(
    "loom_app_versions", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False, index=True),
    Column("version", String(40), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("package", LargeBinary, nullable=False),   # the package as a zip, for export/rollback/studio
    Column("plan", JSON),
    Column("installed_at", DateTime, nullable=False),
    Column("installed_by", String(64)),
)

users = Table(
    "loom_users", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(128)),
    Column("password_hash", String(256)),
    Column("roles", JSON, nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("language", String(8)),
    Column("active", Boolean, nullable=False, default=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", DateTime),
    Column("away_until", DateTime),
    Column("delegate_to", String(64)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

tokens = Table(
    "loom_tokens", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("username", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False, default="api"),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
)

audit = Table(
    "loom_audit", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False, index=True),
    Column("actor", String(64)),
    Column("action", String(40), nullable=False),
    Column("app", String(64)),
    Column("form", String(64)),
    Column("record_id", BigInteger),
    Column("details", JSON),
    Column("ip", String(64)),
)

history = Table(
    "loom_history", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("actor", String(64)),
    Column("kind", String(24), nullable=False),   # create, update, delete, transition, rule, message, comment, task
    Column("changes", JSON),
    Column("comment", Text),
    Index("ix_loom_history_record", "app", "form", "record_id"),
    # the rule log (RuleEngine.log_for): an app's or a form's newest rule lines without walking the
    # rest of the history; partial, so no other line pays for it (migration 0007_history_rules)
    Index("ix_loom_history_rules", "app", "form", "id", postgresql_where=text("kind = 'rule'"),
          sqlite_where=text("kind = 'rule'")),
)
# one statement object for every timeline line (values passed as parameters): compiled once, and
# lines held by ``engine.later`` from any engine join one multi-row INSERT
HISTORY_INSERT = history.insert()
# keys of a line's changes that are kept for the record's logs but not shown on its timeline, by
# kind: a rule line's ``inputs`` (what the condition read -- related records' fields, fields the
# viewer may not be allowed to see; ``RuleEngine.log_for`` reads them)
HIDDEN_CHANGES = {"rule": ("inputs",)}

timers = Table(
    "loom_timers", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("key", String(255), nullable=False, unique=True),   # idempotency: one timer per key, ever
    Column("due_at", DateTime, nullable=False),
    Column("payload", JSON),
    Column("form", String(64)),
    Column("record_id", BigInteger),
    Column("status", String(16), nullable=False, default="pending"),  # pending, done, failed, cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("locked_by", String(64)),
    Column("locked_until", DateTime),
    Column("fired_at", DateTime),
    Column("last_error", Text),
    Index("ix_loom_timers_due", "status", "due_at"),
    Index("ix_loom_timers_record", "app", "form", "record_id"),
)

outbox = Table(
    "loom_outbox", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("template", String(64), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(255), nullable=False, index=True),
    Column("recipient_kind", String(16)),   # user, customer, address
    Column("lang", String(8)),
    Column("subject", Text),
    Column("rendered", Text, nullable=False),
    Column("kind", String(16), nullable=False, default="service"),  # service, marketing
    Column("status", String(16), nullable=False, default="queued"),  # queued, sent, failed, suppressed
    Column("due_at", DateTime, nullable=False),
    Column("sent_at", DateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),
    Column("last_error", Text),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("form", String(64)),
    Column("record_id", BigInteger),
    Column("created_at", DateTime, nullable=False),
    Index("ix_loom_outbox_status", "status", "due_at"),
)

tasks = Table(
    "loom_tasks", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("form", String(64)),
    Column("record_id", BigInteger),
    Column("kind", String(24), nullable=False),   # approval, callback, escalation, todo
    Column("title", JSON, nullable=False),
    Column("body", Text),
    Column("assignee", String(64), index=True),
    Column("candidate_role", String(64)),
    Column("status", String(16), nullable=False, default="open"),  # open, done, cancelled
    Column("outcome", String(24)),
    Column("due_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("completed_at", DateTime),
    Column("completed_by", String(64)),
    Column("flow", String(64)),
    Column("step", String(64)),
    Column("payload", JSON),
    Index("ix_loom_tasks_assignee", "assignee", "status"),
    Index("ix_loom_tasks_record", "app", "form", "record_id"),
)

sequences = Table(
    "loom_sequences", metadata,
    Column("app", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

files = Table(
    "loom_files", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", String(512), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", String(64)),
    Column("form", String(64)),                 # the form and field it was uploaded for (migration 0004_files)
    Column("field", String(64)),
    Column("record_id", BigInteger),            # the record holding it, once attached
    Column("status", String(16), nullable=False, default="pending", server_default="pending"),  # pending, attached
    Column("attached_at", DateTime),
    Index("ix_loom_files_record", "app", "form", "record_id"),
    Index("ix_loom_files_pending", "status", "created_at"),
)

rule_log = Table(
    "loom_rule_log", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("form", String(64)),
    Column("record_id", BigInteger),
    Column("at", DateTime, nullable=False),
    Column("trigger", String(40)),
    Column("inputs", JSON),
    Column("outcome", String(24), nullable=False),   # fired, skipped, error
    Column("actions", JSON),
    Index("ix_loom_rule_log_record", "app", "form", "record_id"),
)
