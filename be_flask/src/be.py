"""The backend's app factory: `gunicorn 'src.be:create_app()'`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from flask import Flask

from src import (
    app_secrets,
    auth,
    cache_sync,
    errors,
    logging_setup,
    metrics,
    migrate,
    session_cache,
)
from src import limiter as rate_limits
from src.extensions import db, jwt, passwords
from src.routes import admin, health, users
from src.routes import auth as auth_routes
from src.settings import load_settings


class BackendFlask(Flask):
    """Flask, remembering that a view or hook is a plain function (all of ours are).

    Flask asks inspect whether each hook and view is a coroutine function on every request,
    about ten times per request; the answer never changes.
    """

    _SYNC_MAX = 1024  # bounded: nothing may grow with the requests served

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync_callables[func]
        except (KeyError, TypeError):  # not seen yet, or unhashable
            pass
        sync = super().ensure_sync(func)
        if len(self._sync_callables) < self._SYNC_MAX:
            with suppress(TypeError):
                self._sync_callables[func] = sync
        return sync


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """Build the app; nothing talks to Vault or the database before this is called."""
    app = BackendFlask(__name__)
    app.config.update(load_settings(settings))
    logging_setup.init_app(app)
    errors.init_app(app)
    app_secrets.init_app(app)
    db.init_app(app)
    passwords.init_app(app)
    auth.init_app(app, jwt)
    session_cache.init_app(app)  # remembered session checks, reset by every change
    metrics.init_app(app)
    migrate.init_app(app)  # schema and default users now, retried while the database is away
    cache_sync.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth_routes.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(admin.bp)
    rate_limits.init_app(app)  # after the routes it limits
    return app
