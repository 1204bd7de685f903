"""Values used while Vault has never answered in this process: environment, then dev defaults.

Unless the operator chose APP_ENV=development explicitly there is no hard-coded default: a
missing variable is a ConfigurationError naming it. In development the defaults keep `flask
run` usable without a Vault, with a loud warning, because they are public and must never
protect real data.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import make_url

from .errors import ConfigurationError, VaultUnavailableError
from .settings import FallbackSettings

log = logging.getLogger(__name__)

APP_SECRETS_PATH = "app/flask"
DATABASE_PATH = "database/postgres"

# Public development-only values: the names say so, so nobody mistakes them for secrets.
DEV_DEFAULTS: dict[str, str] = {
    "SECRET_KEY": "dev-only-insecure-jwt-secret-change-me-0123456789abcdef",
    "ADMIN_PASSWORD": "dev-only-admin-password",
    "USER_PASSWORD": "dev-only-user-password",
    "DATABASE_URL": "postgresql+psycopg://app:dev-only-db-password@127.0.0.1:5432/app",
}


def _pick(
    fallback: FallbackSettings, names: list[str], production: bool, reason: str
) -> dict[str, str]:
    given = {
        "SECRET_KEY": fallback.secret_key,
        "ADMIN_PASSWORD": fallback.admin_password,
        "USER_PASSWORD": fallback.user_password,
        "DATABASE_URL": fallback.database_url,
    }
    missing = [name for name in names if not given[name]]
    if missing and production:
        raise ConfigurationError(
            f"Vault is unavailable ({reason}) and development defaults are forbidden unless "
            f"APP_ENV=development: set {', '.join(missing)} or make Vault reachable"
        )
    if missing:
        log.warning(
            "USING INSECURE DEVELOPMENT DEFAULTS for %s: Vault is unavailable (%s); "
            "never run like this with real data",
            ", ".join(missing),
            reason,
        )
    return {name: given[name] or DEV_DEFAULTS[name] for name in names}


def fallback_secret(
    path: str, fallback: FallbackSettings, production: bool, reason: str
) -> dict[str, Any]:
    """The fallback value of a known KV path; VaultUnavailableError for any other path."""
    if path == APP_SECRETS_PATH:
        values = _pick(
            fallback, ["SECRET_KEY", "ADMIN_PASSWORD", "USER_PASSWORD"], production, reason
        )
        return {
            "jwt_secret": values["SECRET_KEY"],
            "admin_password": values["ADMIN_PASSWORD"],
            "user_password": values["USER_PASSWORD"],
        }
    if path == DATABASE_PATH:
        url_text = _pick(fallback, ["DATABASE_URL"], production, reason)["DATABASE_URL"]
        url = make_url(url_text)
        return {
            "host": url.host or "",
            "port": url.port or 5432,
            "database": url.database or "",
            "username": url.username or "",
            "password": url.password or "",
            "url": url_text,
        }
    raise VaultUnavailableError(f"Vault is unavailable ({reason}) and {path} has no fallback")
