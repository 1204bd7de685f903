"""The password the backend gives Redis: secret/app/flask's redis_password, read from Vault.

Redis asks for it at each new connection, so the password never sits in the environment or a
URL that could be logged, and a rotated password reaches new connections without a restart.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry

from src.app_secrets import app_secrets

log = logging.getLogger(__name__)

# The key beside the app's other secrets (DESIGN: secret/app/flask), so app-policy is unchanged.
REDIS_PASSWORD_KEY = "redis_password"  # noqa: S105 - a key name, not a password


class VaultRedisCredentials(CredentialProvider):
    """AUTH with the password Vault holds; no AUTH when it holds none (a Redis without one)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def get_credentials(self) -> tuple[str] | tuple[()]:  # type: ignore[override]
        password = app_secrets(self.app).get(REDIS_PASSWORD_KEY)
        return (str(password),) if password else ()

    def __repr__(self) -> str:  # never the password, whatever prints this object
        return "VaultRedisCredentials()"


# Redis must answer quickly or not at all: a frozen Redis costs a request this much, once
# (then each process leaves it alone for a second, see src/outage.py).
REDIS_TIMEOUT_SECONDS = 0.25


def storage_options(app: Flask, redis_url: str) -> dict[str, Any]:
    """Options of the limiter's Redis storage: a short timeout and no retries (a failure is
    counted in the process instead), the password from Vault unless the URL has one (an
    operator's choice) or REDIS_AUTH=none (a Redis without a password, chosen knowingly)."""
    options = redis_credentials(app, redis_url)
    bounds = bounded_redis_options()
    if options:
        log.info("redis password: from Vault (secret/app/flask, key %s)", REDIS_PASSWORD_KEY)
    elif app.config["REDIS_AUTH"] == "none":
        log.warning(
            "redis password: none (REDIS_AUTH=none): any local client can reach the counters"
        )
    else:
        log.info("redis password: from REDIS_URL")
    return {**bounds, **options}


def bounded_redis_options() -> dict[str, Any]:
    """Timeouts and retries of every Redis client of the app."""
    return {
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }


def redis_credentials(app: Flask, redis_url: str) -> dict[str, Any]:
    """The credential_provider option of a Redis client of the app ({} when none is needed)."""
    if urlsplit(redis_url).password is not None or app.config["REDIS_AUTH"] == "none":
        return {}
    return {"credential_provider": VaultRedisCredentials(app)}
