"""Settings of the backend: defaults, then the environment, then explicit overrides."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "APP_ENV": "production",
    "MAX_CONTENT_LENGTH": 100 * 1024,
    "JWT_ISSUER": "flask-vault-backend",
    "JWT_AUDIENCE": "flask-vault-backend-api",
    "JWT_ACCESS_TOKEN_EXPIRES": timedelta(minutes=15),
    "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=7),
    # A rotated refresh token presented again this soon is a second tab, not reuse.
    "REFRESH_REUSE_GRACE_SECONDS": 5.0,
    # Seconds a superseded signing key stays in service beyond the refresh-token lifetime.
    "JWT_KEY_RETIRE_LEEWAY": 300,
    "JWT_COOKIE_SECURE": True,
    "JWT_COOKIE_SAMESITE": "Strict",
    "TRUSTED_PROXIES": 0,
    "REDIS_URL": "",
    # "vault": AUTH with secret/app/flask's redis_password when Vault holds one; "none": never.
    "REDIS_AUTH": "vault",
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_KEY_PREFIX": "flask-vault-backend",
    "LOGIN_LIMITS": "5/minute;100/hour",
    # Failures per account from all addresses that raise an alert and slow failures down.
    "ACCOUNT_ALERT_LIMITS": "20/minute;200/hour",
    "REFRESH_LIMITS": "30/minute;500/hour",
    "ARGON2_TIME_COST": 2,
    "ARGON2_MEMORY_COST": 19456,
    "ARGON2_PARALLELISM": 1,
    "AUTO_MIGRATE": True,
    "DATABASE_PREPARE_RETRY_SECONDS": 5.0,
    "LOG_LEVEL": "INFO",
    "LOG_FILE": "",
    "CACHE_GENERATION_CHECK_SECONDS": 1.0,
    # Longest a worker trusts a remembered session check (src/session_cache.py); 0: never.
    "SESSION_CACHE_SECONDS": 2.0,
}

# Environment variables read as settings (never secrets: those come from Vault).
_ENV_KEYS = (
    "APP_ENV",
    "JWT_COOKIE_SECURE",
    "TRUSTED_PROXIES",
    "REDIS_URL",
    "REDIS_AUTH",
    "RATELIMIT_ENABLED",
    "RATELIMIT_KEY_PREFIX",
    "LOGIN_LIMITS",
    "ACCOUNT_ALERT_LIMITS",
    "REFRESH_LIMITS",
    "LOG_LEVEL",
    "LOG_FILE",
    "AUTO_MIGRATE",
    "SESSION_CACHE_SECONDS",
)
_BOOLEAN_KEYS = ("JWT_COOKIE_SECURE", "RATELIMIT_ENABLED", "AUTO_MIGRATE")
_INTEGER_KEYS = ("TRUSTED_PROXIES",)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def load_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge defaults, environment and overrides, and refuse unsafe production settings."""
    settings = dict(DEFAULTS)
    settings.update({k: os.environ[k] for k in _ENV_KEYS if os.environ.get(k)})
    settings.update(overrides or {})
    for key in _BOOLEAN_KEYS:
        settings[key] = _as_bool(settings[key])
    for key in _INTEGER_KEYS:
        settings[key] = int(settings[key])
    settings["SESSION_CACHE_SECONDS"] = _seconds(settings, "SESSION_CACHE_SECONDS")
    _check_cookie_security(settings)
    if settings["REDIS_AUTH"] not in ("vault", "none"):
        raise RuntimeError(f"REDIS_AUTH must be vault or none, not {settings['REDIS_AUTH']!r}")
    return settings


def _seconds(settings: dict[str, Any], key: str) -> float:
    try:
        value = float(settings[key])
    except (TypeError, ValueError):
        raise RuntimeError(f"{key} must be a number of seconds, not {settings[key]!r}") from None
    if not 0 <= value <= 3600:
        raise RuntimeError(f"{key} must be between 0 and 3600 seconds, not {value}")
    return value


def _check_cookie_security(settings: dict[str, Any]) -> None:
    """Plain-http cookies: for a front on loopback (APP_ENV=local or development) only."""
    if settings["JWT_COOKIE_SECURE"]:
        return
    if settings["APP_ENV"] == "production":
        raise RuntimeError("JWT_COOKIE_SECURE=false is refused when APP_ENV=production")
    log.warning("JWT cookies without the Secure flag: for local http development only")
