"""Uploaded files: which form field they were uploaded for, which record holds them, their status.

Revision ID: 0004_files
Revises: 0001_platform

``status`` is ``pending`` from upload until a record save attaches the file
(then ``attached`` with ``record_id``); only the uploader may attach or read a
pending file.  Keep ``engine/platform.py``'s ``files`` table in step.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_files"
down_revision = "0001_platform"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("loom_files") as batch:
        batch.add_column(sa.Column("form", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("field", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("record_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"))
        batch.add_column(sa.Column("attached_at", sa.DateTime(), nullable=True))
    op.create_index("ix_loom_files_record", "loom_files", ["app", "form", "record_id"], unique=False)
    op.create_index("ix_loom_files_pending", "loom_files", ["status", "created_at"], unique=False)


def downgrade():
    op.drop_index("ix_loom_files_pending", table_name="loom_files")
    op.drop_index("ix_loom_files_record", table_name="loom_files")
    with op.batch_alter_table("loom_files") as batch:
        batch.drop_column("attached_at")
        batch.drop_column("status")
        batch.drop_column("record_id")
        batch.drop_column("field")
        batch.drop_column("form")
