"""Decision tables: inputs, rows of cell conditions, outputs, and a hit policy.

```yaml
decision_tables:
  - name: lead_scoring
    hit_policy: first            # first | unique | collect | priority
    inputs: [source, model_interest, test_drive_booked]   # expressions over the record
    outputs: [score, level]
    rows:
      - {when: ["in ['referral', 'walk_in']", "-", "== true"], then: [90, H]}
      - {when: ["-", "-", "-"], then: [30, C]}
```

A cell is ``-`` (anything), a test starting with an operator (``>= 80``,
``in ['a', 'b']``, ``!= None``, ``not in [...]``), a range ``[10..20]``, a
YAML list (one of), a number/true/false, a quoted expression (``'H'``) or a
bare word, which is compared as text (``H``).  Inside a test, ``cell_input`` is
the input's value and the record's fields can be named too.

Hit policies: ``first`` -- the first matching row; ``unique`` -- exactly one
row may match (several is an error at run time); ``priority`` -- the matching
row with the highest ``priority:`` (ties: the first); ``collect`` -- all
matching rows, each output becomes a list (or one value with ``aggregate:
sum|min|max|count``).  With no matching row the table's ``default:`` applies,
else nothing is set.
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any, Mapping

from engine.definitions import CompileContext, text
from engine.expressions import ExpressionError, compile_expression
from engine.expressions.functions import FUNCTIONS
from engine.problems import one_of

from .model import Cell, DecisionRow, DecisionTable

HIT_POLICIES = ("first", "unique", "collect", "priority")
AGGREGATES = ("sum", "min", "max", "count")
_OPS = ("==", "!=", ">=", "<=", ">", "<", "in ", "in[", "not in")
_RANGE = re.compile(r"^\[\s*(-?[\d.]+)\s*\.\.\s*(-?[\d.]+)\s*\]$")


def cell_source(cell: Any) -> str | None:
    """The expression a cell stands for (over ``cell_input``), or None for 'any'."""
    if cell is None:
        return None
    if isinstance(cell, bool):
        return f"cell_input == {'true' if cell else 'false'}"
    if isinstance(cell, (int, float)):
        return f"cell_input == {cell!r}"
    if isinstance(cell, list):
        return f"cell_input in {[c for c in cell]!r}"
    s = str(cell).strip()
    if s in ("-", "", "*", "any"):
        return None
    if s.startswith(_OPS):
        return f"cell_input {s}"
    m = _RANGE.match(s)
    if m:
        return f"cell_input >= {m.group(1)} and cell_input <= {m.group(2)}"
    if s[0] in "'\"" or s in ("None", "null", "true", "false"):
        return f"cell_input == {s}"
    if "cell_input" in s:
        return s
    return f"cell_input == {s!r}"


def compile_table(ctx: CompileContext, file: str, path: tuple, raw: Mapping, checker_for) -> DecisionTable | None:
    """``checker_for(extra)`` gives the name checker for the inputs (the form of the rules using the table)."""
    name = raw.get("name")
    policy = raw.get("hit_policy", "first")
    inputs_raw = raw.get("inputs") or []
    outputs = raw.get("outputs") or []
    ok = True
    if not isinstance(inputs_raw, list) or not inputs_raw:
        ctx.error(file, path + ("inputs",), "'inputs' must be a list of expressions (field names), e.g. [source, budget]")
        return None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
        ctx.error(file, path + ("outputs",), "'outputs' must be a list of names, e.g. [score, level]")
        return None
    inputs = []
    for i, src in enumerate(inputs_raw):
        source = src if isinstance(src, str) else str(src)
        try:
            inputs.append(compile_expression(source, check_name=checker_for(())))
        except ExpressionError as exc:
            ctx.error_in_expression(file, path + ("inputs", i), exc)
            ok = False
    aggregate = raw.get("aggregate")
    if aggregate is not None and (policy != "collect" or aggregate not in AGGREGATES):
        ctx.error(file, path + ("aggregate",), f"'aggregate' is for hit_policy: collect; one of: {', '.join(AGGREGATES)}")
        ok = False
    rows = []
    src_file = ctx.files.get(file)
    for r, row in enumerate(raw.get("rows") or []):
        rpath = path + ("rows", r)
        if not isinstance(row, dict) or "when" not in row or "then" not in row:
            ctx.error(file, rpath, "a row is {when: [cells, one per input], then: [values, one per output]}")
            ok = False
            continue
        when, then = row["when"], row["then"]
        if not isinstance(when, list):
            when = [when]
        if len(when) != len(inputs_raw):
            ctx.error(file, rpath + ("when",), f"row has {len(when)} condition cell(s) but the table has {len(inputs_raw)} "
                                               f"input(s) ({', '.join(map(str, inputs_raw))}); use '-' for 'any'")
            ok = False
            continue
        if isinstance(then, dict):
            unknown = [k for k in then if k not in outputs]
            for k in unknown:
                ctx.error(file, rpath + ("then", k), f"unknown output '{k}'; {one_of(outputs)}", at_key=True)
            then = [then.get(o) for o in outputs]
        elif not isinstance(then, list):
            then = [then]
        if len(then) != len(outputs):
            ctx.error(file, rpath + ("then",), f"row gives {len(then)} value(s) but the table has {len(outputs)} output(s) "
                                               f"({', '.join(outputs)})")
            ok = False
            continue
        cells = []
        for c, cell in enumerate(when):
            source = cell_source(cell)
            if source is None:
                cells.append(Cell("-", None))
                continue
            try:
                cells.append(Cell(str(cell), compile_expression(source, check_name=checker_for(("cell_input",)))))
            except ExpressionError as exc:
                shift = len("cell_input ") if source.startswith("cell_input ") and not str(cell).strip().startswith("cell_input") else 0
                exc.col = None
                exc.message = re.sub(r"column (\d+)", lambda m: f"column {max(1, int(m.group(1)) - shift)}", exc.message)
                ctx.error_in_expression(file, rpath + ("when", c), exc)
                ok = False
        priority = row.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            ctx.error(file, rpath + ("priority",), "'priority' is a whole number (higher wins)")
            ok = False
        line = src_file.loaded.position(rpath)[0] if src_file else 1
        rows.append(DecisionRow(tuple(cells), tuple(then), priority if isinstance(priority, int) else 0, line))
    if not rows:
        ctx.error(file, path + ("rows",), "a decision table needs at least one row")
        ok = False
    default = raw.get("default")
    if default is not None:
        if isinstance(default, dict):
            default = [default.get(o) for o in outputs]
        if not isinstance(default, list) or len(default) != len(outputs):
            ctx.error(file, path + ("default",), f"'default' gives one value per output ({', '.join(outputs)})")
            ok = False
    if not ok:
        return None
    line = src_file.loaded.position(path)[0] if src_file else 1
    return DecisionTable(name=name, label=text(raw.get("label") or name), hit_policy=policy, inputs=tuple(inputs),
                         input_sources=tuple(map(str, inputs_raw)), outputs=tuple(outputs), rows=tuple(rows),
                         default=tuple(default) if default is not None else None, aggregate=aggregate,
                         form=raw.get("form"), file=file, line=line,
                         reads_record=tuple(any(r.cells[i].test is not None and r.cells[i].test.names - {("cell_input",)}
                                                for r in rows) for i in range(len(inputs))),
                         pure=all(_pure_test(c.test) for r in rows for c in r.cells))


_CELL_INPUT_ONLY = frozenset({("cell_input",)})


def _pure_test(test: Any) -> bool:
    """A cell whose outcome depends on its input value alone: it names nothing but ``cell_input``
    and calls only library functions that need no context (not today(), now(), changed(), exists())."""
    if test is None:
        return True
    if not test.names <= _CELL_INPUT_ONLY:
        return False
    return all(f in FUNCTIONS and not FUNCTIONS[f].needs_ctx for f in test.functions)


# plain immutable values, equal only when a cell test can't tell them apart (given their type);
# anything else (lists, related records) is matched row by row every time
_VALUE_TYPES = frozenset({str, int, float, bool, type(None), Decimal, dt.date, dt.datetime, dt.time})
# which rows matched, per table, is kept for this many distinct input tuples (then forgotten at once)
MATCH_MEMO_SIZE = 4096


def evaluate_table(rc: Any, table: DecisionTable, env: Mapping[str, Any]) -> dict | None:
    """The outputs for the record in ``env`` per the hit policy; None when nothing matched and no default."""
    from .actions.base import ActionError
    ctx = rc.eval_ctx()
    try:
        values = [e.evaluate(env, ctx) for e in table.inputs]
    except ExpressionError as exc:
        raise ActionError(f"decision table '{table.name}': {exc.message}") from exc
    key = matches = None
    if table.pure and all(type(v) in _VALUE_TYPES for v in values):
        # the types are part of the key: 1, 1.0 and True are equal in Python but not to a cell test
        key = tuple([(type(v), v) for v in values])
        matches = table.matched.get(key)
    if matches is None:
        matches = _matching_rows(table, values, env, ctx)
        if key is not None:
            if len(table.matched) >= MATCH_MEMO_SIZE:
                table.matched.clear()
            table.matched[key] = matches
    if not matches:
        return dict(zip(table.outputs, table.default)) if table.default is not None else None
    policy = table.hit_policy
    if policy == "first":
        return dict(zip(table.outputs, matches[0].outputs))
    if policy == "unique":
        if len(matches) > 1:
            lines = ", ".join(f"line {r.line}" for r in matches)
            raise ActionError(f"decision table '{table.name}' has hit_policy unique but {len(matches)} rows match "
                              f"({lines}; inputs {dict(zip(table.input_sources, values))}); make the rows exclusive "
                              f"or use hit_policy: first")
        return dict(zip(table.outputs, matches[0].outputs))
    if policy == "priority":
        best = max(matches, key=lambda r: r.priority)   # max() keeps the first of equals
        return dict(zip(table.outputs, best.outputs))
    out: dict[str, Any] = {}
    for i, name in enumerate(table.outputs):
        col = [r.outputs[i] for r in matches]
        if table.aggregate == "sum":
            out[name] = sum(v for v in col if isinstance(v, (int, float)))
        elif table.aggregate == "min":
            out[name] = min((v for v in col if v is not None), default=None)
        elif table.aggregate == "max":
            out[name] = max((v for v in col if v is not None), default=None)
        elif table.aggregate == "count":
            out[name] = len(col)
        else:
            out[name] = col
    return out


def _matching_rows(table: DecisionTable, values: list, env: Mapping[str, Any], ctx: Any) -> tuple[DecisionRow, ...]:
    reads = table.reads_record or (True,) * len(values)
    envs = [dict(env, cell_input=v) if reads[i] else {"cell_input": v} for i, v in enumerate(values)]
    matches: list[DecisionRow] = []
    for row in table.rows:
        if _row_matches(row, envs, ctx):
            matches.append(row)
            if table.hit_policy == "first":
                break
    return tuple(matches)


def _row_matches(row: DecisionRow, envs: list[dict], ctx: Any) -> bool:
    for cell, env in zip(row.cells, envs):
        if cell.test is None:
            continue
        try:
            if not cell.test.evaluate(env, ctx):
                return False
        except ExpressionError:
            return False   # e.g. None >= 80: the cell does not match
    return True
