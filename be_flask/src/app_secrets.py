"""The app's one door to the Vault client: secrets read through its cache, never via hvac."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app

from src.logging_setup import SECURITY, secrets_registry
from src.vault_client import Vault

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Register the Vault extension (settings["VAULT_CLIENT"] overrides it in tests)."""
    Vault().init_app(app)
    if vault_client(app).settings.is_development:
        # Said at every start, not only when a default is served: the mode itself is the risk.
        SECURITY.warning(
            "APP_ENV=development: public development defaults (JWT key, passwords) are "
            "served whenever Vault is unavailable; never run like this with real data",
            extra={"event": "development mode"},
        )
    # Read the app secrets now, in every worker: a worker that first needs them during a
    # Vault outage has no cached copy to serve.
    try:
        app_secrets(app)
    except Exception as error:
        log.warning("reading app secrets at start: failed, retried on first use (%s)", error)


def vault_client(app: Flask | None = None) -> Any:
    """The Vault client of this app (process-wide, created after the worker forked)."""
    return (app or current_app).extensions["vault"]


def app_secrets(app: Flask | None = None) -> dict[str, str]:
    """jwt_secret, admin_password and user_password, from the client's cache when fresh."""
    app = app or current_app
    client = vault_client(app)
    secrets: dict[str, str] = client.get_app_secrets()
    secrets_registry.remember(secrets.values())
    if client.source != app.extensions.get(_LAST_SOURCE):
        _source_changed(app, client.source)
    return secrets


# Where this app's secrets came from last, so that a change is logged once, not per request.
_LAST_SOURCE = "vault_last_source"


def _source_changed(app: Flask, source: str | None) -> None:
    previous = app.extensions.get(_LAST_SOURCE)
    app.extensions[_LAST_SOURCE] = source
    if source == "fallback":
        SECURITY.warning(
            "app secrets from fallback values", extra={"event": "fallback mode", "was": previous}
        )
    elif previous is not None:
        log.info("app secrets source changed", extra={"source": source, "was": previous})


def database_config(app: Flask | None = None) -> dict[str, Any]:
    """host, port, database, username, password and url of the database."""
    config = vault_client(app).get_database_config()
    secrets_registry.remember([config.get("password"), config.get("url")])
    return dict(config)


def secrets_source(app: Flask | None = None) -> str:
    """Where the app secrets come from now: "vault", "cache" or "fallback"."""
    client = vault_client(app)
    if client.source is None:
        app_secrets(app)  # nothing read yet in this process: reading decides the source
    return str(client.source or "unknown")
