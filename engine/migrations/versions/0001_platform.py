"""Platform tables: apps, versions, users, tokens, audit, history, timers, outbox, tasks, sequences, files, rule log.

Revision ID: 0001_platform
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001_platform"
down_revision = None
branch_labels = ("platform",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():

    op.create_table('loom_app_versions',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('package', sa.LargeBinary(), nullable=False),
    sa.Column('plan', sa.JSON(), nullable=True),
    sa.Column('installed_at', sa.DateTime(), nullable=False),
    sa.Column('installed_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_loom_app_versions_app'), 'loom_app_versions', ['app'], unique=False)
    op.create_table('loom_apps',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('title', sa.JSON(), nullable=True),
    sa.Column('installed_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('loom_audit',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('app', sa.String(length=64), nullable=True),
    sa.Column('form', sa.String(length=64), nullable=True),
    sa.Column('record_id', sa.BigInteger(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_loom_audit_at'), 'loom_audit', ['at'], unique=False)
    op.create_table('loom_files',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=128), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('loom_history',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('form', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_loom_history_record', 'loom_history', ['app', 'form', 'record_id'], unique=False)
    op.create_table('loom_outbox',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('recipient', sa.String(length=255), nullable=False),
    sa.Column('recipient_kind', sa.String(length=16), nullable=True),
    sa.Column('lang', sa.String(length=8), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('rendered', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('form', sa.String(length=64), nullable=True),
    sa.Column('record_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    op.create_index(op.f('ix_loom_outbox_recipient'), 'loom_outbox', ['recipient'], unique=False)
    op.create_index('ix_loom_outbox_status', 'loom_outbox', ['status', 'due_at'], unique=False)
    op.create_index(op.f('ix_loom_outbox_template'), 'loom_outbox', ['template'], unique=False)
    op.create_table('loom_rule_log',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('form', sa.String(length=64), nullable=True),
    sa.Column('record_id', sa.BigInteger(), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('trigger', sa.String(length=40), nullable=True),
    sa.Column('inputs', sa.JSON(), nullable=True),
    sa.Column('outcome', sa.String(length=24), nullable=False),
    sa.Column('actions', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_loom_rule_log_record', 'loom_rule_log', ['app', 'form', 'record_id'], unique=False)
    op.create_table('loom_sequences',
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('app', 'key')
    )
    op.create_table('loom_tasks',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('form', sa.String(length=64), nullable=True),
    sa.Column('record_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('title', sa.JSON(), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('assignee', sa.String(length=64), nullable=True),
    sa.Column('candidate_role', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=24), nullable=True),
    sa.Column('due_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('completed_by', sa.String(length=64), nullable=True),
    sa.Column('flow', sa.String(length=64), nullable=True),
    sa.Column('step', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_loom_tasks_assignee', 'loom_tasks', ['assignee', 'status'], unique=False)
    op.create_index('ix_loom_tasks_record', 'loom_tasks', ['app', 'form', 'record_id'], unique=False)
    op.create_table('loom_timers',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.Column('form', sa.String(length=64), nullable=True),
    sa.Column('record_id', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('locked_by', sa.String(length=64), nullable=True),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('fired_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index('ix_loom_timers_due', 'loom_timers', ['status', 'due_at'], unique=False)
    op.create_index('ix_loom_timers_record', 'loom_timers', ['app', 'form', 'record_id'], unique=False)
    op.create_table('loom_tokens',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_loom_tokens_username'), 'loom_tokens', ['username'], unique=False)
    op.create_table('loom_users',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=True),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('attrs', sa.JSON(), nullable=False),
    sa.Column('language', sa.String(length=8), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('away_until', sa.DateTime(), nullable=True),
    sa.Column('delegate_to', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )



def downgrade():

    op.drop_table('loom_users')
    op.drop_index(op.f('ix_loom_tokens_username'), table_name='loom_tokens')
    op.drop_table('loom_tokens')
    op.drop_index('ix_loom_timers_record', table_name='loom_timers')
    op.drop_index('ix_loom_timers_due', table_name='loom_timers')
    op.drop_table('loom_timers')
    op.drop_index('ix_loom_tasks_record', table_name='loom_tasks')
    op.drop_index('ix_loom_tasks_assignee', table_name='loom_tasks')
    op.drop_table('loom_tasks')
    op.drop_table('loom_sequences')
    op.drop_index('ix_loom_rule_log_record', table_name='loom_rule_log')
    op.drop_table('loom_rule_log')
    op.drop_index(op.f('ix_loom_outbox_template'), table_name='loom_outbox')
    op.drop_index('ix_loom_outbox_status', table_name='loom_outbox')
    op.drop_index(op.f('ix_loom_outbox_recipient'), table_name='loom_outbox')
    op.drop_table('loom_outbox')
    op.drop_index('ix_loom_history_record', table_name='loom_history')
    op.drop_table('loom_history')
    op.drop_table('loom_files')
    op.drop_index(op.f('ix_loom_audit_at'), table_name='loom_audit')
    op.drop_table('loom_audit')
    op.drop_table('loom_apps')
    op.drop_index(op.f('ix_loom_app_versions_app'), table_name='loom_app_versions')
    op.drop_table('loom_app_versions')

