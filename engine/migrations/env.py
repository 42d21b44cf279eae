"""Alembic environment for Loom's platform tables.

Loom runs migrations itself (``engine.migrate.upgrade_platform``) on the
connection it passes in ``config.attributes['connection']``; there is no
alembic.ini to edit.  Each engine may add its own branch of revisions
(``branch_labels``) that ``depends_on`` ``0001_platform``; we upgrade to
``heads``.
"""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table="loom_alembic_version",
                  render_as_batch=True, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
