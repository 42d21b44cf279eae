"""Record comments (with @mentions) shown on a record's timeline.

Revision ID: 0005_comments
Revises:
Depends on: 0001_platform

The Table object the code uses is in ``forms/comments/tables.py``; keep them in step.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_comments"
down_revision = None
branch_labels = ("comments",)
depends_on = "0001_platform"

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "loom_comments",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("form", sa.String(64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mentions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("edited_at", sa.DateTime()),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("deleted_at", sa.DateTime()),
        sa.Column("deleted_by", sa.String(64)),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loom_comments_record", "loom_comments", ["app", "form", "record_id", "deleted"])


def downgrade():
    op.drop_index("ix_loom_comments_record", table_name="loom_comments")
    op.drop_table("loom_comments")
