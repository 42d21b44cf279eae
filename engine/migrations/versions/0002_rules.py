"""Rule engine tables: assignment cursors (round robin, weighted, frequency-cap locks) and pool claims.

Revision ID: 0002_rules
Revises:
Depends on: 0001_platform
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_rules"
down_revision = None
branch_labels = ("rules",)
depends_on = "0001_platform"

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "loom_rule_cursors",
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app", "key"),
    )
    op.create_table(
        "loom_rule_claims",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("form", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_loom_rule_claims_user", "loom_rule_claims", ["app", "username", "released_at"], unique=False)
    op.create_index("ix_loom_rule_claims_record", "loom_rule_claims", ["app", "form", "record_id"], unique=False)


def downgrade():
    op.drop_index("ix_loom_rule_claims_record", table_name="loom_rule_claims")
    op.drop_index("ix_loom_rule_claims_user", table_name="loom_rule_claims")
    op.drop_table("loom_rule_claims")
    op.drop_table("loom_rule_cursors")
