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

# Environment variables a webhook may not take its shared secret from: Loom's own settings (a
# shared secret is shared: the other side of the hook would hold the key that encrypts personal
# data, or the database URL) and variables every process has, whose values anyone can guess -- an
# incoming hook "signed" with $HOME could be forged by anyone.
_LOOM_SECRETS = ("LOOM_SECRET", "LOOM_DATABASE_URL", "LOOM_PASSWORD", "LOOM_DEMO_PASSWORD", "LOOM_TRANSPORT")
_PROCESS_VARIABLES = frozenset(("PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "LANG", "LANGUAGE",
                                "LC_ALL", "TERM", "HOSTNAME", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "MAIL"))


def secret_env_problem(value: Any) -> str | None:
    """What is wrong with ``secret_env`` (a webhook's shared secret, by environment variable name),
    or None.  Secrets never go into the package; the variable must be one of the app's own."""
    if not (isinstance(value, str) and value[:1].isalpha() and value.replace("_", "").isalnum()):
        return ("'secret_env' names the environment variable holding the shared secret, e.g. DMS_WEBHOOK_SECRET "
                "(secrets never go into the package)")
    if value.upper().startswith(_LOOM_SECRETS):
        return (f"'{value}' is one of Loom's own secret settings (its keys, database URL, passwords, "
                f"transports), not a webhook's secret; give the webhook a variable of its own, e.g. DMS_WEBHOOK_SECRET")
    if value.upper() in _PROCESS_VARIABLES or value.upper().startswith("LC_"):
        return (f"'{value}' is a variable every process has, whose value anyone can guess; "
                f"give the webhook a secret of its own, e.g. DMS_WEBHOOK_SECRET")
    return None


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
    # the rows depend on the input values alone (no cell reads the record, the clock or the user):
    # which rows match is remembered per tuple of input values (see rules.decision.evaluate_table)
    pure: bool = False
    matched: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class RuleSet:
    """Everything ``rules/*.yaml`` compiled to, plus indexes the engine uses per event."""

    rules: Mapping[str, RuleDef]
    tables: Mapping[str, DecisionTable]
    by_event: Mapping[tuple[str, str | None], tuple[RuleDef, ...]] = field(default_factory=dict)

    def for_event(self, kind: str, form: str | None) -> tuple[RuleDef, ...]:
        return self.by_event.get((kind, form), ())
