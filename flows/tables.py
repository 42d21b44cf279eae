"""The flow engine's tables (created by ``engine/migrations/versions/0003_flows.py``).

* ``loom_flow_instances``: one per record of a form with a workflow; keeps
  the app version/digest and the flow's own digest it started on, so a
  running instance continues on its definition after an upgrade (unless
  the new flow file migrates it explicitly).
* ``loom_flow_approvals`` / ``loom_flow_votes``: approval rounds of a
  transition and each approver's decision.  Every waiting approver also has
  an open row in ``loom_tasks``.
* ``loom_sla_clocks``: one per record and SLA; status, due time, pauses,
  warning/breach/escalation level.  ``breached`` is the flag reports use.
* ``loom_journey_enrolments``: one per enrolment of a record in a journey.

Keep these in step with the migration.
"""
from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)

metadata = MetaData()
ID = BigInteger().with_variant(Integer, "sqlite")

instances = Table(
    "loom_flow_instances", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("flow", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("state", String(40)),
    Column("status", String(16), nullable=False),          # active, done
    Column("app_version", String(40), nullable=False),
    Column("app_digest", String(64), nullable=False),
    Column("flow_digest", String(64), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    UniqueConstraint("app", "flow", "record_id", name="uq_loom_flow_instances_record"),
    Index("ix_loom_flow_instances_flow", "app", "flow", "status"),
)

approvals = Table(
    "loom_flow_approvals", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("instance_id", BigInteger, nullable=False),
    Column("flow", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("transition", String(64), nullable=False),
    Column("from_state", String(40)),
    Column("mode", String(16), nullable=False),            # single, any, all, count, percent, sequential
    Column("needed", Integer, nullable=False),             # approvals needed (count) / percent
    Column("status", String(16), nullable=False),          # pending, approved, rejected, cancelled
    Column("stage", Integer, nullable=False),              # current stage (sequential)
    Column("approvers", JSON, nullable=False),             # [{"user", "on_behalf_of", "stage", "source"}]
    Column("requested_by", String(64)),
    Column("requested_at", DateTime, nullable=False),
    Column("decided_at", DateTime),
    Column("comment", Text),
    Column("payload", JSON),
    Index("ix_loom_flow_approvals_record", "app", "form", "record_id", "status"),
)

votes = Table(
    "loom_flow_votes", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("approval_id", BigInteger, nullable=False, index=True),
    Column("stage", Integer, nullable=False),
    Column("approver", String(64), nullable=False),
    Column("on_behalf_of", String(64)),
    Column("decision", String(16), nullable=False),        # approve, reject
    Column("comment", Text),
    Column("at", DateTime, nullable=False),
)

sla_clocks = Table(
    "loom_sla_clocks", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("flow", String(64), nullable=False),
    Column("sla", String(64), nullable=False),
    Column("status", String(16), nullable=False),          # running, paused, stopped
    Column("gen", Integer, nullable=False),                # bumped on every re-schedule: new timer keys
    Column("started_at", DateTime, nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("target_seconds", Integer, nullable=False),
    Column("calendar", String(64)),
    Column("paused_at", DateTime),
    Column("paused_seconds", Integer, nullable=False),     # working (or wall) time spent paused
    Column("warned_at", DateTime),
    Column("breached", Boolean, nullable=False),
    Column("breached_at", DateTime),
    Column("level", Integer, nullable=False),              # 0 none, 1 breached, 2.. escalations
    Column("stopped_at", DateTime),
    Column("app_digest", String(64), nullable=False),
    Column("flow_digest", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("app", "form", "record_id", "flow", "sla", name="uq_loom_sla_clocks_record"),
    Index("ix_loom_sla_clocks_report", "app", "flow", "sla", "breached"),
)

enrolments = Table(
    "loom_journey_enrolments", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("journey", String(64), nullable=False),
    Column("form", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),          # active, completed, goal, exited, cancelled, replaced
    Column("anchor", String(40)),                          # the anchor value at enrolment (ISO)
    Column("enrolled_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("end_reason", String(64)),
    Column("current_step", String(64)),                    # the step scheduled (or waiting) next
    Column("waiting", Boolean, nullable=False),            # parked on a wait_until condition
    Column("steps_done", JSON, nullable=False),            # [step names], in order
    Column("app_digest", String(64), nullable=False),
    Column("flow_digest", String(64), nullable=False),
    Index("ix_loom_journey_enrolments_record", "app", "journey", "record_id", "status"),
)
