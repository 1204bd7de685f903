"""Apply Alembic migrations and default users at start, one process at a time."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, request
from sqlalchemy import Connection, text

from src.database import NO_DATABASE_ENDPOINTS
from src.db_utils import create_default_users
from src.extensions import db

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any constant works; it only has to be the same in every worker of every version of the app.
ADVISORY_LOCK_KEY = 0x5F1A5C


def init_app(app: Flask) -> None:
    """Prepare the database now, and before requests until it has worked once."""
    app.extensions["database_prepared"] = not app.config["AUTO_MIGRATE"]
    app.before_request(_ensure_prepared)
    _try_prepare(app)


def _try_prepare(app: Flask) -> None:
    app.extensions["database_prepare_tried"] = time.monotonic()
    if app.extensions["database_prepared"]:
        return
    try:
        prepare_database(app)
    except Exception:
        log.warning("preparing database: failed, will retry", exc_info=True)
        return
    app.extensions["database_prepared"] = True


def _ensure_prepared() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions["database_prepared"] or request.endpoint in NO_DATABASE_ENDPOINTS:
        return
    waited = time.monotonic() - app.extensions["database_prepare_tried"]
    if waited >= app.config["DATABASE_PREPARE_RETRY_SECONDS"]:
        _try_prepare(app)


def prepare_database(app: Flask) -> None:
    """Bring the schema to head and make sure the default users exist."""
    log.info("preparing database")
    with (
        db.engine(app).connect() as connection,
        _exclusive(connection),
        _as_owner(connection, app),
    ):
        upgrade_schema(connection)
        create_default_users(connection, app)
    log.info("preparing database: ok")


def upgrade_schema(connection: Connection) -> None:
    """Run `alembic upgrade head` on this connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    connection.commit()


@contextlib.contextmanager
def _as_owner(connection: Connection, app: Flask) -> Iterator[None]:
    """Dynamic credentials: create objects as the fixed owner role, never a short-lived login."""
    if connection.dialect.name != "postgresql" or not _dynamic_credentials(app):
        yield
        return
    owner = connection.dialect.identifier_preparer.quote(app.config["DB_OWNER_ROLE"])
    connection.execute(text(f"SET ROLE {owner}"))
    try:
        yield
    finally:
        connection.rollback()
        connection.execute(text("RESET ROLE"))
        connection.commit()


def _dynamic_credentials(app: Flask) -> bool:
    client = app.extensions.get("vault")
    return client is not None and client.settings.db_mode == "dynamic"


@contextlib.contextmanager
def _exclusive(connection: Connection) -> Iterator[None]:
    """Workers starting together queue here instead of racing to create the same tables."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
        return
    database = connection.engine.url.database
    if not database or database == ":memory:":
        yield  # an in-memory database belongs to this process alone
        return
    with open(f"{database}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
