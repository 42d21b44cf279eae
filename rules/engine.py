"""The rule engine: events and timers in, conditions checked, actions run, everything logged.

For each event (``record.created/updated/deleted``, ``flow.transition``) the
matching rules run in priority order (lower first; ties in file order),
inside the transaction that caused the event:

1. the rule's ``when`` is evaluated on the record as it is *now* (including
   changes made by rules that ran before it); false -> nothing happens;
   an expression error -> logged as ``error``, the request still succeeds;
2. the actions run (see :mod:`rules.actions`); an action that cannot be
   carried out fails the whole transaction with a message naming the rule --
   nothing half-written;
3. the firing is recorded once, with the inputs the condition read and what
   each action did: a firing on a record is a ``rule`` line on the record's
   timeline (``loom_history``); any other (an error, a rule without a record --
   cron, webhook --, a rule on a deleted record) a row in ``loom_rule_log``.
   :meth:`RuleEngine.log_for` reads both as one log.  (Both used to be written
   for a firing on a record: the same facts twice, a quarter of the rules'
   cost per created CRM lead.)

Pre-save phase: a ``created`` rule's condition and leading actions that only
fill in the new record's fields run on ``record.saving``, before the INSERT,
so the record is inserted once with their values (:mod:`rules.phases` says
which, inferred at compile time); the rest runs on ``record.created``.

Loops: record changes made by rules publish events one level deeper
(``UnitOfWork.depth``); at ``engine.uow.MAX_DEPTH`` the record service stops
with a clear error, and ``run_rule`` respects the same limit.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Mapping
from typing import Any

from engine import platform as P
from engine.clock import from_db, to_db
from engine.crypto import mask
from engine.db import JsonText, dumps
from engine.events import Event
from engine.later import write_later
from engine.expressions import ExpressionError

from .actions import execute
from .actions.base import ActionError, DeferredLookup, RunContext, expr_paths, jsonable
from .model import RuleDef, RuleSet
from .triggers import CRON_TIMER, DATE_TIMER, date_iso, date_key, schedule_date_rules, schedule_following, schedule_next_cron

log = logging.getLogger("loom.rules")
_EMPTY = RuleSet({}, {}, {})
# the rule log and its timeline lines are only recorded: they ride along with the next statement
_LOG_INSERT = P.rule_log.insert()
INPUTS = P.HIDDEN_CHANGES["rule"][0]    # a timeline rule line's changes: what the condition read
# actions that write no timeline line of their own: rule lines before them can wait to be batched
_QUIET = ("set", "decide", "assign", "add_tag", "remove_tag", "notify")


@dataclass(eq=False)
class _Presaved:
    """What the pre-save phase did on a record about to be inserted, for ``on_created`` to finish."""

    record: dict                     # the record dict the record service publishes with record.created
    done_rules: list                 # (rule, run context, outcome, inputs) to log once the id exists
    resume: tuple | None             # (rule, run context, inputs): a rule whose later actions need the id
    start: int                       # index of the first created rule that did not run yet
    before: dict                     # fields the phase changed -> their values before it
    carry: RunContext                # staged-values carrier (caches of users and links)


def _presaved(uow: Any, create: bool) -> dict:
    """Pre-save results waiting for their ``record.created``, per transaction (keyed by the record dict)."""
    tx = uow.conn.get_transaction()
    got = uow.conn.info.get("loom_rules_presaved")
    if got is None or got[0] is not tx:
        if not create:
            return {}
        got = (tx, {})
        uow.conn.info["loom_rules_presaved"] = got
    return got[1]


class RuleEngine:
    """``runtime.services['rules']``."""

    def __init__(self, runtime: Any):
        self.rt = runtime
        # (app, cursor key) -> the assignment cursor as this process last read or wrote it
        # (PostgreSQL; rules.assignment chooses from it without a locked read)
        self.cursors: dict[tuple[str, str], dict] = {}
        # (app, cursor key) -> how many more records read it under the lock (it was found stale)
        self.contended: dict[tuple[str, str], int] = {}

    # -- definitions -----------------------------------------------------
    @staticmethod
    def ruleset(app: Any) -> RuleSet:
        return app.section("rules_index") or _EMPTY

    def rule(self, app: Any, name: str) -> RuleDef | None:
        return self.ruleset(app).rules.get(name)

    # -- event handlers --------------------------------------------------
    def on_saving(self, event: Event, uow: Any) -> None:
        """``record.saving`` (before the INSERT): the pre-save phase of the form's ``created`` rules.

        Rules run in their usual order while they can run on a record without an id
        (``RuleDef.presave``, inferred at compile time -- :mod:`rules.phases`).  The values they stage
        go into the INSERT (``event.data``); their log lines, and the rest of the rules -- from the
        first action that needs the stored record on -- follow in :meth:`on_created`.
        """
        rules = self.ruleset(uow.app).for_event("record.created", event.form)
        if not rules or rules[0].presave is None:
            return
        original = dict(event.record)
        current = dict(original)
        carry: RunContext | None = None
        done_rules: list[tuple] = []       # (rule, rc, outcome, inputs): logged once the record has its id
        by: dict[str, str] = {}
        resume = None
        start = len(rules)
        for i, rule in enumerate(rules):
            if rule.presave is None:
                start = i
                break
            rc = RunContext(uow, event.form, current, trigger="created", source=rule.name,
                            occurrence=f"{rule.name}:created", changed=event.changed)
            rc.presave = True
            _share(rc, carry)
            carry = rc
            ok, inputs = _condition(rule, rc)
            if ok is None:
                done_rules.append((rule, rc, "error", inputs))
                continue
            if not ok:
                continue
            staged = {**rc.pending, **rc.pending_system}
            _execute(rule, rc, rule.actions[:rule.presave])
            for k, v in {**rc.pending, **rc.pending_system}.items():
                if k not in staged or staged[k] != v:
                    by[k] = f"rule '{rule.name}'"
            current = rc.record
            if rule.presave < len(rule.actions):
                resume = (rule, rc, inputs)
                start = i + 1
                break
            done_rules.append((rule, rc, "fired", inputs))
        if carry is None:
            return
        if carry.pending or carry.pending_system:
            event.data["set"] = {k: jsonable(v) for k, v in carry.pending.items() if not isinstance(v, DeferredLookup)}
            event.data["deferred"] = {k: v for k, v in carry.pending.items() if isinstance(v, DeferredLookup)}
            event.data["system"] = dict(carry.pending_system)
            event.data["by"] = by
            event.data["verified"] = {k: form for k, (form, found) in carry.verified.items()
                                      if carry.pending.get(k) == found}
        changed = {k for k in {**carry.pending, **carry.pending_system} if current.get(k) != original.get(k)}
        _presaved(uow, True)[id(event.record)] = _Presaved(event.record, done_rules, resume, start,
                                                          {k: original.get(k) for k in changed}, carry)
        carry.pending, carry.pending_system = {}, {}

    def on_created(self, event: Event, uow: Any) -> None:
        rs = self.ruleset(uow.app)
        if not rs.by_event:
            return
        pre = _presaved(uow, False).pop(id(event.record), None)
        if pre is not None and pre.record is not event.record:
            pre = None
        dated = [r for r in rs.for_event("date", event.form) if event.record.get(r.trigger.date_field) is not None]
        if dated:
            schedule_date_rules(uow, dated, event.record, created=True)
        rules = rs.for_event("record.created", event.form)
        if pre is None:
            self._run_all(uow, rules, event.form, event.record, "created", occurrence="created", changed=event.changed)
            return
        last = self._run_all(uow, rules[pre.start:], event.form, event.record, "created", occurrence="created",
                             changed=event.changed, presaved=pre)
        if pre.before:
            self._presave_updated(uow, rs, event, pre, last)

    def _presave_updated(self, uow: Any, rs: RuleSet, event: Event, pre: "_Presaved", last: RunContext | None) -> None:
        """Rules on ``updated``/``changed`` see the fields the pre-save phase filled in as changed, as
        they did when those values came with an UPDATE after the INSERT (old: the values before)."""
        changed = frozenset(pre.before)
        rules = [r for r in rs.for_event("record.updated", event.form)
                 if r.trigger.kind == "updated" or not changed.isdisjoint(r.trigger.fields)]
        if not rules:
            return
        old = dict(event.record, **pre.before)
        rules = _may_fire(rules, last, event, old, changed)
        if rules:
            digest = hashlib.sha1(repr(sorted((k, str(event.record.get(k))) for k in changed)).encode()).hexdigest()[:12]
            self._run_all(uow, rules, event.form, event.record, "updated", old=old,
                          occurrence=f"updated:{uow.now.isoformat()}:{digest}", changed=changed, carry=last)

    def on_updated(self, event: Event, uow: Any) -> None:
        rs = self.ruleset(uow.app)
        changed = event.changed
        if "owner" in changed and event.old and event.old.get("owner"):
            from .assignment import release_claims
            release_claims(uow, event.form, event.record["id"], keep_user=event.record.get("owner"))
        if not rs.by_event:
            return
        dated = [r for r in rs.for_event("date", event.form) if r.trigger.date_field in changed]
        if dated:
            had = [r for r in dated if event.old is None or event.old.get(r.trigger.date_field) is not None]
            schedule_date_rules(uow, dated, event.record, reschedule=had)
        rules = [r for r in rs.for_event("record.updated", event.form)
                 if r.trigger.kind == "updated" or set(r.trigger.fields) & changed]
        if rules:
            digest = hashlib.sha1(repr(sorted((k, str(event.record.get(k))) for k in changed)).encode()).hexdigest()[:12]
            self._run_all(uow, rules, event.form, event.record, "updated", old=event.old,
                          occurrence=f"updated:{uow.now.isoformat()}:{digest}", changed=changed)

    def on_deleted(self, event: Event, uow: Any) -> None:
        from engine.scheduler import cancel
        rs = self.ruleset(uow.app)
        rid = event.record.get("id")
        if rid is not None and rs.for_event("date", event.form):
            cancel(uow.conn, app=uow.app.name, form=event.form, record_id=rid, kind=DATE_TIMER)
        self._run_all(uow, rs.for_event("record.deleted", event.form), event.form, event.record, "deleted",
                      occurrence="deleted", history=False)

    def on_transition(self, event: Event, uow: Any) -> None:
        rs = self.ruleset(uow.app)
        data = dict(event.data or {})
        rules = []
        for r in rs.for_event("flow.transition", event.form):
            t = r.trigger
            if t.transition and t.transition != data.get("transition"):
                continue
            if t.from_states and data.get("from") not in t.from_states:
                continue
            if t.to_states and data.get("to") not in t.to_states:
                continue
            rules.append(r)
        if rules:
            self._run_all(uow, rules, event.form, event.record, f"transition:{data.get('transition')}", old=event.old,
                          occurrence=f"transition:{data.get('transition')}:{uow.now.isoformat()}", event=data)

    def _run_all(self, uow: Any, rules: Any, form: str, record: Mapping, trigger: str, *, occurrence: str,
                 old: Mapping | None = None, event: Mapping | None = None, changed: Any = None,
                 history: bool = True, presaved: "_Presaved | None" = None,
                 carry: RunContext | None = None) -> RunContext | None:
        """Fire ``rules`` in order on one event.  Changes they stage on the record are carried from
        rule to rule (each sees the others' values) and written with one update at the end; the rule
        log rows and timeline lines are written with one statement each.  ``presaved``: what the
        pre-save phase did on this new record -- logged here, and its interrupted rule finished first.
        ``carry``: the last run context of rules that ran just before on the same record (its names
        for the expressions are taken over when they still show the record); the last one of these
        rules is returned for the same purpose."""
        current = dict(record)
        logs: list[dict] = []
        lines: list[dict] = []
        if presaved is not None:
            for rule, rc, outcome, inputs in presaved.done_rules:
                rc.record = current
                self._log(uow, rule, rc, trigger, outcome, inputs, rc.done, history=outcome == "fired",
                          logs=logs, lines=lines)
            carry = presaved.carry
            carry.record = current
            if presaved.resume is not None:
                rule, prc, inputs = presaved.resume
                rc = RunContext(uow, form, current, trigger=trigger, source=rule.name,
                                occurrence=f"{rule.name}:{occurrence}", event=prc.event, changed=changed)
                rc.done, rc._users, rc._links = prc.done, prc._users, prc._links
                self._write_lines(uow, lines, rule)
                done = _execute(rule, rc, rule.actions[rule.presave:])
                self._log(uow, rule, rc, trigger, "fired", inputs, done, history=history, logs=logs, lines=lines)
                current, carry = rc.record, rc
        for rule in rules:
            self._write_lines(uow, lines, rule)
            outcome, current, rc = self._fire(uow, rule, form, current, trigger=trigger, occurrence=occurrence, old=old,
                                              event=event, changed=changed, history=history, carry=carry, flush=False,
                                              logs=logs, lines=lines)
            carry = rc if rc is not None else carry
        if logs:
            write_later(uow.conn, _LOG_INSERT, logs)
        self._write_lines(uow, lines)
        if carry is not None:
            carry.flush()
        return carry

    @staticmethod
    def _write_lines(uow: Any, lines: list, before: RuleDef | None = None) -> None:
        """Write the timeline lines collected so far -- all of them, or only if ``before``'s actions
        may write lines of their own (tasks, flows...), so the timeline keeps the order things happened."""
        if lines and (before is None or any(a.kind not in _QUIET for a in before.actions)):
            write_later(uow.conn, P.HISTORY_INSERT, list(lines))
            lines.clear()

    # -- firing ----------------------------------------------------------
    def fire(self, uow: Any, rule: RuleDef, form: str | None, record: Mapping | None, *, trigger: str,
             occurrence: str, old: Mapping | None = None, payload: Any = None, event: Mapping | None = None,
             changed: Any = None) -> str:
        """Run one rule now; return 'fired', 'skipped' or 'error' (actions' failures raise)."""
        outcome, _, _ = self._fire(uow, rule, form, dict(record or {}), trigger=trigger, occurrence=occurrence, old=old,
                                   payload=payload, event=event, changed=changed)
        return outcome

    def _fire(self, uow: Any, rule: RuleDef, form: str | None, record: dict, *, trigger: str, occurrence: str,
              old: Mapping | None = None, payload: Any = None, event: Mapping | None = None, changed: Any = None,
              history: bool = True, carry: RunContext | None = None, flush: bool = True,
              logs: list | None = None, lines: list | None = None) -> tuple[str, dict, Any]:
        rc = RunContext(uow, form, record, trigger=trigger, source=rule.name, occurrence=f"{rule.name}:{occurrence}",
                        old=old, payload=payload, event=event, changed=changed)
        _share(rc, carry)
        ok, inputs = _condition(rule, rc)
        if ok is None:
            self._log(uow, rule, rc, trigger, "error", inputs, [], history=False, logs=logs)
            return "error", rc.record, rc
        if not ok:
            return "skipped", rc.record, rc
        done = _execute(rule, rc, rule.actions, flush=flush)
        self._log(uow, rule, rc, trigger, "fired", inputs, done, history=history, logs=logs, lines=lines)
        return "fired", rc.record, rc

    def _log(self, uow: Any, rule: RuleDef, rc: RunContext, trigger: str, outcome: str, inputs: dict,
             done: list, history: bool = True, logs: list | None = None, lines: list | None = None) -> None:
        """Record the firing once: a ``rule`` line on the record's timeline when it fired on a record
        (``history``: not for a deleted one), else a row in loom_rule_log -- batched into ``lines`` and
        ``logs`` when given.  :meth:`log_for` reads both."""
        if history and rc.form and rc.record_id is not None and outcome == "fired":
            changes = _json({"rule": rule.name, "label": dict(rule.label), "trigger": trigger, "actions": done,
                             INPUTS: inputs, **({"by": uow.user.username} if not uow.user.is_system else {})})
            if lines is not None:
                lines.append(dict(app=uow.app.name, form=rc.form, record_id=rc.record_id, at=to_db(uow.now),
                                  actor=rc.sys.user.username, kind="rule", changes=changes, comment=None))
            else:
                rc.records.add_history(rc.sys, rc.form, rc.record_id, "rule", changes)
            return
        row = dict(app=uow.app.name, rule=rule.name, form=rc.form, record_id=rc.record_id, at=to_db(uow.now),
                   trigger=trigger[:40], inputs=_json(inputs), outcome=outcome, actions=_json(done))
        if logs is not None:
            logs.append(row)
        else:
            write_later(uow.conn, _LOG_INSERT, [row])

    # -- timers ----------------------------------------------------------
    def on_date_timer(self, uow: Any, timer: dict) -> None:
        """Fire a date rule, then schedule the next rule on the same date field (the chain of
        :func:`rules.triggers.schedule_date_rules`) -- also when this one was removed or disabled
        by an upgrade since, so that the rules after it still come."""
        payload = timer.get("payload") or {}
        rule = self.rule(uow.app, payload.get("rule", ""))
        live = rule is not None and rule.trigger.kind == "date" and rule.enabled
        form = rule.trigger.form if live else timer.get("form")
        field = rule.trigger.date_field if live else payload.get("field")
        if form is None or field is None or timer.get("record_id") is None:
            return
        rec = uow.service("records").load(uow, form, int(timer["record_id"]))
        if rec is None:
            return
        if not live and payload.get("date") is not None and payload["date"] != date_iso(rec.get(field)):
            return       # a removed rule's timer, and the date changed since: its new chain was scheduled then
        if live:
            if date_key(uow.app.name, rule, rec["id"], rec.get(field)) != timer["key"]:
                return   # the date changed since: its new chain was scheduled then
            _, after, _ = self._fire(uow.deeper(), rule, form, rec, trigger="date", occurrence=timer["key"])
            if after.get(field) != rec.get(field):
                return   # the rule changed the date: that update rescheduled the chain
        chain = [r for r in self.ruleset(uow.app).for_event("date", form) if r.trigger.date_field == field]
        if chain and timer.get("due_at") is not None:
            schedule_following(uow, chain, rec, from_db(timer["due_at"]))

    def on_cron_timer(self, uow: Any, timer: dict) -> None:
        payload = timer.get("payload") or {}
        rule = self.rule(uow.app, payload.get("rule", ""))
        if rule is None or rule.trigger.kind != "schedule" or not rule.enabled or rule.trigger.cron_text != payload.get("cron"):
            return   # removed or changed since: the install scheduled its replacement
        schedule_next_cron(uow.conn, uow.app, rule, uow.now)
        self._fire(uow.deeper(), rule, None, {}, trigger="schedule", occurrence=timer["key"])

    # -- incoming webhooks -----------------------------------------------
    def run_webhook(self, uow: Any, rule: RuleDef, payload: Any, delivery: str) -> dict:
        record = None
        form = rule.trigger.form
        if form is not None:
            rid = payload.get("id") if isinstance(payload, dict) else None
            try:
                record = uow.service("records").load(uow, form, int(rid)) if rid is not None else None
            except (TypeError, ValueError):
                record = None
            if record is None:
                from engine.errors import NotFound
                raise NotFound(f"webhook '{rule.name}' works on {form} records: send {{\"id\": <{form} id>, ...}} of an existing record")
        outcome, rec, _ = self._fire(uow.deeper(), rule, form, record or {}, trigger="webhook", payload=payload,
                                     occurrence=f"webhook:{delivery}")
        return {"rule": rule.name, "outcome": outcome, "record": rec.get("id") if rec else None}

    # -- for bulk loads --------------------------------------------------
    def schedule_date_timers(self, uow: Any, form: str | None = None) -> int:
        """(Re)build date-relative timers for existing records -- after a bulk insert or seed that
        bypassed events.  Returns the number of timers scheduled (past times are skipped)."""
        from .triggers import backfill_date_rule
        n = 0
        for rule in self.ruleset(uow.app).rules.values():
            if rule.trigger.kind == "date" and rule.enabled and (form is None or rule.trigger.form == form):
                n += backfill_date_rule(uow.conn, self.rt, uow.app, rule, uow.now)
        return n

    # -- reading the log ---------------------------------------------------
    def log_for(self, uow: Any, form: str | None = None, record_id: int | None = None, limit: int = 100) -> list[dict]:
        """The newest ``limit`` firings, newest first, as rule-log rows (rule, form, record_id, at,
        trigger, inputs, outcome, actions): loom_rule_log's rows and the timelines' rule lines (see
        :meth:`_log`).  Rows the log held for firings that also have a timeline line (written
        before both were one) are left out, so nothing shows twice."""
        q, lines = log_queries(uow.app.name, form, record_id, limit)
        # at one instant, firings on records (timeline lines) come before the others (a deleted
        # record's, errors, record-less ones)
        rows = [(r["at"], 1, r["id"], dict(r)) for r in uow.conn.execute(q).mappings()]
        for r in uow.conn.execute(lines).mappings():
            c = r["changes"] or {}
            rows.append((r["at"], 0, r["id"], {
                "id": None, "app": r["app"], "rule": c.get("rule"), "form": r["form"], "record_id": r["record_id"],
                "at": r["at"], "trigger": str(c.get("trigger") or "")[:40], "inputs": c.get(INPUTS) or {},
                "outcome": "fired", "actions": c.get("actions") or []}))
        rows.sort(key=lambda x: x[:3], reverse=True)
        return [row for *_, row in rows[:limit]]


def log_queries(app: str, form: str | None, record_id: int | None, limit: int) -> tuple[Any, Any]:
    """The newest ``limit`` loom_rule_log rows and timeline rule lines of ``app`` (and ``form``,
    ``record_id``), newest first.  The lines are found through ``ix_loom_history_rules`` (rule
    lines only) or, for one record, ``ix_loom_history_record``: never by walking the history."""
    from sqlalchemy import and_, func, not_, select
    t, h = P.rule_log, P.history
    q = select(t).where(t.c.app == app, not_(and_(
        t.c.outcome == "fired", t.c.form.isnot(None), t.c.record_id.isnot(None),
        func.coalesce(t.c.trigger, "") != "deleted")))
    lines = select(h).where(h.c.app == app, h.c.kind == "rule")
    if form:
        q, lines = q.where(t.c.form == form), lines.where(h.c.form == form)
    if record_id is not None:
        q, lines = q.where(t.c.record_id == record_id), lines.where(h.c.record_id == record_id)
    return q.order_by(t.c.id.desc()).limit(limit), lines.order_by(h.c.id.desc()).limit(limit)


def _share(rc: RunContext, carry: RunContext | None) -> None:
    """Values staged by earlier rules on this event (not written yet) and their caches -- and the
    names the expressions see, when nothing but the rule-specific ``event`` differs."""
    if carry is not None:
        rc.pending, rc.pending_system, rc.verified = carry.pending, carry.pending_system, carry.verified
        rc._users, rc._links = carry._users, carry._links
        rc.adopt_env(carry)


def _may_fire(rules: Any, last: RunContext | None, event: Event, old: dict, changed: frozenset) -> list:
    """Of the changed-rules after a pre-save phase, those that may fire: a rule whose condition is
    false on the names the last created rule's run shows -- what their run would take over (see
    ``RunContext.adopt_env``), with this ``old`` and no ``event`` -- is left out before a run
    context, an occurrence key and a log are made for it (the CRM's claim rule, on every lead).
    Any doubt -- no such names, a condition that fails -- leaves the rule to its run."""
    env = last._env if last is not None else None
    if (env is None or last.form != event.form or last.parent is not None or last.payload is not None
            or last.created is not None or env.get("record") != event.record):
        return list(rules)
    shown = {k: env[k] for k in ("event", "old") if k in env}
    env["event"], env["old"] = {}, old          # (expressions never change what they read)
    ctx = RunContext.shared_eval_ctx(last.uow, changed, last.records)
    try:
        kept = []
        for rule in rules:
            try:
                if rule.when is None or rule.when.evaluate(env, ctx):
                    kept.append(rule)
            except ExpressionError:
                kept.append(rule)          # its run logs the error
        return kept
    finally:
        env.pop("event", None)
        env.pop("old", None)
        env.update(shown)


def _condition(rule: RuleDef, rc: RunContext) -> tuple[bool | None, dict]:
    """(True, inputs the condition read) / (False, {}) / (None, {'error': ...}) when it failed."""
    if rule.when is None:
        return True, {}
    env = rc.env()
    try:
        ok = rule.when.evaluate(env, rc.eval_ctx())
    except ExpressionError as exc:
        log.warning("rule %s: condition failed on %s %s: %s", rule.name, rc.form, rc.record_id, exc.message)
        return None, {"error": f"condition: {exc.message}"}
    return (True, _inputs(rule, env, rc.formdef)) if ok else (False, {})


def _execute(rule: RuleDef, rc: RunContext, actions: Any, flush: bool = False) -> list:
    try:
        return execute(rc, actions, flush=flush)
    except ActionError as exc:
        msg = exc.message if f"rule '{rule.name}'" in exc.message else f"rule '{rule.name}': {exc.message}"
        raise ActionError(msg) from exc


_INPUT_PATHS: dict[int, tuple] = {}


def _input_paths(rule: RuleDef, fd: Any) -> tuple:
    """(path, its name in the log, whether it shows a PII field) for each name the condition reads,
    worked out once per rule (and form version)."""
    got = _INPUT_PATHS.get(id(rule))
    if got is None or got[0] is not rule or got[1] is not fd:
        pii = {n for n, f in fd.fields.items() if f.pii} if fd is not None else set()
        out = []
        for path in sorted(expr_paths(rule.when)):
            if not path or path[0] in ("current_user", "settings", "app", "true", "false", "null", "None", "True", "False"):
                continue
            record_path = path[0] in ("record", "old")
            own = path[1] if record_path and len(path) > 1 else path[0]
            masked = own in pii and len(path) <= (2 if record_path else 1)
            out.append((path, ".".join(map(str, path)), masked))
        if len(_INPUT_PATHS) > 2000:
            _INPUT_PATHS.clear()
        got = _INPUT_PATHS[id(rule)] = (rule, fd, tuple(out))
    return got[2]


def _inputs(rule: RuleDef, env: Mapping, fd: Any) -> dict:
    """The values the condition read (PII fields masked), for the rule log."""
    out = {}
    for path, name, masked in _input_paths(rule, fd):
        v: Any = env
        for part in path:
            try:
                v = v[part] if isinstance(v, Mapping) else None
            except (KeyError, TypeError):
                v = None
        if isinstance(v, (dict, list)):
            continue
        if masked and v is not None:
            v = mask(str(v))
        out[name] = jsonable(v)
    return out


def _json(value: Any) -> JsonText:
    """A log line's data as JSON, serialized now: the actions' results may hold a look-up done by
    the INSERT (its id by now), decimals and values of other types (as text)."""
    return dumps(value, _loggable, jsonable_deep)


def _loggable(value: Any) -> Any:
    if isinstance(value, DeferredLookup) and value.resolved:
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


_PLAIN = (str, int, float, bool, type(None))


def jsonable_deep(value: Any) -> Any:
    if type(value) in _PLAIN:            # exact types first: most values are; a LinkRef (an int) is not
        return value
    if isinstance(value, dict):
        return {str(k): jsonable_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable_deep(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return jsonable(value)
    if isinstance(value, DeferredLookup) and value.resolved:
        return value.value
    return str(value)


__all__ = ["RuleEngine", "CRON_TIMER", "DATE_TIMER"]
