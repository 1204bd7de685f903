"""Each worker's memory of session checks, trusted only while Redis holds the same generation.

Checking an access token's session (its user's row, its own and its family's revocation) is a
database round trip on every authenticated request: about a third of the CPU of /me, counting
PostgreSQL's. A worker may answer it from memory instead, but only after one Redis GET of the
*session generation*, a random value that every commit changing users or revocations deletes
(any worker, any replica, before its response goes out). So the very next request anywhere
sees a new generation and reads the database again. A check is remembered for at most
SESSION_CACHE_SECONDS: the bound for changes made around the app (SQL typed into psql) or for
a deletion Redis refused.

Without Redis, or while it fails or is slow, every check reads the database (as before).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Hashable
from typing import Any

import redis
from flask import Flask, current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from src.metrics import SESSION_CHECKS
from src.outage import Outage
from src.redis_auth import REDIS_TIMEOUT_SECONDS, bounded_redis_options, redis_credentials

log = logging.getLogger(__name__)

# The tables whose rows decide whether a session is still good.
SESSION_TABLES = frozenset({"users", "revoked_tokens", "revoked_families"})
# After Redis failed, this process reads the database without asking Redis for a while.
PAUSE_AFTER_FAILURE_SECONDS = 1.0
MAX_ENTRIES = 10_000  # bounded: one entry per live access token seen by this worker
CHANGED = "session_state_changed"  # Session.info key: this transaction wrote SESSION_TABLES


class SessionCache:
    """One process's remembered session checks and its Redis client."""

    def __init__(self, client: redis.Redis | None, key: str, max_age: float) -> None:
        self.pid = os.getpid()
        self.client = client
        self.key = key
        self.max_age = max_age
        self.entries: dict[Hashable, tuple[bytes, float, Any]] = {}
        self.reset_pending = False  # a reset Redis refused, to do when it answers again
        self.redis = Outage(
            log,
            "session cache: Redis failed, checking sessions in the database",
            "session cache: Redis answers again",
            PAUSE_AFTER_FAILURE_SECONDS,
        )
        self.from_cache = SESSION_CHECKS.labels("cache")
        self.from_database = SESSION_CHECKS.labels("database")

    def lookup(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """The remembered result of read() for key, if the generation still matches; else read()."""
        generation = self.generation()  # before the read: an entry never outlives its generation
        if generation is None:
            self.from_database.inc()
            return read()
        now = time.monotonic()
        entry = self.entries.get(key)
        if entry is not None and entry[0] == generation and now - entry[1] < self.max_age:
            self.from_cache.inc()
            return entry[2]
        self.from_database.inc()
        result = read()
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (generation, now, result)
        return result

    def generation(self) -> bytes | None:
        """The current generation; a new one when none is set; None: do not use the cache."""
        if self.client is None or not self.redis.usable():
            return None
        try:
            if self.reset_pending:  # a reset Redis refused earlier: done now it answers
                self.client.delete(self.key)
                self.reset_pending = False
            value: Any = self.client.get(self.key)
            if value is None:  # deleted by a change (or Redis restarted): start a new one
                fresh = secrets.token_hex(16).encode()
                value = self.client.set(self.key, fresh, nx=True, get=True) or fresh
        except redis.RedisError as error:
            self.redis.failed(error)
            return None
        self.redis.answered()
        return bytes(value)

    def invalidate(self) -> None:
        """Delete the generation (after a commit that changed session state): every worker's
        remembered checks stop counting at once. This process forgets its own too."""
        self.entries.clear()
        if self.client is None:
            return
        failure: Exception | None = None
        if self.redis.usable():
            started = time.monotonic()
            # Resent at once after a quick refusal; never waited on past one timeout.
            while time.monotonic() - started < REDIS_TIMEOUT_SECONDS:
                try:
                    self.client.delete(self.key)
                    return
                except redis.RedisError as error:
                    failure = error
        self.reset_pending = True
        was_down = self.redis.down
        self.redis.failed(failure or redis.ConnectionError("Redis failed a moment ago"))
        if not was_down:  # said once per outage; the reset is done when Redis answers again
            log.error(
                "ALERT: session generation not reset in Redis: other workers may accept a "
                "session ended now for up to %s s (reset again once Redis answers)",
                self.max_age,
                extra={"error": type(failure).__name__},
            )


def init_app(app: Flask) -> None:
    """Remember session checks when Redis is configured and SESSION_CACHE_SECONDS > 0."""
    log.info(
        "session cache",
        extra={"enabled": _enabled(app), "max_age_seconds": app.config["SESSION_CACHE_SECONDS"]},
    )
    app.extensions["session_cache"] = None
    _listen_for_changes()


def _enabled(app: Flask) -> bool:
    return bool(app.config["REDIS_URL"]) and app.config["SESSION_CACHE_SECONDS"] > 0


def session_cache(app: Flask | None = None) -> SessionCache:
    """This process's SessionCache of the app (a forked worker never shares its parent's)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    cache: SessionCache | None = app.extensions.get("session_cache")
    if cache is None or cache.pid != os.getpid():
        cache = app.extensions["session_cache"] = _new_cache(app)
    return cache


def _new_cache(app: Flask) -> SessionCache:
    url = app.config["REDIS_URL"]
    client = None
    if _enabled(app):
        # A failure is answered from the database, not waited on.
        client = redis.Redis.from_url(url, **bounded_redis_options(), **redis_credentials(app, url))
    key = f"{app.config['RATELIMIT_KEY_PREFIX']}:session-generation"
    return SessionCache(client, key, app.config["SESSION_CACHE_SECONDS"])


def _listen_for_changes() -> None:
    """Mark every ORM transaction that writes SESSION_TABLES; reset the generation after its
    commit. Listens on all Sessions once: the marks only ever add invalidations."""
    if event.contains(Session, "after_commit", _committed):
        return
    event.listen(Session, "do_orm_execute", _statement_writes)
    event.listen(Session, "after_flush", _flush_writes)
    event.listen(Session, "after_commit", _committed)


def _statement_writes(state: ORMExecuteState) -> None:
    """INSERT/UPDATE/DELETE statements run through a session (revocations are such inserts)."""
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in SESSION_TABLES:
            state.session.info[CHANGED] = True


def _flush_writes(session: Session, _context: Any) -> None:
    """Objects of SESSION_TABLES added, changed or deleted (a user disabled, demoted...)."""
    for obj in (*session.new, *session.dirty, *session.deleted):
        if getattr(obj, "__tablename__", None) in SESSION_TABLES:
            session.info[CHANGED] = True
            return


def _committed(session: Session) -> None:
    if session.info.pop(CHANGED, False) and has_app_context():  # our sessions live in one
        session_cache().invalidate()
