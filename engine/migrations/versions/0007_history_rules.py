"""The rule log's index: an app's or a form's newest rule lines on the timelines.

Revision ID: 0007_history_rules
Revises:
Depends on: 0001_platform

``RuleEngine.log_for`` reads the newest ``kind = 'rule'`` lines of loom_history for an app or one
of its forms.  Without this index a form with few rule lines made it walk the whole history
(0.3 s per million lines on PostgreSQL).  Partial: only rule lines are in it, so the other
timeline lines are written as before.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_history_rules"
down_revision = None
branch_labels = ("history_rules",)
depends_on = "0001_platform"

WHERE = sa.text("kind = 'rule'")


def upgrade():
    op.create_index("ix_loom_history_rules", "loom_history", ["app", "form", "id"], unique=False,
                    postgresql_where=WHERE, sqlite_where=WHERE)


def downgrade():
    op.drop_index("ix_loom_history_rules", table_name="loom_history")
