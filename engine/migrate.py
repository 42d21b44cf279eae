"""Running the platform migrations (Alembic) on start-up.

Several ``serve``/``worker`` processes may start at once on one PostgreSQL;
a transaction-scoped advisory lock makes exactly one of them migrate while
the others wait and then find nothing to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:  # alembic is imported when migrating: commands like `validate` never need it
    from alembic.config import Config

from .db import Database

_LOCK_ID = 0x6C6F6F6D  # 'loom'


def _config(conn) -> Config:
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade_platform(db: Database) -> None:
    with db.write() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
        from alembic import command
        command.upgrade(_config(conn), "heads")
        from .directory import install_triggers
        install_triggers(conn)
        install_functions(conn)


# The assignment cursor's checked advance (rules.assignment, engine.optimistic): a create that chose
# from this process's remembered copy of a round-robin cursor advances the row only if it still has
# the remembered ``seq`` and the users generation is unchanged, else raises 40001 "loom: stale
# read ..." and the create runs again with the row read under a lock.  The UPDATE waits for a
# concurrent transaction's lock on the row as FOR UPDATE does, then compares with what it committed.
CURSOR_ADVANCE = """
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


def install_functions(conn) -> None:
    """(Re)create Loom's server-side functions (PostgreSQL), like ``install_triggers``, on every
    start rather than in a migration: a database restored from a backup (``engine.backup``: tables,
    rows and the migration version, no functions) gets them too.  Nothing runs when they are there."""
    if conn.dialect.name != "postgresql":
        return
    signature = "loom_cursor_advance(text, text, bigint, bigint, json, timestamp)"
    if conn.execute(text("SELECT to_regprocedure(:s)"), {"s": signature}).scalar() is None:
        conn.exec_driver_sql(CURSOR_ADVANCE)
