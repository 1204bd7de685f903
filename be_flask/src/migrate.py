"""Apply Alembic migrations and default users at start, one process at a time.

With dynamic credentials (VAULT_DB_MODE=dynamic) the backend's logins hold table privileges
only and cannot change the schema: the operator migrates first with a login of Vault's
flask-migrate role (`python -m src.migrate`, which setup.sh runs), and the backend only checks
that the schema is current. Elsewhere the backend migrates at start, as its own login.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app, request
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from src.database import DATABASE_REFUSAL, NO_DATABASE_ENDPOINTS
from src.db_utils import create_default_users
from src.errors import error_response
from src.extensions import db

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any constant works; it only has to be the same in every worker of every version of the app.
ADVISORY_LOCK_KEY = 0x5F1A5C


class DatabaseRefusedError(RuntimeError):
    """The database answers, but the app will not use it as it is; `reason` says why."""

    reason = "database not usable"


class SchemaBehindError(DatabaseRefusedError):
    """The database's schema is older than this code and the backend may not migrate it."""

    reason = "database schema not migrated"


class SuperuserLoginError(DatabaseRefusedError):
    """The backend's login is a superuser: it must be a role of its own (issue 23)."""

    reason = "database login is a superuser"


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
    except DatabaseRefusedError as error:
        log.error("preparing database: %s", error)
        app.extensions[DATABASE_REFUSAL] = error.reason
        if isinstance(error, SuperuserLoginError):
            db.dispose(app)  # no pooled superuser session; the next try logs in afresh
        return
    except Exception:
        log.warning("preparing database: failed, will retry", exc_info=True)
        return
    app.extensions[DATABASE_REFUSAL] = None
    app.extensions["database_prepared"] = True


def _ensure_prepared() -> Any:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions["database_prepared"] or request.endpoint in NO_DATABASE_ENDPOINTS:
        return None
    waited = time.monotonic() - app.extensions["database_prepare_tried"]
    if waited >= app.config["DATABASE_PREPARE_RETRY_SECONDS"]:
        _try_prepare(app)
    refusal = app.extensions.get(DATABASE_REFUSAL)
    if refusal and request.endpoint != "health.ready":  # readiness gives its own answer
        return error_response(503, refusal)
    return None


def prepare_database(app: Flask) -> None:
    """Bring the schema to head (or check it is, with dynamic logins); default users."""
    log.info("preparing database")
    with db.engine(app).connect() as connection, _exclusive(connection):
        if connection.dialect.name == "postgresql":
            require_unprivileged_login(connection)
        if connection.dialect.name == "postgresql" and _dynamic_credentials(app):
            require_current_schema(connection)
        else:
            upgrade_schema(connection)
        create_default_users(connection, app)
    log.info("preparing database: ok")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_schema(connection: Connection) -> None:
    """Run `alembic upgrade head` on this connection."""
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    connection.commit()


def require_unprivileged_login(connection: Connection) -> None:
    """Raise SuperuserLoginError when the backend logged in as a PostgreSQL superuser."""
    superuser = connection.scalar(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    connection.commit()
    if superuser:
        raise SuperuserLoginError(
            "the backend's login is a superuser: give it a role of its own that is not "
            "(VAULT_INTEGRATION.md, Static mode); it is not used until then"
        )


def require_current_schema(connection: Connection) -> None:
    """Raise SchemaBehindError unless the database is at this code's Alembic head."""
    current = set(MigrationContext.configure(connection).get_current_heads())
    connection.commit()
    wanted = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    if current != wanted:
        raise SchemaBehindError(
            f"schema at {sorted(current) or 'nothing'}, this code needs {sorted(wanted)}: "
            "run the migrations with a flask-migrate login (`python -m src.migrate`, "
            "which ./setup.sh runs; see VAULT_INTEGRATION.md)"
        )


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


def migrate_as_owner(url: URL, owner: str) -> str:
    """`alembic upgrade head` as `owner` (SET ROLE) on a migration login; the new head."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection, _exclusive(connection):
            quoted = connection.dialect.identifier_preparer.quote(owner)
            connection.execute(text(f"SET ROLE {quoted}"))
            connection.commit()
            upgrade_schema(connection)
            heads = MigrationContext.configure(connection).get_current_heads()
            connection.rollback()
            return ",".join(heads)
    finally:
        engine.dispose()


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m src.migrate",
        description="Migrate the schema as the table owner (SET ROLE) with a login read as "
        "JSON on stdin: the answer of `bao read -format=json database/creds/flask-migrate` "
        "(dynamic mode), of `bao kv get -format=json secret/database/bootstrap` (static mode), "
        "or {username, password}.",
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--database", required=True)
    parser.add_argument("--owner", default=os.environ.get("DB_OWNER_ROLE", "flask_owner"))
    return parser.parse_args(argv)


def _login_from(text_in: str) -> tuple[str, str]:
    """username and password from the JSON on stdin (never from argv or the environment)."""
    try:
        data = json.loads(text_in)
        while "username" not in data:  # a database/creds answer, or a KV v2 one (data.data)
            data = data["data"]
        return str(data["username"]), str(data["password"])
    except (ValueError, AttributeError, KeyError, TypeError):
        raise SystemExit(
            "migrate: stdin must be JSON with username and password (a database/creds answer)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Command line: migrate, print one line; a clear error (never the password) otherwise."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    username, password = _login_from(sys.stdin.read())
    url = URL.create(
        "postgresql+psycopg",
        username=username,
        password=password,
        host=args.host,
        port=args.port,
        database=args.database,
    )
    print(f"migrating database {args.database} as {args.owner} (login {username})", flush=True)
    try:
        head = migrate_as_owner(url, args.owner)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or type(error).__name__).splitlines()[0]
        print(f"migrate: failed: {reason}", file=sys.stderr)
        return 1
    print(f"migrating database: ok (head {head})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
