"""The assignment cursor's conditional advance (PostgreSQL): ``loom_cursor_advance``.

Revision ID: 0008_cursor_advance
Revises:
Depends on: 0002_rules

A create whose rules assign by round robin may choose from this process's remembered copy of
the pool's cursor instead of reading it under a lock (one round trip less per lead,
:mod:`engine.optimistic`).  Its write then goes through this function, which advances the row
only if it still holds what was remembered -- the same ``seq`` and the same users generation --
and otherwise raises ``40001`` "loom: stale read ...", after which the create is run again
with the locked read.  The UPDATE waits for a concurrent transaction's lock on the row like
``FOR UPDATE`` does, then compares with what that transaction committed.

SQLite serialises writers and has no round trips: it keeps the plain read and UPDATE.
"""
from alembic import op

revision = "0008_cursor_advance"
down_revision = None
branch_labels = ("cursor_advance",)
depends_on = "0002_rules"

FUNCTION = """
CREATE OR REPLACE FUNCTION loom_cursor_advance(p_app text, p_key text, p_seq bigint, p_gen bigint,
                                               p_value json, p_at timestamp) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE loom_rule_cursors SET value = p_value, updated_at = p_at
   WHERE app = p_app AND key = p_key
     AND COALESCE((value ->> 'seq')::bigint, 0) = p_seq
     AND (SELECT s.value FROM loom_sequences s WHERE s.app = '' AND s.key = 'users.gen') IS NOT DISTINCT FROM p_gen;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '40001',
      MESSAGE = 'loom: stale read of the assignment cursor ' || p_key,
      HINT = 'the create is run again with the cursor read under a lock';
  END IF;
END $$
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS loom_cursor_advance(text, text, bigint, bigint, json, timestamp)")
