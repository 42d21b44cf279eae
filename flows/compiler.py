"""Compile step for ``flows/*.yaml`` (order 20, after forms): workflows and journeys.

The JSON Schema has already checked shapes; this step checks meaning, with
positions: the form exists; states named by transitions, SLAs, approvals
and migrations exist; roles exist; fields named by ``requires``/``fields``/
``due_field``/``anchor`` exist with a fitting type; expressions parse and
only name known fields; durations, step times and calendars are valid;
action lists compile through the rules engine (templates exist, ...).
"""
from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, Callable

from engine.definitions import CompileContext, register_step, text
from engine.expressions import ExpressionError, compile_expression
from engine.problems import one_of, suggest

from .model import (APPROVAL_MODES, JOURNEY_STATUSES, ApprovalDef, ApproverDef, BranchDef, EscalationDef, JourneyDef, SlaDef, SlaTarget,
                    StateDef, StepDef, TransitionDef, WorkflowDef)
from .timeutil import DurationError, calendar_problems, parse_duration, parse_hhmm, parse_offset

USER_ROOTS = ("name", "username", "roles", "display_name", "language")
SYSTEM_COLUMNS = ("id", "created_at", "updated_at", "created_by", "owner", "state")
DATE_TYPES = ("date", "datetime")


class _FlowCompiler:
    def __init__(self, ctx: CompileContext, file: str, data: dict, name: str, forms: dict[str, dict]):
        self.ctx, self.file, self.data, self.name, self.forms = ctx, file, data, name, forms
        self.form = data.get("form")
        self.roles = set((ctx.app_data.get("roles") or {}))
        self.calendars = ctx.app_data.get("calendars") or {}
        self.user_attrs = set((ctx.app_data.get("user_attributes") or {})) | set(USER_ROOTS)

    # -- helpers -----------------------------------------------------------
    def err(self, path: tuple, message: str, at_key: bool = False) -> None:
        self.ctx.error(self.file, path, message, at_key=at_key)

    @property
    def fields(self) -> dict:
        return (self.forms.get(self.form) or {}).get("fields") or {}

    def record_checker(self, extra: tuple = ()) -> Callable[[tuple], str | None]:
        from forms.compiler import name_checker
        return name_checker(self.forms, self.form, extra=extra)

    def user_checker(self) -> Callable[[tuple], str | None]:
        """Names in an approver's ``where``: the candidate user's attributes, ``record.<field>``."""
        record_check = self.record_checker()
        attrs = self.user_attrs

        def check(path: tuple) -> str | None:
            head = path[0]
            if head in ("current_user", "settings", "app", "true", "false", "null", "None", "True", "False"):
                return None
            if head == "record":
                return record_check(path[1:]) if len(path) > 1 else None
            if head in attrs:
                return None
            return (f"unknown user attribute '{head}'{suggest(head, attrs) or '; ' + one_of(attrs)} "
                    f"(write record.<field> for the record's fields)")
        return check

    def expr(self, path: tuple, source: Any, checker=None) -> Any:
        if source is None:
            return None
        if isinstance(source, bool):
            source = "true" if source else "false"
        elif not isinstance(source, str):
            source = str(source)
        try:
            return compile_expression(source, check_name=checker or self.record_checker())
        except ExpressionError as exc:
            self.ctx.error_in_expression(self.file, path, exc)
            return None

    def duration(self, path: tuple, value: Any):
        if value is None:
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.err(path, str(exc))
            return None

    def offset(self, path: tuple, value: Any):
        if value is None:
            return None
        try:
            return parse_offset(value)
        except DurationError as exc:
            self.err(path, str(exc))
            return None

    def actions(self, path: tuple, raw: Any) -> tuple:
        if not raw:
            return ()
        try:
            from rules.actions import compile_actions
        except ImportError:  # the rules engine is not part of this build
            self.err(path, "actions need the rules engine, which is not installed")
            return ()
        return tuple(compile_actions(self.ctx, self.file, path, raw, self.form) or ())

    def check_role(self, path: tuple, role: Any) -> bool:
        if role not in self.roles:
            self.err(path, f"unknown role '{role}'{suggest(str(role), self.roles) or '; ' + one_of(self.roles)}")
            return False
        return True

    def check_field(self, path: tuple, name: Any, what: str, types: tuple | None = None, system: bool = False) -> bool:
        pool = set(self.fields) | (set(SYSTEM_COLUMNS) if system else set())
        if name not in pool:
            self.err(path, f"{what}: unknown field '{name}' in form '{self.form}'{suggest(str(name), pool) or '; ' + one_of(pool)}")
            return False
        if types and name in self.fields and self.fields[name].get("type") not in types:
            self.err(path, f"{what}: field '{name}' is a {self.fields[name].get('type')} field; expected {' or '.join(types)}")
            return False
        return True

    def check_state(self, path: tuple, state: Any, states: dict, what: str) -> bool:
        if state not in states:
            self.err(path, f"{what}: unknown state '{state}'{suggest(str(state), states) or '; ' + one_of(states)}")
            return False
        return True

    def check_calendar(self, path: tuple, name: Any) -> bool:
        if name not in self.calendars:
            self.err(path, f"unknown calendar '{name}'{suggest(str(name), self.calendars) or ('; ' + one_of(self.calendars) if self.calendars else '; app.yaml has no calendars')}")
            return False
        problems = calendar_problems(self.calendars[name])
        for sub, msg in problems:
            self.ctx.error("app.yaml", ("calendars", name) + sub, f"calendar '{name}': {msg}")
        return not problems

    def digest(self) -> str:
        return hashlib.sha256(self.ctx.package.files.get(self.file, b"")).hexdigest()

    # -- workflow ------------------------------------------------------------
    def workflow(self) -> WorkflowDef | None:
        d = self.data
        for key in ("enrol_when", "anchor", "reenrol", "goal", "exit_when", "steps", "default_time", "catch_up", "track"):
            if key in d:
                self.err((key,), f"'{key}' belongs to journeys (kind: journey), not workflows", at_key=True)
        states_raw = d.get("states") or {}
        if not states_raw:
            self.err(("kind",) if "states" not in d else ("states",), "a workflow needs 'states' (at least one)", at_key="states" not in d)
            return None
        states: dict[str, StateDef] = {}
        for sname, s in states_raw.items():
            s = s or {}
            states[sname] = StateDef(sname, text(s.get("label") or sname), bool(s.get("final")), bool(s.get("pauses_sla")),
                                     s.get("color"), self.actions(("states", sname, "on_enter"), s.get("on_enter")))
        initial = d.get("initial") or next(iter(states_raw))
        if "initial" in d:
            self.check_state(("initial",), initial, states, "initial")
        transitions: dict[str, TransitionDef] = {}
        for order, (tname, t) in enumerate((d.get("transitions") or {}).items()):
            td = self.transition(tname, t or {}, states, order)
            if td is not None:
                transitions[tname] = td
        slas = []
        seen = set()
        for i, s in enumerate(d.get("sla") or []):
            sd = self.sla(i, s or {}, states)
            if sd is None:
                continue
            if sd.name in seen:
                self.err(("sla", i, "name"), f"SLA '{sd.name}' is defined twice in this workflow")
            seen.add(sd.name)
            slas.append(sd)
        migrate = None
        if "migrate" in d:
            migrate = {}
            for old, new in (d.get("migrate") or {}).items():
                if self.check_state(("migrate", old), new, states, f"migrate '{old}'"):
                    migrate[str(old)] = new
        return WorkflowDef(self.name, self.form, text(d.get("label") or self.name), initial, MappingProxyType(states),
                           MappingProxyType(transitions), tuple(slas),
                           MappingProxyType(migrate) if migrate is not None else None, self.digest(), self.file)

    def transition(self, tname: str, t: dict, states: dict, order: int) -> TransitionDef | None:
        base = ("transitions", tname)
        frm = t.get("from", "*")
        from_states = ("*",) if frm == "*" else tuple(frm if isinstance(frm, list) else [frm])
        if from_states != ("*",):
            for i, s in enumerate(from_states):
                self.check_state(base + (("from", i) if isinstance(frm, list) else ("from",)), s, states, f"transition '{tname}' from")
        to = t.get("to")
        ok = to is None or self.check_state(base + ("to",), to, states, f"transition '{tname}' to")
        for i, r in enumerate(t.get("roles") or []):
            self.check_role(base + ("roles", i), r)
        for key in ("requires", "fields"):
            for i, f in enumerate(t.get(key) or []):
                if self.check_field(base + (key, i), f, f"transition '{tname}' {key}"):
                    if self.fields[f].get("type") in ("formula", "lookup", "auto_number"):
                        self.err(base + (key, i), f"transition '{tname}' {key}: '{f}' is computed and cannot be filled in")
        allow = self.expr(base + ("allow",), t.get("allow"))
        guard = self.expr(base + ("guard",), t.get("guard"))
        auto_src = t.get("auto")
        auto = None
        if auto_src is not None and auto_src is not False:
            auto = self.expr(base + ("auto",), "true" if auto_src is True else auto_src)
        after = self.duration(base + ("after",), t.get("after"))
        cal = t.get("calendar")
        if cal is not None:
            self.check_calendar(base + ("calendar",), cal)
            if after is None:
                self.err(base + ("calendar",), f"transition '{tname}': 'calendar' only applies with 'after'")
        if auto is not None and to is None:
            self.err(base + ("auto",), f"transition '{tname}': an automatic transition needs 'to' (it would fire forever)")
        if (auto is not None or after is not None) and t.get("approval"):
            self.err(base + ("approval",), f"transition '{tname}': an automatic transition cannot need an approval")
        if after is not None and from_states == ("*",):
            self.err(base + ("after",), f"transition '{tname}': a timed transition needs explicit 'from' states")
        if t.get("comment") == "required" and (auto is not None or after is not None):
            self.err(base + ("comment",), f"transition '{tname}': an automatic transition cannot require a comment")
        approval = self.approval(base + ("approval",), t["approval"], states) if t.get("approval") else None
        actions = self.actions(base + ("actions",), t.get("actions"))
        if not ok:
            return None
        return TransitionDef(
            name=tname, label=text(t.get("label") or tname), from_states=from_states, to=to,
            roles=tuple(t.get("roles") or ()), allow=allow, guard=guard,
            guard_message=text(t["guard_message"]) if t.get("guard_message") else None,
            requires=tuple(t.get("requires") or ()), fields=tuple(t.get("fields") or ()),
            comment=t.get("comment") or "optional", actions=actions, approval=approval,
            system=bool(t.get("system")), auto=auto, after=after, calendar=cal, order=order)

    def approval(self, base: tuple, a: dict, states: dict) -> ApprovalDef | None:
        mode = a.get("mode") or "single"
        if mode not in APPROVAL_MODES:
            return None  # reported by the schema
        approvers = []
        for i, ap in enumerate(a.get("approvers") or []):
            p = base + ("approvers", i)
            role = ap.get("role")
            if role is not None:
                self.check_role(p + ("role",), role)
            if role is None and ap.get("user_expr") is None:
                self.err(p, "an approver needs 'role' (with an optional 'where') or 'user_expr'", at_key=False)
            if role is not None and ap.get("user_expr") is not None:
                self.err(p + ("user_expr",), "an approver has either 'role' or 'user_expr', not both")
            if ap.get("where") is not None and role is None:
                self.err(p + ("where",), "'where' filters the users of a 'role'; add 'role'")
            line, _ = self.ctx.files[self.file].loaded.position(p)
            approvers.append(ApproverDef(
                role=role, where=self.expr(p + ("where",), ap.get("where"), self.user_checker()),
                user_expr=self.expr(p + ("user_expr",), ap.get("user_expr")),
                when=self.expr(p + ("when",), ap.get("when")), line=line))
        if not approvers:
            self.err(base, "an approval needs 'approvers' (at least one)", at_key=True)
        count = int(a.get("count") or 1)
        if mode == "count" and "count" not in a:
            self.err(base + ("mode",), "mode 'count' needs 'count: N' (approvals needed)")
        if "count" in a and mode != "count":
            self.err(base + ("count",), f"'count' only applies to mode 'count' (this approval is '{mode}')")
        percent = int(a.get("percent") or 100)
        if mode == "percent" and "percent" not in a:
            self.err(base + ("mode",), "mode 'percent' needs 'percent: P' (share of approvers, 1-100)")
        if "percent" in a and mode != "percent":
            self.err(base + ("percent",), f"'percent' only applies to mode 'percent' (this approval is '{mode}')")
        reject_to = a.get("reject_to")
        if reject_to is not None:
            self.check_state(base + ("reject_to",), reject_to, states, "reject_to")
        remind_after = self.duration(base + ("remind_after",), a.get("remind_after"))
        remind_every = self.duration(base + ("remind_every",), a.get("remind_every"))
        due = self.duration(base + ("due",), a.get("due"))
        for key in ("notify", "remind_template"):
            name = a.get(key)
            if name is not None and not self.ctx.has_template(name):
                have = sorted({p.split("/", 1)[1].split(".", 1)[0] for p in self.ctx.package.files
                               if p.startswith("templates/") and p.endswith(".j2")})
                self.err(base + (key,), f"unknown template '{name}': no file templates/{name}.<lang>.j2"
                                        f"{suggest(str(name), have) or ('; ' + one_of(have) if have else '')}")
        return ApprovalDef(
            notify=a.get("notify"), remind_template=a.get("remind_template"),
            mode=mode, approvers=tuple(approvers), count=count, percent=percent, reject_to=reject_to,
            remind_after=remind_after, remind_every=remind_every or remind_after,
            max_reminders=int(a.get("max_reminders") or 3), due=due,
            title=text(a["title"]) if a.get("title") else None,
            allow_add_signer=a.get("allow_add_signer", True) is not False,
            allow_transfer=a.get("allow_transfer", True) is not False,
            on_reject=self.actions(base + ("on_reject",), a.get("on_reject")))

    def sla(self, i: int, s: dict, states: dict) -> SlaDef | None:
        base = ("sla", i)
        name = s.get("name") or f"sla_{i + 1}"
        raw_start = s.get("start_on") or "created"
        start_on = tuple(raw_start if isinstance(raw_start, list) else [raw_start])
        for j, st in enumerate(start_on):
            if st != "created":
                self.check_state(base + (("start_on", j) if isinstance(raw_start, list) else ("start_on",)), st, states,
                                 f"SLA '{name}' start_on (write 'created' or a state)")
        if s.get("restart") and len(start_on) == 1 and start_on[0] == "created":
            self.err(base + ("restart",), f"SLA '{name}': 'restart' needs a state in start_on (a record is created once)")
        for key in ("stop_on_states", "pause_states"):
            for j, st in enumerate(s.get(key) or []):
                self.check_state(base + (key, j), st, states, f"SLA '{name}' {key}")
        cal = s.get("calendar")
        if cal is not None:
            self.check_calendar(base + ("calendar",), cal)
        targets = []
        for j, t in enumerate(s.get("targets") or []):
            within = self.duration(base + ("targets", j, "within"), t.get("within"))
            when = self.expr(base + ("targets", j, "when"), t.get("when"))
            if within is not None:
                targets.append(SlaTarget(when, within))
            if t.get("when") is None and j < len(s["targets"]) - 1:
                self.err(base + ("targets", j + 1), f"SLA '{name}': targets after one without 'when' are never used")
        if not s.get("targets"):
            self.err(base, f"SLA '{name}' needs 'targets' (e.g. [{{within: 24h}}])", at_key=True)
        due_field = s.get("due_field")
        if due_field is not None:
            self.check_field(base + ("due_field",), due_field, f"SLA '{name}' due_field", types=("datetime",))
        stop = frozenset(s.get("stop_on_states") or ())
        if not stop and not any(st.final for st in states.values()):
            self.err(base, f"SLA '{name}' never stops: give 'stop_on_states' or mark a state 'final: true'", at_key=True)
        escalations = []
        for j, e in enumerate(s.get("escalations") or []):
            after = self.duration(base + ("escalations", j, "after"), e.get("after"))
            acts = self.actions(base + ("escalations", j, "actions"), e.get("actions"))
            if after is not None:
                escalations.append(EscalationDef(after, acts))
        for j in range(1, len(escalations)):
            if escalations[j].after <= escalations[j - 1].after:
                self.err(base + ("escalations", j, "after"), f"SLA '{name}': escalation levels must come later and later "
                         "('after' counts from the breach)")
        return SlaDef(
            name=name, label=text(s.get("label") or name), start_on=start_on, stop_on_states=stop,
            pause_states=frozenset(s.get("pause_states") or ()), calendar=cal, targets=tuple(targets),
            due_field=due_field, warn_before=self.duration(base + ("warn_before",), s.get("warn_before")),
            warn=self.actions(base + ("warn",), s.get("warn")), breach=self.actions(base + ("breach",), s.get("breach")),
            escalations=tuple(escalations), met=self.actions(base + ("met",), s.get("met")),
            restart=bool(s.get("restart")))

    # -- journey -------------------------------------------------------------
    def journey(self) -> JourneyDef | None:
        d = self.data
        for key in ("initial", "states", "transitions", "sla", "migrate"):
            if key in d:
                self.err((key,), f"'{key}' belongs to workflows (kind: workflow), not journeys", at_key=True)
        enrol_when = self.expr(("enrol_when",), d.get("enrol_when"))
        anchor = d.get("anchor")
        if anchor is not None:
            self.check_field(("anchor",), anchor, "anchor", types=DATE_TYPES, system=True)
            if anchor in SYSTEM_COLUMNS and anchor not in ("created_at", "updated_at"):
                self.err(("anchor",), f"anchor: '{anchor}' is not a date; use a date or datetime field")
        goal = self.expr(("goal",), d.get("goal"))
        exit_when = self.expr(("exit_when",), d.get("exit_when"))
        default_time = d.get("default_time") or "09:00"
        try:
            dtime = parse_hhmm(default_time)
        except (ValueError, TypeError):
            self.err(("default_time",), f"'{default_time}' is not a time of day: write HH:MM")
            dtime = parse_hhmm("09:00")
        steps_raw = d.get("steps") or []
        if not steps_raw:
            self.err(("kind",) if "steps" not in d else ("steps",), "a journey needs 'steps' (at least one)", at_key="steps" not in d)
        names = [s.get("name") or f"step_{i + 1}" for i, s in enumerate(steps_raw) if isinstance(s, dict)]
        steps = []
        for i, s in enumerate(steps_raw):
            sd = self.step(i, s or {}, names, anchor)
            if sd is not None:
                if sd.name in [x.name for x in steps]:
                    self.err(("steps", i, "name"), f"step '{sd.name}' is defined twice in this journey")
                steps.append(sd)
        watch = {}
        for e in (goal, exit_when, enrol_when):
            for path in getattr(e, "names", ()) or ():
                path = tuple(path) if isinstance(path, (tuple, list)) else tuple(str(path).split("."))
                if path and path[0] == "record":
                    path = path[1:]
                if len(path) > 1 and (self.fields.get(path[0]) or {}).get("type") == "link":
                    watch[path[0]] = self.fields[path[0]].get("form")
        return JourneyDef(
            name=self.name, form=self.form, label=text(d.get("label") or self.name), enrol_when=enrol_when,
            anchor=anchor, reenrol=d.get("reenrol") or "never", goal=goal, exit_when=exit_when, steps=tuple(steps),
            default_time=dtime, catch_up=bool(d.get("catch_up")), watch=MappingProxyType(watch),
            track=MappingProxyType(self.track(d.get("track") or {}, [x.name for x in steps])),
            digest=self.digest(), file=self.file)

    def track(self, spec: dict, step_names: list[str]) -> dict[str, str]:
        """``track: {status: FIELD, step: FIELD}``: text or select fields the journey keeps
        current, so lists, filters and reports see where each record stands."""
        out: dict[str, str] = {}
        for key, field_name in spec.items():
            if not self.check_field(("track", key), field_name, f"track.{key}", types=("text", "select")):
                continue
            values = JOURNEY_STATUSES if key == "status" else step_names
            options = self.fields[field_name].get("options")
            if self.fields[field_name].get("type") == "select" and isinstance(options, list):
                have = {str(o.get("value")) if isinstance(o, dict) else str(o) for o in options}
                missing = [v for v in values if v not in have]
                if missing:
                    self.err(("track", key), f"track.{key}: select field '{field_name}' has no option for "
                                             f"{', '.join(missing)}; add them, or make it a text field")
            if field_name in out.values():
                self.err(("track", key), f"track.{key}: '{field_name}' already tracks the other value; use two fields")
                continue
            out[key] = field_name
        return out

    def step(self, i: int, s: dict, names: list, anchor: str | None) -> StepDef | None:
        base = ("steps", i)
        name = s.get("name") or f"step_{i + 1}"
        at = self.offset(base + ("at",), s.get("at"))
        after = self.offset(base + ("after",), s.get("after"))
        if at is not None and after is not None:
            self.err(base + ("after",), f"step '{name}': give 'at' (from the anchor) or 'after' (from the previous step), not both")
        if at is not None and anchor is None:
            self.err(base + ("at",), f"step '{name}': 'at' counts from the journey's 'anchor', which is missing")

        def goto(path: tuple, target: Any) -> str | None:
            if target is None:
                return None
            if target not in names:
                self.err(path, f"step '{name}': unknown step '{target}'{suggest(str(target), names) or '; ' + one_of(names)}")
                return None
            if names.index(target) <= i:
                self.err(path, f"step '{name}': 'goto' can only jump forward (to a later step); '{target}' comes before")
                return None
            return target

        branches = []
        for j, b in enumerate(s.get("branch") or []):
            p = base + ("branch", j)
            when = self.expr(p + ("when",), b.get("when"))
            if b.get("when") is None and j < len(s["branch"]) - 1:
                self.err(base + ("branch", j + 1), f"step '{name}': branches after one without 'when' are never used")
            branches.append(BranchDef(when, self.actions(p + ("actions",), b.get("actions")), goto(p + ("goto",), b.get("goto"))))
        if s.get("actions") and s.get("branch"):
            self.err(base + ("branch",), f"step '{name}': give 'actions' or 'branch', not both")
        wait_until = self.expr(base + ("wait_until",), s.get("wait_until"))
        timeout = self.duration(base + ("timeout",), s.get("timeout"))
        for key in ("timeout", "on_timeout", "timeout_goto"):
            if key in s and "wait_until" not in s:
                self.err(base + (key,), f"step '{name}': '{key}' only applies with 'wait_until'")
        return StepDef(
            name=name, label=text(s.get("label") or name), at=at, after=after,
            when=self.expr(base + ("when",), s.get("when")), actions=self.actions(base + ("actions",), s.get("actions")),
            branch=tuple(branches), goto=goto(base + ("goto",), s.get("goto")), wait_until=wait_until, timeout=timeout,
            on_timeout=self.actions(base + ("on_timeout",), s.get("on_timeout")),
            timeout_goto=goto(base + ("timeout_goto",), s.get("timeout_goto")))


def compile_flows(ctx: CompileContext) -> None:
    from forms.compiler import form_specs
    forms = form_specs(ctx)
    out: dict[str, Any] = {}
    workflow_files: dict[str, str] = {}
    for src in ctx.yaml_files("flows"):
        data = src.data
        if not isinstance(data, dict):
            continue
        stem = src.path.rsplit("/", 1)[1].rsplit(".", 1)[0]
        name = data.get("name") or stem
        if name != stem:
            ctx.error(src.path, ("name",), f"flow name '{name}' must match its file name '{stem}.yaml'")
        form = data.get("form")
        if form not in forms:
            ctx.error(src.path, ("form",), f"unknown form '{form}'{suggest(str(form), forms) or '; ' + one_of(forms)}")
            continue
        kind = data.get("kind")
        c = _FlowCompiler(ctx, src.path, data, name, forms)
        if kind == "workflow":
            if form in workflow_files:
                ctx.error(src.path, ("form",), f"form '{form}' already has a workflow ({workflow_files[form]}); "
                          "a form's records have one state, so one workflow per form")
                continue
            workflow_files[form] = src.path
            fd = c.workflow()
        elif kind == "journey":
            fd = c.journey()
        else:
            continue  # reported by the schema
        if fd is not None:
            out[name] = fd
    ctx.out["flows"] = out


register_step("flows", 20, compile_flows)
