"""Writes that ride along with the next statement (engine.later): same results, fewer round trips."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text, event, func, select
from sqlalchemy.exc import IntegrityError

from engine.db import Database
from engine.later import execute_row, write_later

md = MetaData()
notes = Table("t_later_notes", md, Column("id", Integer, primary_key=True, autoincrement=True),
              Column("tag", String(40), unique=True), Column("body", Text), Column("data", JSON), Column("at", DateTime))
INSERT = notes.insert()
AWKWARD = [
    {"tag": "pct", "body": "100% sure; 50%% off; %(name)s %s", "data": {"k": "%(x)s", "n": None, "l": [1, 2.5, True]},
     "at": dt.datetime(2026, 11, 23, 9, 30, 15, 123456)},
    {"tag": "quotes", "body": "O'Brien said \"hi\"; DROP TABLE x; --", "data": ["a'b", {"c": "d\\e"}], "at": None},
    {"tag": "unicode", "body": "客户回访 ✓ 😀\n第二行", "data": {"名": "张三"}, "at": dt.datetime(2026, 1, 1)},
    {"tag": "nulls", "body": None, "data": None, "at": None},
]


@pytest.fixture
def db(db_url):
    d = Database(db_url)
    md.create_all(d.engine)
    yield d
    md.drop_all(d.engine)
    d.dispose()


class RoundTrips:
    def __init__(self, engine):
        self.n = 0
        event.listen(engine, "before_cursor_execute", self.count)

    def count(self, *_a):
        self.n += 1


def rows(db):
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(notes.c.tag, notes.c.body, notes.c.data, notes.c.at)
                                                          .order_by(notes.c.id))]



def test_json_columns_keep_what_the_fast_encoder_refuses(db):
    # JSON columns are written by orjson (engine.db.json_text); an integer beyond 64 bits, which it
    # refuses, still goes in (json.dumps), and Chinese text is stored as text, not \\u escapes
    rows = [{"tag": "big", "body": None, "data": {"n": 2 ** 70, "k": [1, 2]}, "at": None},
            {"tag": "zh", "body": None, "data": {"名": "张三", 7: "int key"}, "at": None}]
    with db.write() as conn:
        write_later(conn, INSERT, rows)
    with db.read() as conn:
        got = dict(conn.execute(select(notes.c.tag, notes.c.data)).all())
        raw = conn.exec_driver_sql("SELECT CAST(data AS TEXT) FROM t_later_notes WHERE tag = 'zh'").scalar()
    assert got == {"big": {"n": 2 ** 70, "k": [1, 2]}, "zh": {"名": "张三", "7": "int key"}}
    assert "张三" in raw

def test_json_serialized_by_the_caller_is_stored_as_it_is(db):
    # engine.db.dumps: the caller's conversions run inside orjson; the column keeps that text as
    # JSON (not a JSON string of it), held or executed at once, and what orjson refuses still goes in
    from decimal import Decimal
    from engine.db import dumps

    def default(v):
        if isinstance(v, Decimal):
            return float(v)
        return f"<{type(v).__name__}>"

    def slow(v):
        return {str(k): ([str(x) for x in sorted(x)] if isinstance(x, set) else x) for k, x in v.items()}
    value = {"price": Decimal("199800.50"), "when": dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc),
             "odd": {1, 2}, "名": "张三"}
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "held", "body": None, "data": dumps(value, default, slow), "at": None})
        conn.execute(INSERT, {"tag": "now", "body": None, "data": dumps(value, default, slow), "at": None})
        conn.execute(INSERT, {"tag": "big", "body": None, "data": dumps({(1, 2): 2 ** 70}, default, slow), "at": None})
    with db.read() as conn:
        got = dict(conn.execute(select(notes.c.tag, notes.c.data)).all())
    want = {"price": 199800.5, "when": "2026-11-23T09:30:00+00:00", "odd": "<set>", "名": "张三"}
    assert got == {"held": want, "now": want, "big": {"(1, 2)": 2 ** 70}}


def test_a_row_executed_now_is_written_as_an_ordinary_insert_writes_it(db):
    # engine.later.execute_row (the record service's INSERT): on PostgreSQL the values are sent as
    # literals (engine.pgliteral) in a text psycopg2 still interpolates -- quotes, percent signs and
    # placeholders in the values must arrive as they were, also with held writes riding along
    returning = notes.insert().returning(notes.c.id)
    with db.write() as conn:
        ids = []
        for row in AWKWARD:
            conn.execute(INSERT, dict(row, tag="now-" + row["tag"]))
            write_later(conn, INSERT, dict(row, tag="held-" + row["tag"]))
            ids.append(execute_row(conn, returning, dict(row, tag="row-" + row["tag"]))[0])
    got = rows(db)
    by = {r["tag"]: {k: v for k, v in r.items() if k != "tag"} for r in got}
    for row in AWKWARD:
        assert by["row-" + row["tag"]] == by["now-" + row["tag"]] == by["held-" + row["tag"]], row["tag"]
    assert len(set(ids)) == len(AWKWARD) and all(isinstance(i, int) for i in ids)
    assert by["row-pct"]["body"] == "100% sure; 50%% off; %(name)s %s"


def test_values_the_literal_writer_refuses_still_go_through_the_driver(db):
    # engine.pgliteral quotes exact plain types only; a str subclass (and anything else) held on
    # PostgreSQL is quoted by psycopg2's mogrify, in the same batch as plain rows
    class Code(str):
        pass
    with db.write() as conn:
        write_later(conn, INSERT, [{"tag": "plain", "body": "O'Brien", "data": None, "at": None},
                                   {"tag": "subclass", "body": Code("O'Brien 100%"), "data": None, "at": None}])
    assert {r["tag"]: r["body"] for r in rows(db)} == {"plain": "O'Brien", "subclass": "O'Brien 100%"}


def test_equal_instants_in_other_zones_are_not_mixed_up(db):
    # SQLite's timestamp text is remembered per value (a request writes its now into many rows);
    # aware values that are equal instants but read differently must still be written as given
    utc = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)
    shanghai = utc.astimezone(dt.timezone(dt.timedelta(hours=8)))
    naive = dt.datetime(2026, 11, 23, 2, 0)
    with db.write() as conn:
        for tag, at in (("utc", utc), ("sh", shanghai), ("naive", naive), ("naive2", naive)):
            conn.execute(INSERT, {"tag": "now-" + tag, "body": None, "data": None, "at": at})
            write_later(conn, INSERT, {"tag": "held-" + tag, "body": None, "data": None, "at": at})
    got = {r["tag"]: r["at"] for r in rows(db)}
    for tag in ("utc", "sh", "naive", "naive2"):
        assert got["held-" + tag] == got["now-" + tag], tag


def test_values_are_written_exactly_as_an_ordinary_insert_writes_them(db):
    with db.write() as conn:
        for row in AWKWARD:
            conn.execute(INSERT, dict(row, tag="now-" + row["tag"]))
            write_later(conn, INSERT, dict(row, tag="later-" + row["tag"]))
    got = rows(db)
    now = {r["tag"][4:]: {k: v for k, v in r.items() if k != "tag"} for r in got if r["tag"].startswith("now-")}
    later = {r["tag"][6:]: {k: v for k, v in r.items() if k != "tag"} for r in got if r["tag"].startswith("later-")}
    assert later == now and len(later) == len(AWKWARD)
    assert later["pct"]["body"] == "100% sure; 50%% off; %(name)s %s"


def test_the_next_statement_sees_held_writes_and_on_postgresql_carries_them(db):
    trips = RoundTrips(db.engine)
    with db.write() as conn:
        write_later(conn, INSERT, [dict(r, tag=f"a{i}") for i, r in enumerate(AWKWARD)])
        write_later(conn, INSERT, {"tag": "b", "body": "x", "data": {}, "at": None})
        assert trips.n == 1 if db.url.startswith("sqlite") else trips.n == 0     # (SQLite: BEGIN)
        before = trips.n
        assert conn.execute(select(func.count()).select_from(notes)).scalar() == len(AWKWARD) + 1
        used = trips.n - before
    # PostgreSQL: the held rows and the read in one round trip; SQLite: one multi-row INSERT, then the read
    assert used == (1 if db.url.startswith("postgresql") else 2)
    assert len(rows(db)) == len(AWKWARD) + 1


def test_held_writes_are_sent_before_commit_when_no_statement_follows(db):
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "last", "body": "x", "data": {"a": 1}, "at": None})
    assert [r["tag"] for r in rows(db)] == ["last"]


def test_an_error_in_the_block_drops_held_writes_with_the_rollback(db):
    with pytest.raises(RuntimeError):
        with db.write() as conn:
            write_later(conn, INSERT, {"tag": "gone", "body": "x", "data": None, "at": None})
            raise RuntimeError("request failed")
    assert rows(db) == []
    with db.write() as conn:                 # and the next transaction on a pooled connection starts clean
        conn.execute(select(1))
    assert rows(db) == []


def test_a_failing_held_write_fails_the_transaction(db):
    with db.write() as conn:
        conn.execute(INSERT, {"tag": "dup", "body": "first", "data": None, "at": None})
    with pytest.raises(IntegrityError):
        with db.write() as conn:
            conn.execute(INSERT, {"tag": "other", "body": "x", "data": None, "at": None})
            write_later(conn, INSERT, {"tag": "dup", "body": "second", "data": None, "at": None})
            conn.execute(select(1))
    assert [(r["tag"], r["body"]) for r in rows(db)] == [("dup", "first")]


def test_savepoints_cover_held_writes(db):
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "kept", "body": "x", "data": None, "at": None})
        sp = conn.begin_nested()
        write_later(conn, INSERT, {"tag": "undone", "body": "x", "data": None, "at": None})
        sp.rollback()
        write_later(conn, INSERT, {"tag": "after", "body": "x", "data": None, "at": None})
    assert [r["tag"] for r in rows(db)] == ["kept", "after"]


def test_executemany_after_held_writes_keeps_the_order(db):
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "first", "body": "x", "data": None, "at": None})
        conn.execute(INSERT, [{"tag": f"m{i}", "body": "y", "data": None, "at": None} for i in range(3)])
    assert [r["tag"] for r in rows(db)] == ["first", "m0", "m1", "m2"]


def test_outside_a_write_transaction_writes_at_once(db):
    with db.engine.connect() as conn:
        with conn.begin():
            write_later(conn, INSERT, {"tag": "direct", "body": "x", "data": None, "at": None})
            assert conn.execute(select(func.count()).select_from(notes)).scalar() == 1
    assert [r["tag"] for r in rows(db)] == ["direct"]


class _Text(str):
    """Text of a str subclass: quoted by psycopg2 itself (engine.pgliteral leaves subclasses alone)."""


def test_a_dropped_connection_is_reported_as_a_database_error(db):
    """A value only psycopg2 quotes is quoted on the live connection: if it is gone, the caller gets
    SQLAlchemy's OperationalError/InterfaceError (answered with 503), never the driver's raw
    exception.  Plain values are quoted without it; the block then fails when it sends them."""
    from sqlalchemy.exc import DBAPIError
    if not db.url.startswith("postgresql"):
        pytest.skip("SQLite gets the values as parameters: nothing is quoted on the connection")
    raised = []
    with pytest.raises(DBAPIError):
        with db.write() as conn:
            conn.connection.dbapi_connection.close()
            try:
                write_later(conn, INSERT, {"tag": "x", "body": _Text("x"), "data": None, "at": None})
            except Exception as exc:          # what write_later itself raises, before the rollback
                raised.append(exc)
                raise
    assert raised and isinstance(raised[0], DBAPIError), raised
    with pytest.raises(DBAPIError):
        with db.write() as conn:
            conn.connection.dbapi_connection.close()
            write_later(conn, INSERT, {"tag": "y", "body": "y", "data": None, "at": None})
    assert rows(db) == []


class Statements:
    """The SQL texts sent to the database."""

    def __init__(self, engine):
        self.texts: list[str] = []
        event.listen(engine, "after_cursor_execute", self.seen)

    def seen(self, _conn, cursor, statement, *_a):
        self.texts.append(statement)


def test_held_rows_of_one_insert_go_as_one_multi_row_statement(db):
    """Two rule-log rows held apart are one INSERT for the database to plan and run, not two --
    with the awkward values intact and in the order they were held."""
    sent = Statements(db.engine)
    with db.write() as conn:
        write_later(conn, INSERT, [dict(r, tag=f"a{i}") for i, r in enumerate(AWKWARD[:2])])
        write_later(conn, INSERT, [dict(r, tag=f"b{i}") for i, r in enumerate(AWKWARD[2:])])
    text = "\n".join(sent.texts)
    assert text.count("INSERT INTO t_later_notes") == 1, text
    assert "RETURNING" not in text, "nobody reads a held row's id back"
    got = rows(db)
    assert [r["tag"] for r in got] == ["a0", "a1", "b0", "b1"]
    assert [{k: v for k, v in r.items() if k != "tag"} for r in got] == \
        [{k: v for k, v in r.items() if k != "tag"} for r in AWKWARD]


def test_rows_whose_keys_come_in_another_order_are_written_alike(db):
    """Held rows are keyed by their keys in the order given (sorting them cost 8% of a held row):
    the same columns in another order must still land in the right columns, in order."""
    forward = dict(AWKWARD[0], tag="f")
    backward = {k: forward[k] for k in reversed(list(forward))} | {"tag": "r"}
    with db.write() as conn:
        write_later(conn, INSERT, [forward])
        write_later(conn, INSERT, [backward])
        write_later(conn, INSERT, [dict(forward, tag="f2")])
    got = rows(db)
    assert [r["tag"] for r in got] == ["f", "r", "f2"]
    assert all({k: v for k, v in r.items() if k != "tag"} == {k: v for k, v in AWKWARD[0].items() if k != "tag"}
               for r in got)


def test_rows_held_around_a_change_to_their_table_keep_their_order(db):
    """A row held after an UPDATE of its table is not moved before the UPDATE by joining the
    batch held earlier: the UPDATE must not see it."""
    from sqlalchemy import bindparam, update
    relabel = update(notes).where(notes.c.body == bindparam("old")).values(body="updated")
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "before", "body": "x", "data": None, "at": None})
        write_later(conn, relabel, {"old": "x"})
        write_later(conn, INSERT, {"tag": "after", "body": "x", "data": None, "at": None})
    assert [(r["tag"], r["body"]) for r in rows(db)] == [("before", "updated"), ("after", "x")]


def test_a_multi_row_insert_ignoring_conflicts_skips_duplicates_among_its_own_rows(db):
    from engine.db import insert_ignore
    ignore = insert_ignore(notes, ("tag",), db.dialect)
    with db.write() as conn:
        write_later(conn, ignore, {"tag": "k", "body": "first", "data": None, "at": None})
        write_later(conn, ignore, {"tag": "k", "body": "second", "data": None, "at": None})
        write_later(conn, ignore, {"tag": "j", "body": "third", "data": None, "at": None})
    assert [(r["tag"], r["body"]) for r in rows(db)] == [("k", "first"), ("j", "third")]


def test_held_writes_go_before_direct_driver_use(db):
    """Code that uses the DBAPI cursor itself (a bulk import's COPY or executemany) flushes first,
    so the cursor sees the held rows.  (Savepoints: test_savepoints_cover_held_writes, both databases.)"""
    from engine import later
    with db.write() as conn:
        write_later(conn, INSERT, {"tag": "held", "body": "x", "data": None, "at": None})
        later.flush(conn)                          # what forms.bulk does before its raw cursor
        cur = conn.connection.dbapi_connection.cursor()
        cur.execute("SELECT count(*) FROM t_later_notes")
        assert cur.fetchone()[0] == 1
        cur.close()
    assert [r["tag"] for r in rows(db)] == ["held"]


def test_driver_statements_see_held_writes_and_fail_as_sqlalchemy_errors(db):
    # engine.driver: the hot-path statements that skip SQLAlchemy's result wrapping still read what
    # was held before them, count as statements for the engine's listeners, and fail the usual way
    from engine.driver import driver_execute
    mark = "?" if db.engine.dialect.paramstyle == "qmark" else "%s"
    seen = RoundTrips(db.engine)
    with db.write() as conn:
        write_later(conn, INSERT, [{"tag": "held", "body": "x", "data": None, "at": None}])
        got = driver_execute(conn, f"SELECT body FROM t_later_notes WHERE tag = {mark}", ("held",), rows=True)
        assert got.first() == ("x",) and got.all() == [("x",)]
        assert driver_execute(conn, f"UPDATE t_later_notes SET body = {mark} WHERE tag = {mark}", ("y", "held")).rowcount == 1
    # SQLite: BEGIN, the held INSERT just before the SELECT, the SELECT, the UPDATE; PostgreSQL: the
    # held INSERT rides along with the SELECT
    assert seen.n == (2 if db.engine.dialect.name == "postgresql" else 4)
    with pytest.raises(IntegrityError):
        with db.write() as conn:
            driver_execute(conn, f"INSERT INTO t_later_notes (tag) VALUES ({mark})", ("held",))
    with db.read() as conn:
        assert conn.execute(select(notes.c.body)).scalars().all() == ["y"]
