"""VaultClient: the one object the app asks for secrets; it hides login, cache and outages.

Reading order for a secret: a fresh cache entry (no I/O, no lock) -> Vault (one thread per
path, through the backoff gate) -> the last good value if Vault is down (stale-if-error) ->
the environment fallback if Vault has not given this path yet in this process.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

import hvac.exceptions
from sqlalchemy.engine import URL, make_url

from .approle import AppRoleLogin
from .backoff import BackoffGate
from .cache import CacheEntry, SecretCache, Source
from .database import DatabaseCredentials
from .errors import (
    PermissionDeniedError,
    SecretNotFoundError,
    VaultClientError,
    VaultUnavailableError,
)
from .failures import LOGIN_ERRORS, OUTAGE_ERRORS, failure_reason
from .fallback import APP_SECRETS_PATH, DATABASE_PATH, fallback_secret
from .kubernetes import KubernetesLogin
from .kv_v2 import SecretVersion, read_secret_version
from .settings import VaultSettings
from .token import TokenManager
from .transport.ha import HAAdapter

log = logging.getLogger(__name__)

# Why a client without AppRole credentials serves fallback values (logs and status()).
NO_APPROLE = "AppRole credentials not configured"

# The log lines the original design document quotes, kept verbatim so that
# `docker compose logs backend | grep Vault` shows what its readers look for.
VAULT_ENABLED = "Vault integration enabled - secrets managed by Vault"
VAULT_FALLBACK = "Vault unavailable - using fallback configuration"

_monotonic = time.monotonic


class VaultClient:
    """Process-local Vault access for the backend (create after fork; see get_vault_client)."""

    def __init__(self, settings: VaultSettings | None = None) -> None:
        self.settings = settings if settings is not None else VaultSettings.from_env()
        self.cache = SecretCache()
        self._entries = self.cache.entries  # the hot path reads this dict directly
        self.last_error: str | None = None
        self._announced = False  # VAULT_ENABLED logged in this process
        self._start_process()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> VaultClient:
        """A client configured from os.environ (or the given mapping)."""
        return cls(VaultSettings.from_env(env))

    def _start_process(self) -> None:
        """Create what must not be shared across fork: session, token, locks."""
        s = self.settings
        self._pid = os.getpid()
        self.adapter = HAAdapter(
            s.addresses,
            timeout=(s.connect_timeout, s.read_timeout),
            verify=s.verify,
            cert=s.cert,
            read_retries=s.read_retries,
            retry_delay=s.retry_delay,
        )
        self.gate = BackoffGate(s.backoff_initial, s.backoff_max)
        self.approle = AppRoleLogin(s, self.adapter)
        self.kubernetes = KubernetesLogin(s, self.adapter)
        # One token lifecycle (renewal, re-login, single-flight) whichever method logs in.
        login_method = self.kubernetes if s.auth_method == "kubernetes" else self.approle
        self.tokens = TokenManager(login_method, self.adapter)
        self.database = DatabaseCredentials(self, s.role_name)
        self.cache.reset_locks()
        self._announced = False

    def check_fork(self) -> None:
        """After a fork: a new session and token (nothing of the parent's is shared)."""
        if self._pid != os.getpid():
            log.info("process forked (pid %d -> %d): new session and token", self._pid, os.getpid())
            self._start_process()

    # -- reading secrets ---------------------------------------------------------------

    def read_secret(self, path: str) -> dict[str, Any]:
        """The data of KV v2 secret `path` (e.g. "app/flask") under the configured mount."""
        entry = self._entries.get(path)
        if entry is not None and _monotonic() < entry.fresh_until:
            return dict(entry.data)
        return dict(self._read_slow(path).data)

    def read_secret_entry(self, path: str) -> CacheEntry:
        """Data, version and source of `path` together (`path?version=N` reads one version)."""
        entry = self._entries.get(path)
        if entry is not None and _monotonic() < entry.fresh_until:
            return entry
        return self._read_slow(path)

    def reread_secret_entry(self, path: str, at_most_every: float) -> CacheEntry:
        """`path` read from Vault again now, unless its entry is less than `at_most_every`
        seconds old (what a caller may ask for on behalf of anyone, e.g. a token's kid)."""
        entry = self._entries.get(path)
        if entry is not None and _monotonic() - entry.fetched_at < at_most_every:
            return entry
        return self._read_slow(path)

    def get_app_secrets(self) -> dict[str, Any]:
        """jwt_secret, admin_password and user_password."""
        return self.read_secret(APP_SECRETS_PATH)

    def get_database_config(self) -> dict[str, Any]:
        """host, port, database, username, password and a ready SQLAlchemy `url`."""
        data = self.read_secret(DATABASE_PATH)
        config = {
            key: data.get(key) for key in ("host", "port", "database", "username", "password")
        }
        config["port"] = int(config["port"] or 5432)
        if self.settings.db_mode == "dynamic" and not data.get("url"):
            lease = self.database.current()  # KV says where; the lease says who
            config.update(username=lease.username, password=lease.password)
            config["generation"] = lease.generation
        if data.get("url"):  # the fallback's DATABASE_URL, kept as given (may be SQLite)
            url = make_url(str(data["url"]))
            if url.drivername in ("postgres", "postgresql"):
                url = url.set(drivername="postgresql+psycopg")
        else:
            url = URL.create(
                "postgresql+psycopg",
                username=config["username"],
                password=config["password"],
                host=config["host"],
                port=config["port"],
                database=config["database"],
            )
        config["url"] = url.render_as_string(hide_password=False)
        return config

    def invalidate_cache(self, path: str | None = None) -> None:
        """Make the next read of `path` (or of every path) go to Vault."""
        log.info("invalidating cache of %s", path or "every path")
        self.cache.invalidate(path)

    def reread_cache(self) -> None:
        """Read every cached path from Vault again now (its old value stays if Vault fails)."""
        self.invalidate_cache()
        for path in list(self._entries):
            try:
                self.read_secret_entry(path)
            except VaultClientError as error:  # gone, forbidden, too stale: its next read says
                log.warning("reading %s again: %s", path, type(error).__name__)

    @property
    def source(self) -> Source | None:
        """Where the current app secrets come from: "vault", "cache" or "fallback"."""
        entry = self._entries.get(APP_SECRETS_PATH)
        return entry.source if entry is not None else None

    def _read_slow(self, path: str) -> CacheEntry:
        self.check_fork()
        if self.cache.is_missing(path, _monotonic()):
            raise SecretNotFoundError(f"{self.settings.kv_mount}/{path} not found")
        entry = self._entries.get(path)
        # First read of a path, or caching off: wait for the one reader; else don't wait.
        wait = entry is None or self.settings.cache_ttl <= 0
        lock = self.cache.lock_for(path)
        if not lock.acquire(blocking=wait):
            assert entry is not None
            return entry
        try:
            current = self._entries.get(path)
            if current is not None and current is not entry and _monotonic() < current.fresh_until:
                return current  # refreshed while we waited for the lock
            return self._refresh(path, current)
        finally:
            lock.release()

    def _refresh(self, path: str, previous: CacheEntry | None) -> CacheEntry:
        if not self.settings.has_credentials:
            return self._without_vault(path, previous, NO_APPROLE)
        if not self.gate.try_begin():
            return self._without_vault(path, previous, self.gate.state.reason or "backing off")
        try:
            secret = self._fetch(path)
        except (*OUTAGE_ERRORS, *LOGIN_ERRORS) as error:
            reason = failure_reason(error, self.settings.auth_method)
            self.last_error = f"{path}: {reason}"
            self.gate.record_failure(reason)
            return self._without_vault(path, previous, reason)
        except SecretNotFoundError:
            self.gate.record_success()  # Vault answered; the path is what's wrong
            # Deleted or destroyed (a retired key): never served again, not even stale.
            self.cache.forget(path, missing_until=_monotonic() + self.settings.cache_ttl)
            raise
        except PermissionDeniedError:
            self.gate.record_success()
            self.cache.forget(path)  # no longer ours to read: not ours to serve either
            raise
        self.gate.record_success()
        now = _monotonic()
        entry = CacheEntry(
            secret.data,
            now + self.settings.cache_ttl,
            now,
            "vault",
            secret.version,
            secret.created_time,
        )
        if previous is not None and previous.source != "vault":
            log.warning("secret %s: back to values from vault (was %s)", path, previous.source)
        self.cache.put(path, entry)
        self._announce_vault()
        return entry

    def _announce_vault(self) -> None:
        """Say once per process, at the first secret Vault gives, that Vault is in charge."""
        if not self._announced:
            self._announced = True
            log.info(VAULT_ENABLED, extra={"vault_addr": self.adapter.current_address})

    def _fetch(self, path: str) -> SecretVersion:
        """Read from Vault; on 403 with a revoked token, log in again once and retry."""
        try:
            return self.tokens.call(
                lambda: read_secret_version(self.adapter, self.settings.kv_mount, path)
            )
        except hvac.exceptions.InvalidPath:
            raise SecretNotFoundError(f"{self.settings.kv_mount}/{path} not found") from None
        except hvac.exceptions.Forbidden:
            raise PermissionDeniedError(f"permission denied on {path}") from None

    def _without_vault(self, path: str, previous: CacheEntry | None, reason: str) -> CacheEntry:
        """Serve the last good value until the next retry, else the fallback."""
        now = _monotonic()
        retry_at = now + max(self.gate.seconds_until_retry(), 0.05)
        if previous is not None and previous.source == "fallback":
            entry = replace(previous, fresh_until=retry_at)  # no new warning per retry
        elif previous is not None:
            max_staleness = self.settings.max_staleness
            if max_staleness is not None:
                too_old_at = previous.fetched_at + max_staleness
                if now >= too_old_at:
                    raise VaultUnavailableError(
                        f"Vault unavailable ({reason}) and {path} is older than "
                        f"VAULT_MAX_STALENESS={max_staleness:g}s"
                    )
                retry_at = min(retry_at, too_old_at)
            entry = replace(previous, fresh_until=retry_at, source="cache")
        else:
            data = fallback_secret(
                path, self.settings.fallback, not self.settings.is_development, reason
            )
            if previous is None:
                log.warning(VAULT_FALLBACK, extra={"path": path, "reason": reason})
            entry = CacheEntry(data, retry_at, now, "fallback")
        self.cache.put(path, entry)
        return entry

    # -- state -----------------------------------------------------------------------

    def is_available(self) -> bool:
        """True when Vault answers and we hold a valid token (logs in if needed)."""
        if not self.settings.has_credentials:
            return False
        self.check_fork()
        if not self.gate.try_begin():
            return False
        try:
            self.tokens.current()
        except (*OUTAGE_ERRORS, *LOGIN_ERRORS) as error:
            self.last_error = failure_reason(error, self.settings.auth_method)
            self.gate.record_failure(self.last_error)
            return False
        self.gate.record_success()
        return True

    def status(self) -> dict[str, Any]:
        """What an admin may see: state, times, versions, sources; never a secret value."""
        now = _monotonic()
        token = self.tokens.state
        gate = self.gate.state
        return {
            "pid": os.getpid(),
            "available": self.settings.has_credentials and gate.failures == 0 and token is not None,
            "authenticated": token is not None and now < token.expires_at,
            "addresses": list(self.settings.addresses),
            "current_address": self.adapter.current_address,
            "token": None
            if token is None
            else {
                "accessor": token.accessor,
                "ttl_left": round(max(0.0, token.expires_at - now), 1),
                "renewable": token.renewable,
                "capped_at_max_ttl": token.capped,
                "last_login": _iso(token.login_wall_time),
                "last_renewal": _iso(token.renew_wall_time),
            },
            "logins": self.tokens.logins,
            "renewals": self.tokens.renewals,
            "outage": None
            if gate.failures == 0
            else {
                "reason": gate.reason,
                "since": _iso(gate.since),
                "failed_attempts": gate.failures,
                "next_retry_in": round(self.gate.seconds_until_retry(), 1),
            },
            "cache_ttl": self.settings.cache_ttl,
            "paths": {path: _describe_entry(entry, now) for path, entry in self._entries.items()},
            "source": self.source,
            "auth_method": self.settings.auth_method,
            # Without AppRole nothing is ever tried, so nothing else would say why.
            "last_error": self.last_error if self.settings.has_credentials else NO_APPROLE,
            "requests_sent": self.adapter.requests_sent,
            "database_mode": self.settings.db_mode,
            "database_lease": self.database.status()
            if self.settings.db_mode == "dynamic"
            else None,
        }


def _describe_entry(entry: CacheEntry, now: float) -> dict[str, Any]:
    return {
        "version": entry.version,
        "age_seconds": round(now - entry.fetched_at, 1),
        "source": entry.source,
        "stale": entry.source != "vault",
    }


def _iso(wall_time: float | None) -> str | None:
    if wall_time is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_time))
