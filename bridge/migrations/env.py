"""Alembic environment: the connection comes from ``bridge.db.migrate``."""

from alembic import context

from bridge.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` on the command line lands here
    raise RuntimeError("run migrations with `upay-bridge db upgrade`")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
