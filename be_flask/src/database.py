"""The SQLAlchemy engine and sessions, created lazily in the process that uses them."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Select

from src import stuck_connections
from src.app_secrets import database_config, vault_client
from src.logging_setup import secrets_registry
from src.vault.database import RENEW_AT

if TYPE_CHECKING:
    from src.vault.database import DatabaseCredentials

log = logging.getLogger(__name__)

# Liveness and scraping must answer even while the database is down.
NO_DATABASE_ENDPOINTS = frozenset({"health.health", "metrics.metrics"})
# app.extensions key: why the app will not use the database (src/migrate.py; None when it
# does): readiness and every request answer 503 with it.
DATABASE_REFUSAL = "database_refusal"
# Connection record key: the credentials generation the connection logged in with.
GENERATION = "vault_credentials_generation"
# Connection record key: when the connection last went back to the pool (time.monotonic()).
CHECKED_IN_AT = "checked_in_at"
# A pooled connection idle longer than this is pinged before use (a database restart while it
# sat in the pool would otherwise fail the request). One used within the last second is not:
# a ping on every checkout cost a round trip (and a BEGIN) on every request.
PING_IF_IDLE_SECONDS = 1.0
# PostgreSQL refusing a login or its privileges: invalid password, invalid authorization,
# insufficient privilege. In dynamic mode it means the lease's role was dropped (revoked).
REFUSED_SQLSTATES = frozenset({"28P01", "28000", "42501"})
# A failed connection attempt carries no SQLSTATE in psycopg: libpq's message says it.
REFUSED_AT_LOGIN = ("authentication failed", "is not permitted to log in", "permission denied")
# The dynamic credentials of each engine, told when PostgreSQL refuses them.
_CREDENTIALS: weakref.WeakKeyDictionary[Engine, DatabaseCredentials] = weakref.WeakKeyDictionary()
# Connections requests hold, shut down when held past a bound (a frozen server).
STUCK = stuck_connections.StuckConnections()


class Database:
    """Flask extension: one engine per process (a forked worker never reuses its parent's)."""

    def __init__(self) -> None:
        self._engines: dict[int, tuple[int, Engine]] = {}
        self._sessionmakers: dict[int, sessionmaker[Session]] = {}
        self._compiled: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def init_app(self, app: Flask) -> None:
        """Register this database with the app and close each request's session at teardown."""
        app.extensions["database"] = self
        app.teardown_appcontext(_close_session)

    def engine(self, app: Flask | None = None) -> Engine:
        """The engine of this app in this process, created on first use."""
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        key = id(app)
        entry = self._engines.get(key)
        if entry is None or entry[0] != os.getpid():
            with self._lock:
                entry = self._engines.get(key)
                if entry is None or entry[0] != os.getpid():
                    entry = (os.getpid(), _create_engine(app))
                    self._engines[key] = entry
                    self._sessionmakers[key] = sessionmaker(entry[1], expire_on_commit=False)
        return entry[1]

    def read_one(self, statement: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a read-only statement, now, in one round trip.

        For the check every authenticated request makes. On PostgreSQL it goes straight to the
        driver on a pooled connection in autocommit: no BEGIN before it, no ROLLBACK after it,
        no SQLAlchemy result machinery (a third of the CPU of the read), the SQL compiled once
        per engine, prepared by psycopg after a few uses. Other databases take the usual path.
        """
        engine = self.engine()
        if engine.dialect.name != "postgresql":
            with engine.connect() as connection:
                row = connection.execute(statement, params).first()
            return None if row is None else tuple(row)
        key = (id(engine), id(statement))
        sql = self._compiled.get(key)
        if sql is None:
            sql = self._compiled[key] = str(statement.compile(dialect=engine.dialect))
        return _read_one_autocommit(engine, sql, params)

    def session(self) -> Session:
        """The session of the current request (or app context), closed at teardown."""
        if "db_session" not in g:
            self.engine()
            g.db_session = self._sessionmakers[id(current_app._get_current_object())]()  # type: ignore[attr-defined]
        session: Session = g.db_session
        return session

    def dispose(self, app: Flask) -> None:
        """Close this process's pooled connections of the app (tests, shutdown)."""
        entry = self._engines.pop(id(app), None)
        if entry is not None and entry[0] == os.getpid():
            entry[1].dispose()


def _close_session(_error: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def database_url(app: Flask) -> tuple[URL, bool]:
    """The URL from settings if given, else from Vault; True when Vault supplies credentials."""
    configured = app.config.get("DATABASE_URL") or _sqlite_from_environment()
    if configured:
        url = make_url(configured)
        secrets_registry.remember([url.password])
        return url, False
    return make_url(database_config(app)["url"]), True


def _sqlite_from_environment() -> str:
    """Vault never hands out SQLite: a sqlite DATABASE_URL is the operator's explicit choice."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("sqlite") else ""


def _create_engine(app: Flask) -> Engine:
    url, from_vault = database_url(app)
    log.info(
        "creating database engine", extra={"dialect": url.get_backend_name(), "pid": os.getpid()}
    )
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url)
    dynamic = from_vault and vault_client(app).settings.db_mode == "dynamic"
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_recycle=_lease_recycle_seconds(app) if dynamic else 1800,
        # Fail fast instead of hanging a worker thread when the database is unreachable.
        connect_args={"connect_timeout": 5},
    )
    # First checkout listener: its bound covers the others (the idle ping).
    stuck_connections.watch(engine, STUCK, credentials_refused)
    if from_vault:
        _follow_vault_credentials(engine, app)
    if dynamic:
        _retire_old_credentials(engine, app)
    _ping_idle_connections(engine)  # after the retirement check: no ping of a doomed connection
    return engine


def _read_one_autocommit(engine: Engine, sql: str, params: dict[str, Any]) -> Any:
    """Run one read on a pooled psycopg connection in autocommit; errors as SQLAlchemy's."""
    try:
        connection = engine.raw_connection()  # checkout events: idle ping, retired credentials
    except engine.dialect.loaded_dbapi.Error as error:  # none to be had (do_connect told why)
        raise _as_sqlalchemy_error(engine, sql, params, error, False) from error
    driver: Any = connection.driver_connection
    try:
        driver.autocommit = True
        try:
            return driver.execute(sql, params).fetchone()
        finally:
            driver.autocommit = False  # the next user of this connection expects transactions
    except engine.dialect.loaded_dbapi.Error as error:
        _tell_if_refused(engine, connection.info.get(GENERATION), error)
        disconnected = engine.dialect.is_disconnect(error, driver, None)
        if disconnected:
            connection.invalidate(error)  # not back into the pool
        raise _as_sqlalchemy_error(engine, sql, params, error, disconnected) from error
    finally:
        connection.close()


def _as_sqlalchemy_error(
    engine: Engine, sql: str, params: dict[str, Any], error: Exception, disconnected: bool
) -> StatementError:
    """The driver's error as SQLAlchemy would raise it: OperationalError answers 503."""
    return DBAPIError.instance(
        sql,
        params,
        error,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=disconnected,
        dialect=engine.dialect,
    )


def _ping_idle_connections(engine: Engine) -> None:
    """pool_pre_ping, but only for connections idle longer than PING_IF_IDLE_SECONDS."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi: Any, record: Any) -> None:
        if record is not None:
            record.info[CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_IF_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_connection.rollback()
        except Exception as error:
            raise DisconnectionError("pooled connection is dead") from error  # the pool reconnects


def _lease_recycle_seconds(app: Flask) -> int:
    """pool_recycle below the lease TTL: no pooled login outlives its lease by much."""
    lease = vault_client(app).database.current()
    return max(1, int(lease.ttl * RENEW_AT))


def credentials_refused(error: BaseException | None) -> bool:
    """Did PostgreSQL refuse the login or its privileges (not: the database is down)?"""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in REFUSED_SQLSTATES
    return error is not None and any(words in str(error) for words in REFUSED_AT_LOGIN)


def _tell_if_refused(engine: Engine, generation: int | None, error: BaseException) -> None:
    """A refused dynamic login: its lease is gone, new credentials are fetched (at most once)."""
    credentials = _CREDENTIALS.get(engine)
    if credentials is not None and generation is not None and credentials_refused(error):
        credentials.refused(generation, type(error).__name__)


def _retire_old_credentials(engine: Engine, app: Flask) -> None:
    """Connections of replaced credentials are closed at checkout (never mid-query)."""
    credentials = _CREDENTIALS[engine] = vault_client(app).database

    @event.listens_for(engine, "handle_error")
    def _refused(context: Any) -> None:
        # Queries on a pooled connection whose role was dropped: "permission denied for table".
        # (A failed connection attempt is told by do_connect, which knows its generation.)
        if context.connection is not None and not context.connection.invalidated:
            generation = context.connection.info.get(GENERATION)
            _tell_if_refused(engine, generation, context.original_exception)

    @event.listens_for(engine, "checkout")
    def _check_generation(_dbapi: Any, record: Any, _proxy: Any) -> None:
        if record.info.get(GENERATION) != credentials.current().generation:
            raise DisconnectionError("credentials replaced")  # the pool reconnects

    @event.listens_for(engine, "close")
    def _closed(_dbapi: Any, record: Any) -> None:
        generation = record.info.pop(GENERATION, None)
        if generation is not None:
            credentials.closed(generation)


def _create_sqlite_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if url.database in (None, "", ":memory:"):
        kwargs["poolclass"] = StaticPool  # one shared connection, or every session sees its own DB
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _follow_vault_credentials(engine: Engine, app: Flask) -> None:
    """Each new connection uses the credentials Vault gives now, so rotation needs no restart."""

    @event.listens_for(engine, "do_connect")
    def _connect_with_current_credentials(
        dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]
    ) -> Any:
        config = database_config(app)
        cparams.update(
            user=config["username"],
            password=config["password"],
            host=config["host"],
            port=int(config["port"]),
            dbname=config["database"],
        )
        generation = config.get("generation")
        if generation is None:
            return None  # static credentials: SQLAlchemy connects
        # Dynamic mode: count this login's connections, and tell a refused login.
        try:
            connection = dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.Error as error:
            _tell_if_refused(engine, generation, error)
            raise
        record.info[GENERATION] = generation
        vault_client(app).database.opened(generation)
        return connection


def insert_ignoring_conflict(
    dialect_name: str, table: type, values: dict[str, Any], key: str
) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING, in PostgreSQL's or SQLite's dialect."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])
