"""Which Vault failures mean an outage or a refused login, and how they read in logs.

Shared by the client and the database credentials, which both serve the last good value
through an outage and say why in words safe for logs and status().
"""

from __future__ import annotations

import hvac.exceptions

from .errors import ConfigurationError, SecretIdWrappingError
from .transport.ha import FAILOVER_ERRORS, describe

# Failures during which the last good value is served and the backoff gate closes.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    *FAILOVER_ERRORS,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.UnexpectedError,
)
# Login refusals: retried on the same backoff schedule so a bad secret ID is no login storm.
# (A 403 reaching here is a login's: reads turn theirs into PermissionDeniedError, and the
# Kubernetes method answers 403 to a token of another service account or namespace.)
LOGIN_ERRORS: tuple[type[BaseException], ...] = (
    hvac.exceptions.InvalidRequest,
    hvac.exceptions.Unauthorized,
    hvac.exceptions.Forbidden,
    SecretIdWrappingError,
    ConfigurationError,  # e.g. the secret ID file is missing for a moment during rotation
)

LOGIN_METHOD_NAMES = {"approle": "AppRole", "kubernetes": "Kubernetes"}


def failure_reason(error: BaseException, auth_method: str = "approle") -> str:
    """Why Vault could not be used, in words safe for logs and status()."""
    if isinstance(error, SecretIdWrappingError):
        return "wrapped secret ID refused"
    if isinstance(error, ConfigurationError):
        return str(error)
    if isinstance(error, LOGIN_ERRORS):
        return f"{LOGIN_METHOD_NAMES[auth_method]} login refused"
    return describe(error)
