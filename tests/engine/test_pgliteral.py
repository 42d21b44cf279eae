"""engine.pgliteral writes the literals psycopg2's mogrify writes, and the server reads them back
as the values they were -- the held writes of every create depend on both."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import psycopg2
import pytest

from engine.pgliteral import Unquotable, literals, literals_usable, writer
from tests.conftest import _pg_server_url

AWKWARD_TEXT = ["", "plain", "a'b", "''", "'; DROP TABLE loom_users; --", "back\\slash\\", "\\'", "E'x'", "$$ $tag$",
                "100% %(x)s %s %%", "客户回访 ✓ 😀", "\n\t\r\x01\x7f", "\u2028\u2029\ufeff", "ʼ＇‘’", "x" * 5000]
OTHERS = [None, True, False, 0, 7, -7, 2 ** 62, -(2 ** 62), 2 ** 80, 1.5, -2.25, 0.0, -0.0, 1e300, 5e-324,
          Decimal("1.50"), Decimal("-3"), Decimal("0"), Decimal("-0.000"), Decimal("1E+5"),
          dt.datetime(2026, 11, 23, 2, 0), dt.datetime(2026, 11, 23, 2, 0, 0, 123),
          dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc),
          dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))), dt.date(2026, 1, 1)]


@pytest.fixture
def pg():
    server = _pg_server_url()
    if server is None:
        pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL (CI sets LOOM_REQUIRE_PG=1)")
    conn = psycopg2.connect(server.replace("postgresql+psycopg2://", "postgresql://", 1))
    yield conn
    conn.close()


def _random_text(rng: random.Random) -> str:
    alphabet = "'\\\"%$;-\n ab客✓😀\x01E"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def test_the_literals_are_the_ones_psycopg2_writes(pg):
    assert literals_usable(pg)
    rng = random.Random(7)
    values = AWKWARD_TEXT + OTHERS + [_random_text(rng) for _ in range(500)]
    cur = pg.cursor()
    for v in values:
        got = literals({"v": v})
        assert got is not None, v
        assert "%(v)s" % got == cur.mogrify("%(v)s", {"v": v}).decode(), v


def test_the_server_reads_back_the_values_written(pg):
    cur = pg.cursor()
    for v in AWKWARD_TEXT + [x for x in OTHERS if not isinstance(x, (bool, float, Decimal)) and x is not None]:
        cur.execute("SELECT %(v)s" % literals({"v": v}))
        back = cur.fetchone()[0]
        assert back == v, v


def test_a_statement_writer_writes_what_mogrify_writes(pg):
    """The generated writer of a held row: its values (converted by the column's processor) and the
    statement's constants as literals, the text around them as ``%`` substitution leaves it."""
    sql = ("INSERT INTO t (a, b, c, d) VALUES (%(a)s, %(b)s::JSON, %(c)s, %(d)s) "
           "ON CONFLICT (a) DO UPDATE SET c = %(c)s, e = %(e)s WHERE x LIKE 'p%%'")
    to_json = lambda v: "null" if v is None else str(v)        # noqa: E731 - a stand-in processor
    write = writer(sql, frozenset({"a", "b", "c", "d"}), {"e": "pending"}, {"b": to_json})
    cur = pg.cursor()
    rng = random.Random(11)
    values = AWKWARD_TEXT + OTHERS + [_random_text(rng) for _ in range(200)]
    for i, v in enumerate(values):
        row = {"a": v, "b": values[-i], "c": i - 50, "d": values[i // 2]}
        params = dict(row, b=to_json(row["b"]), e="pending")
        assert write(row) == cur.mogrify(sql, params).decode(), v
    with pytest.raises(Unquotable):        # a value it does not quote: the caller falls back to mogrify
        write({"a": b"bytes", "b": None, "c": 1, "d": None})


def test_what_it_does_not_quote_is_left_to_psycopg2(pg):
    # NUL (psycopg2 raises its own error), types it does not know, subclasses and non-finite numbers
    class Name(str):
        pass
    for v in ["a\x00b", b"bytes", [1, 2], {"a": 1}, Name("x"), float("nan"), float("inf"), Decimal("NaN"),
              dt.time(9, 30), dt.timedelta(days=1)]:
        assert literals({"ok": "fine", "v": v}) is None, v


def test_only_where_quote_doubling_is_the_whole_escape(pg):
    cur = pg.cursor()
    cur.execute("SET standard_conforming_strings = off")
    assert not literals_usable(pg)
    cur.execute("SET standard_conforming_strings = on")
    pg.set_client_encoding("LATIN1")
    assert not literals_usable(pg)
    pg.set_client_encoding("UTF8")
    assert literals_usable(pg)
    pg.close()
    assert not literals_usable(pg)


def test_driver_statements_with_literals_read_back_what_was_given():
    # engine.db.run_driver sends plain values as literals on PostgreSQL, in a text psycopg2 still
    # interpolates: percent signs and placeholders in values and in the statement survive, in and
    # outside a transaction, and with held writes riding along in front of it
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, bindparam, literal_column, select

    from engine.db import Database, run_driver
    from engine.later import write_later
    server = _pg_server_url()
    if server is None:
        pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL (CI sets LOOM_REQUIRE_PG=1)")
    md = MetaData()
    table = Table(f"t_pglit_{random.randrange(10 ** 9)}", md, Column("id", Integer, primary_key=True),
                  Column("body", Text), Column("data", JSON))
    db = Database(server)
    md.create_all(db.engine)
    stmt = select(bindparam("v").label("v"), literal_column("'50%'").label("pct"))
    odd = "100% %(z)s %s ' \\ 客户"
    try:
        with db.engine.connect() as conn:
            assert run_driver(conn, stmt, {"v": odd}).all() == [(odd, "50%")]
        with db.write() as conn:
            write_later(conn, table.insert(), {"id": 1, "body": odd, "data": {"c": "9% 'q'"}})
            assert run_driver(conn, stmt, {"v": odd}).all() == [(odd, "50%")]
            got = conn.execute(select(table.c.body, table.c.data)).all()
        assert got == [(odd, {"c": "9% 'q'"})]
    finally:
        md.drop_all(db.engine)
        db.dispose()
