"""A request never waits on a frozen database past a bound: its connection is shut down.

A PostgreSQL that stops answering without closing anything (SIGSTOP, a VM paused, a hung
network path) leaves a query waiting forever: the server's kernel still acknowledges, so no
TCP or libpq timeout fires, and a server-side statement_timeout cannot run in a stopped
process. Every gunicorn thread would end up waiting, /api/health too. So a watchdog thread
per process shuts down the socket of a connection a request has held for STUCK_AFTER_SECONDS:
the waiting call fails at once as a lost connection (503 with Retry-After), the pool drops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import has_request_context
from sqlalchemy import Engine, event

from src.outage import Outage

log = logging.getLogger(__name__)

# Far above any request's own use of a connection (milliseconds; a login's password hash).
STUCK_AFTER_SECONDS = 5.0
CHECK_EVERY_SECONDS = 0.5
# After a stuck or refused connection, new logins to the database fail at once this long.
PAUSE_AFTER_FAILURE_SECONDS = 1.0
PAUSED = "database did not answer a moment ago"


class StuckConnections:
    """The connections requests hold now, and since when; one watchdog thread per process."""

    def __init__(self, limit: float = STUCK_AFTER_SECONDS) -> None:
        self.limit = limit
        self.held: dict[int, tuple[float, Any, Outage]] = {}
        self.pid = 0
        self.lock = threading.Lock()

    def checked_out(self, dbapi_connection: Any, database: Outage) -> None:
        if has_request_context():  # start-up work (migrations) may hold one for long
            self.held[id(dbapi_connection)] = (time.monotonic(), dbapi_connection, database)
            self._watch()

    def checked_in(self, dbapi_connection: Any) -> None:
        self.held.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid != os.getpid():  # a forked worker starts its own thread
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="stuck-db-connections", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_EVERY_SECONDS)
            now = time.monotonic()
            for key, (since, connection, database) in list(self.held.items()):
                if now - since >= self.limit and self.held.pop(key, None) is not None:
                    log.warning(
                        "database connection held %.0f s by a request: shut down",
                        now - since,
                        extra={"event": "database stuck"},
                    )
                    database.failed(TimeoutError("database stuck"))
                    shut_down(connection)


def shut_down(connection: Any) -> None:
    """End the connection's socket under the thread waiting on it (which then fails)."""
    with contextlib.suppress(Exception):
        duplicate = socket.socket(fileno=os.dup(connection.fileno()))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


def watch(
    engine: Engine, stuck: StuckConnections, refused: Callable[[BaseException], bool]
) -> None:
    """Track the engine's checkouts (call before any other checkout listener: its ping too),
    and after a stuck or refused connection answer at once for a moment instead of waiting
    on a new login to the same frozen server (connect_timeout) in every request."""
    database = Outage(
        log,
        "database stuck or unreachable: requests answer 503 at once for a moment",
        "database answers again",
        pause=PAUSE_AFTER_FAILURE_SECONDS,
    )

    @event.listens_for(engine, "checkout")
    def _out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        stuck.checked_out(dbapi_connection, database)

    # Back in the pool, or closed (also a connection a later checkout listener refused).
    @event.listens_for(engine, "checkin")
    @event.listens_for(engine, "close")
    @event.listens_for(engine, "invalidate")
    def _in(dbapi_connection: Any, *_args: Any) -> None:
        if dbapi_connection is not None:
            stuck.checked_in(dbapi_connection)

    @event.listens_for(engine, "do_connect")
    def _refuse_while_paused(dialect: Any, *_args: Any) -> None:
        if not database.usable():
            raise dialect.loaded_dbapi.OperationalError(PAUSED)

    @event.listens_for(engine, "connect")
    def _connected(*_args: Any) -> None:
        database.answered()

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        error = context.original_exception
        if str(error) == PAUSED:
            return  # our own refusal: the pause ends on time, a real attempt then decides
        if refused(error):
            return  # credentials refused (a revoked lease): new ones are fetched at once
        if context.is_disconnect or context.connection is None:  # lost, or no login at all
            database.failed(error)
