"""Drop the Vault cache in every worker: a generation number in the database, polled each second."""

from __future__ import annotations

import logging
import os
import threading
import time

from flask import Flask, current_app, request
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from src.app_secrets import vault_client
from src.database import NO_DATABASE_ENDPOINTS, insert_ignoring_conflict
from src.extensions import db
from src.models import CacheGeneration
from src.vault.errors import VaultClientError

log = logging.getLogger(__name__)

NAME = "vault"


class CacheSync:
    """Per-process memory of the last generation seen, and when it was last checked."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.seen: int | None = None
        self.checked_at = 0.0
        self.lock = threading.Lock()


def _state(app: Flask) -> CacheSync:
    state: CacheSync | None = app.extensions.get("cache_sync")
    if state is None or state.pid != os.getpid():
        state = app.extensions["cache_sync"] = CacheSync()
    return state


def init_app(app: Flask) -> None:
    """Compare the generation now, then before requests, at most once per interval."""
    app.before_request(check_generation)
    with app.app_context():
        _compare_at_start(app)


def _compare_at_start(app: Flask) -> None:
    """Read the generation, then read again what starting cached before it (the database
    credentials, the secrets), so that no refresh made before this moment is missed and
    requests find fresh values. Database away: the first request's comparison does it."""
    if not app.extensions.get("database_prepared"):
        return  # no database (or no Vault to say where it is) at start
    state = _state(app)
    try:
        state.seen = _read_generation()
    except (SQLAlchemyError, VaultClientError):
        _end_failed_transaction()
        return
    state.checked_at = time.monotonic()
    vault_client(app).reread_cache()


def check_generation() -> None:
    """Invalidate this worker's Vault cache when another worker asked for a refresh."""
    if request.endpoint in NO_DATABASE_ENDPOINTS:
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _state(app)
    now = time.monotonic()
    if now - state.checked_at < app.config["CACHE_GENERATION_CHECK_SECONDS"]:
        return
    if not state.lock.acquire(blocking=False):
        return  # another thread of this worker is checking right now
    try:
        state.checked_at = now
        generation = _read_generation()
        if state.seen is None:
            # Not compared at start (database away): what this process cached before (at
            # start, or for a /metrics scrape, which never compares) may predate a refresh.
            vault_client().invalidate_cache()
        elif generation != state.seen:
            log.info("vault cache refresh requested", extra={"generation": generation})
            vault_client().invalidate_cache()
        state.seen = generation
    except (SQLAlchemyError, VaultClientError):
        # e.g. the database lease ended while Vault is down, or Vault never answered: the
        # request's own work meets it and says why (/api/ready its own reasons), not this.
        log.warning("cache generation check failed: database unreachable")
        _end_failed_transaction()
    finally:
        state.lock.release()


def _end_failed_transaction() -> None:
    """Roll the failed read back: else the request's next query fails with
    InFailedSqlTransaction (a 500) instead of getting its own chance."""
    try:
        db.session().rollback()
    except (SQLAlchemyError, VaultClientError):
        log.warning("cache generation check: rollback failed", exc_info=True)


def _read_generation() -> int:
    session = db.session()
    generation = session.scalar(
        select(CacheGeneration.generation).where(CacheGeneration.name == NAME)
    )
    session.rollback()  # end the read transaction: the connection goes back idle
    return int(generation or 0)


def bump_generation() -> int:
    """Ask every worker to drop its cache; this worker does it at once."""
    session = db.session()
    values = {"name": NAME, "generation": 0}
    dialect = session.get_bind().dialect.name
    session.execute(insert_ignoring_conflict(dialect, CacheGeneration, values, "name"))
    session.execute(
        update(CacheGeneration)
        .where(CacheGeneration.name == NAME)
        .values(generation=CacheGeneration.generation + 1)
    )
    session.commit()
    generation = _read_generation()
    vault_client().invalidate_cache()
    _state(current_app._get_current_object()).seen = generation  # type: ignore[attr-defined]
    return generation


def current_generation() -> int | None:
    """The generation this worker has seen (None before its first check)."""
    return _state(current_app._get_current_object()).seen  # type: ignore[attr-defined]
