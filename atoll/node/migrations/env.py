"""Alembic environment of the node's store: runs on the connection the node hands over
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` when run by hand."""

from alembic import context
from sqlalchemy import create_engine

from atoll.node.store import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        _run(conn)
        conn.commit()
