"""Expression.to_sql: the database selects exactly the rows Python's evaluate() accepts.

Runs on SQLite (in memory) and on PostgreSQL from ``LOOM_TEST_PG_URL`` (e.g.
postgresql+psycopg2://postgres@127.0.0.1:5432/test). Without it the PostgreSQL half is
skipped, unless ``LOOM_REQUIRE_PG=1``, in which case it fails. Each test uses its own
uniquely named tables and drops them.
"""
from __future__ import annotations

import datetime as dt
import os
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.expressions import EvalContext, ExpressionError, compile_expression

UTC = dt.timezone.utc
CTX = EvalContext(now=dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC), tz=ZoneInfo("Asia/Shanghai"))  # Mon 10:00
USER = {"name": "amy", "dealer": "D001", "roles": ["sales_consultant"]}


def _pg_url() -> str | None:
    url = os.environ.get("LOOM_TEST_PG_URL")
    if not url:
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail("LOOM_REQUIRE_PG=1 but LOOM_TEST_PG_URL is not set")
        return None
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return url


@pytest.fixture(scope="module")
def pg_engine():
    url = _pg_url()
    if url is None:
        yield None
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        engine.dispose()
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        yield None
        return
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, pg_engine):
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://")
        yield engine
        engine.dispose()
        return
    if pg_engine is None:
        pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL (CI sets LOOM_REQUIRE_PG=1)")
    yield pg_engine


class Db:
    """Two small tables (lead -> customer) with unique names, rows, and the check."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        suffix = uuid.uuid4().hex[:10]
        md = sa.MetaData()
        self.customer = sa.Table(
            f"expr_customer_{suffix}", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("tier", sa.String(20)))
        self.lead = sa.Table(
            f"expr_lead_{suffix}", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("score", sa.Integer), sa.Column("amount", sa.Numeric(12, 2)), sa.Column("ratio", sa.Float),
            sa.Column("source", sa.String(30)), sa.Column("level", sa.String(5)), sa.Column("owner", sa.String(30)),
            sa.Column("name", sa.String(30)), sa.Column("dealer", sa.String(10)), sa.Column("in_pool", sa.Boolean),
            sa.Column("created_at", sa.DateTime), sa.Column("closed_at", sa.DateTime), sa.Column("due", sa.Date),
            sa.Column("customer", sa.Integer))
        self.md = md
        md.create_all(engine)

    def drop(self) -> None:
        self.md.drop_all(self.engine)

    def load(self, leads: list[dict], customers: list[dict]) -> None:
        with self.engine.begin() as c:
            c.execute(self.lead.delete())
            c.execute(self.customer.delete())
            if customers:
                c.execute(self.customer.insert(), customers)
            if leads:
                c.execute(self.lead.insert(), leads)

    def resolve(self, path: tuple):
        if path[0] == "current_user":
            return USER.get(path[1]) if len(path) > 1 else USER["name"]
        if path[0] == "customer" and len(path) == 2:
            cu = self.customer
            return sa.select(cu.c[path[1]]).where(cu.c.id == self.lead.c.customer).scalar_subquery()
        return self.lead.c[path[0]]

    def envs(self) -> list[dict]:
        with self.engine.connect() as c:
            customers = {r.id: dict(r._mapping) for r in c.execute(sa.select(self.customer))}
            rows = [dict(r._mapping) for r in c.execute(sa.select(self.lead).order_by(self.lead.c.id))]
        for r in rows:
            r["customer"] = customers.get(r["customer"])
            r["current_user"] = USER
        return rows

    def python_ids(self, source: str) -> list[int]:
        expr = compile_expression(source)
        return [r["id"] for r in self.envs() if expr.evaluate(r, CTX)]

    def sql_ids(self, source: str) -> list[int]:
        expr = compile_expression(source)
        where = expr.to_sql(self.resolve, self.dialect, ctx=CTX, mode="filter")
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(sa.select(self.lead.c.id).where(where).order_by(self.lead.c.id))]

    def check(self, source: str) -> list[int]:
        want, got = self.python_ids(source), self.sql_ids(source)
        assert got == want, f"{self.dialect}: {source!r}: SQL {got} != Python {want}"
        return got


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute)       # naive UTC, as stored


CUSTOMERS = [{"id": 1, "tier": "gold"}, {"id": 2, "tier": "silver"}, {"id": 3, "tier": None}]
LEADS = [
    dict(id=1, score=85, amount=Decimal("120.50"), ratio=1.5, source="referral", level="H", owner="amy", name="Amy",
         dealer="D001", in_pool=False, created_at=at(18, 3), closed_at=at(20, 3), due=dt.date(2026, 11, 20),
         customer=1),
    dict(id=2, score=None, amount=None, ratio=None, source=None, level=None, owner=None, name=None, dealer=None,
         in_pool=None, created_at=None, closed_at=None, due=None, customer=None),
    dict(id=3, score=50, amount=Decimal("9.99"), ratio=2.5, source="walk_in", level="C", owner="bob", name=" bob ",
         dealer="D002", in_pool=True, created_at=at(22, 17), closed_at=None, due=dt.date(2026, 11, 23), customer=2),
    dict(id=4, score=0, amount=Decimal("0"), ratio=-0.5, source="website", level="", owner="", name="",
         dealer="D001", in_pool=False, created_at=at(22, 16), closed_at=at(21, 0), due=dt.date(2026, 12, 31),
         customer=3),
    dict(id=5, score=100, amount=Decimal("1000"), ratio=0.0, source="hotline_400", level="A", owner="amy",
         name="Zoe", dealer="D001", in_pool=True, created_at=at(23, 2), closed_at=at(23, 2), due=dt.date(2026, 11, 1),
         customer=None),
    dict(id=6, score=57, amount=Decimal("57.00"), ratio=3.25, source="referral", level="B", owner="cai",
         name="anna", dealer="D003", in_pool=None, created_at=at(16, 0), closed_at=at(25, 12),
         due=dt.date(2026, 11, 22), customer=1),
]


@pytest.fixture
def db(backend):
    d = Db(backend)
    d.load(LEADS, CUSTOMERS)
    yield d
    d.drop()


SAME_ROWS = [
    # comparisons and empty values
    "score >= 80", "score < 60", "not (score < 60)", "score == None", "score != None", "score is None",
    "level != 'C'", "level == 'C'", "not (level == 'C')", "0 < score <= 80", "not (0 < score <= 80)",
    "score > ratio", "not (score > ratio)", "amount >= 100", "amount > 57", "score == amount", "score != amount",
    "owner == name", "owner != name", "lower(owner) == lower(trim(name))", "name < 'b'", "name >= 'Z'",
    "not (name < 'b')", "level > ''",
    # membership
    "source in ['referral', 'walk_in']", "source not in ['referral', 'walk_in']", "source in ['referral', None]",
    "source not in ['website', None]", "not (source in ['website'])", "'o' in name", "'o' not in name",
    "source in [owner, name]", "source not in [owner, 'website']", "score in [0, 50, 100]",
    # booleans and truthiness
    "in_pool", "not in_pool", "in_pool == true", "in_pool != true", "in_pool == false",
    "owner == current_user.name or in_pool", "owner == current_user.name and not in_pool",
    "owner and score", "not owner", "not (owner or level)", "score", "not score",
    "dealer == current_user.dealer", "current_user.name == 'amy'", "'admin' in current_user.roles",
    "true", "false", "null == None",
    # arithmetic
    "score + 10 > 90", "score - ratio < 50", "score * 2 >= 100", "score / 3 > 20", "score // 7 == 8",
    "score % 7 == 1", "-score < -50", "amount * 2 > score", "amount + 0.5 > 10", "name + '!' == 'Amy!'",
    "(score if in_pool else 100) > 60", "(1 if level == 'H' else 0) == 1", "not (score > 10 if in_pool else false)",
    # functions
    "lower(level) == 'h'", "upper(name) == 'AMY'", "len(name) > 3", "len(name) == 0", "trim(name) == 'bob'",
    "coalesce(score, 0) < 10", "coalesce(owner, name, 'x') == 'x'", "abs(score - 50) < 10", "round(ratio) == 3",
    "round(ratio) == -1", "round(amount, 1) > 120.4", "round(amount) == 10", "is_empty(owner)",
    "not is_empty(owner)", "is_empty(level) and not is_empty(name)", "is_empty(score)", "contains(name, 'o')",
    "not contains(name, 'o')", "contains(name, owner)", "startswith(name, 'A')", "not startswith(name, 'A')",
    "endswith(name, 'y')", "endswith(name, '')", "contains(['referral', 'website'], source)",
    # dates and times
    "days_between(created_at, today()) > 3", "days_between(created_at, today()) >= 0",
    "days_between(created_at, now()) == 0", "days_between(created_at, closed_at) >= 1",
    "days_between(closed_at, created_at) == -2", "hours_between(created_at, now()) < 48",
    "hours_between(created_at, closed_at) > 24", "days_between(due, today()) < 0", "days_between(due, now()) > 1",
    "days_between(due, created_at) >= 0", "date_part(created_at, 'hour') >= 9",
    "date_part(created_at, 'weekday') == 1", "date_part(due, 'month') == 12", "date_part(created_at, 'year') == 2026",
    "date_part(created_at, 'quarter') == 4", "date_part(created_at, 'day') == 23", "date_part(due, 'weekday') == 7",
    "date_part(created_at, 'minute') == 0",
    "created_at >= today()", "created_at < add_days(today(), -3)", "due <= today()", "due < now()", "due > now()",
    "due == today()", "due == '2026-11-23'", "due != '2026-11-23'", "created_at > '2026-11-20'",
    "created_at <= '2026-11-23 02:00'", "due in ['2026-11-20', '2026-11-22']", "closed_at >= created_at",
    "closed_at == None or closed_at >= created_at", "due < created_at", "not (due < created_at)",
    "due >= date('2026-11-01')", "closed_at == created_at", "due == created_at",
    # links
    "customer.tier == 'gold'", "customer.tier != 'gold'", "customer.tier == None", "customer.tier in ['gold', 'silver']",
]


@pytest.mark.parametrize("source", SAME_ROWS)
def test_sql_selects_the_same_rows_as_python(db, source):
    db.check(source)


def test_a_few_results_are_what_a_reader_expects(db):
    assert db.check("level != 'C'") == [1, 2, 4, 5, 6]                  # empty level is "not C"
    assert db.check("not (score < 60)") == [1, 2, 5]                    # empty score is not < 60
    assert db.check("owner == current_user.name or in_pool") == [1, 3, 5]
    assert db.check("days_between(created_at, today()) > 3") == [1, 6]
    assert db.check("customer.tier == 'gold'") == [1, 6]


def test_sql_text(db):
    s = compile_expression("score == None and level != 'C'").to_sql(db.resolve, db.dialect, ctx=CTX)
    text = str(s.compile(dialect=db.engine.dialect))
    assert "IS NULL" in text and "!=" in text
    folded = compile_expression("current_user.dealer == 'D001'").to_sql(db.resolve, db.dialect, ctx=CTX)
    assert str(folded.compile(dialect=db.engine.dialect)) in ("true", "1")


def test_values_for_report_measures(db):
    """mode='value' (and non-conditions in 'auto') give a value expression, e.g. for avg()."""
    expr = compile_expression("hours_between(created_at, closed_at)")
    col = expr.to_sql(db.resolve, db.dialect, ctx=CTX)
    with db.engine.connect() as c:
        got = c.execute(sa.select(sa.func.avg(col))).scalar()
    values = [v for v in (expr.evaluate(r, CTX) for r in db.envs()) if v is not None]
    assert float(got) == pytest.approx(sum(values) / len(values))
    count = compile_expression("score >= 50").to_sql(db.resolve, db.dialect, ctx=CTX)
    with db.engine.connect() as c:
        n = c.execute(sa.select(sa.func.count()).select_from(db.lead).where(count)).scalar()
    assert n == 4
    v = compile_expression("score >= 50").to_sql(db.resolve, db.dialect, ctx=CTX, mode="value")
    with db.engine.connect() as c:
        flags = [r[0] for r in c.execute(sa.select(v).select_from(db.lead).order_by(db.lead.c.id))]
    assert [bool(f) for f in flags] == [True, False, True, False, True, True]


@pytest.mark.parametrize("source, words", [
    ("add_days(created_at, 3) > now()", "add_days() cannot be used in a database filter"),
    ("score ** 2 > 4", "cannot be used in a database filter"),
    ("exists('service_order', lead=id)", "exists() cannot be used"),
    ("changed('owner')", "changed() cannot be used"),
    ("mask(name) == 'x'", "mask() cannot be used"),
    ("name < 3", "cannot compare"),
    ("name + 1 == 2", "concat"),
    ("ratio % 2 == 1", "cannot be used in a database filter"),
    ("[score, 1] == [1, 1]", "lists must hold fixed values"),
    ("created_at + 1 > 3", "days_between"),
])
def test_untranslatable_parts_are_clear_errors(db, source, words):
    with pytest.raises(ExpressionError) as info:
        compile_expression(source).to_sql(db.resolve, db.dialect, ctx=CTX)
    assert words in info.value.message, info.value.message
    assert info.value.code in ("sql", "runtime")


def test_resolver_errors_pass_through(db):
    def resolve(path):
        raise ExpressionError(f"'{path[0]}' is personal data (pii) and cannot be compared in a database filter")
    with pytest.raises(ExpressionError, match="pii"):
        compile_expression("phone == '1'").to_sql(resolve, db.dialect, ctx=CTX)


# -- property: random rows x expression templates ----------------------------------------------------------

def _dt():
    return st.datetimes(dt.datetime(2026, 10, 1), dt.datetime(2026, 12, 31)).map(lambda v: v.replace(microsecond=0))


ROWS = st.lists(st.fixed_dictionaries({
    "score": st.one_of(st.none(), st.integers(-5, 105)),
    "amount": st.one_of(st.none(), st.decimals(-100, 1000, places=2, allow_nan=False, allow_infinity=False)),
    "ratio": st.one_of(st.none(), st.integers(-400, 400).map(lambda v: v / 4)),
    "source": st.one_of(st.none(), st.sampled_from(["referral", "walk_in", "website", ""])),
    "level": st.one_of(st.none(), st.sampled_from(["H", "A", "B", "C", "", "h"])),
    "owner": st.one_of(st.none(), st.sampled_from(["amy", "bob", ""])),
    "name": st.one_of(st.none(), st.text("aAbBz _", max_size=4)),
    "dealer": st.one_of(st.none(), st.sampled_from(["D001", "D002"])),
    "in_pool": st.one_of(st.none(), st.booleans()),
    "created_at": st.one_of(st.none(), _dt()),
    "closed_at": st.one_of(st.none(), _dt()),
    "due": st.one_of(st.none(), st.dates(dt.date(2026, 10, 1), dt.date(2026, 12, 31))),
    "customer": st.one_of(st.none(), st.sampled_from([1, 2, 3])),
}), min_size=1, max_size=8).map(lambda rows: [dict(r, id=i + 1) for i, r in enumerate(rows)])

ORDER = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
TEMPLATES = st.one_of(
    st.tuples(ORDER, st.integers(-5, 105)).map(lambda t: f"score {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-20, 20)).map(lambda t: f"ratio {t[0]} {t[1] / 4}"),
    st.tuples(ORDER, st.integers(-100, 1000)).map(lambda t: f"amount {t[0]} {t[1]}"),
    st.tuples(ORDER, st.text("aAbBz _", max_size=3)).map(lambda t: f"name {t[0]} {t[1]!r}"),
    st.tuples(ORDER, st.sampled_from(["H", "C", "", "h"])).map(lambda t: f"not (level {t[0]} {t[1]!r})"),
    st.lists(st.sampled_from(["referral", "walk_in", "website", "", None]), max_size=3).flatmap(
        lambda items: st.sampled_from(["in", "not in"]).map(lambda op: f"source {op} {items!r}")),
    st.tuples(ORDER, st.integers(-30, 30)).map(lambda t: f"days_between(created_at, today()) {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-30, 30)).map(lambda t: f"days_between(created_at, closed_at) {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-300, 300)).map(lambda t: f"hours_between(closed_at, now()) {t[0]} {t[1] / 2}"),
    st.tuples(ORDER, st.integers(-40, 40)).map(lambda t: f"days_between(due, created_at) {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-30, 30)).map(lambda t: f"created_at {t[0]} add_days(today(), {t[1]})"),
    st.tuples(ORDER, st.integers(-30, 30)).map(lambda t: f"due {t[0]} add_days(today(), {t[1]})"),
    st.tuples(ORDER).map(lambda t: f"due {t[0]} created_at"),
    st.tuples(ORDER, st.integers(-2000, 2000)).map(lambda t: f"due {t[0]} add_hours(now(), {t[1]})"),
    st.tuples(ORDER, st.integers(1, 30), st.integers(0, 23)).map(
        lambda t: f"created_at {t[0]} '2026-11-{t[1]:02d} {t[2]:02d}:00'"),
    st.tuples(ORDER, st.integers(1, 30)).map(lambda t: f"due {t[0]} '2026-11-{t[1]:02d}'"),
    st.tuples(ORDER, st.integers(-3, 3)).map(lambda t: f"days_between(due, now()) {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(1, 12)).map(lambda t: f"date_part(due, 'month') {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-10, 10), st.integers(1, 9)).map(lambda t: f"score // {t[2]} {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(0, 6), st.integers(1, 7)).map(lambda t: f"score % {t[2]} {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-50, 50)).map(lambda t: f"(score if in_pool else ratio) {t[0]} {t[1]}"),
    st.tuples(ORDER).map(lambda t: f"closed_at {t[0]} created_at"),
    st.tuples(ORDER, st.integers(0, 24)).map(lambda t: f"date_part(created_at, 'hour') {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(1, 7)).map(lambda t: f"date_part(created_at, 'weekday') {t[0]} {t[1]}"),
    st.tuples(ORDER, st.integers(-5, 105), st.sampled_from(["and", "or"]), st.sampled_from(["H", "C"])).map(
        lambda t: f"(score {t[0]} {t[1]}) {t[2]} not (level == {t[3]!r} or in_pool)"),
    st.tuples(ORDER, st.integers(0, 110)).map(lambda t: f"coalesce(score, 50) + 1 {t[0]} {t[1]}"),
    st.sampled_from(["owner == current_user.name or in_pool", "not in_pool", "is_empty(name)", "not is_empty(owner)",
                     "contains(name, 'a')", "startswith(name, 'A')", "customer.tier == 'gold'",
                     "not (customer.tier != 'silver')", "owner == name", "owner != name", "lower(name) == 'ab'"]),
)


@settings(max_examples=int(os.environ.get("LOOM_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=ROWS, source=TEMPLATES)
def test_property_sql_equals_python(backend, rows, source):
    d = Db(backend)
    try:
        d.load(rows, CUSTOMERS)
        d.check(source)
    finally:
        d.drop()
