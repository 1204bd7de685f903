"""The backend's app factory: `gunicorn 'src.be:create_app()'`."""

from __future__ import annotations

from typing import Any

from flask import Flask

from src import app_secrets, auth, cache_sync, errors, logging_setup, metrics, migrate
from src import limiter as rate_limits
from src.extensions import db, jwt, passwords
from src.routes import admin, health, users
from src.routes import auth as auth_routes
from src.settings import load_settings


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
    migrate.init_app(app)  # schema and default users now, retried while the database is away
    cache_sync.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(auth_routes.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(admin.bp)
    rate_limits.init_app(app)  # after the routes it limits
    return app
