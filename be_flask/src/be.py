"""The backend's app factory: `gunicorn 'src.be:create_app()'`."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, current_app, request

from src import app_secrets, auth, cache_sync, errors, logging_setup, metrics
from src import limiter as rate_limits
from src.extensions import db, jwt, passwords
from src.migrate import prepare_database
from src.routes import admin, health, users
from src.routes import auth as auth_routes
from src.settings import load_settings

log = logging.getLogger(__name__)

# Liveness and scraping must answer even while the database is down.
NO_DATABASE_ENDPOINTS = {"health.health", "metrics.metrics"}
PREPARE_RETRY_SECONDS = 5.0


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """Build the app; nothing talks to Vault or the database before this is called."""
    app = Flask(__name__)
    app.config.update(load_settings(settings))
    logging_setup.init_app(app)
    errors.init_app(app)
    app_secrets.init_app(app)
    db.init_app(app)
    passwords.init_app(app)
    auth.init_app(app, jwt)
    metrics.init_app(app)
    app.before_request(_ensure_database_prepared)
    cache_sync.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth_routes.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(admin.bp)
    rate_limits.init_app(app)  # after the routes it limits
    _prepare_database(app)
    return app


def _prepare_database(app: Flask) -> None:
    """Migrate and create default users now; if the database is not there yet, retry later."""
    app.extensions["database_prepared"] = not app.config["AUTO_MIGRATE"]
    app.extensions["database_prepare_tried"] = time.monotonic()
    if app.extensions["database_prepared"]:
        return
    try:
        prepare_database(app)
    except Exception:
        log.warning("preparing database: failed, will retry", exc_info=True)
        return
    app.extensions["database_prepared"] = True


def _ensure_database_prepared() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions["database_prepared"] or request.endpoint in NO_DATABASE_ENDPOINTS:
        return
    if time.monotonic() - app.extensions["database_prepare_tried"] >= PREPARE_RETRY_SECONDS:
        _prepare_database(app)
