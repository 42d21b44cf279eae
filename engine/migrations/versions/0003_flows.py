"""Flow engine tables: flow instances, approvals and votes, SLA clocks, journey enrolments.

Revision ID: 0003_flows
Revises:
Depends on: 0001_platform

The Table objects the code uses are in ``flows/tables.py``; keep them in step.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_flows"
down_revision = None
branch_labels = ("flows",)
depends_on = "0001_platform"

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "loom_flow_instances",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("form", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(40)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("app_version", sa.String(40), nullable=False),
        sa.Column("app_digest", sa.String(64), nullable=False),
        sa.Column("flow_digest", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app", "flow", "record_id", name="uq_loom_flow_instances_record"),
    )
    op.create_index("ix_loom_flow_instances_flow", "loom_flow_instances", ["app", "flow", "status"])

    op.create_table(
        "loom_flow_approvals",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("form", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("transition", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(40)),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("needed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(64)),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime()),
        sa.Column("comment", sa.Text()),
        sa.Column("payload", sa.JSON()),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loom_flow_approvals_record", "loom_flow_approvals", ["app", "form", "record_id", "status"])

    op.create_table(
        "loom_flow_votes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(64), nullable=False),
        sa.Column("on_behalf_of", sa.String(64)),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_loom_flow_votes_approval_id"), "loom_flow_votes", ["approval_id"])

    op.create_table(
        "loom_sla_clocks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("form", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("sla", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("gen", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("target_seconds", sa.Integer(), nullable=False),
        sa.Column("calendar", sa.String(64)),
        sa.Column("paused_at", sa.DateTime()),
        sa.Column("paused_seconds", sa.Integer(), nullable=False),
        sa.Column("warned_at", sa.DateTime()),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("breached_at", sa.DateTime()),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("stopped_at", sa.DateTime()),
        sa.Column("app_digest", sa.String(64), nullable=False),
        sa.Column("flow_digest", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app", "form", "record_id", "flow", "sla", name="uq_loom_sla_clocks_record"),
    )
    op.create_index("ix_loom_sla_clocks_report", "loom_sla_clocks", ["app", "flow", "sla", "breached"])

    op.create_table(
        "loom_journey_enrolments",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("form", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("anchor", sa.String(40)),
        sa.Column("enrolled_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime()),
        sa.Column("end_reason", sa.String(64)),
        sa.Column("current_step", sa.String(64)),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("steps_done", sa.JSON(), nullable=False),
        sa.Column("app_digest", sa.String(64), nullable=False),
        sa.Column("flow_digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loom_journey_enrolments_record", "loom_journey_enrolments",
                    ["app", "journey", "record_id", "status"])


def downgrade():
    op.drop_index("ix_loom_journey_enrolments_record", table_name="loom_journey_enrolments")
    op.drop_table("loom_journey_enrolments")
    op.drop_index("ix_loom_sla_clocks_report", table_name="loom_sla_clocks")
    op.drop_table("loom_sla_clocks")
    op.drop_index(op.f("ix_loom_flow_votes_approval_id"), table_name="loom_flow_votes")
    op.drop_table("loom_flow_votes")
    op.drop_index("ix_loom_flow_approvals_record", table_name="loom_flow_approvals")
    op.drop_table("loom_flow_approvals")
    op.drop_index("ix_loom_flow_instances_flow", table_name="loom_flow_instances")
    op.drop_table("loom_flow_instances")
