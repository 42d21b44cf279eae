"""The user directory: active users, read once per process and reused until the users change.

Rules that assign or notify need "the active sales consultants of the east
region" on every request.  Reading ``loom_users`` and building ``User``
objects each time cost more than the rest of the assignment, so each runtime
keeps one snapshot of the active users and reuses it while the database's
*users generation* is unchanged.

The generation is a row of ``loom_sequences`` (app ``''``, key
``users.gen``) that database triggers on ``loom_users`` change on every
insert, update or delete -- whoever writes: ``loom user``, the admin pages,
a restore, or an operator with ``psql``.  A request reads it with one indexed
primary-key lookup (in its own transaction, so it sees its own changes) and
reloads the snapshot only when it differs.

Why the value is not a plain counter: a transaction that changed users and
then rolled back must not leave this process holding a snapshot whose
generation a later, different change could reuse.  The triggers therefore
write a value that never repeats -- ``nextval`` of a sequence on PostgreSQL,
a 64-bit ``random()`` on SQLite (whose writers are serialised).  On
PostgreSQL the generation is read before the users, so a snapshot may be
newer than its generation (reloaded again next time), never older.

The triggers are (re)created on every start (:func:`install_triggers`,
called by ``engine.migrate.upgrade_platform``): ``CREATE ... IF NOT EXISTS``
costs nothing, and a database restored from a backup gets them too.
"""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, text

from . import platform as P
from .auth import User

GEN_APP, GEN_KEY = "", "users.gen"

_GEN = select(P.sequences.c.value).where(P.sequences.c.app == GEN_APP, P.sequences.c.key == GEN_KEY)
USERS_GENERATION = _GEN.scalar_subquery().label("users_generation")   # to read it with another query
_u = P.users
_ACTIVE = (select(_u.c.username, _u.c.roles, _u.c.attrs, _u.c.display_name, _u.c.language, _u.c.away_until)
           .where(_u.c.active.is_(True)).order_by(_u.c.username))
_ONE = select(_u.c.username, _u.c.roles, _u.c.attrs, _u.c.display_name, _u.c.language, _u.c.active).where(
    _u.c.username == bindparam("username"))


@dataclass(frozen=True)
class Snapshot:
    """The active users at one generation: sorted by name, by role, and who is away until when."""

    generation: Any
    users: tuple[User, ...]
    by_name: dict[str, User]
    by_role: dict[str, tuple[User, ...]]
    away_until: dict[str, dt.datetime]          # naive UTC, as stored

    def with_role(self, role: str) -> tuple[User, ...]:
        return self.by_role.get(role, ())


def _snapshot(generation: Any, rows: Any) -> Snapshot:
    users, away, by_role = [], {}, {}
    for row in rows:
        user = User(row.username, frozenset(row.roles or ()), dict(row.attrs or {}), row.display_name, row.language, True)
        users.append(user)
        for role in user.roles:
            by_role.setdefault(role, []).append(user)
        if row.away_until is not None:
            away[row.username] = row.away_until
    return Snapshot(generation, tuple(users), {u.username: u for u in users},
                    {r: tuple(us) for r, us in by_role.items()}, away)


class Directory:
    """``runtime.directory``: the cached snapshot of one database's active users."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self.reloads = 0                      # how often the users were read (for tests and benchmarks)

    def cached(self) -> Snapshot | None:
        """The snapshot as last read, without asking the database whether it is current: for an
        optimistic reader whose write checks the generation on the server (``engine.optimistic``)."""
        return self._snapshot

    def active(self, conn: Any, generation: Any = None) -> Snapshot:
        """The active users as ``conn``'s transaction sees them.  ``generation``: the users generation
        if the caller read it already in this transaction (with :data:`USERS_GENERATION`)."""
        if generation is None:
            generation = conn.execute(_GEN).scalar()
        snap = self._snapshot
        if snap is not None and generation is not None and snap.generation == generation:
            return snap
        snap = _snapshot(generation, conn.execute(_ACTIVE))
        self.reloads += 1
        if generation is not None:            # no triggers (yet): never trust a cached copy
            with self._lock:
                self._snapshot = snap
        return snap

    def user(self, conn: Any, username: str) -> User | None:
        """An active user from the snapshot, else (inactive or unknown) from the database."""
        found = self.active(conn).by_name.get(username)
        if found is not None:
            return found
        row = conn.execute(_ONE, {"username": username}).first()
        if row is None:
            return None
        return User(row.username, frozenset(row.roles or ()), dict(row.attrs or {}), row.display_name, row.language,
                    bool(row.active))


# ---------------------------------------------------------------------------
# the triggers

_PG = [
    "CREATE SEQUENCE IF NOT EXISTS loom_users_gen_seq",
    """CREATE OR REPLACE FUNCTION loom_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO loom_sequences (app, key, value) VALUES ('', 'users.gen', nextval('loom_users_gen_seq'))
  ON CONFLICT (app, key) DO UPDATE SET value = EXCLUDED.value;
  RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER loom_users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loom_users "
    "FOR EACH STATEMENT EXECUTE FUNCTION loom_users_changed()",
    "INSERT INTO loom_sequences (app, key, value) VALUES ('', 'users.gen', nextval('loom_users_gen_seq')) "
    "ON CONFLICT (app, key) DO NOTHING",
]
_SQLITE_BODY = ("BEGIN INSERT INTO loom_sequences (app, key, value) VALUES ('', 'users.gen', random()) "
                "ON CONFLICT (app, key) DO UPDATE SET value = excluded.value; END")
_SQLITE = [f"CREATE TRIGGER IF NOT EXISTS loom_users_{op.lower()} AFTER {op} ON loom_users {_SQLITE_BODY}"
           for op in ("INSERT", "UPDATE", "DELETE")] + [
    "INSERT INTO loom_sequences (app, key, value) VALUES ('', 'users.gen', random()) ON CONFLICT (app, key) DO NOTHING"]


def install_triggers(conn: Any) -> None:
    """Create the triggers that change the users generation (idempotent; run on every start).

    On PostgreSQL nothing is redefined when the trigger is there already: DDL on ``loom_users``
    would wait for every open transaction that touched the table."""
    if conn.dialect.name == "postgresql":
        if conn.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = 'loom_users_changed'")).first() is None:
            for statement in _PG:
                conn.execute(text(statement))
        return
    for statement in _SQLITE:
        conn.execute(text(statement))


__all__ = ["Directory", "Snapshot", "USERS_GENERATION", "install_triggers"]
