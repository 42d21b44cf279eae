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
