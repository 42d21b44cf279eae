"""Background jobs (long imports): status, progress and final report, readable by every serve process.

Revision ID: 0006_jobs
Revises:
Depends on: 0001_platform
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_jobs"
down_revision = None
branch_labels = ("jobs",)
depends_on = "0001_platform"


def upgrade():
    op.create_table(
        "loom_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=True),
        sa.Column("form", sa.String(length=64), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loom_jobs_user", "loom_jobs", ["username", "created_at"], unique=False)


def downgrade():
    op.drop_index("ix_loom_jobs_user", table_name="loom_jobs")
    op.drop_table("loom_jobs")
