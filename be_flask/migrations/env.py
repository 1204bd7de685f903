"""Alembic environment: runs on the connection the app hands over, or on the app's engine."""

from __future__ import annotations

from alembic import context

from src.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate on the app's connection (src/migrate.py holds the lock around this)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # CLI use: build the app (settings from the environment) and take its engine.
    from src.be import create_app
    from src.extensions import db

    app = create_app({"AUTO_MIGRATE": False})
    with db.engine(app).connect() as connection:
        _run(connection)
        connection.commit()


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
