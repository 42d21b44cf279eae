"""The rule engine's platform tables (created by ``engine/migrations/versions/0002_rules.py``).

* ``loom_rule_cursors`` -- small per-key state rows that serialise decisions
  made by concurrent transactions: round-robin / weighted positions, and the
  per-customer lock for frequency caps.  Read with ``SELECT ... FOR UPDATE``
  on PostgreSQL (SQLite serialises writers anyway).
* ``loom_rule_claims`` -- who took which record from the public pool, for the
  per-user cap on open claims.
"""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, String, Table

from engine.platform import metadata

ID = BigInteger().with_variant(Integer, "sqlite")

cursors = Table(
    "loom_rule_cursors", metadata,
    Column("app", String(64), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

claims = Table(
    "loom_rule_claims", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("username", String(64), nullable=False),
    Column("claimed_at", DateTime, nullable=False),
    Column("released_at", DateTime),
    Index("ix_loom_rule_claims_user", "app", "username", "released_at"),
    Index("ix_loom_rule_claims_record", "app", "form", "record_id"),
)
