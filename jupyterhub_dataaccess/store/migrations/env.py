"""Alembic environment: runs migrations on the engine handed over by jupyterhub_dataaccess.store."""

from alembic import context

from jupyterhub_dataaccess.store.models import Base

config = context.config
engine = config.attributes["connection_engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
