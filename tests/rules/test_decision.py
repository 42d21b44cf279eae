"""Decision tables: cells, hit policies first/unique/collect/priority, defaults (no database needed)."""
from __future__ import annotations

import datetime as dt

import pytest

from tests.rules.pkg import files

TABLES = """
rules:
  - name: use_all
    on: {created: lead}
    actions:
      - decide: {table: first_t, set: {score: score, level: level}}
      - decide: {table: unique_t, set: {level: level}}
      - decide: {table: collect_t, set: {tags: tag}}
      - decide: {table: sum_t, set: {score: points}}
      - decide: {table: priority_t, set: {level: level}}
      - decide: {table: relative_t, set: {level: level}}
decision_tables:
  - name: first_t
    hit_policy: first
    inputs: [source, model, test_drive]
    outputs: [score, level]
    rows:
      - {when: ["in ['referral', 'walk_in']", "-", "== true"], then: [90, H]}
      - {when: ["-", [s7, s5], "-"], then: [70, A]}
      - {when: [website, "-", false], then: {score: 40, level: B}}
      - {when: ["-", "-", "-"], then: [30, C]}
  - name: unique_t
    hit_policy: unique
    inputs: [score]
    outputs: [level]
    rows:
      - {when: ["[80..100]"], then: [H]}
      - {when: ["[50..85]"], then: [A]}
      - {when: ["< 50"], then: [C]}
  - name: collect_t
    hit_policy: collect
    inputs: [source, test_drive]
    outputs: [tag]
    rows:
      - {when: [referral, "-"], then: [warm]}
      - {when: ["-", "== true"], then: [drove]}
      - {when: ["!= None", "-"], then: [sourced]}
  - name: sum_t
    hit_policy: collect
    aggregate: sum
    inputs: [source, test_drive, "len(name)"]
    outputs: [points]
    rows:
      - {when: [referral, "-", "-"], then: [40]}
      - {when: ["-", true, "-"], then: [30]}
      - {when: ["-", "-", ">= 3"], then: [5]}
  - name: priority_t
    hit_policy: priority
    inputs: [score]
    outputs: [level]
    default: [C]
    rows:
      - {when: [">= 0"], then: [B], priority: 1}
      - {when: [">= 60"], then: [A], priority: 5}
      - {when: [">= 60"], then: [X], priority: 5}
      - {when: [">= 90"], then: [H], priority: 9}
  - name: typed_t
    hit_policy: first
    inputs: [score]
    outputs: [level]
    rows:
      - {when: ["lower(cell_input) == '1'"], then: [ONE]}
      - {when: ["-"], then: [OTHER]}
  - name: clock_t
    hit_policy: first
    inputs: [due]
    outputs: [level]
    rows:
      - {when: ["< today()"], then: [LATE]}
      - {when: ["-"], then: [ON_TIME]}
  - name: relative_t
    hit_policy: first
    inputs: [score, source]
    outputs: [level]
    rows:
      - {when: ["cell_input >= len(name) * 10", "-"], then: [H]}
      - {when: ["-", "cell_input == model"], then: [A]}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import ui.wiring
    from engine.definitions import compile_package
    from engine.package import read_package
    from tests.conftest import write_package
    ui.wiring.load_engines()
    root = write_package(tmp_path_factory.mktemp("dt"), files(TABLES))
    return compile_package(read_package(root))


class _RC:
    def __init__(self, now=dt.datetime(2026, 11, 23, 2, tzinfo=dt.timezone.utc)):
        self.now = now

    def eval_ctx(self):
        from engine.expressions import EvalContext
        return EvalContext(now=self.now, tz="Asia/Shanghai")


def decide(app, table, rc=None, **record):
    from rules.decision import evaluate_table
    env = {"name": "abc", "source": None, "model": None, "test_drive": False, "score": None, **record}
    env["record"] = dict(env)
    return evaluate_table(rc or _RC(), app.section("decision_tables")[table], env)


def test_first_hit(app):
    assert decide(app, "first_t", source="walk_in", test_drive=True) == {"score": 90, "level": "H"}
    assert decide(app, "first_t", source="walk_in", model="s5") == {"score": 70, "level": "A"}   # list cell = one of
    assert decide(app, "first_t", source="website") == {"score": 40, "level": "B"}              # bare word, false
    assert decide(app, "first_t", source="hotline") == {"score": 30, "level": "C"}


def test_unique_hit_errors_on_overlap(app):
    from rules.actions.base import ActionError
    assert decide(app, "unique_t", score=95) == {"level": "H"}
    assert decide(app, "unique_t", score=60) == {"level": "A"}
    assert decide(app, "unique_t", score=None) is None          # no row, no default: nothing is set
    with pytest.raises(ActionError) as exc:
        decide(app, "unique_t", score=82)
    assert "hit_policy unique but 2 rows match" in str(exc.value) and "line" in str(exc.value)


def test_collect_lists_and_aggregates(app):
    assert decide(app, "collect_t", source="referral", test_drive=True) == {"tag": ["warm", "drove", "sourced"]}
    assert decide(app, "collect_t") is None
    assert decide(app, "sum_t", source="referral", test_drive=True) == {"points": 75}
    assert decide(app, "sum_t", name="ab") is None


def test_priority_highest_wins_ties_first(app):
    assert decide(app, "priority_t", score=95) == {"level": "H"}
    assert decide(app, "priority_t", score=70) == {"level": "A"}
    assert decide(app, "priority_t", score=10) == {"level": "B"}
    assert decide(app, "priority_t", score=None) == {"level": "C"}   # default


def test_cells_may_read_the_record(app):
    # most cells test only their input; one that names a field of the record sees the record too
    assert app.section("decision_tables")["relative_t"].reads_record == (True, True)
    assert app.section("decision_tables")["first_t"].reads_record == (False, False, False)
    assert decide(app, "relative_t", name="abc", score=30) == {"level": "H"}
    assert decide(app, "relative_t", name="abcd", score=30, source="s7", model="s7") == {"level": "A"}
    assert decide(app, "relative_t", name="abcd", score=30, source="s7", model="s5") is None


def test_remembered_rows_tell_equal_values_of_other_types_apart(app):
    # a table whose cells read only their input remembers which rows matched per input values;
    # 1 and True are equal (and hash alike) in Python, but not to this cell (lower(true) is an error)
    assert app.section("decision_tables")["typed_t"].pure
    for _ in range(2):
        assert decide(app, "typed_t", score=1) == {"level": "ONE"}
        assert decide(app, "typed_t", score=True) == {"level": "OTHER"}
        assert decide(app, "typed_t", score=1.0) == {"level": "ONE"}
    for _ in range(2):    # the first-hit answers stay right when asked again
        assert decide(app, "first_t", source="walk_in", test_drive=True) == {"score": 90, "level": "H"}
        assert decide(app, "first_t", source="walk_in", model="s5") == {"score": 70, "level": "A"}
        assert decide(app, "first_t", source="walk_in", model=["s5"]) == {"score": 30, "level": "C"}


def test_tables_reading_the_clock_or_record_are_matched_every_time(app):
    tables = app.section("decision_tables")
    assert not tables["clock_t"].pure and not tables["relative_t"].pure
    due = dt.date(2026, 11, 25)
    assert decide(app, "clock_t", due=due) == {"level": "ON_TIME"}
    later = _RC(dt.datetime(2026, 11, 30, 2, tzinfo=dt.timezone.utc))
    assert decide(app, "clock_t", rc=later, due=due) == {"level": "LATE"}
    assert decide(app, "clock_t", due=due) == {"level": "ON_TIME"}


def test_table_problems_have_positions(package_dir):
    import ui.wiring
    from engine.definitions import validate_package
    from engine.package import read_package
    ui.wiring.load_engines()
    bad = """
rules:
  - name: r
    on: {created: lead}
    actions: [{decide: {table: t, set: {score: scor}}}]
decision_tables:
  - name: t
    hit_policy: firstest
    inputs: [source, budget]
    outputs: [score]
    rows:
      - {when: ["-", "-"], then: [1, 2]}
      - {when: [">= (", "-"], then: [1]}
"""
    problems = [str(p) for p in validate_package(read_package(package_dir(files(bad))))]
    assert "rules/rules.yaml:5:48: decision table 't' has no output 'scor'; did you mean 'score'?" in problems
    assert any(p.startswith("rules/rules.yaml:8:17:") and "firstest" in p for p in problems), problems
    assert any(p.startswith("rules/rules.yaml:9:22: unknown field 'budget' in form 'lead'") for p in problems), problems
    assert any(p.startswith("rules/rules.yaml:12:34: row gives 2 value(s) but the table has 1 output(s)") for p in problems), problems
    assert any(p.startswith("rules/rules.yaml:13:17:") for p in problems), problems
