"""Compiled flow definitions: frozen, shared, pointing back to their YAML.

``flows/*.yaml`` compiles to one :class:`WorkflowDef` or :class:`JourneyDef`
per file, stored in ``AppDef.sections['flows']`` by name.  Runtime state
(instances, approvals, SLA clocks, enrolments) lives in the tables of
``flows/tables.py`` and only points at these by name and digest.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from .timeutil import Offset

COMMENT_MODES = ("required", "optional", "none")
APPROVAL_MODES = ("single", "any", "all", "count", "percent", "sequential")


@dataclass(frozen=True, eq=False)
class StateDef:
    name: str
    label: Mapping[str, str]
    final: bool = False
    pauses_sla: bool = False
    color: str | None = None
    on_enter: tuple = ()             # compiled actions


@dataclass(frozen=True, eq=False)
class ApproverDef:
    role: str | None = None          # candidates: users with this role ...
    where: Any = None                # ... whose attributes match (expression over user attrs + record)
    user_expr: Any = None            # or: an expression giving user name(s), e.g. record.owner
    when: Any = None                 # conditional approver: only when this holds for the record
    line: int = 1


@dataclass(frozen=True, eq=False)
class ApprovalDef:
    mode: str                        # single | any | all | count | percent | sequential
    approvers: tuple[ApproverDef, ...]
    count: int = 1                   # count mode: approvals needed
    percent: int = 100               # percent mode: share of approvers needed
    reject_to: str | None = None     # state on rejection (None: stay)
    remind_after: dt.timedelta | None = None
    remind_every: dt.timedelta | None = None
    max_reminders: int = 3
    due: dt.timedelta | None = None  # the approval tasks' due time
    title: Mapping[str, str] | None = None
    allow_add_signer: bool = True
    allow_transfer: bool = True
    on_reject: tuple = ()            # compiled actions on rejection
    notify: str | None = None        # template sent to each approver when their task opens
    remind_template: str | None = None   # template for reminders (default: a built-in text)


@dataclass(frozen=True, eq=False)
class TransitionDef:
    name: str
    label: Mapping[str, str]
    from_states: tuple[str, ...]     # ('*',) = from any non-final state
    to: str | None                   # None: stay in the current state (an action-only transition)
    roles: tuple[str, ...] = ()
    allow: Any = None
    guard: Any = None
    guard_message: Mapping[str, str] | None = None
    requires: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()     # fields the transition dialog may set (body 'data')
    comment: str = "optional"
    actions: tuple = ()
    approval: ApprovalDef | None = None
    system: bool = False             # only rules/timers/auto may fire it
    auto: Any = None                 # expression: fire by itself when it holds (as the system)
    after: dt.timedelta | None = None    # fire by itself after this long in the from-state
    calendar: str | None = None      # working-time calendar for 'after'
    order: int = 0

    def target(self, state: str | None) -> str | None:
        return self.to if self.to is not None else state

    def allowed_from(self, state: str | None, states: Mapping[str, StateDef]) -> bool:
        if "*" in self.from_states:
            st = states.get(state or "")
            return st is None or not st.final
        return state in self.from_states


@dataclass(frozen=True, eq=False)
class SlaTarget:
    when: Any                        # compiled Expression or None (always)
    within: dt.timedelta


@dataclass(frozen=True, eq=False)
class EscalationDef:
    after: dt.timedelta              # after the breach (working time if the SLA has a calendar)
    actions: tuple


@dataclass(frozen=True, eq=False)
class SlaDef:
    name: str
    label: Mapping[str, str]
    start_on: tuple[str, ...]        # 'created' and/or state names (entering one starts the clock)
    stop_on_states: frozenset[str]
    pause_states: frozenset[str]
    calendar: str | None
    targets: tuple[SlaTarget, ...]
    due_field: str | None = None
    warn_before: dt.timedelta | None = None
    warn: tuple = ()
    breach: tuple = ()
    escalations: tuple[EscalationDef, ...] = ()
    met: tuple = ()                  # actions when stopped in time
    restart: bool = False            # entering start_on again after a stop starts a new clock


@dataclass(frozen=True, eq=False)
class WorkflowDef:
    name: str
    form: str
    label: Mapping[str, str]
    initial: str
    states: Mapping[str, StateDef]
    transitions: Mapping[str, TransitionDef]
    sla: tuple[SlaDef, ...] = ()
    migrate: Mapping[str, str] | None = None   # old state -> new state for running instances
    digest: str = ""
    file: str = ""
    kind: str = "workflow"

    def pauses(self, sla: SlaDef, state: str | None) -> bool:
        st = self.states.get(state or "")
        return (state in sla.pause_states) or bool(st and st.pauses_sla)

    def stops(self, sla: SlaDef, state: str | None) -> bool:
        st = self.states.get(state or "")
        return (state in sla.stop_on_states) or bool(st and st.final)


@dataclass(frozen=True, eq=False)
class BranchDef:
    when: Any                        # None: the 'otherwise' branch
    actions: tuple = ()
    goto: str | None = None


@dataclass(frozen=True, eq=False)
class StepDef:
    name: str
    label: Mapping[str, str]
    at: Offset | None = None         # from the anchor
    after: Offset | None = None      # from the previous step (or the enrolment)
    when: Any = None                 # skip the step unless it holds
    actions: tuple = ()
    branch: tuple[BranchDef, ...] = ()
    goto: str | None = None
    wait_until: Any = None           # park until it holds (checked on record updates) ...
    timeout: dt.timedelta | None = None  # ... or until this long has passed
    on_timeout: tuple = ()
    timeout_goto: str | None = None


# The statuses an enrolment goes through (loom_journey_enrolments.status).
JOURNEY_STATUSES = ("active", "completed", "goal", "exited", "cancelled", "replaced")


@dataclass(frozen=True, eq=False)
class JourneyDef:
    name: str
    form: str
    label: Mapping[str, str]
    enrol_when: Any
    anchor: str | None
    reenrol: str                     # never | on_change | always
    goal: Any
    exit_when: Any
    steps: tuple[StepDef, ...]
    default_time: dt.time = dt.time(9, 0)
    catch_up: bool = False           # run steps whose time passed before enrolment (default: skip them)
    watch: Mapping[str, str] = field(default_factory=dict)   # link field -> form, followed by goal/exit_when
    track: Mapping[str, str] = field(default_factory=dict)   # 'status'/'step' -> field of the record kept up to date
    digest: str = ""
    file: str = ""
    kind: str = "journey"

    def step(self, name: str) -> StepDef | None:
        for s in self.steps:
            if s.name == name:
                return s
        return None

    def index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        return -1
