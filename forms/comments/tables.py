"""The comments table (created by ``engine/migrations/versions/0005_comments.py``).

``loom_comments``: one row per comment on a record.  ``mentions`` holds the
user names the comment notified (resolved and checked when it was posted), so
the timeline can highlight them without parsing again.  Deleting is a soft
delete (``deleted`` flag, who and when): the audit log points at the row, and
a mistaken delete can be undone by an operator.

Keep this in step with the migration.
"""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, false

metadata = MetaData()
ID = BigInteger().with_variant(Integer, "sqlite")

comments = Table(
    "loom_comments", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("author", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("mentions", JSON, nullable=False),          # [user names notified]
    Column("created_at", DateTime, nullable=False),
    Column("edited_at", DateTime),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Column("deleted_at", DateTime),
    Column("deleted_by", String(64)),
    Index("ix_loom_comments_record", "app", "form", "record_id", "deleted"),
)
