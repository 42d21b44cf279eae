"""The user directory: active users cached per process, read again whenever the users changed."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, text, update

from engine import platform as P
from engine.auth import upsert_user
from engine.directory import Directory, install_triggers
from tests.conftest import T0


def _add(rt, name, roles, **attrs):
    with rt.db.write() as conn:
        upsert_user(conn, T0, name, roles, attrs)


def _sales(rt, directory=None):
    directory = directory or rt.directory
    with rt.db.read() as conn:
        snap = directory.active(conn)
    return {u.username: dict(u.attrs) for u in snap.with_role("sales")}


def test_snapshot_is_reused_until_users_change(rt):
    _add(rt, "ann", ["sales"], region="east")
    _add(rt, "bob", ["sales"], region="south")
    assert _sales(rt) == {"ann": {"region": "east"}, "bob": {"region": "south"}}
    reloads = rt.directory.reloads
    for _ in range(3):
        assert _sales(rt) == {"ann": {"region": "east"}, "bob": {"region": "south"}}
    assert rt.directory.reloads == reloads, "nothing changed: the users must not be read again"
    _add(rt, "bob", ["sales"], region="east")
    assert _sales(rt)["bob"] == {"region": "east"}
    assert rt.directory.reloads == reloads + 1


def test_changes_made_behind_loom_are_seen(rt):
    """An operator's SQL (or a restore) changes loom_users directly: the triggers still tell."""
    _add(rt, "ann", ["sales"], region="east")
    _add(rt, "bob", ["sales"], region="east")
    assert set(_sales(rt)) == {"ann", "bob"}
    with rt.db.write() as conn:
        conn.execute(update(P.users).where(P.users.c.username == "bob").values(active=False))
    assert set(_sales(rt)) == {"ann"}
    with rt.db.write() as conn:
        conn.execute(update(P.users).where(P.users.c.username == "ann").values(
            away_until=T0 + dt.timedelta(days=2)))
    with rt.db.read() as conn:
        assert rt.directory.active(conn).away_until == {"ann": T0.replace(tzinfo=None) + dt.timedelta(days=2)}
    with rt.db.write() as conn:
        conn.execute(delete(P.users).where(P.users.c.username == "ann"))
    assert _sales(rt) == {}


def test_a_rolled_back_change_never_masks_a_later_one(rt):
    """A transaction reads its own uncommitted change (and caches it), then rolls back; the next
    committed change must still be seen, though a plain counter would reach the same value again."""
    _add(rt, "ann", ["sales"], region="east")
    assert _sales(rt) == {"ann": {"region": "east"}}
    conn = rt.db.engine.connect()
    tx = conn.begin()
    conn.execute(update(P.users).where(P.users.c.username == "ann").values(attrs={"region": "west"}))
    assert {u.username: u.attrs for u in rt.directory.active(conn).with_role("sales")} == {"ann": {"region": "west"}}
    tx.rollback()
    conn.close()
    assert _sales(rt) == {"ann": {"region": "east"}}
    _add(rt, "ann", ["sales"], region="north")
    assert _sales(rt) == {"ann": {"region": "north"}}


def test_processes_share_nothing_but_the_database(rt):
    """Two runtimes (two serve processes) on one database: a change made through one is seen by both."""
    other = Directory()
    _add(rt, "ann", ["sales"], region="east")
    assert _sales(rt, other) == _sales(rt) == {"ann": {"region": "east"}}
    _add(rt, "ann", ["sales"], region="west")
    assert _sales(rt, other) == _sales(rt) == {"ann": {"region": "west"}}


def test_triggers_are_installed_idempotently_and_restored_databases_get_them(rt):
    with rt.db.write() as conn:
        install_triggers(conn)
        install_triggers(conn)
    _add(rt, "ann", ["sales"])
    assert set(_sales(rt)) == {"ann"}
    with rt.db.write() as conn:                # as after a restore that did not bring the triggers
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER loom_users_changed ON loom_users"))
        else:
            for op in ("insert", "update", "delete"):
                conn.execute(text(f"DROP TRIGGER loom_users_{op}"))
    rt.start()                                 # every start re-creates them
    _add(rt, "bob", ["sales"])
    _sales(rt)
    _add(rt, "cat", ["sales"])
    assert set(_sales(rt)) == {"ann", "bob", "cat"}


def test_unknown_and_inactive_users_come_from_the_database(rt):
    _add(rt, "ann", ["sales"])
    with rt.db.write() as conn:
        upsert_user(conn, T0, "old", ["sales"], {}, active=False)
    with rt.db.read() as conn:
        assert rt.directory.user(conn, "ann").active
        assert rt.directory.user(conn, "old").active is False
        assert rt.directory.user(conn, "nobody") is None
