"""Alembic's entry point for the run store: cldash.store.migrations passes the connection to migrate
in ``config.attributes["connection"]`` (there is no alembic.ini and no URL here)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
