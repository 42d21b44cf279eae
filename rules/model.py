"""Compiled rule definitions: frozen, shared by every request, pointing back to their YAML.

A ``RuleDef`` is what ``rules/*.yaml`` compiles to; ``CompiledAction`` is one
action of a rule (or of a flow transition / journey step -- the flows engine
compiles its action lists with :func:`rules.actions.compile_actions`).  None
of these objects hold runtime state: round-robin cursors, timers and the rule
log live in the database.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

TRIGGER_KINDS = ("created", "updated", "deleted", "changed", "transition", "schedule", "date", "webhook")


@dataclass(frozen=True, eq=False)
class CompiledAction:
    """One action: its kind (``set``, ``notify``...), compiled parameters and an optional guard."""

    kind: str
    params: Any                      # action-specific, built by the action's ``compile``
    when: Any = None                 # compiled Expression or None
    file: str = ""
    path: tuple = ()
    line: int = 1
    needs: frozenset = frozenset()   # root names its expressions use (owner_user, created...)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, eq=False)
class TriggerDef:
    kind: str                        # one of TRIGGER_KINDS
    form: str | None = None          # the form whose records fire it (None: schedule/webhook without a form)
    fields: tuple[str, ...] = ()     # changed: which fields
    transition: str | None = None    # transition: name filter
    from_states: tuple[str, ...] = ()
    to_states: tuple[str, ...] = ()
    cron: Any = None                 # schedule: rules.cron.Cron
    cron_text: str = ""
    date_field: str | None = None    # date: the date/datetime field
    offset: dt.timedelta = dt.timedelta()
    at_time: dt.time | None = None   # date: local time of day for date-only fields (default 09:00)
    auth: str = "hmac"               # webhook: hmac | token | either
    secret_env: str | None = None    # webhook (hmac): the environment variable holding the secret
    roles: tuple[str, ...] = ()      # webhook (token): roles allowed to call it (empty: any user of the app)


@dataclass(frozen=True, eq=False)
class RuleDef:
    name: str
    label: Mapping[str, str]
    trigger: TriggerDef
    when: Any                        # compiled Expression or None
    priority: int
    enabled: bool
    actions: tuple[CompiledAction, ...]
    file: str
    line: int
    order: int                       # position across all rule files, the tie-break after priority
    needs: frozenset = frozenset()   # root names the rule's expressions use (owner_user, links...)
    presave: int | None = None       # created rules: None = runs after the INSERT; n = the condition and the
                                     # first n actions run on the record before it is inserted (rules.phases)

    @property
    def form(self) -> str | None:
        return self.trigger.form

    @property
    def sort_key(self) -> tuple:
        return (self.priority, self.order)


@dataclass(frozen=True, eq=False)
class Cell:
    """One condition cell of a decision table: ``-`` (any) or a compiled test of the input."""

    source: str
    test: Any = None                 # compiled Expression over ``cell_input`` (and the record), None = any


@dataclass(frozen=True, eq=False)
class DecisionRow:
    cells: tuple[Cell, ...]
    outputs: tuple[Any, ...]
    priority: int = 0
    line: int = 1


@dataclass(frozen=True, eq=False)
class DecisionTable:
    name: str
    label: Mapping[str, str]
    hit_policy: str                  # first | unique | collect | priority
    inputs: tuple[Any, ...]          # compiled Expressions over the record
    input_sources: tuple[str, ...]
    outputs: tuple[str, ...]
    rows: tuple[DecisionRow, ...]
    default: tuple | None = None     # outputs when no row matches
    aggregate: str | None = None     # collect: sum | min | max | count
    form: str | None = None          # the form whose records the inputs name (checked at compile time)
    file: str = ""
    line: int = 1
    # per input: whether a cell of its column reads more than ``cell_input`` (the record's fields);
    # the others are tested on ``{cell_input: value}`` alone instead of a copy of the record's names
    reads_record: tuple[bool, ...] = ()


@dataclass(frozen=True, eq=False)
class RuleSet:
    """Everything ``rules/*.yaml`` compiled to, plus indexes the engine uses per event."""

    rules: Mapping[str, RuleDef]
    tables: Mapping[str, DecisionTable]
    by_event: Mapping[tuple[str, str | None], tuple[RuleDef, ...]] = field(default_factory=dict)

    def for_event(self, kind: str, form: str | None) -> tuple[RuleDef, ...]:
        return self.by_event.get((kind, form), ())
