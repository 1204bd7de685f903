"""JWT signing keys: the versions of secret/app/flask's jwt_secret, named by `kid`.

Tokens are signed with the newest version and carry its number as `kid`. A token is verified
with the version its `kid` names while that version is in service: the newest, or superseded
less than the refresh-token lifetime plus JWT_KEY_RETIRE_LEEWAY ago (no token signed with it
can still be valid after that). An unknown, malformed or retired `kid`, or none, is a 401.
Versions are immutable, so older ones are cached like any secret (path `app/flask?version=N`);
a destroyed one (a compromised key, rotate-jwt-key.sh --compromised) is a 401 once Vault says
so. The kid is anyone's to choose: a version newer than ours is never read by its number (only
the current secret again, at most once a second), so made-up kids cost Vault nothing and leave
no state behind.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

import jwt as pyjwt
from flask import current_app, g

from src.app_secrets import vault_client
from src.logging_setup import secrets_registry
from src.vault.cache import CacheEntry
from src.vault.errors import PermissionDeniedError, SecretNotFoundError, VaultUnavailableError
from src.vault.fallback import APP_SECRETS_PATH

# kid of the fallback key (SECRET_KEY while Vault never answered): it has no version number.
FALLBACK_KID = "env"
# ASCII only: str.isdigit() takes '²' (which int() refuses) and int() reads '٣' as 3.
KID = re.compile(r"[1-9][0-9]{0,8}")
# A kid newer than the current version re-reads the current secret at most this often.
REREAD_CURRENT_SECONDS = 1.0


class KeyIdError(pyjwt.InvalidTokenError):
    """The token's kid names no key in service (Flask-JWT-Extended answers 401)."""


class _Missing(KeyIdError):
    """The version was deleted or destroyed (or trimmed by max_versions)."""


def signing_key() -> tuple[str, str]:
    """(kid, key) of the newest version, the same pair for the whole request."""
    pair: tuple[str, str] | None = g.get("jwt_signing_key")
    if pair is None:
        entry = vault_client().read_secret_entry(APP_SECRETS_PATH)
        kid = FALLBACK_KID if entry.source == "fallback" else str(entry.version)
        pair = g.jwt_signing_key = (kid, _key_of(entry.data))
    return pair


def verification_key(header: dict[str, Any]) -> str:
    """The key that signed a token with this header, if its kid names a key in service."""
    # Read first: without any key at all the answer is 503 (secrets unavailable), not 401.
    client = vault_client()
    current = client.read_secret_entry(APP_SECRETS_PATH)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyIdError("token has no key id")
    if current.source == "fallback" or kid == FALLBACK_KID:
        if current.source == "fallback" and kid == FALLBACK_KID:
            return _key_of(current.data)
        raise KeyIdError("key id not in service")
    if not KID.fullmatch(kid):
        raise KeyIdError("malformed key id")
    version = int(kid)
    if current.version is not None and version > current.version:
        # Another worker may have seen a rotation first: the current secret says.
        current = client.reread_secret_entry(APP_SECRETS_PATH, REREAD_CURRENT_SECONDS)
    if version == current.version:
        return _key_of(current.data)
    if current.version is None or version > current.version or current.source == "fallback":
        raise KeyIdError("unknown key id")
    key = _key_of(_read_version(version).data)
    _check_in_service(version, current)
    return key


def _check_in_service(version: int, current: CacheEntry) -> None:
    """Refuse a version superseded longer ago than any token signed with it can live."""
    superseded_at = _epoch(_successor(version, current).created_time)
    refresh: timedelta = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    lifetime = refresh.total_seconds() + float(current_app.config["JWT_KEY_RETIRE_LEEWAY"])
    if superseded_at is None or time.time() - superseded_at > lifetime:
        raise KeyIdError("key id retired")


def _successor(version: int, current: CacheEntry) -> CacheEntry:
    """The first version after `version` that Vault still has: every token signed with
    `version` predates it (versions destroyed since, e.g. a compromised key, are skipped)."""
    for later in range(version + 1, current.version or 0):
        try:
            return _read_version(later)
        except _Missing:
            continue
    return current


def _read_version(version: int) -> CacheEntry:
    try:
        return vault_client().read_secret_entry(f"{APP_SECRETS_PATH}?version={version}")
    except SecretNotFoundError:
        raise _Missing("unknown key id") from None
    except (PermissionDeniedError, VaultUnavailableError):
        raise KeyIdError("unknown key id") from None


def _key_of(data: dict[str, Any]) -> str:
    key = data.get("jwt_secret")
    if not key:
        raise KeyIdError("key version holds no jwt_secret")  # deleted, or not a key version
    secrets_registry.remember([key])
    return str(key)


def _epoch(created_time: str | None) -> float | None:
    """Vault's RFC 3339 time (nanoseconds, Z) as a Unix time."""
    if not created_time:
        return None
    head, _, fraction = created_time.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]}+00:00")
    except ValueError:
        return None
    return moment.timestamp()
